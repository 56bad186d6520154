"""The queue of patients whose dashboard facts changed (enrolment_fact_change) is emptied by
``portal dispatch`` when it has nothing to send, not only by someone opening a dashboard:
where nobody looks for months it no longer grows with every write. The idle dispatcher also
pays for the slow refreshes (a rebuild after a deploy changed a definition, or after a flood
of changes), so the next person to open the dashboard does not.

Uses the hand-made campaign of tests/services/test_analytics.py (answers worked out there)."""
from __future__ import annotations

import threading

from sqlalchemy import func, select, update

from portal.channels.portal_inbox import PortalInboxChannel
from portal.cli_dispatch import run_dispatcher
from portal.models import EnrolmentFact, EnrolmentFactChange, EnrolmentFactRefresh
from portal.services import analytics
from portal.services.analytics import campaign_report
from portal.services.dispatch import DispatchPolicy
from tests.services.test_analytics import NOW, days, log, rules  # noqa: F401  (the hand-made event log fixtures)


def queued(db) -> int:
    return db.scalar(select(func.count()).select_from(EnrolmentFactChange))


def dispatch_once(db) -> None:
    """`portal dispatch --once` with nothing due."""
    channels = {"sms": PortalInboxChannel(), "email": PortalInboxChannel(), "portal": PortalInboxChannel()}
    run_dispatcher(db, channels, DispatchPolicy(), stop=threading.Event(), once=True, batch=10, interval=1, now=NOW)


def test_an_idle_dispatcher_applies_the_queued_changes_to_the_kept_facts(db, log, rules):  # noqa: F811
    assert campaign_report(db, log.campaign, now=NOW).overall.counts["verified"] == 6
    fay = log.people["Fay"]
    log.verify(fay, days(30))
    db.commit()
    assert queued(db) > 0
    dispatch_once(db)
    assert queued(db) == 0
    assert db.scalar(select(EnrolmentFact.verified).where(EnrolmentFact.enrolment_id == fay.id)) == 1
    assert campaign_report(db, log.campaign, now=NOW).overall.counts["verified"] == 7


def refreshed_at(db, campaign):
    db.expire_all()
    return db.get(EnrolmentFactRefresh, campaign.id).refreshed_at


def test_a_flood_of_changes_is_rebuilt_by_the_idle_dispatcher_not_by_the_next_view(db, log, rules,  # noqa: F811
                                                                                   monkeypatch):
    campaign_report(db, log.campaign, now=NOW)
    monkeypatch.setattr(analytics, "INCREMENTAL_LIMIT", 1)
    for name in ("Fay", "Max"):
        log.verify(log.people[name], days(30))
    db.commit()
    dispatch_once(db)
    assert queued(db) == 0
    rebuilt = refreshed_at(db, log.campaign)
    assert campaign_report(db, log.campaign, now=NOW).overall.counts["verified"] == 7  # Fay; Max had verified
    assert refreshed_at(db, log.campaign) == rebuilt  # the view found nothing left to do


def test_after_a_definition_changes_the_idle_dispatcher_rebuilds_the_facts(db, log, rules):  # noqa: F811
    before = campaign_report(db, log.campaign, now=NOW).overall.counts
    db.get(EnrolmentFactRefresh, log.campaign.id).definition = "computed by an older release"
    db.execute(update(EnrolmentFact).where(EnrolmentFact.campaign_id == log.campaign.id).values(verified=0))
    db.commit()
    dispatch_once(db)
    rebuilt = refreshed_at(db, log.campaign)
    assert db.get(EnrolmentFactRefresh, log.campaign.id).definition != "computed by an older release"
    assert campaign_report(db, log.campaign, now=NOW).overall.counts == before
    assert refreshed_at(db, log.campaign) == rebuilt


def test_with_no_facts_kept_the_queue_is_simply_emptied(db, log):  # noqa: F811
    log.verify(log.people["Fay"], days(30))
    db.commit()
    assert queued(db) > 0
    dispatch_once(db)
    assert queued(db) == 0
