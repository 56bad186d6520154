"""A patient session reaches only its own enrolment: changing ids in URLs and forms,
or adding fields, never reads or changes another patient's booking, form or help
request, and never takes a time that isn't theirs to take."""
from __future__ import annotations

import html
from datetime import time, timedelta

import pytest
from sqlalchemy import select

from portal.models import (Appointment, AppointmentStatus, AppointmentType, AppointmentTypeGap, Enrolment,
                           EnrolmentStatus, Event, FormResponse, HelpRequest, Modality, Patient, Slot, utcnow)
from portal.services.availability import add_slots_for_day
from tests.factories import add_slots, future_day, make_clinic
from tests.patients import book, row_counts, times_path, verified_patient

B_MEDICINES = "Metformin 500 mg twice daily"
B_QUESTION = "Will my plan cover the blood test"


@pytest.fixture()
def clinic(db):
    setup = make_clinic(db)
    add_slots(db, setup, future_day(3))
    add_slots(db, setup, future_day(3), modality=Modality.TELEHEALTH, start=time(13), end=time(15))
    return setup


@pytest.fixture()
def a(app, db, in_app, clinic):
    return verified_patient(app, db, in_app, clinic)


@pytest.fixture()
def b(app, db, in_app, clinic):
    """Another patient of the same campaign, with a booking, a form and a help request."""
    patient = verified_patient(app, db, in_app, clinic, given="Beatriz", family="Nguyen",
                               phone="+13125550177", email="beatriz@example.org")
    book(patient, clinic)
    browser = patient.browser
    browser.get("/visit/form")
    browser.post("/visit/form", {"reason": "Knee pain", "medications": B_MEDICINES, "save": "1"})
    browser.get("/visit/help")
    browser.post("/visit/help/cost", {"cost-question": B_QUESTION})
    assert browser.status == 200
    return patient


def live(db, patient) -> Appointment | None:
    db.expire_all()
    return db.scalar(select(Appointment).where(Appointment.enrolment_id == patient.enrolment.id,
                                               Appointment.status == AppointmentStatus.BOOKED))


def slot_row(db, slot_id: int) -> Slot:
    db.expire_all()
    return db.get(Slot, slot_id)


def b_state(db, b) -> dict:
    db.expire_all()
    enrolment = db.get(Enrolment, b.enrolment.id)
    return {
        "enrolment": (enrolment.status, enrolment.dob_failures, enrolment.remind_after, enrolment.closed_reason),
        "language": db.get(Patient, b.invited.patient.id).preferred_language,
        "appointments": [(x.id, x.status, x.slot_id) for x in db.scalars(
            select(Appointment).where(Appointment.enrolment_id == b.enrolment.id))],
        "forms": [(f.id, f.answers, f.completed_at) for f in db.scalars(
            select(FormResponse).where(FormResponse.enrolment_id == b.enrolment.id))],
        "help": [(h.id, h.kind, h.details, h.status) for h in db.scalars(
            select(HelpRequest).where(HelpRequest.enrolment_id == b.enrolment.id))],
        "events": len(db.scalars(select(Event.id).where(Event.enrolment_id == b.enrolment.id)).all()),
    }


def refused(response) -> None:
    """Not a 500, and not a step forward into holding or booking."""
    assert response.status_code < 500
    assert not response.headers.get("Location", "").startswith(("/visit/review", "/visit/booked"))


def test_pages_show_only_the_patients_own_records(db, a, b):
    b_appointment = live(db, b)
    ids = {"enrolment_id": b.enrolment.id, "enrolment": b.enrolment.id, "patient_id": b.invited.patient.id,
           "appointment_id": b_appointment.id, "appointment": b_appointment.id, "id": b_appointment.id}
    query = "&".join(f"{name}={value}" for name, value in ids.items())
    client = a.browser.client
    for path in ("/visit", "/visit/booked", "/visit/appointment.ics", "/visit/form", "/visit/help",
                 "/visit/cancel", "/visit/other"):
        for url in (path, f"{path}?{query}"):
            response = client.get(url, follow_redirects=True)
            page = html.unescape(response.get_data(as_text=True))
            assert response.status_code == 200, url
            for secret in ("Beatriz", "Nguyen", B_MEDICINES, B_QUESTION, "0177", "beatriz@"):
                assert secret not in page, (url, secret)
    assert live(db, a) is None


