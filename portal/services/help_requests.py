"""Help with cost, a ride or an interpreter: requests for the coordinators' queue."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import Enrolment, HelpKind, HelpRequest, utcnow
from portal.services.errors import InvalidInput
from portal.services.events import record_event


def request_help(session: Session, enrolment: Enrolment, kind: str, details: dict) -> HelpRequest:
    """Store a help request (details validated by the form layer) and record
    `help_requested`. Raises InvalidInput for an unknown kind."""
    if kind not in set(HelpKind):
        raise InvalidInput()
    now = utcnow()
    request = HelpRequest(enrolment_id=enrolment.id, kind=kind, details=dict(details), created_at=now, updated_at=now)
    session.add(request)
    session.flush()
    record_event(session, enrolment, "help_requested", kind=kind, help_request_id=request.id)
    return request


def help_requests_for(session: Session, enrolment: Enrolment) -> list[HelpRequest]:
    return list(session.scalars(select(HelpRequest).where(HelpRequest.enrolment_id == enrolment.id)
                                .order_by(HelpRequest.created_at.desc(), HelpRequest.id.desc())))
