"""Campaign outreach: message variants, the consent history, inbound replies."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, intpk, json_dict, str16, str32, str64, str200, utc_created


class CampaignVariant(Base):
    """A message wording under test. Empty texts fall back to the shipped templates;
    staff-written texts ({locale: text}) must pass the message linter first."""

    __tablename__ = "campaign_variant"
    __table_args__ = (UniqueConstraint("campaign_id", "key"),)
    id: Mapped[intpk]
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"))
    key: Mapped[str16]  # "A", "B" ...
    label: Mapped[str200] = mapped_column(default="")
    weight: Mapped[int] = mapped_column(default=1)
    sms_text: Mapped[json_dict]
    email_subject: Mapped[json_dict]
    email_text: Mapped[json_dict]
    offer_text: Mapped[json_dict]  # {locale: text}, a time-limited offer shown in the portal; off when empty
    offer_ends_at: Mapped[datetime | None]


class ConsentChange(Base):
    """Append-only history of opt-ins and opt-outs (ChannelConsent holds the current state)."""

    __tablename__ = "consent_change"
    __table_args__ = (Index("ix_consent_change_patient_time", "patient_id", "occurred_at"),)
    id: Mapped[intpk]
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    channel: Mapped[str16]
    granted: Mapped[bool]
    source: Mapped[str32]  # sms_keyword, email_unsubscribe, patient_link, staff, import
    occurred_at: Mapped[utc_created]


class InboundMessage(Base):
    """A reply or provider callback we received. Only the recognised keyword is kept,
    never the free text, which may hold health details."""

    __tablename__ = "inbound_message"
    id: Mapped[intpk]
    channel: Mapped[str16]
    sender: Mapped[str200]
    keyword: Mapped[str16]  # stop, start, help, other
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id"))
    provider_message_id: Mapped[str64] = mapped_column(default="")
    received_at: Mapped[utc_created]


class DeliveryReceipt(Base):
    """A provider's status callback for a message we sent (delivered, failed ...)."""

    __tablename__ = "delivery_receipt"
    id: Mapped[intpk]
    outbox_message_id: Mapped[int | None] = mapped_column(ForeignKey("outbox_message.id"), index=True)
    provider_message_id: Mapped[str64]
    status: Mapped[str32]
    received_at: Mapped[datetime]
