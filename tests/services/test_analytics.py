"""Campaign metrics on a hand-made event log, each right answer worked out by hand.

The campaign launched on L = 2 March 2026, 09:00 UTC, with a 90-day window; the report
is read on NOW = 1 July 2026. Twelve patients (A: variant A, B: variant B, C: control):

  who  arm lang born        messages (step: channel, delivered?)   what happened
  Ana  A   es   1950-05-01  0: sms ✓                               opened twice, verified, booked L+1d for L+10d
                                                                   (Main), attended; an encounter on 1 April;
                                                                   also enrolled for a refill gap, refill done
  Ben  A   en   1980-06-15  0: email ✗, 1 (L+7d): sms ✓             verified, booked L+8d (Main L+12d), cancelled
                                                                   L+9d, rebooked L+10d (North L+20d), attended
  Fay  A   en   1975-12-12  0: email ✗, 1: email ✗                  opened, asked for a ride; never verified
  Jo   A   en   1985-03-03  0: sms ✓                               booked L+60d for L+95d (after the window), attended
  Max  A   en   2000-01-01  0: sms ✓                               booked L+4d (North L+14d), cancelled L+5d
  Cruz B   en   1960-01-10  0: sms ✓, 1: sms ✓                     never opened; booked by phone (staff) L+15d for
                                                                   L+30d, didn't come
  Dee  B   es   1990-07-07  0: sms ✓                               booked L+2d for a visit still to come (North);
                                                                   asked for help with cost
  Eve  B   en   1970-02-02  0: sms ✓ (1: cancelled, never sent)     texted STOP
  Kim  B   en   1982-08-08  0: sms ✓                               booked L+3d for L+40d (Main); nobody marked it
  Gus  C   en   1955-04-04  none                                   booked by staff L+20d for L+25d, attended
  Hal  C   en   1961-03-02  none                                   nothing (65 on launch day)
  Ida  C   es   1945-11-11  none                                   a record imported on 10 April shows the gap
                                                                   closed elsewhere
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from portal.models import (Appointment, Campaign, ClinicalFact, Enrolment, Event, HelpRequest, OutboxMessage, Patient,
                           Slot)
from portal.models.visit import RefillRequest
from portal.services import analytics
from portal.services.analytics import (CONTROL, SUPPRESSED, Table, campaign_overview, campaign_report, export_rows,
                                       patients_in_cell, percentile, report_tables)
from tests.factories import make_clinic

L = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
_keys = itertools.count(1)


def days(n: float) -> datetime:
    return L + n * DAY


@dataclass
class Log:
    """Writes the hand-made rows: no services, so the test states every fact itself."""

    db: object
    setup: object
    campaign: Campaign

    def patient(self, given: str, born: date, language: str = "en") -> Patient:
        patient = Patient(given_name=given, family_name="Test", birth_date=born, preferred_language=language)
        self.db.add(patient)
        self.db.flush()
        return patient

    def enrol(self, patient: Patient, arm: str, gap: str = "annual_wellness", tier: int = 4,
              campaign: Campaign | None = None) -> Enrolment:
        campaign = campaign or self.campaign
        enrolment = Enrolment(campaign_id=campaign.id, patient_id=patient.id, care_gap_code=gap, tier=tier,
                              variant="A" if arm == CONTROL else arm, holdout=arm == CONTROL, created_at=L)
        self.db.add(enrolment)
        self.db.flush()
        self.event(enrolment, "enrolled", L, actor="system")
        return enrolment

    def event(self, enrolment: Enrolment, kind: str, at: datetime, /, actor: str = "patient", **detail) -> None:
        self.db.add(Event(enrolment_id=enrolment.id, campaign_id=enrolment.campaign_id, kind=kind, actor=actor,
                          detail=detail, occurred_at=at))

    def message(self, enrolment: Enrolment, step: int, channel: str, at: datetime, delivered: bool,
                sent: bool = True) -> None:
        key = next(_keys)
        self.db.add(OutboxMessage(
            dedupe_key=f"test:{key}", enrolment_id=enrolment.id, patient_id=enrolment.patient_id, channel=channel,
            template="invite" if step == 0 else "reminder", locale="en", recipient="x", body_text="x",
            status="sent" if sent else "cancelled", sent_at=at if sent else None,
            delivered_at=at + timedelta(minutes=1) if delivered else None, created_at=at, next_attempt_at=at,
            campaign_id=enrolment.campaign_id, step=step, variant=enrolment.variant))
        if sent:
            self.event(enrolment, "sent", at, actor="system", step=step, channel=channel, message_id=key,
                       variant=enrolment.variant)

    def slot(self, starts: datetime, location=None) -> Slot:
        slot = Slot(location_id=(location or self.setup.location).id, provider_id=self.setup.provider.id,
                    modality="in_person", starts_at=starts, ends_at=starts + timedelta(minutes=30),
                    local_weekday=starts.weekday(), local_minutes=starts.hour * 60 + starts.minute)
        self.db.add(slot)
        self.db.flush()
        return slot

    def book(self, enrolment: Enrolment, at: datetime, visit: datetime, status: str = "booked",
             via: str = "portal", location=None) -> Appointment:
        slot = self.slot(visit, location)
        appointment = Appointment(enrolment_id=enrolment.id, patient_id=enrolment.patient_id, slot_id=slot.id,
                                  appointment_type_id=self.setup.in_person.id, status=status, booked_via=via,
                                  booked_at=at)
        self.db.add(appointment)
        self.db.flush()
        self.event(enrolment, "booked", at, actor="staff" if via == "staff" else "patient",
                   appointment_id=appointment.id, slot_id=slot.id, via=via)
        if status in ("attended", "no_show"):
            self.event(enrolment, status, visit + timedelta(hours=1), actor="staff", appointment_id=appointment.id)
        return appointment

    def cancel(self, enrolment: Enrolment, appointment: Appointment, at: datetime) -> None:
        appointment.status, appointment.cancelled_at = "cancelled", at
        self.event(enrolment, "cancelled", at, appointment_id=appointment.id, reason="")

    def verify(self, enrolment: Enrolment, at: datetime) -> None:
        self.event(enrolment, "link_opened", at)
        self.event(enrolment, "code_sent", at, channel="sms")
        self.event(enrolment, "verified", at + timedelta(minutes=2))


@pytest.fixture()
def log(db):
    setup = make_clinic(db)
    campaign = setup.campaign
    campaign.care_gap_codes = ["annual_wellness", "refill_gap"]
    campaign.window_days = 90
    campaign.launched_at = L
    campaign.step_days = [0, 7, 14, 30]
    db.flush()
    log = Log(db, setup, campaign)
    north = setup.other_location
    people = {}

    ana = people["Ana"] = log.enrol(log.patient("Ana", date(1950, 5, 1), "es"), "A")
    log.message(ana, 0, "sms", L, delivered=True)
    log.event(ana, "link_opened", days(0.5))
    log.verify(ana, days(1) - timedelta(hours=1))
    log.book(ana, days(1), days(10), status="attended")
    db.add(ClinicalFact(patient_id=ana.patient_id, kind="encounter", code="x", started_on=date(2026, 4, 1),
                        source="test", source_key="ana-encounter"))
    refill = log.enrol(db.get(Patient, ana.patient_id), "A", gap="refill_gap", tier=2)
    db.add(RefillRequest(enrolment_id=refill.id, kind="refill", status="done", created_at=days(3),
                         updated_at=days(5), completed_at=days(5)))

    ben = people["Ben"] = log.enrol(log.patient("Ben", date(1980, 6, 15)), "A")
    log.message(ben, 0, "email", L, delivered=False)
    log.message(ben, 1, "sms", days(7), delivered=True)
    log.verify(ben, days(8) - timedelta(hours=1))
    first = log.book(ben, days(8), days(12))
    log.cancel(ben, first, days(9))
    log.book(ben, days(10), days(20), status="attended", location=north)

    fay = people["Fay"] = log.enrol(log.patient("Fay", date(1975, 12, 12)), "A")
    log.message(fay, 0, "email", L, delivered=False)
    log.message(fay, 1, "email", days(7), delivered=False)
    log.event(fay, "link_opened", days(8))
    log.event(fay, "verification_failed", days(8))
    db.add(HelpRequest(enrolment_id=fay.id, kind="ride", details={}, created_at=days(8), updated_at=days(8)))
    log.event(fay, "help_requested", days(8), kind="ride")

    jo = people["Jo"] = log.enrol(log.patient("Jo", date(1985, 3, 3)), "A")
    log.message(jo, 0, "sms", L, delivered=True)
    log.verify(jo, days(60) - timedelta(hours=1))
    log.book(jo, days(60), days(95), status="attended")

    max_ = people["Max"] = log.enrol(log.patient("Max", date(2000, 1, 1)), "A")
    log.message(max_, 0, "sms", L, delivered=True)
    log.verify(max_, days(4) - timedelta(hours=1))
    log.cancel(max_, log.book(max_, days(4), days(14), location=north), days(5))

    cruz = people["Cruz"] = log.enrol(log.patient("Cruz", date(1960, 1, 10)), "B")
    log.message(cruz, 0, "sms", L, delivered=True)
    log.message(cruz, 1, "sms", days(7), delivered=True)
    log.event(cruz, "call_attempt", days(15), actor="staff", outcome="booked_by_phone")
    log.book(cruz, days(15), days(30), status="no_show", via="staff")

    dee = people["Dee"] = log.enrol(log.patient("Dee", date(1990, 7, 7), "es"), "B")
    log.message(dee, 0, "sms", L, delivered=True)
    log.verify(dee, days(2) - timedelta(hours=1))
    log.book(dee, days(2), NOW + 5 * DAY, location=north)
    db.add(HelpRequest(enrolment_id=dee.id, kind="cost", details={}, created_at=days(2), updated_at=days(2)))

    eve = people["Eve"] = log.enrol(log.patient("Eve", date(1970, 2, 2)), "B")
    log.message(eve, 0, "sms", L, delivered=True)
    log.event(eve, "opted_out", days(1), channel="sms", source="sms_keyword")
    log.message(eve, 1, "sms", days(7), delivered=False, sent=False)

    kim = people["Kim"] = log.enrol(log.patient("Kim", date(1982, 8, 8)), "B")
    log.message(kim, 0, "sms", L, delivered=True)
    log.verify(kim, days(3) - timedelta(hours=1))
    log.book(kim, days(3), days(40))

    gus = people["Gus"] = log.enrol(log.patient("Gus", date(1955, 4, 4)), CONTROL)
    log.book(gus, days(20), days(25), status="attended", via="staff")
    people["Hal"] = log.enrol(log.patient("Hal", date(1961, 3, 2)), CONTROL)
    ida = people["Ida"] = log.enrol(log.patient("Ida", date(1945, 11, 11), "es"), CONTROL)
    db.add(ClinicalFact(patient_id=ida.patient_id, kind="procedure", code="y", started_on=date(2026, 4, 10),
                        source="test", source_key="ida-elsewhere"))

    # Another campaign's activity for one of the same patients must not leak in.
    other = Campaign(clinic_id=setup.clinic.id, name="Other", status="active", care_gap_codes=["flu_vaccine"])
    db.add(other)
    db.flush()
    elsewhere = log.enrol(db.get(Patient, ana.patient_id), "A", gap="flu_vaccine", campaign=other)
    log.message(elsewhere, 0, "sms", L, delivered=True)
    log.event(elsewhere, "opted_out", days(2), channel="sms")
    db.flush()
    log.people = people
    return log


@pytest.fixture()
def rules(monkeypatch, log):
    """The care-gap rules, standing in for portal.services.care_gap_rules: every gap is
    still open except Ida's, which an import showed done elsewhere."""
    ida = log.people["Ida"].patient_id

    def patients_with_gap(_session, _code, _as_of):
        return select(Patient.id).where(Patient.id != ida)
    monkeypatch.setattr(analytics, "_patients_with_gap", patients_with_gap)


