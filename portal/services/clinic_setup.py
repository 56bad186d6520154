"""Setting up what patients book: locations, providers and appointment types, and
the weekly availability templates that turn into slots.

Nothing a booking points to is ever deleted. Retiring takes a location, provider
or type out of what patients are offered (and, for a location or provider, ends its
templates and closes its open future slots) while every old and future booking
stays readable and booked; the bookings that need a phone call are handed back.

Every function validates what it stores on its own, so a caller that skipped the
form layer still cannot write an unknown time zone, an overlong text or a type that
closes no care gap. A broken rule raises `SetupRejected`, which names the field and
a reason code the web layer turns into a translated message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal.models import (Appointment, AppointmentStatus, AppointmentType, AppointmentTypeGap, AvailabilityBlock,
                           AvailabilityTemplate, Clinic, Location, Modality, Patient, Provider, Slot, utcnow)
from portal.services import schedule
from portal.services.availability import MAX_BUFFER_MINUTES
from portal.services.care_gaps import CARE_GAPS
from portal.services.errors import InvalidInput, NotAvailable

NAME_MAX = 200  # the width of the name and address columns
PHONE_MAX = 32
NOTE_MAX = 1000  # transit, parking and what-to-bring notes, per language
CODE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PHONE_PATTERN = re.compile(r"^[0-9+() .\-]{0,32}$")
MARKUP_OR_CONTROL = re.compile(r"[<>\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
JOIN_URL_MAX = 200
DURATION_RANGE = (5, 480)
BUFFER_RANGE = (0, MAX_BUFFER_MINUTES)
MIN_NOTICE_RANGE = (0, 720)  # hours: up to 30 days' notice
MAX_DAYS_AHEAD_RANGE = (1, 366)
MAX_TEMPLATE_DAYS = 731  # a template covers at most two years; make another for later
# The pre-visit forms the portal can show; an appointment type names one of them.
PREVISIT_FORMS = ("previsit",)
TEMPLATE_FIELDS = ("provider_id", "location_id", "modality", "weekdays", "start_time", "end_time", "slot_minutes",
                   "capacity", "valid_from", "valid_until")


class SetupRejected(InvalidInput):
    """A value broke a setup rule. `field` names the input, `reason` is one of:
    required, too_long, markup, format, unknown_zone, out_of_range, unknown_choice,
    duplicate, join_url, retired, schedule."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# -- checks -------------------------------------------------------------------------------------

# Geographic IANA areas: a clinic is somewhere. Legacy aliases (US/Central, EST5EDT,
# Cuba), "Factory" and the machine's own "localtime" are left out on purpose.
ZONE_AREAS = ("Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia", "Europe", "Indian",
              "Pacific")


@lru_cache(maxsize=1)
def known_time_zones() -> frozenset[str]:
    """The IANA zone names a location may use: "Area/Place" names this machine knows
    (the tzdata package backs it up), and UTC."""
    return frozenset(name for name in available_timezones() if name.split("/", 1)[0] in ZONE_AREAS and "/" in name) \
        | {"UTC"}


def check_time_zone(name: str, field: str = "time_zone") -> str:
    """Return `name` if it is a known IANA zone (see `known_time_zones`), else raise
    SetupRejected(required|unknown_zone). No file paths, no "localtime"."""
    name = (name or "").strip()
    if not name:
        raise SetupRejected(field, "required")
    if name not in known_time_zones():
        raise SetupRejected(field, "unknown_zone")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SetupRejected(field, "unknown_zone") from exc
    return name


def _text(value, field: str, *, required: bool = True, max_length: int = NAME_MAX) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise SetupRejected(field, "format")
    value = value.strip()
    if required and not value:
        raise SetupRejected(field, "required")
    if len(value) > max_length:
        raise SetupRejected(field, "too_long")
    if MARKUP_OR_CONTROL.search(value):  # tabs and line breaks are fine in notes
        raise SetupRejected(field, "markup")
    return value


