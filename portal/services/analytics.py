"""Campaign outcomes: the win-back funnel, rates, times, retention and breakdowns.

How it is computed. Each enrolment (patient x campaign x care gap) has one row of facts,
computed set-based from the enrolment and the patient, the outbox (what actually left,
and what was delivered), the event log (links opened, identities verified, opt-outs),
the appointment book (bookings, visit outcomes), refills and clinical records
(``_computed_facts``), and kept in the table ``enrolment_fact``. Before every report,
``refresh_facts`` recomputes the rows of the patients whose source rows were written
since (triggers queue them; see docs/metrics.md, "Freshness"). A report reads the rows
through ``_readable``, which adds what depends on the clock. Each metric is a flag or a
duration on that row, defined once below (``STAGES``, ``RATES``, ``DURATIONS``; in words
in docs/metrics.md), and each table is a GROUP BY over the distinct combinations of the
rows (``_combination_counts``) or, with a patient enrolled twice, over the rows folded per
patient (``_folded_counts``). Python never loops over enrolments: it only reshapes the
few aggregated rows the database returns.

Counts are counts of *patients* (``COUNT(DISTINCT patient_id)``): a patient enrolled
for two care gaps counts once in the campaign total and once in each care-gap row.
Exports suppress small cells (``export_rows``): any count of 1 to 10 patients, and any
rate, time or interval computed from one, is written "<11".
"""
from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from babel import Locale, UnknownLocaleError
from flask_babel import get_locale, gettext as _, lazy_gettext as _l
from sqlalchemy import (Float, Integer, String, and_, case, cast, delete, distinct, false, func, insert, literal, not_,
                        null, or_, select, text, true, union_all, update)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnElement, FunctionElement, Select

from portal.models import (Appointment, AppointmentTypeGap, Campaign, ClinicalFact, Enrolment, EnrolmentFact,
                           EnrolmentFactChange, EnrolmentFactRefresh, Event, FactKind, HelpRequest, Location,
                           OutboxMessage, Patient, Slot, utcnow)
from portal.models.visit import RefillRequest
from portal.services.care_gaps import CARE_GAPS

try:  # the care-gap rules decide whether a gap is still open; closure falls back to visits without them
    from portal.services.care_gap_rules import patients_with_gap as _patients_with_gap
except ImportError:  # pragma: no cover - only while the rules module is absent
    _patients_with_gap = None

CONTROL = "control"  # the arm key of the holdout group: enrolled, never contacted
SMALL_CELL = 11  # counts below this (and above zero) are suppressed in exports
SUPPRESSED = "<11"
REFILL_GAP = "refill_gap"
DAY = 86400.0
RETENTION_DAYS = (30, 90)
AGE_BANDS = ((18, "0-17"), (45, "18-44"), (65, "45-64"), (75, "65-74"))  # (younger than, label); else 75+
OLDEST_BAND = "75+"
MAX_DRILL_DOWN = 500
CHANNELS = ("sms", "email", "portal")


# --- portable date arithmetic ---------------------------------------------------------------------------

class seconds_between(FunctionElement):
    """``end - start`` in seconds (a float), for timestamps or dates, in each database's dialect."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between)
def _seconds_between_default(element, compiler, **kw):  # PostgreSQL
    start, end = list(element.clauses)
    return (f"CAST(EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)})) "
            f"AS DOUBLE PRECISION)")


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element, compiler, **kw):  # SQLite keeps UTC timestamps as ISO text
    start, end = list(element.clauses)
    return f"((julianday({compiler.process(end, **kw)}) - julianday({compiler.process(start, **kw)})) * 86400.0)"


class whole_weeks_between(FunctionElement):
    """Completed weeks from ``start`` to a later ``end``, as an integer."""

    type = Integer()
    inherit_cache = True
    name = "whole_weeks_between"


@compiles(whole_weeks_between)
def _weeks_default(element, compiler, **kw):
    start, end = list(element.clauses)
    return (f"CAST(FLOOR(EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)}))"
            f" / 604800.0) AS INTEGER)")


@compiles(whole_weeks_between, "sqlite")
def _weeks_sqlite(element, compiler, **kw):
    start, end = list(element.clauses)
    return (f"CAST((julianday({compiler.process(end, **kw)}) - julianday({compiler.process(start, **kw)})) / 7.0"
            f" AS INTEGER)")


def years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (29 February becomes 28 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


# --- the metric definitions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """A patient count: patients with at least one enrolment whose facts row satisfies ``flag``."""

    key: str
    label: object
    flag: Callable[[object], ColumnElement[bool]]  # facts columns -> condition


@dataclass(frozen=True)
class Rate:
    key: str
    label: object
    numerator: str  # a Stage key
    denominator: str  # a Stage key


@dataclass(frozen=True)
class Duration:
    key: str
    label: object
    column: str  # a facts column holding seconds


OUTCOMES = ("kept", "upcoming", "unrecorded", "no_show", "cancelled")  # a booked enrolment is in exactly one

STAGES: tuple[Stage, ...] = (
    Stage("audience", _l("Enrolled"), lambda f: true()),
    Stage("sent", _l("Sent a message"), lambda f: f.sent == 1),
    Stage("delivered", _l("Message delivered"), lambda f: f.delivered == 1),
    Stage("opened", _l("Opened the link"), lambda f: f.opened == 1),
    Stage("verified", _l("Confirmed who they are"), lambda f: f.verified == 1),
    Stage("booked", _l("Booked"), lambda f: f.booked == 1),
    Stage("booked_by_staff", _l("Booked by staff (phone)"), lambda f: f.booked_by_staff == 1),
    Stage("kept", _l("Came to the visit"), lambda f: f.outcome == "kept"),
    Stage("upcoming", _l("Visit still to come"), lambda f: f.outcome == "upcoming"),
    Stage("unrecorded", _l("Visit passed, outcome not recorded"), lambda f: f.outcome == "unrecorded"),
    Stage("no_show", _l("Did not come"), lambda f: f.outcome == "no_show"),
    Stage("cancelled", _l("Cancelled, not rebooked"), lambda f: f.outcome == "cancelled"),
    Stage("settled", _l("Visit came due or was cancelled"), lambda f: f.outcome.in_(("kept", "no_show", "cancelled"))),
    Stage("won_back", _l("Won back"), lambda f: f.won_back == 1),
    Stage("closed", _l("Care gap closed"), lambda f: f.closed == 1),
    Stage("opted_out", _l("Opted out"), lambda f: f.opted_out == 1),
    Stage("refill_due", _l("Refill campaign patients"), lambda f: f.refill_due == 1),
    Stage("refill_done", _l("Refill completed"), lambda f: f.refill_done == 1),
    Stage("retention_30_due", _l("Won back 30+ days ago"), lambda f: f.returned_30.is_not(None)),
    Stage("retained_30", _l("Came back again within 30 days"), lambda f: f.returned_30 == 1),
    Stage("retention_90_due", _l("Won back 90+ days ago"), lambda f: f.returned_90.is_not(None)),
    Stage("retained_90", _l("Came back again within 90 days"), lambda f: f.returned_90 == 1),
)
STAGE = {stage.key: stage for stage in STAGES}
FUNNEL = ("audience", "sent", "delivered", "opened", "verified", "booked", "kept")

RATES: tuple[Rate, ...] = (
    Rate("booking_rate", _l("Booking rate"), "booked", "audience"),
    Rate("win_back_rate", _l("Win-back rate"), "won_back", "audience"),
    Rate("kept_rate", _l("Kept-appointment rate"), "kept", "settled"),
    Rate("closure_rate", _l("Care-gap closure rate"), "closed", "audience"),
    Rate("opt_out_rate", _l("Opt-out rate"), "opted_out", "sent"),
    Rate("refill_rate", _l("Refill completion rate"), "refill_done", "refill_due"),
    Rate("retention_30_rate", _l("30-day retention"), "retained_30", "retention_30_due"),
    Rate("retention_90_rate", _l("90-day retention"), "retained_90", "retention_90_due"),
)
RATE = {rate.key: rate for rate in RATES}

DURATIONS: tuple[Duration, ...] = (
    Duration("to_book", _l("First message to booking"), "seconds_to_book"),
    Duration("to_visit", _l("Booking to visit"), "seconds_to_visit"),
)
PERCENTILES = (50, 90)

DIMENSIONS = {
    "variant": _l("Variant"),
    "tier": _l("Tier"),
    "language": _l("Language"),
    "care_gap": _l("Care gap"),
    "age_band": _l("Age band"),
    "channel": _l("First channel"),
    "location": _l("Location"),
    "step": _l("Last message before booking"),
}


# --- the facts: computed from the sources, kept in enrolment_fact -----------------------------------------

FACTS_VERSION = 2  # bump when a definition below changes: every campaign's facts are then rebuilt (by an idle `portal dispatch`, or on next read)
INCREMENTAL_LIMIT = 2000  # more patients changed than this: rebuild the campaign's facts in one go instead
OPT_OUT_KEYS = (*CHANNELS, "all")  # bit i of opted_out_channels


def _any(condition: ColumnElement[bool]):
    """1 when any row of the group meets the condition, else 0."""
    return func.max(case((condition, 1), else_=0))


def _flag(condition: ColumnElement[bool]):
    return case((condition, 1), else_=0)


def _mask(conditions: Iterable[ColumnElement[bool]]):
    """A bit mask with bit i set when the i-th condition holds."""
    return sum((case((condition, 1 << i), else_=0) for i, condition in enumerate(conditions)), literal(0))


def _has(mask, bit: int):
    """1 when bit ``bit`` of the mask is set, else 0."""
    return mask.op(">>")(bit).op("&")(1)


# The clock-independent 0/1 facts the metric definitions read, each a condition on the stored
# columns, kept packed in enrolment_fact.flags (bit i: the i-th) so that a report counts the
# few distinct combinations of them rather than summing each flag over every row.
FLAGS: dict[str, Callable[[object], ColumnElement[bool]]] = {
    "sent": lambda c: c.first_sent_at.is_not(None),
    "delivered": lambda c: c.delivered == 1,
    "opened": lambda c: c.opened == 1,
    "verified": lambda c: c.verified == 1,
    "opted_out": lambda c: c.opted_out == 1,
    "booked": lambda c: c.first_booked_at.is_not(None),
    "booked_by_staff": lambda c: c.booked_by_staff == 1,
    "attended": lambda c: c.attended == 1,
    "no_show": lambda c: c.no_show == 1,
    "has_live": lambda c: c.live_until.is_not(None),  # a booking still live, whether its time has passed or not
    "won_back": lambda c: c.won_back == 1,
    "closed": lambda c: or_(c.gap_visit == 1, c.closed_elsewhere == 1),
    "refill_due": lambda c: c.care_gap == REFILL_GAP,
    "refill_completed": lambda c: c.refill_completed == 1,
    **{f"came_back_{days}": (lambda c, days=days: c[f"came_back_{days}"] == 1) for days in RETENTION_DAYS},
    **{f"timed_{d.key}": (lambda c, d=d: c[d.column].is_not(None)) for d in DURATIONS},
}
MASKS = ("sent_steps", "delivered_steps", "sent_channels", "delivered_channels", "opted_out_channels")


def _packed(c):
    """``flags`` of stored (or computed) facts columns ``c``."""
    return _mask(condition(c) for condition in FLAGS.values())


def _clock(c, now: datetime) -> list[tuple[str, ColumnElement]]:
    """What depends on the clock, as (name, 0/1): whether a live booking is still to come,
    and for each retention window whether the visit won back is at least that long ago."""
    return [("live_now", _flag(c.live_until > now)),
            *((f"due_{days}", _flag(c.visit_at <= now - timedelta(days=days))) for days in RETENTION_DAYS)]


def _readable(source, campaign: Campaign):
    """What the metric definitions (``STAGES``, ``extra_stages``) read, over ``source``: stored
    facts rows, or combinations of them, with ``flags`` and the clock (``_clock``), and for
    the campaign-wide counts ``MASKS``. Every column of ``source`` passes through."""
    s = source.c
    v = {name: _has(s.flags, bit) for bit, name in enumerate(FLAGS)}
    columns = [value.label(name) for name, value in v.items()]
    columns += [_outcome(v["attended"] == 1, s.live_now == 1, v["has_live"] == 1, v["no_show"] == 1,
                         v["booked"] == 1).label("outcome"),
                _flag(and_(v["refill_due"] == 1, or_(v["refill_completed"] == 1, v["closed"] == 1)))
                .label("refill_done")]
    columns += [case((and_(v["won_back"] == 1, s[f"due_{days}"] == 1), v[f"came_back_{days}"]), else_=None)
                .label(f"returned_{days}") for days in RETENTION_DAYS]
    if "sent_steps" not in s:  # the steps and channels count campaign-wide only
        return select(*s, *columns)
    steps = _steps_of(campaign)
    columns += [_has(s.sent_steps, step).label(f"sent_step_{step}") for step in steps]
    columns += [_has(s.delivered_steps, step).label(f"delivered_step_{step}") for step in steps]
    columns += [_has(s.sent_channels, i).label(f"sent_{channel}") for i, channel in enumerate(CHANNELS)]
    columns += [_has(s.delivered_channels, i).label(f"delivered_{channel}") for i, channel in enumerate(CHANNELS)]
    columns += [_has(s.opted_out_channels, i).label(f"opted_out_{key}") for i, key in enumerate(OPT_OUT_KEYS)]
    return select(*s, *columns)


def _steps_of(campaign: Campaign) -> range:
    return range(max(len(campaign.step_days or []), 1))


def _enrolments_of(campaign: Campaign, patients):
    """The ids of the campaign's enrolments, only those of ``patients`` unless it is None."""
    query = select(Enrolment.id).where(Enrolment.campaign_id == campaign.id)
    return query if patients is None else query.where(Enrolment.patient_id.in_(patients))


