"""Importing clinic records: the Synthea export and the plain CSV format.

Re-importing changes nothing; bad rows are reported by line and never half-written;
good rows go in regardless; a patient's own opt-out survives any re-import."""
from __future__ import annotations

import hashlib
import shutil
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from portal.models import ChannelConsent, ClinicalFact, ConsentChange, FactKind, Patient
from portal.services import importers
from portal.services.importers import (FACT_FIELDS, LOINC, RXNORM, SNOMED, RowRejected, import_csv, import_synthea,
                                       normalize_phone, synthea_fills)
from tests.factories import SYNTHEA_SAMPLE


PATIENT_COLUMNS = ("id", "external_id", "given_name", "family_name", "birth_date", "sex", "phone", "email",
                   "preferred_language", "time_zone", "address_line", "city", "state", "postal_code", "deceased_on",
                   "moved_away", "coverage_active", "uses_portal", "created_at")


def snapshot(db) -> dict[str, tuple[int, str]]:
    """Row count and a checksum of every row (every column, in id order) of the tables an import writes."""
    patient, fact = Patient.__table__, ClinicalFact.__table__
    consent, change = ChannelConsent.__table__, ConsentChange.__table__
    queries = {
        "patient": select(*(patient.c[c] for c in PATIENT_COLUMNS)).order_by(patient.c.id),
        "clinical_fact": select(fact.c.id, fact.c.source, fact.c.source_key, fact.c.imported_at,
                                *(fact.c[c] for c in FACT_FIELDS)).order_by(fact.c.id),
        "channel_consent": select(consent).order_by(consent.c.patient_id, consent.c.channel),
        "consent_change": select(change).order_by(change.c.id),
    }
    result = {}
    for name, query in queries.items():
        rows = db.execute(query).all()
        result[name] = (len(rows), hashlib.sha256(repr([tuple(r) for r in rows]).encode()).hexdigest())
    return result


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def patient_by_external_id(db, external_id: str) -> Patient | None:
    db.expire_all()
    return db.scalar(select(Patient).where(Patient.external_id == external_id))


def test_importing_the_synthea_sample_twice_gives_the_same_database(db):
    first = import_synthea(db, SYNTHEA_SAMPLE)
    assert not first.errors and not first.failures
    after_first = snapshot(db)
    second = import_synthea(db, SYNTHEA_SAMPLE)
    assert snapshot(db) == after_first
    assert (second.created, second.updated) == (0, 0)
    assert second.unchanged == first.created == 13 + 947 + 521 + 2409 + 184 + 5693
    counts = dict(db.execute(select(ClinicalFact.kind, func.count()).group_by(ClinicalFact.kind)).all())
    assert counts == {"encounter": 947, "condition": 521, "procedure": 2409, "immunization": 184, "medication": 5693}
    assert after_first["patient"][0] == 13


