"""Availability in the console: a scheduler's weekly template becomes times a
patient can book; edits, blocks and endings never drop a booked visit silently;
bad input is a 400 that writes nothing."""
from __future__ import annotations

import re
from datetime import time, timedelta

from sqlalchemy import func, select

from portal.models import (Appointment, AppointmentStatus, AuditEntry, AvailabilityBlock, AvailabilityTemplate,
                           Slot)
from portal.services import clinic_setup
from portal.services.booking import book_slot
from tests.factories import add_slots, future_day, invite_patient, latest_code
from tests.helpers import PatientBrowser


def template_form(setup, **changes) -> dict:
    values = {"provider": str(setup.provider.id), "location": str(setup.location.id), "modality": "in_person",
              "weekdays": ["0", "1", "2", "3", "4", "5", "6"], "start_time": "09:00", "end_time": "12:00",
              "slot_minutes": "30", "capacity": "1", "valid_from": future_day(1).isoformat(),
              "valid_until": future_day(10).isoformat()}
    values.update(changes)
    return values


def count(db, model, *where) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(model).where(*where))


def template_with_slots(db, in_app, setup, **values):
    """A template made and generated through the service, as a scheduler would have."""
    with in_app():
        template = clinic_setup.create_template(db, **{
            "provider_id": setup.provider.id, "location_id": setup.location.id, "modality": "in_person",
            "weekdays": "0123456", "start_time": time(9), "end_time": time(12), "slot_minutes": 30, "capacity": 1,
            "valid_from": future_day(1), "valid_until": future_day(10), **values})
        clinic_setup.generate_template_slots(db, template, today=future_day(0))
    db.commit()
    return template


def book(db, in_app, setup, slot, **patient):
    invited = invite_patient(db, in_app, setup, **patient)
    with in_app():
        appointment = book_slot(db, invited.enrolment, setup.in_person, slot.id)
    db.commit()
    return invited, appointment


def test_a_scheduler_makes_a_template_and_the_patient_sees_its_times(db, app, client, in_app, clinic, scheduler):
    browser = scheduler
    browser.get("/staff/availability")
    assert browser.status == 200 and "No templates yet" in browser.page
    browser.get("/staff/availability/templates/new")
    assert '<label for="start_time">' in browser.page and 'type="time"' in browser.page
    browser.post("/staff/availability/templates/new", template_form(clinic))
    assert browser.status == 200 and "Generate slots" in browser.page
    template = db.scalar(select(AvailabilityTemplate).where(AvailabilityTemplate.location_id == clinic.location.id))
    assert (template.weekdays, template.start_time, template.end_time) == ("0123456", time(9), time(12))
    assert count(db, Slot, Slot.template_id == template.id) == 0  # saving alone offers nothing yet

    browser.post(f"/staff/availability/templates/{template.id}/generate", {"horizon_days": "30"})
    assert "Slots: 60 added, 0 open ones removed" in browser.page  # 10 days x 6 half hours
    browser.post(f"/staff/availability/templates/{template.id}/generate", {"horizon_days": "30"})
    assert "Slots: 0 added" in browser.page  # pressing twice never duplicates
    assert count(db, Slot, Slot.template_id == template.id) == 60

    invited = invite_patient(db, in_app, clinic)
    patient = PatientBrowser(app.test_client())
    patient.verify(db, invited, latest_code)
    patient.get(f"/visit/times?type={clinic.in_person.id}&location={clinic.location.id}")
    assert patient.status == 200
    offered = patient.slot_ids()
    mine = set(db.scalars(select(Slot.id).where(Slot.template_id == template.id)))
    assert offered and set(offered) <= mine
    assert "9:00" in patient.page and "11:30" in patient.page

    browser.get("/staff/availability")
    assert "Dr. Test" in browser.page and ">60<" in browser.page


def test_an_edit_that_takes_a_booked_time_lists_the_booking_and_keeps_it(db, in_app, clinic, scheduler):
    template = template_with_slots(db, in_app, clinic)
    slots = list(db.scalars(select(Slot).where(Slot.template_id == template.id).order_by(Slot.starts_at)))
    booked_slot = slots[0]  # 9:00 on the first day
    invited, appointment = book(db, in_app, clinic, booked_slot)

    browser = scheduler
    browser.get(f"/staff/availability/templates/{template.id}/edit")
    assert 'value="09:00"' in browser.page
    later = template_form(clinic, start_time="10:00")  # 9:00 and 9:30 are no longer offered
    browser.post(f"/staff/availability/templates/{template.id}/edit", later)
    assert browser.status == 200 and "This change would take away booked times" in browser.page
    assert "Maria Garcia" in browser.page and "Save anyway" in browser.page
    db.expire_all()
    assert template.start_time == time(9)  # nothing saved until confirmed
    assert count(db, Slot, Slot.template_id == template.id) == len(slots)

    browser.post(f"/staff/availability/templates/{template.id}/edit", {**later, "confirm": "1"})
    assert browser.status == 200
    assert "1 booked visit no longer fits and was kept" in browser.page
    assert "Booked visits that no longer fit this template" in browser.page and "Maria Garcia" in browser.page
    db.expire_all()
    assert template.start_time == time(10)
    assert db.get(Appointment, appointment.id).status == AppointmentStatus.BOOKED
    kept = db.get(Slot, booked_slot.id)
    assert kept is not None and kept.starts_at == booked_slot.starts_at and kept.blocked
    # the other 9:00 and 9:30 times were open, so they went
    assert count(db, Slot, Slot.template_id == template.id) == len(slots) - (2 * 10 - 1)
    assert count(db, AuditEntry, AuditEntry.record_type == "appointment",
                 AuditEntry.record_id == appointment.id) >= 2

    # ending the template lists the same visit, and keeps it
    browser.get(f"/staff/availability/templates/{template.id}/deactivate")
    assert "Maria Garcia" in browser.page
    browser.post(f"/staff/availability/templates/{template.id}/deactivate")
    db.expire_all()
    assert not template.active and db.get(Appointment, appointment.id).status == AppointmentStatus.BOOKED
    assert count(db, Slot, Slot.template_id == template.id) == 1
    browser.post(f"/staff/availability/templates/{template.id}/activate")
    db.expire_all()
    assert template.active and count(db, Slot, Slot.template_id == template.id) > 1