def _appointment_outcomes(campaign_ids: list[int], patients=None):
    """Per enrolment: first booking, how it was booked, the visit outcome, and whether
    it won the patient back (attended a visit starting within the campaign window)."""
    appointment, slot, enrolment, campaign = aliased(Appointment), aliased(Slot), aliased(Enrolment), aliased(Campaign)
    closes_gap = aliased(AppointmentTypeGap)
    attended = appointment.status == "attended"
    in_window = and_(slot.starts_at >= enrolment.created_at,
                     seconds_between(enrolment.created_at, slot.starts_at) <= campaign.window_days * DAY)
    query = (
        select(appointment.enrolment_id.label("enrolment_id"),
               func.min(appointment.booked_at).label("first_booked_at"),
               func.min(case((appointment.booked_via == "portal", appointment.booked_at))).label("first_portal_at"),
               func.max(appointment.id).label("last_appointment_id"),
               func.min(case((attended, slot.starts_at))).label("visit_at"),
               _any(attended).label("attended"),
               _any(and_(attended, in_window)).label("won_back"),
               _any(and_(attended, in_window, closes_gap.care_gap_code.is_not(None))).label("gap_visit"),
               func.max(case((appointment.status == "booked", slot.starts_at))).label("live_until"),
               _any(appointment.status == "no_show").label("no_show"))
        .join(slot, slot.id == appointment.slot_id)
        .join(enrolment, enrolment.id == appointment.enrolment_id)
        .join(campaign, campaign.id == enrolment.campaign_id)
        .outerjoin(closes_gap, and_(closes_gap.appointment_type_id == appointment.appointment_type_id,
                                    closes_gap.care_gap_code == enrolment.care_gap_code))
        .where(enrolment.campaign_id.in_(campaign_ids))
        .group_by(appointment.enrolment_id)
    )
    if patients is not None:
        query = query.where(enrolment.patient_id.in_(patients))
    return query.cte("appointment_outcomes")


def _outcome(attended, live_now, has_live, no_show, booked):
    """Where a booked enrolment stands (one of OUTCOMES), or NULL if never booked; each
    argument a condition (``live_now``: a live booking still to come)."""
    return case((attended, "kept"), (live_now, "upcoming"), (has_live, "unrecorded"), (no_show, "no_show"),
                (booked, "cancelled"), else_=None)


def _messages(campaign: Campaign, patients=None):
    """Per enrolment: campaign messages that actually left (sent_at set) and their delivery;
    when each step first left and the first message id per channel (so the facts can tell
    the first channel and the last step before booking without joining back)."""
    message = aliased(OutboxMessage)
    delivered = message.delivered_at.is_not(None)
    columns = [message.enrolment_id.label("enrolment_id"),
               func.min(message.sent_at).label("first_sent_at"),
               func.min(message.id).label("first_message_id"),
               _any(delivered).label("delivered")]
    for step in _steps_of(campaign):
        columns += [func.min(case((message.step == step, message.sent_at))).label(f"step_{step}_at"),
                    _any(and_(message.step == step, delivered)).label(f"delivered_step_{step}")]
    for channel in CHANNELS:
        columns += [func.min(case((message.channel == channel, message.id))).label(f"first_{channel}_id"),
                    _any(and_(message.channel == channel, delivered)).label(f"delivered_{channel}")]
    query = select(*columns).where(message.campaign_id == campaign.id, message.step.is_not(None),
                                   message.sent_at.is_not(None))
    if patients is not None:
        query = query.where(message.enrolment_id.in_(_enrolments_of(campaign, patients)))
    return query.group_by(message.enrolment_id).subquery("messages")


