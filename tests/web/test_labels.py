"""Staff read words, not stored codes: every code of every family has a label, and the
console pages show those labels in the viewer's language."""
from __future__ import annotations

import ast
import inspect
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from portal.models import (AppointmentStatus, Campaign, Channel, EnrolmentStatus, HelpKind, HelpStatus, Modality,
                           OutboxMessage, OutboxStatus, RefillStatus, Role)
from portal.services import booking, campaigns, refills
from portal.services.availability import appointment_types_for
from portal.services.care_gaps import CARE_GAPS
from portal.services.events import record_event
from portal.services.help_requests import request_help
from portal.services.work_queue import assign_help
from portal.web.labels import ANSWER_FAMILIES, LABELS, answer, label
from portal.web.patient.forms import HELP_FORMS, PrevisitForm
from tests.factories import add_slots, future_day, invite_patient
from tests.patients import text_of
from tests.staff_helpers import make_staff, sign_in

PORTAL = Path(__file__).resolve().parents[2] / "portal"


def _calls(name: str):
    """Every call of a function or class with this name in the portal's code."""
    for path in PORTAL.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if called == name:
                    yield node


def _strings(node) -> set[str]:
    """The string literals in an expression (both sides of `"a" if x else "b"`)."""
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _argument(name: str, position: int) -> set[str]:
    return set().union(*(_strings(call.args[position]) for call in _calls(name) if len(call.args) > position))


def _keyword(name: str, keyword: str) -> set[str]:
    return set().union(*(_strings(k.value) for call in _calls(name) for k in call.keywords if k.arg == keyword))


def _event_kinds() -> set[str]:
    kinds = _argument("record_event", 2) | _argument("_booked", 3)
    kinds |= {str(outcome) for outcome in booking.VISIT_OUTCOMES}  # recorded as record_event(..., str(outcome))
    for builder in ("dict", "Event"):  # rows inserted in bulk rather than through record_event
        kinds |= {k.value.value for call in _calls(builder) if {"kind", "actor"} <= {k.arg for k in call.keywords}
                  for k in call.keywords if k.arg == "kind" and isinstance(k.value, ast.Constant)}
    return kinds


def _actors() -> set[str]:
    defaults = {inspect.signature(f).parameters["actor"].default
                for f in (record_event, booking.book_slot, booking.cancel_appointment)}
    return defaults | set().union(*(_keyword(name, "actor") for name in
                                    ("record_event", "book_slot", "cancel_appointment", "dict", "Event")))


def _slot_states() -> set[str]:
    """Every constant day_view returns from `_state` or writes into `states[...]`."""
    tree = ast.parse((PORTAL / "services" / "day_view.py").read_text(encoding="utf-8"))
    [judge] = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "_state"]
    returned = {node.value.value for node in ast.walk(judge)
                if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant)}
    written = {node.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Constant) and len(node.targets) == 1
               and isinstance(node.targets[0], ast.Subscript) and getattr(node.targets[0].value, "id", "") == "states"}
    return returned | written


def _form_fields() -> dict[str, object]:
    """The patient's pre-visit and help form questions whose answers staff read."""
    fields = {name: getattr(PrevisitForm, name) for name in PrevisitForm.ANSWERS}
    for form_class in HELP_FORMS.values():
        fields.update({name: field for name, field in vars(form_class).items() if hasattr(field, "field_class")})
    return fields


def _codes(app) -> dict[str, set[str]]:
    """Every code each family can hold, taken from where the code is defined or written."""
    fields = _form_fields()
    return {
        "enrolment_status": set(EnrolmentStatus), "appointment_status": set(AppointmentStatus),
        "booked_via": {inspect.signature(booking.book_slot).parameters["via"].default} | _keyword("book_slot", "via"),
        "slot_state": _slot_states(), "modality": set(Modality),
        "help_kind": set(HelpKind), "help_status": set(HelpStatus), "help_status_for_patient": set(HelpStatus),
        "refill_kind": set(refills.KINDS), "refill_status": set(RefillStatus),
        "refill_status_for_patient": set(RefillStatus), "queue_item": _argument("QueueItem", 0),
        "campaign_status": {campaigns.DRAFT, campaigns.ACTIVE, campaigns.PAUSED, campaigns.STOPPED},
        "care_gap": set(CARE_GAPS), "channel": set(Channel),
        "message_template": {p.name for p in (PORTAL / "templates" / "messages").iterdir() if p.is_dir()},
        "outbox_status": set(OutboxStatus), "event_kind": _event_kinds(), "actor": _actors(), "role": set(Role),
        "language": set(app.config["LANGUAGES"]),
        "audit_action": _argument("record_access", 0), "record_type": _argument("record_access", 1),
        "form_field": set(fields),
        **{family: {value for value, _word in fields[name].kwargs["choices"] if value}
           for name, family in ANSWER_FAMILIES.items()},
    }


