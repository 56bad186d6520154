"""Care-gap rules: who is due for what, as of a date.

Each rule of the product brief (flow 1, step 2) exists twice, and the two must agree
(tests check they do on hand-made and on random histories):

- a small pure function over one patient's facts (``RULES[code](person, facts, as_of,
  settings) -> bool``), easy to read and to unit-test, used by ``open_gaps``;
- a set-based SQL query, ``patients_with_gap(session, code, as_of)``, a SELECT of the ids of
  every patient with the gap; the audience builder puts the same WHERE clauses
  (``gap_conditions``) and its exclusions in one INSERT ... SELECT.

Facts are matched on the canonical code system URI and code (``importers.normalize_system``),
whatever source they came from: a test done elsewhere and imported from another feed
closes the gap like one done here. Only facts that started on or before ``as_of`` count,
so a rule gives the same answer today as it would have given on that day. Deceased
patients, patients who moved away and patients not yet born never have a gap. Ages use
completed years; someone born on 29 February turns a year older on 1 March in common
years. The code sets, with their sources, are listed in docs/care-gaps.md.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

from sqlalchemy import Boolean, Date, Select, and_, exists, false, func, not_, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from portal.models import ClinicalFact, FactKind, Patient
from portal.services.care_gaps import CARE_GAPS
from portal.services.importers import CPT, CVX, HCPCS, ICD10CM, LOINC, RXNORM, SNOMED

# --- dates ------------------------------------------------------------------------------------------------


def months_before(day: date, months: int) -> date:
    """The same day ``months`` calendar months earlier, clamped to the month's last day
    (31 May - 3 months = 28 or 29 February)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    for candidate in (day.day, 30, 29, 28):
        try:
            return date(year, month, min(day.day, candidate))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def years_before(day: date, years: int) -> date:
    return months_before(day, 12 * years)


def age_on(birth_date: date, day: date) -> int:
    """Completed years on ``day``. Born 29 February: a year older on 1 March in common years."""
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def born_by(as_of: date, years: int) -> date:
    """The latest birth date of someone at least ``years`` old on ``as_of``:
    ``age_on(b, as_of) >= years`` exactly when ``b <= born_by(as_of, years)``."""
    return years_before(as_of, years)


class date_plus_days(FunctionElement):
    """``started_on + days`` as a date, in each database's own dialect."""

    type = Date()
    inherit_cache = True
    name = "date_plus_days"


@compiles(date_plus_days)
def _date_plus_days_default(element, compiler, **kw):  # PostgreSQL: date + integer is a date
    day, days = list(element.clauses)
    return f"({compiler.process(day, **kw)} + {compiler.process(days, **kw)})"


@compiles(date_plus_days, "sqlite")
def _date_plus_days_sqlite(element, compiler, **kw):  # SQLite stores dates as ISO text
    day, days = list(element.clauses)
    return f"date({compiler.process(day, **kw)}, '+' || {compiler.process(days, **kw)} || ' days')"


class code_between(FunctionElement):
    """``low <= code < high`` in byte order: a prefix match written as a range, which PostgreSQL's
    extended statistics on clinical_fact (kind, system, code) can estimate and LIKE cannot."""

    type = Boolean()
    inherit_cache = True
    name = "code_between"


@compiles(code_between)
def _code_between_default(element, compiler, **kw):  # PostgreSQL: byte order whatever the database's collation
    code, low, high = (compiler.process(clause, **kw) for clause in element.clauses)
    return f'({code} COLLATE "C" >= {low} AND {code} COLLATE "C" < {high})'


@compiles(code_between, "sqlite")
def _code_between_sqlite(element, compiler, **kw):  # SQLite compares text byte by byte already
    code, low, high = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"({code} >= {low} AND {code} < {high})"


def _starts_with(code: Any, prefix: str) -> ColumnElement[bool]:
    """``code`` starts with ``prefix``: ``prefix <= code < prefix`` with its last character bumped."""
    return code_between(code, prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1))


# --- code sets --------------------------------------------------------------------------------------------


class Fact(Protocol):
    kind: str
    system: str
    code: str
    started_on: date
    ended_on: date | None
    category: str
    days_supply: int | None
    status: str


class Person(Protocol):
    birth_date: date
    sex: str
    deceased_on: date | None
    moved_away: bool


