"""Refill-gap enrolments: a one-tap refill request, a pharmacist callback, or
"I stopped on purpose". A refill counts as completed when a later import shows
the medicine dispensed."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from portal.models import ClinicalFact, Enrolment, FactKind, RefillRequest, RefillStatus, utcnow
from portal.services.errors import InvalidInput
from portal.services.events import record_event
from portal.services.responses import close_enrolment
from portal.services.sequence import stop_sequence

KINDS = ("refill", "pharmacist")


def medicine_for(session: Session, enrolment: Enrolment) -> ClinicalFact | None:
    """The medicine this refill enrolment is about (shown only after verification)."""
    if enrolment.subject_fact_id is None:
        return None
    return session.get(ClinicalFact, enrolment.subject_fact_id)


def refill_requests_for(session: Session, enrolment: Enrolment) -> list[RefillRequest]:
    return list(session.scalars(select(RefillRequest).where(RefillRequest.enrolment_id == enrolment.id)
                                .order_by(RefillRequest.created_at.desc(), RefillRequest.id.desc())))


def request_refill(session: Session, enrolment: Enrolment, kind: str, pharmacy: str,
                   now: datetime | None = None) -> RefillRequest:
    """Queue a refill request or a pharmacist callback for the care team; a changed
    pharmacy is stored on the patient. Raises InvalidInput for an unknown kind.
    A second tap while one is still open returns the open one."""
    if kind not in KINDS:
        raise InvalidInput()
    now = now or utcnow()
    open_request = session.scalar(select(RefillRequest).where(
        RefillRequest.enrolment_id == enrolment.id, RefillRequest.kind == kind,
        RefillRequest.status.in_((RefillStatus.NEW, RefillStatus.SENT_TO_PHARMACY))))
    if open_request is not None:
        return open_request
    if pharmacy and pharmacy != enrolment.patient.pharmacy:
        enrolment.patient.pharmacy = pharmacy
    request = RefillRequest(enrolment_id=enrolment.id, kind=kind, medication_fact_id=enrolment.subject_fact_id,
                            pharmacy=enrolment.patient.pharmacy, created_at=now, updated_at=now)
    session.add(request)
    session.flush()
    record_event(session, enrolment, "refill_requested", kind=kind, refill_request_id=request.id)
    stop_sequence(session, enrolment, "refill_requested")
    return request


def stopped_on_purpose(session: Session, enrolment: Enrolment) -> None:
    """The patient stopped the medicine on purpose or their doctor changed it: recorded,
    and the sequence ends."""
    close_enrolment(session, enrolment, "stopped_on_purpose")


def set_refill_status(session: Session, request: RefillRequest, status: str) -> None:
    """The care team moves a request along; the patient sees the new status. Raises InvalidInput."""
    if status not in set(RefillStatus):
        raise InvalidInput()
    request.status = status
    request.updated_at = utcnow()


def complete_refills_from_facts(session: Session, now: datetime | None = None) -> int:
    """After an import: requests whose medicine shows a fill dated on or after the
    request are completed (set-based). Returns how many were completed."""
    now = now or utcnow()
    requested = aliased(ClinicalFact)
    dispensed = aliased(ClinicalFact)
    filled_since = exists().where(
        requested.id == RefillRequest.medication_fact_id,
        dispensed.patient_id == requested.patient_id, dispensed.kind == FactKind.MEDICATION,
        dispensed.code == requested.code, dispensed.id != requested.id,
        dispensed.started_on >= func.date(RefillRequest.created_at))
    return session.execute(update(RefillRequest).where(and_(RefillRequest.completed_at.is_(None), filled_since))
                           .values(completed_at=now, status=RefillStatus.DONE)
                           .execution_options(synchronize_session=False)).rowcount
