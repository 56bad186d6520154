"""The coordinators' work queue: help requests, locked links, people to call."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, joinedload

from portal.models import (Enrolment, Event, HelpNote, HelpRequest, HelpStatus, OutreachAttempt, Patient,
                           RefillRequest, RefillStatus, StaffUser, utcnow)
from portal.services.errors import InvalidInput
from portal.services.events import record_event

OUTCOMES = ("reached", "voicemail", "wrong_number", "booked_by_phone", "declined")


@dataclass
class QueueItem:
    kind: str  # "help", "refill", "locked", "call"
    enrolment: Enrolment
    help_request: HelpRequest | None
    since: datetime
    refill_request: RefillRequest | None = None


def open_queue(session: Session, kind: str = "", mine_only_staff_id: int | None = None) -> list[QueueItem]:
    """Everything waiting for a coordinator, oldest first."""
    items: list[QueueItem] = []
    if kind in ("", "help"):
        query = (select(HelpRequest).where(HelpRequest.status != HelpStatus.RESOLVED)
                 .order_by(HelpRequest.created_at))
        if mine_only_staff_id is not None:
            query = query.where(HelpRequest.assigned_staff_id == mine_only_staff_id)
        for request in session.scalars(query):
            items.append(QueueItem("help", session.get(Enrolment, request.enrolment_id), request, request.created_at))
    if kind in ("", "refill") and mine_only_staff_id is None:
        for refill in session.scalars(select(RefillRequest).where(RefillRequest.status.in_(
                (RefillStatus.NEW, RefillStatus.NEEDS_VISIT))).order_by(RefillRequest.created_at)):
            items.append(QueueItem("refill", session.get(Enrolment, refill.enrolment_id), None, refill.created_at,
                                   refill_request=refill))
    if kind in ("", "locked") and mine_only_staff_id is None:
        for enrolment in session.scalars(select(Enrolment).options(joinedload(Enrolment.patient))
                                         .where(Enrolment.locked_at.is_not(None)).order_by(Enrolment.locked_at)):
            items.append(QueueItem("locked", enrolment, None, enrolment.locked_at))
    if kind in ("", "call") and mine_only_staff_id is None:
        # Escalated by the sequence: tier 1 at launch, everyone else after the last reminder.
        for enrolment in session.scalars(select(Enrolment).options(joinedload(Enrolment.patient))
                                         .where(Enrolment.escalated_at.is_not(None), Enrolment.status == "invited",
                                                Enrolment.locked_at.is_(None)).order_by(Enrolment.escalated_at)):
            items.append(QueueItem("call", enrolment, None, enrolment.escalated_at))
    return sorted(items, key=lambda item: item.since)


def assign_help(session: Session, request: HelpRequest, staff: StaffUser) -> None:
    request.assigned_staff_id = staff.id
    if request.status == HelpStatus.NEW:
        request.status = HelpStatus.IN_PROGRESS
    request.updated_at = utcnow()


def add_help_note(session: Session, request: HelpRequest, staff: StaffUser, text: str) -> HelpNote:
    note = HelpNote(help_request_id=request.id, staff_id=staff.id, text=text, created_at=utcnow())
    session.add(note)
    request.updated_at = utcnow()
    return note


def resolve_help(session: Session, request: HelpRequest, staff: StaffUser, note: str = "") -> None:
    """Mark a help request done; the patient sees the new status on their link."""
    request.status = HelpStatus.RESOLVED
    request.resolution_note = note[:200]
    request.updated_at = utcnow()
    enrolment = session.get(Enrolment, request.enrolment_id)
    record_event(session, enrolment, "help_resolved", actor="staff", help_request_id=request.id, kind=request.kind)


def log_outreach(session: Session, enrolment: Enrolment, staff: StaffUser, outcome: str, note: str = "") -> OutreachAttempt:
    """Record a phone call and its outcome; it counts as a campaign event. Raises
    InvalidInput for an unknown outcome."""
    if outcome not in OUTCOMES:
        raise InvalidInput()
    attempt = OutreachAttempt(enrolment_id=enrolment.id, staff_id=staff.id, outcome=outcome, note=note,
                              occurred_at=utcnow())
    session.add(attempt)
    session.flush()
    record_event(session, enrolment, "call_attempt", actor="staff", outcome=outcome, attempt_id=attempt.id)
    return attempt


def unlock_enrolment(session: Session, enrolment: Enrolment, staff: StaffUser) -> None:
    """After a coordinator has confirmed the patient by phone, reopen their link."""
    enrolment.locked_at = None
    enrolment.dob_failures = 0
    record_event(session, enrolment, "unlocked", actor="staff")


def enrolment_history(session: Session, enrolment: Enrolment) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.enrolment_id == enrolment.id)
                                .order_by(Event.occurred_at, Event.id)))


def find_patients(session: Session, text: str, limit: int = 50) -> list[Patient]:
    """Staff search by name, or by phone/email on file."""
    text = text.strip()
    if not text:
        return []
    like = f"%{text.lower()}%"
    return list(session.scalars(select(Patient).where(or_(
        func.lower(Patient.family_name).like(like), func.lower(Patient.given_name).like(like),
        Patient.phone.like(like), func.lower(Patient.email).like(like))).order_by(Patient.family_name).limit(limit)))
