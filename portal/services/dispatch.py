"""Send what the outbox holds, after the transaction that wrote it has committed.

A batch is its own unit of work, like a request, and no transaction is held open
while a provider is called:

1. Claim. Due rows are selected with FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite
   serialises writers, so run one dispatcher there), joined in the same statement
   to what the checks need. Each is checked again: consent (opted out → cancelled),
   the enrolment (booked, closed, snoozed or holdout → campaign messages
   cancelled), quiet hours and frequency caps (→ deferred). The rest get a lease
   (`claimed_until`) and an attempt in one UPDATE ... RETURNING, which also reads
   the rows the channels get (plain Core rows, not ORM objects), and the claim is
   COMMITTED before anything is sent, so other dispatchers skip them.
2. Send, one provider call at a time: a message per call (`send`), or all of a
   channel's messages in one call for channels that take many (`send_many`: the
   portal inbox, the dev outbox). Before each call one SELECT takes a last look at
   its messages (cancelled by a STOP, channel refused since the claim, lease lost);
   after it the outcomes (sent, retry with exponential backoff, dead letter) are
   written with one executemany per kind, in the same transaction as the next
   call's last look, so each call's outcomes are durable before the next call.

A dispatcher that dies between a call and its commit leaves rows whose lease runs
out; the next run claims them again and the idempotency keys let the provider drop
the second copy (so a `send_many` channel must be one where re-sending a whole call
is harmless). A row that keeps killing its dispatcher is dead-lettered after
`max_attempts` claims.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, Row, and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.orm import Session

from portal.channels import ChannelError, MessageChannel, PermanentChannelError, Sent
from portal.models import (Campaign, Channel, ChannelConsent, Enrolment, EnrolmentStatus, Location, OutboxMessage,
                           OutboxStatus, Patient, utcnow)
from portal.services.consent import REPLY_TEMPLATES

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
EXTERNAL = (str(Channel.SMS), str(Channel.EMAIL))  # channels that reach a phone or a mailbox
EXEMPT_FROM_CONSENT = frozenset(REPLY_TEMPLATES.values())  # the one reply to STOP/START/HELP
FaultHook = Callable[[str, Row], None]


@dataclass(frozen=True)
class DispatchPolicy:
    """The rules a dispatcher applies; `from_config` reads the PORTAL_* settings."""

    window_start_hour: int = 8  # campaign messages only between 8:00 ...
    window_end_hour: int = 21  # ... and 21:00 in the patient's own time zone
    default_zone: str = "America/Chicago"  # when neither the patient nor the clinic has one
    cap_day: int = 1  # campaign messages per patient per 24 hours (a campaign's own cap wins)
    cap_week: int = 3  # ... and per 7 days
    lease: timedelta = timedelta(minutes=5)
    max_attempts: int = MAX_ATTEMPTS
    retry_base: timedelta = timedelta(minutes=1)
    retry_max: timedelta = timedelta(hours=6)
    fault_hook: FaultHook | None = None  # tests only: called at "claimed" and "sent"

    @classmethod
    def from_config(cls, config: dict) -> DispatchPolicy:
        return cls(window_start_hour=config.get("SEND_WINDOW_START_HOUR", 8),
                   window_end_hour=config.get("SEND_WINDOW_END_HOUR", 21),
                   default_zone=config.get("DEFAULT_TIME_ZONE") or "America/Chicago",
                   cap_day=config.get("FREQUENCY_CAP_DAY", 1), cap_week=config.get("FREQUENCY_CAP_WEEK", 3),
                   lease=timedelta(seconds=config.get("DISPATCH_LEASE_SECONDS", 300)),
                   max_attempts=config.get("DISPATCH_MAX_ATTEMPTS", MAX_ATTEMPTS),
                   retry_base=timedelta(seconds=config.get("DISPATCH_RETRY_BASE_SECONDS", 60)),
                   fault_hook=None if config.get("PORTAL_ENV") == "production" else config.get("DISPATCH_FAULT_HOOK"))


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    cancelled: int = 0
    retried: int = 0
    dead: int = 0
    sent_ids: list[int] = field(default_factory=list)

    @property
    def handled(self) -> int:
        """Rows this batch touched; 0 means nothing was due."""
        return self.claimed + self.deferred + self.cancelled + self.dead

    def add(self, other: DispatchReport) -> None:
        for name in ("claimed", "sent", "deferred", "cancelled", "retried", "dead"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.sent_ids += other.sent_ids

    def __str__(self) -> str:
        return (f"sent {self.sent}, deferred {self.deferred}, cancelled {self.cancelled}, "
                f"retrying {self.retried}, dead {self.dead}")


# --- quiet hours --------------------------------------------------------------

def zone_or_none(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def next_send_time(moment: datetime, zone: ZoneInfo, start_hour: int = 8, end_hour: int = 21) -> datetime:
    """`moment` itself when it falls inside the sending window in `zone`, else the
    next window start (8:00 local), in UTC. Wall-clock arithmetic in the zone keeps
    8:00 at 8:00 on both sides of a daylight-saving change."""
    local = moment.astimezone(zone)
    if start_hour <= local.hour < end_hour:
        return moment
    day = local.date() if local.hour < start_hour else local.date() + timedelta(days=1)
    return datetime.combine(day, time(start_hour), tzinfo=zone).astimezone(timezone.utc)


# --- claiming -----------------------------------------------------------------

_outbox, _patient, _enrolment, _campaign = (OutboxMessage.__table__, Patient.__table__, Enrolment.__table__,
                                            Campaign.__table__)
_at = _outbox.c.next_attempt_at.type
# What a claim judges each candidate by, read with the candidate in one statement.
_consent = ChannelConsent.__table__
_refused_now = exists().where(_consent.c.patient_id == _outbox.c.patient_id, _consent.c.granted.is_(False),
                              or_(_consent.c.channel == _outbox.c.channel, _consent.c.channel == "all"))
_CANDIDATES = (
    select(_outbox.c.id, _outbox.c.patient_id, _outbox.c.channel, _outbox.c.template, _outbox.c.step,
           _outbox.c.attempts, _outbox.c.last_error, _outbox.c.campaign_id,
           _refused_now.label("refused"), _patient.c.time_zone, _patient.c.deceased_on,
           _enrolment.c.id.label("enrolment_id"), _enrolment.c.holdout, _enrolment.c.status.label("enrolment_status"),
           _campaign.c.clinic_id, _campaign.c.max_per_day, _campaign.c.max_per_week)
    .select_from(_outbox.outerjoin(_patient, _patient.c.id == _outbox.c.patient_id)
                 .outerjoin(_enrolment, _enrolment.c.id == _outbox.c.enrolment_id)
                 .outerjoin(_campaign, _campaign.c.id == func.coalesce(_outbox.c.campaign_id,
                                                                       _enrolment.c.campaign_id)))
    .where(_outbox.c.status == OutboxStatus.PENDING, _outbox.c.next_attempt_at <= bindparam("now", type_=_at),
           or_(_outbox.c.claimed_until.is_(None), _outbox.c.claimed_until <= bindparam("now", type_=_at)))
    .order_by(_outbox.c.next_attempt_at, _outbox.c.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True, of=_outbox))
# The lease for everything a claim takes, in one statement that also reads what the
# channels need: the claimed rows are plain Core rows, never ORM objects.
_LEASE = (update(_outbox).where(_outbox.c.id.in_(bindparam("ids", expanding=True)))
          .values(attempts=_outbox.c.attempts + 1, claimed_until=bindparam("until", type_=_outbox.c.claimed_until.type))
          .returning(*_outbox.c))


class _Caps:
    """Per patient of the batch's campaign messages: [sent in the last day, in the
    last week, oldest in the day window, oldest in the week window], counting the
    claims this batch makes as it goes."""

    def __init__(self, session: Session, patient_ids: set[int], now: datetime) -> None:
        self.now = now
        self.counts = self._recent_counts(session, patient_ids) if patient_ids else {}

    def _recent_counts(self, session: Session, patient_ids: set[int]) -> dict[int, list]:
        """Messages another dispatcher is sending right now (a live lease) count as sent now."""
        day_ago, week_ago = self.now - timedelta(days=1), self.now - timedelta(days=7)
        sent = _outbox.c.status == OutboxStatus.SENT
        in_flight = and_(_outbox.c.status == OutboxStatus.PENDING, _outbox.c.claimed_until > self.now)
        rows = session.execute(
            select(_outbox.c.patient_id,
                   func.sum(case((and_(sent, _outbox.c.sent_at <= day_ago), 0), else_=1)),
                   func.count(),
                   func.min(case((and_(sent, _outbox.c.sent_at > day_ago), _outbox.c.sent_at))),
                   func.min(_outbox.c.sent_at))
            .where(_outbox.c.patient_id.in_(patient_ids), _outbox.c.step.is_not(None),
                   _outbox.c.channel.in_(EXTERNAL),
                   or_(and_(sent, _outbox.c.sent_at > week_ago), in_flight))
            .group_by(_outbox.c.patient_id))
        return {pid: [day or 0, week or 0, day_oldest, week_oldest]
                for pid, day, week, day_oldest, week_oldest in rows}

    def release(self, patient_id: int, per_day: int, per_week: int) -> datetime | None:
        """None when the patient is under both caps, else when a slot frees up."""
        day, week, day_oldest, week_oldest = self.counts.get(patient_id, (0, 0, None, None))
        release = None
        if day >= per_day:
            release = (day_oldest or self.now) + timedelta(days=1)
        if week >= per_week:
            release = max(release or self.now, (week_oldest or self.now) + timedelta(days=7))
        return release

    def count_claim(self, patient_id: int) -> None:
        entry = self.counts.setdefault(patient_id, [0, 0, None, None])
        entry[0] += 1
        entry[1] += 1


class _Zones:
    """The zone quiet hours follow: the patient's, else their clinic's (first open
    location), else the policy's default. Clinics are looked up only when needed."""

    def __init__(self, session: Session, policy: DispatchPolicy) -> None:
        self.session = session
        self.default = zone_or_none(policy.default_zone) or ZoneInfo("UTC")
        self.by_name: dict[str | None, ZoneInfo | None] = {}
        self.by_clinic: dict[int | None, ZoneInfo | None] = {None: None}

    def _zone(self, name: str | None) -> ZoneInfo | None:
        if name not in self.by_name:
            self.by_name[name] = zone_or_none(name)
        return self.by_name[name]

    def for_row(self, row) -> ZoneInfo:
        zone = self._zone(row.time_zone)
        if zone is None:
            if row.clinic_id not in self.by_clinic:
                name = self.session.scalar(select(Location.time_zone).where(Location.clinic_id == row.clinic_id)
                                           .order_by(Location.retired, Location.id).limit(1))
                self.by_clinic[row.clinic_id] = self._zone(name)
            zone = self.by_clinic[row.clinic_id]
        return zone or self.default


