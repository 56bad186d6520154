"""Bench: patient pages under load, against a bare Flask "hello" app as the ceiling.

    .venv/bin/python bench/pages.py                        # SQLite, then PostgreSQL
    .venv/bin/python bench/pages.py --backend sqlite --duration 10 --write-readme

For each database: a fresh database with the scheduling world of bench/common.py
(100 000 open slots, 10 locations, 200 providers), 100 signed-in patients browsing
(each holding one time, for the review page), 50 booked patients and 50 who opened
their link but have not confirmed who they are. gunicorn serves `wsgi:app` as in
production (PORTAL_ENV=production) and, in the same run, the bare Flask app of
bench/hello_app.py, both on 127.0.0.1 with the same settings. wrk (Debian's `wrk`)
drives each patient GET page from its own process with 50 connections, a Lua script
rotating through the patients' session cookies. The hello app is measured before and
after the pages; the ratio uses their mean. Then 50 patients who read each page for
about a second, served as deployed (nginx in front of the sync workers, Debian's
`nginx-light`, docs/deployment.md) and by threaded workers facing the clients.

Targets: every patient GET page >= 0.30 of bare Flask's requests/s; p95 <= 50 ms at 50
concurrent users.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import text

from common import (COOKIE_NAME, ROOT, SHARED_NOTE, Gunicorn, Nginx, add_patients, analyze, bench_app, build_world,
                    drop_database, fresh_database, load_average, machine, production_env, stamp, version,
                    write_section)

TITLE = "Patient pages under load, against bare Flask"
RATIO_TARGET, P95_TARGET = 0.30, 50.0
THINK_MS = 1000  # mean time a patient spends on a page before the next request
PEOPLE_THREADS = 8  # gthread workers for the patients-reading run (see measure)
SERVING = {"nginx": "nginx in front of the sync workers, as deployed",
           "gthread": f"gthread workers x {PEOPLE_THREADS} threads facing the clients"}
LUA = """
local items = {%s}
local n = 0
%s
request = function()
  n = n + 1
  local item = items[(n %% #items) + 1]
  return wrk.format("GET", item[1], item[2] ~= "" and {["Cookie"] = "%s=" .. item[2]} or {})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "non_2xx_3xx": %%d, "connect": %%d, ' ..
    '"read": %%d, "write": %%d, "timeout": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def prepare(app, world) -> dict[str, list[tuple[str, str]]]:
    """The patients and, per page, the (path, cookie) pairs wrk rotates through."""
    from portal.extensions import db
    from portal.models import AppointmentType, Enrolment, Location
    from portal.services.availability import search_slots

    browsing = add_patients(app, world, 100)
    booked = add_patients(app, world, 50, first=100)
    unverified = add_patients(app, world, 50, verified=False, first=150)
    engine = app.extensions["portal_db"]["engine"]
    now = datetime.now(timezone.utc)
    third_page, held = {}, {}
    with app.app_context():
        session = db.session
        in_person = session.get(AppointmentType, world.in_person_type_id)
        for location_id in world.location_ids:
            enrolment = session.get(Enrolment, browsing[0].enrolment_id)
            after = None
            for _page in range(2):
                after = search_slots(session, enrolment, in_person, session.get(Location, location_id),
                                     after_slot_id=after).slots[-1].id
            third_page[location_id] = after
        session.rollback()
    with engine.begin() as connection:
        # each browsing patient holds a time far ahead (the review page), each booked patient has a visit
        free = connection.execute(text(
            "SELECT id FROM slot WHERE modality = 'in_person' AND booked_count = 0 AND starts_at > :soon "
            "ORDER BY starts_at DESC LIMIT 150"), {"soon": now + timedelta(days=30)}).scalars().all()
        for browser, slot_id in zip(browsing, free[:100]):
            connection.execute(text("UPDATE slot SET held_by_enrolment_id = :e, held_until = :u WHERE id = :s"),
                               {"e": browser.enrolment_id, "u": now + timedelta(hours=3), "s": slot_id})
            held[browser.enrolment_id] = slot_id
        for browser, slot_id in zip(booked, free[100:]):
            connection.execute(text("UPDATE slot SET booked_count = 1 WHERE id = :s"), {"s": slot_id})
            connection.execute(text(
                "INSERT INTO appointment (enrolment_id, patient_id, slot_id, appointment_type_id, status, booked_via, "
                "video_code, booked_at, cancel_reason, sequence) VALUES (:e, :p, :s, :t, 'booked', 'portal', '', "
                ":now, '', 0)"), {"e": browser.enrolment_id, "p": browser.patient_id, "s": slot_id,
                                  "t": world.in_person_type_id, "now": now})
            connection.execute(text("UPDATE enrolment SET status = 'booked' WHERE id = :e"),
                               {"e": browser.enrolment_id})
    t = world.in_person_type_id
    locations = world.location_ids

    def times(n: int, page3: bool = False) -> str:
        location = locations[n % len(locations)]
        return f"/visit/times?type={t}&location={location}" + (f"&after={third_page[location]}" if page3 else "")

    return {
        "landing (GET /r/<token>, opens a session)": [(f"/r/{b.token}", "") for b in browsing],
        "verify (/welcome/verify)": [("/welcome/verify", b.cookie) for b in unverified],
        "home (/visit)": [("/visit", b.cookie) for b in browsing],
        "choose (/visit/choose)": [("/visit/choose", b.cookie) for b in browsing],
        "times, first page": [(times(n), b.cookie) for n, b in enumerate(browsing)],
        "times, third page": [(times(n, True), b.cookie) for n, b in enumerate(browsing)],
        "review (/visit/review)": [(f"/visit/review?type={t}&slot={held[b.enrolment_id]}", b.cookie)
                                   for b in browsing],
        "booked (/visit/booked)": [("/visit/booked", b.cookie) for b in booked],
        "form (/visit/form)": [("/visit/form", b.cookie) for b in booked],
        "help (/visit/help)": [("/visit/help", b.cookie) for b in browsing],
    }


def check(base: str, items: list[tuple[str, str]], expected: int) -> None:
    """A few requests by hand first: the page must answer as expected for these cookies."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    for path, cookie in items[:3]:
        request = urllib.request.Request(base + path, headers={"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {})
        try:
            status = opener.open(request, timeout=30).status
        except urllib.error.HTTPError as error:
            status = error.code
        if status != expected:
            raise SystemExit(f"{path}: expected {expected}, got {status}")


def server_times(url: str, pages: dict[str, list[tuple[str, str]]], repeat: int) -> dict[str, dict]:
    """Each page through the Flask test client in this process, one request at a time:
    the server's own time per page (wall, and this process's CPU) with no queueing."""
    import time

    from common import summary_ms

    app = bench_app(url)
    client = app.test_client(use_cookies=False)
    figures = {}
    for name, items in pages.items():
        wall, cpu = [], []
        for n in range(repeat + 10):
            path, cookie = items[n % len(items)]
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(path, headers={"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {})
            elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
            assert response.status_code in (200, 303), (name, response.status_code)
            if n >= 10:
                wall.append(elapsed)
                cpu.append(elapsed_cpu)
        figures[name] = {"wall_p50": summary_ms(wall)["p50"], "cpu_p50": summary_ms(cpu)["p50"],
                         "bytes": len(response.data)}
    app.extensions["portal_db"]["engine"].dispose()
    return figures


def wrk(base: str, items: list[tuple[str, str]], duration: int, connections: int, threads: int,
        think_ms: int = 0) -> dict:
    """wrk over the (path, cookie) pairs; with think_ms, each connection waits a random
    0.5-1.5 x think_ms before its next request, like a person reading the page."""
    entries = ", ".join(f'{{"{path}", "{cookie}"}}' for path, cookie in items)
    delay = (f"delay = function() return math.random({think_ms // 2}, {think_ms * 3 // 2}) end"
             if think_ms else "")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % (entries, delay, COOKIE_NAME))
    output = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
                             "--timeout", "10s", "-s", script.name, base + "/"],
                            capture_output=True, text=True, timeout=duration + 60)
    Path(script.name).unlink()
    found = re.search(r"^RESULT (.*)$", output.stdout, re.MULTILINE)
    if not found:
        raise SystemExit(f"wrk failed: {output.stdout}\n{output.stderr}")
    result = json.loads(found.group(1))
    seconds = result["duration_us"] / 1e6
    return {"rps": result["requests"] / seconds, "requests": result["requests"],
            "errors": result["non_2xx_3xx"] + result["connect"] + result["read"] + result["write"] + result["timeout"],
            "non_2xx_3xx": result["non_2xx_3xx"], "socket_errors": result["connect"] + result["read"]
            + result["write"] + result["timeout"],
            "p50": result["p50_us"] / 1000, "p95": result["p95_us"] / 1000, "p99": result["p99_us"] / 1000}


def measure(backend: str, duration: int, connections: int, workers: int) -> dict | None:
    url = fresh_database(backend, "bench_pages")
    if url is None:
        return None
    app = bench_app(url)
    engine = app.extensions["portal_db"]["engine"]
    world = build_world(engine)
    pages = prepare(app, world)
    analyze(engine)
    db_version = version(engine)
    engine.dispose()
    alone = server_times(url, pages, 60)
    results = {}
    threads = 2
    with Gunicorn("hello_app:app", workers=workers, chdir=ROOT / "bench") as hello, \
            Gunicorn("wsgi:app", env=production_env(url), workers=workers) as portal:
        wrk(hello.url, [("/", "")], 2, connections, threads)  # warm up
        before = wrk(hello.url, [("/", "")], duration, connections, threads)
        print(f"  bare Flask (before): {before['rps']:.0f} req/s, p95 {before['p95']:.1f} ms")
        for name, items in pages.items():
            check(portal.url, items, 303 if name.startswith("landing") else 200)
            wrk(portal.url, items, 1, connections, threads)  # warm up every worker
            results[name] = wrk(portal.url, items, duration, connections, threads)
            r = results[name]
            r.update(alone[name])
            print(f"  {name:<45} {r['rps']:7.0f} req/s  p50 {r['p50']:6.1f}  p95 {r['p95']:6.1f}  "
                  f"p99 {r['p99']:6.1f} ms  errors {r['errors']}  alone: wall {r['wall_p50']:.1f} ms, "
                  f"cpu {r['cpu_p50']:.1f} ms")
        after = wrk(hello.url, [("/", "")], duration, connections, threads)
        print(f"  bare Flask (after): {after['rps']:.0f} req/s, p95 {after['p95']:.1f} ms")
        server_errors = portal.errors()
    # Fifty people using the portal at once: each reads a page for about a second before
    # the next one, every page of the journey mixed. Served as deployed (docs/deployment.md):
    # nginx keeps the people's connections and hands each request to whichever sync worker
    # is free; and, for comparison, gunicorn's threaded workers facing the clients directly
    # (a sync worker alone would wait on a connection that sits idle while its person reads).
    mixed = [item for name, items in pages.items() if not name.startswith("landing") for item in items]
    random.Random(7).shuffle(mixed)
    people = {}
    for serving, threads_per_worker in (("nginx", 0), ("gthread", PEOPLE_THREADS)):
        with Gunicorn("wsgi:app", env=production_env(url), workers=workers, threads=threads_per_worker) as portal:
            front = Nginx(portal.url) if serving == "nginx" else nullcontext(portal)
            with front as server:
                wrk(server.url, mixed, 2, connections, threads)  # warm up every worker
                people[serving] = result = wrk(server.url, mixed, max(duration, 20), connections, threads,
                                               think_ms=THINK_MS)
            print(f"  {connections} patients reading ~{THINK_MS} ms per page ({SERVING[serving]}): "
                  f"{result['rps']:.0f} req/s, p50 {result['p50']:.1f}  p95 {result['p95']:.1f}  "
                  f"p99 {result['p99']:.1f} ms  errors {result['errors']}")
            server_errors += portal.errors()
    if server_errors:
        print("gunicorn logged errors:\n" + server_errors[-3000:])
    drop_database(url)
    ceiling = (before["rps"] + after["rps"]) / 2
    for r in results.values():
        r["ratio"] = r["rps"] / ceiling
    return {"version": db_version, "hello_before": before, "hello_after": after, "ceiling": ceiling,
            "pages": results, "people": people, "load": load_average(), "server_errors": bool(server_errors)}


def report(runs: dict[str, dict], duration: int, connections: int, workers: int) -> list[str]:
    lines = ["What it measures: `bench/pages.py` serves the portal with gunicorn (`wsgi:app`, PORTAL_ENV=production, "
             f"{workers} sync workers) and a bare Flask \"hello\" app (`bench/hello_app.py`, same gunicorn settings) on "
             "127.0.0.1, and drives each patient GET page with Debian's `wrk` from another process: "
             f"{connections} connections, 2 threads, {duration} s per page, a Lua script rotating through the "
             "session cookies of 100 signed-in patients (50 booked ones for booked/form, 50 not yet verified "
             "for verify). The database holds the slot-search world (108 000 slots, ~100 000 open, 10 locations, "
             "200 providers). The hello app is measured before and after the pages; the ratio is to their mean. "
             "The last three columns are each page alone, before the load: 60 requests one at a time through the "
             "Flask test client in the bench process (server time with no queueing, this process's CPU time — "
             "PostgreSQL's share runs in its server — and the response size). "
             "Targets: ratio >= 0.30; p95 <= 50 ms at 50 concurrent users. The per-page runs are a closed loop "
             "(each connection sends its next request the moment the last one is answered): a throughput test, whose "
             "latency is the queue in front of the workers (Little's law: 50 / req/s), so their p95 column can only "
             "be met at >= 1 000 req/s; 50 people using the portal at once is the run after each table.", "",
             f"Last run: {stamp()} on {machine()}.", "", SHARED_NOTE, ""]
    for run in runs.values():
        lines += [f"**{run['version']}** — bare Flask {run['hello_before']['rps']:.0f} req/s before, "
                  f"{run['hello_after']['rps']:.0f} after (p95 {run['hello_before']['p95']:.1f} / "
                  f"{run['hello_after']['p95']:.1f} ms); load average (1 / 5 min) at the end: {run['load']}.", "",
                  "| page | req/s | ratio to bare Flask | p50 | p95 | p99 | errors | ratio >= 0.30 | closed-loop p95 <= 50 ms "
                  "| alone: server wall p50 | alone: app CPU p50 | bytes |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in run["pages"].items():
            lines.append(f"| {name} | {r['rps']:.0f} | {r['ratio']:.2f} | {r['p50']:.1f} ms | {r['p95']:.1f} ms | "
                         f"{r['p99']:.1f} ms | {r['errors']} | {'met' if r['ratio'] >= RATIO_TARGET else '**missed**'} "
                         f"| {'met' if r['p95'] <= P95_TARGET else '**missed**'} | {r['wall_p50']:.1f} ms | "
                         f"{r['cpu_p50']:.1f} ms | {r['bytes']} |")
        lines += ["", f"{connections} patients at once, each reading a page for 0.5–1.5 s (wrk's `delay`) before "
                  f"the next, every page but landing mixed, {max(duration, 20)} s:", "",
                  "| served by | req/s | p50 | p95 | p99 | errors | p95 <= 50 ms |", "|---|---|---|---|---|---|---|"]
        for serving, people in run["people"].items():
            lines.append(f"| {SERVING[serving]} | {people['rps']:.0f} | {people['p50']:.1f} ms | "
                         f"{people['p95']:.1f} ms | {people['p99']:.1f} ms | {people['errors']} | "
                         f"{'met' if people['p95'] <= P95_TARGET else '**missed**'} |")
        lines.append("")
    lines += ["Reproduce: `apt-get install -y wrk nginx-light`, then `.venv/bin/python bench/pages.py --write-readme` "
              "(PostgreSQL on 127.0.0.1:5432, user postgres; the bench creates and drops the database "
              "`bench_pages`).", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per page")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="gunicorn workers for both apps (default: one per core, as docs/deployment.md advises)")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: apt-get install -y wrk nginx-light")
    runs = {}
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        print(backend)
        run = measure(backend, min(args.duration, 60), args.connections, args.workers)
        if run is not None:
            runs[backend] = run
    if args.write_readme and runs:
        write_section(TITLE, report(runs, args.duration, args.connections, args.workers))


if __name__ == "__main__":
    main()
