"""Seed a realistic demo clinic, idempotently: running it again changes nothing
and reprints the same, still-valid links."""
from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from hashlib import sha256
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.models import (AppointmentType, AppointmentTypeGap, Campaign, ChannelConsent, ClinicalFact, Clinic,
                           Enrolment, FactKind, Link,
                           Location, Modality, Patient, Provider, Role, StaffUser, VerificationPolicy, utcnow)
from portal.services.availability import add_slots_for_day
from portal.services.care_gaps import care_gap
from portal.services.keyed_hash import keyed_hash
from portal.services.links import issue_link, link_url, token_for
from portal.services.staff_auth import create_staff

ZONE = "America/Chicago"
DEMO_DAYS = 28

APPOINTMENT_TYPES = [
    # code, en name, es name, modality, minutes, gaps, what to bring (en, es)
    ("wellness", "Annual wellness visit", "Visita anual de bienestar", Modality.IN_PERSON, 30,
     ["annual_wellness", "colorectal_screening"], "Your photo ID, insurance card and the medicines you take.",
     "Su identificación con foto, su tarjeta del seguro y los medicamentos que toma."),
    ("wellness_video", "Wellness check-in by video", "Consulta de bienestar por video", Modality.TELEHEALTH, 20,
     ["annual_wellness", "post_discharge_followup", "referral_open"],
     "A phone or computer with a camera, and a quiet place.",
     "Un teléfono o computadora con cámara y un lugar tranquilo."),
    ("followup", "Follow-up visit", "Visita de seguimiento", Modality.IN_PERSON, 30,
     ["post_discharge_followup", "referral_open", "diabetes_a1c"], "Your discharge papers and the medicines you take.",
     "Los papeles de su alta del hospital y los medicamentos que toma."),
    ("screening", "Screening visit", "Visita de detección", Modality.IN_PERSON, 30, ["breast_screening"],
     "Your photo ID and insurance card. Please don't use deodorant that day.",
     "Su identificación con foto y su tarjeta del seguro. Por favor no use desodorante ese día."),
    ("lab", "Lab visit", "Visita al laboratorio", Modality.IN_PERSON, 15, ["diabetes_a1c"],
     "Your photo ID and insurance card.", "Su identificación con foto y su tarjeta del seguro."),
    ("pharmacist", "Talk with a pharmacist", "Hablar con un farmacéutico", Modality.TELEHEALTH, 15, ["refill_gap"],
     "Your medicine bottles, or a list of what you take.",
     "Sus frascos de medicina o una lista de lo que toma."),
    ("flu", "Vaccine visit", "Visita de vacunación", Modality.IN_PERSON, 15, ["flu_vaccine"],
     "Your photo ID and insurance card.", "Su identificación con foto y su tarjeta del seguro."),
]

SERVICES = {"lab": "lab", "pharmacist": "pharmacist"}
PREPARATION = {"lab": {"en": "You don't need to fast. Drink water as usual and take your medicines.",
                       "es": "No necesita estar en ayunas. Tome agua como siempre y sus medicinas."}}
WELCOME = {"en": "We now have evening and Saturday hours, video visits, and two new doctors. "
                 "Parking behind the Main building is free.",
           "es": "Ahora tenemos horario por la tarde y los sábados, visitas por video y dos médicos nuevos. "
                 "El estacionamiento detrás del edificio Main es gratis."}

PATIENTS = [
    # given, family, birth date, language, phone, email, campaign key, care gap
    ("María", "García", date(1958, 3, 14), "es", "+13125550101", "maria.garcia@example.org", "main", "annual_wellness"),
    ("James", "Carter", date(1962, 7, 2), "en", "+13125550102", "", "main", "annual_wellness"),
    ("Linda", "Nguyen", date(1966, 11, 20), "en", "", "linda.nguyen@example.org", "main", "breast_screening"),
    ("Robert", "Johnson", date(1955, 1, 30), "en", "+13125550104", "robert.j@example.org", "main", "diabetes_a1c"),
    ("Ana", "López", date(1979, 5, 5), "es", "+13125550105", "", "main", "post_discharge_followup"),
    ("Dorothy", "Smith", date(1948, 9, 9), "en", "+13125550106", "", "flu", "flu_vaccine"),
    ("Carlos", "Rivera", date(1960, 4, 18), "es", "+13125550107", "", "main", "refill_gap"),
]
REFILL_MEDICINE = ("314076", "Lisinopril 10 MG Oral Tablet")


