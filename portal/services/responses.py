"""The patient's other answers from the link: done elsewhere, moved, remind me
later, stop contacting me, and the one-question survey. Each is an event."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal.models import (Channel, ChannelConsent, Enrolment, EnrolmentStatus, FormResponse, OutboxMessage,
                           OutboxStatus, utcnow)
from portal.services.booking import cancel_appointment, live_appointment
from portal.services.events import record_event
from portal.services.links import revoke_links
from portal.services.patient_sessions import end_patient_sessions
from portal.services.sequence import stop_sequence

SURVEY_REASONS = ("no_time", "transport", "cost", "forgot", "language", "felt_fine", "portal_hard", "other")
REMIND_WEEKS = (2, 4, 8)


def close_enrolment(session: Session, enrolment: Enrolment, reason: str, note: str = "",
                    now: datetime | None = None) -> None:
    """Close the enrolment for a reason that ends outreach ("done_elsewhere", "moved").

    A live booking is cancelled with the same reason. Records `declined`; the
    patient's note (free text, so never in the event log) is kept for the care team
    with the enrolment's other answers.
    """
    now = now or utcnow()
    if live_appointment(session, enrolment) is not None:
        cancel_appointment(session, enrolment, reason=reason, now=now)
    enrolment.status = EnrolmentStatus.CLOSED
    enrolment.closed_reason = reason
    stop_sequence(session, enrolment, reason)
    if note:
        form_code = f"note_{reason}"[:32]
        kept = session.scalar(select(FormResponse).where(FormResponse.enrolment_id == enrolment.id,
                                                         FormResponse.form_code == form_code))
        if kept is None:
            kept = FormResponse(enrolment_id=enrolment.id, form_code=form_code, answers={})
            session.add(kept)
        kept.answers, kept.completed_at, kept.updated_at = {"reason": reason, "note": note}, now, now
    record_event(session, enrolment, "declined", reason=reason, has_note=bool(note))


def snooze(session: Session, enrolment: Enrolment, weeks: int, today: date) -> date:
    """Remind me later: outreach pauses until the chosen date."""
    enrolment.status = EnrolmentStatus.SNOOZED
    enrolment.remind_after = today + timedelta(weeks=weeks)
    stop_sequence(session, enrolment, "remind_later")
    # Resume then; the dispatcher still keeps the patient's quiet hours.
    enrolment.next_step_at = datetime.combine(enrolment.remind_after, time(15), timezone.utc)
    record_event(session, enrolment, "declined", reason="remind_later", weeks=weeks)
    return enrolment.remind_after


def opt_out(session: Session, enrolment: Enrolment, now: datetime | None = None) -> None:
    """Stop contacting me: every channel refused, queued messages cancelled, links
    revoked and sessions ended, all in this one transaction."""
    now = now or utcnow()
    patient_id = enrolment.patient_id
    for channel in ("all", Channel.SMS, Channel.EMAIL, Channel.PORTAL):
        session.merge(ChannelConsent(patient_id=patient_id, channel=str(channel), granted=False,
                                     source="patient_link", updated_at=now))
    session.execute(update(OutboxMessage).where(OutboxMessage.patient_id == patient_id,
                                                OutboxMessage.status == OutboxStatus.PENDING)
                    .values(status=OutboxStatus.CANCELLED))
    enrolment.status = EnrolmentStatus.CLOSED
    enrolment.closed_reason = "opted_out"
    enrolment.next_step_at = None
    record_event(session, enrolment, "opted_out", channel="all")
    revoke_links(session, enrolment, "opted_out", now)
    end_patient_sessions(session, enrolment.id)


def answer_survey(session: Session, enrolment: Enrolment, reason: str) -> None:
    record_event(session, enrolment, "survey_answered", reason=reason)