def _texts(value, field: str, *, required_locale: str | None = None, max_length: int = NOTE_MAX) -> dict[str, str]:
    """{locale: text}, empty texts dropped; `required_locale` must be present."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SetupRejected(field, "format")
    cleaned = {}
    for locale, text in value.items():
        if not isinstance(locale, str) or not re.fullmatch(r"[a-z]{2}(_[A-Z]{2})?", locale):
            raise SetupRejected(field, "format")
        text = _text(text, f"{field}_{locale}", required=False, max_length=max_length)
        if text:
            cleaned[locale] = text
    if required_locale and required_locale not in cleaned:
        raise SetupRejected(f"{field}_{required_locale}", "required")
    return cleaned


def _number(value, field: str, bounds: tuple[int, int]) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise SetupRejected(field, "format")
    if not bounds[0] <= value <= bounds[1]:
        raise SetupRejected(field, "out_of_range")
    return value


def _phone(value) -> str:
    value = _text(value, "phone", required=False, max_length=PHONE_MAX)
    if not PHONE_PATTERN.fullmatch(value):
        raise SetupRejected("phone", "format")
    return value


def _clinic(session: Session, clinic_id) -> Clinic:
    if not isinstance(clinic_id, int) or isinstance(clinic_id, bool) or session.get(Clinic, clinic_id) is None:
        raise SetupRejected("clinic", "unknown_choice")
    return session.get(Clinic, clinic_id)


# -- who is booked ------------------------------------------------------------------------------

@dataclass
class RetireResult:
    """What retiring did: templates ended, open slots closed, and the future bookings
    that are still booked there (nobody was cancelled; staff call these people)."""

    templates_ended: int = 0
    slots_closed: int = 0
    bookings: list[Appointment] = field(default_factory=list)


def future_bookings(session: Session, *, location_id: int | None = None, provider_id: int | None = None,
                    appointment_type_id: int | None = None, now: datetime | None = None) -> list[Appointment]:
    """Live (booked) appointments from now on at a location, with a provider, or of an
    appointment type, soonest first. Raises nothing."""
    now = now or utcnow()
    query = (select(Appointment).join(Slot, Appointment.slot_id == Slot.id)
             .where(Appointment.status == AppointmentStatus.BOOKED, Slot.starts_at >= now)
             .order_by(Slot.starts_at, Appointment.id))
    if location_id is not None:
        query = query.where(Slot.location_id == location_id)
    if provider_id is not None:
        query = query.where(Slot.provider_id == provider_id)
    if appointment_type_id is not None:
        query = query.where(Appointment.appointment_type_id == appointment_type_id)
    return list(session.scalars(query))


def with_patients(session: Session, appointments: list[Appointment]) -> list[tuple[Appointment, Patient]]:
    """Pair each appointment with its patient in one query, keeping the order."""
    if not appointments:
        return []
    patients = {p.id: p for p in session.scalars(
        select(Patient).where(Patient.id.in_({a.patient_id for a in appointments})))}
    return [(a, patients[a.patient_id]) for a in appointments]


def _end_templates_and_close_slots(session: Session, today: date, now: datetime, *, location_id: int | None = None,
                                   provider_id: int | None = None) -> RetireResult:
    result = RetireResult()
    query = select(AvailabilityTemplate).where(AvailabilityTemplate.active.is_(True))
    if location_id is not None:
        query = query.where(AvailabilityTemplate.location_id == location_id)
    if provider_id is not None:
        query = query.where(AvailabilityTemplate.provider_id == provider_id)
    for template in session.scalars(query.order_by(AvailabilityTemplate.id)).all():
        template.active = False
        generated = schedule.generate_slots(session, template, today, now=now)
        result.templates_ended += 1
        result.slots_closed += generated.removed
    # Slots from no template (copied weeks, imports) are closed, not deleted: a
    # booking or an old appointment may point to them, and a restore can reopen them.
    closing = update(Slot).where(Slot.starts_at >= now, Slot.blocked.is_(False))
    if location_id is not None:
        closing = closing.where(Slot.location_id == location_id)
    if provider_id is not None:
        closing = closing.where(Slot.provider_id == provider_id)
    result.slots_closed += len(session.execute(
        closing.values(blocked=True).returning(Slot.id).execution_options(synchronize_session="fetch")).all())
    session.flush()
    result.bookings = future_bookings(session, location_id=location_id, provider_id=provider_id, now=now)
    return result


# -- locations ----------------------------------------------------------------------------------

def _location_values(values: dict) -> dict:
    return {
        "name": _text(values.get("name"), "name"),
        "address": _text(values.get("address"), "address"),
        "time_zone": check_time_zone(values.get("time_zone")),
        "phone": _phone(values.get("phone")),
        "transit_notes": _texts(values.get("transit_notes"), "transit_notes"),
        "parking_notes": _texts(values.get("parking_notes"), "parking_notes"),
    }


def create_location(session: Session, *, clinic_id: int, name: str, address: str, time_zone: str, phone: str = "",
                    transit_notes: dict | None = None, parking_notes: dict | None = None) -> Location:
    """Add a location. The time zone must be an IANA name (America/Chicago); notes
    are {locale: text}. Flushes; raises SetupRejected for an unknown clinic, a
    missing or overlong text, markup, a malformed phone or an unknown zone."""
    _clinic(session, clinic_id)
    values = _location_values(dict(name=name, address=address, time_zone=time_zone, phone=phone,
                                   transit_notes=transit_notes, parking_notes=parking_notes))
    location = Location(clinic_id=clinic_id, retired=False, **values)
    session.add(location)
    session.flush()
    return location


def update_location(session: Session, location: Location, *, name: str, address: str, time_zone: str,
                    phone: str = "", transit_notes: dict | None = None, parking_notes: dict | None = None) -> Location:
    """Change a location's details. Changing the time zone is refused while the
    location has future slots (their wall-clock times would silently move):
    SetupRejected(time_zone, schedule). Otherwise raises what `create_location`
    raises. Flushes."""
    values = _location_values(dict(name=name, address=address, time_zone=time_zone, phone=phone,
                                   transit_notes=transit_notes, parking_notes=parking_notes))
    if values["time_zone"] != location.time_zone and session.scalar(
            select(Slot.id).where(Slot.location_id == location.id, Slot.starts_at >= utcnow()).limit(1)) is not None:
        raise SetupRejected("time_zone", "schedule")
    for key, value in values.items():
        setattr(location, key, value)
    session.flush()
    return location


def retire_location(session: Session, location: Location, *, today: date | None = None,
                    now: datetime | None = None) -> RetireResult:
    """Stop offering a location: patients no longer see it, its templates end, its
    open future slots are removed or closed. Bookings are kept and returned. Running
    it again changes nothing. Flushes; raises what `schedule.generate_slots` raises."""
    now = now or utcnow()
    location.retired = True
    session.flush()
    today = today or now.astimezone(_zone_of(location)).date()
    return _end_templates_and_close_slots(session, today, now, location_id=location.id)


def restore_location(session: Session, location: Location) -> Location:
    """Offer a retired location again. Its templates stay ended until a scheduler
    turns them back on. Flushes; raises nothing."""
    location.retired = False
    session.flush()
    return location


def _zone_of(location: Location) -> ZoneInfo:
    try:
        return ZoneInfo(location.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


# -- providers ----------------------------------------------------------------------------------

def create_provider(session: Session, *, clinic_id: int, display_name: str) -> Provider:
    """Add a provider. Flushes; raises SetupRejected (unknown clinic, missing,
    overlong or markup name)."""
    _clinic(session, clinic_id)
    provider = Provider(clinic_id=clinic_id, display_name=_text(display_name, "display_name"), retired=False)
    session.add(provider)
    session.flush()
    return provider


def update_provider(session: Session, provider: Provider, *, display_name: str) -> Provider:
    """Rename a provider. Flushes; raises SetupRejected as `create_provider` does."""
    provider.display_name = _text(display_name, "display_name")
    session.flush()
    return provider


def retire_provider(session: Session, provider: Provider, *, today: date | None = None,
                    now: datetime | None = None) -> RetireResult:
    """Stop offering a provider's time: their templates end and their open future
    slots are removed or closed everywhere; bookings are kept and returned.
    Flushes; raises what `schedule.generate_slots` raises."""
    now = now or utcnow()
    provider.retired = True
    session.flush()
    today = today or now.date()
    return _end_templates_and_close_slots(session, today, now, provider_id=provider.id)


def restore_provider(session: Session, provider: Provider) -> Provider:
    """Make a retired provider schedulable again; templates stay ended until turned
    back on. Flushes; raises nothing."""
    provider.retired = False
    session.flush()
    return provider


# -- appointment types --------------------------------------------------------------------------

def _type_values(values: dict) -> dict:
    modality = values.get("modality")
    if modality not in set(Modality):
        raise SetupRejected("modality", "unknown_choice")
    join_url = _text(values.get("join_url_pattern"), "join_url_pattern", required=False, max_length=JOIN_URL_MAX)
    if modality == Modality.TELEHEALTH:
        # The join link is built by replacing {code} with the visit's random video code.
        if not join_url:
            raise SetupRejected("join_url_pattern", "required")
        if not join_url.startswith("https://") or join_url.count("{code}") != 1 or re.search(r"\s", join_url) \
                or re.search(r"\{(?!code\})", join_url.replace("{code}", "")):
            raise SetupRejected("join_url_pattern", "join_url")
    else:
        join_url = ""
    form_code = values.get("form_code")
    if form_code not in PREVISIT_FORMS:
        raise SetupRejected("form_code", "unknown_choice")
    gaps = values.get("care_gaps")
    if not isinstance(gaps, (list, tuple, set)) or not gaps:
        raise SetupRejected("care_gaps", "required")
    if any(code not in CARE_GAPS for code in gaps):
        raise SetupRejected("care_gaps", "unknown_choice")
    min_notice = _number(values.get("min_notice_hours"), "min_notice_hours", MIN_NOTICE_RANGE)
    max_days = _number(values.get("max_days_ahead"), "max_days_ahead", MAX_DAYS_AHEAD_RANGE)
    if min_notice >= max_days * 24:
        raise SetupRejected("max_days_ahead", "out_of_range")
    return {
        "name": _texts(values.get("name"), "name", required_locale="en", max_length=NAME_MAX),
        "what_to_bring": _texts(values.get("what_to_bring"), "what_to_bring"),
        "modality": Modality(modality).value,
        "duration_minutes": _number(values.get("duration_minutes"), "duration_minutes", DURATION_RANGE),
        "form_code": form_code,
        "join_url_pattern": join_url,
        "buffer_before_minutes": _number(values.get("buffer_before_minutes"), "buffer_before_minutes", BUFFER_RANGE),
        "buffer_after_minutes": _number(values.get("buffer_after_minutes"), "buffer_after_minutes", BUFFER_RANGE),
        "min_notice_hours": min_notice,
        "max_days_ahead": max_days,
        "care_gaps": sorted(set(gaps)),
    }


def create_appointment_type(session: Session, *, clinic_id: int, code: str, **values) -> AppointmentType:
    """Add an appointment type. `code` is a short unique slug (a-z, 0-9, - and _);
    `name` and `what_to_bring` are {locale: text} with English required for the
    name; `care_gaps` lists CARE_GAPS codes (at least one); a telehealth type needs
    an https join-link pattern containing {code} once. Values: modality,
    duration_minutes, form_code, join_url_pattern, buffer_before_minutes,
    buffer_after_minutes, min_notice_hours, max_days_ahead. Flushes; raises
    SetupRejected (a rule broken, or duplicate code)."""
    _clinic(session, clinic_id)
    if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code.strip()):
        raise SetupRejected("code", "format" if code else "required")
    code = code.strip()
    checked = _type_values(values)
    if session.scalar(select(AppointmentType.id).where(AppointmentType.code == code)) is not None:
        raise SetupRejected("code", "duplicate")
    gaps = checked.pop("care_gaps")
    appointment_type = AppointmentType(clinic_id=clinic_id, code=code, retired=False, **checked,
                                       gaps=[AppointmentTypeGap(care_gap_code=gap) for gap in gaps])
    session.add(appointment_type)
    session.flush()
    return appointment_type


def update_appointment_type(session: Session, appointment_type: AppointmentType, **values) -> AppointmentType:
    """Change an appointment type (everything but its code). Booked visits keep
    their slot; a new duration or notice applies to new bookings. Flushes; raises
    SetupRejected as `create_appointment_type` does."""
    checked = _type_values(values)
    gaps = set(checked.pop("care_gaps"))
    for key, value in checked.items():
        setattr(appointment_type, key, value)
    appointment_type.gaps = [gap for gap in appointment_type.gaps if gap.care_gap_code in gaps] + [
        AppointmentTypeGap(care_gap_code=code) for code in sorted(gaps - appointment_type.gap_codes)]
    session.flush()
    return appointment_type


def retire_appointment_type(session: Session, appointment_type: AppointmentType,
                            now: datetime | None = None) -> RetireResult:
    """Stop offering a type to patients. Visits already booked as this type stay
    booked and readable; they are returned. Flushes; raises nothing."""
    appointment_type.retired = True
    session.flush()
    return RetireResult(bookings=future_bookings(session, appointment_type_id=appointment_type.id, now=now))


def restore_appointment_type(session: Session, appointment_type: AppointmentType) -> AppointmentType:
    """Offer a retired type again. Flushes; raises nothing."""
    appointment_type.retired = False
    session.flush()
    return appointment_type


# -- availability templates ---------------------------------------------------------------------

def _template_values(session: Session, values: dict, current: AvailabilityTemplate | None = None) -> dict:
    unknown = set(values) - set(TEMPLATE_FIELDS)
    if unknown:
        raise SetupRejected(sorted(unknown)[0], "unknown_choice")
    merged = {name: getattr(current, name) for name in TEMPLATE_FIELDS} if current is not None else {}
    merged.update(values)
    for name in TEMPLATE_FIELDS:
        if merged.get(name) is None:
            raise SetupRejected(name, "required")
    for name in ("provider_id", "location_id"):
        if not isinstance(merged[name], int) or isinstance(merged[name], bool):
            raise SetupRejected(name, "format")
    provider = session.get(Provider, merged["provider_id"])
    location = session.get(Location, merged["location_id"])
    if provider is None:
        raise SetupRejected("provider_id", "unknown_choice")
    if location is None:
        raise SetupRejected("location_id", "unknown_choice")
    # A retired provider or location takes no new time; an unchanged one on an old
    # template may stay (so the template can still be edited down or ended).
    for name, row in (("provider_id", provider), ("location_id", location)):
        if row.retired and (current is None or getattr(current, name) != row.id):
            raise SetupRejected(name, "retired")
    if provider.clinic_id != location.clinic_id:
        raise SetupRejected("provider_id", "unknown_choice")
    if isinstance(merged["weekdays"], (list, tuple, set)):
        merged["weekdays"] = "".join(sorted(str(day) for day in merged["weekdays"]))
    for name in ("start_time", "end_time"):
        if not isinstance(merged[name], time):
            raise SetupRejected(name, "format")
    for name in ("valid_from", "valid_until"):
        if not isinstance(merged[name], date) or isinstance(merged[name], datetime):
            raise SetupRejected(name, "format")
    if isinstance(merged["valid_until"], date) and isinstance(merged["valid_from"], date) \
            and (merged["valid_until"] - merged["valid_from"]).days > MAX_TEMPLATE_DAYS:
        raise SetupRejected("valid_until", "out_of_range")
    pattern_values = {name: merged[name] for name in TEMPLATE_FIELDS}
    try:
        schedule.check_pattern(schedule.Pattern(active=True, **pattern_values))
    except InvalidInput as exc:
        raise SetupRejected("template", "schedule") from exc
    return pattern_values


def create_template(session: Session, **values) -> AvailabilityTemplate:
    """Add an active weekly template (TEMPLATE_FIELDS; `weekdays` as digits 0-6 or a
    list of them). Makes no slots: call `generate_template_slots`. Flushes; raises
    SetupRejected (unknown or retired provider or location, or a template rule
    broken: see `schedule.check_pattern`)."""
    template = AvailabilityTemplate(active=True, **_template_values(session, values))
    session.add(template)
    session.flush()
    return template


def preview_template_change(session: Session, template: AvailabilityTemplate, values: dict,
                            now: datetime | None = None) -> list[Appointment]:
    """The live bookings an edit (values as for `create_template`, or {"active":
    False}) would leave on slots that no longer fit. Changes nothing. Raises
    SetupRejected as `create_template` does."""
    active = values.get("active", template.active)
    changes = _template_values(session, {k: v for k, v in values.items() if k != "active"}, template)
    changes["active"] = bool(active)
    try:
        return schedule.affected_bookings(session, template, changes, now=now)
    except InvalidInput as exc:
        raise SetupRejected("template", "schedule") from exc


def update_template(session: Session, template: AvailabilityTemplate, values: dict, *, today: date,
                    horizon_days: int = schedule.DEFAULT_HORIZON_DAYS,
                    now: datetime | None = None) -> schedule.GenerationResult:
    """Save an edit and bring the slots in line at once, so the old pattern's open
    slots stop selling now rather than at the next generation. Booked or held slots
    that no longer fit are kept (blocked for further sales) and their bookings come
    back in `conflicts`. `values` may include "active". Flushes; raises
    SetupRejected as `create_template` does."""
    active = values.get("active", template.active)
    changes = _template_values(session, {k: v for k, v in values.items() if k != "active"}, template)
    for key, value in changes.items():
        setattr(template, key, value)
    template.active = bool(active)
    session.flush()
    return generate_template_slots(session, template, today=today, horizon_days=horizon_days, now=now)


def generate_template_slots(session: Session, template: AvailabilityTemplate, *, today: date,
                            horizon_days: int = schedule.DEFAULT_HORIZON_DAYS,
                            now: datetime | None = None) -> schedule.GenerationResult:
    """`schedule.generate_slots`, with its errors named for the form. A template whose
    provider or location is retired makes no new slots (it is reconciled only).
    Flushes; raises SetupRejected(template, schedule|retired)."""
    provider = session.get(Provider, template.provider_id)
    location = session.get(Location, template.location_id)
    if template.active and ((provider is not None and provider.retired) or (location is not None and location.retired)):
        raise SetupRejected("template", "retired")
    try:
        return schedule.generate_slots(session, template, today, horizon_days, now=now)
    except InvalidInput as exc:
        raise SetupRejected("template", "schedule") from exc
    except NotAvailable as exc:
        raise SetupRejected("template", "unknown_choice") from exc


def local_today(location: Location, now: datetime | None = None) -> date:
    """Today's date at the location."""
    return (now or utcnow()).astimezone(_zone_of(location)).date()