def _patient_events(campaign: Campaign, patients=None):
    event = aliased(Event)
    opted_out = event.kind == "opted_out"
    channel = func.coalesce(event.detail["channel"].as_string(), "all")
    columns = [event.enrolment_id.label("enrolment_id"), _any(event.kind == "link_opened").label("opened"),
               _any(event.kind == "verified").label("verified"), _any(opted_out).label("opted_out")]
    columns += [_any(and_(opted_out, channel == key)).label(f"opted_out_{key}") for key in OPT_OUT_KEYS]
    query = select(*columns).where(event.campaign_id == campaign.id,
                                   event.kind.in_(("link_opened", "verified", "opted_out")))
    if patients is not None:
        query = query.where(event.enrolment_id.in_(_enrolments_of(campaign, patients)))
    return query.group_by(event.enrolment_id).subquery("patient_events")


def _refills(campaign: Campaign, patients=None):
    refill = aliased(RefillRequest)
    return (
        select(refill.enrolment_id.label("enrolment_id"), _any(refill.completed_at.is_not(None)).label("completed"))
        .where(refill.enrolment_id.in_(_enrolments_of(campaign, patients)))
        .group_by(refill.enrolment_id)
        .subquery("refills")
    )


def window_end(campaign: Campaign, now: datetime) -> date:
    """The last day outcomes are judged on: the campaign window's end, or today if sooner."""
    start = campaign.launched_at or campaign.created_at or now
    return min(now.date(), (start + timedelta(days=campaign.window_days)).date())


def _closed_elsewhere(campaign: Campaign, as_of: date) -> ColumnElement[bool]:
    """The care-gap rules no longer find the enrolment's gap open on ``as_of`` (the window's
    end, or today if sooner), and an import has brought a clinical record dated after
    enrolment. The second half keeps a gap that merely lapsed (a referral ageing out, a flu
    season ending, a birthday) from counting as closed; the rules also drop patients who
    died or moved, so those never count."""
    if _patients_with_gap is None or not campaign.care_gap_codes:
        return false()

    def new_record(enrolment) -> ColumnElement[bool]:
        fact = aliased(ClinicalFact)
        return (select(fact.id).where(fact.patient_id == enrolment.patient_id,
                                      fact.started_on >= func.date(enrolment.created_at), fact.started_on <= as_of)
                .exists())

    # The rules run once per statement, only over this campaign's patients with a new record.
    other = aliased(Enrolment)
    candidates = select(other.patient_id).where(other.campaign_id == campaign.id, new_record(other))
    still_open = case(*((Enrolment.care_gap_code == code,
                         Enrolment.patient_id.in_(_patients_with_gap(None, code, as_of).correlate(None)
                                                  .where(Patient.id.in_(candidates))))
                        for code in campaign.care_gap_codes), else_=true())
    return and_(Patient.deceased_on.is_(None), Patient.moved_away.is_(False), new_record(Enrolment), not_(still_open))


def _came_back(visit_at, days: int) -> ColumnElement[bool]:
    """Another attended visit, or an imported encounter, after the won-back visit and within ``days``."""
    later, later_slot = aliased(Appointment), aliased(Slot)
    again = (select(later.id).join(later_slot, later_slot.id == later.slot_id)
             .where(later.patient_id == Enrolment.patient_id, later.status == "attended",
                    later_slot.starts_at > visit_at,
                    seconds_between(visit_at, later_slot.starts_at) <= days * DAY)
             .exists())
    encounter = (select(ClinicalFact.id)
                 .where(ClinicalFact.patient_id == Enrolment.patient_id, ClinicalFact.kind == FactKind.ENCOUNTER,
                        ClinicalFact.started_on > func.date(visit_at),
                        seconds_between(visit_at, ClinicalFact.started_on) <= days * DAY)
                 .exists())
    return or_(again, encounter)


def _age_band(birth_date, reference: date):
    bands = [(birth_date > years_before(reference, years), label) for years, label in AGE_BANDS]
    return case(*bands, else_=OLDEST_BAND)


def _computed_facts(campaign: Campaign, as_of: date, patients=None):
    """The ``enrolment_fact`` rows of the campaign's enrolments (only those of ``patients``
    unless it is None), computed from the outbox, the event log, the appointment book,
    refills and clinical records: a SELECT whose columns are the table's."""
    appointments = _appointment_outcomes([campaign.id], patients)
    messages = _messages(campaign, patients)
    events = _patient_events(campaign, patients)
    refills = _refills(campaign, patients)
    last_appointment, last_slot = aliased(Appointment), aliased(Slot)
    a, m, e = appointments.c, messages.c, events.c
    steps = _steps_of(campaign)
    # The last step that left at or before the first booking (steps leave in order).
    booked_after_step = case(*((m[f"step_{step}_at"] <= a.first_booked_at, step) for step in reversed(steps)))
    first_channel = case(*((m[f"first_{channel}_id"] == m.first_message_id, channel) for channel in CHANNELS),
                         else_="")
    booked = a.first_booked_at.is_not(None)
    came_back = {days: case((a.won_back == 1, _flag(_came_back(a.visit_at, days))), else_=0)
                 for days in RETENTION_DAYS}
    query = (
        select(Enrolment.id.label("enrolment_id"), Enrolment.campaign_id.label("campaign_id"),
               Enrolment.patient_id.label("patient_id"),
               case((Enrolment.holdout.is_(True), literal(CONTROL)), else_=Enrolment.variant).label("arm"),
               Enrolment.tier.label("tier"), Enrolment.care_gap_code.label("care_gap"),
               Patient.preferred_language.label("language"), Patient.birth_date.label("birth_date"),
               Enrolment.created_at.label("enrolled_at"),
               m.first_sent_at.label("first_sent_at"),
               first_channel.label("channel"),
               _mask(m[f"step_{step}_at"].is_not(None) for step in steps).label("sent_steps"),
               _mask(m[f"delivered_step_{step}"] == 1 for step in steps).label("delivered_steps"),
               _mask(m[f"first_{channel}_id"].is_not(None) for channel in CHANNELS).label("sent_channels"),
               _mask(m[f"delivered_{channel}"] == 1 for channel in CHANNELS).label("delivered_channels"),
               _mask(e[f"opted_out_{key}"] == 1 for key in OPT_OUT_KEYS).label("opted_out_channels"),
               func.coalesce(m.delivered, 0).label("delivered"),
               func.coalesce(e.opened, 0).label("opened"),
               func.coalesce(e.verified, 0).label("verified"),
               func.coalesce(e.opted_out, 0).label("opted_out"),
               a.first_booked_at.label("first_booked_at"),
               _flag(and_(booked, or_(a.first_portal_at.is_(None), a.first_portal_at > a.first_booked_at)))
               .label("booked_by_staff"),
               func.coalesce(a.attended, 0).label("attended"),
               func.coalesce(a.no_show, 0).label("no_show"),
               a.live_until.label("live_until"),
               a.visit_at.label("visit_at"),
               func.coalesce(a.won_back, 0).label("won_back"),
               func.coalesce(a.gap_visit, 0).label("gap_visit"),
               _flag(_closed_elsewhere(campaign, as_of)).label("closed_elsewhere"),
               func.coalesce(refills.c.completed, 0).label("refill_completed"),
               *(came_back[days].label(f"came_back_{days}") for days in RETENTION_DAYS),
               last_slot.location_id.label("location_id"),
               booked_after_step.label("step"),
               case((m.first_sent_at <= a.first_booked_at, seconds_between(m.first_sent_at, a.first_booked_at)))
               .label("seconds_to_book"),
               case((a.attended == 1, seconds_between(a.first_booked_at, a.visit_at))).label("seconds_to_visit"),
               whole_weeks_between(Enrolment.created_at, a.first_booked_at).label("weeks_to_book"))
        .join(Patient, Patient.id == Enrolment.patient_id)
        .outerjoin(appointments, a.enrolment_id == Enrolment.id)
        .outerjoin(messages, m.enrolment_id == Enrolment.id)
        .outerjoin(events, e.enrolment_id == Enrolment.id)
        .outerjoin(refills, refills.c.enrolment_id == Enrolment.id)
        .outerjoin(last_appointment, last_appointment.id == a.last_appointment_id)
        .outerjoin(last_slot, last_slot.id == last_appointment.slot_id)
        .where(Enrolment.campaign_id == campaign.id)
    )
    return query if patients is None else query.where(Enrolment.patient_id.in_(patients))


def _definition(session: Session, campaign: Campaign) -> str:
    """A digest of what the stored facts depend on besides the rows the triggers watch: this
    code's version, the campaign's window, care gaps and steps, which appointment types close
    which gap, and whether the care-gap rules are there."""
    closes = session.execute(select(AppointmentTypeGap.appointment_type_id, AppointmentTypeGap.care_gap_code)
                             .order_by(AppointmentTypeGap.appointment_type_id, AppointmentTypeGap.care_gap_code)).all()
    parts = (FACTS_VERSION, campaign.window_days, sorted(campaign.care_gap_codes or []), len(_steps_of(campaign)),
             [tuple(row) for row in closes], _patients_with_gap is not None)
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _store_facts(session: Session, campaign: Campaign, as_of: date, patients=None) -> None:
    """Replace the stored facts of the campaign's enrolments (of ``patients`` only, unless None)."""
    stored = delete(EnrolmentFact).where(EnrolmentFact.campaign_id == campaign.id)
    if patients is not None:
        stored = stored.where(EnrolmentFact.patient_id.in_(patients))
    session.execute(stored)
    computed = _computed_facts(campaign, as_of, patients).subquery("computed")
    rows = select(*computed.c, _packed(computed.c).label("flags"))
    session.execute(insert(EnrolmentFact).from_select([c.key for c in rows.selected_columns], rows))