def _refusal(row) -> str | None:
    """Why this candidate may not go out at all any more, or None."""
    if row.refused and row.template not in EXEMPT_FROM_CONSENT and row.patient_id is not None:
        return "opted out"
    if row.step is not None:
        if row.deceased_on is not None:
            return "patient deceased"
        if row.enrolment_id is not None:
            if row.holdout:
                return "holdout"
            if row.enrolment_status != EnrolmentStatus.INVITED:
                return f"enrolment {row.enrolment_status}"
    return None


def _is_campaign(message) -> bool:
    """A sequence step: subject to quiet hours and caps. Codes, booking notices and
    keyword replies have no step: they are transactional and go out at once."""
    return message.step is not None


def claim_due(session: Session, now: datetime, limit: int, policy: DispatchPolicy,
              report: DispatchReport | None = None) -> list[Row]:
    """Select and lease up to `limit` due messages; the caller commits. Returns the
    claimed outbox rows (Core rows with every column, the lease and attempt included),
    in due order.

    Also cancels what may no longer be sent and defers what is outside the
    patient's quiet hours or over a frequency cap.
    """
    report = report if report is not None else DispatchReport()
    session.flush()
    candidates = session.execute(_CANDIDATES, {"now": now, "limit": limit}).all()
    if not candidates:
        return []
    # Caps count what a patient already got, so two dispatchers must not judge the
    # same patient at once: lock the patients of campaign messages (FOR NO KEY UPDATE,
    # which still lets other rows reference them) and leave the rest for later.
    campaign_patients = {c.patient_id for c in candidates if c.step is not None and c.patient_id is not None}
    if campaign_patients and session.get_bind().dialect.name == "postgresql":
        locked = set(session.scalars(select(_patient.c.id).where(_patient.c.id.in_(campaign_patients))
                                     .with_for_update(skip_locked=True, key_share=True)))
        candidates = [c for c in candidates if c.step is None or c.patient_id in locked]
        campaign_patients &= locked
    caps, zones = _Caps(session, campaign_patients, now), _Zones(session, policy)
    claiming, settled = [], []
    for row in candidates:
        reason = _refusal(row)
        if reason is not None:
            settled.append({"b_id": row.id, "b_status": OutboxStatus.CANCELLED, "b_error": reason, "b_next": None})
            report.cancelled += 1
            continue
        if row.attempts >= policy.max_attempts:
            # Claimed that many times and never finished: it keeps killing dispatchers.
            settled.append({"b_id": row.id, "b_status": OutboxStatus.DEAD, "b_next": None,
                            "b_error": f"gave up after {row.attempts} attempts: {row.last_error}"[:200]})
            report.dead += 1
            continue
        if row.step is not None and row.channel in EXTERNAL:
            if row.campaign_id is not None and row.max_per_day is not None:
                per_day, per_week = row.max_per_day, row.max_per_week
            else:
                per_day, per_week = policy.cap_day, policy.cap_week
            release = caps.release(row.patient_id, per_day, per_week)
            when = next_send_time(release or now, zones.for_row(row), policy.window_start_hour,
                                  policy.window_end_hour)
            if when > now:
                settled.append({"b_id": row.id, "b_status": OutboxStatus.PENDING, "b_error": None, "b_next": when})
                report.deferred += 1
                continue
            caps.count_claim(row.patient_id)
        claiming.append(row.id)
    if settled:
        session.execute(_MARK_UNSENT, settled)
    if not claiming:
        return []
    leased = {row.id: row for row in session.execute(_LEASE, {"ids": claiming, "until": now + policy.lease})}
    report.claimed += len(leased)
    return [leased[id_] for id_ in claiming]


