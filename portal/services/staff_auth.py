"""Staff sign-in: password (argon2) then a TOTP code, with server-side sessions.

A sign-in goes through two session rows: "staff_pending" after the password, and
"staff" after the authenticator code, with a new key each time. Deleting the row
(logout) kills the session even if someone kept a copy of the cookie.
"""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from portal.models import Role, StaffUser, WebSession, utcnow
from portal.services.errors import AccountLocked, InvalidInput, SessionEnded, SignInFailed
from portal.services.keyed_hash import keyed_hash
from portal.services.patient_sessions import TOUCH_EVERY, TOUCHED, session_key_hash

PASSWORD_HASHER = PasswordHasher()
_DUMMY_HASH = PASSWORD_HASHER.hash("timing-equaliser")
MAX_FAILED_SIGN_INS = 5
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12
RECOVERY_CODES = 8
PENDING = "staff_pending"
STAFF = "staff"
PENDING_LIFETIME = timedelta(minutes=10)


def create_staff(session: Session, email: str, role: str, display_name: str, password: str) -> StaffUser:
    """Create a staff account. Raises InvalidInput for an unknown role, a short
    password or an email already in use."""
    email = email.strip().lower()
    if role not in set(Role) or len(password) < MIN_PASSWORD_LENGTH or "@" not in email:
        raise InvalidInput()
    if session.scalar(select(func.count()).select_from(StaffUser).where(StaffUser.email == email)):
        raise InvalidInput()
    user = StaffUser(email=email, role=role, display_name=display_name or email,
                     password_hash=PASSWORD_HASHER.hash(password), recovery_code_hashes=[])
    session.add(user)
    session.flush()
    return user


def check_password(session: Session, email: str, password: str, now: datetime | None = None) -> StaffUser:
    """First factor. Raises SignInFailed (unknown email or wrong password, same
    answer and similar timing) or AccountLocked after MAX_FAILED_SIGN_INS."""
    now = now or utcnow()
    user = session.scalar(select(StaffUser).where(StaffUser.email == email.strip().lower(), StaffUser.active.is_(True)))
    if user is None:
        try:
            PASSWORD_HASHER.verify(_DUMMY_HASH, password)
        except VerifyMismatchError:
            pass
        raise SignInFailed()
    if user.locked_until is not None and user.locked_until > now:
        raise AccountLocked()
    try:
        PASSWORD_HASHER.verify(user.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILED_SIGN_INS:
            user.locked_until = now + LOCKOUT
            user.failed_logins = 0
        raise SignInFailed() from None
    user.failed_logins = 0
    return user


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(user: StaffUser, secret: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=issuer)


def check_totp(user: StaffUser, code: str, secret: str | None = None, now: datetime | None = None) -> bool:
    """Accept a code for the current 30 s step or one step either side, but never a
    step at or before the last one accepted (so a code works once)."""
    now = now or utcnow()
    totp = pyotp.TOTP(secret or user.totp_secret)
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if step > user.last_totp_step and hmac.compare_digest(totp.generate_otp(step), code.strip()):
            user.last_totp_step = step
            return True
    return False


def finish_enrolment(user: StaffUser, secret: str, code: str, now: datetime | None = None) -> list[str]:
    """Store the authenticator once the user proves it works; return recovery codes
    in the clear, once. Raises SignInFailed when the code is wrong."""
    if not check_totp(user, code, secret=secret, now=now):
        raise SignInFailed()
    user.totp_secret = secret
    codes = [secrets.token_hex(5) for _ in range(RECOVERY_CODES)]
    user.recovery_code_hashes = [keyed_hash(code, "recovery") for code in codes]
    return codes


def use_recovery_code(user: StaffUser, code: str) -> bool:
    hashed = keyed_hash(code.strip().lower(), "recovery")
    if hashed in user.recovery_code_hashes:
        user.recovery_code_hashes = [h for h in user.recovery_code_hashes if h != hashed]
        return True
    return False


def start_staff_session(session: Session, user: StaffUser, kind: str, now: datetime | None = None,
                        data: dict | None = None) -> str:
    """Open a (pending or full) staff session with a fresh key, ending the user's
    other pending sessions; returns the cookie key."""
    now = now or utcnow()
    session.execute(delete(WebSession).where(WebSession.staff_id == user.id, WebSession.kind == PENDING))
    key = secrets.token_urlsafe(32)
    session.add(WebSession(key_hash=session_key_hash(key), kind=kind, staff_id=user.id, created_at=now,
                           last_seen_at=now, verified_at=now if kind == STAFF else None, data=data or {}))
    session.flush()
    return key


@dataclass
class StaffSession:
    row: WebSession
    user: StaffUser


def load_staff_session(session: Session, key: str | None, kind: str, idle: timedelta, absolute: timedelta,
                       now: datetime | None = None) -> StaffSession:
    """The live staff session for a cookie key. Raises SessionEnded when unknown,
    idle too long, too old, or the account was deactivated."""
    now = now or utcnow()
    if not key:
        raise SessionEnded()
    row = session.scalar(select(WebSession).where(WebSession.key_hash == session_key_hash(key), WebSession.kind == kind))
    if kind == PENDING:
        idle = absolute = PENDING_LIFETIME
    if row is None:
        raise SessionEnded()
    user = session.get(StaffUser, row.staff_id)
    if user is None or not user.active or now - row.last_seen_at > idle or now - row.created_at > absolute:
        session.delete(row)
        session.flush()
        raise SessionEnded()
    if now - row.last_seen_at > TOUCH_EVERY:
        row.last_seen_at = now
        session.info[TOUCHED] = True
    return StaffSession(row, user)


def end_staff_session(session: Session, key: str) -> None:
    session.execute(delete(WebSession).where(WebSession.key_hash == session_key_hash(key)))
