"""Bench: the campaign dashboard over 100 000 enrolments and 1 000 000 events.

    .venv/bin/python bench/dashboard.py                     # SQLite, then PostgreSQL if it answers
    .venv/bin/python bench/dashboard.py --backend sqlite --write-readme

Builds a fresh database per backend (SQLite in a temporary folder; PostgreSQL in the
database `bench_dashboard`, dropped and re-created), migrates it, and fills it
with set-based INSERT ... SELECT statements over a sequence table: 100 000 patients,
each enrolled once in one campaign (10% control group, variants A and B), ~306 000
campaign messages, ~24 000 appointments and exactly 1 000 000 events. Then ANALYZE,
as an operator would (PostgreSQL's autovacuum does it by itself; on SQLite run
`PRAGMA optimize` now and then).

It times, each several times after one warm-up: the analytics service alone
(``campaign_report`` + the experiment table), the whole dashboard page as a signed-in
campaign manager sees it (request to rendered HTML, through Flask), and one CSV export.
The figures print, and with --write-readme replace this bench's section of bench/README.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402  (bench/common.py: fresh databases, machine, README sections)

from sqlalchemy import text  # noqa: E402

from portal import create_app  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.models import (AppointmentType, AppointmentTypeGap, Campaign, CampaignVariant, Clinic, Location,  # noqa: E402
                           Provider, Role, StaffUser)
from portal.services.staff_auth import STAFF, start_staff_session  # noqa: E402

SECTION = "Dashboard: 100 000 enrolments, 1 000 000 events"
# Written from the last measured run; update it with the figures when they change.
ANALYSIS = (
    '**Budget met on both databases.** The report no longer sums ~45 flag expressions over every one of the '
    "100 000 stored rows per breakdown: the clock-independent flags are packed into one integer per row "
    "(`enrolment_fact.flags`, migration 0009), the rows are grouped straight from an index, in its order and "
    "without a sort, into their few hundred distinct combinations of arm, breakdown key, flags, weeks to "
    "booking, steps and channels, with how many rows of each sit on each side of the clock (a live booking "
    "still to come, each retention window passed), and every metric's definition is applied to those rows "
    "weighted by their count (docs/metrics.md, \"Freshness\"). Percentiles: PostgreSQL's percentile_cont over "
    "one scan; on SQLite the two values around each rank, read from a partial index on the duration with "
    "LIMIT 2 OFFSET. Before (85259be, the 12:21 UTC run of this bench, load 3.7-3.8) / after (29c6cc9, "
    "13:04 UTC, load 2.1-2.5; `flock /tmp/bench.lock .venv/bin/python bench/dashboard.py --write-readme`): "
    "dashboard page, nothing changed, SQLite 4 033 -> 292 ms wall (2 752 -> 291 ms CPU), PostgreSQL 1 963 -> "
    "426 ms (1 603 -> 428 ms CPU, server included); after 100 changed enrolments SQLite 3 704 -> 506 ms, "
    "PostgreSQL 1 994 -> 848 ms; CSV export SQLite 2 489 -> 273 ms, PostgreSQL 1 565 -> 621 ms; every "
    "breakdown (`portal report`) SQLite 7 268 -> 1 391 ms, PostgreSQL 3 393 -> 1 065 ms. Part by part on "
    "SQLite (same data, load ~2): counting 58 ms, percentiles 27 ms, the freshness check 11 ms, whether "
    "anyone is enrolled twice 28 ms, help requests 18 ms; the rest of the page is Flask and Jinja. The price "
    "is on the rare full rebuild (first view, a definition change, more than 2 000 changed patients): SQLite "
    "6.2 -> 9.4 s, PostgreSQL 7.1 -> 15.7 s, most of it maintaining the eight new indexes (PostgreSQL: "
    "INSERT of the 100 000 rows 6.0 s without them, 15.1 s with them). PostgreSQL does not use the covering "
    "indexes (it hashes a sequential scan in ~0.1 s and uses percentile_cont): making them SQLite-only would "
    "take the rebuild back, but needs the migrations' autogenerate comparison to skip them there. With a "
    "patient enrolled twice in the campaign the report still folds enrolments per patient row by row "
    "(slower; not in this bench). Since `portal dispatch` brings the kept facts up to date when idle (the "
    "queued changes, and a rebuild after a definition change or a flood of changes), a view pays for a "
    "rebuild only on a campaign's first view or where no dispatcher runs. The before/after pairs above are from "
    "the Intel Xeon host of the morning; the table below is a run on the AMD EPYC host of the afternoon (2-4 "
    "times faster; 15:52 UTC, load ~0.9): the page 102 ms (SQLite) and 171 ms (PostgreSQL), a full rebuild 4.1 s "
    "and 4.9 s.")
PROVIDERS = 100


class Dialect:
    """The few SQL spellings that differ between SQLite and PostgreSQL."""

    def __init__(self, name: str, launch: datetime) -> None:
        self.name = name
        self.launch = launch.strftime("%Y-%m-%d %H:%M:%S")

    def at(self, minutes: str) -> str:
        """The launch time plus an integer expression of minutes, as a stored UTC timestamp."""
        if self.name == "sqlite":
            return f"(datetime('{self.launch}', ({minutes}) || ' minutes') || '.000000')"
        return f"(TIMESTAMPTZ '{self.launch}+00' + ({minutes}) * INTERVAL '1 minute')"

    def day(self, days: str) -> str:
        if self.name == "sqlite":
            return f"date('1940-01-01', ({days}) || ' days')"
        return f"(DATE '1940-01-01' + ({days}))"

    def json(self, literal: str) -> str:
        return f"'{literal}'" if self.name == "sqlite" else f"CAST('{literal}' AS JSON)"

    def false(self) -> str:
        return "0" if self.name == "sqlite" else "false"


def hashed(column: str = "i") -> str:
    """A well-mixed 0..999 per row, so outcomes don't line up with ids."""
    return f"((({column} * 2654435761) % 4294967296) % 1000)"


