"""Campaigns, enrolments (patient x campaign x care gap), links and the event log."""
from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.models.base import Base, intpk, json_dict, str32, str64, str200, utc_created
from portal.models.clinic import Clinic
from portal.models.patient import Patient


class VerificationPolicy(StrEnum):
    DOB_AND_CODE = "dob_code"  # default: birth date + one-time code to a contact on file
    DOB_AND_LAST_NAME = "dob_last_name"  # low-risk campaigns; no clinical detail shown


class EnrolmentStatus(StrEnum):
    INVITED = "invited"
    BOOKED = "booked"
    CLOSED = "closed"  # done elsewhere, moved, declined, opted out
    SNOOZED = "snoozed"  # remind me later


class Campaign(Base):
    __tablename__ = "campaign"
    id: Mapped[intpk]
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinic.id"))
    name: Mapped[str200]
    status: Mapped[str32] = mapped_column(default="draft")
    verification_policy: Mapped[str32] = mapped_column(default=VerificationPolicy.DOB_AND_CODE)
    link_lifetime_days: Mapped[int] = mapped_column(default=14)
    care_gap_codes: Mapped[list[str]] = mapped_column(JSON, default=list)
    holdout_percent: Mapped[int] = mapped_column(default=10)
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)  # in order of preference
    step_days: Mapped[list[int]] = mapped_column(JSON, default=lambda: [0, 7, 14, 30])
    escalate_tier1: Mapped[bool] = mapped_column(default=True)  # tier 1 goes straight to a call
    max_per_day: Mapped[int] = mapped_column(default=1)  # frequency caps, per patient
    max_per_week: Mapped[int] = mapped_column(default=3)
    recontact_days: Mapped[int] = mapped_column(default=30)  # no one contacted this recently
    window_days: Mapped[int] = mapped_column(default=90)  # how long a booking counts as won back
    max_invites: Mapped[int | None]  # don't invite more people than there are slots
    launched_at: Mapped[datetime | None]
    welcome_note: Mapped[json_dict]  # {locale: "what's new since your last visit"}, shown after verification
    created_at: Mapped[utc_created]

    clinic: Mapped[Clinic] = relationship()

    @property
    def shows_clinical_detail(self) -> bool:
        return self.verification_policy == VerificationPolicy.DOB_AND_CODE


class Enrolment(Base):
    __tablename__ = "enrolment"
    __table_args__ = (UniqueConstraint("campaign_id", "patient_id", "care_gap_code"),
                      Index("ix_enrolment_due", "next_step_at"))
    id: Mapped[intpk]
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    care_gap_code: Mapped[str32]
    status: Mapped[str32] = mapped_column(default=EnrolmentStatus.INVITED)
    tier: Mapped[int] = mapped_column(default=4)
    variant: Mapped[str32] = mapped_column(default="A")
    holdout: Mapped[bool] = mapped_column(default=False)
    # Wrong birth dates are counted here, not in a cookie, so a new browser can't reset them.
    dob_failures: Mapped[int] = mapped_column(default=0)
    locked_at: Mapped[datetime | None]
    remind_after: Mapped[date | None]
    closed_reason: Mapped[str32] = mapped_column(default="")
    next_step: Mapped[int] = mapped_column(default=0)  # index into campaign.step_days
    next_step_at: Mapped[datetime | None]  # None: nothing more to send
    escalated_at: Mapped[datetime | None]  # put on the coordinators' call list
    subject_fact_id: Mapped[int | None] = mapped_column(ForeignKey("clinical_fact.id"))  # e.g. the medicine to refill
    last_contacted_at: Mapped[datetime | None]
    created_at: Mapped[utc_created]

    campaign: Mapped[Campaign] = relationship()
    patient: Mapped[Patient] = relationship()


class Link(Base):
    """An invitation link. Only a hash of its random nonce is stored."""

    __tablename__ = "link"
    id: Mapped[intpk]
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolment.id"), index=True)
    purpose: Mapped[str32]
    nonce_hash: Mapped[str64] = mapped_column(unique=True)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str32] = mapped_column(default="")

    enrolment: Mapped[Enrolment] = relationship()


class Event(Base):
    """Append-only record of what happened to an enrolment; the campaign funnel reads it.

    detail never holds PHI: ids, codes and reasons only.
    """

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_campaign_kind", "campaign_id", "kind"),
        Index("ix_event_enrolment_time", "enrolment_id", "occurred_at"),
    )
    id: Mapped[intpk]
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolment.id"))
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id"))
    kind: Mapped[str32]
    actor: Mapped[str32] = mapped_column(default="patient")
    detail: Mapped[json_dict]
    occurred_at: Mapped[utc_created]


__all__ = ["Campaign", "Enrolment", "EnrolmentStatus", "Event", "Link", "VerificationPolicy"]