def test_funnel_counts_each_patient_once_at_each_stage(db, log, rules):
    report = campaign_report(db, log.campaign, now=NOW)
    counts = report.overall.counts
    assert counts["audience"] == 12  # Ana's two enrolments count once; the control group is enrolled
    assert counts["sent"] == 9  # Eve's cancelled reminder never left; the control group gets nothing
    assert counts["delivered"] == 8  # all but Fay (email, no receipt)
    assert counts["opened"] == 7  # Ana (twice), Ben, Fay, Jo, Max, Dee, Kim
    assert counts["verified"] == 6  # Fay opened but never verified
    assert counts["booked"] == 8  # Ben booked, cancelled and rebooked: once. Cruz and Gus booked by staff.
    assert counts["booked_by_staff"] == 2
    assert counts["kept"] == 4  # Ana, Ben, Jo, Gus
    assert counts["upcoming"] == 1  # Dee
    assert counts["unrecorded"] == 1  # Kim's visit passed, nobody marked it
    assert counts["no_show"] == 1  # Cruz
    assert counts["cancelled"] == 1  # Max; Ben rebooked so he isn't a cancellation
    assert sum(counts[k] for k in analytics.OUTCOMES) == counts["booked"]
    assert counts["won_back"] == 3  # Ana, Ben, Gus; Jo's visit fell after the 90-day window
    assert counts["opted_out"] == 1  # Eve; Ana's opt-out from the other campaign doesn't count here


