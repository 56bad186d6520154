"""Staff sign-in: password then TOTP, one use per code, sessions that really end."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from portal.models import StaffUser
from tests.helpers import PatientBrowser
from tests.staff_helpers import PASSWORD, make_staff, sign_in


def test_password_alone_does_not_open_the_console(db, client, in_app):
    account = make_staff(db, in_app, "scheduler")
    browser = PatientBrowser(client)
    browser.get("/staff/login")
    browser.post("/staff/login", {"email": account.email, "password": PASSWORD})
    assert "Authenticator code" in browser.page
    for path in ("/staff/", "/staff/schedule", "/staff/patients"):
        response = client.get(path)
        assert response.status_code == 303 and "/staff/login" in response.headers["Location"]


def test_password_and_totp_open_the_console(db, client, in_app):
    account = make_staff(db, in_app, "scheduler")
    browser = sign_in(client, account)
    assert browser.status == 200 and "Hello, Scheduler" in browser.page
    assert client.get("/staff/schedule").status_code == 200


def test_wrong_password_and_unknown_email_get_the_same_answer(db, client, in_app):
    account = make_staff(db, in_app, "scheduler")
    browser = PatientBrowser(client)
    browser.get("/staff/login")
    wrong = browser.post("/staff/login", {"email": account.email, "password": "not the password"})
    wrong_page = browser.page
    browser.get("/staff/login")
    unknown = browser.post("/staff/login", {"email": "nobody@clinic.test", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 400
    assert "match an account" in wrong_page and "match an account" in browser.page


def test_five_wrong_passwords_lock_the_account_even_with_the_right_one(db, client, in_app):
    account = make_staff(db, in_app, "coordinator")
    browser = PatientBrowser(client)
    for _ in range(5):
        browser.get("/staff/login")
        browser.post("/staff/login", {"email": account.email, "password": "wrong password!!"})
    browser.get("/staff/login")
    response = browser.post("/staff/login", {"email": account.email, "password": PASSWORD})
    assert response.status_code == 429 and "Too many tries" in browser.page


def test_a_totp_code_is_accepted_only_once(db, app, client, in_app):
    account = make_staff(db, in_app, "scheduler")
    code = account.code()
    first = PatientBrowser(client)
    first.get("/staff/login")
    first.post("/staff/login", {"email": account.email, "password": PASSWORD})
    first.post("/staff/login/code", {"code": code})
    assert "Hello" in first.page
    second = PatientBrowser(app.test_client())
    second.get("/staff/login")
    second.post("/staff/login", {"email": account.email, "password": PASSWORD})
    replay = second.post("/staff/login/code", {"code": code})
    assert replay.status_code == 400 and "Codes change every 30 seconds" in second.page


def test_a_cookie_replayed_after_logout_is_refused(db, app, client, in_app):
    account = make_staff(db, in_app, "scheduler")
    browser = sign_in(client, account)
    stolen = client.get_cookie("portal_session").value
    browser.post("/staff/logout")
    thief = app.test_client()
    thief.set_cookie("portal_session", stolen)
    response = thief.get("/staff/schedule")
    assert response.status_code == 303 and "/staff/login" in response.headers["Location"]


@pytest.mark.parametrize("target", ["https://evil.example/phish", "//evil.example/x", "/\\evil.example"])
def test_next_to_another_host_is_ignored(db, client, in_app, target):
    account = make_staff(db, in_app, "scheduler")
    browser = PatientBrowser(client)
    browser.get("/staff/login")
    browser.post(f"/staff/login?next={target}", {"email": account.email, "password": PASSWORD})
    response = browser.post("/staff/login/code", {"code": account.code()}, follow=False)
    assert response.status_code == 303
    assert response.headers["Location"] in ("/staff/", "/")


def test_next_to_our_own_page_is_followed(db, client, in_app):
    account = make_staff(db, in_app, "scheduler")
    response = client.get("/staff/schedule?day=2026-03-08")
    assert response.status_code == 303
    browser = PatientBrowser(client)
    browser.get(response.headers["Location"])
    browser.post("/staff/login?next=/staff/schedule%3Fday%3D2026-03-08", {"email": account.email, "password": PASSWORD})
    response = browser.post("/staff/login/code", {"code": account.code()}, follow=False)
    assert response.headers["Location"] == "/staff/schedule?day=2026-03-08"


def test_first_sign_in_enrols_the_authenticator_and_shows_recovery_codes_once(db, client, in_app):
    import pyotp

    from portal.services.staff_auth import create_staff

    with in_app():
        create_staff(db, "new@clinic.test", "coordinator", "New Person", PASSWORD)
    db.commit()
    browser = PatientBrowser(client)
    browser.get("/staff/login")
    browser.post("/staff/login", {"email": "new@clinic.test", "password": PASSWORD})
    assert "<svg" in browser.page and "Set up your authenticator" in browser.page
    import re

    secret = re.search(r"<code>([A-Z2-7]{32})</code>", browser.page).group(1)
    browser.post("/staff/login/code", {"code": pyotp.TOTP(secret).now()})
    assert "Your recovery codes" in browser.page
    db.expire_all()
    user = db.scalar(select(StaffUser).where(StaffUser.email == "new@clinic.test"))
    assert user.totp_secret == secret and len(user.recovery_code_hashes) == 8
