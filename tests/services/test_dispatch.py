"""The dispatcher: quiet hours in the patient's zone across DST changes, frequency
caps, consent checked again at send time, retries and dead letters, and delivery
that survives a crash between claiming and marking sent without sending twice."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import sessionmaker

from portal.channels import ChannelError, Sent, build_channels
from portal.channels.portal_inbox import PortalInboxChannel, inbox_for
from portal.models import (AppointmentType, AppointmentTypeGap, Campaign, ChannelConsent, Clinic, ConsentChange,
                           DeliveryReceipt, Enrolment, EnrolmentStatus, Event, InboundMessage, Location,
                           OutboxMessage, OutboxStatus, Patient, Provider)
from portal.services.consent import suppress_channel
from portal.services.dispatch import (DispatchPolicy, claim_due, dead_letters, dispatch_batch, dispatch_due,
                                      next_send_time, requeue_dead_letter)
from tests.factories import ClinicSetup, invite_patient, make_clinic
from tests.fakes import FakeSmsProvider

UTC = timezone.utc
POLICY = DispatchPolicy()
_keys = itertools.count(1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Recorder:
    """A channel that remembers what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def send(self, message: OutboxMessage) -> Sent:
        self.sent.append(message.id)
        return Sent(provider_message_id=f"rec-{message.id}")


def recording_channels() -> tuple[Recorder, dict]:
    recorder = Recorder()
    return recorder, {"sms": recorder, "email": recorder, "portal": PortalInboxChannel()}


def queue(db, patient: Patient, enrolment: Enrolment | None, *, due: datetime, channel: str = "sms",
          step: int | None = 0, template: str = "invite", status: str = OutboxStatus.PENDING,
          sent_at: datetime | None = None) -> OutboxMessage:
    message = OutboxMessage(
        dedupe_key=f"test:{next(_keys)}:{channel}", enrolment_id=enrolment.id if enrolment else None,
        patient_id=patient.id, channel=channel, template=template, locale="en",
        recipient=patient.phone if channel == "sms" else patient.email,
        body_text="Riverside Clinic: you're due for a visit. Reply STOP to opt out.", status=status,
        sent_at=sent_at, next_attempt_at=due, campaign_id=enrolment.campaign_id if enrolment and step is not None else None,
        step=step)
    db.add(message)
    db.flush()
    return message


def patient_in(db, in_app, setup: ClinicSetup, zone: str, n: int = 1):
    invited = invite_patient(db, in_app, setup, given=f"P{n}", phone=f"+1312555{n:04d}", email=f"p{n}@example.org")
    invited.patient.time_zone = zone
    db.flush()
    return invited


def reload(db, message: OutboxMessage) -> OutboxMessage:
    db.expire_all()
    return db.get(OutboxMessage, message.id)


# --- quiet hours --------------------------------------------------------------

@pytest.mark.parametrize("moment, zone, expected", [
    ("2026-06-10T13:30", "America/New_York", "2026-06-10T13:30"),  # 9:30 EDT: inside
    ("2026-06-10T13:30", "America/Los_Angeles", "2026-06-10T15:00"),  # 6:30 PDT: at 8:00 PDT
    ("2026-06-10T13:30", "Pacific/Honolulu", "2026-06-10T18:00"),  # 3:30 HST, no DST
    ("2026-06-10T13:30", "Europe/Madrid", "2026-06-10T13:30"),  # 15:30 CEST
    ("2026-06-11T01:00", "America/Chicago", "2026-06-11T01:00"),  # 20:00 CDT: still inside
    ("2026-06-11T02:00", "America/Chicago", "2026-06-11T13:00"),  # 21:00 CDT: the window has closed
    ("2026-03-08T04:30", "America/Chicago", "2026-03-08T13:00"),  # 22:30 CST → 8:00 CDT, an hour "earlier" in UTC
    ("2026-03-08T08:30", "America/Chicago", "2026-03-08T13:00"),  # 3:30 CDT, just after spring forward
    ("2026-11-01T03:00", "America/Chicago", "2026-11-01T14:00"),  # 22:00 CDT → 8:00 CST
    ("2026-03-29T05:30", "Europe/Madrid", "2026-03-29T06:00"),  # 7:30 CEST on Europe's change day → 8:00 CEST
])
def test_next_send_time_keeps_eight_to_nine_on_the_local_wall_clock(moment, zone, expected):
    result = next_send_time(at(moment), ZoneInfo(zone))
    assert result == at(expected)
    local = result.astimezone(ZoneInfo(zone))
    assert 8 <= local.hour < 21


