"""What a patient does in the portal: appointments, pre-visit forms, help requests."""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.models.base import Base, intpk, json_dict, str16, str32, str200, utc_created
from portal.models.clinic import AppointmentType, Slot


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"
    RESCHEDULED = "rescheduled"
    ATTENDED = "attended"
    NO_SHOW = "no_show"


class Appointment(Base):
    __tablename__ = "appointment"
    __table_args__ = (
        # One live booking per enrolment (and per place in a lab-then-visit pair): a double
        # submit or a replayed form can't make two.
        Index(
            "uq_appointment_live_per_enrolment",
            "enrolment_id",
            "sequence",
            unique=True,
            sqlite_where=text("status = 'booked'"),
            postgresql_where=text("status = 'booked'"),
        ),
    )
    id: Mapped[intpk]
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolment.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    slot_id: Mapped[int] = mapped_column(ForeignKey("slot.id"), index=True)
    appointment_type_id: Mapped[int] = mapped_column(ForeignKey("appointment_type.id"))
    status: Mapped[str16] = mapped_column(default=AppointmentStatus.BOOKED)
    booked_via: Mapped[str16] = mapped_column(default="portal")
    video_code: Mapped[str32] = mapped_column(default="")  # random; builds the telehealth join link
    booked_at: Mapped[utc_created]
    cancelled_at: Mapped[datetime | None]
    cancel_reason: Mapped[str32] = mapped_column(default="")
    replaced_by_id: Mapped[int | None] = mapped_column(ForeignKey("appointment.id"))
    sequence: Mapped[int] = mapped_column(default=0)  # 0: the visit; 1: the follow-up booked with a lab visit

    slot: Mapped[Slot] = relationship()
    appointment_type: Mapped[AppointmentType] = relationship()


class FormResponse(Base):
    """Pre-visit answers; saved as a draft until the patient submits them."""

    __tablename__ = "form_response"
    __table_args__ = (UniqueConstraint("enrolment_id", "form_code"),)
    id: Mapped[intpk]
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolment.id"))
    form_code: Mapped[str32]
    answers: Mapped[json_dict]
    completed_at: Mapped[datetime | None]
    updated_at: Mapped[utc_created]


class HelpKind(StrEnum):
    COST = "cost"
    RIDE = "ride"
    INTERPRETER = "interpreter"


class HelpStatus(StrEnum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"


class HelpRequest(Base):
    __tablename__ = "help_request"
    __table_args__ = (Index("ix_help_request_status_created", "status", "created_at"),)
    id: Mapped[intpk]
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolment.id"), index=True)
    kind: Mapped[str16]
    details: Mapped[json_dict]
    status: Mapped[str16] = mapped_column(default=HelpStatus.NEW)
    created_at: Mapped[utc_created]
    updated_at: Mapped[utc_created]
    resolution_note: Mapped[str200] = mapped_column(default="")
    assigned_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_user.id"))



class RefillStatus(StrEnum):
    NEW = "new"
    SENT_TO_PHARMACY = "sent_to_pharmacy"
    DONE = "done"
    NEEDS_VISIT = "needs_visit"


class RefillRequest(Base):
    """A patient's one-tap refill request or pharmacist callback, for the care team's queue."""

    __tablename__ = "refill_request"
    __table_args__ = (Index("ix_refill_request_status_created", "status", "created_at"),)
    id: Mapped[intpk]
    enrolment_id: Mapped[int] = mapped_column(ForeignKey("enrolment.id"), index=True)
    kind: Mapped[str16]  # refill or pharmacist
    medication_fact_id: Mapped[int | None] = mapped_column(ForeignKey("clinical_fact.id"))
    pharmacy: Mapped[str200] = mapped_column(default="")
    status: Mapped[str16] = mapped_column(default=RefillStatus.NEW)
    created_at: Mapped[utc_created]
    updated_at: Mapped[utc_created]
    completed_at: Mapped[datetime | None]  # set when an import shows the medicine dispensed