# --- sending ------------------------------------------------------------------

def _backoff(policy: DispatchPolicy, attempts: int) -> timedelta:
    return min(policy.retry_base * (2 ** max(attempts - 1, 0)), policy.retry_max)


# Outcomes are written with executemany, one statement per kind for a whole hand-off.
# Sent is the truth even if a STOP cancelled the row while the provider had it.
_MARK_SENT = (update(_outbox)
              .where(_outbox.c.id == bindparam("b_id"), _outbox.c.status != OutboxStatus.SENT)
              .values(status=OutboxStatus.SENT, sent_at=bindparam("b_at", type_=_outbox.c.sent_at.type),
                      claimed_until=None, last_error="",
                      provider_message_id=func.coalesce(
                          bindparam("b_provider_id", type_=_outbox.c.provider_message_id.type),
                          _outbox.c.provider_message_id),
                      delivered_at=func.coalesce(bindparam("b_delivered", type_=_outbox.c.delivered_at.type),
                                                 _outbox.c.delivered_at)))
# Not sent: a retry later or a deferral (status stays pending), a dead letter, or cancelled
# (at the claim or the last look). A deferral keeps the last error (b_error None).
_MARK_UNSENT = (update(_outbox)
                .where(_outbox.c.id == bindparam("b_id"), _outbox.c.status == OutboxStatus.PENDING)
                .values(status=bindparam("b_status", type_=_outbox.c.status.type), claimed_until=None,
                        last_error=func.coalesce(bindparam("b_error", type_=_outbox.c.last_error.type),
                                                 _outbox.c.last_error),
                        next_attempt_at=func.coalesce(bindparam("b_next", type_=_outbox.c.next_attempt_at.type),
                                                      _outbox.c.next_attempt_at)))


