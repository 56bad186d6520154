"""Confirming that the person holding a link is the patient it was sent to.

Default policy: birth date AND a one-time code sent to a phone or email already on
file. A clinic may allow birth date + last name for low-risk campaigns, and then
the portal shows no clinical detail. Wrong birth dates are counted on the
enrolment (5, then the link locks and the case goes to the staff queue). The
error never says which part was wrong.
"""
from __future__ import annotations

import unicodedata
from datetime import date, datetime

from sqlalchemy.orm import Session

from portal.models import Enrolment, VerificationPolicy, utcnow
from portal.services import one_time_codes
from portal.services.errors import EnrolmentLocked, NoContactOnFile, VerificationFailed
from portal.services.events import record_event
from portal.services.messages import consented_channels, queue_message
from portal.services.patient_sessions import end_patient_sessions

MAX_BIRTH_DATE_FAILURES = 5


def ensure_not_locked(enrolment: Enrolment) -> None:
    if enrolment.locked_at is not None:
        raise EnrolmentLocked()


def code_channels(session: Session, enrolment: Enrolment) -> list[str]:
    """Where a code may be sent: contacts on file the patient has not opted out of."""
    return consented_channels(session, enrolment.patient)


def send_code(session: Session, enrolment: Enrolment, session_key_hash: str, channel: str,
              now: datetime | None = None) -> None:
    """Queue a one-time code to the contact on file for `channel`.

    Raises EnrolmentLocked, NoContactOnFile (no such contact, or opted out) or
    CodeSendLimited. Never sends to an address typed by the visitor.
    """
    now = now or utcnow()
    ensure_not_locked(enrolment)
    if channel not in code_channels(session, enrolment):
        raise NoContactOnFile()
    code = one_time_codes.issue_code(session, enrolment, session_key_hash, channel, now)
    sequence = session.info.setdefault("code_sequence", 0) + 1
    session.info["code_sequence"] = sequence
    queue_message(session, enrolment=enrolment, template="code", channel=channel,
                  dedupe_key=f"code:{enrolment.id}:{now.isoformat()}:{sequence}",
                  context={"code": code, "minutes": int(one_time_codes.CODE_LIFETIME.total_seconds() // 60)})
    record_event(session, enrolment, "code_sent", channel=channel)


def _same_name(typed: str, on_file: str) -> bool:
    """Compare last names ignoring case, accents and spacing (García == garcia)."""
    def fold(value: str) -> str:
        decomposed = unicodedata.normalize("NFKD", value.casefold())
        return "".join(ch for ch in decomposed if ch.isalnum())
    return bool(typed) and fold(typed) == fold(on_file)


def verify_identity(session: Session, enrolment: Enrolment, birth_date: date, *, code: str = "",
                    last_name: str = "", session_key_hash: str = "", now: datetime | None = None) -> None:
    """Check the answers against the campaign's policy.

    Raises EnrolmentLocked, VerificationFailed, or (for the code policy)
    CodeExpired when there is no usable code. On success the code is consumed and
    a `verified` event recorded; the caller rotates the session.
    """
    now = now or utcnow()
    ensure_not_locked(enrolment)
    patient = enrolment.patient
    birth_date_ok = birth_date == patient.birth_date
    if enrolment.campaign.verification_policy == VerificationPolicy.DOB_AND_LAST_NAME:
        second_ok, code_row = _same_name(last_name, patient.family_name), None
    else:
        code_row = one_time_codes.check_code(session, enrolment, session_key_hash, code, now)
        second_ok = code_row is not None
    if not birth_date_ok:
        enrolment.dob_failures += 1
        if enrolment.dob_failures >= MAX_BIRTH_DATE_FAILURES:
            enrolment.locked_at = now
            record_event(session, enrolment, "locked", reason="birth_date_failures")
            end_patient_sessions(session, enrolment.id)
            raise EnrolmentLocked()
    if not (birth_date_ok and second_ok):
        record_event(session, enrolment, "verification_failed")
        raise VerificationFailed()
    if code_row is not None:
        one_time_codes.consume_code(code_row, now)
    record_event(session, enrolment, "verified", policy=enrolment.campaign.verification_policy)
