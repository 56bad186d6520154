"""Confirming who opened the link: lockouts that a new browser can't reset, codes that
are single-use, short-lived, bound to one browser and capped, one generic error,
and a session that rotates on verification and ends when idle."""
from __future__ import annotations

import html
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, update

from portal.models import Enrolment, Event, OneTimeCode, OutboxMessage, WebSession, utcnow
from portal.services import identity, one_time_codes
from portal.services.errors import CodeExpired, CodeSendLimited
from portal.services.patient_sessions import session_key_hash
from tests.factories import add_slots, future_day, invite_patient, latest_code, make_clinic
from tests.helpers import PatientBrowser
from tests.patients import without_csrf

BIRTH = date(1958, 3, 14)
WRONG_BIRTH = date(1958, 3, 15)
GENERIC = "Those details don't match our records. Please check them and try again."
NEW_CODE = "That code can no longer be used. Please ask for a new code."
LOCKED = "we paused this link to protect your information"


@pytest.fixture()
def setup(db):
    setup = make_clinic(db)
    add_slots(db, setup, future_day(3))
    return setup


@pytest.fixture()
def invited(db, in_app, setup):
    return invite_patient(db, in_app, setup, birth_date=BIRTH)


def browser_for(app) -> PatientBrowser:
    return PatientBrowser(app.test_client())


def answer(browser: PatientBrowser, birth: date, code: str):
    return browser.post("/welcome/verify", {"birth_month": str(birth.month), "birth_day": str(birth.day),
                                            "birth_year": str(birth.year), "code": code})


def readable(browser: PatientBrowser) -> str:
    return html.unescape(browser.page)


def is_verified(browser: PatientBrowser) -> bool:
    return browser.client.get("/visit").status_code == 200


def codes_sent(db, invited) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(OutboxMessage)
                     .where(OutboxMessage.patient_id == invited.patient.id, OutboxMessage.template == "code"))


def enrolment_row(db, invited) -> Enrolment:
    db.expire_all()
    return db.get(Enrolment, invited.enrolment.id)


def move_codes_back(db, invited, by: timedelta) -> None:
    """As if the codes had been sent `by` earlier."""
    db.expire_all()
    for row in db.scalars(select(OneTimeCode).where(OneTimeCode.patient_id == invited.patient.id)):
        row.created_at -= by
        row.expires_at -= by
    db.commit()


def test_five_wrong_birth_dates_lock_the_link_even_across_browsers(app, db, invited):
    first = browser_for(app)
    first.get(invited.path)
    first.post("/welcome/code", {"channel": "sms"})
    code = latest_code(db, invited.patient)
    for _ in range(3):
        answer(first, WRONG_BIRTH, code)
        assert first.status == 400 and GENERIC in readable(first)

    second = browser_for(app)  # a new cookie jar: clearing cookies must not reset the count
    second.get(invited.path)
    second.post("/welcome/code", {"channel": "sms"})
    code = latest_code(db, invited.patient)
    answer(second, WRONG_BIRTH, code)
    assert second.status == 400 and GENERIC in readable(second)
    answer(second, WRONG_BIRTH, code)
    assert second.status == 423 and LOCKED in readable(second)
    assert "+1 312 555 0100" in second.page  # the clinic's number, to get help

    enrolment = enrolment_row(db, invited)
    assert enrolment.dob_failures == 5 and enrolment.locked_at is not None
    assert "locked" in db.scalars(select(Event.kind).where(Event.enrolment_id == enrolment.id)).all()

    # The right answers no longer help, in this browser or a fresh one opening the link again.
    answer(second, BIRTH, code)
    assert second.status in (401, 423) and not is_verified(second)
    third = browser_for(app)
    third.get(invited.path)
    assert third.status == 423 and LOCKED in readable(third)
    sent = codes_sent(db, invited)
    third.post("/welcome/code", {"channel": "sms"})
    assert third.status == 423
    assert codes_sent(db, invited) == sent, "a locked link sends no more codes"
    answer(third, BIRTH, latest_code(db, invited.patient))
    assert third.status == 423 and not is_verified(third)


def test_five_wrong_codes_make_the_code_unusable(app, db, invited):
    browser = browser_for(app)
    browser.get(invited.path)
    browser.post("/welcome/code", {"channel": "sms"})
    code = latest_code(db, invited.patient)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        answer(browser, BIRTH, wrong)
        assert browser.status == 400 and GENERIC in readable(browser)

    answer(browser, BIRTH, code)  # even the right code is refused now
    assert browser.status == 400 and NEW_CODE in readable(browser)
    assert not is_verified(browser)
    assert enrolment_row(db, invited).dob_failures == 0, "wrong codes are not wrong birth dates"

    browser.get("/welcome")
    browser.post("/welcome/code", {"channel": "sms"})
    answer(browser, BIRTH, latest_code(db, invited.patient))
    assert browser.status == 200 and is_verified(browser)