_LAST_LOOK = select(_outbox.c.id, _outbox.c.status, _outbox.c.claimed_until, _refused_now).where(
    _outbox.c.id.in_(bindparam("ids", expanding=True)))


@dataclass
class _Outcomes:
    """What one hand-off to a channel came to, written in the next transaction."""

    sent: list[dict] = field(default_factory=list)
    unsent: list[dict] = field(default_factory=list)

    def write(self, session: Session) -> None:
        # executemany for a whole call; a single execute for one message (no pipeline to set up).
        if self.sent:
            session.execute(_MARK_SENT, self.sent if len(self.sent) > 1 else self.sent[0])
        if self.unsent:
            session.execute(_MARK_UNSENT, self.unsent if len(self.unsent) > 1 else self.unsent[0])
        self.sent, self.unsent = [], []


def _hand_offs(messages: list[Row], channels: dict[str, MessageChannel]) -> list[list[Row]]:
    """The batch cut into provider calls, in claim order: all of a channel's messages
    in one call when the channel takes many at once (`send_many`), else one each."""
    groups: list[list[Row]] = []
    together: dict[str, list[Row]] = {}
    for message in messages:
        if not hasattr(channels.get(message.channel), "send_many"):
            groups.append([message])
        elif message.channel in together:
            together[message.channel].append(message)
        else:
            together[message.channel] = [message]
            groups.append(together[message.channel])
    return groups


