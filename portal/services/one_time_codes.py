"""One-time codes: the only place that makes, stores and checks them.

6 digits from `secrets`, valid 10 minutes, single use, stored as a keyed hash,
bound to the browser session that asked, 5 wrong tries per code. Sending is
capped per patient (3 per 15 minutes, 10 per day) against SMS pumping.
"""
from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import Enrolment, OneTimeCode, utcnow
from portal.services.errors import CodeExpired, CodeSendLimited
from portal.services.keyed_hash import keyed_hash

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=10)
MAX_WRONG_TRIES = 5
SEND_WINDOW = timedelta(minutes=15)
SENDS_PER_WINDOW = 3
SENDS_PER_DAY = 10


SALT_HEX = 16
HASH_HEX = 47  # salt + "$" + hash must fit the 64-character column (PostgreSQL enforces it)


def _hash(code: str, code_id_salt: str) -> str:
    """A keyed hash, truncated to 188 bits: far beyond what a 6-digit secret needs."""
    return keyed_hash(f"{code_id_salt}:{code}", "otp")[:HASH_HEX]


def _codes_sent_since(session: Session, patient_id: int, since: datetime) -> int:
    return session.scalar(select(func.count()).select_from(OneTimeCode)
                          .where(OneTimeCode.patient_id == patient_id, OneTimeCode.created_at > since))


def issue_code(session: Session, enrolment: Enrolment, session_key_hash: str, channel: str,
               now: datetime | None = None) -> str:
    """Create a code for this browser session and return it in the clear, once,
    for the message. Raises CodeSendLimited past the per-patient send caps."""
    now = now or utcnow()
    if (_codes_sent_since(session, enrolment.patient_id, now - SEND_WINDOW) >= SENDS_PER_WINDOW
            or _codes_sent_since(session, enrolment.patient_id, now - timedelta(days=1)) >= SENDS_PER_DAY):
        raise CodeSendLimited()
    code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
    salt = secrets.token_hex(SALT_HEX // 2)
    session.add(OneTimeCode(enrolment_id=enrolment.id, patient_id=enrolment.patient_id,
                            session_key_hash=session_key_hash, code_hash=f"{salt}${_hash(code, salt)}",
                            channel=channel, created_at=now, expires_at=now + CODE_LIFETIME))
    session.flush()
    return code


def check_code(session: Session, enrolment: Enrolment, session_key_hash: str, code: str,
               now: datetime | None = None) -> OneTimeCode | None:
    """Compare a typed code with the newest live code of this session in constant time.

    Returns the matching code row (not yet consumed), or None after counting a wrong
    try. Raises CodeExpired when there is no usable code: never sent, expired, used
    or out of tries.
    """
    now = now or utcnow()
    row = session.scalar(
        select(OneTimeCode)
        .where(OneTimeCode.enrolment_id == enrolment.id, OneTimeCode.session_key_hash == session_key_hash)
        .order_by(OneTimeCode.created_at.desc(), OneTimeCode.id.desc())
        .limit(1)
    )
    if row is None or row.used_at is not None or row.expires_at <= now or row.failed_attempts >= MAX_WRONG_TRIES:
        raise CodeExpired()
    salt, expected = row.code_hash.split("$", 1)
    if hmac.compare_digest(_hash(code, salt), expected):
        return row
    row.failed_attempts += 1
    return None


def consume_code(row: OneTimeCode, now: datetime | None = None) -> None:
    """Mark a code used so it can never be accepted again (replay guard)."""
    row.used_at = now or utcnow()
