"""The outreach sequence: day 0, reminders for non-responders only, escalation,
holdout silence, and nothing more once the patient books or says stop."""
from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select

from portal.models import ChannelConsent, Enrolment, Event, Link, OutboxMessage, OutboxStatus, Patient
from portal.services.availability import appointment_types_for
from portal.services.booking import book_slot
from portal.services.responses import opt_out
from portal.services.sequence import run_due_steps
from tests.factories import add_slots, future_day, invite_patient, make_clinic
from tests.services.test_dispatch import Committed, postgres_only

DAY = timedelta(days=1)


def start(db, setup, *invited, now):
    setup.campaign.status = "active"
    setup.campaign.channels = ["sms", "email"]
    setup.campaign.step_days = [0, 7, 14, 30]
    for person in invited:
        person.enrolment.created_at = now
        person.enrolment.next_step_at = now
    db.commit()


def campaign_messages(db, invited) -> list[tuple[int, str, str]]:
    db.expire_all()
    return [(m.step, m.channel, m.template) for m in db.scalars(
        select(OutboxMessage).where(OutboxMessage.enrolment_id == invited.enrolment.id,
                                    OutboxMessage.step.is_not(None)).order_by(OutboxMessage.id))]


def run(db, in_app, now) -> int:
    with in_app():
        count = run_due_steps(db, now)
    db.commit()
    return count


def test_day_0_then_reminders_for_non_responders_only(db, in_app):
    setup = make_clinic(db)
    slots = add_slots(db, setup, future_day(20))
    quiet = invite_patient(db, in_app, setup, given="Quiet", phone="+13125550111")
    booker = invite_patient(db, in_app, setup, given="Booker", phone="+13125550112")
    now = datetime.now(timezone.utc)
    start(db, setup, quiet, booker, now=now)

    assert run(db, in_app, now) == 2
    assert run(db, in_app, now + DAY) == 0  # nothing is due between steps
    with in_app():
        book_slot(db, booker.enrolment, appointment_types_for(db, booker.enrolment)[0], slots[0].id)
    db.commit()
    for day in (7, 14, 30):
        run(db, in_app, now + day * DAY)

    assert campaign_messages(db, quiet) == [(0, "sms", "invite"), (1, "email", "reminder"),
                                            (2, "sms", "reminder"), (3, "email", "reminder")]
    assert campaign_messages(db, booker) == [(0, "sms", "invite")]
    db.expire_all()
    assert quiet.enrolment.escalated_at is not None and quiet.enrolment.next_step_at is None
    assert booker.enrolment.escalated_at is None


def test_each_message_carries_a_new_link_that_replaces_the_last(db, in_app, client):
    setup = make_clinic(db)
    person = invite_patient(db, in_app, setup)
    week_ago = datetime.now(timezone.utc) - 7 * DAY  # links are checked against the real clock
    start(db, setup, person, now=week_ago)
    run(db, in_app, week_ago)
    run(db, in_app, week_ago + 7 * DAY)
    bodies = [m.body_text for m in db.scalars(select(OutboxMessage).where(
        OutboxMessage.enrolment_id == person.enrolment.id).order_by(OutboxMessage.id))]
    first, second = (body.split("/r/")[1].split()[0] for body in bodies)
    assert client.get(f"/r/{first}").status_code == 410  # superseded
    assert client.get(f"/r/{second}").status_code == 303
    assert person.token not in bodies[0]


def test_holdout_patients_are_enrolled_but_never_contacted(db, in_app):
    setup = make_clinic(db)
    person = invite_patient(db, in_app, setup)
    now = datetime.now(timezone.utc)
    start(db, setup, person, now=now)
    person.enrolment.holdout = True
    db.commit()
    for day in (0, 7, 14, 30, 60):
        run(db, in_app, now + day * DAY)
    assert campaign_messages(db, person) == []


def test_opting_out_stops_the_sequence_and_cancels_what_is_queued(db, in_app):
    setup = make_clinic(db)
    person = invite_patient(db, in_app, setup)
    now = datetime.now(timezone.utc)
    start(db, setup, person, now=now)
    run(db, in_app, now)
    with in_app():
        opt_out(db, person.enrolment)
    db.commit()
    for day in (7, 14, 30):
        run(db, in_app, now + day * DAY)
    assert campaign_messages(db, person) == [(0, "sms", "invite")]
    db.expire_all()
    statuses = db.scalars(select(OutboxMessage.status).where(OutboxMessage.enrolment_id == person.enrolment.id))
    assert set(statuses) <= {OutboxStatus.CANCELLED, OutboxStatus.SENT}


