"""Pre-visit forms: drafts saved as the patient goes, completed once.

Contact and insurance changes are stored as answers for the front desk to review;
they never overwrite the phone or email on file, because codes go there.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import Enrolment, FormResponse, utcnow
from portal.services.events import record_event


def form_response(session: Session, enrolment: Enrolment, form_code: str) -> FormResponse | None:
    return session.scalar(select(FormResponse).where(FormResponse.enrolment_id == enrolment.id,
                                                     FormResponse.form_code == form_code))


def save_form(session: Session, enrolment: Enrolment, form_code: str, answers: dict, complete: bool,
              now: datetime | None = None) -> FormResponse:
    """Save the answers (already validated by the form layer) as a draft or as complete.

    Completing records `form_completed` once; later edits keep it complete.
    """
    now = now or utcnow()
    response = form_response(session, enrolment, form_code)
    if response is None:
        response = FormResponse(enrolment_id=enrolment.id, form_code=form_code, answers={}, updated_at=now)
        session.add(response)
    response.answers = dict(answers)
    response.updated_at = now
    if complete and response.completed_at is None:
        response.completed_at = now
        session.flush()
        record_event(session, enrolment, "form_completed", form=form_code)
    session.flush()
    return response