def test_campaign_messages_wait_for_each_patients_morning(db, in_app):
    setup = make_clinic(db)
    now = at("2026-06-10T13:30")
    zones = ["America/New_York", "America/Los_Angeles", "Pacific/Honolulu", "Europe/Madrid"]
    messages = {zone: queue(db, patient_in(db, in_app, setup, zone, n).patient,
                            None, due=now - timedelta(minutes=1), step=None, template="code")
                for n, zone in enumerate(zones, 1)}
    campaign = {}
    for n, zone in enumerate(zones, 11):
        invited = patient_in(db, in_app, setup, zone, n)
        campaign[zone] = queue(db, invited.patient, invited.enrolment, due=now - timedelta(minutes=1))
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=POLICY)
    assert set(recorder.sent) == {m.id for m in messages.values()} | {campaign["America/New_York"].id,
                                                                        campaign["Europe/Madrid"].id}
    assert reload(db, campaign["America/Los_Angeles"]).next_attempt_at == at("2026-06-10T15:00")
    assert reload(db, campaign["Pacific/Honolulu"]).next_attempt_at == at("2026-06-10T18:00")
    assert reload(db, campaign["Pacific/Honolulu"]).attempts == 0  # a deferral is not a failed try


def test_a_patient_without_a_zone_gets_the_clinic_locations_zone(db, in_app):
    setup = make_clinic(db)
    setup.location.time_zone = setup.other_location.time_zone = "America/Los_Angeles"
    invited = patient_in(db, in_app, setup, "", 1)
    now = at("2026-06-10T14:00")  # 7:00 in Los Angeles, 9:00 in Chicago
    message = queue(db, invited.patient, invited.enrolment, due=now)
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=DispatchPolicy(default_zone="UTC"))
    assert recorder.sent == []
    assert reload(db, message).next_attempt_at == at("2026-06-10T15:00")


def test_across_the_spring_change_the_deferred_message_goes_at_eight_daylight_time(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    evening = at("2026-03-08T04:30")  # Saturday 22:30 CST
    message = queue(db, invited.patient, invited.enrolment, due=evening)
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=evening, policy=POLICY)
    assert reload(db, message).next_attempt_at == at("2026-03-08T13:00")  # Sunday 8:00 CDT = 13:00 UTC
    dispatch_due(db, channels, now=at("2026-03-08T12:59"), policy=POLICY)
    assert recorder.sent == []
    dispatch_due(db, channels, now=at("2026-03-08T13:00"), policy=POLICY)
    assert recorder.sent == [message.id]
    assert reload(db, message).sent_at.astimezone(ZoneInfo("America/Chicago")).hour == 8


def test_across_the_autumn_change_the_deferred_message_goes_at_eight_standard_time(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    message = queue(db, invited.patient, invited.enrolment, due=at("2026-11-01T03:00"))  # 22:00 CDT
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=at("2026-11-01T03:00"), policy=POLICY)
    assert reload(db, message).next_attempt_at == at("2026-11-01T14:00")  # 8:00 CST


def test_codes_and_booking_notices_go_out_at_night(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    night = at("2026-06-10T08:00")  # 3:00 in Chicago
    code = queue(db, invited.patient, invited.enrolment, due=night, step=None, template="code")
    booked = queue(db, invited.patient, invited.enrolment, due=night, step=None, template="booking_confirmed",
                   channel="email")
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=night, policy=POLICY)
    assert sorted(recorder.sent) == sorted([code.id, booked.id])


# --- frequency caps -----------------------------------------------------------

