"""Twenty patients tap the same time at the same moment, through the real routes,
against a real database (a SQLite file, and PostgreSQL when PORTAL_TEST_DATABASE_URL
is set): exactly one gets it, every other one sees the polite "someone just took
that time" page with other times, and nobody sees an error.

These tests commit for real, so each builds its own database (a fresh SQLite file,
or a fresh PostgreSQL schema) and throws it away afterwards."""
from __future__ import annotations

import os
import re
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import time, timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import sessionmaker

from portal.database import make_engine
from portal.extensions import db as portal_db
from portal.migrate import upgrade_database
from portal.models import Appointment, AppointmentStatus, OutboxMessage, Slot
from tests.conftest import make_test_app
from tests.factories import add_slots, future_day, invite_patient, make_clinic
from tests.helpers import CSRF, PatientBrowser
from tests.patients import times_path

PATIENTS = 20
PG_URL = os.environ.get("PORTAL_TEST_DATABASE_URL", "")
TAKEN = "Sorry, someone just took that time"

pytestmark = pytest.mark.concurrency


@contextmanager
def fresh_database(backend: str, tmp_path):
    """The URL of a new, migrated database that nothing else uses."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'race.sqlite3'}"
        upgrade_database(url)
        yield url
        return
    if not PG_URL.startswith("postgresql"):
        pytest.skip("PORTAL_TEST_DATABASE_URL does not point at PostgreSQL")
    schema = f"race_{secrets.token_hex(4)}"
    admin = make_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options={quote(f'-csearch_path={schema}')}"
        upgrade_database(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def racing_app(request, tmp_path):
    """An app of its own, with real commits and a connection per thread."""
    with fresh_database(request.param, tmp_path) as url:
        app = make_test_app(url)
        app.extensions["portal_db"]["engine"].dispose()
        engine = make_engine(url, pool_size=PATIENTS + 5, max_overflow=0)
        app.extensions["portal_db"]["engine"] = engine
        portal_db.bind_factory(app, sessionmaker(bind=engine, expire_on_commit=False))
        try:
            yield app
        finally:
            engine.dispose()


@dataclass
class Clinic:
    type_id: int
    times: str  # the times page for the in-person visit at the main location


@pytest.fixture()
def clinic_with_patients(racing_app):
    """A clinic with a morning of open times and PATIENTS verified patients, each in their own browser.

    The test's own sessions only ever live for one step: on SQLite an open
    transaction (even a read, or a lazy load) holds the write lock the requests need."""
    app = racing_app

    @contextmanager
    def in_app():
        with app.test_request_context():
            yield

    with fresh_session(app) as session:
        setup = make_clinic(session)
        add_slots(session, setup, future_day(3), start=time(9), end=time(12))
        session.commit()
        clinic = Clinic(setup.in_person.id, times_path(setup))
        invited = []
        for number in range(PATIENTS):
            person = invite_patient(session, in_app, setup, given=f"Patient{number}",
                                    phone=f"+1312555{number:04d}", email=f"p{number}@example.org")
            invited.append((person.path, person.patient.id, person.patient.birth_date))

    browsers = []
    for path, patient_id, birth in invited:
        browser = PatientBrowser(app.test_client())
        browser.get(path)
        browser.post("/welcome/code", {"channel": "sms"})
        browser.post("/welcome/verify", {"birth_month": str(birth.month), "birth_day": str(birth.day),
                                         "birth_year": str(birth.year), "code": code_sent_to(app, patient_id)})
        assert browser.status == 200, browser.page
        browser.get(clinic.times)
        browsers.append(browser)
    contested = browsers[0].slot_ids()[0]
    assert all(b.slot_ids()[0] == contested for b in browsers), "everyone is offered the same first time"
    return app, clinic, browsers, contested


def code_sent_to(app, patient_id: int) -> str:
    with fresh_session(app) as session:
        body = session.scalar(select(OutboxMessage.body_text).where(
            OutboxMessage.patient_id == patient_id, OutboxMessage.template == "code")
            .order_by(OutboxMessage.id.desc()).limit(1))
    return re.search(r"\b(\d{6})\b", body).group(1)


@contextmanager
def fresh_session(app):
    """A session of the test's own, outside any request."""
    session = app.extensions["portal_db"]["factory"]()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def race(browsers: list[PatientBrowser], path: str, data: dict) -> list:
    """Every browser posts at the same moment; returns each response (or the exception it raised)."""
    barrier = threading.Barrier(len(browsers))
    results: list = [None] * len(browsers)

    def run(index: int) -> None:
        browser = browsers[index]
        form = {"csrf_token": CSRF.search(browser.page).group(1), **data}
        barrier.wait()
        try:
            results[index] = browser.client.post(path, data=form)
        except BaseException as error:  # noqa: BLE001 - reported below
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(browsers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results


def appointments_on(app, slot_id: int) -> list[tuple[int, str]]:
    with fresh_session(app) as session:
        return [(a.enrolment_id, a.status) for a in session.scalars(
            select(Appointment).where(Appointment.slot_id == slot_id))]


def slot_state(app, slot_id: int) -> tuple[int, int | None, int]:
    """(booked seats, holding enrolment, appointments in the whole database)"""
    with fresh_session(app) as session:
        slot = session.get(Slot, slot_id)
        return (slot.booked_count, slot.held_by_enrolment_id,
                session.scalar(select(func.count()).select_from(Appointment)))


@pytest.mark.parametrize("action, winner_goes_to", [("/visit/book", "/visit/booked"), ("/visit/hold", "/visit/review")])
def test_twenty_patients_race_for_one_time(clinic_with_patients, action, winner_goes_to):
    app, clinic, browsers, contested = clinic_with_patients
    responses = race(browsers, action, {"slot": contested, "appointment_type": clinic.type_id})

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [303] + [409] * (PATIENTS - 1), statuses
    winner = next(i for i, r in enumerate(responses) if r.status_code == 303)
    assert responses[winner].headers["Location"].startswith(winner_goes_to)
    for response in responses:
        if response.status_code == 409:
            page = response.get_data(as_text=True)
            assert TAKEN in page
            offered = [int(v) for v in re.findall(r'name="slot" value="(\d+)"', page)]
            assert offered and contested not in offered, "the loser is shown other open times"

    seats, holder, appointments = slot_state(app, contested)
    if action == "/visit/book":
        assert seats == 1 and appointments == 1
        [(_enrolment, status)] = appointments_on(app, contested)
        assert status == AppointmentStatus.BOOKED
        assert browsers[winner].client.get("/visit/booked").status_code == 200
    else:
        assert appointments == 0 and holder is not None and seats == 0

    # The losers can go on and book the next time they were shown.
    loser = next(i for i, r in enumerate(responses) if r.status_code == 409)
    browsers[loser].page = responses[loser].get_data(as_text=True)
    other = browsers[loser].slot_ids()[0]
    browsers[loser].post("/visit/hold", {"slot": other, "appointment_type": clinic.type_id})
    browsers[loser].post("/visit/book", {"slot": other, "appointment_type": clinic.type_id})
    assert browsers[loser].status == 200 and "booked" in browsers[loser].page


def test_one_patient_submitting_twice_at_once_books_once(clinic_with_patients):
    """A double tap, or the same form sent from two tabs: one booking, and both tabs land on it."""
    app, clinic, browsers, contested = clinic_with_patients
    patient = browsers[0]
    cookie = patient.client.get_cookie("portal_session").value
    tabs = []
    for _ in range(8):
        tab = PatientBrowser(app.test_client())
        tab.client.set_cookie("portal_session", cookie)
        tab.page = patient.page
        tabs.append(tab)
    responses = race(tabs, "/visit/book", {"slot": contested, "appointment_type": clinic.type_id})
    assert [r.status_code for r in responses] == [303] * len(tabs), [r.status_code for r in responses]
    assert all(r.headers["Location"] == "/visit/booked" for r in responses)
    [(_enrolment, status)] = appointments_on(app, contested)
    assert status == AppointmentStatus.BOOKED
    assert slot_state(app, contested) == (1, None, 1)


def test_a_staff_booking_and_a_patient_booking_race_for_one_time(clinic_with_patients):
    """A coordinator books a time for one patient on the phone while another patient taps it."""
    from portal.models import Enrolment, Patient
    from tests.staff_helpers import make_staff, sign_in

    app, clinic, browsers, contested = clinic_with_patients

    @contextmanager
    def in_app():
        with app.test_request_context():
            yield

    with fresh_session(app) as session:
        account = make_staff(session, in_app, "coordinator")
        caller = session.scalar(select(Enrolment.id).join(Patient).where(Patient.given_name == "Patient19"))
    staff = sign_in(app.test_client(), account)
    staff.get(f"/staff/enrolments/{caller}")
    patient = browsers[0]

    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def post(name: str, browser: PatientBrowser, path: str) -> None:
        form = {"csrf_token": CSRF.search(browser.page).group(1), "slot": contested,
                "appointment_type": clinic.type_id}
        barrier.wait()
        try:
            results[name] = browser.client.post(path, data=form)
        except BaseException as error:  # noqa: BLE001 - reported below
            results[name] = error

    threads = [threading.Thread(target=post, args=("patient", patient, "/visit/book")),
               threading.Thread(target=post, args=("staff", staff, f"/staff/enrolments/{caller}/book"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not [r for r in results.values() if isinstance(r, BaseException)], results
    assert all(r.status_code in (303, 409) for r in results.values()), {k: r.status_code for k, r in results.items()}
    [(_enrolment, status)] = appointments_on(app, contested)  # exactly one booking
    assert status == AppointmentStatus.BOOKED
    assert slot_state(app, contested)[0] == 1


def test_a_patient_page_opens_while_another_request_is_writing(clinic_with_patients):
    """Patient pages only read: on SQLite they do not queue behind a write in progress
    (a staff member saving a template, a booking being committed)."""
    app, clinic, browsers, _contested = clinic_with_patients
    engine = app.extensions["portal_db"]["engine"]
    with engine.connect() as writer:
        writer.begin()  # BEGIN IMMEDIATE on SQLite: holds the write lock until rolled back
        writer.execute(text("UPDATE clinic SET phone = phone"))
        browsers[0].get(clinic.times)
        browsers[1].get("/visit")
        writer.rollback()
    assert browsers[0].status == 200 and browsers[0].slot_ids(), browsers[0].page
    assert browsers[1].status == 200


def test_the_idle_clock_touch_gives_way_to_a_concurrent_write(clinic_with_patients):
    """A page due to move the session's idle clock reads first; if another request
    commits a write in between (SQLite then refuses the late write at once), the
    patient still gets the page, and the next page moves the clock."""
    from portal.models import WebSession

    app, clinic, browsers, _contested = clinic_with_patients
    engine = app.extensions["portal_db"]["engine"]
    with fresh_session(app) as session:
        for row in session.scalars(select(WebSession)):
            row.last_seen_at -= timedelta(minutes=5)  # every patient is due for a touch
        session.commit()
        before = {row.key_hash: row.last_seen_at for row in session.scalars(select(WebSession))}
    interleaved = []

    def write_after_the_session_is_read(_conn, _cursor, statement, *_args):
        if "FROM web_session" in statement and not interleaved:
            interleaved.append(statement)
            with engine.begin() as other:  # a staff member's edit, committed in between
                other.execute(text("UPDATE clinic SET email = 'front-desk@example.org'"))

    event.listen(engine, "after_cursor_execute", write_after_the_session_is_read)
    try:
        browsers[0].get(clinic.times)
    finally:
        event.remove(engine, "after_cursor_execute", write_after_the_session_is_read)
    assert interleaved
    assert browsers[0].status == 200 and browsers[0].slot_ids(), browsers[0].page

    browsers[0].get("/visit")
    assert browsers[0].status == 200
    with fresh_session(app) as session:
        moved = [row for row in session.scalars(select(WebSession))
                 if row.last_seen_at > before.get(row.key_hash, row.last_seen_at)]
    assert len(moved) == 1, "the next page moved the patient's idle clock"


def test_two_patients_booking_neighbouring_times_a_buffer_apart_get_one(clinic_with_patients):
    """With 15 minutes kept free after each visit, 9:00 and 9:30 with the same provider can't
    both be booked: two patients tapping them at the same moment get exactly one."""
    from portal.models import AppointmentType

    app, clinic, browsers, contested = clinic_with_patients
    with fresh_session(app) as session:
        session.get(AppointmentType, clinic.type_id).buffer_after_minutes = 15
        session.commit()
    first, second = browsers[0], browsers[1]
    nine, half_past = first.slot_ids()[:2]

    barrier = threading.Barrier(2)
    results: dict[int, object] = {}

    def book(slot_id: int, browser: PatientBrowser) -> None:
        form = {"csrf_token": CSRF.search(browser.page).group(1), "slot": slot_id, "appointment_type": clinic.type_id}
        barrier.wait()
        try:
            results[slot_id] = browser.client.post("/visit/book", data=form)
        except BaseException as error:  # noqa: BLE001 - reported below
            results[slot_id] = error

    threads = [threading.Thread(target=book, args=(nine, first)), threading.Thread(target=book, args=(half_past, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not [r for r in results.values() if isinstance(r, BaseException)], results
    assert sorted(r.status_code for r in results.values()) == [303, 409], {k: r.status_code for k, r in results.items()}
    assert len(appointments_on(app, nine)) + len(appointments_on(app, half_past)) == 1
    loser = next(r for r in results.values() if r.status_code == 409)
    assert TAKEN in loser.get_data(as_text=True)