def test_rates_and_times(db, log, rules):
    overall = campaign_report(db, log.campaign, now=NOW).overall
    assert overall.rate("booking_rate") == pytest.approx(8 / 12)
    assert overall.rate("win_back_rate") == pytest.approx(3 / 12)
    assert overall.rate("kept_rate") == pytest.approx(4 / 6)  # kept of kept + no-show + cancelled
    assert overall.rate("opt_out_rate") == pytest.approx(1 / 9)
    # First message -> first booking, in days: Ana 1, Dee 2, Kim 3, Max 4, Ben 8, Cruz 15, Jo 60 (Gus had no message)
    to_book = overall.durations["to_book"]
    assert to_book.n == 7
    assert to_book.p50 / 86400 == pytest.approx(4)
    assert to_book.p90 / 86400 == pytest.approx(15 + 0.4 * (60 - 15))  # rank 6.4
    # First booking -> the visit attended: Gus 5, Ana 9, Ben 12 (from his first booking), Jo 35
    to_visit = overall.durations["to_visit"]
    assert to_visit.n == 4
    assert to_visit.p50 / 86400 == pytest.approx((9 + 12) / 2)
    assert to_visit.p90 / 86400 == pytest.approx(12 + 0.7 * (35 - 12))  # rank 3.7


def test_care_gap_closure_refills_and_retention(db, log, rules):
    counts = campaign_report(db, log.campaign, now=NOW).overall.counts
    # Visits of a type that closes the gap, inside the window: Ana, Ben, Gus. Done elsewhere: Ida.
    assert counts["closed"] == 4
    assert (counts["refill_due"], counts["refill_done"]) == (1, 1)
    # Won back and seen at least 30 (90) days before NOW: Ana, Ben, Gus. Only Ana came back (1 April encounter).
    assert (counts["retention_30_due"], counts["retained_30"]) == (3, 1)
    assert (counts["retention_90_due"], counts["retained_90"]) == (3, 1)


