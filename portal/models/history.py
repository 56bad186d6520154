"""A patient's clinical history as imported from the clinic's records.

One narrow table for every kind of fact (visit, procedure, lab, medicine fill,
immunization, condition, referral) keeps care-gap rules and audience builds to
plain set-based SQL over one indexed table.
"""
from __future__ import annotations

from datetime import date
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.models.base import Base, intpk, str16, str32, str64, str200, utc_created


class FactKind(StrEnum):
    ENCOUNTER = "encounter"
    PROCEDURE = "procedure"
    OBSERVATION = "observation"
    MEDICATION = "medication"
    IMMUNIZATION = "immunization"
    CONDITION = "condition"
    REFERRAL = "referral"


class ClinicalFact(Base):
    __tablename__ = "clinical_fact"
    __table_args__ = (
        UniqueConstraint("source", "source_key"),  # re-importing the same file changes nothing
        Index("ix_clinical_fact_patient_kind_code", "patient_id", "kind", "code"),
        Index("ix_clinical_fact_kind_code_date", "kind", "code", "started_on"),
    )  # and on PostgreSQL, multivariate statistics on (kind, system, code): migration 0008
    id: Mapped[intpk]
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    kind: Mapped[str16]
    system: Mapped[str64] = mapped_column(default="")  # SNOMED, LOINC, CVX, RxNorm ...
    code: Mapped[str32]
    description: Mapped[str200] = mapped_column(default="")
    started_on: Mapped[date]
    ended_on: Mapped[date | None]
    category: Mapped[str32] = mapped_column(default="")  # encounter class (wellness, inpatient...), lab name ...
    value: Mapped[str32] = mapped_column(default="")  # observation value
    days_supply: Mapped[int | None]  # medicine fills
    status: Mapped[str16] = mapped_column(default="")  # referral: open / completed
    source: Mapped[str16]  # synthea, csv, manual
    source_key: Mapped[str] = mapped_column(String(128))
    imported_at: Mapped[utc_created]
