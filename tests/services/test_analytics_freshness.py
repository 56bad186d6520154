"""The stored facts behind the dashboard never go stale: what changes between two reports
(an event, a booking, a visit marked attended, a message delivered, a slot moved, a
patient's details, a new enrolment, the day closure is judged on) shows in the next
one, and the refreshed figures are exactly what a rebuild from scratch gives.

Uses the hand-made campaign of tests/services/test_analytics.py (answers worked out there)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from sqlalchemy import delete, select, update

from portal.models import Appointment, Enrolment, EnrolmentFactRefresh, OutboxMessage, Patient, Slot
from portal.services.analytics import CONTROL, campaign_report
from portal.services.booking import record_visit_outcome
from tests.services.test_analytics import NOW, days, log, rules  # noqa: F401  (the hand-made event log fixtures)


def counts(db, campaign, now=NOW) -> dict[str, int]:
    return campaign_report(db, campaign, now=now).overall.counts


def by(db, campaign, dim: str, stage: str = "audience") -> dict:
    report = campaign_report(db, campaign, now=NOW, dimensions=(dim,))
    return {group.key: group.counts[stage] for group in report.breakdowns[dim]}


def test_what_happens_between_two_reports_shows_in_the_next(db, log, rules):
    before = counts(db, log.campaign)
    assert (before["verified"], before["delivered"], before["booked"], before["kept"], before["won_back"],
            before["upcoming"], before["unrecorded"], before["audience"]) == (6, 8, 8, 4, 3, 1, 1, 12)
    people = log.people
    log.verify(people["Fay"], days(30))  # an event appended
    db.execute(update(OutboxMessage).where(OutboxMessage.enrolment_id == people["Fay"].id, OutboxMessage.step == 1)
               .values(delivered_at=days(7)))  # a message updated in place: a late receipt
    log.book(people["Hal"], days(31), days(33), via="staff")  # a booking (control group, by phone)
    kim = db.scalar(select(Appointment).where(Appointment.enrolment_id == people["Kim"].id))
    record_visit_outcome(db, kim, "attended")  # an appointment updated in place
    dee = db.scalar(select(Appointment).where(Appointment.enrolment_id == people["Dee"].id))
    db.execute(update(Slot).where(Slot.id == dee.slot_id).values(starts_at=days(50), ends_at=days(50.1)))
    newcomer = log.enrol(log.patient("Nia", date(1999, 9, 9)), "B")  # enrolled after the first report
    db.flush()

    after = counts(db, log.campaign)
    assert after["verified"] == 7  # + Fay
    assert after["delivered"] == 9  # + Fay's reminder
    assert after["booked"] == 9 and after["booked_by_staff"] == 3  # + Hal
    assert after["kept"] == 5 and after["won_back"] == 4  # + Kim, whose visit on day 40 is inside the window
    # Kim leaves "unrecorded"; Dee (her slot moved back to day 50) and Hal (day 33) join it.
    assert (after["unrecorded"], after["upcoming"]) == (2, 0)
    assert after["audience"] == 13  # + Nia
    assert by(db, log.campaign, "variant")["B"] == 5
    db.execute(update(Patient).where(Patient.id == newcomer.patient_id).values(preferred_language="es"))
    assert by(db, log.campaign, "language") == {"en": 9, "es": 4}

    refreshed = campaign_report(db, log.campaign, now=NOW)
    db.execute(delete(EnrolmentFactRefresh))  # forget the stored facts: the next report rebuilds them
    rebuilt = campaign_report(db, log.campaign, now=NOW)
    assert refreshed.overall.counts == rebuilt.overall.counts
    assert refreshed.overall.durations == rebuilt.overall.durations
    assert [(g.key, g.counts) for g in refreshed.arms] == [(g.key, g.counts) for g in rebuilt.arms]
    assert refreshed.weeks == rebuilt.weeks


def test_a_change_reaches_every_campaign_whose_facts_are_kept(db, log, rules):
    ana = log.people["Ana"]
    elsewhere = db.scalar(select(Enrolment).where(Enrolment.patient_id == ana.patient_id,
                                                  Enrolment.campaign_id != log.campaign.id))
    assert counts(db, elsewhere.campaign)["opened"] == 0
    counts(db, log.campaign)
    log.event(elsewhere, "link_opened", days(40))
    db.flush()
    counts(db, log.campaign)  # this report takes the change from the queue both campaigns share
    assert counts(db, elsewhere.campaign)["opened"] == 1


def test_closure_elsewhere_is_judged_again_when_the_day_moves(db, log, rules):
    # Ida's record of the gap closed elsewhere is dated 10 April.
    assert counts(db, log.campaign, now=datetime(2026, 4, 5, 12, tzinfo=timezone.utc))["closed"] == 3
    assert counts(db, log.campaign)["closed"] == 4
    assert by(db, log.campaign, "variant", "closed")[CONTROL] == 2  # Gus's visit, Ida elsewhere


def test_a_visit_still_to_come_becomes_unrecorded_when_its_time_passes(db, log, rules):
    assert counts(db, log.campaign)["upcoming"] == 1  # Dee, five days after NOW
    later = counts(db, log.campaign, now=NOW + timedelta(days=6))
    assert (later["upcoming"], later["unrecorded"]) == (0, 2)
