"""Signed, expiring invitation links.

A link names an enrolment through a 128-bit random nonce that is stored only as a
keyed hash. itsdangerous signs the nonce with a salt per purpose, so a token made
for one purpose never works for another; it does not encrypt, which is why the
payload carries nothing but the purpose and the nonce.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal.models import Enrolment, Link, utcnow
from portal.services.bulk import insert_returning_ids
from portal.services.errors import LinkExpired, LinkInvalid, LinkRevoked
from portal.services.keyed_hash import keyed_hash

INVITE = "invite"
MAX_LINK_LIFETIME = timedelta(days=90)  # signature limit; the campaign's own lifetime is shorter


def _serializer(purpose: str, issued_at: datetime | None = None) -> URLSafeTimedSerializer:
    """One serializer per purpose. The signature timestamp is the link's issue time,
    so the same link always renders to the same token (the demo reprints it)."""

    class IssuedAtSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(issued_at.timestamp()) if issued_at else super().get_timestamp()

    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=f"link:{purpose}", signer=IssuedAtSigner)


def token_for(link: Link, nonce: str) -> str:
    return _serializer(link.purpose, link.issued_at).dumps({"p": link.purpose, "n": nonce})


def link_url(token: str) -> str:
    """Links are built from the configured public base URL, never from the Host header."""
    return f"{current_app.config['BASE_URL']}/r/{token}"


def issue_link(session: Session, enrolment: Enrolment, now: datetime | None = None,
               nonce: str | None = None, purpose: str = INVITE) -> tuple[Link, str]:
    """Create a link for an enrolment, superseding its older links of the same purpose.

    Returns the link row and the token; the token exists only in the message that
    carries it. `nonce` is for the demo seeder, which derives it to reprint links.
    """
    now = now or utcnow()
    nonce = nonce or secrets.token_urlsafe(16)
    _supersede(session, [enrolment.id], purpose, now)
    link = Link(**_link_row(enrolment.id, enrolment.campaign.link_lifetime_days, purpose, nonce, now))
    session.add(link)
    session.flush()
    return link, token_for(link, nonce)


def issue_links(session: Session, enrolments: list[tuple[int, int]], now: datetime,
                purpose: str = INVITE) -> list[tuple[int, str]]:
    """issue_link for many enrolments at once, each given as (enrolment id, link
    lifetime in days): one UPDATE supersedes their older links, one batch of INSERTs
    adds the new ones, one serializer signs them all. Returns (link id, token) in the
    order given."""
    if not enrolments:
        return []
    _supersede(session, [enrolment_id for enrolment_id, _days in enrolments], purpose, now)
    nonces = [secrets.token_urlsafe(16) for _ in enrolments]
    ids = insert_returning_ids(session, Link.__table__, [_link_row(enrolment_id, days, purpose, nonce, now)
                                                         for (enrolment_id, days), nonce in zip(enrolments, nonces)])
    serializer = _serializer(purpose, now.replace(microsecond=0))
    return [(link_id, serializer.dumps({"p": purpose, "n": nonce})) for link_id, nonce in zip(ids, nonces)]


def _supersede(session: Session, enrolment_ids: list[int], purpose: str, now: datetime) -> None:
    session.execute(
        update(Link)
        .where(Link.enrolment_id.in_(enrolment_ids), Link.purpose == purpose, Link.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="superseded")
    )


def _link_row(enrolment_id: int, lifetime_days: int, purpose: str, nonce: str, now: datetime) -> dict:
    return dict(enrolment_id=enrolment_id, purpose=purpose, nonce_hash=keyed_hash(nonce, "link"),
                issued_at=now.replace(microsecond=0), expires_at=now + timedelta(days=lifetime_days))


def resolve_token(session: Session, token: str, now: datetime | None = None, purpose: str = INVITE) -> Link:
    """Find the live link a token names. Raises LinkInvalid, LinkExpired or LinkRevoked."""
    now = now or utcnow()
    try:
        payload = _serializer(purpose).loads(token, max_age=int(MAX_LINK_LIFETIME.total_seconds()))
    except SignatureExpired as exc:
        raise LinkExpired() from exc
    except BadSignature as exc:
        raise LinkInvalid() from exc
    if not isinstance(payload, dict) or payload.get("p") != purpose or not isinstance(payload.get("n"), str):
        raise LinkInvalid()
    link = session.scalar(select(Link).where(Link.nonce_hash == keyed_hash(payload["n"], "link")))
    if link is None:
        raise LinkInvalid()
    if link.revoked_at is not None:
        raise LinkRevoked()
    if link.expires_at <= now:
        raise LinkExpired()
    return link


def check_link_live(link: Link, now: datetime | None = None) -> None:
    """Re-check a link already in a session: revocation or expiry ends access at once."""
    now = now or utcnow()
    if link.revoked_at is not None:
        raise LinkRevoked()
    if link.expires_at <= now:
        raise LinkExpired()


def revoke_links(session: Session, enrolment: Enrolment, reason: str, now: datetime | None = None) -> None:
    session.execute(
        update(Link).where(Link.enrolment_id == enrolment.id, Link.revoked_at.is_(None))
        .values(revoked_at=now or utcnow(), revoked_reason=reason)
    )
