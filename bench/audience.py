"""Bench: building a campaign audience over 1 000 000 patients.

    .venv/bin/python bench/audience.py                        # SQLite, then PostgreSQL
    .venv/bin/python bench/audience.py --patients 1000000 --write-readme
    .venv/bin/python bench/audience.py --backend postgresql --explain   # + where the time goes

Generates, with set-based INSERT ... SELECT only (generate_series on PostgreSQL, a
recursive CTE on SQLite): 1 000 000 patients (1% deceased, 2% moved away, 3% without
coverage, half women, born 1930-2003), a visit history of ~1 300 000 clinical facts
(one wellness visit each in the last three years, diabetes for 12% with an HbA1c for
half of them, mammograms for 60% of women), 3% who refused all contact and 1%
contacted by another campaign in the last 30 days. Then ANALYZE, and times
`campaigns.build_audience` (care gaps annual wellness, diabetes HbA1c, breast
screening; 10% holdout; two variants) up to its commit. Peak RSS of this process is
read with resource.getrusage before and after: the build must not load patients into
Python (PostgreSQL's own memory is its server's, bounded by work_mem).

Targets: <= 10 s on PostgreSQL, <= 30 s on SQLite, memory flat.
"""
from __future__ import annotations

import argparse
import re
import resource
import time
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import text

from common import (SHARED_NOTE, Sql, analyze, bench_app, drop_database, fresh_database, load_average, machine,
                    mix, run_sql, stamp, version, write_section)

TITLE = "Audience build: 1 000 000 patients"
TARGETS = {"sqlite": 30.0, "postgresql": 10.0}
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"


def generate(engine, patients: int, as_of: date) -> dict[str, int]:
    sql = Sql(engine.dialect.name)
    now = datetime.now(timezone.utc)
    h = mix()
    false = sql.bool("1=0")
    statements = sql.seq("bench_seq", patients) + [
        f"""INSERT INTO patient (id, external_id, given_name, family_name, birth_date, sex, phone, email,
            preferred_language, time_zone, address_line, city, state, postal_code, deceased_on, moved_away,
            coverage_active, uses_portal, pharmacy, created_at)
            SELECT i, 'bench-' || i, 'Pat', 'Bench', {sql.day(date(1930, 1, 1), '(i * 37) % 26900')},
                   CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END, '+1312' || i, 'p' || i || '@example.org',
                   CASE WHEN {h} % 10 < 3 THEN 'es' ELSE 'en' END, 'America/Chicago', '', '', '', '',
                   CASE WHEN {h} < 10 THEN {sql.day(as_of, '-100')} END, {sql.bool(f'{h} >= 10 AND {h} < 30')},
                   {sql.bool(f'NOT ({h} >= 30 AND {h} < 60)')}, {false}, '', {sql.ts(now)}
            FROM bench_seq""",
        # one wellness visit each, spread over the last three years: about a third are up to date
        f"""INSERT INTO clinical_fact (patient_id, kind, system, code, description, started_on, category, value,
            status, source, source_key, imported_at)
            SELECT i, 'encounter', '', 'bench', '', {sql.day(as_of, '-1 - ((i % 1095) * 7919) % 1095')}, 'wellness', '', '',
                   'bench', 'w-' || i, {sql.ts(now)} FROM bench_seq""",
        # diabetes for 12%, and an HbA1c in the last 6 months for half of them
        f"""INSERT INTO clinical_fact (patient_id, kind, system, code, description, started_on, category, value,
            status, source, source_key, imported_at)
            SELECT i, 'condition', '{SNOMED}', '44054006', '', {sql.day(as_of, '-2000')}, '', '', '', 'bench',
                   'd-' || i, {sql.ts(now)} FROM bench_seq WHERE i % 100 < 12""",
        f"""INSERT INTO clinical_fact (patient_id, kind, system, code, description, started_on, category, value,
            status, source, source_key, imported_at)
            SELECT i, 'observation', '{LOINC}', '4548-4', '', {sql.day(as_of, '-1 - i % 150')}, '', '7.1', '',
                   'bench', 'a-' || i, {sql.ts(now)} FROM bench_seq WHERE i % 100 < 6""",
        # mammograms for 60% of women, within two years
        f"""INSERT INTO clinical_fact (patient_id, kind, system, code, description, started_on, category, value,
            status, source, source_key, imported_at)
            SELECT i, 'procedure', '{CPT}', '77067', '', {sql.day(as_of, '-1 - i % 700')}, '', '', '', 'bench',
                   'm-' || i, {sql.ts(now)} FROM bench_seq WHERE i % 2 = 0 AND {h} % 10 < 6""",
        f"""INSERT INTO channel_consent (patient_id, channel, granted, source, updated_at)
            SELECT i, 'all', {false}, 'bench', {sql.ts(now)} FROM bench_seq WHERE (i * 31) % 100 < 3""",
        f"""INSERT INTO outbox_message (dedupe_key, patient_id, channel, template, locale, recipient, subject,
            body_text, body_html, status, attempts, next_attempt_at, created_at, sent_at, last_error, step, variant,
            provider_message_id)
            SELECT 'bench-' || i, i, 'sms', 'invite', 'en', 'x', '', 'x', '', 'sent', 1,
                   {sql.ts(now - timedelta(days=3))}, {sql.ts(now - timedelta(days=3))},
                   {sql.ts(now - timedelta(days=3))}, '', 0, 'A', '' FROM bench_seq WHERE (i * 17) % 100 = 5""",
        "DROP TABLE bench_seq",
    ]
    run_sql(engine, statements)
    with engine.connect() as connection:
        from sqlalchemy import text

        return {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("patient", "clinical_fact", "channel_consent", "outbox_message")}


