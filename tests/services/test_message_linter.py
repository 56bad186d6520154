"""No outreach text may name a condition, test, medicine or procedure — in any language."""
from __future__ import annotations

from pathlib import Path

import pytest

from portal.services.message_linter import SAMPLE_LINK, clinical_words, lint_message, sms_segments
from portal.services.messages import render_message
from tests.factories import make_clinic

TEMPLATES = Path(__file__).resolve().parents[2] / "portal" / "templates" / "messages"
CONTEXT = {"code": "123456", "minutes": 10, "link": SAMPLE_LINK, "link_days": 14,
           "unsubscribe_url": "https://portal.example.org/unsubscribe/x"}
OUTREACH = {"invite", "reminder"}  # they must carry the link; notices and codes don't
NO_STOP_LINE = {"code", "sms_stopped"}  # a code the patient asked for; the reply confirming STOP


@pytest.mark.parametrize("text, language", [
    ("Your diabetes check is due at Riverside Clinic. Book: {link} Reply STOP", "en"),
    ("Time for your mammogram at Riverside Clinic: {link} Reply STOP", "en"),
    ("Riverside Clinic: your A1C lab is overdue {link} Reply STOP", "en"),
    ("Riverside Clinic: le toca su mamografía. Reserve: {link} Responda STOP", "es"),
    ("Riverside Clinic: su prueba de diabetes está pendiente {link} Responda STOP", "es"),
    ("Riverside Clinic: renueve su medicamento para la presión arterial {link} STOP", "es"),
])
def test_the_linter_refuses_a_message_that_names_something_clinical(text, language):
    problems = lint_message(text.replace("{link}", SAMPLE_LINK), "sms", "Riverside Clinic")
    assert [p.code for p in problems] == ["clinical_word"] * len(problems) and problems


def test_ordinary_words_are_not_mistaken_for_clinical_ones():
    assert clinical_words("Hola señor, su colonia. Gracias, mamá. Visit Riverside Clinic.") == []


def test_sms_needs_the_clinic_the_link_and_stop():
    codes = {p.code for p in lint_message("Book now", "sms", "Riverside Clinic")}
    assert codes == {"missing_clinic", "missing_link", "missing_opt_out"}


def test_sms_parts_are_counted_as_carriers_do():
    assert sms_segments("a" * 160) == 1 and sms_segments("a" * 161) == 2
    assert sms_segments("ó" * 70) == 1 and sms_segments("ó" * 71) == 2  # one accent makes it UCS-2


def shipped_messages():
    for folder in sorted(TEMPLATES.iterdir()):
        for channel in ("sms", "email"):
            if (folder / ("sms.txt" if channel == "sms" else "body.txt")).exists():
                for locale in ("en", "es"):
                    yield folder.name, channel, locale


@pytest.mark.parametrize("template, channel, locale", list(shipped_messages()))
def test_every_shipped_template_passes_in_every_language(app, db, template, channel, locale):
    clinic = make_clinic(db).clinic
    with app.test_request_context():
        subject, text, html = render_message(template, channel, locale, {
            **CONTEXT, "clinic": clinic, "clinic_name": clinic.name, "clinic_phone": clinic.phone})
    for part in (subject, text, html):
        assert clinical_words(part) == [], (template, channel, locale, part)
    link = SAMPLE_LINK if template in OUTREACH else None
    problems = [p for p in lint_message(text, channel, clinic.name, link=link)
                if not (p.code == "missing_opt_out" and template in NO_STOP_LINE)]
    assert problems == [], (template, channel, locale, text)