@dataclass(frozen=True)
class CodeSet:
    """Facts of some kinds whose (system, code) is listed, whose code starts with a listed
    prefix (ICD-10-CM families), or whose category is listed (encounter classes)."""

    name: str
    kinds: frozenset[str]
    codes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    prefixes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    categories: frozenset[str] = frozenset()

    def matches(self, fact: Fact) -> bool:
        if fact.kind not in self.kinds:
            return False
        return (fact.category in self.categories or fact.code in self.codes.get(fact.system, ())
                or fact.code.startswith(self.prefixes.get(fact.system, ("\0",))))

    def clause(self, table: Any = ClinicalFact) -> ColumnElement[bool]:
        options: list[ColumnElement[bool]] = [and_(table.system == system, table.code.in_(sorted(codes)))
                                              for system, codes in self.codes.items()]
        options += [and_(table.system == system, or_(*(_starts_with(table.code, p) for p in prefixes)))
                    for system, prefixes in self.prefixes.items()]
        if self.categories:
            options.append(table.category.in_(sorted(self.categories)))
        return and_(table.kind.in_(sorted(self.kinds)), or_(*options))


def _codes(**by_system: str) -> dict[str, frozenset[str]]:
    systems = {"snomed": SNOMED, "loinc": LOINC, "cvx": CVX, "rxnorm": RXNORM, "cpt": CPT, "hcpcs": HCPCS}
    return {systems[name]: frozenset(codes.split()) for name, codes in by_system.items()}


_TESTS = frozenset({FactKind.PROCEDURE, FactKind.OBSERVATION})

WELLNESS_VISIT = CodeSet(
    "wellness visit", frozenset({FactKind.ENCOUNTER, FactKind.PROCEDURE}),
    _codes(snomed="162673000 410620009 86013001 444971000124105",
           cpt="99381 99382 99383 99384 99385 99386 99387 99391 99392 99393 99394 99395 99396 99397",
           hcpcs="G0402 G0438 G0439"),
    categories=frozenset({"wellness"}))
MAMMOGRAM = CodeSet(
    "mammogram", _TESTS,
    _codes(snomed="71651007 24623002 241055006 43204002",
           loinc="24604-1 24605-8 24606-6 26175-0 26346-7 36625-2",
           cpt="77061 77062 77063 77065 77066 77067", hcpcs="G0202 G0204 G0206"))
BILATERAL_MASTECTOMY = CodeSet(
    "bilateral mastectomy", frozenset({FactKind.PROCEDURE, FactKind.CONDITION}),
    _codes(snomed="14693006 14714006 17086001 22418005 27865001 52314009 428529004"))
COLONOSCOPY = CodeSet(
    "colonoscopy", _TESTS,
    _codes(snomed="73761001 12350003 174158000 235150006 25732003 367535003 443998000 444783004 446521004 "
                  "446745002 447021001 8180007",
           cpt="44388 44389 44390 44391 44392 44394 44401 44402 44403 44404 44405 44406 44407 44408 45378 45379 "
               "45380 45381 45382 45384 45385 45386 45388 45389 45390 45391 45392 45393 45398",
           hcpcs="G0105 G0121"))
STOOL_TEST = CodeSet(  # guaiac FOBT and FIT
    "stool test", _TESTS,
    _codes(loinc="12503-9 12504-7 14563-1 14564-9 14565-6 2335-8 27396-1 27401-9 27925-7 27926-5 29771-3 "
                 "56490-6 56491-4 57905-2 58453-2 80372-6",
           cpt="82270 82274", hcpcs="G0328"))
STOOL_DNA_TEST = CodeSet(  # FIT-DNA
    "stool DNA test", _TESTS, _codes(loinc="77353-1 77354-9", cpt="81528"))
TOTAL_COLECTOMY_OR_COLON_CANCER = CodeSet(
    "total colectomy or colorectal cancer", frozenset({FactKind.PROCEDURE, FactKind.CONDITION}),
    _codes(snomed="26390003 303401008 307666008 307667004 307669001 31130001 36192008 44751009 456004 "
                  "363406005 93761005 94260004 109838007",
           cpt="44150 44151 44152 44153 44155 44156 44157 44158 44210 44211 44212"),
    prefixes={ICD10CM: ("C18", "C19", "C20")})
DIABETES = CodeSet(
    "diabetes", frozenset({FactKind.CONDITION}),
    _codes(snomed="44054006 46635009 73211009 127013003 90781000119102 97331000119101 1551000119108 "
                  "1501000119109 368581000119106 157141000119108"),
    prefixes={ICD10CM: ("E10", "E11", "E13")})