def test_synthea_rows_become_patients_and_fills(db):
    import_synthea(db, SYNTHEA_SAMPLE)
    patient = patient_by_external_id(db, "838e3532-0deb-eb80-3c5e-f5b4c243efaa")
    assert (patient.given_name, patient.family_name, patient.birth_date, patient.sex) == (
        "Eustolia", "Mayert", date(2020, 2, 6), "F")  # Synthea's name digits dropped
    assert patient.city == "Huddinge" and patient.postal_code == "141 34"
    assert db.scalar(select(func.count()).where(Patient.deceased_on.is_not(None))) == 3
    assert patient_by_external_id(db, "d135c6ee-cd1f-57bf-a0e0-fe29b32fb93e").deceased_on == date(2021, 8, 21)

    # A stopped prescription: 4 dispenses spread over 2012-07-28 .. 2013-08-03.
    owner = patient_by_external_id(db, "803ec676-23ed-b7a2-ae0d-f2b61c3058ce")
    fills = db.scalars(select(ClinicalFact).where(ClinicalFact.patient_id == owner.id, ClinicalFact.code == "310798",
                                                  ClinicalFact.ended_on == date(2013, 8, 3))
                       .order_by(ClinicalFact.started_on)).all()
    assert [f.started_on for f in fills][0] == date(2012, 7, 28) and len(fills) == 4
    assert sum(f.days_supply for f in fills) == (date(2013, 8, 3) - date(2012, 7, 28)).days
    assert {f.ended_on for f in fills} == {date(2013, 8, 3)} and {f.system for f in fills} == {RXNORM}
    # An active one (no STOP): 217 monthly fills up to the export's last day, 2023-03-20.
    active = db.scalars(select(ClinicalFact).where(ClinicalFact.code == "309362", ClinicalFact.ended_on.is_(None),
                                                   ClinicalFact.started_on >= date(2005, 6, 7),
                                                   ClinicalFact.patient_id == patient_by_external_id(
                                                       db, "52b67a7f-9b04-7623-04a1-9d93ecc22462").id)).all()
    assert len(active) == 217 and {f.days_supply for f in active} <= {29, 30, 31}
    last = max(active, key=lambda f: f.started_on)
    assert date.fromordinal(last.started_on.toordinal() + last.days_supply) == date(2023, 3, 20)

    encounter = db.scalar(select(ClinicalFact).where(ClinicalFact.source_key == "enc|88b8223a-7814-9184-bbd9-72a3aa338c91"))
    assert (encounter.kind, encounter.category, encounter.code, encounter.system) == (
        "encounter", "wellness", "410620009", SNOMED)
    flu = db.scalar(select(func.count()).where(ClinicalFact.kind == FactKind.IMMUNIZATION, ClinicalFact.code == "140"))
    assert flu == 112


def test_fills_are_spread_over_the_prescription_and_stop_at_death():
    assert synthea_fills(date(2024, 1, 1), date(2024, 4, 1), 3, date(2030, 1, 1)) == [
        (date(2024, 1, 1), 30), (date(2024, 1, 31), 30), (date(2024, 3, 1), 31)]
    assert synthea_fills(date(2024, 1, 1), None, 2, date(2024, 3, 1), deceased_on=date(2024, 1, 21)) == [
        (date(2024, 1, 1), 10), (date(2024, 1, 11), 10)]
    assert synthea_fills(date(2024, 1, 1), date(2024, 1, 1), 1, date(2030, 1, 1)) == [(date(2024, 1, 1), 1)]


def test_synthea_observations_are_imported_when_the_export_has_them(db, tmp_path):
    shutil.copy(SYNTHEA_SAMPLE / "patients.csv", tmp_path / "patients.csv")
    write(tmp_path / "observations.csv",
          "DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE\n"
          "2023-01-05T10:00:00Z,803ec676-23ed-b7a2-ae0d-f2b61c3058ce,,laboratory,4548-4,Hemoglobin A1c/Hemoglobin.total in Blood,7.4,%,numeric\n"
          "2023-01-05T10:00:00Z,no-such-patient,,laboratory,4548-4,Hemoglobin A1c,6.1,%,numeric\n")
    report = import_synthea(db, tmp_path)
    assert [(e.file, e.line) for e in report.errors] == [("observations.csv", 3)]
    lab = db.scalar(select(ClinicalFact).where(ClinicalFact.kind == FactKind.OBSERVATION))
    assert (lab.system, lab.code, lab.value, lab.category, lab.started_on) == (
        LOINC, "4548-4", "7.4", "laboratory", date(2023, 1, 5))


PATIENTS = """external_id,given_name,family_name,birth_date,sex,phone,email,preferred_language,time_zone,address_line,city,state,postal_code,consent_sms,consent_email
A-1,Maria,Garcia,1958-03-14,F,(312) 555-0101,maria@example.org,es-MX,America/Chicago,1 Main St,Chicago,IL,60601,yes,no
A-2,John,Smith,1970-13-01,M,,,,,,,,,,
A-3,,Doe,1980-01-01,F,,,,,,,,,,
A-4,Ann,Lee,1975-05-05,F,12,,,,,,,,,
A-5,Bob,Ray,1964-02-29,M,,,en,,,,,,maybe,
A-6,Cy,Twain,1990-01-01,X,,not-an-email,,,,,,,,
A-7,Di,Moss,1991-01-01,F,,,,Mars/Olympus,,,,,,
A-8,Ed,Short,1992-01-01
A-9,Flo,Nunez,1961-02-28,female,+44 20 7946 0958,flo@example.org,en,Europe/London,,,,,no,yes

A-10,Gus,Kim,2199-01-01,M,,,,,,,,,,
A-11,Hal,Stone,1950-07-07,M,312.555.0199,,en,America/Chicago,,,,,,
"""