def attribute(session, clinic_id: int) -> list[dict]:
    """Where the build's time goes on PostgreSQL: the same build for a second campaign under
    EXPLAIN (ANALYZE, BUFFERS), rolled back. Per care gap: execution time, the SELECT's share and
    each foreign-key trigger's (instrumented, so the sum is above the timed build)."""
    from sqlalchemy import event

    from portal.models import Campaign
    from portal.services.campaigns import build_audience

    campaign = Campaign(clinic_id=clinic_id, name="Bench attribution", status="draft", holdout_percent=10,
                        care_gap_codes=["annual_wellness", "diabetes_a1c", "breast_screening"], channels=["sms"])
    session.add(campaign)
    session.flush()
    plans: list[list[str]] = []
    engine = session.get_bind()

    def explain(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith("INSERT INTO ENROLMENT"):
            return "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
        return statement, parameters

    def collect(_conn, cursor, statement, _parameters, _context, _many):
        if statement.startswith("EXPLAIN"):
            plans.append([row[0] for row in cursor.fetchall()])

    event.listen(engine, "before_cursor_execute", explain, retval=True)
    event.listen(engine, "after_cursor_execute", collect)
    try:
        build_audience(session, campaign)
    finally:
        event.remove(engine, "before_cursor_execute", explain)
        event.remove(engine, "after_cursor_execute", collect)
        session.rollback()
    parts = []
    for plan in plans:
        source = next(line for line in plan if line.lstrip().startswith("->"))  # the SELECT under the Insert
        part = {"rows": int(re.search(r"rows=(\d+) loops", source).group(1)),
                "select_ms": float(re.search(r"actual time=[\d.]+\.\.([\d.]+)", source).group(1)),
                "total_ms": next(float(line.split(":")[1].split()[0]) for line in plan if line.startswith("Execution"))}
        for line in plan:
            found = re.match(r"Trigger for constraint (\S+): time=([\d.]+)", line)
            if found:
                part[found.group(1)] = float(found.group(2))
        parts.append(part)
    return parts


def measure(backend: str, patients: int, explain: bool = False) -> dict | None:
    url = fresh_database(backend, "bench_audience")
    if url is None:
        return None
    app = bench_app(url)
    engine = app.extensions["portal_db"]["engine"]
    as_of = date.today()
    started = time.perf_counter()
    sizes = generate(engine, patients, as_of)
    generated = time.perf_counter() - started
    analyze(engine)
    from portal.extensions import db
    from portal.models import Campaign, CampaignVariant, Clinic
    from portal.services.campaigns import build_audience

    with app.app_context():
        session = db.session
        clinic = Clinic(name="Bench Clinic", phone="+13125550100", email="bench@example.org", postal_address="x")
        session.add(clinic)
        session.flush()
        campaign = Campaign(clinic_id=clinic.id, name="Bench audience", status="draft", holdout_percent=10,
                            care_gap_codes=["annual_wellness", "diabetes_a1c", "breast_screening"],
                            channels=["sms", "email"])
        session.add(campaign)
        session.flush()
        session.add_all([CampaignVariant(campaign_id=campaign.id, key=key, label=key, weight=1, sms_text={},
                                         email_subject={}, email_text={}) for key in ("A", "B")])
        session.commit()
        pg = engine.dialect.name == "postgresql"
        wal_before = session.scalar(text("SELECT pg_current_wal_lsn()")) if pg else None
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started, started_cpu = time.perf_counter(), time.process_time()
        enrolled = build_audience(session, campaign)
        session.commit()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - started_cpu
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # WAL the build wrote (the server's, so a concurrent writer elsewhere would add to it)
        wal_mb = (float(session.scalar(text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), :lsn)"),
                                        {"lsn": wal_before})) / 1e6 if pg else None)
        # counted, not taken from build_audience's return value (which relies on the driver's rowcount)
        from sqlalchemy import func, select
        from portal.models import Enrolment

        returned = enrolled
        enrolled = session.scalar(select(func.count()).select_from(Enrolment))
        parts = attribute(session, clinic.id) if explain and pg else None
    db_version = version(engine)
    engine.dispose()
    drop_database(url)
    return {"version": db_version, "sizes": sizes, "generated": generated, "elapsed": elapsed, "cpu": cpu, "enrolled": enrolled, "returned": returned,
            "rss_before_mb": rss_before / 1024, "rss_after_mb": rss_after / 1024, "load": load_average(),
            "wal_mb": wal_mb, "parts": parts}