def test_wrong_code_count_lives_in_the_database(app, db, invited):
    browser = browser_for(app)
    browser.get(invited.path)
    browser.post("/welcome/code", {"channel": "sms"})
    code = latest_code(db, invited.patient)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(4):
        answer(browser, BIRTH, wrong)
    db.expire_all()
    row = db.scalar(select(OneTimeCode).where(OneTimeCode.enrolment_id == invited.enrolment.id))
    assert row.failed_attempts == 4
    answer(browser, BIRTH, code)  # the fifth try is still allowed, and right
    assert browser.status == 200 and is_verified(browser)


def test_a_code_is_single_use(app, db, in_app, invited):
    browser = browser_for(app)
    browser.get(invited.path)
    browser.post("/welcome/code", {"channel": "sms"})
    code = latest_code(db, invited.patient)
    answer(browser, BIRTH, code)
    assert is_verified(browser)

    replay = browser_for(app)  # someone who saw the code tries it in another session
    replay.get(invited.path)
    answer(replay, BIRTH, code)
    assert replay.status == 400 and NEW_CODE in readable(replay) and not is_verified(replay)

    # The same browser session cannot use one code twice either.
    with in_app():
        key = session_key_hash("a-browser-session")
        again = one_time_codes.issue_code(db, invited.enrolment, key, "sms")
        identity.verify_identity(db, invited.enrolment, BIRTH, code=again, session_key_hash=key)
        with pytest.raises(CodeExpired):
            identity.verify_identity(db, invited.enrolment, BIRTH, code=again, session_key_hash=key)


def test_a_code_expires_after_ten_minutes(app, db, in_app, invited):
    browser = browser_for(app)
    browser.get(invited.path)
    browser.post("/welcome/code", {"channel": "sms"})
    code = latest_code(db, invited.patient)
    move_codes_back(db, invited, timedelta(minutes=10, seconds=1))
    answer(browser, BIRTH, code)
    assert browser.status == 400 and NEW_CODE in readable(browser) and not is_verified(browser)

    with in_app():
        key, sent_at = session_key_hash("another-browser"), utcnow()
        fresh = one_time_codes.issue_code(db, invited.enrolment, key, "sms", now=sent_at)
        with pytest.raises(CodeExpired):
            one_time_codes.check_code(db, invited.enrolment, key, fresh, now=sent_at + timedelta(minutes=10))
        assert one_time_codes.check_code(db, invited.enrolment, key, fresh,
                                         now=sent_at + timedelta(minutes=9, seconds=59)) is not None


def test_at_most_three_codes_per_fifteen_minutes_whatever_the_browser(app, db, invited):
    browsers = [browser_for(app) for _ in range(3)]
    for number, browser in enumerate(browsers):
        browser.get(invited.path)
        browser.post("/welcome/code", {"channel": "sms" if number % 2 else "email"})
        assert browser.status == 200, number
    assert codes_sent(db, invited) == 3

    fourth = browser_for(app)
    fourth.get(invited.path)
    fourth.post("/welcome/code", {"channel": "sms"})
    assert fourth.status == 429
    assert "We've sent several codes already" in readable(fourth)
    assert codes_sent(db, invited) == 3

    move_codes_back(db, invited, timedelta(minutes=15, seconds=1))
    fourth.get("/welcome")
    fourth.post("/welcome/code", {"channel": "sms"})
    assert fourth.status == 200 and codes_sent(db, invited) == 4


def test_at_most_ten_codes_a_day(db, in_app, invited):
    start = utcnow()
    with in_app():
        for number in range(10):
            identity.send_code(db, invited.enrolment, "session", "sms", now=start + timedelta(minutes=16 * number))
        with pytest.raises(CodeSendLimited):
            identity.send_code(db, invited.enrolment, "session", "sms", now=start + timedelta(minutes=16 * 10))
        identity.send_code(db, invited.enrolment, "session", "sms", now=start + timedelta(days=1, minutes=1))