def seed(app, enrolments: int, events: int) -> int:
    """Fill the database; returns the campaign id."""
    engine = app.extensions["portal_db"]["engine"]
    launch = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=60)
    d = Dialect(engine.dialect.name, launch)
    with app.app_context():
        session = db.session
        clinic = Clinic(name="Bench Clinic", phone="+13125550100", email="bench@example.org", postal_address="x")
        session.add(clinic)
        session.flush()
        locations = [Location(clinic_id=clinic.id, name=name, address="x", time_zone="America/Chicago",
                              transit_notes={}, parking_notes={}) for name in ("Main", "North")]
        session.add_all(locations)
        session.add_all([Provider(clinic_id=clinic.id, display_name=f"Provider {n}") for n in range(PROVIDERS)])
        kind = AppointmentType(clinic_id=clinic.id, code="bench-wellness", name={"en": "Wellness"}, what_to_bring={},
                               preparation={}, modality="in_person", duration_minutes=30,
                               gaps=[AppointmentTypeGap(care_gap_code="annual_wellness")])
        campaign = Campaign(clinic_id=clinic.id, name="Bench win-back", status="active",
                            care_gap_codes=["annual_wellness", "diabetes_a1c"], channels=["sms", "email"],
                            holdout_percent=10, window_days=90, launched_at=launch, created_at=launch)
        session.add_all([kind, campaign])
        session.flush()
        session.add_all([CampaignVariant(campaign_id=campaign.id, key=key, label=key, sms_text={}, email_subject={},
                                         email_text={}) for key in ("A", "B")])
        session.commit()
        ids = {"campaign": campaign.id, "type": kind.id, "main": locations[0].id, "north": locations[1].id,
               "provider": session.execute(text("SELECT min(id) FROM provider")).scalar()}
    n, h = enrolments, hashed()
    c = ids["campaign"]
    steps = (0, 7, 14, 30)
    holdout = "i % 10 = 0"
    booked = f"(NOT ({holdout}) AND {h} < 250) OR ({holdout} AND {h} < 60)"
    statements = [
        # a sequence table 1..max(enrolments, 2 * messages): the source of every set-based insert
        "CREATE TABLE bench_seq (i INTEGER PRIMARY KEY)",
        f"INSERT INTO bench_seq (i) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
        "SELECT i FROM s",
        f"""INSERT INTO patient (id, given_name, family_name, birth_date, sex, phone, email, preferred_language,
            time_zone, address_line, city, state, postal_code, moved_away, coverage_active, uses_portal, pharmacy,
            created_at, external_id)
            SELECT i, 'Pat' || i, 'Bench', {d.day(f"(i * 37) % 25000")}, CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END,
                   '+1312555' || i, '', CASE WHEN {h} % 10 < 3 THEN 'es' ELSE 'en' END, 'America/Chicago', '', '', '',
                   '', {d.false()}, NOT {d.false()}, {d.false()}, '', {d.at("0")}, 'bench-' || i FROM bench_seq""",
        f"""INSERT INTO enrolment (id, campaign_id, patient_id, care_gap_code, status, tier, variant, holdout,
            dob_failures, closed_reason, next_step, created_at)
            SELECT i, {c}, i, CASE WHEN i % 5 = 0 THEN 'diabetes_a1c' ELSE 'annual_wellness' END,
                   CASE WHEN {booked} THEN 'booked' ELSE 'invited' END, CASE WHEN i % 5 = 0 THEN 2 ELSE 4 END,
                   CASE WHEN {h} % 2 = 0 THEN 'A' ELSE 'B' END, {holdout}, 0, '', 4, {d.at("0")} FROM bench_seq""",
    ]
    # Campaign messages: step 0 to everyone outside the control group, later steps to those
    # who hadn't booked yet. SMS is delivered 90% of the time; email sends no receipts.
    for step, day in enumerate(steps):
        channel = "CASE WHEN i % 3 = 0 THEN 'email' ELSE 'sms' END"
        sent_at = d.at(f"{day * 1440} + i % 600")
        statements.append(
            f"""INSERT INTO outbox_message (dedupe_key, enrolment_id, patient_id, channel, template, locale, recipient,
                subject, body_text, body_html, status, attempts, next_attempt_at, created_at, sent_at, last_error,
                campaign_id, step, variant, provider_message_id, delivered_at)
                SELECT 'bench-' || i || '-{step}', i, i, {channel}, 'invite', 'en', 'x', '', 'x', '', 'sent', 1,
                       {sent_at}, {sent_at}, {sent_at}, '', {c}, {step}, CASE WHEN {h} % 2 = 0 THEN 'A' ELSE 'B' END,
                       '', CASE WHEN i % 3 <> 0 AND ({h} + {step}) % 10 <> 0 THEN {sent_at} END
                FROM bench_seq WHERE NOT ({holdout}) AND {h} >= {step * 100}""")
    # Slots and appointments: bookings L + (h % 30) days, visits 3-12 days later (or in the
    # future for 'upcoming'); one provider per i % 100 keeps (provider, place, time) unique.
    provider = f"{ids['provider']} + i % {PROVIDERS}"
    visit_minutes = f"(({h} % 30) + 3 + i % 10) * 1440 + (i / {PROVIDERS})"
    future_minutes = f"(60 + 5 + i % 20) * 1440 + (i / {PROVIDERS})"
    status = (f"CASE WHEN {holdout} THEN 'attended' WHEN {h} < 150 THEN 'attended' WHEN {h} < 175 THEN 'no_show' "
              f"WHEN {h} < 215 THEN 'booked' WHEN {h} < 235 THEN 'cancelled' ELSE 'attended' END")
    statements += [
        f"""INSERT INTO slot (id, location_id, provider_id, modality, starts_at, ends_at, local_weekday, local_minutes,
            capacity, booked_count, blocked)
            SELECT i, {ids['main']}, {provider}, 'in_person',
                   CASE WHEN NOT ({holdout}) AND {h} >= 175 AND {h} < 215 THEN {d.at(future_minutes)}
                        ELSE {d.at(visit_minutes)} END,
                   CASE WHEN NOT ({holdout}) AND {h} >= 175 AND {h} < 215 THEN {d.at(future_minutes + " + 30")}
                        ELSE {d.at(visit_minutes + " + 30")} END, i % 7, 540, 1, 1, {d.false()}
            FROM bench_seq WHERE {booked}""",
        f"""INSERT INTO appointment (enrolment_id, patient_id, slot_id, appointment_type_id, status, booked_via,
            video_code, booked_at, cancel_reason, sequence, cancelled_at)
            SELECT i, i, i, {ids['type']}, {status}, CASE WHEN {holdout} THEN 'staff' ELSE 'portal' END, '',
                   {d.at(f"({h} % 30) * 1440 + i % 600")}, '', 0,
                   CASE WHEN NOT ({holdout}) AND {h} >= 215 AND {h} < 235 THEN {d.at(f"({h} % 30 + 1) * 1440")} END
            FROM bench_seq WHERE {booked}""",
        # booked, cancelled, then rebooked at the other location: the first booking was cancelled
        f"""INSERT INTO slot (id, location_id, provider_id, modality, starts_at, ends_at, local_weekday, local_minutes,
            capacity, booked_count, blocked)
            SELECT {n} + i, {ids['north']}, {provider}, 'in_person', {d.at(visit_minutes + " - 1440")},
                   {d.at(visit_minutes + " - 1410")}, i % 7, 540, 1, 0, {d.false()}
            FROM bench_seq WHERE NOT ({holdout}) AND {h} >= 235 AND {h} < 250""",
        f"""INSERT INTO appointment (enrolment_id, patient_id, slot_id, appointment_type_id, status, booked_via,
            video_code, booked_at, cancel_reason, sequence, cancelled_at)
            SELECT i, i, {n} + i, {ids['type']}, 'cancelled', 'portal', '', {d.at(f"({h} % 30) * 1440")}, '',
                   0, {d.at(f"({h} % 30) * 1440 + 1")}
            FROM bench_seq WHERE NOT ({holdout}) AND {h} >= 235 AND {h} < 250""",
        f"""INSERT INTO help_request (enrolment_id, kind, details, status, created_at, updated_at, resolution_note)
            SELECT i, CASE WHEN i % 3 = 0 THEN 'ride' WHEN i % 3 = 1 THEN 'cost' ELSE 'interpreter' END,
                   {d.json('{}')}, 'new', {d.at("2000")}, {d.at("2000")}, ''
            FROM bench_seq WHERE NOT ({holdout}) AND {h} % 50 = 0""",
        # a later encounter for some of the won back (retention), a record done elsewhere for some others
        f"""INSERT INTO clinical_fact (patient_id, kind, system, code, description, started_on, category, value,
            status, source, source_key, imported_at)
            SELECT i, 'encounter', '', 'bench', '', {d.day(f"(julianday_placeholder)")}, 'wellness', '', '',
                   'bench', 'bench-' || i, {d.at("0")}
            FROM bench_seq WHERE {h} < 150 AND i % 5 = 0""",
    ]
    # 'julianday_placeholder': days from 1940-01-01 to launch + 45 days, computed here
    launch_day = (launch.date() + timedelta(days=45) - datetime(1940, 1, 1).date()).days
    statements[-1] = statements[-1].replace("julianday_placeholder", str(launch_day))

    def event_insert(kind: str, where: str, minutes: str, detail: str = "{}", actor: str = "patient") -> str:
        return (f"INSERT INTO event (enrolment_id, campaign_id, kind, actor, detail, occurred_at) "
                f"SELECT i, {c}, '{kind}', '{actor}', {d.json(detail)}, {d.at(minutes)} FROM bench_seq WHERE {where}")

    not_held = f"NOT ({holdout})"
    statements += [
        event_insert("enrolled", "1 = 1", "0", actor="system"),
        # one 'sent' per message (the outbox rows above): the same WHERE per step
        *[event_insert("sent", f"{not_held} AND {h} >= {step * 100}", f"{day * 1440} + i % 600",
                       '{"step": %d}' % step, "system") for step, day in enumerate(steps)],
        event_insert("link_opened", f"{not_held} AND {h} < 450", f"({h} % 30) * 1440 - 60"),
        event_insert("link_opened", f"{not_held} AND i % 3 = 0", "5"),  # mail scanners open email links first
        event_insert("code_sent", f"{not_held} AND {h} < 330", f"({h} % 30) * 1440 - 50"),
        event_insert("verification_failed", f"{not_held} AND {h} >= 300 AND {h} < 330", f"({h} % 30) * 1440 - 45"),
        event_insert("verified", f"{not_held} AND {h} < 300", f"({h} % 30) * 1440 - 40"),
        event_insert("booked", booked, f"({h} % 30) * 1440 + i % 600"),
        event_insert("cancelled", f"{not_held} AND {h} >= 215 AND {h} < 235", f"({h} % 30 + 1) * 1440"),
        event_insert("attended", f"({holdout} AND {h} < 60) OR ({not_held} AND ({h} < 150 OR {h} >= 235) "
                                 f"AND {h} < 250)", visit_minutes, actor="staff"),
        event_insert("no_show", f"{not_held} AND {h} >= 150 AND {h} < 175", visit_minutes, actor="staff"),
        event_insert("form_completed", f"{not_held} AND {h} < 120", f"({h} % 30) * 1440 + 700"),
        event_insert("help_requested", f"{not_held} AND {h} % 50 = 0", "2000"),
        event_insert("declined", f"{not_held} AND {h} >= 450 AND {h} < 480", "3000", '{"reason": "remind_later"}'),
        event_insert("opted_out", f"{not_held} AND {h} >= 990", "1500",
                     '{"channel": "sms", "source": "sms_keyword"}'),
        event_insert("escalated", f"{not_held} AND {h} >= 300", f"{30 * 1440}", actor="system"),
        event_insert("call_attempt", f"{not_held} AND {h} >= 300 AND i % 4 = 0", f"{31 * 1440}",
                     '{"outcome": "voicemail"}', actor="staff"),
    ]
    engine = app.extensions["portal_db"]["engine"]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
        total = connection.execute(text("SELECT count(*) FROM event")).scalar()
        # Top up to exactly `events` with slot holds: patients browsing times before they book.
        missing = events - total
        if missing > 0:
            per_row = -(-missing // n)
            for round_ in range(per_row):
                take = min(n, missing - round_ * n)
                connection.execute(text(
                    f"INSERT INTO event (enrolment_id, campaign_id, kind, actor, detail, occurred_at) "
                    f"SELECT i, {c}, 'slot_held', 'patient', {d.json('{}')}, {d.at(f'({h} % 30) * 1440 - 30')} "
                    f"FROM bench_seq WHERE i <= {take}"))
        connection.execute(text("DROP TABLE bench_seq"))
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text("ANALYZE"))
    return c


