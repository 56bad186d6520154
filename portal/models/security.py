"""Server-side sessions and one-time codes."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, intpk, json_dict, str16, str64, utc_created


class WebSession(Base):
    """A browser session. The cookie carries a random key; only its hash is stored,
    so deleting the row ends the session for good (logout, rotation, expiry)."""

    __tablename__ = "web_session"
    key_hash: Mapped[str64] = mapped_column(primary_key=True)
    kind: Mapped[str16]  # "patient", "staff_pending" (password only) or "staff"
    enrolment_id: Mapped[int | None] = mapped_column(ForeignKey("enrolment.id"), index=True)
    link_id: Mapped[int | None] = mapped_column(ForeignKey("link.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"), index=True)
    verified_at: Mapped[datetime | None]
    created_at: Mapped[utc_created]
    last_seen_at: Mapped[utc_created]
    data: Mapped[json_dict]


class OneTimeCode(Base):
    __tablename__ = "one_time_code"
    __table_args__ = (Index("ix_one_time_code_patient_created", "patient_id", "created_at"),)
    id: Mapped[intpk]
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolment.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    session_key_hash: Mapped[str64]  # the code only works in the browser that asked for it
    code_hash: Mapped[str64]
    channel: Mapped[str16]
    created_at: Mapped[utc_created]
    expires_at: Mapped[datetime]
    failed_attempts: Mapped[int] = mapped_column(default=0)
    used_at: Mapped[datetime | None]
