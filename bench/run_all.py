"""Run every bench of this folder, one after the other, and write their figures into
bench/README.md (each bench replaces only its own section).

    .venv/bin/python bench/run_all.py            # or: make bench
    .venv/bin/python bench/run_all.py --quick    # shorter runs, same shape (smoke test)

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) for the PostgreSQL halves
and Debian's wrk for bench/pages.py. Every bench creates its own databases and drops
them at the end; every load loop is bounded in time and count, and all traffic goes to
127.0.0.1.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = [
    ["slot_search.py"],
    ["pages.py", "--duration", "10"],
    ["booking_race.py", "--duration", "30"],
    ["audience.py"],
    ["dispatch.py", "--messages", "5000"],
    ["dashboard.py"],
]
QUICK = [
    ["slot_search.py", "--repeat", "50"],
    ["pages.py", "--duration", "3"],
    ["booking_race.py", "--duration", "5", "--clients", "40"],
    ["audience.py", "--patients", "20000"],
    ["dispatch.py", "--messages", "300"],
]


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    failed = []
    for args in QUICK if quick else FULL:
        script = HERE / args[0]
        if not script.exists():
            print(f"== {args[0]}: not there, skipped")
            continue
        command = [sys.executable, str(script), *args[1:]] + ([] if quick else ["--write-readme"])
        print(f"== {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        if subprocess.run(command).returncode != 0:
            failed.append(args[0])
        print(f"== {args[0]} took {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
