"""Campaign outcomes kept ready for the dashboard: one narrow row of facts per enrolment.

The rows are derived data, written only by ``portal.services.analytics.refresh_facts``.
Database triggers (migration 0007) append the patient to ``enrolment_fact_change``
whenever a row the facts are computed from is written: an outbox message that left or
was delivered, an opened link, a verification or an opt-out, an appointment, a slot
that moved, a refill, a clinical record, the patient or the enrolment. The next report
refreshes those patients' rows set-based, so numbers are never silently stale.
"""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Float, ForeignKey, SmallInteger
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, intpk, str16, str32, str64, utc


class EnrolmentFact(Base):
    """What happened to one enrolment, as of its last refresh. Flags are 0/1 small integers
    (summed and compared alike on SQLite and PostgreSQL); ``*_steps`` and ``*_channels`` are
    bit masks (bit N: sequence step N; bits 0-3: sms, email, portal, "stop everything")."""

    __tablename__ = "enrolment_fact"
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolment.id", ondelete="CASCADE"), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(index=True)
    patient_id: Mapped[int] = mapped_column(index=True)
    arm: Mapped[str32]  # the variant, or "control"
    tier: Mapped[int]
    care_gap: Mapped[str32]
    language: Mapped[str16]
    birth_date: Mapped[date]
    enrolled_at: Mapped[utc]
    first_sent_at: Mapped[datetime | None]
    channel: Mapped[str16]  # of the first campaign message that left; "" if none
    sent_steps: Mapped[int]
    delivered_steps: Mapped[int]
    sent_channels: Mapped[int]
    delivered_channels: Mapped[int]
    opted_out_channels: Mapped[int]
    delivered: Mapped[int] = mapped_column(SmallInteger)
    opened: Mapped[int] = mapped_column(SmallInteger)
    verified: Mapped[int] = mapped_column(SmallInteger)
    opted_out: Mapped[int] = mapped_column(SmallInteger)
    first_booked_at: Mapped[datetime | None]
    booked_by_staff: Mapped[int] = mapped_column(SmallInteger)
    attended: Mapped[int] = mapped_column(SmallInteger)
    no_show: Mapped[int] = mapped_column(SmallInteger)
    live_until: Mapped[datetime | None]  # the latest start of a booking still live
    visit_at: Mapped[datetime | None]  # the start of the first visit attended
    won_back: Mapped[int] = mapped_column(SmallInteger)
    gap_visit: Mapped[int] = mapped_column(SmallInteger)
    closed_elsewhere: Mapped[int] = mapped_column(SmallInteger)  # judged on enrolment_fact_refresh.closure_as_of
    refill_completed: Mapped[int] = mapped_column(SmallInteger)
    came_back_30: Mapped[int] = mapped_column(SmallInteger)
    came_back_90: Mapped[int] = mapped_column(SmallInteger)
    location_id: Mapped[int | None]  # of the latest appointment
    step: Mapped[int | None]  # the last step that left before the first booking
    seconds_to_book: Mapped[float | None] = mapped_column(Float)
    seconds_to_visit: Mapped[float | None] = mapped_column(Float)


class EnrolmentFactRefresh(Base):
    """One row per campaign whose facts are kept: what they were computed with. A different
    ``definition`` (the metric code's version, the window, the gaps, which appointment types
    close which gap) rebuilds them; a different window end re-judges closure elsewhere."""

    __tablename__ = "enrolment_fact_refresh"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), primary_key=True)
    definition: Mapped[str64]
    closure_as_of: Mapped[date]
    refreshed_at: Mapped[utc]


class EnrolmentFactChange(Base):
    """Patients whose facts may have changed since the last refresh, appended by triggers.
    Append-only (no dedupe): a marker committed after a refresh read the queue stays for the
    next one, on PostgreSQL too."""

    __tablename__ = "enrolment_fact_change"
    id: Mapped[intpk]
    patient_id: Mapped[int]


__all__ = ["EnrolmentFact", "EnrolmentFactChange", "EnrolmentFactRefresh"]