FACTS = """external_id,kind,system,code,description,started_on,ended_on,category,value,days_supply,status
A-1,observation,LOINC,4548-4,Hemoglobin A1c,2025-05-01,,laboratory,7.2,,
A-1,referral,SNOMED,306206005,Referral to cardiology,2025-08-01,,,,,open
A-1,medication,RxNorm,314076,lisinopril 10 MG,2025-09-01,,fill,,30,
A-2,observation,LOINC,4548-4,Hemoglobin A1c,2025-05-01,,,7.0,,
A-1,lab,LOINC,4548-4,,2025-05-01,,,,,
A-1,procedure,SNOMED,73761001,Colonoscopy,2025-05-01,2025-04-01,,,,
A-1,medication,RxNorm,314076,,2025-06-01,,,,thirty,
A-1,referral,SNOMED,306206005,,2025-01-01,,,,,lost
A-1,condition,SNOMED,44054006,Diabetes,,,,,,
A-9,immunization,CVX,140,Flu shot,2025-09-15,,,,,
"""


def test_a_csv_with_bad_rows_imports_the_good_ones_and_reports_each_bad_line(db, tmp_path):
    report = import_csv(db, [write(tmp_path / "facts.csv", FACTS), write(tmp_path / "patients.csv", PATIENTS)])
    assert [f.name for f in report.files] == ["patients.csv", "facts.csv"]  # patients first, whatever the order
    rejected = {(e.file, e.line): e.reason for e in report.errors}
    assert sorted(rejected) == [("facts.csv", line) for line in (5, 6, 7, 8, 9, 10)] + [
        ("patients.csv", line) for line in (3, 4, 5, 6, 7, 8, 9, 12)]
    assert "birth_date" in rejected[("patients.csv", 3)]
    assert "given_name" in rejected[("patients.csv", 4)]
    assert "phone" in rejected[("patients.csv", 5)]
    assert "consent_sms" in rejected[("patients.csv", 6)]
    assert "email" in rejected[("patients.csv", 7)]
    assert "time_zone" in rejected[("patients.csv", 8)]
    assert "cells" in rejected[("patients.csv", 9)]
    assert "birth_date" in rejected[("patients.csv", 12)]  # line 11 is blank and skipped, not an error
    assert "unknown patient" in rejected[("facts.csv", 5)]
    assert "kind" in rejected[("facts.csv", 6)]
    assert "ended_on" in rejected[("facts.csv", 7)]
    assert "days_supply" in rejected[("facts.csv", 8)]
    assert "status" in rejected[("facts.csv", 9)]
    assert "started_on" in rejected[("facts.csv", 10)]
    patients_file, facts_file = report.files
    assert (patients_file.rows_read, patients_file.created) == (11, 3)
    assert (facts_file.rows_read, facts_file.created) == (10, 4)

    maria = patient_by_external_id(db, "A-1")
    assert (maria.phone, maria.preferred_language, maria.time_zone, maria.sex) == (
        "+13125550101", "es", "America/Chicago", "F")
    consents = {c.channel: (c.granted, c.source) for c in db.scalars(
        select(ChannelConsent).where(ChannelConsent.patient_id == maria.id))}
    assert consents == {"sms": (True, "import"), "email": (False, "import")}
    assert patient_by_external_id(db, "A-9").phone == "+442079460958"
    assert patient_by_external_id(db, "A-11").phone == "+13125550199"
    # Nothing of a rejected row was written: no patient, and no consent of A-5 (whose only fault was consent).
    for external_id in ("A-2", "A-3", "A-4", "A-5", "A-6", "A-7", "A-8", "A-10"):
        assert patient_by_external_id(db, external_id) is None
    assert db.scalar(select(func.count()).select_from(ChannelConsent)) == 4
    facts = db.scalars(select(ClinicalFact).where(ClinicalFact.patient_id == maria.id)).all()
    assert sorted((f.kind, f.code, f.status, f.days_supply) for f in facts) == [
        ("medication", "314076", "", 30), ("observation", "4548-4", "", None), ("referral", "306206005", "open", None)]
    assert {f.source for f in facts} == {"csv"}


