"""Every patient form field, given empty, huge, wrong-type, script and non-Latin
values, in English and Spanish: never a 500; a rejection is a 4xx whose messages
come from the catalog in the page's language, with nothing half-saved; free text
that is accepted is stored exactly as typed."""
from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import wtforms
from babel.support import Translations
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select

from portal.config import PROJECT_ROOT
from portal.models import (Appointment, Enrolment, Event, FormResponse, HelpRequest, OneTimeCode, Patient, Slot,
                           VerificationPolicy)
from tests.factories import add_slots, future_day, invite_patient, latest_code, make_clinic
from tests.helpers import CSRF, PatientBrowser
from tests.patients import book, row_counts, times_path, verified_patient

UNICODE = "Nguyễn Thị 東京 مرحبا Ωμέγα 😀👩🏽‍⚕️"
SCRIPT = "<script>alert(1)</script>"
BAD_VALUES = {
    "empty": "",
    "huge": "x" * 10_000,
    "huge_digits": "9" * 10_000,
    "huge_unicode": "😀" * 10_000,  # 40 kB of UTF-8, 120 kB once form-encoded: past the body limit
    "script": SCRIPT,
    "unicode": UNICODE,
    "negative": "-1",
    "decimal": "1.5",
    "beyond_int64": "99999999999999999999",
    "list": ["", "x"],
    "nul": "a\x00b",
}
MARKUP_OR_CONTROL = re.compile(r"[<>\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# --- What a translated message is -------------------------------------------------

def _pattern(text: str) -> str:
    return re.sub(r"%\\\(\w+\\\)[sd]|%[sd]", ".+?", re.escape(text))


@cache
def catalog_messages(language: str) -> re.Pattern:
    """Every message the page may show in `language` (msgids for English; for Spanish
    the translations, from our catalog and WTForms', that differ from their msgid),
    one or more of them joined by spaces as a field shows its errors."""
    catalogs = [Translations.load(str(PROJECT_ROOT / "translations"), ["es"]),
                Translations.load(str(Path(wtforms.__file__).parent / "locale"), ["es"], domain="wtforms")]
    texts = set()
    for catalog in catalogs:
        assert catalog._catalog, "a catalog failed to load"
        for msgid, msgstr in catalog._catalog.items():
            msgid = msgid[0] if isinstance(msgid, tuple) else msgid
            if not msgid:
                continue
            if language == "en":
                texts.add(msgid)
            elif msgstr and msgstr != msgid:
                texts.add(msgstr)
    one = "(?:" + "|".join(_pattern(text) for text in sorted(texts, key=len, reverse=True)) + ")"
    return re.compile(f"{one}(?: {one})*", re.DOTALL)


def shown_messages(page: str) -> list[str]:
    """The error messages on a page: field errors and form errors, or else the
    heading and text of a whole-page error."""
    messages = re.findall(r'<p class="error"[^>]*>(.*?)</p>', page, re.DOTALL)
    summary = re.search(r'<div class="errors"[^>]*>(.*?)</div>', page, re.DOTALL)
    if summary:
        messages += [item for item in re.findall(r"<li>(.*?)</li>", summary.group(1), re.DOTALL) if "<a " not in item]
    if not messages:
        main = re.search(r"<main[^>]*>(.*?)</main>", page, re.DOTALL).group(1)
        messages = re.findall(r"<h1>(.*?)</h1>", main, re.DOTALL)[:1] + re.findall(r"<p>(.*?)</p>", main, re.DOTALL)[:1]
    return [html.unescape(re.sub(r"<[a-zA-Z/!][^>]*>", "", message)).strip() for message in messages]


def assert_translated_rejection(response, language: str, what: str) -> None:
    page = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, (what, response.status_code)
    assert f'<html lang="{language}">' in page, what
    messages = shown_messages(page)
    assert messages, f"{what}: a rejection must say what went wrong"
    catalog = catalog_messages(language)
    untranslated = [m for m in messages if not catalog.fullmatch(m)]
    assert not untranslated, f"{what}: not from the {language} catalog: {untranslated}"


# --- The forms ------------------------------------------------------------------------

TEXT, REQUIRED_TEXT, UNSTORED_TEXT, CHOICE, OPTIONAL_CHOICE, NUMBER, SECRET, IGNORED = (
    "text", "required_text", "unstored_text", "choice", "optional_choice", "number", "secret", "ignored")


@dataclass
class PatientForm:
    stage: str  # "opened", "code_sent", "verified" or "booked"
    page: str  # where the form is shown (a GET for the CSRF token)
    path: str
    valid: dict
    fields: dict[str, str]
    stored: dict[str, str] = field(default_factory=dict)  # field -> where an accepted value is kept
    consumes: bool = False  # an accepted answer ends the stage (a cancelled visit): start again
    counted: tuple[str, ...] = ()  # events a rejected answer may still record (a failed identity check)


FORMS = {
    "send_code": PatientForm("opened", "/welcome", "/welcome/code", {"channel": "sms"}, {"channel": CHOICE}),
    "verify": PatientForm("code_sent", "/welcome/verify", "/welcome/verify",
                          {"birth_month": "3", "birth_day": "14", "birth_year": "1958", "code": "{code}"},
                          {"birth_month": CHOICE, "birth_day": NUMBER, "birth_year": NUMBER, "code": NUMBER}),
    "verify_by_name": PatientForm("opened_by_name", "/welcome", "/welcome/verify",
                                  {"birth_month": "3", "birth_day": "14", "birth_year": "1958", "last_name": "Garcia"},
                                  {"birth_month": CHOICE, "birth_day": NUMBER, "birth_year": NUMBER,
                                   "last_name": SECRET}, counted=("verification_failed",)),
    "hold": PatientForm("verified", "{times}", "/visit/hold", {"slot": "{slot}", "appointment_type": "{type}"},
                        {"slot": NUMBER, "appointment_type": NUMBER}),
    "book": PatientForm("verified", "{times}", "/visit/book", {"slot": "{slot}", "appointment_type": "{type}"},
                        {"slot": NUMBER, "appointment_type": NUMBER}),
    "cancel": PatientForm("booked", "/visit/cancel", "/visit/cancel", {"reason": "time"},
                          {"reason": OPTIONAL_CHOICE}, consumes=True),
    "previsit": PatientForm("booked", "/visit/form", "/visit/form", {"reason": "Check-up", "save": "1"},
                            {"phone": TEXT, "email": TEXT, "insurance_carrier": TEXT, "insurance_member_id": TEXT,
                             "reason": TEXT, "medications": TEXT, "accessibility": TEXT,
                             "interpreter": OPTIONAL_CHOICE},
                            stored={name: "form" for name in ("phone", "email", "insurance_carrier",
                                                              "insurance_member_id", "reason", "medications",
                                                              "accessibility")}),
    "help_cost": PatientForm("verified", "/visit/help", "/visit/help/cost", {"cost-question": "Is it covered?"},
                             {"cost-question": REQUIRED_TEXT}, stored={"cost-question": "help"}),
    "help_ride": PatientForm("verified", "/visit/help", "/visit/help/ride",
                             {"ride-pickup_address": "12 Elm St", "ride-time_window": "morning",
                              "ride-mobility": "wheelchair"},
                             {"ride-pickup_address": REQUIRED_TEXT, "ride-time_window": CHOICE,
                              "ride-mobility": OPTIONAL_CHOICE}, stored={"ride-pickup_address": "help"}),
    "help_interpreter": PatientForm("verified", "/visit/help", "/visit/help/interpreter",
                                    {"interpreter-language": "Tagalog"}, {"interpreter-language": REQUIRED_TEXT},
                                    stored={"interpreter-language": "help"}),
    "other": PatientForm("verified", "/visit/other", "/visit/other", {"choice": "remind_later", "weeks": "2"},
                         {"choice": CHOICE, "weeks": OPTIONAL_CHOICE, "note": UNSTORED_TEXT}),
    "survey": PatientForm("verified", "/visit/other", "/visit/survey", {"survey-reason": "cost"},
                          {"survey-reason": CHOICE}),
    "language": PatientForm("verified", "/visit", "/language", {"lang": "{lang}", "next": "/visit"},
                            {"lang": IGNORED, "next": IGNORED}),
}


@dataclass
class Visitor:
    browser: PatientBrowser
    patient_id: int
    enrolment_id: int
    values: dict

    @property
    def client(self):
        return self.browser.client

    def token(self) -> str:
        return CSRF.search(self.browser.page).group(1)


def visitor_at(stage: str, language: str, app, db, in_app) -> Visitor:
    setup = make_clinic(db)
    add_slots(db, setup, future_day(3))
    values = {"lang": language, "type": setup.in_person.id, "times": times_path(setup)}
    if stage in ("opened", "code_sent", "opened_by_name"):
        if stage == "opened_by_name":
            setup.campaign.verification_policy = VerificationPolicy.DOB_AND_LAST_NAME
            db.flush()
        invited = invite_patient(db, in_app, setup)
        browser = PatientBrowser(app.test_client())
        browser.get(invited.path)
        browser.switch_language(language, "/welcome")
        assert ('name="last_name"' in browser.page) == (stage == "opened_by_name")
        if stage == "code_sent":
            browser.post("/welcome/code", {"channel": "sms"})
            values["code"] = latest_code(db, invited.patient)
        return Visitor(browser, invited.patient.id, invited.enrolment.id, values)
    patient = verified_patient(app, db, in_app, setup, language=language)
    if stage == "booked":
        book(patient, setup)
    patient.browser.get(values["times"])
    values["slot"] = patient.browser.slot_ids()[0]
    return Visitor(patient.browser, patient.invited.patient.id, patient.enrolment.id, values)


def fill(template: dict, values: dict) -> dict:
    return {name: value.format(**values) if isinstance(value, str) else value for name, value in template.items()}


def state(db, visitor: Visitor, counted: tuple[str, ...] = ()) -> tuple:
    """Row counts plus everything a patient's answers could change (leaving out the
    `counted` events, which a rejected answer may rightly record)."""
    counts = row_counts(db)
    counts["event"] -= len(db.scalars(select(Event.id).where(Event.kind.in_(counted))).all())
    enrolment = db.get(Enrolment, visitor.enrolment_id)
    patient = db.get(Patient, visitor.patient_id)
    return (
        counts,
        (enrolment.status, enrolment.dob_failures, enrolment.locked_at, enrolment.remind_after,
         enrolment.closed_reason, patient.preferred_language, patient.phone, patient.email),
        [(r.answers, r.completed_at) for r in db.scalars(select(FormResponse).where(
            FormResponse.enrolment_id == visitor.enrolment_id).order_by(FormResponse.id))],
        [(r.details, r.status) for r in db.scalars(select(HelpRequest).where(
            HelpRequest.enrolment_id == visitor.enrolment_id).order_by(HelpRequest.id))],
        [(a.status, a.slot_id) for a in db.scalars(select(Appointment).where(
            Appointment.enrolment_id == visitor.enrolment_id).order_by(Appointment.id))],
        [(s.id, s.booked_count, s.held_by_enrolment_id, s.held_until) for s in db.scalars(
            select(Slot).order_by(Slot.id))],
        [(c.failed_attempts, c.used_at) for c in db.scalars(select(OneTimeCode).where(
            OneTimeCode.enrolment_id == visitor.enrolment_id).order_by(OneTimeCode.id))],
    )


def stored_value(db, visitor: Visitor, where: str, name: str):
    db.expire_all()
    if where == "form":
        response = db.scalar(select(FormResponse).where(FormResponse.enrolment_id == visitor.enrolment_id))
        return response.answers[name]
    request = db.scalar(select(HelpRequest).where(HelpRequest.enrolment_id == visitor.enrolment_id)
                        .order_by(HelpRequest.id.desc()).limit(1))
    return request.details[name.split("-", 1)[1]]


def first(value):
    return value[0] if isinstance(value, list) else value


def may_accept(kind: str, value) -> bool:
    """Whether accepting this value is right for the field; otherwise it must be rejected."""
    value = first(value)
    plain = not MARKUP_OR_CONTROL.search(value)
    if kind == TEXT or kind == UNSTORED_TEXT:
        return plain and len(value) <= 1000
    if kind == REQUIRED_TEXT:
        return plain and bool(value.strip()) and len(value) <= 200
    if kind == OPTIONAL_CHOICE:
        return value == ""
    return kind == IGNORED


def post(visitor: Visitor, form: PatientForm, data: dict, **kwargs):
    return visitor.client.post(form.path, data={"csrf_token": visitor.token(), **data}, **kwargs)


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("form_name", list(FORMS))
def test_every_field_survives_bad_values(app, db, in_app, form_name, language):
    form = FORMS[form_name]
    visitor = visitor_at(form.stage, language, app, db, in_app)
    for name, kind in form.fields.items():
        for label, value in BAD_VALUES.items():
            what = f"{form_name}.{name}={label}"
            visitor.browser.get(form.page.format(**visitor.values))
            assert visitor.browser.status == 200, what
            data = {**fill(form.valid, visitor.values), name: value}
            before = state(db, visitor, form.counted)
            response = post(visitor, form, data)
            assert response.status_code < 500, what
            if response.status_code >= 400:
                assert_translated_rejection(response, language, what)
                db.expire_all()
                assert state(db, visitor, form.counted) == before, f"{what}: a rejected form changed the database"
                continue
            assert may_accept(kind, value), f"{what} was accepted ({response.status_code})"
            location = response.headers.get("Location", "")
            assert location.startswith("/") and not location.startswith("//"), what
            if kind == IGNORED:
                db.expire_all()
                assert state(db, visitor) == before, f"{what}: an ignored value changed the database"
            elif name in form.stored:
                assert stored_value(db, visitor, form.stored[name], name) == first(value).strip(), what
            if form.consumes:
                visitor = visitor_at(form.stage, language, app, db, in_app)


@pytest.mark.parametrize("language", ["en", "es"])
def test_a_missing_field_is_a_translated_rejection(app, db, in_app, language):
    visitor = visitor_at("booked", language, app, db, in_app)
    for form_name, form in FORMS.items():
        if form.stage not in ("verified", "booked") or form_name in ("language", "previsit", "cancel"):
            continue
        for name, kind in form.fields.items():
            if kind in (OPTIONAL_CHOICE, UNSTORED_TEXT):
                continue
            visitor.browser.get(form.page.format(**visitor.values))
            before = state(db, visitor)
            data = {key: value for key, value in fill(form.valid, visitor.values).items() if key != name}
            response = post(visitor, form, data)
            assert_translated_rejection(response, language, f"{form_name} without {name}")
            db.expire_all()
            assert state(db, visitor) == before


@pytest.mark.parametrize("form_name", [name for name, form in FORMS.items() if form.stage != "code_sent"])
def test_json_bodies_and_forms_without_a_csrf_token_are_refused(app, db, in_app, form_name):
    form = FORMS[form_name]
    visitor = visitor_at(form.stage, "es", app, db, in_app)
    visitor.browser.get(form.page.format(**visitor.values))
    data = fill(form.valid, visitor.values)
    before = state(db, visitor)
    for response in (visitor.client.post(form.path, json={"csrf_token": visitor.token(), **data}),
                     visitor.client.post(form.path, data=data)):
        assert response.status_code == 400
        assert_translated_rejection(response, "es", form_name)
    db.expire_all()
    assert state(db, visitor) == before


@pytest.mark.parametrize("form_name, name", [("help_cost", "cost-question"), ("hold", "slot"),
                                             ("previsit", "medications"), ("other", "choice")])
def test_a_file_upload_instead_of_a_field_is_refused(app, db, in_app, form_name, name):
    form = FORMS[form_name]
    visitor = visitor_at(form.stage, "es", app, db, in_app)
    visitor.browser.get(form.page.format(**visitor.values))
    before = state(db, visitor)
    data = {**fill(form.valid, visitor.values), name: (io.BytesIO(b"%PDF-1.4"), "bill.pdf")}
    response = post(visitor, form, data, content_type="multipart/form-data")
    if form_name == "previsit":  # an optional field: the file is simply not an answer
        assert response.status_code == 303
        assert stored_value(db, visitor, "form", name) == ""
        return
    assert_translated_rejection(response, "es", f"file upload as {name}")
    db.expire_all()
    assert state(db, visitor) == before


def test_unknown_help_kinds_are_a_translated_404(app, db, in_app):
    visitor = visitor_at("verified", "es", app, db, in_app)
    visitor.browser.get("/visit/help")
    before = state(db, visitor)
    for kind in ("money", "%3Cscript%3E", "x" * 5000, "%F0%9F%98%80", "COST"):
        response = visitor.client.post(f"/visit/help/{kind}", data={"csrf_token": visitor.token(),
                                                                   "cost-question": "Hi"})
        assert response.status_code == 404, kind
        assert_translated_rejection(response, "es", kind)
    db.expire_all()
    assert state(db, visitor) == before


@pytest.mark.parametrize("path", ["/visit/hold-follow-up", "/visit/book-pair"])
def test_follow_up_pair_forms_survive_ids_out_of_range_and_files(app, db, in_app, path):
    visitor = visitor_at("verified", "en", app, db, in_app)
    type_id, slot = visitor.values["type"], visitor.values["slot"]
    valid = {"first": slot, "first_type": type_id, "second": slot, "second_type": type_id}
    for name in valid:
        for value in ("99999999999999999999", "9223372036854775808", "2147483648", "-1",
                      (io.BytesIO(b"x"), "x.txt")):
            visitor.browser.get(visitor.values["times"])
            before = state(db, visitor)
            response = post(visitor, PatientForm("verified", "", path, {}, {}), {**valid, name: value},
                            content_type="multipart/form-data")
            assert response.status_code < 500, (path, name, value)
            db.expire_all()
            assert state(db, visitor) == before, (path, name, value)


def test_the_language_switch_never_leaves_the_site(app, db, in_app):
    visitor = visitor_at("verified", "en", app, db, in_app)
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)",
                   "/visit\r\nSet-Cookie: stolen=1", " /visit", "\x00/visit", "http:/evil.example"):
        visitor.browser.get("/visit")
        response = post(visitor, FORMS["language"], {"lang": "es", "next": target})
        assert response.status_code == 303, repr(target)
        location = response.headers["Location"]
        assert location.startswith("/") and not location.startswith("//") and "evil" not in location, repr(target)
        assert "\n" not in location and "stolen" not in response.headers.get("Set-Cookie", "")