def test_without_the_rules_closure_comes_from_visits_only(db, log, monkeypatch):
    monkeypatch.setattr(analytics, "_patients_with_gap", None)
    assert campaign_report(db, log.campaign, now=NOW).overall.counts["closed"] == 3


def test_a_record_that_merely_lapses_a_gap_is_not_a_closure(db, log, monkeypatch):
    """The rules say nobody's gap is open any more (say the season ended), but only Ida has a new record."""
    monkeypatch.setattr(analytics, "_patients_with_gap", lambda _s, _c, _d: select(Patient.id).where(Patient.id < 0))
    assert campaign_report(db, log.campaign, now=NOW).overall.counts["closed"] == 4  # Ana, Ben, Gus by visit; Ida


def rows(report, dim) -> dict:
    return {group.key: group for group in report.breakdowns[dim]}


def test_breakdown_by_arm(db, log, rules):
    arms = rows(campaign_report(db, log.campaign, now=NOW), "variant")
    assert list(arms) == ["A", "B", CONTROL]
    assert {k: (g.counts["audience"], g.counts["booked"], g.counts["kept"], g.counts["won_back"])
            for k, g in arms.items()} == {"A": (5, 4, 3, 2), "B": (4, 3, 0, 0), CONTROL: (3, 1, 1, 1)}
    assert arms[CONTROL].counts["sent"] == 0


def test_breakdowns_by_patient_and_enrolment(db, log, rules):
    report = campaign_report(db, log.campaign, now=NOW)
    by = lambda dim: {k: g.counts["audience"] for k, g in rows(report, dim).items()}  # noqa: E731
    assert by("language") == {"en": 9, "es": 3}
    assert by("tier") == {2: 1, 4: 12}
    assert by("care_gap") == {"annual_wellness": 12, "refill_gap": 1}
    # Ages on launch day; Hal turned 65 that very day.
    assert by("age_band") == {"18-44": 4, "45-64": 3, "65-74": 3, "75+": 2}
    # By enrolment: Ana's refill enrolment got no message and no booking, so she is in "" too.
    assert by("channel") == {"sms": 7, "email": 2, "": 4}
    assert by("location") == {"Main": 5, "North": 3, "": 5}  # the place of the latest booking (Ben: North)
    step = rows(report, "step")
    assert {k: g.counts["booked"] for k, g in step.items()} == {0: 5, 1: 2, "": 1}  # Gus: no message at all


