"""Page weight on first view: every patient page, opened in a fresh browser context
(empty cache, the patient's cookie copied over), must stay within ≤ 60 KB transferred
and ≤ 5 requests, load no web font, and ask nothing of any host but the app.

Bytes are what Chromium reports as transferred for each response: headers plus the
body as sent. The table goes to stdout (`pytest -s`, or `-rA`) and to
screenshots/page-weight.txt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import PHONE, SCREENSHOTS
from tests.browser.journey import Visitor, path_of

pytestmark = pytest.mark.browser

MAX_BYTES = 60 * 1024
MAX_REQUESTS = 5
FONT_SUFFIXES = (".woff", ".woff2", ".ttf", ".otf", ".eot")


@dataclass
class Weight:
    page: str
    path: str
    status: int
    body_bytes: int = 0
    transferred: int = 0
    requests: list[str] = field(default_factory=list)
    fonts: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.transferred > MAX_BYTES:
            found.append(f"{self.transferred} bytes > {MAX_BYTES}")
        if len(self.requests) > MAX_REQUESTS:
            found.append(f"{len(self.requests)} requests > {MAX_REQUESTS}: {self.requests}")
        if self.fonts:
            found.append(f"web fonts: {self.fonts}")
        if self.foreign:
            found.append(f"requests to other hosts: {self.foreign}")
        return found


def first_view(browser, server, name: str, url: str, storage_state=None) -> Weight:
    """Open one page the way a patient's phone does the first time: nothing cached."""
    context = browser.new_context(viewport=PHONE, storage_state=storage_state, locale="en-US")
    try:
        page = context.new_page()
        finished = []
        page.on("requestfinished", lambda request: finished.append(request))
        page.on("requestfailed", lambda request: finished.append(request))
        response = page.goto(url)
        page.wait_for_load_state("networkidle")
        weight = Weight(name, path_of(page.url), response.status)
        own_host = urlsplit(server.base_url).netloc
        for request in finished:
            parts = urlsplit(request.url)
            if parts.scheme == "data":
                continue  # inline (the empty favicon): nothing goes over the network
            sizes = request.sizes()
            weight.requests.append(f"{request.method} {parts.path}")
            weight.body_bytes += max(sizes["responseBodySize"], 0)
            weight.transferred += max(sizes["responseBodySize"], 0) + max(sizes["responseHeadersSize"], 0)
            if request.resource_type == "font" or parts.path.lower().endswith(FONT_SUFFIXES):
                weight.fonts.append(request.url)
            if parts.netloc != own_host:
                weight.foreign.append(request.url)
        return weight
    finally:
        context.close()


def table(weights: list[Weight]) -> str:
    lines = [f"{'page':<16} {'path':<34} {'status':>6} {'body B':>8} {'transferred B':>13} {'requests':>8}"]
    for w in weights:
        lines.append(f"{w.page:<16} {w.path[:34]:<34} {w.status:>6} {w.body_bytes:>8} {w.transferred:>13} "
                     f"{len(w.requests):>8}" + (f"   OVER: {'; '.join(w.problems)}" if w.problems else ""))
    lines.append(f"budget: ≤ {MAX_BYTES} bytes transferred (headers + body), ≤ {MAX_REQUESTS} requests, "
                 "no web fonts, no other hosts; first view, empty cache, 360x640")
    return "\n".join(lines)


def test_every_patient_page_is_light_on_first_view(server, browser, new_context):
    patient = server.take_patient("en")
    weights = [first_view(browser, server, "link", patient.link),
               first_view(browser, server, "link-not-valid", server.url("/r/not-a-real-link")),
               first_view(browser, server, "session-ended", server.url("/visit"))]

    context = new_context(PHONE)
    me = Visitor(context.new_page(), server, patient)

    def measure(name: str) -> None:
        weights.append(first_view(browser, server, name, me.page.url, context.storage_state()))

    me.open_link()
    measure("welcome")
    me.ask_for_code()
    measure("verify")
    me.confirm_identity(me.read_code(browser))
    measure("home")
    me.follow("/visit/choose")
    measure("choose")
    me.choose_first_place()
    measure("times")
    me.hold_first_time()
    measure("review")
    me.book()
    measure("booked")
    me.follow("/visit/form")
    measure("form")
    me.fill_previsit_form()
    measure("home-booked")
    me.follow("/visit/help")
    measure("help")
    me.follow("/visit")
    me.follow("/visit/other")
    measure("other")
    me.follow("/visit")
    me.follow("/visit/cancel")
    measure("cancel")
    me.cancel_visit()

    report = table(weights)
    print("\npage weight on first view:\n" + report)
    SCREENSHOTS.mkdir(exist_ok=True)
    (SCREENSHOTS / "page-weight.txt").write_text(report + "\n")
    assert all(w.status < 500 for w in weights), report
    over = [w for w in weights if w.problems]
    assert not over, "pages over budget:\n" + report
