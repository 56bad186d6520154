"""Add browser-test patients to the demo clinic and print them as JSON.

Run with the same PORTAL_* environment as the server, after `portal demo --seed-only`:

    python tests/browser/seed_patients.py 12

The demo has only five patients who verify by code, and a journey that books,
asks for a ride or locks a link changes its patient for good. Each browser test
takes its own patient from this list, so no test depends on what another did.
Every patient is due for an annual wellness visit, has a phone and an email on
file, and a distinct recipient so their code can be picked out of the outbox.
Running it again reprints the same patients and links (the demo seed is idempotent).
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from datetime import date, timedelta

from sqlalchemy import select

from portal import create_app
from portal.extensions import db
from portal.models import Campaign, ChannelConsent, Enrolment, Patient, utcnow
from portal.services.care_gaps import care_gap
from portal.services.demo import ZONE, demo_link

NAMES = [("Carmen", "Ruiz", "es"), ("Walter", "Brooks", "en"), ("Lucía", "Torres", "es"), ("Harold", "Price", "en"),
         ("Rosa", "Méndez", "es"), ("Gloria", "Fisher", "en"), ("Javier", "Ortega", "es"), ("Evelyn", "Ward", "en")]


@dataclass
class SeededPatient:
    name: str
    given_name: str
    birth_date: str
    language: str
    phone: str
    email: str
    link: str


def add_patients(count: int) -> list[SeededPatient]:
    now = utcnow()
    campaign = db.session.scalar(select(Campaign).where(Campaign.name == "Welcome back 2026"))
    if campaign is None:
        raise SystemExit("seed the demo first: portal demo --seed-only")
    added = []
    for number in range(1, count + 1):
        given, family, language = NAMES[(number - 1) % len(NAMES)]
        family = f"{family}-{number}" if number > len(NAMES) else family
        external_id = f"browser-test-{number}"
        phone, email = f"+1312555{7000 + number}", f"browser.test.{number}@example.org"
        patient = db.session.scalar(select(Patient).where(Patient.external_id == external_id))
        if patient is None:
            patient = Patient(external_id=external_id, given_name=given, family_name=family,
                              birth_date=date(1950, 1, 1) + timedelta(days=397 * number), preferred_language=language,
                              phone=phone, email=email, time_zone=ZONE, city="Chicago", state="IL")
            db.session.add(patient)
            db.session.flush()
            for channel in ("sms", "email"):
                db.session.add(ChannelConsent(patient_id=patient.id, channel=channel, granted=True, source="demo",
                                              updated_at=now))
            db.session.add(Enrolment(campaign_id=campaign.id, patient_id=patient.id, care_gap_code="annual_wellness",
                                     tier=care_gap("annual_wellness").tier))
            db.session.flush()
        enrolment = db.session.scalar(select(Enrolment).where(Enrolment.patient_id == patient.id))
        added.append(SeededPatient(name=patient.full_name, given_name=patient.given_name,
                                 birth_date=patient.birth_date.isoformat(), language=patient.preferred_language,
                                 phone=patient.phone, email=patient.email, link=demo_link(db.session, enrolment, now)))
    return added


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    app = create_app()
    with app.app_context():
        patients = add_patients(count)
        db.session.commit()
    print(json.dumps([asdict(p) for p in patients], ensure_ascii=False))


if __name__ == "__main__":
    main()