A1C_TEST = CodeSet(
    "HbA1c test", _TESTS, _codes(loinc="4548-4 17855-8 17856-6 4549-2 96595-4", cpt="83036 83037"))
MAINTENANCE_MEDICINE = CodeSet(  # long-term medicines whose refills lapse silently; not as-needed ones
    "maintenance medicine", frozenset({FactKind.MEDICATION}),
    _codes(rxnorm="310798 979485 979492 314076 314077 308136 200033 313988 1656356 314231 312961 309362 "
                  "866412 106892 860975 895996 896209 904419"),
    categories=frozenset({"maintenance"}))
ACUTE_CARE = CodeSet(  # a discharge from these needs a follow-up visit
    "inpatient or emergency stay", frozenset({FactKind.ENCOUNTER}), categories=frozenset({"inpatient", "emergency"}))
SURGERY = CodeSet(
    "procedure needing follow-up", frozenset({FactKind.PROCEDURE}),
    _codes(snomed="80146002 6025007 232717009 415070008 36969009 609588000 52734007 11466000 38102005 45595009"),
    categories=frozenset({"surgery", "surgical"}))
NOT_A_FOLLOW_UP = frozenset({"inpatient", "emergency", "urgentcare", "snf", "hospice"})
FLU_VACCINE = CodeSet(
    "flu vaccine", frozenset({FactKind.IMMUNIZATION, FactKind.PROCEDURE}),
    _codes(cvx="88 111 135 140 141 144 149 150 153 155 158 161 166 168 171 185 186 197 205",
           snomed="86198006",
           cpt="90630 90653 90654 90655 90656 90657 90658 90660 90661 90662 90672 90673 90674 90682 90685 90686 "
               "90687 90688 90689 90694 90756"))

CODE_SETS = (WELLNESS_VISIT, MAMMOGRAM, BILATERAL_MASTECTOMY, COLONOSCOPY, STOOL_TEST, STOOL_DNA_TEST,
             TOTAL_COLECTOMY_OR_COLON_CANCER, DIABETES, A1C_TEST, MAINTENANCE_MEDICINE, ACUTE_CARE, SURGERY,
             FLU_VACCINE)


# --- settings and results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapSettings:
    """The knobs of the rules. Raises ValueError for values outside their documented range."""

    wellness_months: int = 12  # overdue after this many months without a wellness visit (12-18)
    refill_grace_days: int = 7  # a refill gap opens this many days after the supply ran out
    referral_days: int = 30  # a referral not completed within this many days is a gap
    referral_max_age_days: int = 365  # ... until it is this old: by then it needs a new referral
    followup_days: int = 14  # a follow-up visit is due within this many days of a discharge
    followup_lookback_days: int = 90  # discharges older than this no longer open a gap

    def __post_init__(self) -> None:
        if not 12 <= self.wellness_months <= 18:
            raise ValueError("wellness_months must be between 12 and 18")
        if min(self.refill_grace_days, self.referral_days, self.followup_days) < 0:
            raise ValueError("day counts cannot be negative")
        if self.referral_max_age_days <= self.referral_days or self.followup_lookback_days <= self.followup_days:
            raise ValueError("a look-back must be longer than its grace period")


DEFAULT_SETTINGS = GapSettings()


@dataclass(frozen=True, order=True)
class OpenGap:
    tier: int
    code: str


# --- the rules, one patient at a time ---------------------------------------------------------------------


def _any(facts: Iterable[Fact], codes: CodeSet, since: date | None = None) -> bool:
    return any(codes.matches(f) and (since is None or f.started_on >= since) for f in facts)


def annual_wellness(person: Person, facts: list[Fact], as_of: date, s: GapSettings) -> bool:
    """No wellness visit in the last ``wellness_months`` months (a visit exactly that long ago still counts)."""
    return not _any(facts, WELLNESS_VISIT, months_before(as_of, s.wellness_months))


def breast_screening(person: Person, facts: list[Fact], as_of: date, s: GapSettings) -> bool:
    """A woman aged 50 to 74 with no mammogram in 24 months and no bilateral mastectomy."""
    return (person.sex == "F" and 50 <= age_on(person.birth_date, as_of) <= 74
            and not _any(facts, MAMMOGRAM, months_before(as_of, 24)) and not _any(facts, BILATERAL_MASTECTOMY))