def _rejudge_closure(session: Session, campaign: Campaign, as_of: date) -> None:
    """Closure elsewhere is judged on the window's last day, or today if sooner: when that
    day moves, judge it again for every enrolment (one UPDATE)."""
    fact = EnrolmentFact
    session.execute(update(fact)
                    .where(fact.campaign_id == campaign.id, Enrolment.id == fact.enrolment_id,
                           Patient.id == Enrolment.patient_id)
                    .values(closed_elsewhere=_flag(_closed_elsewhere(campaign, as_of)))
                    .execution_options(synchronize_session=False))
    table = EnrolmentFact.__table__
    session.execute(update(table).where(table.c.campaign_id == campaign.id).values(flags=_packed(table.c)))


def _enrolments_without_facts(session: Session, campaign: Campaign) -> bool:
    """Whether enrolments were added since the last refresh. Facts rows go with their
    enrolment (ON DELETE CASCADE), so equal counts mean none is missing."""
    enrolled = session.scalar(select(func.count()).where(Enrolment.campaign_id == campaign.id))
    kept = session.scalar(select(func.count()).where(EnrolmentFact.campaign_id == campaign.id))
    return enrolled != kept


def _lock_kept(session: Session, also: int | None = None) -> dict[int, EnrolmentFactRefresh]:
    """The campaigns whose facts are kept (and ``also``), locked: refreshes are serialised
    (PostgreSQL; SQLite's write lock already does it). NO KEY UPDATE doesn't block the
    inserts whose foreign keys point at these campaigns."""
    ids = set(session.scalars(select(EnrolmentFactRefresh.campaign_id))) | ({also} if also else set())
    session.execute(select(Campaign.id).where(Campaign.id.in_(ids)).order_by(Campaign.id)
                    .with_for_update(key_share=True))
    return {s.campaign_id: s for s in session.scalars(select(EnrolmentFactRefresh)
                                                      .execution_options(populate_existing=True))}


def _take_changes(session: Session, kept: dict[int, EnrolmentFactRefresh], current: int | None,
                  rebuilding: bool) -> bool:
    """Empty the queue of changed patients into the kept facts: recompute those patients in
    every campaign whose facts are kept (but ``current`` when it is ``rebuilding`` anyway).
    With more than ``INCREMENTAL_LIMIT`` of them, forget the other campaigns' facts instead
    (each is rebuilt on its next read) and return True: ``current`` must be rebuilt."""
    queued = select(EnrolmentFactChange.patient_id).distinct().limit(INCREMENTAL_LIMIT + 1)
    if len(session.scalars(queued).all()) > INCREMENTAL_LIMIT:  # (a bulk import queues a million rows)
        session.execute(delete(EnrolmentFactChange))
        for campaign_id, state in kept.items():
            if campaign_id != current:
                session.delete(state)
        return True
    changed = set(session.scalars(delete(EnrolmentFactChange).returning(EnrolmentFactChange.patient_id)))
    if changed:
        for campaign_id, state in kept.items():
            if campaign_id != current or not rebuilding:
                _store_facts(session, session.get(Campaign, campaign_id), state.closure_as_of, list(changed))
    return False


def keep_facts_current(session: Session, now: datetime | None = None) -> None:
    """What ``portal dispatch`` does when it has nothing to send: apply the queued changes to
    every campaign whose facts are kept, then bring each of them fully up to date, so the
    queue stays short where nobody opens a dashboard for months and the slow cases (a
    rebuild after a deploy changed a definition, or after a flood of changes; new
    enrolments; a new window end) are paid here rather than by the next person who opens
    the dashboard. Cheap when nothing changed. Writes and flushes; the caller commits."""
    kept_ids = select(EnrolmentFactRefresh.campaign_id)
    kept = list(session.scalars(select(Campaign).where(Campaign.id.in_(kept_ids)).order_by(Campaign.id)))
    if session.scalar(select(EnrolmentFactChange.id).limit(1)) is not None:
        _no_jit(session)
        _take_changes(session, _lock_kept(session), None, False)  # past the limit: forgets the facts (rebuilt below)
        session.flush()
    for campaign in kept:
        refresh_facts(session, campaign, now)


def refresh_facts(session: Session, campaign: Campaign, now: datetime | None = None) -> None:
    """Bring the campaign's stored facts up to date before they are read, set-based.

    Cheap when nothing changed (a few indexed counts). Otherwise, under a lock on the
    campaigns whose facts are kept: the patients the triggers queued are recomputed in every
    such campaign (the queue is shared), enrolments added since are computed, closure
    elsewhere is re-judged when the window's last day moved, and the whole campaign is
    rebuilt the first time, when the definition changed, or when more than
    ``INCREMENTAL_LIMIT`` patients changed. Writes and flushes; the caller commits (a
    rollback leaves the queue as it was)."""
    now = now or utcnow()
    as_of = window_end(campaign, now)
    definition = _definition(session, campaign)
    state = session.get(EnrolmentFactRefresh, campaign.id)
    if (state is not None and state.definition == definition and state.closure_as_of == as_of
            and session.scalar(select(EnrolmentFactChange.id).limit(1)) is None
            and not _enrolments_without_facts(session, campaign)):
        return
    kept = _lock_kept(session, campaign.id)
    state = kept.get(campaign.id)
    rebuild = state is None or state.definition != definition
    if _take_changes(session, kept, campaign.id, rebuild):
        rebuild = True
    if not rebuild:
        added = session.scalars(select(Enrolment.patient_id).where(
            Enrolment.campaign_id == campaign.id,
            ~select(EnrolmentFact.enrolment_id).where(EnrolmentFact.enrolment_id == Enrolment.id).exists())
            .distinct().limit(INCREMENTAL_LIMIT + 1)).all()
        if len(added) > INCREMENTAL_LIMIT:
            rebuild = True
        elif added:
            _store_facts(session, campaign, state.closure_as_of, added)
    if rebuild:
        _store_facts(session, campaign, as_of)
    elif state.closure_as_of != as_of:
        _rejudge_closure(session, campaign, as_of)
    if state is None:
        state = EnrolmentFactRefresh(campaign_id=campaign.id)
        session.add(state)
    state.definition, state.closure_as_of, state.refreshed_at = definition, as_of, utcnow()
    session.flush()


STORED_KEYS = {"variant": "arm", "tier": "tier", "language": "language", "care_gap": "care_gap",
               "channel": "channel", "location": "location_id", "step": "step"}  # age_band: from birth_date


def _reference_day(campaign: Campaign, now: datetime) -> date:
    """The day ages are counted on: launch day, or today before launch."""
    return (campaign.launched_at or now).date()


def _breakdown_key(dim: str, c, reference: date):
    """A breakdown's key as text ('' for none), from stored facts columns ``c`` (or a grouping
    of them that already holds the ``age_band``): the location by its current name."""
    if dim == "all":
        return literal("")
    if dim == "age_band":
        column = c.age_band if "age_band" in c else _age_band(c.birth_date, reference)
    elif dim == "location":
        column = select(Location.name).where(Location.id == c.location_id).scalar_subquery()
    else:
        column = c[STORED_KEYS[dim]]
    return func.coalesce(cast(column, String), "")


def _has_key(dim: str, c, key: str, reference: date) -> ColumnElement[bool]:
    """``_breakdown_key(dim, c, reference) == key``, written on the stored column itself where
    there is one, so that PostgreSQL estimates it (a function of a column it guesses at 0.5%)."""
    if dim in ("all", "age_band"):
        return _breakdown_key(dim, c, reference) == key
    if dim == "location":
        named = c.location_id.in_(select(Location.id).where(Location.name == key))
        return or_(c.location_id.is_(None), named) if key == "" else named
    column = c[STORED_KEYS[dim]]
    if key == "":
        return or_(column.is_(None), cast(column, String) == "")
    return column == (int(key) if dim in ("tier", "step") else key)


def _facts(campaign: Campaign, now: datetime):
    """The stored facts of one campaign, a row per enrolment, as the metrics read them
    (``_readable``), with each breakdown's key (``by_<dimension>``)."""
    f = EnrolmentFact.__table__.c
    stored = (select(f.enrolment_id, f.patient_id, f.arm.label("variant"),
                     *(_breakdown_key(dim, f, _reference_day(campaign, now)).label(f"by_{dim}")
                       for dim in DIMENSIONS),
                     f.step, f.first_booked_at, f.weeks_to_book, f.seconds_to_book, f.seconds_to_visit, f.flags,
                     *(f[mask] for mask in MASKS), *(value.label(name) for name, value in _clock(f, now)),
                     literal(1).label("n"))
              .where(f.campaign_id == campaign.id).subquery("stored"))
    # Read by every part of the folding statement: materialise it once (PostgreSQL 12+, SQLite 3.35+).
    return _readable(stored, campaign).cte("facts").prefix_with("MATERIALIZED")


