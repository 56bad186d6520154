"""Build realistic data for tests: a clinic with locations, types and slots, and
patients enrolled in a campaign, each with a live link."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import (AppointmentType, AppointmentTypeGap, AvailabilityTemplate, Campaign, ChannelConsent, Clinic,
                           Enrolment, Location, Modality, OutboxMessage, Patient, Provider, Role, Slot, StaffUser,
                           VerificationPolicy)
from portal.services.availability import add_slots_for_day
from portal.services.links import issue_link

ZONE = "America/Chicago"
# The public Synthea sample (13 synthetic patients, Apache-2.0; tests/data/synthea-csv/SOURCE.md),
# kept in the repository so its tests run in any clean clone.
SYNTHEA_SAMPLE = Path(__file__).parent / "data" / "synthea-csv"


@dataclass
class ClinicSetup:
    clinic: Clinic
    location: Location
    other_location: Location
    provider: Provider
    in_person: AppointmentType
    video: AppointmentType
    campaign: Campaign


def make_clinic(db: Session, policy: str = VerificationPolicy.DOB_AND_CODE, gap: str = "annual_wellness") -> ClinicSetup:
    clinic = Clinic(name="Riverside Clinic", phone="+1 312 555 0100", email="hi@example.org",
                    postal_address="100 River St, Chicago, IL")
    db.add(clinic)
    db.flush()
    location = Location(clinic_id=clinic.id, name="Main", address="100 River St", time_zone=ZONE,
                        transit_notes={"en": "Bus 151", "es": "Autobús 151"}, parking_notes={})
    other = Location(clinic_id=clinic.id, name="North", address="4200 N Lincoln", time_zone=ZONE,
                     transit_notes={}, parking_notes={})
    provider = Provider(clinic_id=clinic.id, display_name="Dr. Test")
    db.add_all([location, other, provider])
    suffix = clinic.id  # type codes are unique across clinics; an object's id() can repeat
    in_person = AppointmentType(clinic_id=clinic.id, code=f"wellness-{suffix}",
                                name={"en": "Annual wellness visit", "es": "Visita anual de bienestar"},
                                what_to_bring={"en": "Photo ID", "es": "Identificación"},
                                modality=Modality.IN_PERSON, duration_minutes=30,
                                gaps=[AppointmentTypeGap(care_gap_code=gap)])
    video = AppointmentType(clinic_id=clinic.id, code=f"video-{suffix}",
                            name={"en": "Video check-in", "es": "Consulta por video"}, what_to_bring={},
                            modality=Modality.TELEHEALTH, duration_minutes=20,
                            join_url_pattern="https://video.example.org/{code}",
                            gaps=[AppointmentTypeGap(care_gap_code=gap)])
    campaign = Campaign(clinic_id=clinic.id, name="Win-back", status="active", verification_policy=policy)
    db.add_all([in_person, video, campaign])
    db.flush()
    return ClinicSetup(clinic, location, other, provider, in_person, video, campaign)


def add_slots(db: Session, setup: ClinicSetup, day: date, start: time = time(9), end: time = time(12),
              modality: str = Modality.IN_PERSON, location: Location | None = None, capacity: int = 1) -> list[Slot]:
    return add_slots_for_day(db, location=location or setup.location, provider_id=setup.provider.id,
                             modality=modality, day=day, start=start, end=end, minutes=30, capacity=capacity)


def future_day(days: int = 3) -> date:
    return (datetime.now(timezone.utc).astimezone(ZoneInfo(ZONE)) + timedelta(days=days)).date()


@dataclass
class Invited:
    patient: Patient
    enrolment: Enrolment
    token: str

    @property
    def path(self) -> str:
        return f"/r/{self.token}"


def invite_patient(db: Session, in_app, setup: ClinicSetup, *, given="Maria", family="Garcia",
                   birth_date=date(1958, 3, 14), language="en", phone="+13125550101",
                   email="maria@example.org", gap="annual_wellness") -> Invited:
    patient = Patient(given_name=given, family_name=family, birth_date=birth_date, preferred_language=language,
                      phone=phone, email=email, time_zone=ZONE)
    db.add(patient)
    db.flush()
    now = datetime.now(timezone.utc)
    for channel in ("sms", "email"):
        db.add(ChannelConsent(patient_id=patient.id, channel=channel, granted=True, source="test", updated_at=now))
    enrolment = Enrolment(campaign_id=setup.campaign.id, patient_id=patient.id, care_gap_code=gap)
    db.add(enrolment)
    db.flush()
    enrolment.campaign = setup.campaign
    with in_app():
        _link, token = issue_link(db, enrolment)
    db.commit()
    return Invited(patient, enrolment, token)


def latest_code(db: Session, patient: Patient) -> str:
    db.expire_all()
    message = db.scalar(select(OutboxMessage).where(OutboxMessage.patient_id == patient.id,
                                                    OutboxMessage.template == "code")
                        .order_by(OutboxMessage.id.desc()).limit(1))
    return re.search(r"\b(\d{6})\b", message.body_text).group(1)


def add_provider(db: Session, setup: ClinicSetup, name: str = "Dr. Second") -> Provider:
    provider = Provider(clinic_id=setup.clinic.id, display_name=name)
    db.add(provider)
    db.flush()
    return provider


def make_scheduler(db: Session, email: str = "scheduler@clinic.test") -> StaffUser:
    """A staff row to sign blocks with; no password or TOTP (see tests/staff_helpers.py for sign-in)."""
    user = StaffUser(email=email, display_name="Sam Scheduler", role=Role.SCHEDULER, password_hash="!unusable")
    db.add(user)
    db.flush()
    return user


def make_template(db: Session, setup: ClinicSetup, *, weekdays: str = "01234", start: time = time(9),
                  end: time = time(12), minutes: int = 30, valid_from: date, valid_until: date,
                  modality: str = Modality.IN_PERSON, capacity: int = 1, provider: Provider | None = None,
                  location: Location | None = None) -> AvailabilityTemplate:
    template = AvailabilityTemplate(provider_id=(provider or setup.provider).id,
                                    location_id=(location or setup.location).id, modality=modality,
                                    weekdays=weekdays, start_time=start, end_time=end, slot_minutes=minutes,
                                    capacity=capacity, valid_from=valid_from, valid_until=valid_until, active=True)
    db.add(template)
    db.flush()
    return template