def colorectal_screening(person: Person, facts: list[Fact], as_of: date, s: GapSettings) -> bool:
    """Aged 45 to 75 with no colonoscopy in 10 years, stool test in 1 year or FIT-DNA in 3 years,
    and no total colectomy or colorectal cancer."""
    return (45 <= age_on(person.birth_date, as_of) <= 75
            and not _any(facts, COLONOSCOPY, years_before(as_of, 10))
            and not _any(facts, STOOL_TEST, years_before(as_of, 1))
            and not _any(facts, STOOL_DNA_TEST, years_before(as_of, 3))
            and not _any(facts, TOTAL_COLECTOMY_OR_COLON_CANCER))


def diabetes_a1c(person: Person, facts: list[Fact], as_of: date, s: GapSettings) -> bool:
    """Diabetes (a condition not ended by ``as_of``) and no HbA1c result in 6 months."""
    diabetic = any(DIABETES.matches(f) and (f.ended_on is None or f.ended_on > as_of) for f in facts)
    return diabetic and not _any(facts, A1C_TEST, months_before(as_of, 6))


def refill_gap(person: Person, facts: list[Fact], as_of: date, s: GapSettings) -> bool:
    """A maintenance medicine still active (its latest fill not stopped by ``as_of``) whose supply,
    counting every fill, ran out more than ``refill_grace_days`` days ago."""
    fills: dict[tuple[str, str], list[Fact]] = {}
    for fact in facts:
        if MAINTENANCE_MEDICINE.matches(fact) and fact.days_supply is not None:
            fills.setdefault((fact.system, fact.code), []).append(fact)
    threshold = as_of - timedelta(days=s.refill_grace_days)
    for group in fills.values():
        covered_until = max(f.started_on + timedelta(days=f.days_supply) for f in group)
        last = max(f.started_on for f in group)
        active = any(f.started_on == last and (f.ended_on is None or f.ended_on > as_of) for f in group)
        if active and covered_until < threshold:
            return True
    return False


def _referral_closed(fact: Fact, as_of: date) -> bool:
    return fact.status in ("completed", "cancelled") and (fact.ended_on is None or fact.ended_on <= as_of)


def referral_open(person: Person, facts: list[Fact], as_of: date, s: GapSettings) -> bool:
    """A referral made more than ``referral_days`` (and at most ``referral_max_age_days``) days ago
    that is neither completed nor cancelled."""
    newest, oldest = as_of - timedelta(days=s.referral_days), as_of - timedelta(days=s.referral_max_age_days)
    return any(f.kind == FactKind.REFERRAL and oldest <= f.started_on < newest and not _referral_closed(f, as_of)
               for f in facts)


def _discharged_on(fact: Fact) -> date:
    return fact.ended_on or fact.started_on


def post_discharge_followup(person: Person, facts: list[Fact], as_of: date, s: GapSettings) -> bool:
    """An inpatient or emergency stay or a surgical procedure that ended more than ``followup_days``
    (and at most ``followup_lookback_days``) days ago, with no office, telehealth or home visit since."""
    newest, oldest = as_of - timedelta(days=s.followup_days), as_of - timedelta(days=s.followup_lookback_days)
    for trigger in facts:
        if not (ACUTE_CARE.matches(trigger) or SURGERY.matches(trigger)):
            continue
        discharged = _discharged_on(trigger)
        if not oldest <= discharged < newest:
            continue
        if not any(f.kind == FactKind.ENCOUNTER and f.category not in NOT_A_FOLLOW_UP and f.started_on > discharged
                   for f in facts):
            return True
    return False


def flu_season_start(as_of: date) -> date | None:
    """1 August of the season ``as_of`` falls in; None from April to July, when no one is invited."""
    if as_of.month >= 8:
        return date(as_of.year, 8, 1)
    if as_of.month <= 3:
        return date(as_of.year - 1, 8, 1)
    return None


def flu_vaccine(person: Person, facts: list[Fact], as_of: date, s: GapSettings) -> bool:
    """During the season (1 August to 31 March), aged 6 months or more, no flu vaccine since 1 August."""
    start = flu_season_start(as_of)
    return (start is not None and person.birth_date <= months_before(as_of, 6)
            and not _any(facts, FLU_VACCINE, start))


Rule = Callable[[Person, list[Fact], date, GapSettings], bool]
RULES: dict[str, Rule] = {
    "annual_wellness": annual_wellness,
    "breast_screening": breast_screening,
    "colorectal_screening": colorectal_screening,
    "diabetes_a1c": diabetes_a1c,
    "refill_gap": refill_gap,
    "referral_open": referral_open,
    "post_discharge_followup": post_discharge_followup,
    "flu_vaccine": flu_vaccine,
}