def test_reimporting_updates_in_place_and_records_consent_changes_once(db, tmp_path):
    patients = write(tmp_path / "patients.csv", "external_id,given_name,family_name,birth_date,phone,consent_sms\n"
                                                "B-1,Rosa,Diaz,1955-09-09,312-555-0142,yes\n")
    facts = write(tmp_path / "facts.csv", "external_id,kind,system,code,started_on,ended_on,status\n"
                                          "B-1,referral,SNOMED,306206005,2025-08-01,,open\n")
    import_csv(db, [patients, facts])
    before = snapshot(db)
    again = import_csv(db, [patients, facts])
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2) and snapshot(db) == before

    write(patients, "external_id,given_name,family_name,birth_date,phone,consent_sms\n"
                    "B-1,Rosa,Diaz,1955-09-09,312-555-0143,no\n")
    write(facts, "external_id,kind,system,code,started_on,ended_on,status\n"
                 "B-1,referral,SNOMED,306206005,2025-08-01,2025-09-10,completed\n")
    changed = import_csv(db, [patients, facts])
    assert (changed.created, changed.updated) == (0, 2)
    rosa = patient_by_external_id(db, "B-1")
    assert rosa.phone == "+13125550143"
    referral = db.scalar(select(ClinicalFact).where(ClinicalFact.patient_id == rosa.id))
    assert (referral.status, referral.ended_on) == ("completed", date(2025, 9, 10))
    history = db.execute(select(ConsentChange.channel, ConsentChange.granted, ConsentChange.source)
                         .where(ConsentChange.patient_id == rosa.id).order_by(ConsentChange.id)).all()
    assert history == [("sms", True, "import"), ("sms", False, "import")]
    import_csv(db, [patients, facts])
    assert db.scalar(select(func.count()).where(ConsentChange.patient_id == rosa.id)) == 2


def test_an_import_never_undoes_a_patients_own_opt_out(db, tmp_path):
    patients = write(tmp_path / "patients.csv", "external_id,given_name,family_name,birth_date,consent_sms\n"
                                                "C-1,Li,Wu,1966-06-06,yes\n")
    import_csv(db, [patients])
    patient = patient_by_external_id(db, "C-1")
    consent = db.get(ChannelConsent, (patient.id, "sms"))
    consent.granted, consent.source = False, "sms_keyword"  # the patient texted STOP
    consent.updated_at = datetime.now(timezone.utc)
    db.flush()
    report = import_csv(db, [patients])
    assert report.unchanged == 1
    db.expire_all()
    assert db.get(ChannelConsent, (patient.id, "sms")).granted is False


def test_blank_optional_cells_and_missing_columns(db, tmp_path):
    """A column the file lacks is left alone; a blank contact cell clears it; blank yes/no keeps the value."""
    first = write(tmp_path / "p.csv", "external_id,given_name,family_name,birth_date,email,moved_away,preferred_language\n"
                                      "D-1,Ty,Ng,1980-01-01,ty@example.org,yes,es\n")
    import_csv(db, [first], default_time_zone="America/Denver")
    write(first, "external_id,given_name,family_name,birth_date,email,moved_away,preferred_language\n"
                 "D-1,Ty,Ng,1980-01-01,,,\n")
    import_csv(db, [first], default_time_zone="America/New_York")
    patient = patient_by_external_id(db, "D-1")
    assert (patient.email, patient.moved_away, patient.preferred_language, patient.time_zone) == (
        "", True, "es", "America/Denver")


