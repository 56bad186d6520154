"""Bench: outreach messages rendered, signed and handed to a channel, on PostgreSQL.

    flock /tmp/bench.lock .venv/bin/python bench/dispatch.py            # 20 000 messages
    flock /tmp/bench.lock .venv/bin/python bench/dispatch.py --messages 5000 --print-section

A fresh PostgreSQL database with one active campaign and N enrolled patients whose
day-0 step is due (each patient's time zone is one where it is now early afternoon,
so quiet hours don't defer anything; contact consent on file; a share of them,
--email-percent, have no phone, so their day-0 message is an email: three templates
and an unsubscribe link instead of one short text). Timed phases:
1. `sequence.run_due_steps` in batches of 500, committing each, in this process:
   every message is rendered in the patient's language with a freshly signed link
   (render + sign + outbox row);
2. dispatcher processes (1, then 4 at once): `dispatch.dispatch_batch` (claim with
   FOR UPDATE SKIP LOCKED, commit, last look, hand to a fake channel that only records
   the ids, mark sent) until nothing is due; the outbox is set back to pending between
   runs. Once with a fake taking one message per call (`send`, like SMS and SMTP: a last
   look and an outcome commit per message) and once with one taking the batch in one
   call (`send_many`, like the portal inbox);
3. the whole pipeline, as `portal dispatch` runs it (`cli_dispatch.run_dispatcher`:
   run_due_steps, commit, dispatch_batch, in a loop), 1 and 4 processes, from due
   enrolments to messages handed over (`send_many` fake); enrolments, links, events and
   the outbox are reset before each run.
For each dispatcher run: elapsed is from starting the processes to the last one
exiting (Python and app start, ~1 s each, and the idle check at the end included);
span is from the first dispatcher entering its loop to the last message handed over.
Duplicates: ids handed to the channel more than once (across processes), rows not
marked sent, and (pipeline) enrolments with more than one day-0 message. Target:
>= 1 000 messages/s, zero duplicates, judged on the span (see report()).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from common import (SHARED_NOTE, Sql, bench_app, drop_database, fresh_database, load_average, machine, run_sql,
                    stamp, version, write_section)

TITLE = "Dispatch: outreach messages per second (PostgreSQL)"
TARGET = 1000.0
MODES = {"one": "one per call (`send`)", "many": "batch per call (`send_many`)",
         "pipeline": "whole loop: sequence + dispatch, batch per call"}


class FakeChannel:
    """Accepts everything, one message per call, and remembers which outbox rows it
    was handed and when it was last handed one."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.first = self.last = 0.0

    def send(self, message):
        from portal.channels import Sent

        self.ids.append(message.id)
        self.last = time.time()
        self.first = self.first or self.last
        return Sent(provider_message_id=f"fake-{message.id}")


class FakeBatchChannel(FakeChannel):
    """The same, taking a whole batch in one call."""

    def send_many(self, messages):
        return [self.send(message) for message in messages]


def afternoon_zone(now: datetime) -> str:
    """An Etc/GMT zone where it is about 13:00 now (Etc/GMT+5 is UTC-5)."""
    offset = 13 - now.hour
    offset = (offset + 12) % 24 - 12
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def dispatcher_main(url: str, batch: int, mode: str, seconds: float) -> None:
    """One dispatcher process: dispatch batches until nothing is due (or time is up);
    in the pipeline mode, the `portal dispatch --once` loop itself."""
    import threading

    from portal.extensions import db
    from portal.services.dispatch import DispatchPolicy, dispatch_batch

    app = bench_app(url)
    fake = FakeChannel() if mode == "one" else FakeBatchChannel()
    channels = {"sms": fake, "email": fake, "portal": fake}
    started = time.time()
    with app.test_request_context():  # the sequence renders templates with the app's Jinja and Babel
        session = db.session
        if mode == "pipeline":
            from portal.cli_dispatch import run_dispatcher

            stop = threading.Event()
            timer = threading.Timer(seconds, stop.set)
            timer.start()
            run_dispatcher(session, channels, DispatchPolicy(), stop=stop, once=True, batch=batch, interval=0.05)
            timer.cancel()
        else:
            deadline = time.monotonic() + seconds
            idle = 0
            while time.monotonic() < deadline and idle < 3:
                report = dispatch_batch(session, channels, limit=batch, policy=DispatchPolicy())
                session.close()
                idle = idle + 1 if report.handled == 0 else 0
                if report.handled == 0:
                    time.sleep(0.05)
    print(json.dumps({"ids": fake.ids, "started": started, "first": fake.first, "last": fake.last,
                      "ended": time.time()}))