def counts(app) -> dict[str, int]:
    engine = app.extensions["portal_db"]["engine"]
    with engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("enrolment", "event", "outbox_message", "appointment", "clinical_fact")}


def sign_in_client(app):
    """A test client holding a campaign manager's console session (the second factor done)."""
    with app.app_context():
        user = StaffUser(email="bench-manager@example.org", display_name="Bench", role=Role.CAMPAIGN_MANAGER,
                         password_hash="!unusable")
        db.session.add(user)
        db.session.flush()
        key = start_staff_session(db.session, user, STAFF)
        db.session.commit()
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = key
        session["_fresh"] = True
    return client


class ServerCpu:
    """CPU seconds used by the PostgreSQL backends of one database (same machine: /proc)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.name = engine.url.database if engine.dialect.name == "postgresql" else None

    def __call__(self) -> float:
        if self.name is None:
            return 0.0
        with self.engine.connect() as connection:
            pids = connection.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
                                      {"name": self.name}).scalars().all()
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        return total


def timed(label: str, action, repeat: int, server_cpu, prepare=None) -> dict:
    """Wall time, and CPU time (this process plus the database server's), per run. On a
    machine shared with other work, CPU time moves far less than wall time. ``prepare``
    runs before each run (and the warm-up), untimed: it sets up what the run should find."""
    prepare = prepare or (lambda: None)
    prepare()
    action()  # warm-up: imports, template compilation, the database's cache
    walls, cpus = [], []
    for _ in range(repeat):
        prepare()
        cpu_before, server_before, start = time.process_time(), server_cpu(), time.perf_counter()
        action()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_before + server_cpu() - server_before)
    result = {"label": label, "median": statistics.median(walls), "min": min(walls),
              "cpu": statistics.median(cpus), "runs": repeat, "load": common.load_average()}
    print(f"  {label:<44} wall median {result['median'] * 1000:7.0f} ms  min {result['min'] * 1000:7.0f} ms   "
          f"CPU median {result['cpu'] * 1000:7.0f} ms   ({repeat} runs, load {result['load']})")
    return result


def measure(url: str, enrolments: int, events: int, repeat: int) -> dict:
    from portal.services.analytics import campaign_report, report_tables
    from portal.services.experiments import experiment_table

    app = create_app({"PORTAL_ENV": "testing", "DATABASE_URL": url, "SECRET_KEY": common.SECRET,
                      "BASE_URL": common.BASE_URL})
    started = time.perf_counter()
    campaign_id = seed(app, enrolments, events)
    seeded = time.perf_counter() - started
    sizes = counts(app)
    print(f"  seeded in {seeded:.1f} s: {sizes}")
    engine = app.extensions["portal_db"]["engine"]
    server_cpu = ServerCpu(engine)

    def service():
        with app.test_request_context():
            campaign = db.session.get(Campaign, campaign_id)
            report = campaign_report(db.session, campaign, dimensions=("language",))
            report_tables(report, experiment=experiment_table(report))
            db.session.commit()  # the refreshed facts are kept, as the dashboard's request does

    client = sign_in_client(app)

    def page():
        response = client.get(f"/staff/dashboard/{campaign_id}")
        assert response.status_code == 200, response.status_code

    def export():
        response = client.get(f"/staff/dashboard/{campaign_id}/by_variant.csv")
        assert response.status_code == 200, response.status_code

    def every_breakdown():
        with app.test_request_context():
            campaign_report(db.session, db.session.get(Campaign, campaign_id))
            db.session.commit()

    def forget_facts():
        """As before the first view, or after a bulk change: the page rebuilds every enrolment's facts."""
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM enrolment_fact_refresh"))

    changes = iter(range(10 ** 6))

    def change_some_patients():
        """Writes between two views, of each kind the dashboard must notice, over 100
        enrolments: 40 links opened (events appended), the first message of the next 30
        delivered and the live bookings among the last 30 attended (rows updated in place)."""
        first = 1 + next(changes) * 100 % enrolments
        with engine.begin() as connection:
            connection.execute(text(
                f"INSERT INTO event (enrolment_id, campaign_id, kind, actor, detail, occurred_at) "
                f"SELECT id, campaign_id, 'link_opened', 'patient', '{{}}', created_at FROM enrolment "
                f"WHERE id BETWEEN {first} AND {first + 39}"))
            connection.execute(text(
                f"UPDATE outbox_message SET delivered_at = sent_at WHERE enrolment_id BETWEEN {first + 40} "
                f"AND {first + 69} AND step = 0"))
            connection.execute(text(
                f"UPDATE appointment SET status = 'attended' WHERE enrolment_id BETWEEN {first + 70} "
                f"AND {first + 99} AND status = 'booked'"))

    results = [timed("analytics service (overall + 2 breakdowns)", service, repeat, server_cpu),
               timed("dashboard page, request to HTML", page, repeat, server_cpu),
               timed("dashboard page after a batch of changes", page, repeat, server_cpu, change_some_patients),
               timed("dashboard page, every enrolment's facts rebuilt", page, max(3, repeat // 2), server_cpu,
                     forget_facts),
               timed("CSV export of one table", export, max(3, repeat // 2), server_cpu),
               timed("every breakdown at once (portal report)", every_breakdown, 3, server_cpu)]
    version = common.version(engine)
    engine.dispose()
    return {"sizes": sizes, "seeded": seeded, "results": results, "version": version}


def write_readme(runs: dict[str, dict]) -> None:
    lines = ["What it measures: `bench/dashboard.py` builds one campaign of 100 000 enrolments (10% control "
             "group, variants A and B) with ~306 000 campaign messages, ~24 000 appointments and exactly "
             "1 000 000 events, using set-based `INSERT ... SELECT` only, runs ANALYZE, then times the analytics "
             "service, the whole campaign dashboard for a signed-in campaign manager (Flask test client: request "
             "to rendered HTML, no network), one CSV export, and the report with every breakdown (what `portal "
             "report` computes). Median of several runs after a warm-up. CPU is this process plus, on "
             "PostgreSQL, the server backends (read from /proc): on a shared machine it moves much less than "
             "wall time. Budget: the dashboard under one second.", "",
             f"Last run: {common.stamp()} on {common.machine()}.", "", common.SHARED_NOTE, "", ANALYSIS, "",
             "| database | rows (enrolments / events / messages / appointments) | what | wall median | wall min | "
             "CPU median | load (1 / 5 min) |",
             "|---|---|---|---|---|---|---|"]
    for run in runs.values():
        sizes = run["sizes"]
        rows = (f"{sizes['enrolment']:,} / {sizes['event']:,} / {sizes['outbox_message']:,} / "
                f"{sizes['appointment']:,}").replace(",", " ")
        for result in run["results"]:
            lines.append(f"| {run['version']} | {rows} | {result['label']} | {result['median'] * 1000:.0f} ms | "
                         f"{result['min'] * 1000:.0f} ms | {result['cpu'] * 1000:.0f} ms | {result['load']} |")
    lines += ["", "Reproduce: `.venv/bin/python bench/dashboard.py --write-readme` (PostgreSQL on 127.0.0.1:5432, "
              "user postgres; the bench drops and re-creates the database `bench_dashboard`)."]
    common.write_section(SECTION, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--enrolments", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    runs = {}
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        url = common.fresh_database(backend, "bench_dashboard")
        if url is None:
            continue
        print(f"{backend}: {url.split('@')[-1]}")
        runs[backend] = measure(url, args.enrolments, args.events, args.repeat)
    if args.write_readme and runs:
        write_readme(runs)


if __name__ == "__main__":
    main()
