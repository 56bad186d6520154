"""Bench: outreach messages rendered, signed and handed to a channel, on PostgreSQL.

    .venv/bin/python bench/dispatch.py                        # 5 000 messages
    .venv/bin/python bench/dispatch.py --messages 20000 --write-readme

A fresh PostgreSQL database with one active campaign and N enrolled patients whose
day-0 step is due (each patient's time zone is one where it is now early afternoon,
so quiet hours don't defer anything; contact consent on file). Three timed phases:
1. `sequence.run_due_steps` in batches of 500, committing each: every message is
   rendered in the patient's language with a freshly signed link (render + sign + outbox);
2. one dispatcher: `dispatch.dispatch_batch` (the API in portal/services/dispatch.py:
   claim with FOR UPDATE SKIP LOCKED, commit, send, mark sent) against a fake channel
   that only records the ids it is handed, until nothing is due;
3. the same outbox set back to pending, and four dispatcher processes at once.
Steps 2 and 3 run twice: with a fake that takes one message per call (`send`, like the
SMS and SMTP channels: last look and outcome committed per message) and with one that
takes the batch in one call (`send_many`, like the portal inbox: one last look and one
outcome transaction per batch). Elapsed includes starting each process (~1 s); "span"
is from the first dispatcher entering its loop to the last message handed over.
Duplicates: ids handed to the channel more than once (across processes), and rows
not marked sent once. Target: >= 1 000 messages/s, zero duplicates.
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
MODES = {"one": "one per call (`send`)", "many": "batch per call (`send_many`)"}


class FakeChannel:
    """Accepts everything, one message per call, and remembers which outbox rows it
    was handed and when it was last handed one."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.last = 0.0

    def send(self, message):
        from portal.channels import Sent

        self.ids.append(message.id)
        self.last = time.time()
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
    """One dispatcher process: dispatch batches until nothing is due (or time is up)."""
    from portal.extensions import db
    from portal.services.dispatch import DispatchPolicy, dispatch_batch

    app = bench_app(url)
    fake = FakeBatchChannel() if mode == "many" else FakeChannel()
    channels = {"sms": fake, "email": fake, "portal": fake}
    deadline = time.monotonic() + seconds
    idle = 0
    started = time.time()
    with app.app_context():
        session = db.session
        while time.monotonic() < deadline and idle < 3:
            report = dispatch_batch(session, channels, limit=batch, policy=DispatchPolicy())
            session.close()
            idle = idle + 1 if report.handled == 0 else 0
            if report.handled == 0:
                time.sleep(0.05)
    print(json.dumps({"ids": fake.ids, "started": started, "last": fake.last}))


def seed(app, messages: int) -> None:
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
            SELECT i, 'bench-' || i, 'Pat', 'Bench', DATE '1960-01-01' + i % 9000, 'F', '+1312555' || i,
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


def measure(messages: int, batch: int, dispatchers: int) -> dict | None:
    url = fresh_database("postgresql", "bench_dispatch")
    if url is None:
        return None
    app = bench_app(url)
    engine = app.extensions["portal_db"]["engine"]
    seed(app, messages)
    from portal.extensions import db
    from portal.services.sequence import run_due_steps

    with app.test_request_context():
        session = db.session
        started = time.perf_counter()
        queued = 0
        while True:
            advanced = run_due_steps(session, limit=500)
            session.commit()
            queued += advanced
            if advanced == 0:
                break
        rendered = time.perf_counter() - started
    with engine.connect() as connection:
        outbox = connection.execute(text("SELECT count(*) FROM outbox_message")).scalar()
    run_sql(engine, ["ANALYZE"])
    results = {"version": version(engine), "messages": outbox, "render_s": rendered,
               "render_per_s": outbox / rendered, "runs": {}, "load": ""}
    for mode, count in [(mode, count) for mode in ("one", "many") for count in sorted({1, dispatchers})]:
        run_sql(engine, [f"UPDATE outbox_message SET status = 'pending', sent_at = NULL, attempts = 0, "
                         f"claimed_until = NULL, provider_message_id = '', next_attempt_at = now() - interval '1 minute'"])
        started = time.perf_counter()
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
        results["runs"][mode, count] = {"handed": len(ids), "unique": len(set(ids)),
                                        "duplicates": len(ids) - len(set(ids)), "sent": sent,
                                        "not_sent": {status: n for status, n in other}, "elapsed": elapsed,
                                        "per_s": len(set(ids)) / elapsed, "span": span,
                                        "span_per_s": len(set(ids)) / span}
    results["load"] = load_average()
    engine.dispose()
    drop_database(url)
    return results


