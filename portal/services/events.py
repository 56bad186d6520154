"""The append-only event log that the campaign funnel reads."""
from __future__ import annotations

from sqlalchemy.orm import Session

from portal.models import Enrolment, Event, utcnow


def record_event(session: Session, enrolment: Enrolment, kind: str, /, actor: str = "patient", **detail) -> Event:
    """Append an event to an enrolment. detail holds ids, codes and reasons, never PHI."""
    event = Event(enrolment_id=enrolment.id, campaign_id=enrolment.campaign_id, kind=kind, actor=actor,
                  detail=detail, occurred_at=utcnow())
    session.add(event)
    return event
