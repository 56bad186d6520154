"""The transactional outbox: a message is written with the event that caused it."""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, intpk, str16, str32, str64, str200, utc_created


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    CANCELLED = "cancelled"
    DEAD = "dead"


class OutboxMessage(Base):
    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_message_status_due", "status", "next_attempt_at"),
                      # who was contacted recently: audience exclusions and the frequency caps
                      Index("ix_outbox_message_patient_sent", "patient_id", "sent_at"))
    id: Mapped[intpk]
    dedupe_key: Mapped[str200] = mapped_column(unique=True)
    enrolment_id: Mapped[int | None] = mapped_column(ForeignKey("enrolment.id"), index=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id"))
    channel: Mapped[str16]
    template: Mapped[str32]
    locale: Mapped[str16]
    recipient: Mapped[str200]
    subject: Mapped[str200] = mapped_column(default="")
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str16] = mapped_column(default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[utc_created]
    created_at: Mapped[utc_created]
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str200] = mapped_column(default="")
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaign.id"))
    step: Mapped[int | None]  # which step of the campaign sequence; None for transactional messages
    variant: Mapped[str16] = mapped_column(default="")
    provider_message_id: Mapped[str64] = mapped_column(default="")
    claimed_until: Mapped[datetime | None]  # a dispatcher is sending it; reclaimable after this
    delivered_at: Mapped[datetime | None]
