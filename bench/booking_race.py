"""Bench: the booking race. 200 concurrent patients try to book 50 times for a while.

    .venv/bin/python bench/booking_race.py                    # SQLite, then PostgreSQL, 30 s each
    .venv/bin/python bench/booking_race.py --duration 60 --write-readme

gunicorn serves `wsgi:app` (PORTAL_ENV=production) on 127.0.0.1; a second process
runs 200 client threads, each a signed-in patient with their own session cookie and
CSRF token. Each client loops until the time is up (and at most 10 000 rounds): pick
one of the 50 times at random, then either hold it and book it (half the rounds) or
book it straight away (the other half, to race the conditional UPDATE head on); when
the booking succeeds, cancel it so the seat comes back into play. 40 times have one
seat, 10 have two.

Afterwards the database is checked: no time with booked_count above its capacity, no
time with more live appointments than seats, booked_count equal to the live
appointments on every time; and every answer must be a 303 (done) or a 409 (someone
else got it): any 5xx fails the run. Bookings/s counts appointments written.
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

from sqlalchemy import text

from common import (SHARED_NOTE, Gunicorn, add_patients, bench_app, build_world, drop_database, fresh_database,
                    load_average, machine, production_env, stamp, version, write_section, COOKIE_NAME)

TITLE = "Booking race: 200 patients, 50 times"
MAX_ROUNDS = 10_000


# --- the client process ------------------------------------------------------------------------------------


def client_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    host, port = spec["host"], spec["port"]
    deadline = time.monotonic() + spec["duration"]
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    booked = [0]

    def post(path: str, form: dict, cookie: str) -> int:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            body = urllib.parse.urlencode(form)
            connection.request("POST", path, body=body, headers={
                "Cookie": f"{COOKIE_NAME}={cookie}", "Content-Type": "application/x-www-form-urlencoded"})
            response = connection.getresponse()
            response.read()
            return response.status
        except OSError:
            return 0  # connection refused/reset: counted as an error
        finally:
            connection.close()

    def patient(index: int, browser: dict) -> None:
        rng = random.Random(index)
        token, cookie = browser["csrf"], browser["cookie"]
        for _round in range(MAX_ROUNDS):
            if time.monotonic() >= deadline:
                return
            form = {"csrf_token": token, "slot": rng.choice(spec["slots"]), "appointment_type": spec["type"]}
            results = []
            if rng.random() < 0.5:
                status = post("/visit/hold", form, cookie)
                results.append(("hold", status))
                if status != 303:
                    with lock:
                        statuses.update(f"{what} {code}" for what, code in results)
                    continue
            status = post("/visit/book", form, cookie)
            results.append(("book", status))
            if status == 303:
                results.append(("cancel", post("/visit/cancel", {"csrf_token": token, "reason": ""}, cookie)))
            with lock:
                statuses.update(f"{what} {code}" for what, code in results)
                booked[0] += status == 303

    threads = [threading.Thread(target=patient, args=(n, b)) for n, b in enumerate(spec["browsers"])]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    print(json.dumps({"statuses": statuses, "booked": booked[0], "elapsed": elapsed}))


# --- the bench ---------------------------------------------------------------------------------------------


def measure(backend: str, duration: int, clients: int, workers: int) -> dict | None:
    url = fresh_database(backend, "bench_booking_race")
    if url is None:
        return None
    app = bench_app(url)
    engine = app.extensions["portal_db"]["engine"]
    # 50 providers, one time each, three days from now at one location
    world = build_world(engine, locations=1, providers=50, days=1, per_day=1, video_every=10_000,
                        booked_per_mille=0, first_day=3)
    with engine.begin() as connection:
        slots = connection.execute(text("SELECT id FROM slot ORDER BY id")).scalars().all()
        connection.execute(text("UPDATE slot SET capacity = 2 WHERE id IN (%s)" % ",".join(map(str, slots[:10]))))
    browsers = add_patients(app, world, clients)
    db_version = version(engine)
    engine.dispose()
    spec = {"slots": slots, "type": world.in_person_type_id, "duration": duration,
            "browsers": [{"cookie": b.cookie, "csrf": b.csrf} for b in browsers]}
    with Gunicorn("wsgi:app", env=production_env(url), workers=workers) as server:
        spec.update(host="127.0.0.1", port=server.port)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec_file:
            json.dump(spec, spec_file)
        output = subprocess.run([sys.executable, __file__, "--client", spec_file.name], capture_output=True,
                                text=True, timeout=duration + 300)
        Path(spec_file.name).unlink()
        server_errors = server.errors()
    if output.returncode != 0:
        raise SystemExit(f"client failed: {output.stderr[-3000:]}")
    result = json.loads(output.stdout.strip().splitlines()[-1])
    engine = make_checked_engine(url)
    with engine.connect() as connection:
        over_capacity = connection.execute(text("SELECT count(*) FROM slot WHERE booked_count > capacity")).scalar()
        overbooked = connection.execute(text(
            "SELECT count(*) FROM (SELECT a.slot_id FROM appointment a JOIN slot s ON s.id = a.slot_id "
            "WHERE a.status = 'booked' GROUP BY a.slot_id, s.capacity HAVING count(*) > s.capacity) x")).scalar()
        mismatched = connection.execute(text(
            "SELECT count(*) FROM slot s WHERE s.booked_count <> (SELECT count(*) FROM appointment a "
            "WHERE a.slot_id = s.id AND a.status = 'booked')")).scalar()
        appointments = connection.execute(text("SELECT count(*) FROM appointment")).scalar()
        live = connection.execute(text("SELECT count(*) FROM appointment WHERE status = 'booked'")).scalar()
    engine.dispose()
    drop_database(url)
    statuses = result["statuses"]
    five_hundreds = sum(count for key, count in statuses.items() if key.split()[1].startswith("5"))
    failures = sum(count for key, count in statuses.items() if key.split()[1] == "0")
    unexpected = {key: count for key, count in statuses.items() if key.split()[1] not in ("303", "409")}
    return {"version": db_version, "statuses": statuses, "elapsed": result["elapsed"], "appointments": appointments,
            "live": live, "booked_answers": result["booked"], "over_capacity": over_capacity,
            "overbooked": overbooked, "mismatched": mismatched, "five_hundreds": five_hundreds,
            "connection_errors": failures, "unexpected": unexpected, "server_errors": bool(server_errors),
            "bookings_per_s": appointments / result["elapsed"], "load": load_average(),
            "rounds_per_s": (statuses.get("book 303", 0) + statuses.get("book 409", 0)
                             + statuses.get("hold 409", 0)) / result["elapsed"]}


def make_checked_engine(url: str):
    from portal.database import make_engine

    return make_engine(url)


def report(runs: dict[str, dict], duration: int, clients: int, workers: int) -> list[str]:
    lines = ["What it measures: `bench/booking_race.py` serves the portal with gunicorn (`wsgi:app`, "
             f"PORTAL_ENV=production, {workers} sync workers) on 127.0.0.1; a second process runs {clients} client "
             "threads, each a signed-in patient, who for the whole run pick one of 50 times at random (40 with one "
             "seat, 10 with two) and hold-then-book it or book it directly, cancelling each booking they win so the "
             "race goes on. Afterwards the database is checked for double bookings. "
             f"Run for {duration} s per database (the brief says 60 s; shortened to fit the 2-core machine shared "
             "with other developers — pass `--duration 60` for the full run).", "",
             f"Last run: {stamp()} on {machine()}.", "", SHARED_NOTE, "",
             "| database | bookings/s | appointments written (live at the end) | slots over capacity | slots with more "
             "live appointments than seats | booked_count ≠ live appointments | 5xx | connection errors | answers "
             "(endpoint status: count) |", "|---|---|---|---|---|---|---|---|---|"]
    for run in runs.values():
        answers = ", ".join(f"{key}: {count}" for key, count in sorted(run["statuses"].items()))
        lines.append(f"| {run['version']} | {run['bookings_per_s']:.1f} | {run['appointments']} ({run['live']}) | "
                     f"{run['over_capacity']} | {run['overbooked']} | {run['mismatched']} | {run['five_hundreds']} | "
                     f"{run['connection_errors']} | {answers} |")
    lines += ["", "Targets: zero double bookings (the three database columns), zero 5xx, bookings/s reported. "
              "`hold 409` / `book 409` are the polite \"someone just took that time\" page.", "",
              "Reproduce: `.venv/bin/python bench/booking_race.py --write-readme` (PostgreSQL on 127.0.0.1:5432, "
              "user postgres; the bench creates and drops the database `bench_booking_race`).", ""]
    return lines


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        client_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    runs = {}
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        run = measure(backend, min(args.duration, 120), args.clients, args.workers)
        if run is None:
            continue
        runs[backend] = run
        print(f"{run['version']}: {run['bookings_per_s']:.1f} bookings/s, {run['appointments']} appointments, "
              f"over capacity {run['over_capacity']}, overbooked {run['overbooked']}, mismatched {run['mismatched']}, "
              f"5xx {run['five_hundreds']}, connection errors {run['connection_errors']}, answers {run['statuses']}")
    if args.write_readme and runs:
        write_section(TITLE, report(runs, args.duration, args.clients, args.workers))
    bad = [name for name, run in runs.items()
           if run["over_capacity"] or run["overbooked"] or run["mismatched"] or run["five_hundreds"]]
    if bad:
        raise SystemExit(f"double booking or 5xx on {', '.join(bad)}")


if __name__ == "__main__":
    main()