def test_extra_ids_in_forms_are_ignored(db, clinic, a, b):
    book(a, clinic)
    before = b_state(db, b)
    b_appointment = live(db, b)
    extra = {"enrolment_id": b.enrolment.id, "patient_id": b.invited.patient.id,
             "appointment_id": b_appointment.id, "form_id": before["forms"][0][0],
             "help_request_id": before["help"][0][0], "id": b_appointment.id}
    browser = a.browser

    browser.get("/visit/form")
    browser.post("/visit/form", {"reason": "Check-up", "medications": "None", "save": "1", **extra})
    browser.get("/visit/help")
    browser.post("/visit/help/interpreter", {"interpreter-language": "Vietnamese", **extra})
    browser.get("/visit/other")
    browser.post("/visit/survey", {"survey-reason": "cost", **extra})
    browser.post("/language", {"lang": "es", "next": "/visit", **extra})
    browser.get("/visit/cancel")
    browser.post("/visit/cancel", {"reason": "time", **extra})
    browser.get("/visit/other")
    browser.post("/visit/other", {"choice": "remind_later", "weeks": "2", **extra})
    assert browser.status == 200

    assert b_state(db, b) == before
    assert live(db, b).id == b_appointment.id
    db.expire_all()
    mine = db.get(Enrolment, a.enrolment.id)
    assert mine.status == EnrolmentStatus.SNOOZED
    assert db.scalar(select(FormResponse).where(FormResponse.enrolment_id == a.enrolment.id)).answers[
        "medications"] == "None"
    assert db.scalar(select(HelpRequest).where(HelpRequest.enrolment_id == a.enrolment.id)).details == {
        "language": "Vietnamese"}
    assert db.get(Patient, a.invited.patient.id).preferred_language == "es"
    assert live(db, a) is None


def test_cannot_hold_or_book_a_time_another_patient_is_holding(db, clinic, a, b):
    b.browser.get(times_path(clinic))
    held = b.browser.slot_ids()[0]
    b.browser.post("/visit/hold", {"slot": held, "appointment_type": clinic.in_person.id})
    assert slot_row(db, held).held_by_enrolment_id == b.enrolment.id

    for action in ("/visit/hold", "/visit/book"):
        a.browser.get(times_path(clinic))
        response = a.browser.post(action, {"slot": held, "appointment_type": clinic.in_person.id}, follow=False)
        assert response.status_code == 409
        assert "someone just took that time" in a.browser.page
        assert held not in a.browser.slot_ids() and a.browser.slot_ids()
    assert slot_row(db, held).held_by_enrolment_id == b.enrolment.id
    assert live(db, a) is None

    a.browser.get(f"/visit/review?type={clinic.in_person.id}&slot={held}")
    assert f'value="{held}"' not in a.browser.page

    b.browser.post("/visit/book", {"slot": held, "appointment_type": clinic.in_person.id})
    assert "booked" in b.browser.page and live(db, b).slot_id == held


def test_cannot_take_a_time_another_patient_booked(db, clinic, a, b):
    taken = live(db, b).slot_id
    a.browser.get(times_path(clinic))
    assert taken not in a.browser.slot_ids()
    for action in ("/visit/hold", "/visit/book"):
        response = a.browser.post(action, {"slot": taken, "appointment_type": clinic.in_person.id}, follow=False)
        assert response.status_code == 409
    assert live(db, a) is None
    assert slot_row(db, taken).booked_count == 1 and live(db, b).slot_id == taken


