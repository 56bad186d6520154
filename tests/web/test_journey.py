"""The whole patient journey through the Flask test client, in English and Spanish."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from portal.models import Appointment, AppointmentStatus, Event, FormResponse, HelpRequest, OutboxMessage
from tests.factories import add_slots, future_day, invite_patient, latest_code, make_clinic
from tests.helpers import PatientBrowser

TEXTS = {
    "en": {"landing": "You're due for a visit", "confirm": "Confirm it's you", "home": "Welcome back",
           "booked": "You're booked", "form_saved": "Saved. You can finish the form later",
           "help_ok": "We got your request", "cancelled": "Your visit is cancelled", "replaces": "This replaces your visit"},
    "es": {"landing": "Le toca una visita", "confirm": "Confirme que es usted", "home": "Hola de nuevo",
           "booked": "Su cita está reservada", "form_saved": "Guardado. Puede terminar el formulario más tarde",
           "help_ok": "Recibimos su solicitud", "cancelled": "Su cita está cancelada",
           "replaces": "Esto reemplaza su cita"},
}


def events(db, enrolment) -> list[str]:
    db.expire_all()
    return list(db.scalars(select(Event.kind).where(Event.enrolment_id == enrolment.id).order_by(Event.id)))


@pytest.mark.parametrize("language", ["en", "es"])
def test_link_to_booked_visit_and_back_again(db, client, in_app, language):
    setup = make_clinic(db)
    add_slots(db, setup, future_day(3))
    add_slots(db, setup, future_day(4))
    invited = invite_patient(db, in_app, setup, language=language)
    text = TEXTS[language]
    browser = PatientBrowser(client)

    browser.get(invited.path)
    assert browser.status == 200 and text["landing"] in browser.page
    assert invited.token not in browser.page

    browser.post("/welcome/code", {"channel": "sms"})
    assert text["confirm"] in browser.page
    browser.post("/welcome/verify", {"birth_month": "3", "birth_day": "14", "birth_year": "1958",
                                     "code": latest_code(db, invited.patient)})
    assert browser.status == 200 and text["home"] in browser.page

    browser.get("/visit/choose")
    location_link = re.search(r'href="(/visit/times\?[^"]*location=[^"]+)"', browser.page).group(1)
    browser.get(location_link.replace("&amp;", "&"))
    slots = browser.slot_ids()
    assert len(slots) >= 6
    type_id = browser.type_ids()[0]

    browser.post("/visit/hold", {"slot": slots[0], "appointment_type": type_id})
    assert browser.status == 200
    browser.post("/visit/book", {"slot": slots[0], "appointment_type": type_id})
    assert text["booked"] in browser.page

    ics = client.get("/visit/appointment.ics")
    assert ics.status_code == 200 and b"BEGIN:VEVENT" in ics.data

    browser.get("/visit/form")
    browser.post("/visit/form", {"reason": "Check-up", "medications": "Lisinopril 10 mg", "save": "1"})
    assert text["form_saved"] in browser.page
    db.expire_all()
    draft = db.scalar(select(FormResponse).where(FormResponse.enrolment_id == invited.enrolment.id))
    assert draft.answers["medications"] == "Lisinopril 10 mg" and draft.completed_at is None
    browser.get("/visit/form")
    assert "Lisinopril 10 mg" in browser.page
    browser.post("/visit/form", {"reason": "Check-up", "medications": "Lisinopril 10 mg", "submit": "1"})

    browser.get("/visit/help")
    browser.post("/visit/help/ride", {"ride-pickup_address": "12 Elm St", "ride-time_window": "morning",
                                      "ride-mobility": ["wheelchair"]})
    assert text["help_ok"] in browser.page
    ride = db.scalar(select(HelpRequest).where(HelpRequest.enrolment_id == invited.enrolment.id))
    assert ride.kind == "ride" and ride.details["mobility"] == ["wheelchair"] and ride.status == "new"

    browser.get("/visit/choose")
    browser.get(location_link.replace("&amp;", "&"))
    new_slot = browser.slot_ids()[1]
    browser.post("/visit/hold", {"slot": new_slot, "appointment_type": type_id})
    assert text["replaces"] in browser.page
    browser.post("/visit/book", {"slot": new_slot, "appointment_type": type_id})
    assert text["booked"] in browser.page

    browser.get("/visit/cancel")
    browser.post("/visit/cancel", {"reason": "time"})
    assert text["cancelled"] in browser.page

    db.expire_all()
    appointments = db.scalars(select(Appointment).where(Appointment.enrolment_id == invited.enrolment.id)
                              .order_by(Appointment.id)).all()
    assert [a.status for a in appointments] == [AppointmentStatus.RESCHEDULED, AppointmentStatus.CANCELLED]
    assert events(db, invited.enrolment) == [
        "link_opened", "code_sent", "verified", "slot_held", "booked", "form_completed", "help_requested",
        "slot_held", "rescheduled", "cancelled"]
    sent = db.scalars(select(OutboxMessage.template).where(OutboxMessage.patient_id == invited.patient.id)
                      .order_by(OutboxMessage.id)).all()
    assert sent == ["code", "booking_confirmed", "booking_confirmed", "booking_cancelled"]