def test_small_batches_give_the_same_result_and_a_repeated_id_updates(db, tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "BATCH_SIZE", 2)
    rows = "".join(f"E-{n},Pat{n},Lee,1970-01-{n:02d}\n" for n in range(1, 8))
    patients = write(tmp_path / "p.csv", "external_id,given_name,family_name,birth_date\n" + rows
                     + "E-3,Renamed,Lee,1970-01-03\n")
    report = import_csv(db, [patients])
    assert (report.rows_read, report.created, report.updated) == (8, 7, 1)
    assert patient_by_external_id(db, "E-3").given_name == "Renamed"


def test_a_file_without_the_required_columns_is_reported_and_nothing_is_read(db, tmp_path):
    report = import_csv(db, [write(tmp_path / "p.csv", "external_id,name,birth_date\nF-1,Al,1970-01-01\n")])
    assert report.failures == ["p.csv: missing column(s): family_name, given_name"]
    assert report.rows_read == 0
    assert patient_by_external_id(db, "F-1") is None
    missing = import_synthea(db, tmp_path / "nowhere")
    assert missing.failures and "cannot open" in missing.failures[0]


def test_bytes_that_are_not_utf8_reject_only_their_row(db, tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"external_id,given_name,family_name,birth_date\nG-1,Jos\xe9,Ruiz,1970-01-01\n"
                     + "G-2,Renée,Ruiz,1971-01-01\n".encode())  # line 2 is Latin-1, line 3 UTF-8
    report = import_csv(db, [path])
    assert [(e.line, e.reason) for e in report.errors] == [(2, "not valid UTF-8 text")]
    assert patient_by_external_id(db, "G-2").given_name == "Renée"


@pytest.mark.parametrize("raw, region, expected", [
    ("(312) 555-0101", "US", "+13125550101"),
    ("+1 312 555 0101", "US", "+13125550101"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("+34 612 34 56 78", "US", "+34612345678"),
])
def test_phone_numbers_are_stored_in_e164(raw, region, expected):
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize("raw", ["12", "not a phone", "+1 555 0101"])
def test_invalid_phone_numbers_are_rejected(raw):
    with pytest.raises(RowRejected):
        normalize_phone(raw)


def planned_fact_rows(db, source: str) -> int:
    """How many clinical_fact rows of ``source`` the planner expects (PostgreSQL), or how many rows SQLite's
    statistics say clinical_fact has (SQLite keeps no statistics per value)."""
    if db.bind.dialect.name == "postgresql":
        plan = db.execute(text(f"EXPLAIN (FORMAT JSON) SELECT * FROM clinical_fact WHERE source = '{source}'"))
        return plan.scalar()[0]["Plan"]["Plan Rows"]
    if not db.scalar(text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")):
        return 0
    stat = db.scalars(text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'clinical_fact'")).first()
    return int(stat.split()[0]) if stat else 0


def test_an_import_refreshes_the_planners_statistics(db, tmp_path):
    """The audience build that may follow an import at once is planned knowing the new facts."""
    patients = write(tmp_path / "patients.csv", "external_id,given_name,family_name,birth_date\n"
                     + "".join(f"S-{n},Ana,Stat,1960-01-01\n" for n in range(60)))
    facts = write(tmp_path / "facts.csv", "external_id,kind,system,code,started_on\n"
                  + "".join(f"S-{n},observation,LOINC,4548-4,2025-01-01\n" for n in range(60)))
    assert import_csv(db, [patients, facts], source="statcheck").created == 120
    assert planned_fact_rows(db, "statcheck") >= 60


def test_the_cli_prints_the_report_and_commits(app, db, tmp_path):
    write(tmp_path / "patients.csv", "external_id,given_name,family_name,birth_date\nH-1,Ida,Bell,1944-04-04\n"
                                     "H-2,Ivo,Bell,someday\n")
    result = app.test_cli_runner().invoke(args=["import", "csv", str(tmp_path / "patients.csv")])
    assert result.exit_code == 0, result.output
    assert "patients.csv: 2 rows read, 1 rejected; 1 created" in result.output
    assert "rejected patients.csv:3: birth_date is not a date" in result.output
    assert patient_by_external_id(db, "H-1") is not None