def report(run: dict, batch: int) -> list[str]:
    lines = ["What it measures: `bench/dispatch.py` (PostgreSQL only: SQLite runs one dispatcher) enrols "
             f"{run['messages']:,}".replace(",", " ") + " patients whose day-0 step is due, then times `sequence.run_due_steps` (render in "
             "the patient's language + sign a fresh link + write the outbox row, batches of 500) and "
             f"`dispatch.dispatch_batch` (batches of {batch}: claim with SKIP LOCKED, commit, last look, hand to a fake "
             "channel, mark sent) with 1 and with 4 dispatcher processes until nothing is due, once with a fake that "
             "takes one message per call (`send`, as the SMS and SMTP channels do: a last look and an outcome commit "
             "per message) and once with a fake that takes the batch in one call (`send_many`, as the portal inbox "
             "does: one last look and one outcome transaction per batch). Elapsed includes starting each dispatcher's "
             "Python process and app (~1 s) and its idle check at the end; span is from the first dispatcher entering "
             "its loop to the last message handed over. The target column judges elapsed. Duplicates: ids handed to "
             "the channel more than once across processes. Target: >= 1 000 messages/s, zero duplicates.", "",
             f"Last run: {stamp()} on {machine()}; load average (1 / 5 min) at the end: {run['load']}.", "",
             SHARED_NOTE, "",
             f"{run['version']}: rendered and signed {run['messages']:,} messages in {run['render_s']:.1f} s = "
             f"**{run['render_per_s']:.0f} messages/s** (one process).".replace(",", " "), "",
             "| channel call | dispatchers | handed to the channel | duplicates | marked sent | not sent | elapsed "
             "| messages/s | span | messages/s in span | target |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (mode, count), r in run["runs"].items():
        lines.append(f"| {MODES[mode]} | {count} | {r['handed']} | {r['duplicates']} | {r['sent']} | "
                     f"{r['not_sent'] or 0} | {r['elapsed']:.1f} s | {r['per_s']:.0f} | {r['span']:.1f} s | "
                     f"{r['span_per_s']:.0f} | {'met' if r['per_s'] >= TARGET else '**missed**'} |")
    lines += ["", "Reproduce: `flock /tmp/bench.lock .venv/bin/python bench/dispatch.py --write-readme` (PostgreSQL on "
              "127.0.0.1:5432, user postgres; the bench creates and drops the database `bench_dispatch`).", ""]
    return lines


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--dispatcher":
        dispatcher_main(sys.argv[2], int(sys.argv[3]), sys.argv[4], 600)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--dispatchers", type=int, default=4)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    run = measure(args.messages, args.batch, args.dispatchers)
    if run is None:
        return
    print(f"{run['version']}: rendered + signed {run['messages']} in {run['render_s']:.1f} s "
          f"({run['render_per_s']:.0f}/s)")
    for (mode, count), r in run["runs"].items():
        print(f"  {MODES[mode]}, {count} dispatcher(s): {r['unique']} sent in {r['elapsed']:.1f} s = {r['per_s']:.0f}/s "
              f"(span {r['span']:.1f} s = {r['span_per_s']:.0f}/s), duplicates {r['duplicates']}, "
              f"marked sent {r['sent']}, not sent {r['not_sent']}")
    if args.write_readme:
        write_section(TITLE, report(run, args.batch))
    if any(r["duplicates"] for r in run["runs"].values()):
        raise SystemExit("duplicates handed to the channel")


if __name__ == "__main__":
    main()
