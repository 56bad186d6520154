"""`portal dispatch`: send the outbox. Runs until stopped (SIGTERM or Ctrl-C stop it
between batches, never in the middle of one) or, with --once, until nothing is due.

Each batch is a unit of work that commits its claim before sending (see
portal/services/dispatch.py). Several dispatchers may run side by side on
PostgreSQL; on SQLite run one.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import datetime, timezone

import click
from sqlalchemy.exc import DBAPIError
from flask import current_app
from flask.cli import with_appcontext

from portal.channels import build_channels, channels_on_dev_outbox
from portal.extensions import db
from portal.services.analytics import keep_facts_current
from portal.services.dispatch import DispatchPolicy, DispatchReport, dispatch_batch, FaultHook
from portal.services.sequence import run_due_steps

log = logging.getLogger(__name__)
FAULT_ENV = "PORTAL_DISPATCH_FAULT"  # tests only, e.g. "sent:2": die hard at the 2nd message sent


def fault_hook_from_env(config: dict) -> FaultHook | None:
    """`PORTAL_DISPATCH_FAULT=<point>:<n>` kills the process (os._exit, no cleanup, like
    a power cut) when the n-th message reaches <point> ("claimed": leased, not yet
    sent; "sent": accepted by the provider, not yet marked sent). Ignored in production."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec or config.get("PORTAL_ENV") == "production":
        return None
    point, _sep, count = spec.partition(":")
    remaining = [int(count or "1")]

    def hook(at: str, _message) -> None:
        if at == point:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os._exit(75)

    return hook


def _parse_now(value: str | None) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def run_dispatcher(session, channels, policy: DispatchPolicy, *, stop: threading.Event, once: bool,
                   batch: int, interval: float, now: datetime | None = None) -> DispatchReport:
    """Dispatch batches until `stop` is set, or (once) until a batch finds nothing to do.
    Idle waits are on the stop event, so a stop request ends the wait at once."""
    total = DispatchReport()
    while not stop.is_set():
        try:
            advanced = run_due_steps(session, now)  # the campaign sequence queues what is due ...
            session.commit()
            report = dispatch_batch(session, channels, now=now, limit=batch, policy=policy)  # ... and it goes out
            if report.handled == 0:  # idle: bring the dashboard's facts up to date, keeping their queue short
                keep_facts_current(session, now)
                session.commit()
        except DBAPIError:
            # A database blip (restart, failover) must not end a long-running
            # dispatcher; leases make a half-done batch safe to pick up again.
            if once:
                raise
            log.exception("dispatch: database error; retrying after %s s", interval)
            session.rollback()
            stop.wait(interval)
            continue
        total.add(report)
        if once and report.handled == 0 and not advanced:
            break
        if report.handled == 0:
            stop.wait(interval)
    return total


@click.command("dispatch")
@click.option("--once", is_flag=True, help="Send everything due now, then exit.")
@click.option("--batch", type=click.IntRange(1, 10_000), default=None, help="Messages claimed per batch.")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=None, help="Seconds to wait when idle.")
@click.option("--now", "now_text", default=None, metavar="ISO8601",
              help="Pretend it is this UTC time (tests and replays of a fake clock).")
@click.option("--allow-dev-outbox", is_flag=True,
              help="In production, run even though SMS or email would go to the development outbox.")
@with_appcontext
def dispatch_command(once: bool, batch: int | None, interval: float | None, now_text: str | None,
                     allow_dev_outbox: bool) -> None:
    """Send queued messages: quiet hours, caps, consent and retries applied."""
    config = current_app.config
    missing = channels_on_dev_outbox(config)
    if config["PORTAL_ENV"] == "production" and missing and not allow_dev_outbox:
        raise click.ClickException(f"no provider configured for {', '.join(missing)} (see docs/messaging.md); "
                                   "messages would be marked sent without leaving. Use --allow-dev-outbox to accept.")
    try:
        now = _parse_now(now_text)
    except ValueError:
        raise click.BadParameter("use ISO 8601, e.g. 2026-03-09T15:00:00Z", param_hint="--now") from None
    policy = DispatchPolicy.from_config(config)
    env_hook = fault_hook_from_env(config)
    if env_hook is not None:
        policy = DispatchPolicy(**{**policy.__dict__, "fault_hook": env_hook})
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        total = run_dispatcher(db.session, build_channels(config), policy, stop=stop, once=once,
                               batch=batch or config["DISPATCH_BATCH"],
                               interval=interval or config["DISPATCH_INTERVAL_SECONDS"], now=now)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    click.echo(f"dispatch: {total}")