def _last_look(session: Session, group: list[Row]) -> tuple[list[Row], list[Row]]:
    """(still ours to send, opted out since the claim), in one SELECT: a STOP may have
    cancelled a row or refused its channel, or a slow batch may have lost its lease."""
    rows = {id_: (status, claimed_until, opted_out) for id_, status, claimed_until, opted_out
            in session.execute(_LAST_LOOK, {"ids": [m.id for m in group]})}
    live, opted_out = [], []
    for message in group:
        status, claimed_until, refusal = rows.get(message.id, (None, None, False))
        if status != OutboxStatus.PENDING or claimed_until != message.claimed_until:
            continue
        if refusal and message.template not in EXEMPT_FROM_CONSENT:
            opted_out.append(message)
        else:
            live.append(message)
    return live, opted_out


def _hand_off(channel: MessageChannel | None, messages: list[Row]) -> list[Sent | ChannelError | None]:
    """One provider call: each message's Sent (or None), or the ChannelError it met."""
    try:
        if channel is None:
            raise PermanentChannelError(f"no channel {messages[0].channel!r}")
        send_many = getattr(channel, "send_many", None)
        results = list(send_many(messages)) if send_many else [channel.send(messages[0])]
        if len(results) != len(messages):
            raise TypeError(f"{len(results)} results for {len(messages)} messages")
        return results
    except ChannelError as exc:
        return [exc] * len(messages)
    except Exception as exc:  # a bug in a channel must not stop the other messages
        log.exception("channel %s raised on outbox messages %s", messages[0].channel, [m.id for m in messages])
        return [ChannelError(type(exc).__name__)] * len(messages)


def _send(channels: dict[str, MessageChannel], group: list[Row], now: datetime, policy: DispatchPolicy,
          report: DispatchReport, outcomes: _Outcomes) -> None:
    if policy.fault_hook:
        for message in group:
            policy.fault_hook("claimed", message)
    results = _hand_off(channels.get(group[0].channel), group)
    for message, result in zip(group, results):
        if not isinstance(result, ChannelError):
            if policy.fault_hook:
                policy.fault_hook("sent", message)
            outcomes.sent.append({"b_id": message.id, "b_at": now,
                                  "b_provider_id": (result.provider_message_id[:64] or None) if result else None,
                                  "b_delivered": now if result is not None and result.delivered else None})
            report.sent += 1
            report.sent_ids.append(message.id)
            continue
        final = isinstance(result, PermanentChannelError) or message.attempts >= policy.max_attempts
        error = str(result)[:200] or type(result).__name__
        outcomes.unsent.append({"b_id": message.id, "b_error": error,
                                "b_status": OutboxStatus.DEAD if final else OutboxStatus.PENDING,
                                "b_next": None if final else now + _backoff(policy, message.attempts)})
        if final:
            report.dead += 1
        else:
            report.retried += 1
        log.warning("outbox message %s on %s failed (attempt %s): %s", message.id, message.channel,
                    message.attempts, error)


