"""Clinic setup in the console: locations, providers and appointment types are
created, edited and retired by schedulers; retiring never loses a booking; bad
input is refused with a 400 and writes nothing; other roles are turned away."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from portal.models import (Appointment, AppointmentStatus, AppointmentType, AuditEntry, Location, Provider, Slot)
from portal.services.booking import book_slot
from tests.factories import add_slots, future_day, invite_patient, latest_code
from tests.helpers import PatientBrowser
from tests.staff_helpers import make_staff, sign_in

LOCATION = {"name": "South Side Clinic", "address": "5000 S Halsted St", "time_zone": "America/Chicago",
            "phone": "+1 312 555 0199", "transit_notes_en": "Bus 8 to 50th St", "transit_notes_es": "Autobús 8",
            "parking_notes_en": "Free lot behind the building", "parking_notes_es": ""}
TYPE = {"code": "diabetes-check", "name_en": "Diabetes check-up", "name_es": "Control de diabetes",
        "modality": "in_person", "join_url_pattern": "", "duration_minutes": "40", "care_gaps": ["diabetes_a1c"],
        "form_code": "previsit", "buffer_before_minutes": "5", "buffer_after_minutes": "10",
        "min_notice_hours": "24", "max_days_ahead": "60", "what_to_bring_en": "Your glucose meter",
        "what_to_bring_es": "Su glucómetro"}


def count(db, model) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model))


def test_a_scheduler_creates_and_edits_locations_providers_and_types(db, scheduler, clinic):
    browser = scheduler
    browser.get("/staff/")
    assert 'href="/staff/setup"' in browser.page and 'href="/staff/availability"' in browser.page

    browser.get("/staff/setup/locations/new")
    assert browser.status == 200 and '<label for="time_zone">' in browser.page
    browser.post("/staff/setup/locations/new", LOCATION)
    assert browser.status == 200 and "Location added" in browser.page and "South Side Clinic" in browser.page
    location = db.scalar(select(Location).where(Location.name == "South Side Clinic"))
    assert location.clinic_id == clinic.clinic.id and location.time_zone == "America/Chicago"
    assert location.transit_notes == {"en": "Bus 8 to 50th St", "es": "Autobús 8"}
    assert location.parking_notes == {"en": "Free lot behind the building"} and not location.retired

    browser.get(f"/staff/setup/locations/{location.id}")
    assert "5000 S Halsted St" in browser.page
    browser.post(f"/staff/setup/locations/{location.id}",
                 {**LOCATION, "name": "South Side", "time_zone": "America/New_York"})
    assert "Location saved" in browser.page
    db.expire_all()
    assert (location.name, location.time_zone) == ("South Side", "America/New_York")

    browser.get("/staff/setup/providers/new")
    browser.post("/staff/setup/providers/new", {"display_name": "Dr. Ana Patel"})
    assert "Provider added" in browser.page and "Dr. Ana Patel" in browser.page
    provider = db.scalar(select(Provider).where(Provider.display_name == "Dr. Ana Patel"))
    browser.get(f"/staff/setup/providers/{provider.id}")
    browser.post(f"/staff/setup/providers/{provider.id}", {"display_name": "Dr. Ana Patel, MD"})
    db.expire_all()
    assert provider.display_name == "Dr. Ana Patel, MD"

    browser.get("/staff/setup/appointment-types/new")
    assert browser.status == 200 and 'value="annual_wellness"' in browser.page
    browser.post("/staff/setup/appointment-types/new", TYPE)
    assert "Appointment type added" in browser.page and "Diabetes check-up" in browser.page
    kind = db.scalar(select(AppointmentType).where(AppointmentType.code == "diabetes-check"))
    assert kind.name == {"en": "Diabetes check-up", "es": "Control de diabetes"}
    assert (kind.duration_minutes, kind.buffer_before_minutes, kind.buffer_after_minutes) == (40, 5, 10)
    assert (kind.min_notice_hours, kind.max_days_ahead, kind.gap_codes) == (24, 60, {"diabetes_a1c"})

    browser.get(f"/staff/setup/appointment-types/{kind.id}")
    assert "Diabetes check-up" in browser.page and re.search(r'checked[^>]*value="diabetes_a1c"', browser.page)
    browser.post(f"/staff/setup/appointment-types/{kind.id}", {
        **TYPE, "code": "ignored", "modality": "telehealth", "join_url_pattern": "https://video.example.org/{code}",
        "care_gaps": ["diabetes_a1c", "refill_gap"], "duration_minutes": "20"})
    assert "Appointment type saved" in browser.page
    db.expire_all()
    assert kind.code == "diabetes-check"  # fixed once made
    assert (kind.modality, kind.duration_minutes) == ("telehealth", 20)
    assert kind.join_url_pattern == "https://video.example.org/{code}"
    assert kind.gap_codes == {"diabetes_a1c", "refill_gap"}


def test_retiring_keeps_booked_visits_booked_and_readable(db, app, client, in_app, clinic, scheduler):
    setup = clinic
    slots = add_slots(db, setup, future_day(3))
    invited = invite_patient(db, in_app, setup)
    with in_app():
        appointment = book_slot(db, invited.enrolment, setup.in_person, slots[0].id)
    db.commit()
    patient = PatientBrowser(app.test_client())
    patient.verify(db, invited, latest_code)
    patient.get("/visit/booked")
    assert patient.status == 200 and "Annual wellness visit" in patient.page and "Main" in patient.page

    browser = scheduler
    browser.get(f"/staff/setup/appointment-types/{setup.in_person.id}/retire")
    assert browser.status == 200 and "Maria Garcia" in browser.page  # who is still booked, before retiring
    browser.post(f"/staff/setup/appointment-types/{setup.in_person.id}/retire")
    assert "Retired. 1 future visit is still booked" in browser.page
    browser.get(f"/staff/setup/locations/{setup.location.id}/retire")
    assert "Maria Garcia" in browser.page
    browser.post(f"/staff/setup/locations/{setup.location.id}/retire")
    browser.get(f"/staff/setup/providers/{setup.provider.id}/retire")
    browser.post(f"/staff/setup/providers/{setup.provider.id}/retire")
    assert browser.status == 200 and "still booked" in browser.page

    db.expire_all()
    assert setup.in_person.retired and setup.location.retired and setup.provider.retired
    assert db.get(Appointment, appointment.id).status == AppointmentStatus.BOOKED
    open_left = db.scalar(select(func.count()).select_from(Slot).where(
        Slot.location_id == setup.location.id, Slot.blocked.is_(False), Slot.booked_count == 0))
    assert open_left == 0  # the other times there stopped selling
    assert db.get(Slot, slots[0].id) is not None

    patient.get("/visit/booked")  # the patient still reads their visit in full
    assert patient.status == 200 and "Annual wellness visit" in patient.page and "Main" in patient.page
    patient.get("/visit/choose")  # but is no longer offered the retired type or place
    assert not re.search(rf"type={setup.in_person.id}\b", patient.page)
    assert not re.search(rf"location={setup.location.id}\b", patient.page)
    browser.get(f"/staff/enrolments/{invited.enrolment.id}")
    assert browser.status == 200 and "Annual wellness visit" in browser.page

    browser.get("/staff/setup/locations")
    assert "retired" in browser.page
    browser.get(f"/staff/setup/locations/{setup.location.id}")
    browser.post(f"/staff/setup/locations/{setup.location.id}/restore")
    db.expire_all()
    assert not setup.location.retired
    listed = db.scalar(select(func.count()).select_from(AuditEntry).where(
        AuditEntry.record_type == "appointment", AuditEntry.record_id == appointment.id))
    assert listed >= 3  # each page that named the patient was audited


HUGE = "x" * 10_000
SCRIPT = "<script>alert(1)</script>"


def refused(browser, path: str, data: dict) -> str:
    browser.get(path)
    response = browser.post(path, data)
    assert response.status_code == 400, (path, {k: str(v)[:30] for k, v in data.items()})
    assert "Please check the following" in browser.page
    return browser.page


def test_bad_input_is_refused_and_nothing_is_saved(db, scheduler, clinic):
    browser = scheduler
    before = (count(db, Location), count(db, Provider), count(db, AppointmentType))
    location_cases = [
        {"name": ""}, {"name": "   "}, {"name": HUGE}, {"name": SCRIPT}, {"address": ""}, {"address": HUGE},
        {"time_zone": ""}, {"time_zone": "Mars/Olympus_Mons"}, {"time_zone": "../../etc/passwd"},
        {"time_zone": "localtime"}, {"time_zone": HUGE}, {"phone": "call me"}, {"transit_notes_en": HUGE},
        {"parking_notes_es": SCRIPT}, {"name": "Clinic\x00"},
    ]
    for change in location_cases:
        page = refused(browser, "/staff/setup/locations/new", {**LOCATION, **change})
        if change.get("time_zone") == "Mars/Olympus_Mons":
            assert "America/Chicago" in page and "IANA" in page
        assert "<script>alert" not in page

    for change in ({"display_name": ""}, {"display_name": HUGE}, {"display_name": SCRIPT}):
        refused(browser, "/staff/setup/providers/new", change)

    type_cases = [
        {"code": ""}, {"code": "Has Spaces"}, {"code": HUGE}, {"code": SCRIPT}, {"name_en": ""}, {"name_es": HUGE},
        {"name_en": SCRIPT}, {"modality": "teleport"}, {"duration_minutes": "abc"}, {"duration_minutes": ""},
        {"duration_minutes": "0"}, {"duration_minutes": "1e3"}, {"duration_minutes": "9" * 400},
        {"care_gaps": []}, {"care_gaps": ["not_a_gap"]}, {"form_code": "other"}, {"buffer_before_minutes": "-5"},
        {"min_notice_hours": "2.5"}, {"max_days_ahead": "9999"}, {"min_notice_hours": "48", "max_days_ahead": "1"},
        {"modality": "telehealth", "join_url_pattern": ""},
        {"modality": "telehealth", "join_url_pattern": "http://video.example.org/{code}"},
        {"modality": "telehealth", "join_url_pattern": "https://video.example.org/room"},
        {"what_to_bring_en": HUGE}, {"what_to_bring_es": SCRIPT},
    ]
    for change in type_cases:
        refused(browser, "/staff/setup/appointment-types/new", {**TYPE, **change})
    # a code already taken is refused too, next to the field
    page = refused(browser, "/staff/setup/appointment-types/new", {**TYPE, "code": clinic.in_person.code})
    assert "already uses this code" in page
    assert (count(db, Location), count(db, Provider), count(db, AppointmentType)) == before

    # edits are refused the same way and leave the row as it was
    location = clinic.location
    refused(browser, f"/staff/setup/locations/{location.id}", {**LOCATION, "time_zone": "Nowhere/Special"})
    refused(browser, f"/staff/setup/providers/{clinic.provider.id}", {"display_name": HUGE})
    refused(browser, f"/staff/setup/appointment-types/{clinic.video.id}", {**TYPE, "duration_minutes": "many"})
    db.expire_all()
    assert (location.name, location.time_zone) == ("Main", "America/Chicago")
    assert clinic.provider.display_name == "Dr. Test" and clinic.video.duration_minutes == 20

    # unknown records are a 404, not a 500
    assert browser.get("/staff/setup/locations/999999").status_code == 404
    assert browser.get("/staff/setup/appointment-types/999999/retire").status_code == 404


def test_a_location_with_future_slots_keeps_its_time_zone(db, scheduler, clinic):
    add_slots(db, clinic, future_day(2))
    db.commit()
    page = refused(scheduler, f"/staff/setup/locations/{clinic.location.id}",
                   {**LOCATION, "time_zone": "America/Denver"})
    assert "time zone can" in page
    db.expire_all()
    assert clinic.location.time_zone == "America/Chicago"


# -- who may use these pages ----------------------------------------------------------------------

MINE = re.compile(r"^staff\.(setup|locations|providers|appointment_types|(new|edit|retire|restore)_(location|provider|"
                  r"appointment_type)|availability|availability_template|(new|edit|deactivate|activate)_template|"
                  r"generate_slots|monthly_templates|blocks|block_time|block_days|remove_block|copy_week)$")


def scheduling_endpoints(app) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every method of every clinic-setup and availability endpoint."""
    found = []
    for rule in app.url_map.iter_rules():
        if MINE.match(rule.endpoint):
            url = re.sub(r"<int:[a-z_]+>", "1", rule.rule)
            found += [(rule.endpoint, method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


def test_the_endpoint_list_covers_both_modules(app):
    endpoints = {endpoint for endpoint, _method, _url in scheduling_endpoints(app)}
    assert len(endpoints) == 29
    views = app.view_functions
    assert all(views[e].__module__ in ("portal.web.staff.setup", "portal.web.staff.availability") for e in endpoints)
    assert all(views[e].allowed_roles == ("scheduler",) for e in endpoints)


@pytest.mark.parametrize("role", ["coordinator", "campaign_manager"])
def test_other_roles_are_refused_everywhere(db, app, client, in_app, clinic, role):
    browser = sign_in(client, make_staff(db, in_app, role))
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.page).group(1)
    before = (count(db, Location), count(db, Provider), count(db, AppointmentType))
    for endpoint, method, url in scheduling_endpoints(app):
        data = {"csrf_token": token, **LOCATION, **TYPE, "display_name": "Dr. Sneaky"}
        response = client.get(url) if method == "GET" else client.post(url, data=data)
        assert response.status_code == 403, (role, endpoint, method, response.status_code)
    assert (count(db, Location), count(db, Provider), count(db, AppointmentType)) == before
    browser.get("/staff/")
    assert 'href="/staff/setup"' not in browser.page and 'href="/staff/availability"' not in browser.page