PLAIN_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="<>\x00\x01\x02\x03\x04\x05"
                                   "\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a"
                                   "\x1b\x1c\x1d\x1e\x1f\x7f"), min_size=1, max_size=120)


@pytest.mark.parametrize("form_name, name, limit", [("help_cost", "cost-question", 500),
                                                    ("previsit", "medications", 2000),
                                                    ("help_interpreter", "interpreter-language", 60)])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(typed=PLAIN_TEXT)
def test_plain_text_in_any_script_is_stored_exactly(app, db, in_app, form_name, name, limit, typed):
    typed = typed[:limit]  # within the field's length (longer text is refused: test_every_field_survives_bad_values)
    form = FORMS[form_name]
    visitor = _visitors.get((id(db), form.stage)) or _visitors.setdefault(
        (id(db), form.stage), visitor_at(form.stage, "en", app, db, in_app))
    visitor.browser.get(form.page.format(**visitor.values))
    before = state(db, visitor)
    response = post(visitor, form, {**fill(form.valid, visitor.values), name: typed})
    if not typed.strip() and form.fields[name] == REQUIRED_TEXT:
        assert_translated_rejection(response, "en", repr(typed))
        db.expire_all()
        assert state(db, visitor) == before
        return
    assert response.status_code == 303, (repr(typed), shown_messages(response.get_data(as_text=True)))
    assert stored_value(db, visitor, form.stored[name], name) == typed.strip()
    if form_name == "previsit":  # the saved form is shown back, escaped, as typed
        page = visitor.client.get(form.page).get_data(as_text=True)
        textarea = re.search(rf'<textarea[^>]*name="{name}"[^>]*>(.*?)</textarea>', page, re.DOTALL).group(1)
        assert html.unescape(textarea).removeprefix("\r\n").removeprefix("\n") == typed.strip()


_visitors: dict = {}