def test_a_paused_campaign_sends_nothing_until_resumed(db, in_app):
    setup = make_clinic(db)
    person = invite_patient(db, in_app, setup)
    now = datetime.now(timezone.utc)
    start(db, setup, person, now=now)
    setup.campaign.status = "paused"
    db.commit()
    assert run(db, in_app, now) == 0
    setup.campaign.status = "active"
    db.commit()
    assert run(db, in_app, now + DAY) == 1


def test_the_booking_is_credited_to_the_link_that_was_used(db, in_app, client):
    from tests.factories import latest_code
    from tests.helpers import PatientBrowser

    setup = make_clinic(db)
    add_slots(db, setup, future_day(3))
    person = invite_patient(db, in_app, setup)
    now = datetime.now(timezone.utc)
    start(db, setup, person, now=now)
    run(db, in_app, now)
    sent = db.scalar(select(Event).where(Event.enrolment_id == person.enrolment.id, Event.kind == "sent"))
    token = db.scalar(select(OutboxMessage.body_text).where(OutboxMessage.id == sent.detail["message_id"]))
    person.token = token.split("/r/")[1].split()[0]
    browser = PatientBrowser(client)
    browser.verify(db, person, latest_code)
    browser.get(f"/visit/times?type={setup.in_person.id}&location={setup.location.id}")
    slot = browser.slot_ids()[0]
    browser.post("/visit/hold", {"slot": slot, "appointment_type": setup.in_person.id})
    browser.post("/visit/book", {"slot": slot, "appointment_type": setup.in_person.id})
    booked = db.scalar(select(Event).where(Event.enrolment_id == person.enrolment.id, Event.kind == "booked"))
    assert booked.detail["link_id"] == sent.detail["link_id"]
    assert sent.detail["step"] == 0 and sent.detail["channel"] == "sms" and sent.detail["variant"] == "A"


@pytest.fixture()
def committed(app):
    world = Committed(app)
    yield world
    with world.factory() as session:  # links are not Committed's to clean up
        session.execute(delete(Link).where(Link.enrolment_id.in_(
            select(Enrolment.id).where(Enrolment.patient_id.in_(world.patient_ids)))))
        session.commit()
    world.cleanup()


@postgres_only
@pytest.mark.concurrency
def test_a_run_in_progress_is_skipped_by_a_second_run_not_repeated(committed, app):
    """Every dispatcher runs the sequence before sending: on PostgreSQL a second run
    takes other enrolments instead of queueing (or waiting on) the first run's."""
    now = datetime.now(timezone.utc)
    with committed.factory() as session:
        setup = make_clinic(session)
        committed.clinic_ids.append(setup.clinic.id)
        setup.campaign.channels, setup.campaign.step_days = ["sms"], [0, 7]
        for n in range(6):
            patient = Patient(given_name=f"Seq{n}", family_name="Test", birth_date=date(1960, 1, 1),
                              phone=f"+1773556{n:04d}", email="", time_zone="America/Chicago")
            session.add(patient)
            session.flush()
            committed.patient_ids.append(patient.id)
            session.add_all([ChannelConsent(patient_id=patient.id, channel="sms", granted=True, source="test",
                                            updated_at=now),
                             Enrolment(campaign_id=setup.campaign.id, patient_id=patient.id,
                                       care_gap_code="annual_wellness", created_at=now, next_step_at=now)])
        session.commit()
    holder = committed.factory()
    result = {}

    def second_run() -> None:
        with app.test_request_context(), committed.factory() as session:
            result["advanced"] = run_due_steps(session, now, limit=10)
            session.commit()

    with app.test_request_context():
        assert run_due_steps(holder, now, limit=3) == 3  # locked, not committed
        thread = threading.Thread(target=second_run)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the second run waited on the first one's enrolments"
        holder.commit()
    holder.close()
    assert result["advanced"] == 3
    with committed.factory() as session:
        per_enrolment = session.execute(
            select(OutboxMessage.enrolment_id, func.count()).where(OutboxMessage.patient_id.in_(committed.patient_ids))
            .group_by(OutboxMessage.enrolment_id)).all()
    assert len(per_enrolment) == 6 and {count for _id, count in per_enrolment} == {1}


def test_a_step_is_due_at_the_time_of_the_run_that_queued_it(db, in_app):
    """`portal dispatch --now` replays a fake clock: what the sequence queues must be
    due at that clock, not at the real time, or the same run never sends it."""
    setup = make_clinic(db)
    person = invite_patient(db, in_app, setup)
    earlier = datetime.now(timezone.utc) - 3 * DAY
    start(db, setup, person, now=earlier)
    assert run(db, in_app, earlier) == 1
    db.expire_all()
    message = db.scalar(select(OutboxMessage).where(OutboxMessage.enrolment_id == person.enrolment.id,
                                                    OutboxMessage.step == 0))
    assert message.next_attempt_at == earlier