def test_every_code_of_every_family_has_a_label_and_every_label_a_code(app):
    """A new status, event kind or template without a word fails here, and so does a
    label left behind for a code nothing writes any more (or a scan that lost track)."""
    codes = _codes(app)
    assert set(codes) == set(LABELS)
    for family, expected in codes.items():
        assert set(LABELS[family]) == expected, family


def test_an_unknown_code_is_shown_as_it_is(app):
    with app.test_request_context(headers={"Accept-Language": "es"}):
        assert label("in_progress", "help_status") == "en curso"
        assert label("brand_new_status", "help_status") == "brand_new_status"
        assert answer("mobility", ["wheelchair", "stairlift"]) == "Silla de ruedas, stairlift"
        assert answer("pickup_address", "1 Elm St") == "1 Elm St"
        with pytest.raises(KeyError):
            label("new", "no_such_family")


def test_the_console_shows_codes_as_spanish_words(db, client, in_app, clinic):
    day = future_day(3)
    slots = add_slots(db, clinic, day)
    invited = invite_patient(db, in_app, clinic, language="es")
    enrolment = invited.enrolment
    admin = make_staff(db, in_app, "admin")
    with in_app():
        record_event(db, enrolment, "link_opened")
        first = booking.book_slot(db, enrolment, appointment_types_for(db, enrolment)[0], slots[0].id)
        booking.record_visit_outcome(db, first, AppointmentStatus.NO_SHOW)
        booking.book_slot(db, enrolment, appointment_types_for(db, enrolment)[0], slots[1].id,
                          via="staff", actor="staff")
        help_request = request_help(db, enrolment, HelpKind.RIDE, {"pickup_address": "1 Elm St",
                                                                   "time_window": "morning",
                                                                   "mobility": ["wheelchair"]})
        assign_help(db, help_request, admin.user)
        refills.request_refill(db, enrolment, "pharmacist", "Walgreens")
    draft = Campaign(clinic_id=clinic.clinic.id, name="Flu drive", status=campaigns.DRAFT,
                     care_gap_codes=["flu_vaccine"], channels=["sms"])
    db.add(draft)
    db.add(OutboxMessage(dedupe_key="dead-1", patient_id=invited.patient.id, channel=Channel.SMS, template="reminder",
                         locale="es", recipient="+13125550101", body_text="…", status=OutboxStatus.DEAD,
                         attempts=5, last_error="unreachable",
                         created_at=datetime.now(timezone.utc) - timedelta(hours=1)))
    db.commit()
    browser = sign_in(client, admin)
    browser.switch_language("es", "/staff/")

    pages = {
        f"/staff/enrolments/{enrolment.id}": ["Visita anual de bienestar · nivel 4 · con cita", "no se presentó",
                                              "programada (reservada por el personal)", "abrió el enlace",
                                              "reservó una cita (personal)", "Transporte a la cita — en curso"],
        f"/staff/patients/{invited.patient.id}": ["Win-back — Visita anual de bienestar (con cita)", "Español"],
        f"/staff/help/{help_request.id}": ["Transporte a la cita", "Estado: en curso", "Hora de recogida", "Mañana",
                                           "Ayuda para moverse", "Silla de ruedas"],
        "/staff/queue": ["Solicitud de ayuda: Transporte a la cita (en curso)", "Llamada del farmacéutico (nueva)"],
        "/staff/campaigns": ["borrador", "activa", "Vacuna contra la gripe"],
        f"/staff/campaigns/{draft.id}": ["Estado: borrador", "Invitación · Mensaje de texto · Español",
                                         "Recordatorio · Mensaje de texto · Inglés"],
        f"/staff/schedule?location={clinic.location.id}&day={day.isoformat()}": [
            "en persona reservado Maria Garcia (no se presentó)", "Maria Garcia (programada)", "en persona abierto"],
        "/staff/dead-letters": ["RecordatorioMensaje de texto"],
        "/staff/users": ["Administración"],
        "/staff/audit": ["consultósolicitud de ayuda #", "consultócita #"],
        f"/staff/dashboard/{clinic.campaign.id}": ["Estado: activa"],
    }
    raw_codes = ("no_show", "in_progress", "link_opened", "slot_held", "booked_via", "pharmacist", "draft",
                 "flu_vaccine", "annual_wellness", "reminder", "pickup_address", "time_window", "wheelchair")
    for path, words in pages.items():
        browser.get(path)
        assert browser.status == 200, path
        shown = " ".join(text_of(browser.page).split())
        for word in words:
            assert word in shown, (path, word)
        for code in raw_codes:
            assert code not in shown, (path, code)