def create_monthly_templates(session: Session, *, provider_id: int, location_id: int, modality: str, weekday: int,
                             nth: int, start_time: time, end_time: time, slot_minutes: int, capacity: int,
                             first_month: date, months: int) -> list[AvailabilityTemplate]:
    """Templates for "the first Saturday, 9-12" and the like: one single-day template
    per month (see `schedule.add_monthly_templates`). Makes no slots. Flushes;
    raises SetupRejected as `create_template` does, or for weekday, nth (1-5, or -1
    for the last) or months (1-36) out of range."""
    if not isinstance(weekday, int) or weekday not in range(7):
        raise SetupRejected("weekday", "unknown_choice")
    if nth not in (1, 2, 3, 4, 5, -1):
        raise SetupRejected("nth", "unknown_choice")
    if not isinstance(months, int) or isinstance(months, bool) or not 1 <= months <= 36:
        raise SetupRejected("months", "out_of_range")
    if not isinstance(first_month, date):
        raise SetupRejected("first_month", "format")
    _template_values(session, dict(provider_id=provider_id, location_id=location_id, modality=modality,
                                   weekdays=str(weekday), start_time=start_time, end_time=end_time,
                                   slot_minutes=slot_minutes, capacity=capacity, valid_from=first_month,
                                   valid_until=first_month))
    try:
        return schedule.add_monthly_templates(session, provider_id=provider_id, location_id=location_id,
                                              modality=modality, weekday=weekday, nth=nth, start_time=start_time,
                                              end_time=end_time, slot_minutes=slot_minutes, capacity=capacity,
                                              first_month=first_month.replace(day=1), months=months)
    except InvalidInput as exc:
        raise SetupRejected("template", "schedule") from exc
    except NotAvailable as exc:
        raise SetupRejected("provider_id", "unknown_choice") from exc