def extra_stages(campaign: Campaign) -> tuple[Stage, ...]:
    """The campaign-wide extra counts: per message step and per channel."""
    extra = []
    for step in _steps_of(campaign):
        extra += [Stage(f"sent_step_{step}", _l("Sent step %(step)d", step=step + 1),
                        lambda f, step=step: f[f"sent_step_{step}"] == 1),
                  Stage(f"delivered_step_{step}", _l("Delivered step %(step)d", step=step + 1),
                        lambda f, step=step: f[f"delivered_step_{step}"] == 1),
                  Stage(f"booked_after_step_{step}", _l("Booked after step %(step)d", step=step + 1),
                        lambda f, step=step: and_(f.step == step, f.booked == 1))]
    for channel in CHANNELS:
        extra += [Stage(f"sent_{channel}", _l("Sent by %(channel)s", channel=channel),
                        lambda f, channel=channel: f[f"sent_{channel}"] == 1),
                  Stage(f"delivered_{channel}", _l("Delivered by %(channel)s", channel=channel),
                        lambda f, channel=channel: f[f"delivered_{channel}"] == 1)]
    extra += [Stage(f"opted_out_{key}", _l("Opted out of %(channel)s", channel=key),
                    lambda f, key=key: f[f"opted_out_{key}"] == 1) for key in (*CHANNELS, "all")]
    return tuple(extra)


# --- results --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Percentiles:
    n: int  # how many enrolments had this duration
    p50: float | None  # seconds
    p90: float | None


@dataclass
class Group:
    """The metrics of one row of a breakdown (or of the whole campaign)."""

    key: object
    counts: dict[str, int]
    durations: dict[str, Percentiles] = field(default_factory=dict)

    def rate(self, key: str) -> float | None:
        rate = RATE[key]
        denominator = self.counts.get(rate.denominator, 0)
        return self.counts.get(rate.numerator, 0) / denominator if denominator else None


@dataclass(frozen=True)
class StepRow:
    step: int
    day: int | None
    sent: int
    delivered: int
    booked_after: int


@dataclass(frozen=True)
class ChannelRow:
    channel: str  # sms, email, portal, or "all" for a stop-everything from the link
    sent: int
    delivered: int
    opted_out: int

    @property
    def opt_out_rate(self) -> float | None:
        return self.opted_out / self.sent if self.sent else None


@dataclass(frozen=True)
class HelpRow:
    kind: str
    requests: int
    patients: int


@dataclass(frozen=True)
class WeekPoint:
    week: int  # completed weeks since enrolment
    booked: int  # patients booked by the end of this week (cumulative)
    audience: int

    @property
    def rate(self) -> float | None:
        return self.booked / self.audience if self.audience else None


@dataclass
class CampaignReport:
    campaign: Campaign
    now: datetime
    overall: Group
    breakdowns: dict[str, list[Group]]  # only the dimensions asked for; "variant" always
    steps: list[StepRow]
    channels: list[ChannelRow]
    help: list[HelpRow]
    weeks: dict[str, list[WeekPoint]]  # arm -> cumulative booking by week since enrolment

    @property
    def arms(self) -> list[Group]:
        return self.breakdowns["variant"]


def _dimension_key(facts, dim: str):
    return literal("") if dim == "all" else facts.c[f"by_{dim}"]


def _count_row(dim: str, key, week, patients, values: dict, stages, extra) -> Select:
    """One row of a counting statement; every part has the same columns: the counts of each
    stage, the enrolments timed per duration (``n_<duration>``), and for 'week' rows the
    patients whose first booking fell in that week since enrolment."""
    no_int = cast(null(), Integer)
    columns = [(stage.key, values.get(stage.key, no_int)) for stage in stages + extra]
    columns += [(f"n_{d.key}", values.get(f"n_{d.key}", no_int)) for d in DURATIONS]
    return select(literal("week" if week is not None else "count").label("part"), literal(dim).label("dim"),
                  key.label("key"), (no_int if week is None else week).label("week"),
                  (no_int if patients is None else patients).label("patients"),
                  *(value.label(name) for name, value in columns))


def _combination_counts(campaign: Campaign, now: datetime, stages: tuple[Stage, ...], extra: tuple[Stage, ...],
                        dims: tuple[str, ...]):
    """Counts when every patient has one enrolment in the campaign (rows are patients).

    The stored rows are grouped into their distinct combinations of arm, breakdown key, flags,
    weeks to booking, steps and channels (a few hundred), straight from an index in its order
    (no sort; age bands excepted), counting how many rows each holds on which side of the
    clock (a live booking still to come; each retention window passed). Each combination is
    then split into one row per side of the clock, ``n`` rows each, and every metric's
    definition is applied to those rows, weighted by ``n``: the campaign-wide row (with
    ``extra``: steps and channels), each breakdown, and the weeks to booking per arm.
    """
    f = EnrolmentFact.__table__.c
    reference = _reference_day(campaign, now)
    grouped = [f.arm, f.flags, f.weeks_to_book, f.step, *(f[mask] for mask in MASKS)]
    for dim in dims:
        if dim == "age_band":
            grouped.append(_age_band(f.birth_date, reference).label("age_band"))
        elif STORED_KEYS[dim] not in {column.name for column in grouped}:
            grouped.append(f[STORED_KEYS[dim]])
    live, *due = (value for _name, value in _clock(f, now))
    sides = {"n": func.count(), "live": func.sum(live)}
    for days, passed in zip(RETENTION_DAYS, due):
        sides.update({f"due_{days}": func.sum(passed), f"live_due_{days}": func.sum(live * passed)})
    combinations = (select(*grouped, *(value.label(name) for name, value in sides.items()))
                    .where(f.campaign_id == campaign.id).group_by(*grouped)
                    .cte("combinations").prefix_with("MATERIALIZED"))
    c = combinations.c

    def at_least(live_now: int, passed: int):
        """Rows with (live_now) on the clock and at least ``passed`` retention windows passed:
        the windows are nested (due for a longer one is due for every shorter one)."""
        if passed == 0:
            return c.live if live_now else c.n - c.live
        days = RETENTION_DAYS[passed - 1]
        return c[f"live_due_{days}"] if live_now else c[f"due_{days}"] - c[f"live_due_{days}"]

    sides_of_clock = []
    for live_now in (0, 1):
        for passed in range(len(RETENTION_DAYS) + 1):
            n = at_least(live_now, passed)
            if passed < len(RETENTION_DAYS):
                n = n - at_least(live_now, passed + 1)
            sides_of_clock.append(
                select(*(c[column.name] for column in grouped), literal(live_now).label("live_now"),
                       *(literal(int(passed > i)).label(f"due_{days}") for i, days in enumerate(RETENTION_DAYS)),
                       n.label("n"))
                .where(n > 0))
    view = _readable(union_all(*sides_of_clock).subquery("sides_of_clock"), campaign).subquery("readable")
    v = view.c
    keys = {dim: _breakdown_key(dim, v, reference) for dim in dims}

    def sums(counted) -> dict:
        values = {stage.key: func.sum(case((stage.flag(v), v.n), else_=0)) for stage in counted}
        values.update({f"n_{d.key}": func.sum(case((v[f"timed_{d.key}"] == 1, v.n), else_=0)) for d in DURATIONS})
        return values

    parts = [_count_row("all", literal(""), None, None, sums(stages + extra), stages, extra)]
    parts += [_count_row(dim, key, None, None, sums(stages), stages, extra).group_by(key) for dim, key in keys.items()]
    parts.append(_count_row("variant", keys["variant"], v.weeks_to_book, func.sum(v.n), {}, stages, extra)
                 .where(v.booked == 1).group_by(keys["variant"], v.weeks_to_book))
    return union_all(*parts)


def _folded_counts(facts, stages: tuple[Stage, ...], extra: tuple[Stage, ...], dims: tuple[str, ...]):
    """Counts when some patient has two enrolments in the campaign: each patient's enrolments
    are first folded into one row per key (a patient is at a stage if any enrolment is), so
    nobody counts twice."""
    f = facts.c
    parts = []
    for dim in ("all", *dims):
        counted = stages + extra if dim == "all" else stages
        key = _dimension_key(facts, dim)
        timed = {f"n_{d.key}": func.sum(f[f"timed_{d.key}"]) for d in DURATIONS}
        source = (select(key.label("key"), f.patient_id, *[_any(stage.flag(f)).label(stage.key) for stage in counted],
                         *(value.label(name) for name, value in timed.items()))
                  .group_by(key, f.patient_id).subquery(f"per_patient_{dim}"))
        values = {name: func.sum(source.c[name]) for name in (*(stage.key for stage in counted), *timed)}
        parts.append(_count_row(dim, source.c.key, None, None, values, stages, extra).group_by(source.c.key))
    first = (select(f.variant, f.patient_id, func.min(f.weeks_to_book).label("week"))
             .where(f.booked == 1).group_by(f.variant, f.patient_id).subquery("first_booking"))
    parts.append(_count_row("variant", first.c.variant, first.c.week, func.count(), {}, stages, extra)
                 .group_by(first.c.variant, first.c.week))
    return union_all(*parts)


