"""Bench: slot search at 100 000 open slots (200 providers, 10 locations, 90 days).

    .venv/bin/python bench/slot_search.py                  # SQLite, then PostgreSQL
    .venv/bin/python bench/slot_search.py --backend postgresql --write-readme

Builds the scheduling world of bench/common.py (108 000 slots, ~100 000 of them open)
in a fresh database, runs ANALYZE, then times, each many times after a warm-up:
- `availability.search_slots` called directly (SQL + ORM, no HTTP), for the first page
  at one location, the evening/weekend and this-week filters, video visits across all
  ten locations, and the fifth page (keyset paging);
- the whole `/visit/times` request for a signed-in patient through the Flask test
  client (routing, session, search, template; no network).
Then, in the same database, the video search again without the index of migration
0005 (dropped), for before/after figures measured moments apart.
Target: first page of times p95 <= 25 ms server time.
"""
from __future__ import annotations

import argparse
import random
import time

from common import (add_patients, analyze, bench_app, build_world, drop_database, fresh_database, load_average,
                    machine, stamp, summary_ms, version, write_section, COOKIE_NAME, SHARED_NOTE)

TITLE = "Slot search: 100 000 open slots"
TARGET_MS = 25.0


NEW_INDEX = "ix_slot_modality_start"  # migration 0005


def time_service(app, world, browser, repeat: int, rng, only_video: bool = False) -> list[dict]:
    """search_slots called directly: wall time per call, each in its own read transaction."""
    from portal.extensions import db
    from portal.models import AppointmentType, Enrolment, Location
    from portal.services.availability import Window, search_slots

    results = []
    with app.app_context():
        session = db.session
        enrolment = session.get(Enrolment, browser.enrolment_id)
        in_person = session.get(AppointmentType, world.in_person_type_id)
        video = session.get(AppointmentType, world.video_type_id)
        locations = [session.get(Location, lid) for lid in world.location_ids]
        # the slot that ends page 4 at each location, for the page-5 case
        page5_after = {}
        for location in locations:
            after = None
            for _page in range(4):
                after = search_slots(session, enrolment, in_person, location, after_slot_id=after).slots[-1].id
            page5_after[location.id] = after
        session.commit()
        keep = {enrolment, in_person, video, *locations}
        cases = [
            ("first page, one location", lambda loc: search_slots(session, enrolment, in_person, loc)),
            ("first page, evenings and weekends", lambda loc: search_slots(session, enrolment, in_person, loc,
                                                                             window=Window.EVENINGS_WEEKENDS)),
            ("first page, this week", lambda loc: search_slots(session, enrolment, in_person, loc,
                                                                 window=Window.THIS_WEEK)),
            ("first page, video at all 10 locations", lambda loc: search_slots(session, enrolment, video, None)),
            ("fifth page (keyset), one location", lambda loc: search_slots(session, enrolment, in_person, loc,
                                                                             after_slot_id=page5_after[loc.id])),
        ]
        for label, call in cases:
            if only_video and "video" not in label:
                continue
            timings = []
            for n in range(repeat + 20):
                location = rng.choice(locations)
                started = time.perf_counter()
                page = call(location)
                elapsed = time.perf_counter() - started
                session.commit()  # end the read transaction, as a request does (nothing is expired)
                for obj in list(session.identity_map.values()):
                    if obj not in keep:  # the next call loads its slots afresh, as a new request would
                        session.expunge(obj)
                assert page.slots, label
                if n >= 20:
                    timings.append(elapsed)
            results.append({"what": f"search_slots: {label}", "first": label.startswith("first"),
                            **summary_ms(timings)})
    return results


def time_requests(app, world, browser, repeat: int, rng, only_video: bool = False) -> list[dict]:
    """The whole GET /visit/times through the Flask test client: wall time and this
    process's CPU time (the app's own work; PostgreSQL's is in its server)."""
    client = app.test_client()
    client.set_cookie(COOKIE_NAME, browser.cookie, domain="localhost")
    results = []
    for label, path in (("GET /visit/times, first page, one location",
                         lambda loc: f"/visit/times?type={world.in_person_type_id}&location={loc}"),
                        ("GET /visit/times, first page, video",
                         lambda loc: f"/visit/times?type={world.video_type_id}")):
        if only_video and "video" not in label:
            continue
        timings, cpu = [], []
        for n in range(repeat + 20):
            target = path(rng.choice(world.location_ids))
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(target, base_url="https://localhost")
            elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
            assert response.status_code == 200 and b'name="slot"' in response.data, (target, response.status_code)
            if n >= 20:
                timings.append(elapsed)
                cpu.append(elapsed_cpu)
        results.append({"what": label, "first": True, **summary_ms(timings), "cpu_p50": summary_ms(cpu)["p50"]})
    return results