def test_one_campaign_message_a_day(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    queue(db, invited.patient, invited.enrolment, due=now, status=OutboxStatus.SENT, sent_at=now - timedelta(hours=3))
    queue(db, invited.patient, None, due=now, step=None, template="code", status=OutboxStatus.SENT,
          sent_at=now - timedelta(hours=1))  # a code is not outreach and counts for nothing
    message = queue(db, invited.patient, invited.enrolment, due=now, step=1)
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=POLICY)
    assert recorder.sent == []
    assert reload(db, message).next_attempt_at == at("2026-06-11T13:00")  # 24 h after the last one
    dispatch_due(db, channels, now=at("2026-06-11T13:00"), policy=POLICY)
    assert recorder.sent == [message.id]


def test_three_campaign_messages_a_week(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    for days in (6, 4, 2):
        queue(db, invited.patient, invited.enrolment, due=now, status=OutboxStatus.SENT,
              sent_at=now - timedelta(days=days))
    message = queue(db, invited.patient, invited.enrolment, due=now, step=3)
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=POLICY)
    assert recorder.sent == []
    assert reload(db, message).next_attempt_at == now + timedelta(days=1)  # when the oldest leaves the week


def test_two_messages_due_together_for_one_patient_go_a_day_apart(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    other = patient_in(db, in_app, setup, "America/Chicago", 2)
    now = at("2026-06-10T16:00")
    first = queue(db, invited.patient, invited.enrolment, due=now, channel="sms")
    second = queue(db, invited.patient, invited.enrolment, due=now, channel="email")
    theirs = queue(db, other.patient, other.enrolment, due=now)
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=POLICY)
    assert recorder.sent == [first.id, theirs.id]
    assert reload(db, second).next_attempt_at == now + timedelta(days=1)


def test_a_campaigns_own_caps_apply(db, in_app):
    setup = make_clinic(db)
    setup.campaign.max_per_day = 2
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    queue(db, invited.patient, invited.enrolment, due=now, status=OutboxStatus.SENT, sent_at=now - timedelta(hours=3))
    message = queue(db, invited.patient, invited.enrolment, due=now, step=1)
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=POLICY)
    assert recorder.sent == [message.id]


# --- consent and the enrolment, checked again at send time ----------------------

def test_an_opt_out_recorded_after_queueing_cancels_at_send_time(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    text = queue(db, invited.patient, None, due=now, step=None, template="code")
    mail = queue(db, invited.patient, None, due=now, step=None, template="code", channel="email")
    consent = db.get(ChannelConsent, (invited.patient.id, "sms"))
    consent.granted = False  # written behind the outbox's back: only the send-time check can catch it
    db.flush()
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=POLICY)
    assert recorder.sent == [mail.id]
    assert reload(db, text).status == OutboxStatus.CANCELLED and reload(db, text).last_error == "opted out"


def test_stop_everything_cancels_every_channel_but_the_keyword_reply(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    db.add(ChannelConsent(patient_id=invited.patient.id, channel="all", granted=False, source="patient_link",
                          updated_at=now))
    mail = queue(db, invited.patient, invited.enrolment, due=now, channel="email")
    reply = queue(db, invited.patient, None, due=now, step=None, template="sms_stopped")
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=POLICY)
    assert recorder.sent == [reply.id]
    assert reload(db, mail).status == OutboxStatus.CANCELLED


@pytest.mark.parametrize("change", ["booked", "closed", "holdout"])
def test_later_steps_are_never_sent_once_the_enrolment_ends(db, in_app, change):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    step = queue(db, invited.patient, invited.enrolment, due=now, step=2)
    notice = queue(db, invited.patient, invited.enrolment, due=now, step=None, template="booking_confirmed")
    if change == "holdout":
        invited.enrolment.holdout = True
    else:
        invited.enrolment.status = EnrolmentStatus.BOOKED if change == "booked" else EnrolmentStatus.CLOSED
    db.flush()
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=POLICY)
    assert recorder.sent == [notice.id]
    assert reload(db, step).status == OutboxStatus.CANCELLED