def eligible(person: Person, as_of: date) -> bool:
    return person.deceased_on is None and not person.moved_away and person.birth_date <= as_of


def gaps_for(person: Person, facts: Iterable[Fact], as_of: date,
             settings: GapSettings = DEFAULT_SETTINGS) -> set[OpenGap]:
    """The open gaps of one person given their facts (a pure function; nothing is read or written)."""
    if not eligible(person, as_of):
        return set()
    known = [f for f in facts if f.started_on <= as_of]
    return {OpenGap(CARE_GAPS[code].tier, code) for code, rule in RULES.items()
            if code in CARE_GAPS and rule(person, known, as_of, settings)}


def open_gaps(session: Session, patient_id: int, as_of: date,
              settings: GapSettings = DEFAULT_SETTINGS) -> set[OpenGap]:
    """The open gaps of one patient as of a date, each with its catalogue tier
    (``sorted()`` orders them by tier). Raises LookupError for an unknown patient."""
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise LookupError(f"no patient {patient_id}")
    facts = session.scalars(select(ClinicalFact).where(ClinicalFact.patient_id == patient_id,
                                                       ClinicalFact.started_on <= as_of)).all()
    return gaps_for(patient, facts, as_of, settings)


# --- the same rules as set-based SQL ----------------------------------------------------------------------


def _has(codes: CodeSet, as_of: date, since: date | None = None, *extra: ColumnElement[bool]) -> ColumnElement[bool]:
    fact = aliased(ClinicalFact)
    conditions = [fact.patient_id == Patient.id, codes.clause(fact), fact.started_on <= as_of, *extra]
    if since is not None:
        conditions.append(fact.started_on >= since)
    return exists().where(*conditions)