# -- blocks -------------------------------------------------------------------------------------

def _block_scope(session: Session, location_id, provider_id) -> tuple[Location, Provider | None]:
    if not isinstance(location_id, int) or isinstance(location_id, bool):
        raise SetupRejected("location_id", "format")
    location = session.get(Location, location_id)
    if location is None:
        raise SetupRejected("location_id", "unknown_choice")
    provider = None
    if provider_id is not None:
        provider = session.get(Provider, provider_id) if isinstance(provider_id, int) else None
        if provider is None or provider.clinic_id != location.clinic_id:
            raise SetupRejected("provider_id", "unknown_choice")
    return location, provider


def _local_instant(location: Location, day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=_zone_of(location)).astimezone(timezone.utc)


def block_local_time(session: Session, *, location_id: int, provider_id: int | None, day: date, start_time: time,
                     end_time: time, reason: str, staff_id: int) -> schedule.BlockResult:
    """Block wall-clock `start_time`-`end_time` on `day` at the location (for one
    provider, or everyone when `provider_id` is None): a closed afternoon. Bookings
    inside stay booked and come back in the result. Flushes; raises SetupRejected
    (unknown location or provider, end not after start, overlong reason)."""
    location, provider = _block_scope(session, location_id, provider_id)
    if not isinstance(day, date) or not isinstance(start_time, time) or not isinstance(end_time, time):
        raise SetupRejected("day", "format")
    if end_time <= start_time:
        raise SetupRejected("end_time", "out_of_range")
    reason = _text(reason, "reason", required=False, max_length=schedule.REASON_MAX)
    return schedule.block_time(session, location=location, provider=provider,
                               starts_at=_local_instant(location, day, start_time),
                               ends_at=_local_instant(location, day, end_time), reason=reason, staff_id=staff_id)


