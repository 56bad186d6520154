"""Every education note reads at grade 8 or below, in English and in Spanish."""
from __future__ import annotations

import pytest
import textstat

from portal.services.care_gaps import CARE_GAPS
from portal.services.education import NOTES, education_note

MAX_GRADE = 8
MIN_FERNANDEZ_HUERTA = 70  # "fairly easy" or easier: about 7th grade and below


def note_text(code: str, locale: str) -> str:
    note = education_note(code, locale)
    return " ".join((note.why, note.visit, note.length, note.cost))


def test_every_care_gap_has_a_note_in_each_language():
    assert set(NOTES) == set(CARE_GAPS)
    for notes in NOTES.values():
        assert set(notes) == {"en", "es"}


@pytest.mark.parametrize("code", sorted(NOTES))
def test_english_notes_are_grade_8_or_below(code):
    textstat.set_lang("en")
    assert textstat.flesch_kincaid_grade(note_text(code, "en")) <= MAX_GRADE


@pytest.mark.parametrize("code", sorted(NOTES))
def test_spanish_notes_are_grade_8_or_below(code):
    textstat.set_lang("es")
    text = note_text(code, "es")
    assert textstat.fernandez_huerta(text) >= MIN_FERNANDEZ_HUERTA
    assert textstat.crawford(text) <= MAX_GRADE  # Crawford: years of schooling needed


def test_the_measures_do_catch_hard_text():
    """The check can fail: a dense clinical paragraph scores far above grade 8."""
    textstat.set_lang("en")
    assert textstat.flesch_kincaid_grade(
        "Comprehensive longitudinal surveillance of glycosylated haemoglobin concentrations facilitates "
        "individualised pharmacotherapeutic optimisation, minimising microvascular complication probabilities.") > 12
    textstat.set_lang("es")
    assert textstat.fernandez_huerta(
        "La monitorización longitudinal exhaustiva de concentraciones de hemoglobina glicosilada facilita la "
        "optimización farmacoterapéutica individualizada, minimizando probabilidades de complicaciones.") < 40
