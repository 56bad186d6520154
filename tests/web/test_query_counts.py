"""SQL statements per patient page: a fixed, small number, whatever the page shows.

Every statement the app sends is counted with SQLAlchemy's `before_cursor_execute`
event on the engine (the tests' SAVEPOINT plumbing is left out). Two things fail:
- an N+1 pattern: a page that needs more statements when it shows more slots,
  locations, days, providers or help requests (each page is requested in a small and
  a large state and the counts must be equal);
- a page above its ceiling (a query added without noticing).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import time

import pytest
from sqlalchemy import event

from portal.models import HelpRequest, Location
from tests.factories import add_provider, add_slots, future_day, invite_patient, latest_code, make_clinic
from tests.helpers import PatientBrowser

# What each page needed when this test was last tightened, plus three: a page that needs
# more has grown a query someone should look at. One joined statement loads the patient
# session with its link, enrolment, campaign, clinic and patient on every page; a booked
# visit and its follow-up come with their slot, type, location and provider in one more, and
# home loads only what it shows. Measured: landing 5, welcome 2, verify 1, home 4-5, choose 3,
# times 4-5 (one is whether the clinic uses buffers), review 6, booked 2, form 3, help 2
# (before the joined loads: 5, 7, 5, 15, 7, 8, 10, 12, 8, 5).
CEILING = {
    "landing": 8, "welcome": 5, "verify": 4, "home": 8, "choose": 6, "times": 7, "review": 9,
    "booked": 5, "form": 6, "help": 5,
}
PLUMBING = re.compile(r"^\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b", re.IGNORECASE)


class Statements:
    def __init__(self) -> None:
        self.sql: list[str] = []

    def __len__(self) -> int:
        return len(self.sql)

    def __str__(self) -> str:
        return "\n".join(f"  {n + 1}. {' '.join(s.split())[:160]}" for n, s in enumerate(self.sql))


@pytest.fixture()
def count_statements(app):
    engine = app.extensions["portal_db"]["engine"]

    @contextmanager
    def counting():
        seen = Statements()

        def record(_conn, _cursor, statement, _parameters, _context, _executemany):
            if not PLUMBING.match(statement):
                seen.sql.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            yield seen
        finally:
            event.remove(engine, "before_cursor_execute", record)
    return counting


@pytest.fixture()
def journey(app, db, in_app):
    """A clinic with two locations and two providers, and a patient who opened the
    link in a fresh browser (not verified yet)."""
    setup = make_clinic(db)
    second = add_provider(db, setup)
    invited = invite_patient(db, in_app, setup)
    browser = PatientBrowser(app.test_client())
    return setup, second, invited, browser


def fetch(browser, counting, path: str, status: int = 200):
    """GET one page without following redirects and return its statements."""
    with counting() as seen:
        response = browser.client.get(path)
    assert response.status_code == status, (path, response.status_code)
    browser.page = response.get_data(as_text=True)
    return seen


def within_ceiling(name: str, seen: Statements) -> None:
    assert len(seen) <= CEILING[name], f"{name}: {len(seen)} statements, ceiling {CEILING[name]}:\n{seen}"


def same_count(name: str, small: Statements, large: Statements, what: str) -> None:
    assert len(small) == len(large), (
        f"{name} needs more statements as it shows more {what} (an N+1 pattern?): {len(small)} -> {len(large)}\n"
        f"small:\n{small}\nlarge:\n{large}")


def times_path(appointment_type, location=None, after: int | None = None) -> str:
    path = f"/visit/times?type={appointment_type.id}"
    if location is not None:
        path += f"&location={location.id}"
    return path + (f"&after={after}" if after else "")


def test_every_patient_page_has_a_fixed_small_number_of_statements(app, db, journey, count_statements):
    setup, second_provider, invited, browser = journey
    counting = count_statements

    # Landing and identity check.
    landing = fetch(browser, counting, invited.path, status=303)
    within_ceiling("landing", landing)
    within_ceiling("welcome", fetch(browser, counting, "/welcome"))
    browser.post("/welcome/code", {"channel": "sms"})
    within_ceiling("verify", fetch(browser, counting, "/welcome/verify"))
    birth = invited.patient.birth_date
    browser.post("/welcome/verify", {"birth_month": str(birth.month), "birth_day": str(birth.day),
                                     "birth_year": str(birth.year), "code": latest_code(db, invited.patient)})
    assert browser.status == 200

    # Home, before and after three help requests.
    home_before = fetch(browser, counting, "/visit")
    help_before = fetch(browser, counting, "/visit/help")
    for kind in ("cost", "ride", "interpreter"):
        db.add(HelpRequest(enrolment_id=invited.enrolment.id, kind=kind, details={"question": "x"}))
    db.commit()
    home_after = fetch(browser, counting, "/visit")
    help_after = fetch(browser, counting, "/visit/help")
    assert browser.page.count("<li") >= 3
    same_count("home", home_before, home_after, "help requests")
    same_count("help", help_before, help_after, "help requests")
    within_ceiling("home", home_after)
    within_ceiling("help", help_after)

    # Choose: two locations, then five.
    choose_two = fetch(browser, counting, "/visit/choose")
    for name in ("East", "West", "South"):
        db.add(Location(clinic_id=setup.clinic.id, name=name, address="1 Main St", time_zone="America/Chicago",
                        transit_notes={}, parking_notes={}))
    db.commit()
    choose_five = fetch(browser, counting, "/visit/choose")
    assert "South" in browser.page
    same_count("choose", choose_two, choose_five, "locations")
    within_ceiling("choose", choose_five)

    # Times: two slots on one day, then three pages of slots over several days and two
    # providers; the video search spans both locations.
    day = future_day(3)
    add_slots(db, setup, day, start=time(9), end=time(10))
    add_slots(db, setup, day, modality="telehealth", start=time(13), end=time(13, 30))
    add_slots(db, setup, day, modality="telehealth", start=time(13), end=time(13, 30), location=setup.other_location)
    db.commit()
    times_few = fetch(browser, counting, times_path(setup.in_person, setup.location))
    assert len(browser.slot_ids()) == 2
    video_few = fetch(browser, counting, times_path(setup.video))
    assert len(browser.slot_ids()) == 2
    for offset in (4, 5, 6):
        add_slots(db, setup, future_day(offset), start=time(8), end=time(12))
        add_slots_for(db, setup, second_provider, future_day(offset))
        add_slots(db, setup, future_day(offset), modality="telehealth", start=time(13), end=time(16))
        add_slots(db, setup, future_day(offset), modality="telehealth", start=time(13), end=time(16),
                  location=setup.other_location)
    db.commit()
    per_page = app.config["SLOTS_PER_PAGE"]
    times_full = fetch(browser, counting, times_path(setup.in_person, setup.location))
    first_page = browser.slot_ids()
    assert len(first_page) == per_page
    times_second = fetch(browser, counting, times_path(setup.in_person, setup.location, after=first_page[-1]))
    times_third = fetch(browser, counting, times_path(setup.in_person, setup.location,
                                                     after=browser.slot_ids()[-1]))
    assert len(browser.slot_ids()) == per_page, "the fixture should have at least three full pages"
    video_full = fetch(browser, counting, times_path(setup.video))
    assert len(browser.slot_ids()) == per_page
    # Paging adds exactly the keyset subquery inside the same statement: no extra statement.
    for name, large in (("first page", times_full), ("second page", times_second), ("third page", times_third)):
        same_count(f"times ({name})", times_few, large, "slots, days and providers")
    same_count("times (video)", video_few, video_full, "slots at more locations")
    within_ceiling("times", times_third)
    within_ceiling("times", video_full)

    # Review a held time, then book it.
    slot_id = first_page[0]
    browser.page = browser.client.get(times_path(setup.in_person, setup.location)).get_data(as_text=True)
    browser.post("/visit/hold", {"slot": slot_id, "appointment_type": setup.in_person.id}, follow=False)
    review = fetch(browser, counting, f"/visit/review?type={setup.in_person.id}&slot={slot_id}")
    within_ceiling("review", review)
    browser.post("/visit/book", {"slot": slot_id, "appointment_type": setup.in_person.id}, follow=False)
    within_ceiling("booked", fetch(browser, counting, "/visit/booked"))
    within_ceiling("form", fetch(browser, counting, "/visit/form"))
    within_ceiling("home", fetch(browser, counting, "/visit"))


def add_slots_for(db, setup, provider, day):
    """Slots for a second provider at the main location (8:15, so no clash with the first)."""
    from portal.services.availability import add_slots_for_day

    return add_slots_for_day(db, location=setup.location, provider_id=provider.id, modality="in_person",
                             day=day, start=time(8, 15), end=time(11, 45), minutes=30)
