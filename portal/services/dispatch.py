"""Send what the outbox holds, after the transaction that wrote it has committed."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.channels import ChannelError, MessageChannel
from portal.models import OutboxMessage, OutboxStatus, utcnow

MAX_ATTEMPTS = 6


def dispatch_due(session: Session, channels: dict[str, MessageChannel], now: datetime | None = None,
                 limit: int = 100) -> int:
    """Send up to `limit` due messages and return how many went out.

    Rows are claimed with FOR UPDATE SKIP LOCKED on PostgreSQL so dispatchers can run
    side by side; a failed send is retried with exponential backoff and becomes a
    dead letter after MAX_ATTEMPTS. The caller commits.
    """
    now = now or utcnow()
    due = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    sent = 0
    for message in due:
        message.attempts += 1
        try:
            channels[message.channel].send(message)
        except ChannelError as exc:
            message.last_error = str(exc)[:200]
            if message.attempts >= MAX_ATTEMPTS:
                message.status = OutboxStatus.DEAD
            else:
                message.next_attempt_at = now + timedelta(minutes=2 ** message.attempts)
            continue
        message.status = OutboxStatus.SENT
        message.sent_at = now
        sent += 1
    return sent