def test_wrong_birth_date_and_wrong_code_get_the_same_answer(app, db, in_app, setup, invited):
    """Typed values are identical in both tries; only which part is wrong differs."""
    other = invite_patient(db, in_app, setup, given="Ana", family="Lopez", birth_date=WRONG_BIRTH,
                           phone="+13125550102", email="ana@example.org")
    wrong_code_browser = browser_for(app)
    wrong_code_browser.get(invited.path)
    wrong_code_browser.post("/welcome/code", {"channel": "sms"})
    wrong_birth_browser = browser_for(app)
    wrong_birth_browser.get(other.path)
    wrong_birth_browser.post("/welcome/code", {"channel": "sms"})
    codes = latest_code(db, invited.patient), latest_code(db, other.patient)
    if codes[0] == codes[1]:
        pytest.skip("both codes happen to be equal")  # one chance in a million

    answer(wrong_code_browser, BIRTH, codes[1])  # Maria: right birth date, wrong code
    answer(wrong_birth_browser, BIRTH, codes[1])  # Ana: wrong birth date, right code
    assert wrong_code_browser.status == wrong_birth_browser.status == 400
    assert GENERIC in readable(wrong_code_browser)
    assert without_csrf(wrong_code_browser.page) == without_csrf(wrong_birth_browser.page)


def test_a_code_only_works_in_the_browser_that_asked_for_it(app, db, invited):
    asker = browser_for(app)
    asker.get(invited.path)
    asker.post("/welcome/code", {"channel": "sms"})
    code = latest_code(db, invited.patient)

    other = browser_for(app)
    other.get(invited.path)
    answer(other, BIRTH, code)
    assert other.status == 400 and not is_verified(other)
    other.get("/welcome")
    other.post("/welcome/code", {"channel": "email"})
    answer(other, BIRTH, code)
    assert other.status == 400 and GENERIC in readable(other) and not is_verified(other)

    answer(asker, BIRTH, code)
    assert asker.status == 200 and is_verified(asker)


def test_the_session_rotates_on_verification(app, db, invited):
    browser = browser_for(app)
    browser.get(invited.path)
    browser.post("/welcome/code", {"channel": "sms"})
    before = browser.client.get_cookie("portal_session").value
    answer(browser, BIRTH, latest_code(db, invited.patient))
    after = browser.client.get_cookie("portal_session").value
    assert is_verified(browser) and before != after

    copied = app.test_client()  # e.g. a cookie fixed or stolen before the patient verified
    copied.set_cookie("portal_session", before)
    response = copied.get("/visit")
    assert response.status_code == 401
    assert "Please open your link again" in response.get_data(as_text=True)


@pytest.mark.parametrize("idle, absolute, still_in", [
    (timedelta(minutes=14), timedelta(minutes=14), True),
    (timedelta(minutes=15, seconds=5), timedelta(minutes=16), False),
    (timedelta(minutes=1), timedelta(minutes=61), False),
])
def test_patient_session_ends_after_15_idle_or_60_minutes(app, db, invited, idle, absolute, still_in):
    browser = browser_for(app)
    browser.get(invited.path)
    browser.post("/welcome/code", {"channel": "sms"})
    answer(browser, BIRTH, latest_code(db, invited.patient))
    assert is_verified(browser)
    now = utcnow()
    db.execute(update(WebSession).where(WebSession.enrolment_id == invited.enrolment.id)
               .values(last_seen_at=now - idle, created_at=now - absolute))
    db.commit()
    response = browser.client.get("/visit")
    if still_in:
        assert response.status_code == 200
    else:
        assert response.status_code == 401
        assert "we close the page after 15 minutes without activity" in response.get_data(as_text=True)
        db.expire_all()
        assert db.scalar(select(func.count()).select_from(WebSession)
                         .where(WebSession.enrolment_id == invited.enrolment.id)) == 0


def test_reading_pages_keeps_the_session_alive(app, db, invited):
    """Only reading (GET) for 10 minutes still counts as activity: the idle clock restarts."""
    browser = browser_for(app)
    browser.get(invited.path)
    browser.post("/welcome/code", {"channel": "sms"})
    answer(browser, BIRTH, latest_code(db, invited.patient))
    ten_minutes_ago = utcnow() - timedelta(minutes=10)
    db.execute(update(WebSession).where(WebSession.enrolment_id == invited.enrolment.id)
               .values(last_seen_at=ten_minutes_ago))
    db.commit()
    assert browser.client.get("/visit").status_code == 200
    db.expire_all()
    seen = db.scalar(select(WebSession.last_seen_at).where(WebSession.enrolment_id == invited.enrolment.id))
    assert seen > ten_minutes_ago + timedelta(minutes=9)