def block_local_days(session: Session, *, location_id: int, provider_id: int | None, first_day: date,
                     last_day: date, reason: str, staff_id: int) -> schedule.BlockResult:
    """Block whole local days, first through last (a holiday, a vacation), as one
    block from the first day's local midnight to the midnight after the last day.
    Flushes; raises SetupRejected (unknown location or provider, a range that ends
    before it starts or runs over a year, overlong reason)."""
    location, provider = _block_scope(session, location_id, provider_id)
    if not isinstance(first_day, date) or not isinstance(last_day, date):
        raise SetupRejected("first_day", "format")
    if last_day < first_day or (last_day - first_day).days > 366:
        raise SetupRejected("last_day", "out_of_range")
    reason = _text(reason, "reason", required=False, max_length=schedule.REASON_MAX)
    if first_day == last_day:
        return schedule.block_day(session, location=location, provider=provider, day=first_day, reason=reason,
                                  staff_id=staff_id)
    return schedule.block_time(session, location=location, provider=provider,
                               starts_at=_local_instant(location, first_day, time(0)),
                               ends_at=_local_instant(location, last_day + timedelta(days=1), time(0)),
                               reason=reason, staff_id=staff_id)


def upcoming_blocks(session: Session, location_id: int | None = None,
                    now: datetime | None = None) -> list[AvailabilityBlock]:
    """Blocks that have not ended yet, soonest first. Raises nothing."""
    query = select(AvailabilityBlock).where(AvailabilityBlock.ends_at > (now or utcnow()))
    if location_id is not None:
        query = query.where(AvailabilityBlock.location_id == location_id)
    return list(session.scalars(query.order_by(AvailabilityBlock.starts_at, AvailabilityBlock.id)))


# -- copying a week -----------------------------------------------------------------------------

def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def copy_local_week(session: Session, *, provider_id: int, location_id: int, source_day: date, target_day: date,
                    now: datetime | None = None) -> int:
    """Copy the week containing `source_day` onto the week containing `target_day`
    (see `schedule.copy_week`). Returns how many slots were created. Flushes;
    raises SetupRejected (the same week twice, unknown or retired provider or
    location)."""
    location, provider = _block_scope(session, location_id, provider_id)
    if provider is None:
        raise SetupRejected("provider_id", "required")
    if provider.retired:
        raise SetupRejected("provider_id", "retired")
    if location.retired:
        raise SetupRejected("location_id", "retired")
    source, target = monday_of(source_day), monday_of(target_day)
    if source == target:
        raise SetupRejected("target_day", "out_of_range")
    try:
        return schedule.copy_week(session, provider_id=provider.id, location_id=location.id, source_monday=source,
                                  target_monday=target, now=now)
    except InvalidInput as exc:
        raise SetupRejected("target_day", "out_of_range") from exc
    except NotAvailable as exc:
        raise SetupRejected("provider_id", "unknown_choice") from exc