def test_steps_channels_help_and_weeks(db, log, rules):
    report = campaign_report(db, log.campaign, now=NOW)
    assert [(r.step, r.day, r.sent, r.delivered, r.booked_after) for r in report.steps] == [
        (0, 0, 9, 7, 5), (1, 7, 3, 2, 2)]
    assert [(r.channel, r.sent, r.delivered, r.opted_out) for r in report.channels] == [
        ("sms", 8, 8, 1), ("email", 2, 0, 0)]
    assert [(r.kind, r.requests, r.patients) for r in report.help] == [("cost", 1, 1), ("ride", 1, 1)]
    # Completed weeks from enrolment to first booking, cumulative per arm.
    assert {arm: [(p.week, p.booked) for p in points] for arm, points in report.weeks.items()} == {
        "A": [(0, 2), (1, 3), (8, 4)], "B": [(0, 2), (2, 3)], CONTROL: [(2, 1)]}


def test_overview_uses_the_same_definitions(db, log, rules):
    summary = next(s for s in campaign_overview(db, now=NOW) if s.campaign.id == log.campaign.id)
    assert {k: summary.group.counts[k] for k in ("audience", "control", "booked", "kept", "won_back")} == {
        "audience": 12, "control": 3, "booked": 8, "kept": 4, "won_back": 3}


def test_drill_down_lists_the_patients_behind_a_number(db, log, rules):
    names = lambda cells: sorted(c.given_name for c in cells)  # noqa: E731
    assert names(patients_in_cell(db, log.campaign, "won_back", now=NOW)) == ["Ana", "Ben", "Gus"]
    assert names(patients_in_cell(db, log.campaign, "booked", "variant", "B", now=NOW)) == ["Cruz", "Dee", "Kim"]
    with pytest.raises(KeyError):
        patients_in_cell(db, log.campaign, "nonsense", now=NOW)


def test_percentile_matches_the_textbook_definition():
    statistics = pytest.importorskip("statistics")
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    assert percentile(values, 50) == pytest.approx(statistics.median(values))
    assert percentile(values, 90) == pytest.approx(statistics.quantiles(values, n=10, method="inclusive")[-1])
    assert percentile([], 50) is None


def test_exports_hide_small_cells_and_what_is_computed_from_them(db, log, rules):
    tables = report_tables(campaign_report(db, log.campaign, now=NOW))
    funnel = export_rows(tables["funnel"])
    assert funnel[0] == ["stage", "patients", "share", "audience"]
    for line in funnel[2:]:
        assert line[1] == SUPPRESSED and line[2] == SUPPRESSED  # nothing here reaches 11 patients but "enrolled"
    assert funnel[1][1:] == ["12", "1.0000", "12"]


def test_complementary_suppression_protects_the_lone_small_cell():
    table = Table("t", "t", [analytics.Column("group", "g", "label"), analytics.Column("n", "n"),
                             analytics.Column("share", "s", "rate", ("n", "total")),
                             analytics.Column("total", "t", "count", (), False)],
                  [{"group": "en", "n": 500, "share": 0.5, "total": 1000},
                   {"group": "es", "n": 30, "share": 0.03, "total": 1000},
                   {"group": "fr", "n": 4, "share": 0.004, "total": 1000},
                   {"group": "xx", "n": 0, "share": 0.0, "total": 1000}], partition=True)
    out = export_rows(table)
    assert out[1] == ["en", "500", "0.5000", "1000"]
    assert out[2] == ["es", SUPPRESSED, SUPPRESSED, "1000"]  # hidden too, else fr = total - en - es
    assert out[3] == ["fr", SUPPRESSED, SUPPRESSED, "1000"]
    assert out[4] == ["xx", "0", "0.0000", "1000"]


def test_a_lone_small_outcome_is_not_left_to_subtraction():
    """kept + no-show + cancelled = settled: hiding only the 3 would leave it as 40 - 25 - 12."""
    columns = [analytics.Column("group", "g", "label")] + [analytics.Column(k, k) for k in
                                                             ("settled", "kept", "no_show", "cancelled")]
    table = Table("t", "t", columns, [{"group": "all", "settled": 40, "kept": 25, "no_show": 12, "cancelled": 3}],
                  row_partitions=(("settled", ("kept", "no_show", "cancelled")),))
    assert export_rows(table)[1] == ["all", "40", "25", SUPPRESSED, SUPPRESSED]
