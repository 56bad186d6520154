"""What schedulers and coordinators do with a record: mark a visit, work a help
request, log a call, unlock a link — each one saved, evented and audited."""
from __future__ import annotations

from sqlalchemy import select

from portal.models import Appointment, AuditEntry, Event, HelpNote, HelpRequest, OutreachAttempt
from portal.services.availability import appointment_types_for
from portal.services.booking import book_slot
from portal.services.help_requests import request_help
from tests.factories import add_slots, future_day, invite_patient, make_clinic
from tests.staff_helpers import make_staff, sign_in


def events(db, enrolment) -> list[tuple[str, str]]:
    db.expire_all()
    return [(e.kind, e.actor) for e in db.scalars(select(Event).where(Event.enrolment_id == enrolment.id)
                                                  .order_by(Event.id))]


def test_a_scheduler_marks_a_visit_attended_from_the_schedule(db, client, in_app):
    setup = make_clinic(db)
    day = future_day(3)
    slots = add_slots(db, setup, day)
    invited = invite_patient(db, in_app, setup)
    with in_app():
        appointment = book_slot(db, invited.enrolment, appointment_types_for(db, invited.enrolment)[0], slots[0].id)
    db.commit()
    account = make_staff(db, in_app, "scheduler")
    browser = sign_in(client, account)
    browser.get(f"/staff/schedule?location={setup.location.id}&day={day.isoformat()}")
    browser.post(f"/staff/appointments/{appointment.id}/status", {"status": "attended", "day": day.isoformat()})
    assert browser.status == 200 and "attended" in browser.page
    db.expire_all()
    assert db.get(Appointment, appointment.id).status == "attended"
    assert ("attended", "staff") in events(db, invited.enrolment)
    assert db.scalar(select(AuditEntry).where(AuditEntry.staff_id == account.user.id,
                                              AuditEntry.record_type == "appointment",
                                              AuditEntry.action == "update")).detail == {"change": "attended"}
    browser.post(f"/staff/appointments/{appointment.id}/status", {"status": "no_show"})
    assert "no longer booked" in browser.page  # an outcome is recorded once


def test_a_coordinator_works_a_help_request_and_logs_a_call(db, client, in_app):
    setup = make_clinic(db)
    invited = invite_patient(db, in_app, setup)
    with in_app():
        help_request = request_help(db, invited.enrolment, "ride", {"pickup_address": "1 Elm St"})
    db.commit()
    account = make_staff(db, in_app, "coordinator")
    browser = sign_in(client, account)
    browser.get(f"/staff/help/{help_request.id}")
    assert "1 Elm St" in browser.page
    browser.post(f"/staff/help/{help_request.id}", {"action": "assign"})
    browser.post(f"/staff/help/{help_request.id}", {"action": "resolve", "text": "Ride booked for 8:30"})
    db.expire_all()
    row = db.get(HelpRequest, help_request.id)
    assert row.status == "resolved" and row.assigned_staff_id == account.user.id
    assert db.scalar(select(HelpNote.text).where(HelpNote.help_request_id == row.id)) == "Ride booked for 8:30"

    browser.get(f"/staff/enrolments/{invited.enrolment.id}")
    browser.post(f"/staff/enrolments/{invited.enrolment.id}/calls", {"outcome": "voicemail", "note": "Left a message"})
    assert db.scalar(select(OutreachAttempt.outcome)) == "voicemail"
    assert ("call_attempt", "staff") in events(db, invited.enrolment)


def test_a_coordinator_unlocks_a_locked_link(db, client, in_app):
    from datetime import datetime, timezone

    setup = make_clinic(db)
    invited = invite_patient(db, in_app, setup)
    invited.enrolment.locked_at = datetime.now(timezone.utc)
    invited.enrolment.dob_failures = 5
    db.commit()
    browser = sign_in(client, make_staff(db, in_app, "coordinator"))
    browser.get("/staff/queue?kind=locked")
    assert "Maria Garcia" in browser.page
    browser.get(f"/staff/enrolments/{invited.enrolment.id}")
    browser.post(f"/staff/enrolments/{invited.enrolment.id}/unlock", {})
    db.expire_all()
    assert invited.enrolment.locked_at is None and invited.enrolment.dob_failures == 0
    assert client.application.test_client().get(invited.path).status_code == 303  # the link works again


def test_a_coordinator_sees_a_dead_letter_and_sends_it_again(db, client, in_app):
    from datetime import datetime, timezone

    from portal.models import OutboxMessage

    now = datetime.now(timezone.utc)
    message = OutboxMessage(dedupe_key="dead-1", channel="sms", template="invite", locale="en",
                            recipient="+13125550000", body_text="x", status="dead", attempts=6,
                            last_error="21211 invalid number", next_attempt_at=now, created_at=now)
    db.add(message)
    db.commit()
    browser = sign_in(client, make_staff(db, in_app, "coordinator"))
    browser.get("/staff/dead-letters")
    assert "21211 invalid number" in browser.page
    browser.post(f"/staff/dead-letters/{message.id}", {})
    assert "Nothing here" in browser.page
    db.expire_all()
    assert message.status in ("pending", "sent") and message.last_error == ""  # tests dispatch at once


def test_a_patients_note_with_done_elsewhere_reaches_the_care_team(db, client, in_app):
    from tests.factories import latest_code
    from tests.helpers import PatientBrowser

    setup = make_clinic(db)
    invited = invite_patient(db, in_app, setup)
    patient = PatientBrowser(client)
    patient.verify(db, invited, latest_code)
    patient.get("/visit/other")
    patient.post("/visit/other", {"choice": "done_elsewhere", "note": "Had it at County Hospital in May"})
    staff = sign_in(client.application.test_client(), make_staff(db, in_app, "coordinator"))
    staff.get(f"/staff/enrolments/{invited.enrolment.id}")
    assert "Had it at County Hospital in May" in staff.page
    assert not any("County" in str(e.detail) for e in db.scalars(select(Event)))  # free text stays out of events


def test_sending_the_same_answer_twice_keeps_one_note(db, client, in_app):
    from portal.models import FormResponse
    from tests.factories import latest_code
    from tests.helpers import PatientBrowser

    setup = make_clinic(db)
    invited = invite_patient(db, in_app, setup)
    patient = PatientBrowser(client)
    patient.verify(db, invited, latest_code)
    for note in ("First note", "Second note"):
        patient.get("/visit/other")
        patient.post("/visit/other", {"choice": "moved", "note": note})
        assert patient.status == 200
    notes = db.scalars(select(FormResponse.answers).where(FormResponse.enrolment_id == invited.enrolment.id)).all()
    assert notes == [{"reason": "moved", "note": "Second note"}]