def seed(app, messages: int, email_percent: int) -> None:
    from portal.extensions import db
    from portal.models import Campaign, Clinic, Location

    engine = app.extensions["portal_db"]["engine"]
    now = datetime.now(timezone.utc)
    with app.app_context():
        session = db.session
        clinic = Clinic(name="Bench Clinic", phone="+13125550100", email="bench@example.org", postal_address="x")
        session.add(clinic)
        session.flush()
        session.add(Location(clinic_id=clinic.id, name="Main", address="x", time_zone="America/Chicago",
                             transit_notes={}, parking_notes={}))
        campaign = Campaign(clinic_id=clinic.id, name="Bench dispatch", status="active", holdout_percent=0,
                            care_gap_codes=["annual_wellness"], channels=["sms", "email"], step_days=[0, 7, 14, 30])
        session.add(campaign)
        session.commit()
        campaign_id = campaign.id
    sql = Sql(engine.dialect.name)
    zone = afternoon_zone(now)
    due = sql.ts(now - timedelta(minutes=1))
    run_sql(engine, sql.seq("bench_seq", messages) + [
        f"""INSERT INTO patient (id, external_id, given_name, family_name, birth_date, sex, phone, email,
            preferred_language, time_zone, address_line, city, state, postal_code, moved_away, coverage_active,
            uses_portal, pharmacy, created_at)
            SELECT i, 'bench-' || i, 'Pat', 'Bench', DATE '1960-01-01' + i % 9000, 'F',
                   CASE WHEN i % 100 < {email_percent} THEN '' ELSE '+1312555' || i END,
                   'p' || i || '@example.org', CASE WHEN i % 3 = 0 THEN 'es' ELSE 'en' END, '{zone}', '', '', '', '',
                   false, true, false, '', {sql.ts(now)} FROM bench_seq""",
        f"""INSERT INTO channel_consent (patient_id, channel, granted, source, updated_at)
            SELECT i, c.channel, true, 'bench', {sql.ts(now)} FROM bench_seq
            CROSS JOIN (SELECT 'sms' AS channel UNION ALL SELECT 'email') c""",
        f"""INSERT INTO enrolment (campaign_id, patient_id, care_gap_code, status, tier, variant, holdout,
            dob_failures, closed_reason, next_step, next_step_at, created_at)
            SELECT {campaign_id}, i, 'annual_wellness', 'invited', 4, 'A', false, 0, '', 0, {due}, {due}
            FROM bench_seq""",
        "DROP TABLE bench_seq", "ANALYZE",
    ])


def _due(now: datetime) -> str:
    return Sql("postgresql").ts(now - timedelta(minutes=1))


def _reset_outbox(engine) -> None:
    run_sql(engine, ["UPDATE outbox_message SET status = 'pending', sent_at = NULL, attempts = 0, "
                     "claimed_until = NULL, provider_message_id = '', delivered_at = NULL, "
                     "next_attempt_at = now() - interval '1 minute'"])
    _vacuum(engine)


def _reset_sequence(engine) -> None:
    """Back to N enrolments whose day-0 step is due and nothing queued, linked or logged."""
    due = _due(datetime.now(timezone.utc))
    run_sql(engine, ["DELETE FROM event", "DELETE FROM outbox_message", "DELETE FROM link",
                     "DELETE FROM enrolment_fact_change",
                     f"UPDATE enrolment SET status = 'invited', next_step = 0, next_step_at = {due}, "
                     "escalated_at = NULL, last_contacted_at = NULL"])
    _vacuum(engine)