def test_blocks_close_times_list_bookings_and_lift_again(db, in_app, clinic, scheduler):
    template = template_with_slots(db, in_app, clinic)
    day = future_day(2)
    on_day = [s for s in db.scalars(select(Slot).where(Slot.template_id == template.id))
              if s.starts_at.astimezone(clinic_setup._zone_of(clinic.location)).date() == day]
    assert len(on_day) == 6
    _invited, appointment = book(db, in_app, clinic, on_day[0])

    browser = scheduler
    browser.get("/staff/availability/blocks")
    assert browser.status == 200 and '<label for="time-start_time">' in browser.page
    browser.post("/staff/availability/blocks/days", {
        "days-location": str(clinic.location.id), "days-provider": "", "days-first_day": day.isoformat(),
        "days-last_day": "", "days-reason": "Staff training"})
    assert browser.status == 200 and "Blocked. Slots closed to new bookings: 6." in browser.page
    assert "1 visit inside the block is still booked" in browser.page
    assert "Maria Garcia" in browser.page and "Staff training" in browser.page
    db.expire_all()
    assert all(db.get(Slot, s.id).blocked for s in on_day)
    assert db.get(Appointment, appointment.id).status == AppointmentStatus.BOOKED

    browser.post("/staff/availability/blocks/time", {
        "time-location": str(clinic.location.id), "time-provider": str(clinic.provider.id),
        "time-day": future_day(3).isoformat(), "time-start_time": "10:00", "time-end_time": "11:00",
        "time-reason": "Closed for a meeting"})
    assert "Blocked. Slots closed to new bookings: 2." in browser.page
    blocks = list(db.scalars(select(AvailabilityBlock).order_by(AvailabilityBlock.starts_at)))
    assert [b.reason for b in blocks] == ["Staff training", "Closed for a meeting"]
    assert blocks[1].provider_id == clinic.provider.id and blocks[0].provider_id is None

    browser.get("/staff/availability/blocks")
    browser.post(f"/staff/availability/blocks/{blocks[0].id}/remove")
    assert "Block removed. Slots open again: 6." in browser.page
    db.expire_all()
    assert count(db, AvailabilityBlock) == 1


def test_copying_a_week_offers_the_same_times_a_week_later(db, in_app, clinic, scheduler):
    monday = future_day(7) - timedelta(days=future_day(7).weekday())
    for offset in range(5):
        add_slots(db, clinic, monday + timedelta(days=offset), start=time(13), end=time(15))
    db.commit()
    browser = scheduler
    browser.get("/staff/availability/copy-week")
    form = {"provider": str(clinic.provider.id), "location": str(clinic.location.id),
            "source_day": (monday + timedelta(days=2)).isoformat(),
            "target_day": (monday + timedelta(days=8)).isoformat()}
    browser.post("/staff/availability/copy-week", form)
    assert "Slots copied: 20." in browser.page
    browser.post("/staff/availability/copy-week", form)
    assert "Slots copied: 0." in browser.page
    browser.post("/staff/availability/copy-week", {**form, "target_day": (monday + timedelta(days=4)).isoformat()})
    assert browser.status == 400 and "different week" in browser.page


def test_a_monthly_pattern_makes_one_day_templates_with_slots(db, clinic, scheduler):
    browser = scheduler
    browser.get("/staff/availability/monthly")
    first = future_day(40).replace(day=1)
    browser.post("/staff/availability/monthly", {
        "provider": str(clinic.provider.id), "location": str(clinic.location.id), "modality": "in_person",
        "nth": "1", "weekday": "5", "start_time": "09:00", "end_time": "12:00", "slot_minutes": "60",
        "capacity": "3", "first_month": first.isoformat(), "months": "2"})
    assert "Monthly templates saved: 2. Slots added: 6." in browser.page
    templates = list(db.scalars(select(AvailabilityTemplate).order_by(AvailabilityTemplate.valid_from)))
    assert [t.valid_from.weekday() for t in templates] == [5, 5] and all(t.valid_from.day <= 7 for t in templates)