DEMO_STAFF = [
    # email, name, role: one account per role so every console view can be tried
    ("admin@riverside.example.org", "Alex Admin", Role.ADMIN),
    ("scheduler@riverside.example.org", "Sam Scheduler", Role.SCHEDULER),
    ("coordinator@riverside.example.org", "Casey Coordinator", Role.COORDINATOR),
    ("campaigns@riverside.example.org", "Morgan Manager", Role.CAMPAIGN_MANAGER),
]
DEMO_STAFF_PASSWORD = "demo-password-2026"


@dataclass
class DemoStaff:
    email: str
    role: str
    password: str
    totp_secret: str


@dataclass
class DemoPatient:
    name: str
    birth_date: str
    language: str
    link: str


def _get_or_add(session: Session, model, lookup: dict, **values):
    row = session.scalar(select(model).filter_by(**lookup))
    if row is None:
        row = model(**lookup, **values)
        session.add(row)
        session.flush()
    return row


def _demo_nonce(enrolment_id: int, generation: int) -> str:
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(), f"demo-link:{enrolment_id}:{generation}".encode(),
                      sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def demo_link(session: Session, enrolment: Enrolment, now: datetime) -> str:
    """Reprint the enrolment's current demo link, or issue the next one if it lapsed."""
    generation = session.scalar(select(func.count()).select_from(Link).where(Link.enrolment_id == enrolment.id))
    latest = session.scalar(select(Link).where(Link.enrolment_id == enrolment.id).order_by(Link.id.desc()).limit(1))
    if latest is not None:
        nonce = _demo_nonce(enrolment.id, generation - 1)
        if latest.nonce_hash == keyed_hash(nonce, "link") and latest.revoked_at is None and latest.expires_at > now:
            return link_url(token_for(latest, nonce))
    _link, token = issue_link(session, enrolment, now, nonce=_demo_nonce(enrolment.id, generation))
    return link_url(token)


def _seed_slots(session: Session, locations: list[Location], providers: list[Provider], today: date) -> None:
    """Four weeks: weekdays 8-17, Tue/Thu evenings to 19:00, Saturday mornings, and
    video visits at lunch and in the evening."""
    main, north = locations
    for offset in range(DEMO_DAYS):
        day = today + timedelta(days=offset)
        weekday = day.weekday()
        if weekday < 5:
            add_slots_for_day(session, location=main, provider_id=providers[0].id, modality=Modality.IN_PERSON,
                              day=day, start=time(8), end=time(19) if weekday in (1, 3) else time(17), minutes=30)
            add_slots_for_day(session, location=north, provider_id=providers[1].id, modality=Modality.IN_PERSON,
                              day=day, start=time(9), end=time(16), minutes=30)
            add_slots_for_day(session, location=main, provider_id=providers[2].id, modality=Modality.TELEHEALTH,
                              day=day, start=time(12), end=time(14), minutes=20)
            add_slots_for_day(session, location=main, provider_id=providers[2].id, modality=Modality.TELEHEALTH,
                              day=day, start=time(17), end=time(20), minutes=20)
        elif weekday == 5:
            add_slots_for_day(session, location=north, provider_id=providers[1].id, modality=Modality.IN_PERSON,
                              day=day, start=time(9), end=time(12), minutes=30)


def _demo_totp_secret(email: str) -> str:
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(), f"demo-totp:{email}".encode(), sha256).digest()
    return base64.b32encode(digest[:20]).decode()


def _seed_staff(session: Session) -> list[DemoStaff]:
    """Demo accounts with their authenticator already enrolled, so the printed secret works."""
    accounts = []
    for email, name, role in DEMO_STAFF:
        user = session.scalar(select(StaffUser).where(StaffUser.email == email))
        if user is None:
            user = create_staff(session, email, role, name, DEMO_STAFF_PASSWORD)
            user.totp_secret = _demo_totp_secret(email)
        accounts.append(DemoStaff(email, str(role), DEMO_STAFF_PASSWORD, user.totp_secret))
    return accounts