def _percentiles(session: Session, campaign: Campaign, now: datetime,
                 timed: dict[tuple[str, str, str], int]) -> dict[tuple[str, str, str], tuple[float | None, ...]]:
    """The ``PERCENTILES`` of each duration for each (dimension, key, duration) timed ``n``
    times. PostgreSQL: its percentile_cont, one ordered aggregate per breakdown and duration.
    Elsewhere: the two values around each rank it interpolates between, read from the
    duration's index at an offset (no ranking of every value), interpolated the same way."""
    f = EnrolmentFact.__table__.c
    reference = _reference_day(campaign, now)
    durations = {d.key: d for d in DURATIONS}
    if session.get_bind().dialect.name == "postgresql":
        if not timed:
            return {}
        dims = tuple(dict.fromkeys(dim for dim, _key, _measure in timed))
        rows = (select(*(_breakdown_key(dim, f, reference).label(dim) for dim in dims),
                       *(f[d.column] for d in DURATIONS))
                .where(f.campaign_id == campaign.id, or_(*(f[d.column].is_not(None) for d in DURATIONS)))
                .cte("timed").prefix_with("MATERIALIZED"))  # one scan of the table for every breakdown
        parts = [select(literal(dim), rows.c[dim], literal(d.key),
                        *(func.percentile_cont(p / 100).within_group(rows.c[d.column]) for p in PERCENTILES))
                 .where(rows.c[d.column].is_not(None)).group_by(rows.c[dim])
                 for dim in dims for d in DURATIONS]
        return {(dim, key, measure): tuple(values) for dim, key, measure, *values in session.execute(union_all(*parts))}
    parts = []
    for (dim, key, measure), n in timed.items():
        seconds = f[durations[measure].column]
        for low in sorted({int(1 + p / 100 * (n - 1)) for p in PERCENTILES}):
            values = (select(seconds.label("seconds"))
                      .where(f.campaign_id == campaign.id, seconds.is_not(None), _has_key(dim, f, key, reference))
                      .order_by(seconds).limit(2).offset(low - 1).subquery())
            parts.append(select(literal(dim), literal(key), literal(measure), literal(low), values.c.seconds))
    ranks: dict[tuple[str, str, str], dict[int, float]] = {}
    for i in range(0, len(parts), 100):  # SQLite allows 500 parts in one compound SELECT
        pairs: dict[tuple[str, str, str, int], list[float]] = {}
        for dim, key, measure, low, seconds in session.execute(union_all(*parts[i:i + 100])):
            pairs.setdefault((dim, key, measure, low), []).append(float(seconds))
        for (dim, key, measure, low), values in pairs.items():  # two neighbouring ranks: the smaller value first
            ranks.setdefault((dim, key, measure), {}).update(zip(range(low, low + 2), sorted(values)))
    return {entry: tuple(_interpolate(ranks.get(entry, {}), n, p) for p in PERCENTILES) for entry, n in timed.items()}


def _no_jit(session: Session) -> None:
    """PostgreSQL would JIT-compile the wide, one-off statements here (the facts' refresh and
    the report; their cost estimates are far past jit_above_cost), and compiling took longer
    than running them: ~10 s against ~3 s at 100 000 enrolments (bench/dashboard.py). For
    this transaction only."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))


def _someone_enrolled_twice(session: Session, campaign: Campaign) -> bool:
    """Whether any patient has two enrolments (two care gaps) in the campaign; read from
    the (campaign, patient, gap) unique index."""
    return session.scalar(select(Enrolment.patient_id).where(Enrolment.campaign_id == campaign.id)
                          .group_by(Enrolment.patient_id).having(func.count() > 1).limit(1)) is not None


def _interpolate(ranks: dict[int, float], n: int, p: int) -> float | None:
    """Linear interpolation between the two ranks around 1 + p/100 (n - 1): PostgreSQL's
    percentile_cont and numpy's default."""
    position = 1 + p / 100 * (n - 1)
    low = int(position)
    fraction = position - low
    if low not in ranks:
        return None
    if fraction == 0 or low + 1 not in ranks:
        return ranks[low]
    return ranks[low] + fraction * (ranks[low + 1] - ranks[low])


def percentile(values: Iterable[float], p: int) -> float | None:
    """The same interpolated percentile in Python, for small lists (tests, checks)."""
    ordered = sorted(values)
    return _interpolate(dict(enumerate(ordered, start=1)), len(ordered), p) if ordered else None


def _help(session: Session, campaign: Campaign) -> list[HelpRow]:
    rows = session.execute(
        select(HelpRequest.kind, func.count(), func.count(distinct(Enrolment.patient_id)))
        .join(Enrolment, Enrolment.id == HelpRequest.enrolment_id)
        .where(Enrolment.campaign_id == campaign.id).group_by(HelpRequest.kind).order_by(HelpRequest.kind)).all()
    return [HelpRow(kind, int(requests), int(patients)) for kind, requests, patients in rows]


def _typed_key(dim: str, key: str) -> object:
    if dim in ("tier", "step") and key.lstrip("-").isdigit():
        return int(key)
    return key


def _sort_key(dim: str):
    def key(group: Group):
        if dim == "variant":
            return (group.key == CONTROL, str(group.key))
        if dim in ("tier", "step"):
            return (group.key == "", group.key if isinstance(group.key, int) else 0)
        if dim == "age_band":
            order = [label for _years, label in AGE_BANDS] + [OLDEST_BAND]
            return (0, order.index(group.key) if group.key in order else 99)
        return (group.key == "", str(group.key))
    return key


def campaign_report(session: Session, campaign: Campaign, now: datetime | None = None,
                    dimensions: Iterable[str] = tuple(DIMENSIONS)) -> CampaignReport:
    """Every metric of one campaign, overall and broken down by each of ``dimensions``
    ("variant" always, for the experiment): one statement for the counts over the stored
    facts, one (or a few) for the percentiles and one small query for help requests.
    Refreshes the facts first (``refresh_facts``: writes and flushes, the caller commits).
    Raises KeyError for an unknown dimension."""
    now = now or utcnow()
    dims = tuple(dict.fromkeys(("variant", *dimensions)))
    for dim in dims:
        DIMENSIONS[dim]  # noqa: B018 - KeyError for a dimension we don't know
    extra = extra_stages(campaign)
    _no_jit(session)
    refresh_facts(session, campaign, now)
    if _someone_enrolled_twice(session, campaign):
        statement = _folded_counts(_facts(campaign, now), STAGES, extra, dims)
    else:
        statement = _combination_counts(campaign, now, STAGES, extra, dims)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    timed: dict[tuple[str, str, str], int] = {}
    weekly: dict[str, list[tuple[int, int]]] = {}
    for row in session.execute(statement).mappings():
        dim, key = row["dim"], row["key"]
        if row["part"] == "week":
            weekly.setdefault(key, []).append((int(row["week"]), int(row["patients"])))
            continue
        counted = STAGES + extra if dim == "all" else STAGES
        counts[(dim, key)] = {stage.key: int(row[stage.key] or 0) for stage in counted}
        timed.update({(dim, key, d.key): int(row[f"n_{d.key}"]) for d in DURATIONS if row[f"n_{d.key}"]})
    percentiles = _percentiles(session, campaign, now, timed)

    def group(dim: str, key: str) -> Group:
        durations = {}
        for duration in DURATIONS:
            n = timed.get((dim, key, duration.key), 0)
            durations[duration.key] = (Percentiles(n, *percentiles.get((dim, key, duration.key), (None, None)))
                                       if n else Percentiles(0, None, None))
        return Group(_typed_key(dim, key), counts[(dim, key)], durations)

    overall = group("all", "") if ("all", "") in counts else Group("", {s.key: 0 for s in STAGES + extra},
                                                                    {d.key: Percentiles(0, None, None)
                                                                     for d in DURATIONS})
    breakdowns = {dim: sorted((group(d, key) for (d, key) in counts if d == dim), key=_sort_key(dim)) for dim in dims}
    c = overall.counts
    days = campaign.step_days or [0]
    steps = [StepRow(step, days[step] if step < len(days) else None, c[f"sent_step_{step}"],
                     c[f"delivered_step_{step}"], c[f"booked_after_step_{step}"])
             for step in _steps_of(campaign) if c[f"sent_step_{step}"] or c[f"booked_after_step_{step}"]]
    channels = [ChannelRow(channel, c[f"sent_{channel}"], c[f"delivered_{channel}"], c[f"opted_out_{channel}"])
                for channel in CHANNELS if c[f"sent_{channel}"] or c[f"opted_out_{channel}"]]
    if c["opted_out_all"]:
        channels.append(ChannelRow("all", c["sent"], 0, c["opted_out_all"]))
    weeks = {}
    for arm in breakdowns["variant"]:
        audience, total, points = arm.counts["audience"], 0, []
        for week, booked in sorted(weekly.get(arm.key, [])):
            total += booked
            points.append(WeekPoint(week, total, audience))
        weeks[arm.key] = points
    return CampaignReport(campaign, now, overall, breakdowns, steps, channels, _help(session, campaign), weeks)


