"""The clinic side of scheduling: locations, providers, appointment types, slots."""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.models.base import Base, intpk, json_dict, str16, str32, str64, str200, utc


class Modality(StrEnum):
    IN_PERSON = "in_person"
    TELEHEALTH = "telehealth"


def localized(texts: dict, locale: str) -> str:
    """Pick the text for a locale from a {locale: text} mapping, English as fallback."""
    return texts.get(locale) or texts.get("en") or ""


class Clinic(Base):
    __tablename__ = "clinic"
    id: Mapped[intpk]
    name: Mapped[str200]
    phone: Mapped[str32]
    email: Mapped[str200]
    postal_address: Mapped[str200]


class Location(Base):
    __tablename__ = "location"
    id: Mapped[intpk]
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinic.id"))
    name: Mapped[str200]
    address: Mapped[str200]
    time_zone: Mapped[str64]  # IANA name, e.g. America/Chicago
    phone: Mapped[str32] = mapped_column(default="")
    # {locale: text}; staff write these in each language the clinic serves
    transit_notes: Mapped[json_dict]
    parking_notes: Mapped[json_dict]
    retired: Mapped[bool] = mapped_column(default=False)

    clinic: Mapped[Clinic] = relationship()


class Provider(Base):
    __tablename__ = "provider"
    id: Mapped[intpk]
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinic.id"))
    display_name: Mapped[str200]
    retired: Mapped[bool] = mapped_column(default=False)


class AppointmentType(Base):
    __tablename__ = "appointment_type"
    id: Mapped[intpk]
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinic.id"))
    code: Mapped[str64] = mapped_column(unique=True)
    name: Mapped[json_dict]  # {locale: text}
    what_to_bring: Mapped[json_dict]  # {locale: text}
    preparation: Mapped[json_dict]  # {locale: text}, e.g. fasting before a lab visit
    service: Mapped[str16] = mapped_column(default="visit")  # visit, lab or pharmacist
    modality: Mapped[str32]
    duration_minutes: Mapped[int]
    form_code: Mapped[str32] = mapped_column(default="previsit")
    # Telehealth join link; {code} is replaced by the appointment's random video code
    join_url_pattern: Mapped[str200] = mapped_column(default="")
    buffer_before_minutes: Mapped[int] = mapped_column(default=0)
    buffer_after_minutes: Mapped[int] = mapped_column(default=0)
    min_notice_hours: Mapped[int] = mapped_column(default=2)  # how soon patients may book
    max_days_ahead: Mapped[int] = mapped_column(default=90)  # how far ahead patients may book
    retired: Mapped[bool] = mapped_column(default=False)

    gaps: Mapped[list[AppointmentTypeGap]] = relationship(cascade="all, delete-orphan")

    @property
    def gap_codes(self) -> set[str]:
        return {gap.care_gap_code for gap in self.gaps}


class AppointmentTypeGap(Base):
    """Which care gaps an appointment type closes."""

    __tablename__ = "appointment_type_gap"
    appointment_type_id: Mapped[int] = mapped_column(ForeignKey("appointment_type.id"), primary_key=True)
    care_gap_code: Mapped[str32] = mapped_column(primary_key=True)


class Slot(Base):
    """A bookable time. booked_count and the hold columns change only through
    conditional UPDATEs, which is what makes holding and booking atomic."""

    __tablename__ = "slot"
    __table_args__ = (
        CheckConstraint("booked_count >= 0 AND booked_count <= capacity", name="booked_within_capacity"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        Index("ix_slot_search", "modality", "location_id", "starts_at"),
        # video visits are searched across all of a clinic's locations: times in order without a sort
        Index("ix_slot_modality_start", "modality", "starts_at"),
        Index("uq_slot_provider_start", "provider_id", "location_id", "starts_at", unique=True),
    )
    id: Mapped[intpk]
    location_id: Mapped[int] = mapped_column(ForeignKey("location.id"))
    provider_id: Mapped[int] = mapped_column(ForeignKey("provider.id"))
    modality: Mapped[str32]
    starts_at: Mapped[utc]
    ends_at: Mapped[utc]
    # Wall-clock day and minute in the location's zone, fixed at creation, so the
    # "evenings and weekends" filter is a plain indexed comparison.
    local_weekday: Mapped[int]  # Monday = 0
    local_minutes: Mapped[int]
    capacity: Mapped[int] = mapped_column(default=1)
    booked_count: Mapped[int] = mapped_column(default=0)
    held_by_enrolment_id: Mapped[int | None] = mapped_column(ForeignKey("enrolment.id"))
    held_until: Mapped[datetime | None]
    blocked: Mapped[bool] = mapped_column(default=False)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("availability_template.id"))

    location: Mapped[Location] = relationship()
    provider: Mapped[Provider] = relationship()


__all__ = ["Clinic", "Location", "Provider", "AppointmentType", "AppointmentTypeGap", "Slot", "Modality", "localized"]