HUGE = "x" * 10_000
SCRIPT = "<script>alert(1)</script>"


def test_bad_input_is_refused_and_nothing_is_saved(db, in_app, clinic, scheduler):
    template = template_with_slots(db, in_app, clinic)
    slots_before = count(db, Slot)
    browser = scheduler
    cases = [
        {"provider": ""}, {"provider": "abc"}, {"provider": "999999"}, {"location": "-1"}, {"location": HUGE},
        {"modality": "carrier pigeon"}, {"weekdays": []}, {"weekdays": ["7"]}, {"weekdays": ["mon"]},
        {"start_time": ""}, {"start_time": "9am"}, {"start_time": "25:00"}, {"end_time": "08:00"},
        {"end_time": SCRIPT}, {"slot_minutes": "abc"}, {"slot_minutes": "0"}, {"slot_minutes": "500"},
        {"slot_minutes": "240"}, {"capacity": "0"}, {"capacity": "1000"}, {"capacity": "two"},
        {"valid_from": "yesterday"}, {"valid_from": ""}, {"valid_until": "2020-01-01"},
        {"valid_until": (future_day(1) + timedelta(days=3000)).isoformat()}, {"valid_from": HUGE},
    ]
    for change in cases:
        browser.get("/staff/availability/templates/new")
        response = browser.post("/staff/availability/templates/new", template_form(clinic, **change))
        assert response.status_code == 400, change if len(str(change)) < 80 else list(change)
        assert "Please check the following" in browser.page and "<script>alert" not in browser.page
        browser.get(f"/staff/availability/templates/{template.id}/edit")
        response = browser.post(f"/staff/availability/templates/{template.id}/edit", template_form(clinic, **change))
        assert response.status_code == 400, change if len(str(change)) < 80 else list(change)
    assert count(db, AvailabilityTemplate) == 1 and count(db, Slot) == slots_before
    db.expire_all()
    assert template.start_time == time(9) and template.end_time == time(12)

    block_cases = [
        ("/staff/availability/blocks/time", {"time-location": str(clinic.location.id), "time-day": "2026-02-30",
                                             "time-start_time": "10:00", "time-end_time": "11:00"}),
        ("/staff/availability/blocks/time", {"time-location": str(clinic.location.id),
                                             "time-day": future_day(2).isoformat(), "time-start_time": "11:00",
                                             "time-end_time": "10:00"}),
        ("/staff/availability/blocks/time", {"time-location": str(clinic.location.id), "time-provider": "x",
                                             "time-day": future_day(2).isoformat(), "time-start_time": "10:00",
                                             "time-end_time": "11:00"}),
        ("/staff/availability/blocks/days", {"days-location": str(clinic.location.id),
                                             "days-first_day": future_day(2).isoformat(), "days-reason": HUGE}),
        ("/staff/availability/blocks/days", {"days-location": str(clinic.location.id),
                                             "days-first_day": future_day(2).isoformat(), "days-reason": SCRIPT}),
        ("/staff/availability/blocks/days", {"days-location": "", "days-first_day": future_day(2).isoformat()}),
        ("/staff/availability/blocks/days", {"days-location": str(clinic.location.id),
                                             "days-first_day": future_day(5).isoformat(),
                                             "days-last_day": future_day(2).isoformat()}),
        ("/staff/availability/copy-week", {"provider": str(clinic.provider.id), "location": "",
                                           "source_day": future_day(1).isoformat(),
                                           "target_day": future_day(8).isoformat()}),
        ("/staff/availability/copy-week", {"provider": str(clinic.provider.id), "location": str(clinic.location.id),
                                           "source_day": "soon", "target_day": future_day(8).isoformat()}),
        ("/staff/availability/monthly", {"provider": str(clinic.provider.id), "location": str(clinic.location.id),
                                         "modality": "in_person", "nth": "9", "weekday": "5", "start_time": "09:00",
                                         "end_time": "12:00", "slot_minutes": "60", "capacity": "1",
                                         "first_month": future_day(40).isoformat(), "months": "2"}),
    ]
    for path, data in block_cases:
        browser.get("/staff/availability/blocks" if "blocks" in path else path)
        response = browser.post(path, data)
        assert response.status_code == 400, (path, {k: v[:20] for k, v in data.items()})
        assert "Please check the following" in browser.page and "<script>alert" not in browser.page
    assert count(db, AvailabilityBlock) == 0 and count(db, AvailabilityTemplate) == 1
    db.expire_all()
    assert not any(db.scalars(select(Slot.blocked).where(Slot.template_id == template.id)))

    assert browser.get("/staff/availability/templates/999999").status_code == 404
    browser.get("/staff/availability/blocks")
    assert browser.post("/staff/availability/blocks/999999/remove").status_code == 404
    # a POST without the form's CSRF token changes nothing
    response = browser.client.post(f"/staff/availability/templates/{template.id}/deactivate")
    assert response.status_code == 400
    db.expire_all()
    assert template.active
    assert re.search(r"Something in the form|timed out", response.get_data(as_text=True))
