"""Shortcuts shared by the security, isolation and bad-input tests: a verified
patient in their own browser, a booking, and a snapshot of what the database holds."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

from sqlalchemy import func, select

from portal.models import Base
from tests.factories import Invited, invite_patient, latest_code
from tests.helpers import PatientBrowser

CSRF_VALUE = re.compile(r'(name="csrf_token" value=")[^"]+(")')


@dataclass
class Patient:
    browser: PatientBrowser
    invited: Invited

    @property
    def enrolment(self):
        return self.invited.enrolment


def verified_patient(app, db, in_app, setup, language: str = "en", **patient) -> Patient:
    """A patient who opened their link in a fresh browser and confirmed who they are."""
    invited = invite_patient(db, in_app, setup, language=language, **patient)
    browser = PatientBrowser(app.test_client())
    if language != "en":
        browser.get(invited.path)
        browser.switch_language(language, "/welcome")
    browser.verify(db, invited, latest_code)
    assert browser.client.get("/visit").status_code == 200, "the patient should be verified"
    return Patient(browser, invited)


def times_path(setup, appointment_type=None, location=None) -> str:
    appointment_type = appointment_type or setup.in_person
    path = f"/visit/times?type={appointment_type.id}"
    if appointment_type.modality == "in_person":
        path += f"&location={(location or setup.location).id}"
    return path


def book(patient: Patient, setup, slot_id: int | None = None, appointment_type=None):
    """Hold and book a time (the first one offered unless slot_id is given)."""
    browser = patient.browser
    appointment_type = appointment_type or setup.in_person
    browser.get(times_path(setup, appointment_type))
    slot_id = slot_id or browser.slot_ids()[0]
    browser.post("/visit/hold", {"slot": slot_id, "appointment_type": appointment_type.id})
    browser.post("/visit/book", {"slot": slot_id, "appointment_type": appointment_type.id})
    assert browser.status == 200, browser.page
    return slot_id


def row_counts(db) -> dict[str, int]:
    """How many rows every table holds; a rejected request must leave these alone."""
    db.expire_all()
    return {table.name: db.scalar(select(func.count()).select_from(table))
            for table in Base.metadata.sorted_tables}


def without_csrf(page: str) -> str:
    return CSRF_VALUE.sub(r"\1\2", page)


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()
