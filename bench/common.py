"""What the benches share: fresh databases, the scheduling world (10 locations, 200
providers, 90 days of slots) built with set-based INSERT ... SELECT, patients with a
signed-in browser session, percentiles, the machine, and writing bench/README.md.

Nothing here is imported by the app or the tests.
"""
from __future__ import annotations

import hashlib
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from itsdangerous import URLSafeTimedSerializer  # noqa: E402
from sqlalchemy import text  # noqa: E402

from portal import create_app  # noqa: E402
from portal.migrate import upgrade_database  # noqa: E402

README = ROOT / "bench" / "README.md"
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
SECRET = "bench-secret-key-not-for-production-0123456789"
BASE_URL = "https://portal.bench.example"
ZONES = ("America/Chicago", "America/New_York", "America/Denver", "America/Los_Angeles", "America/Phoenix")


# --- databases ---------------------------------------------------------------------------------------------


def fresh_database(backend: str, name: str) -> str | None:
    """A new, migrated, empty database: a SQLite file in a temporary folder, or a
    PostgreSQL database `name` dropped and re-created. None when PostgreSQL does not answer."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        url = f"sqlite:///{folder}/bench.sqlite3"
    else:
        import psycopg

        try:
            with psycopg.connect(_admin_url(), autocommit=True, connect_timeout=3) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                connection.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as error:
            print(f"PostgreSQL is not answering ({error}); skipped")
            return None
        url = f"{PG_SERVER}/{name}"
    upgrade_database(url)
    return url


def drop_database(url: str) -> None:
    """Remove what fresh_database made."""
    if url.startswith("sqlite"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        for path in folder.glob("*"):
            path.unlink()
        folder.rmdir()
        return
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_admin_url(), autocommit=True, connect_timeout=3) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin_url() -> str:
    return PG_SERVER.replace("postgresql+psycopg://", "postgresql://") + "/postgres"


def production_env(url: str) -> dict[str, str]:
    """What gunicorn (or a bench process) needs to run the app as in production."""
    return {"PORTAL_ENV": "production", "PORTAL_SECRET_KEY": SECRET, "PORTAL_BASE_URL": BASE_URL,
            "PORTAL_DATABASE_URL": url}


def bench_app(url: str, **overrides):
    """The app as production configures it, in this process."""
    return create_app({"PORTAL_ENV": "production", "SECRET_KEY": SECRET, "BASE_URL": BASE_URL,
                       "DATABASE_URL": url, **overrides})


def analyze(engine) -> None:
    """Fresh statistics, as autovacuum (PostgreSQL) or `PRAGMA optimize` (SQLite) would give."""
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))


def version(engine) -> str:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            return "SQLite " + connection.execute(text("select sqlite_version()")).scalar()
        return "PostgreSQL " + connection.execute(text("show server_version")).scalar().split()[0]


class Sql:
    """The few spellings that differ between SQLite and PostgreSQL in the generators."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    def ts(self, moment: datetime) -> str:
        """A UTC timestamp literal, stored the way the UTCDateTime column stores it."""
        stamp = moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        return f"TIMESTAMPTZ '{stamp}+00'" if self.pg else f"'{stamp}'"

    def plus_minutes(self, base: str, minutes: str) -> str:
        if self.pg:
            return f"({base} + ({minutes}) * INTERVAL '1 minute')"
        return f"(strftime('%Y-%m-%d %H:%M:%f', {base}, ({minutes}) || ' minutes') || '000')"

    def day(self, start: date, days: str) -> str:
        if self.pg:
            return f"(DATE '{start.isoformat()}' + ({days}))"
        return f"date('{start.isoformat()}', ({days}) || ' days')"

    def bool(self, expression: str) -> str:
        return f"({expression})" if self.pg else f"(CASE WHEN {expression} THEN 1 ELSE 0 END)"

    def json(self, literal: str) -> str:
        return f"CAST('{literal}' AS JSON)" if self.pg else f"'{literal}'"

    def seq(self, table: str, count: int) -> list[str]:
        """Statements that create `table` (i INTEGER PRIMARY KEY) holding 1..count."""
        source = (f"SELECT generate_series(1, {count})" if self.pg else
                  f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {count}) SELECT i FROM s")
        return [f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} (i INTEGER PRIMARY KEY)",
                f"INSERT INTO {table} (i) {source}"]