def seed_demo(session: Session, now: datetime | None = None) -> tuple[list[DemoPatient], list[DemoStaff]]:
    """Create (or find) the demo clinic; return each demo patient with their link,
    and the demo staff accounts."""
    now = now or utcnow()
    clinic = _get_or_add(session, Clinic, {"name": "Riverside Clinic"}, phone="+1 312 555 0100",
                         email="hello@riverside.example.org", postal_address="100 River St, Chicago, IL 60601")
    locations = [
        _get_or_add(session, Location, {"clinic_id": clinic.id, "name": "Riverside Main"},
                    address="100 River St, Chicago, IL 60601", time_zone=ZONE, phone="+1 312 555 0100",
                    transit_notes={"en": "Bus 151 stops at the door.", "es": "El autobús 151 para en la puerta."},
                    parking_notes={"en": "Free parking behind the building.",
                                   "es": "Estacionamiento gratis detrás del edificio."}),
        _get_or_add(session, Location, {"clinic_id": clinic.id, "name": "Riverside North"},
                    address="4200 N Lincoln Ave, Chicago, IL 60618", time_zone=ZONE, phone="+1 312 555 0110",
                    transit_notes={"en": "Brown Line, Irving Park station, 5 minutes' walk.",
                                   "es": "Línea Café, estación Irving Park, a 5 minutos a pie."},
                    parking_notes={"en": "Street parking.", "es": "Estacionamiento en la calle."}),
    ]
    providers = [_get_or_add(session, Provider, {"clinic_id": clinic.id, "display_name": name})
                 for name in ("Dr. Amina Patel", "Dr. Luis Romero", "Nurse Practitioner Grace Kim")]
    for code, name_en, name_es, modality, minutes, gaps, bring_en, bring_es in APPOINTMENT_TYPES:
        kind = _get_or_add(session, AppointmentType, {"code": code}, clinic_id=clinic.id,
                           name={"en": name_en, "es": name_es}, what_to_bring={"en": bring_en, "es": bring_es},
                           modality=modality, duration_minutes=minutes,
                           join_url_pattern="https://video.riverside.example.org/join/{code}"
                           if modality == Modality.TELEHEALTH else "",
                           service=SERVICES.get(code, "visit"), preparation=PREPARATION.get(code, {}))
        if not kind.gaps:
            kind.gaps = [AppointmentTypeGap(care_gap_code=gap) for gap in gaps]
    campaigns = {
        "main": _get_or_add(session, Campaign, {"clinic_id": clinic.id, "name": "Welcome back 2026"},
                            status="active", verification_policy=VerificationPolicy.DOB_AND_CODE,
                            welcome_note=WELCOME, care_gap_codes=["annual_wellness", "breast_screening",
                                                                  "diabetes_a1c", "post_discharge_followup",
                                                                  "refill_gap"], channels=["sms", "email"]),
        "flu": _get_or_add(session, Campaign, {"clinic_id": clinic.id, "name": "Flu season check-in"},
                           status="active", verification_policy=VerificationPolicy.DOB_AND_LAST_NAME),
    }
    _seed_slots(session, locations, providers, now.astimezone(ZoneInfo(ZONE)).date())
    demo: list[DemoPatient] = []
    for given, family, birth, language, phone, email, campaign_key, gap in PATIENTS:
        patient = _get_or_add(session, Patient, {"external_id": f"demo-{given.lower()}-{birth.isoformat()}"},
                              given_name=given, family_name=family, birth_date=birth, preferred_language=language,
                              phone=phone, email=email, time_zone=ZONE, city="Chicago", state="IL")
        for channel, address in (("sms", phone), ("email", email)):
            if address:
                _get_or_add(session, ChannelConsent, {"patient_id": patient.id, "channel": channel},
                            granted=True, source="demo", updated_at=now)
        enrolment = _get_or_add(session, Enrolment, {"campaign_id": campaigns[campaign_key].id,
                                                     "patient_id": patient.id, "care_gap_code": gap},
                                tier=care_gap(gap).tier)
        if gap == "refill_gap" and enrolment.subject_fact_id is None:
            patient.pharmacy = "Walgreens, 150 N State St, Chicago"
            enrolment.subject_fact_id = _get_or_add(
                session, ClinicalFact, {"source": "demo", "source_key": f"{patient.external_id}:refill"},
                patient_id=patient.id, kind=FactKind.MEDICATION, system="RxNorm", code=REFILL_MEDICINE[0],
                description=REFILL_MEDICINE[1], started_on=now.date() - timedelta(days=75), days_supply=30).id
        demo.append(DemoPatient(name=patient.full_name, birth_date=birth.isoformat(), language=language,
                                link=demo_link(session, enrolment, now)))
    return demo, _seed_staff(session)