# --- every campaign at a glance --------------------------------------------------------------------------

@dataclass(frozen=True)
class CampaignSummary:
    campaign: Campaign
    group: Group


def campaign_overview(session: Session, now: datetime | None = None) -> list[CampaignSummary]:
    """Audience, bookings, visits and win-backs of every campaign, newest first, in one
    statement (the same definitions as the campaign report, without the event log)."""
    now = now or utcnow()
    campaigns = list(session.scalars(select(Campaign).order_by(Campaign.created_at.desc(), Campaign.id.desc())))
    if not campaigns:
        return []
    ids = [c.id for c in campaigns]
    appointments = _appointment_outcomes(ids)
    a = appointments.c
    facts = (select(Enrolment.campaign_id, Enrolment.patient_id,
                    case((Enrolment.holdout.is_(True), 1), else_=0).label("held"),
                    _flag(a.first_booked_at.is_not(None)).label("booked"),
                    func.coalesce(a.won_back, 0).label("won_back"),
                    _outcome(a.attended == 1, a.live_until > now, a.live_until.is_not(None), a.no_show == 1,
                             a.first_booked_at.is_not(None)).label("outcome"))
             .outerjoin(appointments, appointments.c.enrolment_id == Enrolment.id)
             .where(Enrolment.campaign_id.in_(ids)).subquery("overview_facts"))
    f = facts.c
    keys = ("audience", "booked", "kept", "no_show", "cancelled", "settled", "won_back")
    columns = [func.count(distinct(case((STAGE[k].flag(f), f.patient_id)))).label(k) for k in keys]
    columns.append(func.count(distinct(case((f.held == 1, f.patient_id)))).label("control"))
    rows = {row["campaign_id"]: row for row in session.execute(
        select(f.campaign_id, *columns).group_by(f.campaign_id)).mappings()}
    summaries = []
    for campaign in campaigns:
        row = rows.get(campaign.id, {})
        summaries.append(CampaignSummary(campaign, Group(campaign.id, {k: int(row.get(k) or 0)
                                                                       for k in (*keys, "control")})))
    return summaries


# --- drill-down (coordinators) --------------------------------------------------------------------------

@dataclass(frozen=True)
class CellPatient:
    patient_id: int
    enrolment_id: int
    given_name: str
    family_name: str
    arm: str
    outcome: str | None


def patients_in_cell(session: Session, campaign: Campaign, stage: str, dim: str | None = None,
                     key: str | None = None, now: datetime | None = None,
                     limit: int = MAX_DRILL_DOWN) -> list[CellPatient]:
    """The patients behind one number of the report (a stage, optionally within one row of a
    breakdown), at most ``limit``, from the facts refreshed first (writes and flushes, the
    caller commits). Raises KeyError for an unknown stage or dimension."""
    now = now or utcnow()
    flag = {s.key: s for s in STAGES + extra_stages(campaign)}[stage].flag
    if dim is not None:
        DIMENSIONS[dim]  # noqa: B018 - KeyError for a dimension we don't know
    _no_jit(session)
    refresh_facts(session, campaign, now)
    facts = _facts(campaign, now)
    f = facts.c
    conditions = [flag(f)]
    if dim is not None:
        conditions.append(_dimension_key(facts, dim) == (key or ""))
    query = (select(f.patient_id, f.enrolment_id, Patient.given_name, Patient.family_name, f.variant, f.outcome)
             .join(Patient, Patient.id == f.patient_id).where(*conditions)
             .order_by(Patient.family_name, Patient.given_name, f.enrolment_id).limit(limit))
    return [CellPatient(*row) for row in session.execute(query)]


# --- tables: one shape for the screen, the CSV export and the CLI -----------------------------------------

def label_for(dim: str, key: object) -> str:
    """The words a person reads for a breakdown key, in the current language (for tables and charts)."""
    if dim == "variant":
        return _("Control group (no messages)") if key == CONTROL else _("Variant %(key)s", key=key)
    if key in ("", None):
        return {"channel": _("No message sent"), "location": _("No booking"),
                "step": _("No message before booking")}.get(dim, _("Not known"))
    if dim == "tier":
        return _("Tier %(tier)s", tier=key)
    if dim == "step":
        return _("Step %(step)s", step=int(key) + 1)
    if dim == "language":
        try:
            return Locale.parse(str(key)).get_display_name(str(get_locale())) or str(key)
        except (ValueError, UnknownLocaleError):
            return str(key)
    if dim == "care_gap":
        gap = CARE_GAPS.get(str(key))
        return f"{gap.service_line} ({key})" if gap else str(key)
    if dim == "channel":
        return {"sms": _("Text message"), "email": _("Email"), "portal": _("Portal inbox"),
                "all": _("Everything (stop all)")}.get(str(key), str(key))
    if dim == "help":
        return {"cost": _("Cost or insurance"), "ride": _("A ride"), "interpreter": _("An interpreter")}.get(
            str(key), str(key))
    return str(key)



@dataclass(frozen=True)
class Column:
    key: str  # the CSV / JSON header (stable, documented in docs/metrics.md)
    label: object
    kind: str = "count"  # label, count, rate, hours, days, points, text
    basis: tuple[str, ...] = ()  # the count columns this value is computed from (for suppression)
    screen: bool = True  # shown in the dashboard's table (the export has every column)


@dataclass
class Table:
    key: str
    title: object
    columns: list[Column]
    rows: list[dict]
    partition: bool = False  # rows split one population: suppress a second cell where one alone would show
    row_partitions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (total column, columns that add up to it)

    def column(self, key: str) -> Column:
        return next(c for c in self.columns if c.key == key)


def _rate_column(rate: Rate, screen: bool = True) -> Column:
    return Column(rate.key, rate.label, "rate", (rate.numerator, rate.denominator), screen)


def _duration_columns(duration: Duration, screen: bool = True) -> list[Column]:
    n_key = f"n_{duration.key}"
    return [Column(n_key, _l("Patients timed"), "count", (), False),
            Column(f"median_days_{duration.key}", _l("%(what)s: median days", what=duration.label), "days", (n_key,),
                   screen),
            Column(f"p90_days_{duration.key}", _l("%(what)s: 90th percentile, days", what=duration.label), "days",
                   (n_key,), False)]


def _group_values(group: Group) -> dict:
    values = dict(group.counts)
    for rate in RATES:
        values[rate.key] = group.rate(rate.key)
    for duration in DURATIONS:
        p = group.durations.get(duration.key) or Percentiles(0, None, None)
        values[f"n_{duration.key}"] = p.n
        values[f"median_days_{duration.key}"] = None if p.p50 is None else p.p50 / DAY
        values[f"p90_days_{duration.key}"] = None if p.p90 is None else p.p90 / DAY
    return values


SCREEN_COUNTS = {"audience", "booked", "kept", "no_show", "won_back"}
SCREEN_RATES = {"booking_rate", "win_back_rate", "kept_rate", "closure_rate"}
TABLE_STAGES = ("audience", "sent", "delivered", "opened", "verified", "booked", "booked_by_staff", "kept",
                "upcoming", "unrecorded", "no_show", "cancelled", "settled", "won_back", "closed", "opted_out",
                "refill_due", "refill_done", "retention_30_due", "retained_30", "retention_90_due", "retained_90")
OUTCOME_PARTITION = (("booked", OUTCOMES), ("settled", ("kept", "no_show", "cancelled")))


def _metric_columns() -> list[Column]:
    columns = [Column(key, STAGE[key].label, "count", (), key in SCREEN_COUNTS) for key in TABLE_STAGES]
    columns += [_rate_column(rate, rate.key in SCREEN_RATES) for rate in RATES]
    for duration in DURATIONS:
        columns += _duration_columns(duration, duration.key == "to_book")
    return columns


def breakdown_table(report: CampaignReport, dim: str, label_for: Callable[[str, object], str] | None = None) -> Table:
    label_for = label_for or (lambda _dim, key: str(key))
    rows = [{"group": label_for(dim, group.key), "group_key": group.key, **_group_values(group)}
            for group in report.breakdowns[dim]]
    return Table(f"by_{dim}", _l("By %(dimension)s", dimension=DIMENSIONS[dim]),
                 [Column("group", DIMENSIONS[dim], "label"), *_metric_columns()], rows,
                 partition=dim != "care_gap", row_partitions=OUTCOME_PARTITION)