def report(runs: dict[str, dict]) -> list[str]:
    lines = ["What it measures: `bench/audience.py` generates 1 000 000 patients with a visit history (~1.3 million "
             "clinical facts), contact refusals and recent contacts by set-based `INSERT ... SELECT` "
             "(generate_series on PostgreSQL, a recursive CTE on SQLite), runs ANALYZE, and times "
             "`campaigns.build_audience` for three care gaps (annual wellness, diabetes HbA1c, breast screening) — "
             "the care-gap rules' set-based SQL (`care_gap_rules.gap_conditions`) plus every exclusion, one "
             "`INSERT ... SELECT` per gap — up to its commit. Peak RSS of the Python process (resource.getrusage) "
             "before and after shows memory stays flat.", "",
             f"Last run: {stamp()} on {machine()}.", "", SHARED_NOTE, "",
             "CPU is this process's CPU time during the build: on SQLite that is the whole build (it runs in "
             "this process) and moves much less with the machine's load than wall time; on PostgreSQL the work "
             "is in the server.", "",
             "| database | patients / facts | generate | build_audience + commit (wall) | CPU | WAL | enrolled | "
             "peak RSS before → after | target (wall) | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    for backend, run in runs.items():
        target = TARGETS[backend]
        lines.append(f"| {run['version']} | {run['sizes']['patient']:,} / {run['sizes']['clinical_fact']:,} | "
                     f"{run['generated']:.0f} s | {run['elapsed']:.1f} s | {run['cpu']:.1f} s | "
                     f"{'—' if run['wal_mb'] is None else format(run['wal_mb'], '.0f') + ' MB'} | {run['enrolled']:,} | "
                     f"{run['rss_before_mb']:.0f} → {run['rss_after_mb']:.0f} MB | <= {target:.0f} s: "
                     f"{'met' if run['elapsed'] <= target else '**missed**'} | {run['load']} |".replace(",", " "))
    for backend, run in runs.items():
        if run["parts"]:
            lines += ["", f"Where the time goes on {run['version']} (`--explain`: the same build for a second campaign "
                      "under EXPLAIN (ANALYZE, BUFFERS), rolled back; instrumented, so slower than the timed build):", "",
                      "| care gap rows | SELECT | foreign-key trigger: campaign | patient | subject fact | "
                      "heap + indexes (the rest) | whole INSERT |", "|---|---|---|---|---|---|---|"]
            for part in run["parts"]:
                fks = [part.get(f"fk_enrolment_{name}", 0.0) for name in
                       ("campaign_id_campaign", "patient_id_patient", "subject_fact_id_clinical_fact")]
                rest = part["total_ms"] - part["select_ms"] - sum(fks)
                lines.append((f"| {part['rows']:,} | {part['select_ms']:.0f} ms | "
                              + " | ".join(f"{fk:.0f} ms" for fk in fks)
                              + f" | {rest:.0f} ms | {part['total_ms']:.0f} ms |").replace(",", " "))
    lines += ["", "`enrolled` is counted in the table afterwards; build_audience's own return value: "
              + ", ".join(f"{run['version']}: {run['returned']}" for run in runs.values())
              + (" (they differ: the INSERT ... SELECT rowcount is not reported on that database)."
                 if any(run["returned"] != run["enrolled"] for run in runs.values()) else " (the same)."),
              "", "The exclusion of patients already booked is part of the same SELECT (NOT EXISTS over "
              "appointments) but that table is empty here; 'already enrolled' is only added when the campaign "
              "already has enrolments for the gap (a re-run after an import), never in this bench.", "",
              "Reproduce: `.venv/bin/python bench/audience.py --write-readme` (PostgreSQL on 127.0.0.1:5432, user "
              "postgres; the bench creates and drops the database `bench_audience`).", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--explain", action="store_true",
                        help="PostgreSQL: afterwards, the same build for a second campaign under EXPLAIN ANALYZE "
                             "(rolled back): time per care gap in its SELECT and in each foreign-key trigger")
    args = parser.parse_args()
    runs = {}
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        run = measure(backend, args.patients, args.explain)
        if run is None:
            continue
        runs[backend] = run
        print(f"{run['version']}: {run['sizes']} generated in {run['generated']:.1f} s; build_audience "
              f"{run['elapsed']:.2f} s (cpu {run['cpu']:.2f} s), {run['enrolled']} enrolled (build_audience returned {run['returned']}); peak RSS {run['rss_before_mb']:.0f} -> "
              f"{run['rss_after_mb']:.0f} MB; load {run['load']}"
              + (f"; WAL {run['wal_mb']:.0f} MB" if run["wal_mb"] is not None else ""))
        for part in run["parts"] or []:
            print("  EXPLAIN ANALYZE (rolled back): " + ", ".join(
                f"{key.removeprefix('fk_enrolment_')} {value:.0f}{'' if key == 'rows' else ' ms'}"
                for key, value in part.items()))
    if args.write_readme and runs:
        write_section(TITLE, report(runs))


if __name__ == "__main__":
    main()
