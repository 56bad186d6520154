"""The queue of patients whose dashboard facts changed (enrolment_fact_change) is emptied by
``portal dispatch`` when it has nothing to send, not only by someone opening a dashboard:
where nobody looks for months it no longer grows with every write.

Uses the hand-made campaign of tests/services/test_analytics.py (answers worked out there)."""
from __future__ import annotations

import threading

from sqlalchemy import func, select

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


def test_a_flood_of_changes_is_dropped_and_the_facts_rebuilt_when_next_read(db, log, rules,  # noqa: F811
                                                                            monkeypatch):
    campaign_report(db, log.campaign, now=NOW)
    monkeypatch.setattr(analytics, "INCREMENTAL_LIMIT", 1)
    for name in ("Fay", "Max"):
        log.verify(log.people[name], days(30))
    db.commit()
    dispatch_once(db)
    assert queued(db) == 0
    assert db.scalar(select(func.count()).select_from(EnrolmentFactRefresh)) == 0  # forgotten: rebuilt when read
    assert campaign_report(db, log.campaign, now=NOW).overall.counts["verified"] == 7  # Fay; Max had verified


def test_with_no_facts_kept_the_queue_is_simply_emptied(db, log):  # noqa: F811
    log.verify(log.people["Fay"], days(30))
    db.commit()
    assert queued(db) > 0
    dispatch_once(db)
    assert queued(db) == 0