def summary_table(report: CampaignReport) -> Table:
    """The headline numbers: every rate and time for the whole campaign, with what it is made of."""
    group = report.overall
    rows = []
    for rate in RATES:
        rows.append({"metric": rate.label, "metric_key": rate.key, "value": group.rate(rate.key),
                     "numerator": group.counts[rate.numerator], "denominator": group.counts[rate.denominator],
                     "kind": "rate"})
    for duration in DURATIONS:
        p = group.durations[duration.key]
        for which, value in (("median", p.p50), ("p90", p.p90)):
            label = _l("%(what)s: median days", what=duration.label) if which == "median" else \
                _l("%(what)s: 90th percentile, days", what=duration.label)
            rows.append({"metric": label, "metric_key": f"{which}_days_{duration.key}",
                         "value": None if value is None else value / DAY, "numerator": p.n, "denominator": None,
                         "kind": "days"})
    return Table("summary", _l("Headline numbers"),
                 [Column("metric", _l("Measure"), "label"), Column("value", _l("Value"), "value",
                                                                   ("numerator", "denominator")),
                  Column("numerator", _l("Patients counted"), "count"),
                  Column("denominator", _l("Out of"), "count")], rows)


def funnel_table(report: CampaignReport) -> Table:
    audience = report.overall.counts["audience"]
    rows = [{"stage": STAGE[key].label, "stage_key": key, "patients": report.overall.counts[key],
             "share": report.overall.counts[key] / audience if audience else None, "audience": audience}
            for key in (*FUNNEL, "booked_by_staff", "upcoming", "unrecorded", "no_show", "cancelled", "won_back")]
    return Table("funnel", _l("Funnel"),
                 [Column("stage", _l("Stage"), "label"), Column("patients", _l("Patients")),
                  Column("share", _l("Share of enrolled"), "rate", ("patients", "audience")),
                  Column("audience", _l("Enrolled"), "count", (), False)], rows)


def step_table(report: CampaignReport) -> Table:
    booked_total = sum(row.booked_after for row in report.steps)
    rows = [{"step": row.step + 1, "day": row.day, "sent": row.sent, "delivered": row.delivered,
             "booked_after": row.booked_after, "booked_total": booked_total,
             "share_of_bookings": row.booked_after / booked_total if booked_total else None}
            for row in report.steps]
    return Table("by_step", _l("By message step"),
                 [Column("step", _l("Step"), "label"), Column("day", _l("Day"), "number"),
                  Column("sent", _l("Patients sent this step")), Column("delivered", _l("Delivered")),
                  Column("booked_after", _l("Booked after this step")),
                  Column("booked_total", _l("Booked after any step"), "count", (), False),
                  Column("share_of_bookings", _l("Share of bookings"), "rate", ("booked_after", "booked_total"))],
                 rows, partition=False)


def channel_table(report: CampaignReport, label_for: Callable[[str, object], str] | None = None) -> Table:
    label_for = label_for or (lambda _dim, key: str(key))
    rows = [{"channel": label_for("channel", row.channel), "channel_key": row.channel, "sent": row.sent,
             "delivered": row.delivered, "opted_out": row.opted_out, "opt_out_rate": row.opt_out_rate}
            for row in report.channels]
    return Table("by_channel_opt_out", _l("Opt-outs by channel"),
                 [Column("channel", _l("Channel"), "label"), Column("sent", _l("Patients sent")),
                  Column("delivered", _l("Delivered")), Column("opted_out", _l("Opted out")),
                  Column("opt_out_rate", _l("Opt-out rate"), "rate", ("opted_out", "sent"))], rows)


def help_table(report: CampaignReport, label_for: Callable[[str, object], str] | None = None) -> Table:
    label_for = label_for or (lambda _dim, key: str(key))
    rows = [{"kind": label_for("help", row.kind), "kind_key": row.kind, "requests": row.requests,
             "patients": row.patients} for row in report.help]
    return Table("help_requests", _l("Help requests"),
                 [Column("kind", _l("Kind of help"), "label"), Column("requests", _l("Requests"), "count", ("patients",)),
                  Column("patients", _l("Patients"))], rows, partition=True)


def weeks_table(report: CampaignReport, label_for: Callable[[str, object], str] | None = None) -> Table:
    label_for = label_for or (lambda _dim, key: str(key))
    rows = [{"arm": label_for("variant", arm), "arm_key": arm, "week": point.week + 1, "booked": point.booked,
             "audience": point.audience, "rate": point.rate}
            for arm, points in report.weeks.items() for point in points]
    return Table("booking_by_week", _l("Booked by week since enrolment"),
                 [Column("arm", _l("Group"), "label"), Column("week", _l("Week"), "number"),
                  Column("booked", _l("Booked by then")), Column("audience", _l("Enrolled")),
                  Column("rate", _l("Booking rate"), "rate", ("booked", "audience"))], rows)


def overview_table(summaries: list[CampaignSummary]) -> Table:
    rows = []
    for summary in summaries:
        values = dict(summary.group.counts)
        values.update({"campaign": summary.campaign.name, "campaign_id": summary.campaign.id,
                       "status": summary.campaign.status,
                       "booking_rate": summary.group.rate("booking_rate"),
                       "win_back_rate": summary.group.rate("win_back_rate"),
                       "kept_rate": summary.group.rate("kept_rate")})
        rows.append(values)
    return Table("campaigns", _l("Campaigns"),
                 [Column("campaign", _l("Campaign"), "label"), Column("status", _l("Status"), "text"),
                  Column("audience", STAGE["audience"].label), Column("control", _l("Control group")),
                  Column("booked", STAGE["booked"].label), Column("kept", STAGE["kept"].label),
                  Column("no_show", STAGE["no_show"].label, "count", (), False),
                  Column("cancelled", STAGE["cancelled"].label, "count", (), False),
                  Column("settled", STAGE["settled"].label, "count", (), False),
                  Column("won_back", STAGE["won_back"].label),
                  _rate_column(RATE["booking_rate"]), _rate_column(RATE["win_back_rate"]),
                  _rate_column(RATE["kept_rate"])], rows,
                 row_partitions=(("settled", ("kept", "no_show", "cancelled")),))


# --- small-cell suppression -----------------------------------------------------------------------------

def _small(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < SMALL_CELL


def suppression_mask(table: Table) -> list[set[str]]:
    """Which cells of each row an export must hide.

    Primary: a count of 1 to 10 patients. Complementary: where exactly one cell of a set
    that adds up to a known total is hidden (a column of a table whose rows split one
    population, or a row's outcomes that add up to its bookings), the smallest other
    non-zero cell of the set is hidden too, so the hidden one can't be worked out by
    subtraction. Then every value computed from a hidden count is hidden.
    """
    counts = [c.key for c in table.columns if c.kind == "count"]
    hidden = [{key for key in counts if _small(row.get(key))} for row in table.rows]
    changed = True
    while changed:
        changed = False
        sets: list[list[tuple[int, str]]] = []
        if table.partition and len(table.rows) > 1:
            sets += [[(i, key) for i in range(len(table.rows))] for key in counts]
        for _total, parts in table.row_partitions:
            sets += [[(i, key) for key in parts] for i in range(len(table.rows))]
        for cells in sets:
            if sum(1 for i, key in cells if key in hidden[i]) == 1:
                others = [(table.rows[i].get(key), i, key) for i, key in cells
                          if key not in hidden[i] and isinstance(table.rows[i].get(key), int) and table.rows[i][key] > 0]
                if others:
                    _value, i, key = min(others, key=lambda item: item[0])
                    hidden[i].add(key)
                    changed = True
    for row, row_hidden in zip(table.rows, hidden):
        for column in table.columns:
            if column.kind != "count" and any(basis in row_hidden for basis in column.basis):
                row_hidden.add(column.key)
            if column.kind == "count" and any(basis in row_hidden for basis in column.basis):
                row_hidden.add(column.key)
    return hidden


def _plain(value, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def export_rows(table: Table) -> list[list[str]]:
    """The header and rows of an export, every small cell replaced by "<11"."""
    hidden = suppression_mask(table)
    out = [[column.key for column in table.columns]]
    for row, row_hidden in zip(table.rows, hidden):
        out.append([SUPPRESSED if column.key in row_hidden else _plain(row.get(column.key), column.kind)
                    for column in table.columns])
    return out


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(export_rows(table))
    return buffer.getvalue()


def report_tables(report: CampaignReport, label_for: Callable[[str, object], str] | None = None,
                  experiment: Table | None = None) -> dict[str, Table]:
    """Every table of a campaign report, by key, in the order the dashboard shows them."""
    tables = [summary_table(report), funnel_table(report)]
    if experiment is not None:
        tables.append(experiment)
    tables.append(weeks_table(report, label_for))
    tables += [breakdown_table(report, dim, label_for) for dim in DIMENSIONS if dim in report.breakdowns]
    tables += [step_table(report), channel_table(report, label_for), help_table(report, label_for)]
    return {table.key: table for table in tables}
