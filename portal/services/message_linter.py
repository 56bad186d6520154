"""The safety check every outreach text passes before it can be sent.

SMS and email bodies must not name a condition, test, medicine, procedure or
specialty (HHS guidance: the message itself is a disclosure), must name the
clinic, and SMS must carry the opt-out keyword and fit one 160-character GSM
segment where possible. The word lists cover every supported language.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Stems (regular expressions), matched at word starts after folding case and
# accents, so "diabetes", "diabético" and "diabetic" are all caught by "diabet";
# short words end in \b so "colonia" or "señor" are not mistaken for them.
CLINICAL_WORDS = {
    "en": (
        "diabet", "a1c\\b", "hba1c", "glucose", "insulin", "cholesterol", "hypertens", "blood pressure", "cancer",
        "tumor", "tumour", "oncolog", "mammo", "breast", "colon\\b", "colorectal", "colonoscop", "stool", "fit test",
        "cologuard", "pap smear", "hiv\\b", "hepatitis", "std\\b", "sti\\b", "pregnan", "prenatal", "depress", "anxiety",
        "mental health", "psychiatr", "behavioral health", "substance", "opioid", "alcohol", "asthma", "copd",
        "heart", "cardi", "kidney", "renal", "dialysis", "stroke", "dementia", "alzheimer", "obes", "weight loss",
        "statin", "metformin", "lisinopril", "atorvastatin", "prescription", "medication", "refill", "pharmac",
        "vaccin", "flu shot", "immuniz", "lab test", "blood test", "biopsy", "screening", "surgery", "procedure",
        "discharge", "hospital", "emergency", "referral", "specialist", "dermatolog", "gastro", "urolog",
        "gyn\\b", "neurolog", "endocrin", "diagnos", "condition", "result",
    ),
    "es": (
        "diabet", "a1c\\b", "glucosa", "insulina", "colesterol", "hipertens", "presion arterial", "cancer", "tumor",
        "oncolog", "mamograf", "seno\\b", "colon\\b", "colonoscop", "heces", "vih\\b", "hepatitis", "embaraz",
        "prenatal", "depresion", "ansiedad", "salud mental", "psiquiatr", "opioide", "alcohol", "asma\\b", "epoc\\b",
        "corazon", "cardi", "rinon", "renal", "dialisis", "derrame", "demencia", "alzheimer", "obesidad",
        "estatina", "metformina", "receta", "medicamento", "medicina", "farmac", "vacuna", "inmuniz",
        "analisis", "prueba de sangre", "laboratorio", "biopsia", "deteccion", "cirugia", "procedimiento",
        "alta hospitalaria", "hospital", "emergencia", "referido", "especialista", "dermatolog", "gastro",
        "urolog", "ginecolog", "neurolog", "endocrin", "diagnost", "resultado",
    ),
}
GSM_CHARS = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ ÆæßÉ!\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
                "¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€")
MAX_SMS_SEGMENTS = 3  # a link alone is ~110 characters, so one 160-character segment is rarely possible
SAMPLE_LINK = "https://portal.example.org/r/" + "x" * 84  # as long as a real link


@dataclass(frozen=True)
class Problem:
    code: str  # clinical_word, too_long, missing_clinic, missing_opt_out, missing_link
    detail: str = ""


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def clinical_words(text: str) -> list[str]:
    """Every deny-listed stem (in any supported language) that starts a word in the text."""
    folded = _fold(re.sub(r"https?://\S+", " ", text))
    found = []
    for words in CLINICAL_WORDS.values():
        for stem in words:
            if re.search(rf"(?<![a-z0-9]){stem}", folded) and stem not in found:
                found.append(stem)
    return found


def sms_segments(text: str) -> int:
    """How many SMS parts a carrier bills: GSM-7 fits 160 characters (153 per part when
    split); one character outside GSM-7 (á, í, ó, ú, emoji) makes it UCS-2: 70 (67)."""
    single, part = (160, 153) if set(text) <= GSM_CHARS else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // part)


def lint_message(text: str, channel: str, clinic_name: str, link: str | None = SAMPLE_LINK) -> list[Problem]:
    """Problems with a rendered outreach text; an empty list means it may be sent."""
    problems = [Problem("clinical_word", word) for word in clinical_words(text)]
    if clinic_name not in text:
        problems.append(Problem("missing_clinic"))
    if link is not None and link not in text:
        problems.append(Problem("missing_link"))
    if channel == "sms":
        if "STOP" not in text:
            problems.append(Problem("missing_opt_out"))
        if sms_segments(text) > MAX_SMS_SEGMENTS:
            problems.append(Problem("too_long", str(sms_segments(text))))
    return problems