def dispatch_batch(session: Session, channels: dict[str, MessageChannel], now: datetime | None = None,
                   limit: int = 100, policy: DispatchPolicy | None = None) -> DispatchReport:
    """Claim up to `limit` due messages and commit the claim; then, per provider call,
    take a last look, hand the messages over, and write their outcomes in the same
    transaction as the next call's last look. This is a unit-of-work boundary (like a
    request or a CLI command): it commits on `session`, and expects no uncommitted
    work in it."""
    now = now or utcnow()
    policy = policy or _policy_from_app()
    report = DispatchReport()
    # Channels get plain rows: reading them never opens a transaction (SQLite's
    # BEGIN IMMEDIATE would hold the write lock through a provider call).
    claimed = claim_due(session, now, limit, policy, report)
    session.commit()
    outcomes = _Outcomes()
    with _one_connection(session) as sending:
        for group in _hand_offs(claimed, channels):
            outcomes.write(sending)
            live, opted_out = _last_look(sending, group)
            sending.commit()  # the previous call's outcomes are durable before the next call
            for message in opted_out:
                outcomes.unsent.append({"b_id": message.id, "b_status": OutboxStatus.CANCELLED,
                                        "b_error": "opted out", "b_next": None})
                report.cancelled += 1
            if live:
                _send(channels, live, now, policy, report, outcomes)
        outcomes.write(sending)
        sending.commit()
    _expire_loaded(session, {message.id for message in claimed})
    if report.handled:
        log.info("dispatch: %s", report)
    return report


@contextmanager
def _one_connection(session: Session) -> Iterator[Session]:
    """The session that writes a batch's outcomes, holding one connection across its
    commits. A session bound to an engine hands its connection back to the pool at each
    commit, and the pool pings it (pool_pre_ping) at the next checkout: one more round
    trip per message where a channel takes one message per call. A session already
    bound to a connection (the tests' savepoints) is used as it is."""
    bind = session.get_bind()
    if not isinstance(bind, Engine):
        yield session
        return
    with bind.connect() as connection, Session(bind=connection) as sending:
        yield sending


def _expire_loaded(session: Session, ids: set[int]) -> None:
    """Outbox rows were written with Core UPDATEs: any of them this session holds
    as ORM objects reload on next use."""
    for key, obj in list(session.identity_map.items()):
        if key[0] is OutboxMessage and key[1][0] in ids:
            session.expire(obj)


def dispatch_due(session: Session, channels: dict[str, MessageChannel], now: datetime | None = None,
                 limit: int = 100, policy: DispatchPolicy | None = None) -> int:
    """Send up to `limit` due messages and return how many went out (see dispatch_batch)."""
    return dispatch_batch(session, channels, now, limit, policy).sent


def _policy_from_app() -> DispatchPolicy:
    from flask import current_app, has_app_context

    return DispatchPolicy.from_config(current_app.config) if has_app_context() else DispatchPolicy()


# --- dead letters -------------------------------------------------------------

def dead_letters(session: Session, limit: int = 100) -> list[OutboxMessage]:
    """Messages that will not be retried any more, newest first (for the console)."""
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.status == OutboxStatus.DEAD)
                                .order_by(OutboxMessage.id.desc()).limit(limit)))


def requeue_dead_letter(session: Session, message_id: int, now: datetime | None = None) -> bool:
    """Give a dead letter a fresh set of attempts (after staff fixed the cause).
    Consent, quiet hours and caps are checked again when it is sent."""
    done = session.execute(update(OutboxMessage).where(OutboxMessage.id == message_id,
                                                       OutboxMessage.status == OutboxStatus.DEAD)
                           .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now or utcnow(),
                                   claimed_until=None, last_error="")
                           .execution_options(synchronize_session=False)).rowcount
    session.flush()
    return bool(done)
