"""Campaign outcomes kept ready for the dashboard: one narrow row of facts per enrolment.

The rows are derived data, written only by ``portal.services.analytics`` (``refresh_facts``,
``keep_facts_current``).
Database triggers (migration 0007) append the patient to ``enrolment_fact_change``
whenever a row the facts are computed from is written: an outbox message that left or
was delivered, an opened link, a verification or an opt-out, an appointment, a slot
that moved, a refill, a clinical record, the patient or the enrolment. The next report
(or ``portal dispatch``, when idle) refreshes those patients' rows set-based, so numbers are
never silently stale.
"""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Float, ForeignKey, Index, SmallInteger, text
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, intpk, str16, str32, str64, utc


# What a report reads (analytics._combination_counts), in index order: it groups a campaign's
# rows into their few distinct combinations of these (plus one breakdown key) straight from an
# index, without sorting, and finds percentiles by walking a duration's index to a rank.
COMBINATION_COLUMNS = ("arm", "flags", "weeks_to_book", "step", "sent_steps", "delivered_steps", "sent_channels",
                       "delivered_channels", "opted_out_channels", "live_until", "visit_at")
BREAKDOWN_COLUMNS = ("tier", "language", "care_gap", "channel", "location_id")  # "arm" and "step" are above
KEY_COLUMNS = ("arm", "tier", "language", "care_gap", "channel", "location_id", "step", "birth_date")


def _timed(column: str) -> Index:
    return Index(f"ix_enrolment_fact_{column}", "campaign_id", column, *KEY_COLUMNS,
                 sqlite_where=text(f"{column} IS NOT NULL"), postgresql_where=text(f"{column} IS NOT NULL"))


class EnrolmentFact(Base):
    """What happened to one enrolment, as of its last refresh. Flags are 0/1 small integers
    (summed and compared alike on SQLite and PostgreSQL); ``*_steps`` and ``*_channels`` are
    bit masks (bit N: sequence step N; bits 0-3: sms, email, portal, "stop everything");
    ``flags`` packs the clock-independent flags the metrics read (``analytics.FLAGS``)."""

    __tablename__ = "enrolment_fact"
    __table_args__ = (Index("ix_enrolment_fact_combinations", "campaign_id", *COMBINATION_COLUMNS),
                      *(Index(f"ix_enrolment_fact_by_{key}", "campaign_id", key, *COMBINATION_COLUMNS)
                        for key in BREAKDOWN_COLUMNS),
                      _timed("seconds_to_book"), _timed("seconds_to_visit"))
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
    weeks_to_book: Mapped[int | None]  # completed weeks from enrolment to the first booking
    flags: Mapped[int] = mapped_column(server_default=text("0"))


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
