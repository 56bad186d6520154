"""Browser tests: the real app in a subprocess, driven by Debian's Chromium.

One server per test run (`portal demo --port N` on a free loopback port) with a fresh
SQLite database, seeded first with `portal demo --seed-only --json` (the demo's links)
and `seed_patients.py` (a patient for each test that books or locks a link, so no test
depends on what another did). The server's stderr is kept and checked at the end: a
link token must never appear in it.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "screenshots"
BIN = Path(sys.executable).parent
SERVER_START_SECONDS = 90  # it seeds again before serving; slow on a busy CI machine
EXTRA_PATIENTS = 12

PHONE = {"width": 360, "height": 640}
LARGE_PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def pytest_runtest_setup(item):
    """Skip here rather than in a fixture, so the summary shows one line, not one per test file."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}: "
                    "run `apt-get install -y chromium` (as root) to enable them")


@pytest.fixture(scope="session", autouse=True)
def _no_stale_failure_screenshots():
    shutil.rmtree(SCREENSHOTS / "failures", ignore_errors=True)


@dataclass
class Patient:
    name: str
    birth_date: date
    language: str
    link: str
    phone: str = ""
    email: str = ""

    @property
    def token(self) -> str:
        return urlsplit(self.link).path.removeprefix("/r/")

    @property
    def code_recipient(self) -> str:
        return self.phone or self.email


@dataclass
class Server:
    base_url: str
    stderr_path: Path
    demo: dict[str, Patient]
    spare: list[Patient] = field(default_factory=list)
    staff: dict[str, dict] = field(default_factory=dict)  # role -> {email, password, totp_secret}

    def take_patient(self, language: str | None = None) -> Patient:
        """A patient no other test has touched (annual wellness, phone and email on file)."""
        for patient in self.spare:
            if language in (None, patient.language):
                self.spare.remove(patient)
                return patient
        raise AssertionError(f"no unused browser-test patient left (language={language}); raise EXTRA_PATIENTS")

    def url(self, path: str) -> str:
        return self.base_url + path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_answering(base_url: str, process: subprocess.Popen, stderr_path: Path) -> None:
    """Poll until the server answers HTTP, giving up after SERVER_START_SECONDS or if it exits."""
    for _attempt in range(SERVER_START_SECONDS * 10):
        try:
            urllib.request.urlopen(base_url + "/visit", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (the session page is a 401) means it is serving
        except OSError:
            pass
        try:
            process.wait(timeout=0.1)  # the pause between tries; returns at once if the server died
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"the portal exited with {process.returncode}:\n{stderr_path.read_text()[-3000:]}")
    raise AssertionError(f"the portal did not answer in {SERVER_START_SECONDS}s:\n{stderr_path.read_text()[-3000:]}")


def _run_json(args: list[str], env: dict) -> object:
    done = subprocess.run(args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    instance = tmp_path_factory.mktemp("portal-instance")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PORTAL_", "FLASK_"))}  # a fresh SQLite database, whatever the shell says
    env.update(PORTAL_ENV="development", PORTAL_INSTANCE_PATH=str(instance), PORTAL_BASE_URL=base_url)

    seeded = _run_json([str(BIN / "portal"), "demo", "--seed-only", "--json"], env)
    assert seeded["base_url"] == base_url
    demo = {p["name"]: Patient(p["name"], date.fromisoformat(p["birth_date"]), p["language"], p["link"])
            for p in seeded["patients"]}
    spare = [Patient(p["name"], date.fromisoformat(p["birth_date"]), p["language"], p["link"], p["phone"], p["email"])
             for p in _run_json([sys.executable, str(Path(__file__).with_name("seed_patients.py")),
                                 str(EXTRA_PATIENTS)], env)]

    # `portal demo --port N` seeds again (nothing changes, the same links) and serves.
    stderr_path = instance / "server-stderr.log"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen([str(BIN / "portal"), "demo", "--port", str(port)],
                                   env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_until_answering(base_url, process, stderr_path)
        yield Server(base_url, stderr_path, demo, list(spare), {s["role"]: s for s in seeded["staff"]})  # tests take from the copy; all are checked below
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    log = stderr_path.read_text()
    leaked = [p.name for p in [*demo.values(), *spare] if p.token in log or p.token.split(".")[0] in log]
    assert not leaked, f"link tokens of {leaked} appear in the server's stderr ({stderr_path})"
    assert "/r/[redacted]" in log, "the server log shows no link being opened; the token check above proved nothing"


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.failed_call = report.failed
    return report


@pytest.fixture()
def new_context(browser, request):
    """Open browser contexts (a phone each) that are closed after the test; on failure
    the last page of each is saved under screenshots/failures/."""
    contexts = []

    def open_context(viewport=PHONE, javascript: bool = True, **options):
        context = browser.new_context(viewport=viewport, java_script_enabled=javascript, locale="en-US",
                                      **options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context

    yield open_context
    for number, context in enumerate(contexts):
        if getattr(request.node, "failed_call", False) and context.pages:
            failures = SCREENSHOTS / "failures"
            failures.mkdir(parents=True, exist_ok=True)
            safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in request.node.name)
            try:
                context.pages[-1].screenshot(path=str(failures / f"{safe}-{number}.png"), full_page=True)
            except Exception:  # noqa: BLE001 - a failed screenshot must not hide the real failure
                pass
        context.close()