def test_types_that_do_not_close_the_gap_are_refused(db, clinic, a):
    flu = AppointmentType(clinic_id=clinic.clinic.id, code="flu-only", name={"en": "Flu shot"}, what_to_bring={},
                          modality=Modality.IN_PERSON, duration_minutes=10,
                          gaps=[AppointmentTypeGap(care_gap_code="flu_vaccine")])
    db.add(flu)
    db.commit()
    a.browser.get("/visit/choose")
    assert "Flu shot" not in a.browser.page
    response = a.browser.client.get(times_path(clinic, flu))
    assert response.status_code == 303 and response.headers["Location"] == "/visit/choose"

    a.browser.get(times_path(clinic))
    slot = a.browser.slot_ids()[0]
    counts = row_counts(db)
    for action in ("/visit/hold", "/visit/book"):
        refused(a.browser.post(action, {"slot": slot, "appointment_type": flu.id}, follow=False))
    assert row_counts(db) == counts
    assert slot_row(db, slot).held_by_enrolment_id is None and live(db, a) is None


def test_past_too_soon_and_wrong_kind_of_slots_are_refused(db, clinic, a):
    now = utcnow()
    past = add_slots_for_day(db, location=clinic.location, provider_id=clinic.provider.id,
                             modality=Modality.IN_PERSON, day=(now - timedelta(days=2)).date(),
                             start=time(9), end=time(10), minutes=30)
    soon_start = (now + timedelta(hours=1)).astimezone(__import__("zoneinfo").ZoneInfo("America/Chicago"))
    soon = [Slot(location_id=clinic.location.id, provider_id=clinic.provider.id, modality=Modality.IN_PERSON,
                 starts_at=now + timedelta(hours=1), ends_at=now + timedelta(hours=1, minutes=30),
                 local_weekday=soon_start.weekday(), local_minutes=soon_start.hour * 60 + soon_start.minute)]
    db.add_all(soon)
    video_slot = db.scalar(select(Slot.id).where(Slot.location_id == clinic.location.id,
                                                 Slot.modality == Modality.TELEHEALTH))
    db.commit()

    cases = [(past[0].id, clinic.in_person.id), (soon[0].id, clinic.in_person.id),
             (video_slot, clinic.in_person.id), (2_000_000_000, clinic.in_person.id), (-1, clinic.in_person.id)]
    a.browser.get(times_path(clinic))
    counts = row_counts(db)
    for slot_id, type_id in cases:
        for action in ("/visit/hold", "/visit/book"):
            refused(a.browser.post(action, {"slot": slot_id, "appointment_type": type_id}, follow=False))
    assert row_counts(db) == counts
    assert live(db, a) is None
    for slot_id in (past[0].id, soon[0].id, video_slot):
        assert slot_row(db, slot_id).held_by_enrolment_id is None


def test_another_clinics_types_and_times_are_out_of_reach(db, clinic, a):
    """Two clinics on one portal, both closing the same care gap."""
    other = make_clinic(db)
    other.clinic.name = "Lakeside Health"
    other.in_person.name = {"en": "Lakeside wellness"}
    other.video.name = {"en": "Lakeside video"}
    their_in_person = add_slots(db, other, future_day(2))
    their_video = add_slots(db, other, future_day(2), modality=Modality.TELEHEALTH, start=time(7), end=time(8))
    db.commit()

    a.browser.get("/visit/choose")
    assert "Lakeside" not in a.browser.page and "North" in a.browser.page
    a.browser.get(times_path(clinic, clinic.video))
    assert a.browser.status == 200 and a.browser.slot_ids()
    assert not {s.id for s in their_video} & set(a.browser.slot_ids())
    for path in (times_path(other, other.in_person), times_path(clinic, clinic.in_person, other.location)):
        response = a.browser.client.get(path)
        assert response.status_code == 303 and response.headers["Location"] == "/visit/choose", path

    counts = row_counts(db)
    attempts = [(their_in_person[0].id, clinic.in_person.id), (their_video[0].id, clinic.video.id),
                (their_in_person[0].id, other.in_person.id), (their_video[0].id, other.video.id)]
    a.browser.get(times_path(clinic))
    for slot_id, type_id in attempts:
        for action in ("/visit/hold", "/visit/book"):
            refused(a.browser.post(action, {"slot": slot_id, "appointment_type": type_id}, follow=False))
    assert row_counts(db) == counts
    assert live(db, a) is None
    assert all(slot_row(db, s.id).held_by_enrolment_id is None for s in their_in_person + their_video)
