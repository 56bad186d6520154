"""Patients and what they agreed to be contacted by."""
from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, intpk, str16, str32, str64, str200, utc_created


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    PORTAL = "portal"


class Patient(Base):
    __tablename__ = "patient"
    id: Mapped[intpk]
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True)  # id in the clinic's EHR
    given_name: Mapped[str200]
    family_name: Mapped[str200]
    birth_date: Mapped[date]
    sex: Mapped[str16] = mapped_column(default="")
    phone: Mapped[str32] = mapped_column(default="")  # E.164
    email: Mapped[str200] = mapped_column(default="")
    preferred_language: Mapped[str16] = mapped_column(default="en")
    time_zone: Mapped[str64] = mapped_column(default="")
    address_line: Mapped[str200] = mapped_column(default="")
    city: Mapped[str200] = mapped_column(default="")
    state: Mapped[str32] = mapped_column(default="")
    postal_code: Mapped[str16] = mapped_column(default="")
    deceased_on: Mapped[date | None]
    moved_away: Mapped[bool] = mapped_column(default=False)
    coverage_active: Mapped[bool] = mapped_column(default=True)
    uses_portal: Mapped[bool] = mapped_column(default=False)  # gets the portal inbox message first
    pharmacy: Mapped[str200] = mapped_column(default="")  # name and address of the pharmacy on file
    created_at: Mapped[utc_created]

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"


class ChannelConsent(Base):
    """The patient's current choice per channel; the consent history lives in the event log."""

    __tablename__ = "channel_consent"
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), primary_key=True)
    channel: Mapped[str16] = mapped_column(primary_key=True)
    granted: Mapped[bool]
    source: Mapped[str32]
    updated_at: Mapped[datetime]