def test_a_stop_between_claiming_and_sending_still_stops_the_text(db, in_app):
    setup = make_clinic(db)
    first = patient_in(db, in_app, setup, "America/Chicago", 1)
    second = patient_in(db, in_app, setup, "America/Chicago", 2)
    now = at("2026-06-10T16:00")
    a = queue(db, first.patient, first.enrolment, due=now)
    b = queue(db, second.patient, second.enrolment, due=now)

    def stop_second(point, message):
        if point == "claimed" and message.id == a.id:  # b is claimed too but not yet sent
            suppress_channel(db, [second.patient.id], "sms", "sms_keyword", now)
            db.commit()

    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=DispatchPolicy(fault_hook=stop_second))
    assert recorder.sent == [a.id]
    assert reload(db, b).status == OutboxStatus.CANCELLED


# --- retries, dead letters, leases ------------------------------------------------

def sms_channels(provider: FakeSmsProvider, app) -> dict:
    return build_channels({**app.config, **provider.config()})


def test_failures_back_off_exponentially_then_succeed(db, in_app, app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    message = queue(db, invited.patient, None, due=now, step=None, template="code")
    policy = DispatchPolicy(retry_base=timedelta(minutes=1))
    with FakeSmsProvider(failures=[503, 500]) as provider:
        channels = sms_channels(provider, app)
        dispatch_due(db, channels, now=now, policy=policy)
        assert reload(db, message).next_attempt_at == now + timedelta(minutes=1)
        assert reload(db, message).last_error.startswith("sms provider 503")
        dispatch_due(db, channels, now=now + timedelta(seconds=59), policy=policy)
        assert len(provider.requests) == 1  # not due yet
        dispatch_due(db, channels, now=now + timedelta(minutes=1), policy=policy)
        assert reload(db, message).next_attempt_at == now + timedelta(minutes=3)  # then 2 minutes later
        dispatch_due(db, channels, now=now + timedelta(minutes=3), policy=policy)
    done = reload(db, message)
    assert (done.status, done.attempts, done.last_error) == (OutboxStatus.SENT, 3, "")
    assert done.provider_message_id == provider.delivered[0]["sid"]


def test_a_message_that_keeps_failing_becomes_a_dead_letter_and_can_be_requeued(db, in_app, app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    message = queue(db, invited.patient, None, due=now, step=None, template="code")
    policy = DispatchPolicy(max_attempts=3, retry_base=timedelta(seconds=1))
    with FakeSmsProvider(failures=[500, 500, 500]) as provider:
        channels = sms_channels(provider, app)
        for minute in range(5):
            dispatch_due(db, channels, now=now + timedelta(minutes=minute), policy=policy)
        assert len(provider.requests) == 3
        assert reload(db, message).status == OutboxStatus.DEAD
        assert message.id in [m.id for m in dead_letters(db)]
        assert requeue_dead_letter(db, message.id, now=now + timedelta(minutes=10))
        dispatch_due(db, channels, now=now + timedelta(minutes=10), policy=policy)
    assert reload(db, message).status == OutboxStatus.SENT


def test_a_refused_number_is_dead_at_once(db, in_app, app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    message = queue(db, invited.patient, None, due=now, step=None, template="code")
    with FakeSmsProvider(failures=[400]) as provider:
        dispatch_due(db, sms_channels(provider, app), now=now, policy=POLICY)
    assert reload(db, message).status == OutboxStatus.DEAD
    assert "21211" in reload(db, message).last_error


def test_a_claimed_message_is_left_alone_until_its_lease_runs_out(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T16:00")
    message = queue(db, invited.patient, None, due=now, step=None, template="code")
    assert [m.id for m in claim_due(db, now, 10, POLICY)] == [message.id]  # another dispatcher, then it died
    db.commit()
    recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now + POLICY.lease - timedelta(seconds=1), policy=POLICY)
    assert recorder.sent == []
    dispatch_due(db, channels, now=now + POLICY.lease, policy=POLICY)
    assert recorder.sent == [message.id]
    assert reload(db, message).attempts == 2


def test_the_portal_inbox_stores_the_message_for_the_patient(db, in_app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    now = at("2026-06-10T03:00")  # night: the inbox rings no phone
    message = queue(db, invited.patient, invited.enrolment, due=now, channel="portal")
    _recorder, channels = recording_channels()
    dispatch_due(db, channels, now=now, policy=POLICY)
    stored = reload(db, message)
    assert (stored.status, stored.delivered_at) == (OutboxStatus.SENT, now)
    assert [m.id for m in inbox_for(db, invited.patient.id)] == [message.id]


def test_portal_dispatch_once_sends_what_is_due_at_the_given_time(db, in_app, app):
    setup = make_clinic(db)
    invited = patient_in(db, in_app, setup, "America/Chicago")
    message = queue(db, invited.patient, invited.enrolment, due=at("2026-06-10T15:00"))
    db.commit()
    runner = app.test_cli_runner()
    night = runner.invoke(args=["dispatch", "--once", "--now", "2026-06-10T04:00:00Z"])
    assert night.exit_code == 0, night.output
    assert "sent 0, deferred 0" in night.output  # not due yet at 4:00 UTC
    morning = runner.invoke(args=["dispatch", "--once", "--now", "2026-06-10T16:00:00"])
    assert morning.exit_code == 0, morning.output
    assert "sent 1," in morning.output
    assert reload(db, message).status == OutboxStatus.SENT


def test_the_dispatcher_runs_batch_after_batch_until_stopped(db, in_app):
    from portal.cli_dispatch import run_dispatcher

    setup = make_clinic(db)
    now = at("2026-06-10T16:00")
    messages = [queue(db, patient_in(db, in_app, setup, "America/Chicago", n).patient, None, due=now, step=None,
                      template="code") for n in range(3)]
    stop = threading.Event()
    sent = []

    class StopAfterTwo:
        def send(self, message):
            sent.append(message.id)
            if len(sent) == 2:
                stop.set()  # as SIGTERM would: the batch in hand finishes, no new one starts

    channels = {"sms": StopAfterTwo(), "email": StopAfterTwo(), "portal": PortalInboxChannel()}
    runner = threading.Thread(target=run_dispatcher, args=(db, channels, POLICY),
                              kwargs=dict(stop=stop, once=False, batch=1, interval=3600, now=now))
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert sent == [messages[0].id, messages[1].id]
    assert reload(db, messages[2]).status == OutboxStatus.PENDING


def test_portal_dispatch_refuses_a_bad_clock():
    from portal.cli_dispatch import _parse_now

    assert _parse_now("2026-06-10T16:00:00+02:00") == at("2026-06-10T14:00")
    with pytest.raises(ValueError):
        _parse_now("tomorrow")


# --- crashes and concurrent dispatchers (real commits, separate sessions) ----------

class Committed:
    """Data committed for real, so separate sessions, threads and processes see it;
    deleted again afterwards."""

    def __init__(self, app) -> None:
        self.engine = app.extensions["portal_db"]["engine"]
        self.factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.clinic_ids: list[int] = []
        self.patient_ids: list[int] = []

    def build(self, patients: int, due: datetime, step: int | None = 0) -> list[int]:
        """One campaign message per patient (or transactional ones, step=None)."""
        with self.factory() as session:
            setup = make_clinic(session)
            self.clinic_ids.append(setup.clinic.id)
            ids = []
            for n in range(patients):
                patient = Patient(given_name=f"Crash{n}", family_name="Test", birth_date=date(1960, 1, 1),
                                  phone=f"+1773555{len(self.patient_ids):04d}", email="", time_zone="America/Chicago")
                session.add(patient)
                session.flush()
                self.patient_ids.append(patient.id)
                session.add(ChannelConsent(patient_id=patient.id, channel="sms", granted=True, source="test",
                                           updated_at=due))
                enrolment = Enrolment(campaign_id=setup.campaign.id, patient_id=patient.id,
                                      care_gap_code="annual_wellness")
                session.add(enrolment)
                session.flush()
                ids.append(queue(session, patient, enrolment, due=due, step=step).id)
            session.commit()
        return ids

    def statuses(self, ids: list[int]) -> dict[int, str]:
        with self.factory() as session:
            return dict(session.execute(select(OutboxMessage.id, OutboxMessage.status)
                                        .where(OutboxMessage.id.in_(ids))).all())

    def cleanup(self) -> None:
        with self.factory() as session:
            pids, cids = self.patient_ids, self.clinic_ids
            campaigns = select(Campaign.id).where(Campaign.clinic_id.in_(cids))
            outbox = select(OutboxMessage.id).where(OutboxMessage.patient_id.in_(pids))
            session.execute(delete(DeliveryReceipt).where(DeliveryReceipt.outbox_message_id.in_(outbox)))
            session.execute(delete(OutboxMessage).where(OutboxMessage.patient_id.in_(pids)))
            session.execute(delete(Event).where(Event.campaign_id.in_(campaigns)))
            session.execute(delete(Enrolment).where(Enrolment.campaign_id.in_(campaigns)))
            for model in (ConsentChange, ChannelConsent, InboundMessage):
                session.execute(delete(model).where(model.patient_id.in_(pids)))
            session.execute(delete(Patient).where(Patient.id.in_(pids)))
            session.execute(delete(Campaign).where(Campaign.clinic_id.in_(cids)))
            types = select(AppointmentType.id).where(AppointmentType.clinic_id.in_(cids))
            session.execute(delete(AppointmentTypeGap).where(AppointmentTypeGap.appointment_type_id.in_(types)))
            for model in (AppointmentType, Provider, Location):
                session.execute(delete(model).where(model.clinic_id.in_(cids)))
            session.execute(delete(Clinic).where(Clinic.id.in_(cids)))
            session.commit()


@pytest.fixture()
def committed(app):
    world = Committed(app)
    yield world
    world.cleanup()


class SimulatedCrash(BaseException):
    """Not an Exception: nothing in the dispatcher may catch it, like a kill."""


@pytest.mark.parametrize("point", ["claimed", "sent"])
def test_a_dispatcher_killed_between_claiming_and_marking_sent_loses_and_repeats_nothing(committed, app, point):
    now = at("2026-06-10T16:00")
    ids = committed.build(5, due=now)
    seen = []

    def crash_at_third(at_point, message):
        if at_point == point:
            seen.append(message.id)
            if len(seen) == 3:
                raise SimulatedCrash()

    with FakeSmsProvider() as provider:
        channels = build_channels({**app.config, **provider.config()})
        session = committed.factory()
        with pytest.raises(SimulatedCrash):
            dispatch_batch(session, channels, now=now, limit=10, policy=DispatchPolicy(fault_hook=crash_at_third))
        session.close()  # the process is gone: nothing it held is committed
        assert list(committed.statuses(ids).values()).count(OutboxStatus.SENT) == 2
        with committed.factory() as restarted:
            early = dispatch_batch(restarted, channels, now=now + timedelta(minutes=1), limit=10, policy=POLICY)
            assert early.sent == 0  # the dead dispatcher's lease still holds
            late = dispatch_batch(restarted, channels, now=now + POLICY.lease, limit=10, policy=POLICY)
        assert late.sent == 3
    assert set(committed.statuses(ids).values()) == {OutboxStatus.SENT}
    bodies = sorted(d["To"] for d in provider.delivered)
    assert len(bodies) == len(set(bodies)) == 5  # every patient got exactly one text
    keys = [r.headers["I-Twilio-Idempotency-Token"] for r in provider.requests]
    # Killed before the provider was called: 5 requests. Killed after it accepted: the
    # third message went twice on the wire, with the same key, and was delivered once.
    assert len(keys) == (5 if point == "claimed" else 6)
    assert len(set(keys)) == 5


def test_a_killed_dispatcher_process_is_finished_by_the_next_one_exactly_once(committed, app, database_url,
                                                                               tmp_path):
    """The real thing: `portal dispatch --once` dies with os._exit (no cleanup at all)
    after the provider accepted the second text and before it was marked sent."""
    now = at("2026-06-10T16:00")
    ids = committed.build(4, due=now)
    with FakeSmsProvider() as provider:
        env = {**os.environ, **provider.env(), "PORTAL_ENV": "testing", "PORTAL_DATABASE_URL": database_url,
               "PORTAL_SECRET_KEY": app.config["SECRET_KEY"], "PORTAL_BASE_URL": app.config["BASE_URL"],
               "PORTAL_INSTANCE_PATH": str(tmp_path)}
        command = [sys.executable, "-c", "from portal.cli import main; main()", "dispatch", "--once"]
        killed = subprocess.run(command + ["--now", now.isoformat()], env={**env, "PORTAL_DISPATCH_FAULT": "sent:2"},
                                capture_output=True, text=True, timeout=120)
        assert killed.returncode == 75, killed.stderr
        assert list(committed.statuses(ids).values()).count(OutboxStatus.SENT) == 1
        later = (now + POLICY.lease).isoformat()
        restarted = subprocess.run(command + ["--now", later], env=env, capture_output=True, text=True, timeout=120)
        assert restarted.returncode == 0, restarted.stderr
        assert "sent 3," in restarted.stdout
    assert set(committed.statuses(ids).values()) == {OutboxStatus.SENT}
    assert sorted(d["To"] for d in provider.delivered) == sorted({d["To"] for d in provider.delivered})
    assert len(provider.delivered) == 4


postgres_only = pytest.mark.skipif(not os.environ.get("PORTAL_TEST_DATABASE_URL", "").startswith("postgresql"),
                                   reason="SKIP LOCKED needs PostgreSQL; SQLite runs one dispatcher")


@postgres_only
@pytest.mark.concurrency
def test_two_dispatchers_side_by_side_never_send_twice(committed, app):
    now = at("2026-06-10T16:00")
    ids = committed.build(20, due=now, step=None)
    both_sending = threading.Barrier(2, timeout=30)
    started: set[str] = set()
    errors = []

    class WaitForTheOther:
        """Each dispatcher's first send waits until the other is sending too: both
        hold a committed claim at the same moment."""

        def __init__(self, inner) -> None:
            self.inner = inner

        def send(self, message):
            name = threading.current_thread().name
            if name not in started:
                started.add(name)
                both_sending.wait()
            return self.inner.send(message)

    with FakeSmsProvider() as provider:
        channels = build_channels({**app.config, **provider.config()})
        channels["sms"] = WaitForTheOther(channels["sms"])

        def run() -> None:
            try:
                with committed.factory() as session:
                    while dispatch_batch(session, channels, now=now, limit=5, policy=POLICY).handled:
                        pass
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, name=f"dispatcher-{n}") for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    assert started == {"dispatcher-0", "dispatcher-1"}  # both really worked
    assert set(committed.statuses(ids).values()) == {OutboxStatus.SENT}
    assert len(provider.requests) == 20  # not one request twice, even before idempotency keys
    assert len({d["To"] for d in provider.delivered}) == 20


@postgres_only
@pytest.mark.concurrency
def test_a_claim_in_progress_is_skipped_not_waited_for(committed, app):
    now = at("2026-06-10T16:00")
    ids = committed.build(6, due=now)
    recorder, channels = recording_channels()
    holder = committed.factory()
    held = [m.id for m in claim_due(holder, now, 3, POLICY)]  # rows and patients locked, not committed
    result = {}

    def other_dispatcher() -> None:
        with committed.factory() as session:
            result["report"] = dispatch_batch(session, channels, now=now, limit=10, policy=POLICY)

    thread = threading.Thread(target=other_dispatcher)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the second dispatcher waited on the first one's locks"
    assert sorted(recorder.sent) == sorted(set(ids) - set(held))
    holder.commit()
    holder.close()
    with committed.factory() as session:
        dispatch_batch(session, channels, now=now + POLICY.lease, limit=10, policy=POLICY)
    assert sorted(recorder.sent) == sorted(ids)


# --- channels that take a whole batch in one call (send_many) ----------------------

class BatchRecorder(Recorder):
    """A channel taking many messages per call; the ids in `refuse` fail at the provider."""

    def __init__(self, refuse: frozenset[int] = frozenset()) -> None:
        super().__init__()
        self.calls = 0
        self.refuse = refuse

    def send_many(self, messages: list[OutboxMessage]) -> list:
        self.calls += 1
        return [ChannelError("sms provider 503") if m.id in self.refuse else self.send(m) for m in messages]


def test_one_message_failing_in_a_batch_call_leaves_the_others_sent(db, in_app):
    setup = make_clinic(db)
    now = at("2026-06-10T16:00")
    messages = [queue(db, patient_in(db, in_app, setup, "America/Chicago", n).patient, None, due=now, step=None,
                      template="code") for n in range(3)]
    recorder = BatchRecorder(refuse=frozenset({messages[1].id}))
    report = dispatch_batch(db, {"sms": recorder, "email": recorder, "portal": PortalInboxChannel()}, now=now,
                            policy=POLICY)
    assert recorder.calls == 1 and (report.sent, report.retried) == (2, 1)
    assert [reload(db, m).status for m in messages] == [OutboxStatus.SENT, OutboxStatus.PENDING, OutboxStatus.SENT]
    failed = reload(db, messages[1])
    assert (failed.next_attempt_at, failed.claimed_until, failed.last_error) == (now + POLICY.retry_base, None,
                                                                               "sms provider 503")


def test_an_opt_out_recorded_after_the_claim_stops_the_batch_call(db, in_app):
    """The consent row changes behind the outbox's back (nothing cancels the queued
    email): only the last look before the batch call can catch it."""
    setup = make_clinic(db)
    first = patient_in(db, in_app, setup, "America/Chicago", 1)
    second = patient_in(db, in_app, setup, "America/Chicago", 2)
    now = at("2026-06-10T16:00")
    text = queue(db, first.patient, first.enrolment, due=now)
    mail = queue(db, second.patient, second.enrolment, due=now, channel="email")
    theirs = queue(db, first.patient, None, due=now, step=None, template="code", channel="email")

    def refuse_email(point, message):
        if point == "claimed" and message.id == text.id:  # both emails are claimed, not yet handed over
            db.get(ChannelConsent, (second.patient.id, "email")).granted = False
            db.commit()

    texts, mails = Recorder(), BatchRecorder()
    report = dispatch_batch(db, {"sms": texts, "email": mails, "portal": PortalInboxChannel()}, now=now,
                            policy=DispatchPolicy(fault_hook=refuse_email))
    assert (texts.sent, mails.sent, mails.calls) == ([text.id], [theirs.id], 1)
    assert report.cancelled == 1
    assert (reload(db, mail).status, reload(db, mail).last_error) == (OutboxStatus.CANCELLED, "opted out")


def test_a_dispatcher_killed_after_a_batch_call_sends_that_call_again_with_the_same_keys(committed):
    """The outcomes of a batch call are committed together, so a crash between the
    call and that commit hands the whole call over again (idempotency keys let the
    provider drop the copies), and nothing is lost."""
    now = at("2026-06-10T16:00")
    ids = committed.build(4, due=now, step=None)
    recorder = BatchRecorder()
    channels = {"sms": recorder, "email": recorder, "portal": PortalInboxChannel()}

    def crash_after_the_call(point, _message):
        if point == "sent":
            raise SimulatedCrash()

    session = committed.factory()
    with pytest.raises(SimulatedCrash):
        dispatch_batch(session, channels, now=now, limit=10, policy=DispatchPolicy(fault_hook=crash_after_the_call))
    session.close()
    assert set(committed.statuses(ids).values()) == {OutboxStatus.PENDING}
    with committed.factory() as restarted:
        assert dispatch_batch(restarted, channels, now=now + POLICY.lease, limit=10, policy=POLICY).sent == 4
    assert set(committed.statuses(ids).values()) == {OutboxStatus.SENT}
    assert sorted(recorder.sent) == sorted(ids + ids) and recorder.calls == 2
