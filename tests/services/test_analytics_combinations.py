"""When nobody in a campaign is enrolled twice, the report counts combinations of stored
facts (one row per patient already) instead of folding each patient's enrolments: every
number must be the hand-worked one, and the same as folding gives.

Uses the hand-made campaign of tests/services/test_analytics.py without Ana's second
(refill) enrolment, which got no message and no booking: only ``refill_due`` changes."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from portal.models import Enrolment, Event
from portal.models.visit import RefillRequest
from portal.services import analytics
from portal.services.analytics import CONTROL, campaign_report
from tests.services.test_analytics import NOW, log, rules  # noqa: F401  (the hand-made event log fixtures)


@pytest.fixture()
def single(db, log):  # noqa: F811
    refill = db.scalar(select(Enrolment).where(Enrolment.campaign_id == log.campaign.id,
                                               Enrolment.care_gap_code == "refill_gap"))
    db.execute(delete(RefillRequest).where(RefillRequest.enrolment_id == refill.id))
    db.execute(delete(Event).where(Event.enrolment_id == refill.id))
    db.delete(refill)
    db.flush()
    assert not analytics._someone_enrolled_twice(db, log.campaign)
    return log


def test_counting_combinations_gives_the_hand_worked_numbers(db, single, rules):  # noqa: F811
    report = campaign_report(db, single.campaign, now=NOW)
    counts = report.overall.counts
    assert (counts["audience"], counts["sent"], counts["delivered"], counts["opened"], counts["verified"],
            counts["booked"], counts["booked_by_staff"]) == (12, 9, 8, 7, 6, 8, 2)
    assert [counts[k] for k in analytics.OUTCOMES] == [4, 1, 1, 1, 1]  # kept, upcoming, unrecorded, no-show, cancelled
    assert (counts["won_back"], counts["closed"], counts["opted_out"], counts["refill_due"]) == (3, 4, 1, 0)
    assert (counts["retention_30_due"], counts["retained_30"], counts["retention_90_due"]) == (3, 1, 3)
    to_book, to_visit = report.overall.durations["to_book"], report.overall.durations["to_visit"]
    assert (to_book.n, to_book.p50 / 86400, to_book.p90 / 86400) == (7, pytest.approx(4), pytest.approx(33))
    assert (to_visit.n, to_visit.p50 / 86400, to_visit.p90 / 86400) == (4, pytest.approx(10.5),
                                                                         pytest.approx(12 + 0.7 * 23))
    arms = {g.key: (g.counts["audience"], g.counts["booked"], g.counts["kept"], g.counts["won_back"])
            for g in report.arms}
    assert arms == {"A": (5, 4, 3, 2), "B": (4, 3, 0, 0), CONTROL: (3, 1, 1, 1)}
    assert [(r.step, r.sent, r.delivered, r.booked_after) for r in report.steps] == [(0, 9, 7, 5), (1, 3, 2, 2)]
    assert [(r.channel, r.sent, r.delivered, r.opted_out) for r in report.channels] == [
        ("sms", 8, 8, 1), ("email", 2, 0, 0)]
    assert {arm: [(p.week, p.booked) for p in points] for arm, points in report.weeks.items()} == {
        "A": [(0, 2), (1, 3), (8, 4)], "B": [(0, 2), (2, 3)], CONTROL: [(2, 1)]}
    by = lambda dim: {g.key: g.counts["audience"] for g in report.breakdowns[dim]}  # noqa: E731
    assert by("age_band") == {"18-44": 4, "45-64": 3, "65-74": 3, "75+": 2}
    assert by("location") == {"Main": 5, "North": 3, "": 4}  # Ana is no longer in "" too
    assert {g.key: g.counts["booked"] for g in report.breakdowns["step"]} == {0: 5, 1: 2, "": 1}


def test_a_visit_still_to_come_and_retention_follow_the_clock(db, single, rules):  # noqa: F811
    later = campaign_report(db, single.campaign, now=NOW + timedelta(days=6)).overall.counts
    assert (later["upcoming"], later["unrecorded"]) == (0, 2)  # Dee's visit has passed, nobody marked it
    early = campaign_report(db, single.campaign, now=NOW - timedelta(days=60)).overall.counts
    # On 2 May: Ana (visit 12 March) and Ben (22 March) are 30 days past their visit, not 90; Gus (27 March) too.
    assert (early["retention_30_due"], early["retention_90_due"]) == (3, 0)


def test_counting_combinations_matches_folding_for_every_number(db, single, rules, monkeypatch):  # noqa: F811
    combined = campaign_report(db, single.campaign, now=NOW)
    monkeypatch.setattr(analytics, "_someone_enrolled_twice", lambda _session, _campaign: True)
    folded = campaign_report(db, single.campaign, now=NOW)
    assert combined.overall == folded.overall
    for dim in analytics.DIMENSIONS:
        assert combined.breakdowns[dim] == folded.breakdowns[dim]
    assert (combined.steps, combined.channels, combined.weeks) == (folded.steps, folded.channels, folded.weeks)
