"""Outreach links: bad links get a friendly page, opening a link changes nothing,
the token leaves the URL at once and never reaches a log line, and every response
carries the security headers."""
from __future__ import annotations

import html
import logging
import threading
import urllib.error
import urllib.request
from datetime import timedelta
from http.cookiejar import CookieJar

import pytest
from sqlalchemy import func, select, update
from werkzeug.serving import make_server

from portal.models import Event, Link, OneTimeCode, OutboxMessage, WebSession, utcnow
from portal.services.links import issue_link, revoke_links, token_for
from tests.factories import add_slots, future_day, invite_patient, latest_code, make_clinic
from tests.helpers import PatientBrowser
from tests.patients import book, verified_patient

CALL_THE_CLINIC = {"en": "Call the clinic and we'll book your visit or send you a new link.",
                   "es": "Llame a la clínica y le hacemos la cita o le enviamos un enlace nuevo."}


def tampered(token: str) -> str:
    """Change one character in the middle of the signed payload."""
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]


def count(db, model, **where) -> int:
    db.expire_all()
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return db.scalar(query)


@pytest.fixture()
def invited(db, in_app):
    setup = make_clinic(db)
    add_slots(db, setup, future_day(3))
    return invite_patient(db, in_app, setup)


def readable(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def assert_link_problem(response, status: int, heading: str, language: str = "en") -> None:
    page = readable(response)
    assert response.status_code == status
    assert heading in page
    assert CALL_THE_CLINIC[language] in page
    assert "Traceback" not in page


@pytest.mark.parametrize("language", ["en", "es"])
def test_tampered_link_gets_a_friendly_page(client, invited, language):
    headings = {"en": "This link doesn't work", "es": "Este enlace no funciona"}
    response = client.get(f"/r/{tampered(invited.token)}", headers={"Accept-Language": language})
    assert_link_problem(response, 404, headings[language], language)


@pytest.mark.parametrize("token", ["abc", "x" * 5000, "%3Cscript%3Ealert(1)%3C%2Fscript%3E", "%F0%9F%98%80.é.ü",
                                   "abc/def", "abc/"])
def test_garbage_link_gets_a_friendly_page(client, token):
    assert_link_problem(client.get(f"/r/{token}"), 404, "This link doesn't work")


def test_well_signed_link_that_we_never_issued_is_unknown(db, client, in_app, invited):
    with in_app():
        forged = token_for(Link(purpose="invite", issued_at=utcnow().replace(microsecond=0)), "never-issued-nonce")
        other_purpose = token_for(Link(purpose="staff", issued_at=utcnow().replace(microsecond=0)), "x")
    assert_link_problem(client.get(f"/r/{forged}"), 404, "This link doesn't work")
    assert_link_problem(client.get(f"/r/{other_purpose}"), 404, "This link doesn't work")


@pytest.mark.parametrize("language", ["en", "es"])
def test_expired_link_gets_a_friendly_page(db, client, invited, language):
    db.execute(update(Link).where(Link.enrolment_id == invited.enrolment.id)
               .values(expires_at=utcnow() - timedelta(minutes=1)))
    db.commit()
    headings = {"en": "This link has expired", "es": "Este enlace venció"}
    response = client.get(invited.path, headers={"Accept-Language": language})
    assert_link_problem(response, 410, headings[language], language)


def test_link_older_than_its_signature_allows_is_expired(db, client, in_app, invited):
    with in_app():
        _link, old_token = issue_link(db, invited.enrolment, now=utcnow() - timedelta(days=120))
    db.execute(update(Link).where(Link.enrolment_id == invited.enrolment.id)
               .values(expires_at=utcnow() + timedelta(days=1)))
    db.commit()
    assert_link_problem(client.get(f"/r/{old_token}"), 410, "This link has expired")


def test_revoked_and_superseded_links_get_a_friendly_page(db, client, in_app, invited):
    with in_app():
        _link, newer = issue_link(db, invited.enrolment)
    db.commit()
    assert_link_problem(client.get(invited.path), 410, "This link no longer works")
    assert client.get(f"/r/{newer}").status_code == 303

    revoke_links(db, invited.enrolment, "staff")
    db.commit()
    fresh = client.application.test_client()
    assert_link_problem(fresh.get(f"/r/{newer}"), 410, "This link no longer works")


def test_bad_links_open_no_session_and_record_nothing(db, client, in_app, invited):
    db.execute(update(Link).where(Link.enrolment_id == invited.enrolment.id)
               .values(expires_at=utcnow() - timedelta(minutes=1)))
    db.commit()
    with in_app():
        forged = token_for(Link(purpose="invite", issued_at=utcnow().replace(microsecond=0)), "never-issued")
    for path in (invited.path, f"/r/{tampered(invited.token)}", f"/r/{forged}", "/r/abc"):
        assert client.get(path).status_code in (404, 410)
    assert count(db, WebSession) == 0
    assert count(db, Event, enrolment_id=invited.enrolment.id) == 0
    assert client.get("/welcome").status_code == 401


def test_revoking_a_link_ends_the_session_it_opened(db, client, invited):
    browser = PatientBrowser(client)
    browser.get(invited.path)
    assert browser.status == 200
    revoke_links(db, invited.enrolment, "staff")
    db.commit()
    browser.get("/welcome")
    assert browser.status == 401 and "Please open your link again" in browser.page


def test_opening_a_link_twice_without_cookies_consumes_nothing_and_sends_no_code(app, db, invited):
    """What a mail scanner does: open the link, follow the redirect, with no cookie jar."""
    for _ in range(2):
        scanner = app.test_client(use_cookies=False)
        response = scanner.get(invited.path, follow_redirects=True)
        assert response.status_code in (200, 401)

    assert count(db, OneTimeCode, enrolment_id=invited.enrolment.id) == 0
    assert count(db, OutboxMessage, patient_id=invited.patient.id) == 0
    assert count(db, WebSession, enrolment_id=invited.enrolment.id, verified_at=None) == 2
    kinds = db.scalars(select(Event.kind).where(Event.enrolment_id == invited.enrolment.id)).all()
    assert kinds == ["link_opened", "link_opened"]
    link = db.scalar(select(Link).where(Link.enrolment_id == invited.enrolment.id))
    assert link.revoked_at is None and link.expires_at > utcnow()

    patient = PatientBrowser(app.test_client())
    patient.verify(db, invited, latest_code)
    assert patient.status == 200 and "Welcome back, Maria" in patient.page


def test_link_redirects_to_a_token_free_url(client, invited):
    response = client.get(invited.path)
    assert response.status_code == 303
    assert response.headers["Location"] == "/welcome"
    assert invited.token not in response.get_data(as_text=True)
    landing = client.get("/welcome")
    assert landing.status_code == 200
    assert invited.token not in landing.get_data(as_text=True)
    assert invited.token not in str(landing.headers)


@pytest.fixture()
def live_server(app, connection):
    """The app behind a real werkzeug server, so its real access log runs."""
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    server.server_close()


def fetch(opener, url: str, data: bytes | None = None) -> tuple[int, str]:
    try:
        with opener.open(url, data=data) as response:
            return response.status, html.unescape(response.read().decode())
    except urllib.error.HTTPError as error:
        return error.code, html.unescape(error.read().decode())


def test_token_never_reaches_the_log(db, invited, live_server, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="werkzeug")
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    status, page = fetch(browser, live_server + invited.path)
    assert status == 200 and "You're due for a visit" in page
    status, _page = fetch(browser, live_server + f"/r/{tampered(invited.token)}")
    assert status == 404
    status, _page = fetch(browser, live_server + invited.path + "?utm=1")
    assert status == 200

    lines = [record.getMessage() for record in caplog.records]
    access = [line for line in lines if "GET /r/" in line]
    assert len(access) == 3, lines  # the access log really ran, once per link request
    assert "GET /welcome" in "\n".join(lines)
    captured = capfd.readouterr()
    for text in ("\n".join(lines), caplog.text, captured.out, captured.err):
        assert invited.token not in text
        assert tampered(invited.token) not in text
        assert invited.token[:20] not in text


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
CSP_PARTS = ("default-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'")


def assert_security_headers(response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.path, name)
    csp = response.headers.get("Content-Security-Policy", "")
    for part in CSP_PARTS:
        assert part in csp, (response.request.path, csp)
    assert "unsafe-inline" not in csp


def test_security_headers_on_every_response_including_errors(app, db, in_app, invited):
    setup_client = app.test_client()
    responses = [
        setup_client.get(invited.path),  # 303
        setup_client.get("/welcome"),  # 200
        setup_client.post("/welcome/code", data={"channel": "sms"}),  # 400: no CSRF token
        setup_client.get("/static/css/portal.css"),
        app.test_client().get("/visit"),  # 401: no session
        app.test_client().get(f"/r/{tampered(invited.token)}"),  # 404 link page
        app.test_client().get("/no-such-page"),  # 404
        app.test_client().delete("/welcome"),  # 405
        app.test_client().post("/language", data={"lang": "es", "next": "/"}),  # 400 CSRF
        app.test_client().post("/language", data={"x": "y" * 70_000}),  # 413
    ]
    statuses = [response.status_code for response in responses]
    assert statuses == [303, 200, 400, 200, 401, 404, 404, 405, 400, 413]
    for response in responses:
        assert_security_headers(response)


def test_security_headers_and_a_friendly_page_on_an_unexpected_error(database_url):
    from tests.conftest import make_test_app

    broken = make_test_app(database_url)

    @broken.get("/boom")
    def boom():
        raise RuntimeError("secret detail from a bug")

    try:
        response = broken.test_client().get("/boom")
    finally:
        broken.extensions["portal_db"]["engine"].dispose()
    page = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Something went wrong on our side" in page
    assert "secret detail" not in page and "Traceback" not in page
    assert_security_headers(response)


def test_patient_pages_are_not_cached(app, db, in_app):
    setup = make_clinic(db)
    add_slots(db, setup, future_day(3))
    patient = verified_patient(app, db, in_app, setup)
    book(patient, setup)
    client = patient.browser.client
    for path in ("/welcome", "/visit", "/visit/choose", f"/visit/times?type={setup.in_person.id}&location="
                 f"{setup.location.id}", "/visit/booked", "/visit/appointment.ics", "/visit/form", "/visit/help",
                 "/visit/other", "/visit/cancel"):
        response = client.get(path)
        assert response.status_code in (200, 303), path
        assert response.headers.get("Cache-Control") == "no-store", path
        assert_security_headers(response)