def _patients_having(fact: Any, *conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """``patient.id IN (the patient ids of the matching facts)``. Where few patients have such a fact
    (diabetes, an open referral, a discharge), SQLite then starts from those facts instead of probing
    every patient's facts as it does for EXISTS; PostgreSQL plans both as the same semi-join."""
    return Patient.id.in_(select(fact.patient_id).where(*conditions))


def _age_between(as_of: date, youngest: int, oldest: int) -> ColumnElement[bool]:
    return and_(Patient.birth_date <= born_by(as_of, youngest), Patient.birth_date > born_by(as_of, oldest + 1))


def _annual_wellness_sql(as_of: date, s: GapSettings) -> list[ColumnElement[bool]]:
    return [not_(_has(WELLNESS_VISIT, as_of, months_before(as_of, s.wellness_months)))]


def _breast_screening_sql(as_of: date, s: GapSettings) -> list[ColumnElement[bool]]:
    return [Patient.sex == "F", _age_between(as_of, 50, 74),
            not_(_has(MAMMOGRAM, as_of, months_before(as_of, 24))), not_(_has(BILATERAL_MASTECTOMY, as_of))]


def _colorectal_screening_sql(as_of: date, s: GapSettings) -> list[ColumnElement[bool]]:
    return [_age_between(as_of, 45, 75),
            not_(_has(COLONOSCOPY, as_of, years_before(as_of, 10))),
            not_(_has(STOOL_TEST, as_of, years_before(as_of, 1))),
            not_(_has(STOOL_DNA_TEST, as_of, years_before(as_of, 3))),
            not_(_has(TOTAL_COLECTOMY_OR_COLON_CANCER, as_of))]


def _diabetes_a1c_sql(as_of: date, s: GapSettings) -> list[ColumnElement[bool]]:
    condition = aliased(ClinicalFact)
    diabetic = _patients_having(condition, DIABETES.clause(condition), condition.started_on <= as_of,
                                or_(condition.ended_on.is_(None), condition.ended_on > as_of))
    return [diabetic, not_(_has(A1C_TEST, as_of, months_before(as_of, 6)))]


def _refill_gap_sql(as_of: date, s: GapSettings) -> list[ColumnElement[bool]]:
    fill = aliased(ClinicalFact)
    known = [MAINTENANCE_MEDICINE.clause(fill), fill.started_on <= as_of, fill.days_supply.is_not(None)]
    groups = (select(fill.patient_id, fill.system, fill.code, func.max(fill.started_on).label("last_start"),
                     func.max(date_plus_days(fill.started_on, fill.days_supply)).label("covered_until"))
              .where(*known).group_by(fill.patient_id, fill.system, fill.code).subquery())
    latest = aliased(ClinicalFact)
    active = exists().where(latest.patient_id == groups.c.patient_id, latest.system == groups.c.system,
                            latest.code == groups.c.code, latest.started_on == groups.c.last_start,
                            MAINTENANCE_MEDICINE.clause(latest), latest.days_supply.is_not(None),
                            or_(latest.ended_on.is_(None), latest.ended_on > as_of))
    lapsed = select(groups.c.patient_id).where(
        groups.c.covered_until < as_of - timedelta(days=s.refill_grace_days), active)
    return [Patient.id.in_(lapsed)]


def _referral_open_sql(as_of: date, s: GapSettings) -> list[ColumnElement[bool]]:
    referral = aliased(ClinicalFact)
    closed = and_(referral.status.in_(("completed", "cancelled")),
                  or_(referral.ended_on.is_(None), referral.ended_on <= as_of))
    return [_patients_having(referral, referral.kind == FactKind.REFERRAL, referral.started_on <= as_of,
                             referral.started_on < as_of - timedelta(days=s.referral_days),
                             referral.started_on >= as_of - timedelta(days=s.referral_max_age_days), not_(closed))]


def _post_discharge_followup_sql(as_of: date, s: GapSettings) -> list[ColumnElement[bool]]:
    trigger, visit = aliased(ClinicalFact), aliased(ClinicalFact)
    discharged = func.coalesce(trigger.ended_on, trigger.started_on)
    followed_up = exists().where(visit.patient_id == trigger.patient_id, visit.kind == FactKind.ENCOUNTER,
                                 visit.category.not_in(sorted(NOT_A_FOLLOW_UP)), visit.started_on > discharged,
                                 visit.started_on <= as_of)
    return [_patients_having(trigger, or_(ACUTE_CARE.clause(trigger), SURGERY.clause(trigger)),
                             trigger.started_on <= as_of,
                             discharged < as_of - timedelta(days=s.followup_days),
                             discharged >= as_of - timedelta(days=s.followup_lookback_days),
                             not_(followed_up))]


def _flu_vaccine_sql(as_of: date, s: GapSettings) -> list[ColumnElement[bool]]:
    start = flu_season_start(as_of)
    if start is None:
        return [false()]
    return [Patient.birth_date <= months_before(as_of, 6), not_(_has(FLU_VACCINE, as_of, start))]


SQL_RULES: dict[str, Callable[[date, GapSettings], list[ColumnElement[bool]]]] = {
    "annual_wellness": _annual_wellness_sql,
    "breast_screening": _breast_screening_sql,
    "colorectal_screening": _colorectal_screening_sql,
    "diabetes_a1c": _diabetes_a1c_sql,
    "refill_gap": _refill_gap_sql,
    "referral_open": _referral_open_sql,
    "post_discharge_followup": _post_discharge_followup_sql,
    "flu_vaccine": _flu_vaccine_sql,
}


def gap_conditions(code: str, as_of: date, settings: GapSettings = DEFAULT_SETTINGS) -> list[ColumnElement[bool]]:
    """The WHERE clauses, over ``patient``, of the patients with the care gap ``code`` open as of
    ``as_of`` (never a deceased patient, one who moved away or one not yet born), for a query over
    ``patient`` that adds conditions of its own: the audience build puts its exclusions in the same
    SELECT instead of reading patient twice. Raises KeyError for a code that is not in the catalogue."""
    return [Patient.deceased_on.is_(None), Patient.moved_away == false(), Patient.birth_date <= as_of,
            *SQL_RULES[code](as_of, settings)]


def patients_with_gap(session: Session | None, code: str, as_of: date,
                      settings: GapSettings = DEFAULT_SETTINGS) -> Select:
    """A SELECT of the ids (one column, ``patient.id``) of every patient with the care gap ``code``
    open as of ``as_of``, to embed in set-based SQL (``INSERT ... SELECT``, ``IN (...)``, a join).
    Nothing is executed; ``session`` is accepted for symmetry with the other services and may be None.
    Raises KeyError for a code that is not in the catalogue."""
    return select(Patient.id).where(*gap_conditions(code, as_of, settings))


def gap_counts(session: Session, as_of: date, settings: GapSettings = DEFAULT_SETTINGS) -> dict[str, int]:
    """How many patients have each care gap open as of a date, by catalogue order (tier, then code)."""
    counts = {}
    for gap in sorted(CARE_GAPS.values(), key=lambda g: (g.tier, g.code)):
        query = select(func.count()).select_from(patients_with_gap(session, gap.code, as_of, settings).subquery())
        counts[gap.code] = session.scalar(query)
    return counts
