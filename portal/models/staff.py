"""Staff accounts, availability templates and blocks, the work queue's notes and
call attempts, and the append-only audit log."""
from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, String, Text, Time
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, intpk, json_dict, str16, str32, str64, str200, utc_created


class Role(StrEnum):
    ADMIN = "admin"
    SCHEDULER = "scheduler"
    COORDINATOR = "coordinator"
    CAMPAIGN_MANAGER = "campaign_manager"


class StaffUser(Base):
    __tablename__ = "staff_user"
    id: Mapped[intpk]
    email: Mapped[str200] = mapped_column(unique=True)
    display_name: Mapped[str200]
    role: Mapped[str32]
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_secret: Mapped[str64] = mapped_column(default="")  # empty until the authenticator is enrolled
    last_totp_step: Mapped[int] = mapped_column(default=0)  # a TOTP code is never accepted twice
    recovery_code_hashes: Mapped[list[str]] = mapped_column(JSON, default=list)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[utc_created]


class AvailabilityTemplate(Base):
    """A weekly pattern, e.g. Mon-Fri 8-17 at Main for Dr. Patel, from March to June."""

    __tablename__ = "availability_template"
    id: Mapped[intpk]
    provider_id: Mapped[int] = mapped_column(ForeignKey("provider.id"))
    location_id: Mapped[int] = mapped_column(ForeignKey("location.id"))
    modality: Mapped[str32]
    weekdays: Mapped[str16]  # digits, Monday = 0, e.g. "01234"
    start_time: Mapped[time] = mapped_column(Time())
    end_time: Mapped[time] = mapped_column(Time())
    slot_minutes: Mapped[int]
    capacity: Mapped[int] = mapped_column(default=1)
    valid_from: Mapped[date]
    valid_until: Mapped[date]
    active: Mapped[bool] = mapped_column(default=True)


class AvailabilityBlock(Base):
    """Time nobody can book: vacation, a holiday, a closed afternoon.
    provider_id empty means the whole location."""

    __tablename__ = "availability_block"
    id: Mapped[intpk]
    location_id: Mapped[int] = mapped_column(ForeignKey("location.id"))
    provider_id: Mapped[int | None] = mapped_column(ForeignKey("provider.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str200] = mapped_column(default="")
    created_by_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"))


class HelpNote(Base):
    __tablename__ = "help_note"
    id: Mapped[intpk]
    help_request_id: Mapped[int] = mapped_column(ForeignKey("help_request.id"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[utc_created]


class OutreachAttempt(Base):
    """A coordinator's phone call to a patient and how it went."""

    __tablename__ = "outreach_attempt"
    id: Mapped[intpk]
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolment.id"), index=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"))
    outcome: Mapped[str32]
    note: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[utc_created]


class AuditEntry(Base):
    """Who looked at or changed which patient record, when and from where.
    Append-only: the ORM refuses updates and deletes (see portal.services.audit)."""

    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_record", "record_type", "record_id"),
                      Index("ix_audit_entry_staff_time", "staff_id", "occurred_at"))
    id: Mapped[intpk]
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"))
    action: Mapped[str32]  # view, create, update, export ...
    record_type: Mapped[str32]
    record_id: Mapped[int]
    detail: Mapped[json_dict]
    remote_addr: Mapped[str64] = mapped_column(default="")
    occurred_at: Mapped[utc_created]