def _vacuum(engine) -> None:
    """Each run starts without the dead rows the previous one left."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


def _run_dispatchers(url: str, engine, batch: int, mode: str, count: int) -> dict:
    started = time.perf_counter()
    wall = time.time()
    processes = [subprocess.Popen([sys.executable, __file__, "--dispatcher", url, str(batch), mode],
                                  stdout=subprocess.PIPE, text=True) for _ in range(count)]
    outputs = [json.loads(process.communicate(timeout=900)[0].strip().splitlines()[-1]) for process in processes]
    elapsed = time.perf_counter() - started
    ids = [i for output in outputs for i in output["ids"]]
    span = max(o["last"] for o in outputs) - min(o["started"] for o in outputs)
    with engine.connect() as connection:
        sent = connection.execute(text("SELECT count(*) FROM outbox_message WHERE status = 'sent'")).scalar()
        other = connection.execute(text("SELECT status, count(*) FROM outbox_message WHERE status <> 'sent' "
                                        "GROUP BY status")).all()
        twice = connection.execute(text("SELECT count(*) FROM (SELECT enrolment_id FROM outbox_message "
                                        "GROUP BY enrolment_id, step HAVING count(*) > 1) t")).scalar()
    return {"handed": len(ids), "unique": len(set(ids)), "duplicates": len(ids) - len(set(ids)) + twice,
            "sent": sent, "not_sent": {status: n for status, n in other}, "elapsed": elapsed,
            "per_s": len(set(ids)) / elapsed, "span": span, "span_per_s": len(set(ids)) / span,
            "boot": min(o["started"] for o in outputs) - wall,
            "tail": max(o["ended"] for o in outputs) - max(o["last"] for o in outputs)}


def measure(messages: int, batch: int, dispatchers: int, email_percent: int) -> dict | None:
    url = fresh_database("postgresql", "bench_dispatch")
    if url is None:
        return None
    app = bench_app(url)
    engine = app.extensions["portal_db"]["engine"]
    seed(app, messages, email_percent)
    from portal.extensions import db
    from portal.services.sequence import run_due_steps

    load_before = load_average()
    with app.test_request_context():
        session = db.session
        started = time.perf_counter()
        cpu = time.process_time()
        while run_due_steps(session, limit=500):
            session.commit()
        session.commit()
        rendered, render_cpu = time.perf_counter() - started, time.process_time() - cpu
    with engine.connect() as connection:
        outbox = connection.execute(text("SELECT count(*) FROM outbox_message")).scalar()
        emails = connection.execute(text("SELECT count(*) FROM outbox_message WHERE channel = 'email'")).scalar()
    results = {"version": version(engine), "messages": outbox, "emails": emails, "render_s": rendered,
               "render_cpu_s": render_cpu, "render_per_s": outbox / rendered, "runs": {},
               "load_before": load_before, "load": ""}
    counts = sorted({1, dispatchers})
    for mode, count in [(mode, count) for mode in ("one", "many", "pipeline") for count in counts]:
        if mode == "pipeline":
            _reset_sequence(engine)
        else:
            _reset_outbox(engine)
        results["runs"][mode, count] = _run_dispatchers(url, engine, batch, mode, count)
    results["load"] = load_average()
    engine.dispose()
    drop_database(url)
    return results


def _n(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def report(run: dict, batch: int) -> list[str]:
    lines = [f"What it measures: `bench/dispatch.py` (PostgreSQL only: SQLite runs one dispatcher) enrols "
             f"{_n(run['messages'])} patients whose day-0 step is due ({_n(run['emails'])} of them with no phone, so "
             "their message is an email: three templates and a signed unsubscribe link; the rest get a text), then "
             "times (1) `sequence.run_due_steps` in one process (render in the patient's language + sign a fresh "
             "link + write the outbox row, batches of 500), (2) `dispatch.dispatch_batch` (batches of "
             f"{batch}: claim with SKIP LOCKED, commit, last look, hand to a fake channel, mark sent) in 1 and in 4 "
             "dispatcher processes until nothing is due, with a fake that takes one message per call (`send`, as "
             "SMS and SMTP do: a last look and an outcome commit per message) and with one that takes the batch in "
             "one call (`send_many`, as the portal inbox does), and (3) the whole `portal dispatch` loop "
             "(`run_dispatcher`: sequence then dispatch, repeated) in 1 and 4 processes from due enrolments to "
             "messages handed over. Elapsed runs from starting the processes to the last one exiting: it includes "
             "starting Python and the app in each (the \"start\" column) and the idle check at the end. Span runs "
             "from the first dispatcher entering its loop to the last message handed over. **The target column "
             "judges messages/s in the span**: a dispatcher is a long-running process, so its start-up is paid once "
             "per deployment, not per message; elapsed is shown beside it. Duplicates: ids handed to the channel "
             "more than once across processes, plus enrolments with two messages for one step. Target: >= 1 000 "
             "messages/s, zero duplicates.", "",
             f"Last run: {stamp()} on {machine()}; load average (1 / 5 min) before: {run['load_before']}, at the end: "
             f"{run['load']}.", "",
             SHARED_NOTE, "",
             f"{run['version']}: rendered and signed {_n(run['messages'])} messages in {run['render_s']:.1f} s "
             f"({run['render_cpu_s']:.1f} s CPU in this process) = **{run['render_per_s']:.0f} messages/s** (one "
             f"process): {'met' if run['render_per_s'] >= TARGET else '**missed**'}.", "",
             "| what runs | processes | handed to the channel | duplicates | marked sent | not sent | start | elapsed "
             "| messages/s by elapsed | span | messages/s in span | target (span) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (mode, count), r in run["runs"].items():
        lines.append(f"| {MODES[mode]} | {count} | {r['handed']} | {r['duplicates']} | {r['sent']} | "
                     f"{r['not_sent'] or 0} | {r['boot']:.1f} s | {r['elapsed']:.1f} s | {r['per_s']:.0f} | "
                     f"{r['span']:.1f} s | {r['span_per_s']:.0f} | "
                     f"{'met' if r['span_per_s'] >= TARGET and not r['duplicates'] else '**missed**'} |")
    lines += ["", "Reproduce: `flock /tmp/bench.lock .venv/bin/python bench/dispatch.py --print-section` (PostgreSQL "
              "on 127.0.0.1:5432, user postgres; the bench creates and drops the database `bench_dispatch`).", ""]
    return lines


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--dispatcher":
        dispatcher_main(sys.argv[2], int(sys.argv[3]), sys.argv[4], 600)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000,
                        help="enrolments due, i.e. messages (enough that process start weighs little)")
    parser.add_argument("--batch", type=int, default=100, help="messages per dispatch batch (DISPATCH_BATCH)")
    parser.add_argument("--dispatchers", type=int, default=4)
    parser.add_argument("--email-percent", type=int, default=25,
                        help="patients with no phone: their message is an email")
    parser.add_argument("--write-readme", action="store_true", help="replace the section in bench/README.md")
    parser.add_argument("--print-section", action="store_true", help="print the README section")
    args = parser.parse_args()
    run = measure(args.messages, args.batch, args.dispatchers, args.email_percent)
    if run is None:
        return
    print(f"{run['version']}: rendered + signed {run['messages']} ({run['emails']} emails) in {run['render_s']:.1f} s "
          f"({run['render_per_s']:.0f}/s; CPU {run['render_cpu_s']:.1f} s); load before {run['load_before']}, "
          f"after {run['load']}")
    for (mode, count), r in run["runs"].items():
        print(f"  {MODES[mode]}, {count} process(es): {r['unique']} sent in {r['elapsed']:.1f} s = {r['per_s']:.0f}/s "
              f"(start {r['boot']:.1f} s; after the last send {r['tail']:.1f} s; span {r['span']:.1f} s = "
              f"{r['span_per_s']:.0f}/s), duplicates {r['duplicates']}, marked sent {r['sent']}, "
              f"not sent {r['not_sent']}")
    if args.print_section:
        print("\n".join([f"## {TITLE}", "", *report(run, args.batch)]))
    if args.write_readme:
        write_section(TITLE, report(run, args.batch))
    if any(r["duplicates"] for r in run["runs"].values()):
        raise SystemExit("duplicates handed to the channel")


if __name__ == "__main__":
    main()
