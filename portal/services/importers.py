"""Bring patients and their clinical history in from a clinic's records.

Two formats: the Synthea CSV export (the de-facto synthetic EHR export) and the plain
CSV format documented in ``docs/import-format.md``, which is also the only way to bring
labs such as HbA1c and referrals in when the export has none.

Every import is an upsert: patients are matched on ``external_id`` and facts on
``(source, source_key)``, so importing the same files twice leaves the database exactly
as the first import did (rows are only written when a value changed). Files are streamed
and written in batches with set-based statements (one SELECT of what exists, one
multi-row INSERT, one UPDATE by primary key per batch), so memory stays flat on a
million rows. A bad row is rejected with its line number and a reason and everything
else still goes in; a row is never half-written (each batch runs in a savepoint and, if
the database refuses it, is retried row by row).

Services flush but never commit: the caller (``portal import ...``) commits once.
"""
from __future__ import annotations

import csv
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from portal.models import ChannelConsent, ClinicalFact, ConsentChange, FactKind, Patient, utcnow

BATCH_SIZE = 1000
MAX_FACTS_PER_WRITE = 2000  # a batch of Synthea medication rows can expand to many fills
IN_CHUNK = 500  # bound parameters per IN (...): SQLite caps variables per statement
ANALYZED_TABLES = ("patient", "clinical_fact", "channel_consent")  # what imports write and audience builds read

SOURCE_SYNTHEA = "synthea"
SOURCE_CSV = "csv"
IMPORT_CONSENT_SOURCE = "import"

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CVX = "http://hl7.org/fhir/sid/cvx"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"

# Clinics write code systems every which way; rules match on the canonical URI.
SYSTEM_ALIASES = {
    "snomed": SNOMED, "snomed-ct": SNOMED, "snomedct": SNOMED, "snomed ct": SNOMED, "sct": SNOMED,
    "http://snomed.info/sct": SNOMED,
    "loinc": LOINC, "http://loinc.org": LOINC,
    "cvx": CVX, "http://hl7.org/fhir/sid/cvx": CVX,
    "rxnorm": RXNORM, "rxnorm-cui": RXNORM, "http://www.nlm.nih.gov/research/umls/rxnorm": RXNORM,
    "cpt": CPT, "cpt-4": CPT, "cpt4": CPT, "http://www.ama-assn.org/go/cpt": CPT,
    "hcpcs": HCPCS, "https://www.cms.gov/medicare/coding/hcpcsreleasecodesets": HCPCS,
    "icd-10-cm": ICD10CM, "icd10cm": ICD10CM, "icd-10": ICD10CM, "icd10": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10CM,
}

FACT_FIELDS = ("patient_id", "kind", "system", "code", "description", "started_on", "ended_on", "category",
               "value", "days_supply", "status")
REFERRAL_STATUSES = {"open", "completed", "cancelled"}


def normalize_system(value: str) -> str:
    """The canonical URI for a code system name ("SNOMED-CT", "loinc" ...); unknown names pass through."""
    cleaned = value.strip()
    return SYSTEM_ALIASES.get(cleaned.lower(), cleaned)


# --- the report -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    file: str
    line: int  # physical line in the file; the header is line 1
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class FileReport:
    """One file: rows read and rejected (by line), and records created, updated or left as they were.

    For most files one row is one record; a Synthea medication row becomes one record per fill.
    """

    name: str
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[RowError] = field(default_factory=list)
    failure: str = ""  # the whole file could not be read (missing, wrong columns)

    def reject(self, line: int, reason: str) -> None:
        self.rejected.append(RowError(self.name, line, reason))