def measure(backend: str, repeat: int, keep: bool, before_after: bool = True) -> dict | None:
    url = fresh_database(backend, "bench_slot_search")
    if url is None:
        return None
    app = bench_app(url)
    engine = app.extensions["portal_db"]["engine"]
    world = build_world(engine)
    browser = add_patients(app, world, 1)[0]
    analyze(engine)
    rng = random.Random(7)
    results = time_service(app, world, browser, repeat, rng) + time_requests(app, world, browser, repeat, rng)
    if before_after:
        # the same database a moment later, as it was before migration 0005
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP INDEX {NEW_INDEX}")
        analyze(engine)
        for result in (time_service(app, world, browser, repeat, rng, only_video=True)
                       + time_requests(app, world, browser, repeat, rng, only_video=True)):
            result["what"] += f" — before: without {NEW_INDEX}"
            results.append(result)
    run = {"version": version(engine), "slots": world.slots, "open": world.open_slots, "results": results,
           "load": load_average()}
    engine.dispose()
    if not keep:
        drop_database(url)
    return run


def spaced(number: int) -> str:
    return f"{number:,}".replace(",", " ")


def report(runs: dict[str, dict], repeat: int) -> list[str]:
    lines = ["What it measures: `bench/slot_search.py` builds 200 providers at 10 locations (5 US time zones) with "
             "six 30-minute slots a day each for 90 days (108 000 slots, ~7% already booked: ~100 000 open), "
             "written by one `INSERT ... SELECT`, runs ANALYZE, then times `availability.search_slots` called "
             f"directly and the whole `GET /visit/times` request (Flask test client, signed-in patient, no network), "
             f"{repeat} times each after 20 warm-ups, random location each time. Target: first page p95 <= 25 ms.",
             "", f"Last run: {stamp()} on {machine()}.", "", SHARED_NOTE, "",
             "The GET rows also give this process's CPU time per request (p50): the app's own work, which moves "
             "less with the machine's load than wall time (PostgreSQL's share runs in its server).", "",
             *[f"- {run['version']}: {spaced(run['slots'])} slots, {spaced(run['open'])} open; load average "
               f"(1 / 5 min) at the end: {run['load']}." for run in runs.values()], "",
             "| database | what | p50 | p95 | p99 | CPU p50 | p95 <= 25 ms |", "|---|---|---|---|---|---|---|"]
    for run in runs.values():
        for r in run["results"]:
            met = ("met" if r["p95"] <= TARGET_MS else "**missed**") if r["first"] else "(not a first page)"
            cpu = f"{r['cpu_p50']:.1f} ms" if "cpu_p50" in r else ""
            lines.append(f"| {run['version']} | {r['what']} | {r['p50']:.1f} ms | {r['p95']:.1f} ms | "
                         f"{r['p99']:.1f} ms | {cpu} | {met} |")
    lines += ["", "Reproduce: `.venv/bin/python bench/slot_search.py --write-readme` (PostgreSQL on 127.0.0.1:5432, "
              "user postgres; the bench creates and drops the database `bench_slot_search`).", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards (to explain queries)")
    parser.add_argument("--no-before-after", action="store_true",
                        help=f"skip the second measurement of the video search without {NEW_INDEX}")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    runs = {}
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        run = measure(backend, args.repeat, args.keep, not args.no_before_after)
        if run is None:
            continue
        runs[backend] = run
        print(f"{run['version']}: {run['slots']} slots, {run['open']} open")
        for r in run["results"]:
            print(f"  {r['what']:<48} p50 {r['p50']:6.1f} ms  p95 {r['p95']:6.1f} ms  p99 {r['p99']:6.1f} ms"
                  + (f"  cpu p50 {r['cpu_p50']:.1f} ms" if "cpu_p50" in r else ""))
    if args.write_readme and runs:
        write_section(TITLE, report(runs, args.repeat))


if __name__ == "__main__":
    main()
