"""Server-side patient sessions.

The browser holds only a random key; the row holds which enrolment and link it
belongs to and whether the patient has been verified. Rotating on verification
and deleting on opt-out mean a copied cookie stops working for good.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session, contains_eager

from portal.models import Campaign, Enrolment, Link, WebSession, utcnow
from portal.services.errors import SessionEnded
from portal.services.keyed_hash import keyed_hash

PATIENT = "patient"
TOUCH_EVERY = timedelta(seconds=30)  # don't write last_seen on every request
TOUCHED = "session_touched"  # set in Session.info when last_seen moved, so the caller commits it


def _new_key() -> str:
    return secrets.token_urlsafe(32)


def session_key_hash(key: str) -> str:
    return keyed_hash(key, "session")


def start_patient_session(session: Session, link: Link, now: datetime | None = None) -> str:
    """Open an unverified session for the link's enrolment and return its cookie key."""
    now = now or utcnow()
    key = _new_key()
    session.add(WebSession(key_hash=session_key_hash(key), kind=PATIENT, enrolment_id=link.enrolment_id,
                           link_id=link.id, created_at=now, last_seen_at=now, data={}))
    session.flush()
    return key


# One statement for what every patient page needs: the session, its link, and the
# enrolment with its campaign, clinic and patient already attached. Built once: every
# patient request runs it, and building it costs about as much as running it.
_LIVE_SESSION = (
    select(WebSession, Link, Enrolment)
    .join(Link, Link.id == WebSession.link_id)
    .join(Enrolment, Enrolment.id == WebSession.enrolment_id)
    .join(Enrolment.campaign).join(Campaign.clinic).join(Enrolment.patient)
    .options(contains_eager(Enrolment.campaign).contains_eager(Campaign.clinic), contains_eager(Enrolment.patient))
    .where(WebSession.key_hash == bindparam("key_hash"), WebSession.kind == PATIENT))


class LivePatientSession(NamedTuple):
    web_session: WebSession
    link: Link
    enrolment: Enrolment


def load_patient_session(session: Session, key: str | None, idle: timedelta, absolute: timedelta,
                         now: datetime | None = None) -> LivePatientSession:
    """Return the live session for a cookie key, with its link and enrolment. Raises
    SessionEnded when it is unknown, idle too long or past its absolute lifetime (and
    deletes it then)."""
    now = now or utcnow()
    if not key:
        raise SessionEnded()
    found = session.execute(_LIVE_SESSION, {"key_hash": session_key_hash(key)}).first()
    if found is None:
        raise SessionEnded()
    row, link, enrolment = found
    if now - row.last_seen_at > idle or now - row.created_at > absolute:
        session.delete(row)
        session.flush()
        raise SessionEnded()
    if now - row.last_seen_at > TOUCH_EVERY:
        row.last_seen_at = now
        session.info[TOUCHED] = True
    return LivePatientSession(row, link, enrolment)


def mark_verified(session: Session, row: WebSession, now: datetime | None = None) -> str:
    """Rotate the session key on verification (a fixated key becomes useless) and
    return the new key for the cookie."""
    now = now or utcnow()
    key = _new_key()
    rotated = WebSession(key_hash=session_key_hash(key), kind=PATIENT, enrolment_id=row.enrolment_id,
                         link_id=row.link_id, verified_at=now, created_at=row.created_at,
                         last_seen_at=now, data=dict(row.data))
    session.delete(row)
    session.add(rotated)
    session.flush()
    return key


def end_patient_sessions(session: Session, enrolment_id: int) -> None:
    """End every session of an enrolment (opt-out, lockout)."""
    session.execute(delete(WebSession).where(WebSession.enrolment_id == enrolment_id))