def mix(column: str = "i") -> str:
    """A well-mixed 0..999 per integer, so properties don't line up with ids."""
    return f"((({column} * 2654435761) % 4294967296) % 1000)"


def run_sql(engine, statements: list[str]) -> None:
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


# --- the scheduling world ----------------------------------------------------------------------------------


@dataclass
class World:
    clinic_id: int
    campaign_id: int
    location_ids: list[int]
    provider_ids: list[int]
    in_person_type_id: int
    video_type_id: int
    slots: int = 0
    open_slots: int = 0
    facts: dict = field(default_factory=dict)


def build_world(engine, locations: int = 10, providers: int = 200, days: int = 90, per_day: int = 6,
                video_every: int = 5, booked_per_mille: int = 74, first_day: int = 1) -> World:
    """One clinic with `locations` locations (spread over US time zones) and `providers`
    providers, each working at one location (two neighbours share one); every `video_every`-th provider does video
    visits. Each provider has `per_day` back-to-back 30-minute slots every day for `days`
    days from tomorrow (local time), starting between 8:00 and 17:00 depending on the
    provider, so evenings exist. About `booked_per_mille` of every 1 000 slots are already
    booked. Slots are written by one INSERT ... SELECT over a small (location, day) table
    that carries each local day's UTC offset, so 9:00 stays 9:00 across DST."""
    sql = Sql(engine.dialect.name)
    with engine.begin() as connection:
        clinic_id = connection.execute(text(
            "INSERT INTO clinic (name, phone, email, postal_address) VALUES "
            "('Bench Clinic', '+13125550100', 'bench@example.org', '1 Bench St') RETURNING id")).scalar()
        location_ids = [connection.execute(text(
            "INSERT INTO location (clinic_id, name, address, time_zone, phone, transit_notes, parking_notes, retired) "
            f"VALUES (:c, :n, '1 Main St', :z, '', {sql.json('{}')}, {sql.json('{}')}, {sql.bool('1=0')}) "
            "RETURNING id"), {"c": clinic_id, "n": f"Location {n:02d}", "z": ZONES[n % len(ZONES)]}).scalar()
            for n in range(locations)]
        provider_ids = [connection.execute(text(
            "INSERT INTO provider (clinic_id, display_name, retired) VALUES (:c, :n, "
            f"{sql.bool('1=0')}) RETURNING id"), {"c": clinic_id, "n": f"Dr. Bench {n:03d}"}).scalar()
            for n in range(providers)]
        type_ids = []
        visit_name, no_text = sql.json('{"en": "Visit"}'), sql.json("{}")
        for code, modality, minutes in (("bench-wellness", "in_person", 30), ("bench-video", "telehealth", 30)):
            type_id = connection.execute(text(
                "INSERT INTO appointment_type (clinic_id, code, name, what_to_bring, preparation, service, modality, "
                "duration_minutes, form_code, join_url_pattern, buffer_before_minutes, buffer_after_minutes, "
                f"min_notice_hours, max_days_ahead, retired) VALUES (:c, :code, {visit_name}, "
                f"{no_text}, {no_text}, 'visit', :m, :d, 'previsit', "
                "'https://video.example.org/{code}', 0, 0, 2, 90, " + sql.bool("1=0") + ") RETURNING id"),
                {"c": clinic_id, "code": code, "m": modality, "d": minutes}).scalar()
            connection.execute(text("INSERT INTO appointment_type_gap (appointment_type_id, care_gap_code) "
                                    "VALUES (:t, 'annual_wellness')"), {"t": type_id})
            type_ids.append(type_id)
        now = datetime.now(timezone.utc)
        gaps, channels, steps = sql.json('["annual_wellness"]'), sql.json('["sms", "email"]'), sql.json("[0, 7, 14, 30]")
        campaign_id = connection.execute(text(
            "INSERT INTO campaign (clinic_id, name, status, verification_policy, link_lifetime_days, "
            "care_gap_codes, holdout_percent, channels, step_days, escalate_tier1, max_per_day, max_per_week, "
            "recontact_days, window_days, welcome_note, created_at) VALUES (:c, 'Bench win-back', 'active', "
            f"'dob_code', 14, {gaps}, 10, {channels}, {steps}, {sql.bool('1=1')}, 1, 3, 30, 90, {no_text}, "
            f"{sql.ts(now)}) "
            "RETURNING id"), {"c": clinic_id}).scalar()
        # (location, local day) -> UTC instant of that day's local midnight, taken from the
        # offset at noon (DST changes happen at 2:00, outside every slot).
        connection.execute(text("DROP TABLE IF EXISTS bench_day"))
        connection.execute(text("CREATE TABLE bench_day (location_id INTEGER, day INTEGER, weekday INTEGER, "
                                "midnight_utc VARCHAR(40))"))
        rows = []
        for location_id, zone_name in zip(location_ids, (ZONES[n % len(ZONES)] for n in range(locations))):
            zone = ZoneInfo(zone_name)
            today = now.astimezone(zone).date()
            for offset in range(first_day, first_day + days):
                day = today + timedelta(days=offset)
                noon = datetime.combine(day, time(12), tzinfo=zone).astimezone(timezone.utc)
                midnight = noon - timedelta(hours=12)
                rows.append({"l": location_id, "d": offset, "w": day.weekday(),
                             "m": midnight.strftime("%Y-%m-%d %H:%M:%S.%f")})
        connection.execute(text("INSERT INTO bench_day VALUES (:l, :d, :w, :m)"), rows)
        for statement in sql.seq("bench_k", per_day):
            connection.execute(text(statement))
        connection.execute(text("DROP TABLE IF EXISTS bench_provider"))
        connection.execute(text("CREATE TABLE bench_provider (provider_id INTEGER, location_id INTEGER, "
                                "modality VARCHAR(32), start_minute INTEGER)"))
        connection.execute(text("INSERT INTO bench_provider VALUES (:p, :l, :m, :s)"), [
            {"p": pid, "l": location_ids[(n // 2) % locations], "m": "telehealth" if n % video_every == video_every - 1
             else "in_person", "s": (8 + n % 10) * 60} for n, pid in enumerate(provider_ids)])
        midnight = "CAST(d.midnight_utc || '+00' AS TIMESTAMPTZ)" if sql.pg else "d.midnight_utc"
        start = "p.start_minute + (k.i - 1) * 30"
        booked = f"{mix('(d.day * 7919 + p.provider_id * 31 + k.i)')} < {booked_per_mille}"
        connection.execute(text(
            "INSERT INTO slot (location_id, provider_id, modality, starts_at, ends_at, local_weekday, local_minutes, "
            "capacity, booked_count, blocked) "
            f"SELECT p.location_id, p.provider_id, p.modality, {sql.plus_minutes(midnight, start)}, "
            f"{sql.plus_minutes(midnight, start + ' + 30')}, d.weekday, {start}, 1, "
            f"CASE WHEN {booked} THEN 1 ELSE 0 END, {sql.bool('1=0')} "
            "FROM bench_provider p JOIN bench_day d ON d.location_id = p.location_id CROSS JOIN bench_k k"))
        for table in ("bench_day", "bench_k", "bench_provider"):
            connection.execute(text(f"DROP TABLE {table}"))
        total = connection.execute(text("SELECT count(*) FROM slot")).scalar()
        open_ = connection.execute(text("SELECT count(*) FROM slot WHERE booked_count < capacity AND "
                                        f"blocked = {sql.bool('1=0')}")).scalar()
    return World(clinic_id, campaign_id, location_ids, provider_ids, type_ids[0], type_ids[1], total, open_)


# --- patients with a browser session -----------------------------------------------------------------------


def keyed(value: str, purpose: str) -> str:
    """portal.services.keyed_hash.keyed_hash without an app context."""
    import hmac

    return hmac.new(SECRET.encode(), f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


@dataclass
class Browser:
    """One patient's browser: the session cookie and the CSRF token its forms carry."""

    enrolment_id: int
    patient_id: int
    cookie: str
    csrf: str
    token: str = ""  # the invitation link token


def add_patients(app, world: World, count: int, verified: bool = True, first: int = 0) -> list[Browser]:
    """`count` patients enrolled in the world's campaign, each with a live link and a
    server-side session (verified or not), returned as ready-to-use cookies."""
    from portal.extensions import db
    from portal.models import ChannelConsent, Enrolment, Patient, WebSession, utcnow
    from portal.services.links import issue_link
    from portal.services.patient_sessions import session_key_hash

    browsers = []
    with app.test_request_context():
        session = db.session
        now = utcnow()
        serializer = app.session_interface.get_signing_serializer(app)
        csrf_signer = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="wtf-csrf-token")
        for n in range(first, first + count):
            patient = Patient(given_name=f"Pat{n}", family_name="Bench", birth_date=date(1950 + n % 40, 1 + n % 12, 1 + n % 28),
                              preferred_language="en" if n % 4 else "es", phone=f"+1312555{n:04d}",
                              email=f"pat{n}@example.org", time_zone="America/Chicago")
            session.add(patient)
            session.flush()
            for channel in ("sms", "email"):
                session.add(ChannelConsent(patient_id=patient.id, channel=channel, granted=True, source="bench",
                                           updated_at=now))
            enrolment = Enrolment(campaign_id=world.campaign_id, patient_id=patient.id,
                                  care_gap_code="annual_wellness", created_at=now)
            session.add(enrolment)
            session.flush()
            link, token = issue_link(session, enrolment, now)
            key = secrets.token_urlsafe(32)
            session.add(WebSession(key_hash=session_key_hash(key), kind="patient", enrolment_id=enrolment.id,
                                   link_id=link.id, verified_at=now if verified else None, created_at=now,
                                   last_seen_at=now, data={}))
            raw_csrf = hashlib.sha1(os.urandom(64)).hexdigest()
            cookie = serializer.dumps({"psid": key, "csrf_token": raw_csrf})
            browsers.append(Browser(enrolment.id, patient.id, cookie, csrf_signer.dumps(raw_csrf), token))
        session.commit()
    return browsers


COOKIE_NAME = "portal_session"


# --- figures -----------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    return {"n": len(seconds), "p50": percentile(seconds, 50) * 1000, "p95": percentile(seconds, 95) * 1000,
            "p99": percentile(seconds, 99) * 1000, "mean": statistics.fmean(seconds) * 1000 if seconds else 0.0}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory = next((int(line.split()[1]) // 1024 // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    return (f"{cpu}, nproc {os.cpu_count()}, {memory} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def stamp() -> str:
    return f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"


SHARED_NOTE = ("The machine has 2 cores shared with other developers running test suites at the same time, and "
               "the load generator runs on the same 2 cores as the server: figures move by tens of percent "
               "from run to run; compare ratios measured in the same run rather than absolute numbers.")


def write_section(title: str, body: list[str]) -> None:
    """Replace (or add) the section `## {title}` of bench/README.md, keeping every other
    section (the dashboard bench writes its own the same way)."""
    heading = f"## {title}"
    section = "\n".join([heading, "", *body]).rstrip("\n") + "\n"
    existing = README.read_text() if README.exists() else (
        "# Benchmarks\n\nEach bench has its own section: what it measures, how to run it, and the last figures "
        "with the machine and date.\n")
    if heading in existing:
        before, rest = existing.split(heading, 1)
        after = rest[rest.find("\n## "):] if "\n## " in rest else ""
        existing = before.rstrip("\n") + "\n\n" + section + after
    else:
        existing = existing.rstrip("\n") + "\n\n" + section
    README.write_text(existing)
    print(f"wrote the section '{title}' of {README.relative_to(ROOT)}")


# --- a gunicorn server on loopback -------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str, process, seconds: float) -> bool:
    """Wait until a server just started answers HTTP at `url` (any status); False if it
    exits or stays silent for `seconds`."""
    import time as clock
    import urllib.error
    import urllib.request

    deadline = clock.monotonic() + seconds
    while clock.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/", timeout=2)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            if process.poll() is not None:
                return False
            clock.sleep(0.1)
    return False


class Gunicorn:
    """`gunicorn` serving an app on 127.0.0.1 only, in its own process group, stopped on exit."""

    def __init__(self, app_spec: str, env: dict[str, str] | None = None, workers: int = 4,
                 chdir: Path = ROOT, threads: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="bench-gunicorn-", suffix=".log")[1])
        self.command = [str(ROOT / ".venv" / "bin" / "gunicorn"), "--workers", str(workers), "--bind",
                        f"127.0.0.1:{self.port}", "--chdir", str(chdir), "--log-level", "warning",
                        "--error-logfile", str(self.log), "--timeout", "60", "--backlog", "2048",
                        *(["--worker-class", "gthread", "--threads", str(threads)] if threads else []), app_spec]
        self.env = {**os.environ, **(env or {})}
        self.process = None

    def __enter__(self) -> "Gunicorn":
        import subprocess

        self.process = subprocess.Popen(self.command, env=self.env, start_new_session=True)
        if not answers(self.url, self.process, 30):
            self.__exit__(None, None, None)
            raise RuntimeError(f"gunicorn did not start: {self.log.read_text()[-2000:]}")
        return self

    def __exit__(self, *_exc) -> None:
        import signal
        import subprocess

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.log.exists() and "Traceback" not in self.log.read_text():
            self.log.unlink()  # keep the log only when it has something to show

    def errors(self) -> str:
        """Tracebacks gunicorn logged (a 500 leaves one)."""
        text_ = self.log.read_text() if self.log.exists() else ""
        return text_ if "Traceback" in text_ else ""


class Nginx:
    """nginx on 127.0.0.1 in front of a server, as in production: it keeps the clients'
    connections (keep-alive, a person reading a page) and hands each buffered request to
    gunicorn, where whichever sync worker is free accepts it."""

    def __init__(self, upstream_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        temp_paths = " ".join(f"{kind}_temp_path {self.folder}/{kind};"
                              for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (self.folder / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\ndaemon off;\npid {self.folder}/nginx.pid;\n"
            f"error_log {self.folder}/error.log warn;\nevents {{ worker_connections 4096; }}\n"
            f"http {{\n  access_log off;\n  {temp_paths}\n"
            f"  upstream app {{ server {upstream_url.removeprefix('http://')}; }}\n"
            f"  server {{\n    listen 127.0.0.1:{self.port} backlog=2048;\n    keepalive_requests 100000;\n"
            "    location / { proxy_pass http://app; proxy_set_header Host $http_host; }\n  }\n}\n")
        self.process = None

    def __enter__(self) -> "Nginx":
        import subprocess

        self.process = subprocess.Popen(["nginx", "-c", str(self.folder / "nginx.conf"), "-p", str(self.folder)],
                                        start_new_session=True)
        if not answers(self.url, self.process, 10):
            self.__exit__(None, None, None)
            raise RuntimeError("nginx did not start: " + (self.folder / "error.log").read_text()[-2000:])
        return self

    def __exit__(self, *_exc) -> None:
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        shutil.rmtree(self.folder, ignore_errors=True)


def load_average() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f}"
