"""Refill requests, a lab visit booked with its follow-up, welcome notes and offers."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import func, select

from portal.models import (Appointment, AppointmentStatus, AppointmentType, AppointmentTypeGap, CampaignVariant,
                           ClinicalFact, Event, FactKind, Modality, RefillRequest, Slot)
from portal.services import booking
from portal.services.errors import SlotTaken
from portal.services.refills import complete_refills_from_facts
from tests.factories import add_slots, future_day, invite_patient, latest_code, make_clinic
from tests.helpers import PatientBrowser


def verified(db, client, in_app, setup, **kwargs):
    invited = invite_patient(db, in_app, setup, **kwargs)
    browser = PatientBrowser(client)
    browser.verify(db, invited, latest_code)
    return invited, browser


def test_a_refill_request_is_queued_and_completes_when_an_import_shows_the_fill(db, client, in_app):
    setup = make_clinic(db, gap="refill_gap")
    invited = invite_patient(db, in_app, setup, gap="refill_gap")
    medicine = ClinicalFact(patient_id=invited.patient.id, kind=FactKind.MEDICATION, code="314076",
                            description="Lisinopril 10 MG Oral Tablet", started_on=date.today() - timedelta(days=80),
                            days_supply=30, source="test", source_key="lisinopril-1")
    db.add(medicine)
    db.flush()
    invited.enrolment.subject_fact_id = medicine.id
    db.commit()
    browser = PatientBrowser(client)
    browser.verify(db, invited, latest_code)
    assert "Lisinopril 10 MG Oral Tablet" in browser.page
    browser.post("/visit/refill/refill", {"pharmacy": "CVS, 1 Main St"})
    assert "refill request" in browser.page.lower() and "received" in browser.page
    browser.post("/visit/refill/refill", {"pharmacy": "CVS, 1 Main St"})  # a second tap adds nothing
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(RefillRequest)) == 1
    assert invited.patient.pharmacy == "CVS, 1 Main St"

    db.add(ClinicalFact(patient_id=invited.patient.id, kind=FactKind.MEDICATION, code="314076",
                        description="Lisinopril 10 MG Oral Tablet", started_on=date.today(), days_supply=30,
                        source="test", source_key="lisinopril-2"))
    db.flush()
    assert complete_refills_from_facts(db) == 1
    db.commit()
    browser.get("/visit")
    assert "done" in browser.page


def test_stopped_on_purpose_ends_the_enrolment(db, client, in_app):
    setup = make_clinic(db, gap="refill_gap")
    invited, browser = verified(db, client, in_app, setup, gap="refill_gap")
    browser.post("/visit/refill-stopped", {})
    db.expire_all()
    assert invited.enrolment.status == "closed" and invited.enrolment.closed_reason == "stopped_on_purpose"


def lab_setup(db):
    setup = make_clinic(db, gap="diabetes_a1c")
    lab = AppointmentType(clinic_id=setup.clinic.id, code=f"lab-{setup.clinic.id}", name={"en": "Lab visit"},
                          what_to_bring={}, preparation={"en": "No need to fast.", "es": "No necesita ayunar."},
                          service="lab", modality=Modality.IN_PERSON, duration_minutes=15,
                          gaps=[AppointmentTypeGap(care_gap_code="diabetes_a1c")])
    db.add(lab)
    db.flush()
    lab_slots = add_slots(db, setup, future_day(3), start=time(8), end=time(9))
    visit_slots = add_slots(db, setup, future_day(8), start=time(14), end=time(15))
    db.commit()
    return setup, lab, lab_slots, visit_slots


def test_a_lab_visit_and_its_follow_up_are_booked_together(db, client, in_app):
    setup, lab, lab_slots, visit_slots = lab_setup(db)
    invited, browser = verified(db, client, in_app, setup, gap="diabetes_a1c")
    browser.post("/visit/hold", {"slot": lab_slots[0].id, "appointment_type": lab.id})
    assert "Add a follow-up visit?" in browser.page
    browser.get(f"/visit/follow-up?first={lab_slots[0].id}&first_type={lab.id}&type={setup.in_person.id}")
    assert visit_slots[0].id in browser.slot_ids("second") and lab_slots[1].id not in browser.slot_ids("second")
    browser.post("/visit/hold-follow-up", {"first": lab_slots[0].id, "first_type": lab.id,
                                           "second": visit_slots[0].id, "second_type": setup.in_person.id})
    assert "Book both visits" in browser.page
    browser.post("/visit/book-pair", {"first": lab_slots[0].id, "first_type": lab.id,
                                      "second": visit_slots[0].id, "second_type": setup.in_person.id})
    assert "No need to fast." in browser.page and "Your follow-up visit" in browser.page
    db.expire_all()
    booked = db.scalars(select(Appointment).where(Appointment.enrolment_id == invited.enrolment.id)
                        .order_by(Appointment.sequence)).all()
    assert [(a.slot_id, a.sequence, a.status) for a in booked] == [
        (lab_slots[0].id, 0, AppointmentStatus.BOOKED), (visit_slots[0].id, 1, AppointmentStatus.BOOKED)]
    ics = client.get("/visit/appointment.ics").get_data(as_text=True)
    assert "No need to fast." in ics


def test_if_the_follow_up_is_taken_neither_visit_is_kept(db, in_app):
    setup, lab, lab_slots, visit_slots = lab_setup(db)
    invited = invite_patient(db, in_app, setup, gap="diabetes_a1c")
    other = invite_patient(db, in_app, setup, given="Other", gap="diabetes_a1c", phone="+13125550199")
    with in_app():
        booking.book_slot(db, other.enrolment, setup.in_person, visit_slots[0].id)
        with pytest.raises(SlotTaken):
            booking.book_pair(db, invited.enrolment, (lab, lab_slots[0].id), (setup.in_person, visit_slots[0].id))
    db.commit()
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(Appointment)
                     .where(Appointment.enrolment_id == invited.enrolment.id)) == 0
    assert db.get(Slot, lab_slots[0].id).booked_count == 0  # the lab seat was given back


def test_welcome_note_and_education_show_only_after_verification(db, client, in_app):
    setup = make_clinic(db)
    setup.campaign.welcome_note = {"en": "We now open on Saturdays.", "es": "Ahora abrimos los sábados."}
    db.commit()
    invited = invite_patient(db, in_app, setup)
    browser = PatientBrowser(client)
    browser.get(invited.path)
    assert "Saturdays" not in browser.page and "Why this visit matters" not in browser.page
    browser.verify(db, invited, latest_code)
    assert "We now open on Saturdays." in browser.page and "Why this visit matters" in browser.page
    browser.switch_language("es", "/visit")
    assert "Ahora abrimos los sábados." in browser.page


def test_an_offer_shows_its_end_in_the_patients_zone_and_disappears_after(db, client, in_app):
    setup = make_clinic(db)
    ends = datetime.now(timezone.utc) + timedelta(hours=3)
    db.add(CampaignVariant(campaign_id=setup.campaign.id, key="A", sms_text={}, email_subject={}, email_text={},
                           offer_text={"en": "Same-week times held for you."}, offer_ends_at=ends))
    db.commit()
    invited, browser = verified(db, client, in_app, setup)
    assert "Same-week times held for you." in browser.page
    from zoneinfo import ZoneInfo

    local = ends.astimezone(ZoneInfo("America/Chicago"))
    assert local.strftime("%-I:%M") in browser.page and ("CST" in browser.page or "CDT" in browser.page)
    db.scalar(select(CampaignVariant)).offer_ends_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    db.commit()
    browser.get("/visit")
    assert "Same-week times held for you." not in browser.page
    assert db.scalar(select(func.count()).select_from(Event).where(Event.kind == "verified")) == 1