@dataclass
class ImportReport:
    """What an import did. ``started_at`` lets callers find facts first written by this run
    (``ClinicalFact.imported_at >= started_at``), e.g. new referrals that should enrol patients."""

    source: str
    started_at: datetime = field(default_factory=utcnow)
    files: list[FileReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def created(self) -> int:
        return sum(f.created for f in self.files)

    @property
    def updated(self) -> int:
        return sum(f.updated for f in self.files)

    @property
    def unchanged(self) -> int:
        return sum(f.unchanged for f in self.files)

    @property
    def errors(self) -> list[RowError]:
        return [error for f in self.files for error in f.rejected]

    @property
    def failures(self) -> list[str]:
        return [f"{f.name}: {f.failure}" for f in self.files if f.failure]

    def lines(self) -> list[str]:
        """The human summary the CLI prints: one line per file, totals, then every rejected row."""
        out = []
        for f in self.files:
            if f.failure:
                out.append(f"{f.name}: NOT IMPORTED: {f.failure}")
                continue
            out.append(f"{f.name}: {f.rows_read} rows read, {len(f.rejected)} rejected; "
                       f"{f.created} created, {f.updated} updated, {f.unchanged} unchanged")
        out.append(f"total: {self.rows_read} rows read, {len(self.errors)} rejected; {self.created} created, "
                   f"{self.updated} updated, {self.unchanged} unchanged in {self.seconds:.1f} s")
        out.extend(f"rejected {error}" for error in self.errors)
        return out


Progress = Callable[[str, int], None]  # (file name, rows read so far)


class RowRejected(Exception):
    """A row failed validation; the message is the reason shown to the operator."""


# --- reading CSV ------------------------------------------------------------------------------------------


def _read_rows(path: Path, report: FileReport, required: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, {lower-case column: stripped value}) for each well-formed row.

    Rows with the wrong number of cells or bytes that are not UTF-8 are rejected here;
    a file without the required columns is marked failed and yields nothing.
    """
    try:
        handle = open(path, encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        report.failure = f"cannot open: {exc.strerror or exc}"
        return
    with handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip().lower() for name in next(reader)]
        except StopIteration:
            report.failure = "the file is empty"
            return
        except csv.Error as exc:
            report.failure = f"unreadable header: {exc}"
            return
        missing = sorted(set(required) - set(header))
        if missing:
            report.failure = f"missing column(s): {', '.join(missing)}"
            return
        if len(set(header)) != len(header):
            report.failure = "a column name appears twice in the header"
            return
        line = reader.line_num + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                report.rows_read += 1
                report.reject(line, f"unreadable row: {exc}")
                line = reader.line_num + 1
                continue
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            report.rows_read += 1
            if len(cells) != len(header):
                report.reject(start, f"expected {len(header)} cells, found {len(cells)}")
                continue
            if any("\ufffd" in cell for cell in cells):
                report.reject(start, "not valid UTF-8 text")
                continue
            yield start, {name: cell.strip() for name, cell in zip(header, cells)}


def _chunks(values: list, size: int = IN_CHUNK) -> Iterator[list]:
    for index in range(0, len(values), size):
        yield values[index:index + size]


def _parse_date(value: str, column: str, *, required: bool = True) -> date | None:
    if not value:
        if required:
            raise RowRejected(f"{column} is empty")
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise RowRejected(f"{column} is not a date (YYYY-MM-DD): {value[:40]!r}") from None


def _limit(value: str, column: str, size: int) -> str:
    if len(value) > size:
        raise RowRejected(f"{column} is longer than {size} characters")
    return value


def _source_key(*parts: str) -> str:
    """A readable key, or a digest of it when it would not fit the 128-character column."""
    key = "|".join(parts)
    return key if len(key) <= 128 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


# --- patients ---------------------------------------------------------------------------------------------


@dataclass
class PatientRecord:
    line: int
    external_id: str
    fields: dict[str, Any]  # written on create and update
    defaults: dict[str, Any] = field(default_factory=dict)  # written only when the patient is new
    consents: dict[str, bool] = field(default_factory=dict)


# Every column an import may write; only these are read back to compare.
_PATIENT_COLUMNS = ("id", "external_id", "given_name", "family_name", "birth_date", "sex", "phone", "email",
                    "preferred_language", "time_zone", "address_line", "city", "state", "postal_code", "deceased_on",
                    "moved_away", "coverage_active", "uses_portal")


def _fetch_patients(session: Session, external_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    table = Patient.__table__
    columns = [table.c[name] for name in _PATIENT_COLUMNS]
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(sorted(set(external_ids))):
        for row in session.execute(select(*columns).where(table.c.external_id.in_(chunk))).mappings():
            found[row["external_id"]] = dict(row)
    return found


def _import_patients(session: Session, records: Iterator[PatientRecord | RowError], report: FileReport,
                     progress: Progress | None) -> None:
    batch: dict[str, PatientRecord] = {}
    for item in records:
        if isinstance(item, RowError):
            report.rejected.append(item)
            continue
        if item.external_id in batch or len(batch) >= BATCH_SIZE:
            _write_patients(session, list(batch.values()), report)
            batch = {}
            if progress:
                progress(report.name, report.rows_read)
        batch[item.external_id] = item
    if batch:
        _write_patients(session, list(batch.values()), report)
    if progress:
        progress(report.name, report.rows_read)


def _write_patients(session: Session, records: list[PatientRecord], report: FileReport) -> None:
    try:
        with session.begin_nested():
            outcome = _upsert_patients(session, records)
    except SQLAlchemyError:
        outcome = {}
        for record in records:  # find the row the database refuses; keep the others
            try:
                with session.begin_nested():
                    outcome.update(_upsert_patients(session, [record]))
            except SQLAlchemyError as exc:
                report.reject(record.line, f"the database refused the row ({type(exc.orig or exc).__name__})")
    for result in outcome.values():
        setattr(report, result, getattr(report, result) + 1)


def _upsert_patients(session: Session, records: list[PatientRecord]) -> dict[str, str]:
    """Write one batch; returns {external_id: "created" | "updated" | "unchanged"}."""
    existing = _fetch_patients(session, (r.external_id for r in records))
    inserts, updates, outcome = [], [], {}
    for record in records:
        old = existing.get(record.external_id)
        if old is None:
            inserts.append({**record.defaults, **record.fields, "external_id": record.external_id})
            outcome[record.external_id] = "created"
            continue
        changed = {name: value for name, value in record.fields.items() if old[name] != value}
        if changed:
            updates.append({"id": old["id"], **changed})
        outcome[record.external_id] = "updated" if changed else "unchanged"
    for group in _same_keys(inserts):
        session.execute(insert(Patient), group)
    for group in _same_keys(updates):
        session.execute(update(Patient), group)
    if any(record.consents for record in records):
        ids = {ext: row["id"] for ext, row in _fetch_patients(session, (r.external_id for r in records)).items()}
        changed = _apply_consents(session, [(ids[r.external_id], r.consents) for r in records if r.consents])
        for record in records:
            if outcome[record.external_id] == "unchanged" and ids[record.external_id] in changed:
                outcome[record.external_id] = "updated"
    return outcome


def _same_keys(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group rows by their set of keys: a multi-row statement needs the same columns in every row."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    yield from groups.values()


def _apply_consents(session: Session, wanted: list[tuple[int, dict[str, bool]]]) -> set[int]:
    """Record the clinic's consent flags. An import sets a channel only when we hold no choice
    yet or the one we hold also came from an import: a STOP, an unsubscribe or a choice made
    in the portal or by staff is newer and the patient's own, and a re-import never undoes it.
    Returns the ids of the patients whose consent changed."""
    table = ChannelConsent.__table__
    current: dict[tuple[int, str], dict[str, Any]] = {}
    for chunk in _chunks(sorted({patient_id for patient_id, _ in wanted})):
        for row in session.execute(select(table).where(table.c.patient_id.in_(chunk))).mappings():
            current[(row["patient_id"], row["channel"])] = dict(row)
    now = utcnow()
    inserts, updates, changes, changed_patients = [], [], [], set()
    for patient_id, consents in wanted:
        for channel, granted in consents.items():
            held = current.get((patient_id, channel))
            if held is None:
                inserts.append({"patient_id": patient_id, "channel": channel, "granted": granted,
                                "source": IMPORT_CONSENT_SOURCE, "updated_at": now})
            elif held["source"] == IMPORT_CONSENT_SOURCE and held["granted"] != granted:
                updates.append({"patient_id": patient_id, "channel": channel, "granted": granted, "updated_at": now})
            else:
                continue
            changes.append({"patient_id": patient_id, "channel": channel, "granted": granted,
                            "source": IMPORT_CONSENT_SOURCE, "occurred_at": now})
            changed_patients.add(patient_id)
    if inserts:
        session.execute(insert(ChannelConsent), inserts)
    if updates:
        session.execute(update(ChannelConsent), updates)
    if changes:
        session.execute(insert(ConsentChange.__table__), changes)
    return changed_patients


# --- facts ------------------------------------------------------------------------------------------------


@dataclass
class FactRow:
    """One input row: the patient it belongs to and how to turn it into (source_key, fields) records
    once that patient's death date is known (Synthea medicine fills stop at death)."""

    line: int
    external_id: str
    build: Callable[[date | None], list[tuple[str, dict[str, Any]]]]


def _import_facts(session: Session, source: str, rows: Iterator[FactRow | RowError], report: FileReport,
                  progress: Progress | None) -> None:
    batch: list[FactRow] = []
    for item in rows:
        if isinstance(item, RowError):
            report.rejected.append(item)
            continue
        batch.append(item)
        if len(batch) >= BATCH_SIZE:
            _flush_fact_rows(session, source, batch, report)
            batch = []
            if progress:
                progress(report.name, report.rows_read)
    if batch:
        _flush_fact_rows(session, source, batch, report)
    if progress:
        progress(report.name, report.rows_read)


def _flush_fact_rows(session: Session, source: str, rows: list[FactRow], report: FileReport) -> None:
    patients = _fetch_patients(session, (row.external_id for row in rows))
    pending: dict[str, tuple[int, dict[str, Any]]] = {}
    for row in rows:
        patient = patients.get(row.external_id)
        if patient is None:
            report.reject(row.line, f"unknown patient {row.external_id[:64]!r} (not in a patients file or the database)")
            continue
        try:
            records = row.build(patient["deceased_on"])
        except RowRejected as exc:
            report.reject(row.line, str(exc))
            continue
        # Records of one row always go into the same write, so a row is all in or all out.
        if any(key in pending for key, _ in records) or len(pending) + len(records) > MAX_FACTS_PER_WRITE:
            _write_facts(session, source, pending, report)
            pending = {}
        for key, fields in records:
            pending[key] = (row.line, {**fields, "patient_id": patient["id"]})
    if pending:
        _write_facts(session, source, pending, report)


def _write_facts(session: Session, source: str, pending: dict[str, tuple[int, dict[str, Any]]],
                 report: FileReport) -> None:
    try:
        with session.begin_nested():
            outcome = _upsert_facts(session, source, pending)
    except SQLAlchemyError:
        outcome = []
        by_line: dict[int, dict[str, tuple[int, dict[str, Any]]]] = {}
        for key, (line, fields) in pending.items():
            by_line.setdefault(line, {})[key] = (line, fields)
        for line, records in by_line.items():
            try:
                with session.begin_nested():
                    outcome.extend(_upsert_facts(session, source, records))
            except SQLAlchemyError as exc:
                report.reject(line, f"the database refused the row ({type(exc.orig or exc).__name__})")
    for result in outcome:
        setattr(report, result, getattr(report, result) + 1)


def _upsert_facts(session: Session, source: str, pending: dict[str, tuple[int, dict[str, Any]]]) -> list[str]:
    table = ClinicalFact.__table__
    columns = [table.c.id, table.c.source_key, *(table.c[name] for name in FACT_FIELDS)]
    existing: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(list(pending)):
        query = select(*columns).where(table.c.source == source, table.c.source_key.in_(chunk))
        for row in session.execute(query).mappings():
            existing[row["source_key"]] = dict(row)
    inserts, updates, outcome = [], [], []
    for key, (_line, fields) in pending.items():
        old = existing.get(key)
        if old is None:
            inserts.append({**fields, "source": source, "source_key": key})
            outcome.append("created")
        elif any(old[name] != fields[name] for name in FACT_FIELDS):
            updates.append({"id": old["id"], **fields})
            outcome.append("updated")
        else:
            outcome.append("unchanged")
    if inserts:
        session.execute(insert(ClinicalFact.__table__), inserts)
    if updates:
        session.execute(update(ClinicalFact), updates)
    return outcome


def _fact(kind: str, system: str, code: str, started_on: date, *, description: str = "",
          ended_on: date | None = None, category: str = "", value: str = "", days_supply: int | None = None,
          status: str = "") -> dict[str, Any]:
    return {"kind": kind, "system": system, "code": code, "description": description[:200],
            "started_on": started_on, "ended_on": ended_on, "category": category, "value": value,
            "days_supply": days_supply, "status": status}


# --- Synthea ----------------------------------------------------------------------------------------------

_SYNTHEA_NAME_SUFFIX = re.compile(r"\d+$")


def _synthea_name(value: str) -> str:
    """Synthea numbers its made-up names ("Maria123"); the digits would end up in greetings."""
    return _SYNTHEA_NAME_SUFFIX.sub("", value).strip()


def _synthea_patient(line: int, row: dict[str, str], default_time_zone: str) -> PatientRecord:
    external_id = _limit(row["id"], "Id", 64)
    if not external_id:
        raise RowRejected("Id is empty")
    given, family = _synthea_name(row.get("first", "")), _synthea_name(row.get("last", ""))
    if not given or not family:
        raise RowRejected("FIRST or LAST is empty")
    birth = _parse_date(row["birthdate"], "BIRTHDATE")
    death = _parse_date(row.get("deathdate", ""), "DEATHDATE", required=False)
    if death and death < birth:
        raise RowRejected("DEATHDATE is before BIRTHDATE")
    sex = {"F": "F", "M": "M"}.get(row.get("gender", "").upper(), "")
    fields = {"given_name": _limit(given, "FIRST", 200), "family_name": _limit(family, "LAST", 200),
              "birth_date": birth, "sex": sex, "deceased_on": death,
              "address_line": _limit(row.get("address", ""), "ADDRESS", 200),
              "city": _limit(row.get("city", ""), "CITY", 200), "state": _limit(row.get("state", ""), "STATE", 32),
              "postal_code": _limit(row.get("zip", ""), "ZIP", 16)}
    defaults = {"time_zone": default_time_zone} if default_time_zone else {}
    return PatientRecord(line, external_id, fields, defaults)


def _synthea_key(prefix: str, row: dict[str, str], *parts: str) -> str:
    anchor = row.get("encounter") or row["patient"]
    return _source_key(prefix, anchor, *parts)


def _synthea_encounter(row: dict[str, str], _horizon: date) -> list[tuple[str, dict[str, Any]]]:
    if not row["id"]:
        raise RowRejected("Id is empty")
    started = _parse_date(row["start"], "START")
    ended = _parse_date(row.get("stop", ""), "STOP", required=False)
    return [(_source_key("enc", row["id"]),
             _fact(FactKind.ENCOUNTER, SNOMED, _code(row), started, ended_on=ended,
                   description=row.get("description", ""), category=row.get("encounterclass", "").lower()[:32]))]


def _code(row: dict[str, str]) -> str:
    code = row.get("code", "")
    if not code:
        raise RowRejected("CODE is empty")
    return _limit(code, "CODE", 32)


def _synthea_dated(kind: str, prefix: str, default_system: str) -> Callable:
    """Procedures, conditions (START/STOP) and immunizations, observations (DATE)."""
    def build(row: dict[str, str], _horizon: date) -> list[tuple[str, dict[str, Any]]]:
        raw_start = row.get("start") or row.get("date", "")
        started = _parse_date(raw_start, "START" if "start" in row else "DATE")
        ended = _parse_date(row.get("stop", ""), "STOP", required=False)
        system = normalize_system(row.get("system", "")) or default_system
        code = _code(row)
        return [(_synthea_key(prefix, row, code, raw_start),
                 _fact(kind, system, code, started, ended_on=ended, description=row.get("description", ""),
                       category=row.get("category", "").lower()[:32], value=row.get("value", "")[:32]))]
    return build


def synthea_fills(started: date, stopped: date | None, dispenses: int, horizon: date,
                  deceased_on: date | None = None) -> list[tuple[date, int]]:
    """Spread a Synthea prescription's DISPENSES evenly over its START..STOP (or, while it is
    still active, up to the end of the export or death), giving (fill date, days of supply)."""
    end = stopped or min(horizon, deceased_on or horizon)
    span = max((end - started).days, 1)
    count = max(dispenses, 1)
    fills = []
    for index in range(count):
        begin = started.toordinal() + span * index // count
        finish = started.toordinal() + span * (index + 1) // count
        fills.append((date.fromordinal(begin), max(finish - begin, 1)))
    return fills


def _synthea_medication(row: dict[str, str], horizon: date) -> Callable[[date | None], list]:
    raw_start = row["start"]
    started = _parse_date(raw_start, "START")
    stopped = _parse_date(row.get("stop", ""), "STOP", required=False)
    if stopped and stopped < started:
        raise RowRejected("STOP is before START")
    try:
        dispenses = int(row.get("dispenses") or "1")
    except ValueError:
        raise RowRejected("DISPENSES is not a whole number") from None
    if not 0 <= dispenses <= 100_000:
        raise RowRejected("DISPENSES is out of range")
    code = _code(row)

    def build(deceased_on: date | None) -> list[tuple[str, dict[str, Any]]]:
        return [(_synthea_key("med", row, code, raw_start, str(number)),
                 _fact(FactKind.MEDICATION, RXNORM, code, fill_date, ended_on=stopped, days_supply=supply,
                       description=row.get("description", ""), category="fill"))
                for number, (fill_date, supply) in enumerate(synthea_fills(started, stopped, dispenses, horizon,
                                                                           deceased_on), start=1)]
    return build


# file, required columns, row → records (given the export's end date)
_SYNTHEA_FACT_FILES: list[tuple[str, set[str], Callable]] = [
    ("encounters.csv", {"id", "start", "patient", "code"}, _synthea_encounter),
    ("conditions.csv", {"start", "patient", "code"}, _synthea_dated(FactKind.CONDITION, "cond", SNOMED)),
    ("procedures.csv", {"patient", "code"}, _synthea_dated(FactKind.PROCEDURE, "proc", SNOMED)),
    ("immunizations.csv", {"date", "patient", "code"}, _synthea_dated(FactKind.IMMUNIZATION, "imm", CVX)),
    ("observations.csv", {"date", "patient", "code"}, _synthea_dated(FactKind.OBSERVATION, "obs", LOINC)),
    ("medications.csv", {"start", "patient", "code"}, None),  # fills; see _synthea_medication
]


def _export_end(directory: Path) -> date:
    """The day the Synthea export ends: the latest encounter date in it (today if it has none).
    Active prescriptions count their DISPENSES up to that day."""
    latest = None
    path = directory / "encounters.csv"
    if path.exists():
        scratch = FileReport("encounters.csv")
        for _line, row in _read_rows(path, scratch, {"start"}):
            for value in (row.get("start", ""), row.get("stop", "")):
                try:
                    day = date.fromisoformat(value[:10])
                except ValueError:
                    continue
                latest = day if latest is None or day > latest else latest
    return latest or date.today()


def import_synthea(session: Session, directory: str | Path, *, default_time_zone: str = "",
                   export_end: date | None = None, progress: Progress | None = None) -> ImportReport:
    """Import a Synthea CSV export directory: patients.csv (required), then encounters, conditions,
    procedures, immunizations, observations and medications when present (medications become one
    fact per fill, with days of supply spread over START..STOP). Other files are ignored.

    Idempotent; flushes, never commits; refreshes the planner's statistics when anything changed. Bad rows
    are reported in the returned ImportReport, never raised; a missing patients.csv is a file failure in the report.
    """
    clock = time.perf_counter()
    directory = Path(directory)
    report = ImportReport(SOURCE_SYNTHEA)
    patients = FileReport("patients.csv")
    report.files.append(patients)

    def patient_records() -> Iterator[PatientRecord | RowError]:
        for line, row in _read_rows(directory / "patients.csv", patients, {"id", "birthdate", "first", "last"}):
            try:
                yield _synthea_patient(line, row, default_time_zone)
            except RowRejected as exc:
                yield RowError(patients.name, line, str(exc))

    _import_patients(session, patient_records(), patients, progress)
    if patients.failure:
        report.seconds = time.perf_counter() - clock
        return report
    horizon = export_end or _export_end(directory)
    for name, required, builder in _SYNTHEA_FACT_FILES:
        if not (directory / name).exists():
            continue
        file_report = FileReport(name)
        report.files.append(file_report)
        _import_facts(session, SOURCE_SYNTHEA,
                      _synthea_fact_rows(directory / name, file_report, required, builder, horizon),
                      file_report, progress)
    _refresh_statistics(session, report)
    report.seconds = time.perf_counter() - clock
    return report


def _refresh_statistics(session: Session, report: ImportReport) -> None:
    """ANALYZE the tables an import wrote to. The audience build that follows an import (enrol_from_import,
    a launch) is planned on these statistics: PostgreSQL's autovacuum refreshes them only on its next
    pass, and SQLite keeps none unless asked. With statistics from before (an empty table, codes never
    seen) a planner guesses a few rows where there are 100 000s and picks nested loops."""
    if report.created or report.updated:
        for table in ANALYZED_TABLES:
            session.execute(text(f"ANALYZE {table}"))


def _synthea_fact_rows(path: Path, report: FileReport, required: set[str], builder: Callable | None,
                       horizon: date) -> Iterator[FactRow | RowError]:
    for line, row in _read_rows(path, report, required):
        try:
            if not row["patient"]:
                raise RowRejected("PATIENT is empty")
            if builder is None:
                build = _synthea_medication(row, horizon)
            else:
                records = builder(row, horizon)
                build = lambda _deceased, records=records: records  # noqa: E731
        except RowRejected as exc:
            yield RowError(report.name, line, str(exc))
            continue
        yield FactRow(line, row["patient"], build)


# --- the plain CSV format (docs/import-format.md) -----------------------------------------------------------

PATIENT_REQUIRED = ("external_id", "given_name", "family_name", "birth_date")
FACT_REQUIRED = ("external_id", "kind", "code", "started_on")
_YES = {"yes", "y", "true", "1"}
_NO = {"no", "n", "false", "0"}
_SEX = {"f": "F", "female": "F", "w": "F", "m": "M", "male": "M", "x": "X", "other": "X",
        "u": "", "unknown": ""}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


def _yes_no(value: str, column: str) -> bool | None:
    lowered = value.lower()
    if lowered in _YES:
        return True
    if lowered in _NO:
        return False
    if not lowered:
        return None
    raise RowRejected(f"{column} must be yes or no")


def normalize_phone(value: str, region: str = "US") -> str:
    """E.164 form of a phone number ("(312) 555-0101" → "+13125550101"); numbers without a
    country code are read as numbers of ``region``. Raises RowRejected when it is not a valid number."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise RowRejected("phone is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise RowRejected("phone is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _csv_patient(line: int, row: dict[str, str], region: str, default_time_zone: str) -> PatientRecord:
    external_id = _limit(row["external_id"], "external_id", 64)
    if not external_id:
        raise RowRejected("external_id is empty")
    given, family = row["given_name"], row["family_name"]
    if not given or not family:
        raise RowRejected("given_name or family_name is empty")
    birth = _parse_date(row["birth_date"], "birth_date")
    if birth > date.today() or birth.year < 1880:
        raise RowRejected("birth_date is not a plausible birth date")
    fields: dict[str, Any] = {"given_name": _limit(given, "given_name", 200),
                              "family_name": _limit(family, "family_name", 200), "birth_date": birth}
    defaults: dict[str, Any] = {}
    if "sex" in row:
        if row["sex"].lower() not in _SEX and row["sex"]:
            raise RowRejected("sex must be F, M, X or blank")
        fields["sex"] = _SEX.get(row["sex"].lower(), "")
    if "phone" in row:
        fields["phone"] = normalize_phone(row["phone"], region) if row["phone"] else ""
    if "email" in row:
        email = row["email"]
        if email and (len(email) > 200 or not _EMAIL.match(email)):
            raise RowRejected("email is not an email address")
        fields["email"] = email
    if row.get("preferred_language"):
        language = row["preferred_language"].lower().replace("_", "-").split("-")[0]
        if not _LANGUAGE.match(language):
            raise RowRejected("preferred_language must be a language code such as en or es")
        fields["preferred_language"] = language
    if "time_zone" in row:
        fields["time_zone"] = _time_zone(row["time_zone"]) if row["time_zone"] else ""
    elif default_time_zone:
        defaults["time_zone"] = default_time_zone
    for column, size in (("address_line", 200), ("city", 200), ("state", 32), ("postal_code", 16)):
        if column in row:
            fields[column] = _limit(row[column], column, size)
    if "deceased_on" in row:
        fields["deceased_on"] = _parse_date(row["deceased_on"], "deceased_on", required=False)
        if fields["deceased_on"] and fields["deceased_on"] < birth:
            raise RowRejected("deceased_on is before birth_date")
    for column in ("moved_away", "coverage_active", "uses_portal"):
        if column in row and (flag := _yes_no(row[column], column)) is not None:
            fields[column] = flag
    consents = {}
    for column, channel in (("consent_sms", "sms"), ("consent_email", "email")):
        if column in row and (flag := _yes_no(row[column], column)) is not None:
            consents[channel] = flag
    return PatientRecord(line, external_id, fields, defaults, consents)


def _time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except Exception:  # ZoneInfoNotFoundError, ValueError on odd paths
        raise RowRejected("time_zone is not an IANA time zone such as America/Chicago") from None
    return _limit(value, "time_zone", 64)


def _csv_fact(line: int, row: dict[str, str]) -> FactRow:
    external_id = row["external_id"]
    if not external_id:
        raise RowRejected("external_id is empty")
    kind = row["kind"].lower()
    if kind not in {k.value for k in FactKind}:
        raise RowRejected(f"kind must be one of {', '.join(k.value for k in FactKind)}")
    system = _limit(normalize_system(row.get("system", "")), "system", 64)
    code = _limit(row["code"], "code", 32)
    if not code:
        raise RowRejected("code is empty")
    started = _parse_date(row["started_on"], "started_on")
    ended = _parse_date(row.get("ended_on", ""), "ended_on", required=False)
    if ended and ended < started:
        raise RowRejected("ended_on is before started_on")
    days_supply = None
    if row.get("days_supply"):
        try:
            days_supply = int(row["days_supply"])
        except ValueError:
            raise RowRejected("days_supply is not a whole number") from None
        if not 1 <= days_supply <= 3650:
            raise RowRejected("days_supply must be between 1 and 3650")
    status = _limit(row.get("status", "").lower(), "status", 16)
    if kind == FactKind.REFERRAL:
        status = status or "open"
        if status not in REFERRAL_STATUSES:
            raise RowRejected("a referral's status must be open, completed or cancelled")
    record = _fact(kind, system, code, started, ended_on=ended, description=row.get("description", ""),
                   category=_limit(row.get("category", "").lower(), "category", 32),
                   value=_limit(row.get("value", ""), "value", 32), days_supply=days_supply, status=status)
    if row.get("fact_id"):
        key = _source_key(external_id, "id", row["fact_id"])
    else:
        key = _source_key(external_id, kind, system, code, started.isoformat())
    return FactRow(line, external_id, lambda _deceased: [(key, record)])


def _is_facts_file(path: Path) -> bool | None:
    """True for a facts file (it has a kind column), False for a patients file, None if unreadable."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            header = {name.strip().lower() for name in next(csv.reader(handle), [])}
    except (OSError, csv.Error):
        return None
    return "kind" in header


def import_csv(session: Session, paths: Iterable[str | Path], *, source: str = SOURCE_CSV, region: str = "US",
               default_time_zone: str = "", progress: Progress | None = None) -> ImportReport:
    """Import files in the plain CSV format of docs/import-format.md. Each file is a patients file
    or a facts file (told apart by its ``kind`` column); patients files go first, so facts may name
    patients from the same run. ``source`` labels the facts (a second lab feed keeps its own rows);
    ``region`` reads phone numbers without a country code.

    Idempotent; flushes, never commits; refreshes the planner's statistics when anything changed. Bad rows are
    reported in the returned ImportReport, never raised; raises ValueError for a ``source`` that is not 1-16 lower-case letters, digits, - or _.
    """
    clock = time.perf_counter()
    report = ImportReport(source)
    if not re.fullmatch(r"[a-z0-9_-]{1,16}", source):
        raise ValueError("source must be 1-16 lower-case letters, digits, - or _")
    paths = [Path(p) for p in paths]
    kinds = {path: _is_facts_file(path) for path in paths}
    for path in sorted(paths, key=lambda p: bool(kinds[p])):
        file_report = FileReport(path.name)
        report.files.append(file_report)
        if kinds[path] is None:
            file_report.failure = "cannot open or read the header"
        elif kinds[path]:
            _import_facts(session, source, _csv_fact_rows(path, file_report), file_report, progress)
        else:
            _import_patients(session, _csv_patient_rows(path, file_report, region, default_time_zone),
                             file_report, progress)
    _refresh_statistics(session, report)
    report.seconds = time.perf_counter() - clock
    return report


def _csv_patient_rows(path: Path, report: FileReport, region: str,
                      default_time_zone: str) -> Iterator[PatientRecord | RowError]:
    for line, row in _read_rows(path, report, PATIENT_REQUIRED):
        try:
            yield _csv_patient(line, row, region, default_time_zone)
        except RowRejected as exc:
            yield RowError(report.name, line, str(exc))


def _csv_fact_rows(path: Path, report: FileReport) -> Iterator[FactRow | RowError]:
    for line, row in _read_rows(path, report, FACT_REQUIRED):
        try:
            yield _csv_fact(line, row)
        except RowRejected as exc:
            yield RowError(report.name, line, str(exc))
