"""Buffers: an appointment type may keep time free before and after its visits (check-in,
cleaning a room). A booking then takes its slot plus its type's buffers from the provider,
and no two bookings' times may overlap: the times a buffer swallows are not offered, and
booking one anyway is refused as taken.

One provider with six 30-minute times (9:00-12:00, America/Chicago) three days ahead, and a
second provider with the same morning, so a clash is shown to be the provider's own."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import time
from zoneinfo import ZoneInfo

import pytest

from portal.models import AppointmentType, AppointmentTypeGap, Modality, Slot
from portal.services.booking import book_slot, cancel_appointment, hold_slot
from portal.services.errors import SlotTaken
from portal.services.availability import add_slots_for_day, search_slots
from tests.factories import ZONE, add_provider, add_slots, future_day, invite_patient, make_clinic


@dataclass
class Morning:
    setup: object
    mine: list[Slot]  # the first provider's times, 9:00 to 11:30
    theirs: list[Slot]  # the second provider's

    def wall(self, slots: list[Slot]) -> list[str]:
        """Each time as provider initial + local wall time, e.g. 'A 9:30'."""
        names = {self.mine[0].provider_id: "A", self.theirs[0].provider_id: "B"}
        return [f"{names[s.provider_id]} {s.starts_at.astimezone(ZoneInfo(ZONE)):%-H:%M}" for s in slots]


@pytest.fixture(autouse=True)
def _in_request(in_app):
    """Booking queues a confirmation, rendered with the app's templates."""
    with in_app():
        yield


@pytest.fixture()
def morning(db) -> Morning:
    setup = make_clinic(db)
    day = future_day(3)
    mine = add_slots(db, setup, day, start=time(9), end=time(12))
    second = add_provider(db, setup)
    theirs = add_slots_for_day(db, location=setup.location, provider_id=second.id, modality=Modality.IN_PERSON,
                               day=day, start=time(9), end=time(12), minutes=30)
    return Morning(setup, mine, theirs)


def patient(db, in_app, setup, number: int):
    return invite_patient(db, in_app, setup, given=f"Patient{number}", phone=f"+1312555{number:04d}",
                          email=f"p{number}@example.org").enrolment


def offered(db, morning: Morning, enrolment, appointment_type, limit: int = 12) -> list[str]:
    page = search_slots(db, enrolment, appointment_type, morning.setup.location, limit=limit)
    return morning.wall(page.slots)


def test_a_buffer_after_a_booked_visit_takes_the_next_time_of_that_provider_only(db, in_app, morning):
    visit = morning.setup.in_person
    visit.buffer_after_minutes = 15  # e.g. cleaning the room
    first, second = patient(db, in_app, morning.setup, 1), patient(db, in_app, morning.setup, 2)
    book_slot(db, first, visit, morning.mine[0].id)

    shown = offered(db, morning, second, visit)
    assert "A 9:00" not in shown and "A 9:30" not in shown  # booked; inside 9:00-9:45
    assert "A 10:00" in shown and "B 9:30" in shown and "B 9:00" in shown
    with pytest.raises(SlotTaken):
        hold_slot(db, second, visit, morning.mine[1].id)
    with pytest.raises(SlotTaken):
        book_slot(db, second, visit, morning.mine[1].id)
    book_slot(db, second, visit, morning.mine[2].id)  # 10:00 starts as 9:45 ends


def test_the_buffer_of_the_type_being_booked_counts_too(db, in_app, morning):
    plain = morning.setup.in_person  # no buffers
    check_in = AppointmentType(clinic_id=morning.setup.clinic.id, code="check-in-first", name={"en": "Physical"},
                               what_to_bring={}, modality=Modality.IN_PERSON, duration_minutes=30,
                               buffer_before_minutes=15, gaps=[AppointmentTypeGap(care_gap_code="annual_wellness")])
    db.add(check_in)
    db.flush()
    first, second = patient(db, in_app, morning.setup, 1), patient(db, in_app, morning.setup, 2)
    book_slot(db, first, plain, morning.mine[0].id)  # 9:00-9:30

    assert "A 9:30" in offered(db, morning, second, plain)
    shown = offered(db, morning, second, check_in)  # 9:30 would need 9:15-10:00
    assert "A 9:30" not in shown and "A 10:00" in shown
    with pytest.raises(SlotTaken):
        book_slot(db, second, check_in, morning.mine[1].id)


def test_cancelling_gives_the_buffered_time_back_and_a_patient_may_move_next_to_their_own_visit(db, in_app,
                                                                                              morning):
    visit = morning.setup.in_person
    visit.buffer_after_minutes = 15
    first, second = patient(db, in_app, morning.setup, 1), patient(db, in_app, morning.setup, 2)
    book_slot(db, first, visit, morning.mine[0].id)
    hold_slot(db, first, visit, morning.mine[1].id)  # moving to 9:30: their own 9:00 visit is not in the way
    moved = book_slot(db, first, visit, morning.mine[1].id)
    assert moved.slot_id == morning.mine[1].id
    shown = offered(db, morning, second, visit)
    # 9:00 is free again, but its own 15 minutes after would run into the 9:30 visit; 10:00 is inside 9:30-10:15
    assert "A 9:00" not in shown and "A 10:00" not in shown and "A 10:30" in shown
    cancel_appointment(db, first)
    assert {"A 9:00", "A 9:30", "A 10:00"} <= set(offered(db, morning, second, visit))


def test_a_page_of_times_fills_up_past_the_times_buffers_swallow(db, in_app, morning):
    visit = morning.setup.in_person
    visit.buffer_after_minutes = 30
    booked = [patient(db, in_app, morning.setup, n) for n in range(3)]
    for enrolment, slot in zip(booked, morning.mine[0::2]):  # 9:00, 10:00, 11:00: each swallows the next half hour
        book_slot(db, enrolment, visit, slot.id)
    later = add_slots(db, morning.setup, future_day(4), start=time(9), end=time(10))
    seeker = patient(db, in_app, morning.setup, 9)

    page = search_slots(db, seeker, visit, morning.setup.location, limit=2)  # candidates come 3 at a time
    assert morning.wall(page.slots) == ["B 9:00", "B 9:30"] and page.has_more
    everything = search_slots(db, seeker, visit, morning.setup.location).slots
    assert not {s.id for s in everything} & {s.id for s in morning.mine}  # all of A's morning is booked or swallowed
    assert [s.id for s in everything] == [s.id for s in morning.theirs] + [s.id for s in later]
    after_b = search_slots(db, seeker, visit, morning.setup.location, limit=2, after_slot_id=morning.theirs[-1].id)
    assert [s.id for s in after_b.slots] == [s.id for s in later] and not after_b.has_more


def test_a_search_stops_reading_after_its_rounds_and_offers_later_times_only_when_it_has_shown_some(
        db, in_app, morning, monkeypatch):
    """A page whose candidates are all swallowed, round after round, shows no times and no
    "later times" link (which continues after the last time shown), instead of failing."""
    from portal.services import availability

    visit = morning.setup.in_person
    visit.buffer_after_minutes = 30
    people = iter(patient(db, in_app, morning.setup, n) for n in range(4))
    for slot in morning.mine[0::2]:  # 9:00, 10:00, 11:00, each swallowing the next half hour
        book_slot(db, next(people), visit, slot.id)
    for slot in morning.theirs:
        slot.blocked = True  # the second provider is away
    add_slots(db, morning.setup, future_day(4), start=time(9), end=time(10))
    seeker = next(people)
    monkeypatch.setattr(availability, "BUFFER_ROUNDS", 1)

    first = search_slots(db, seeker, visit, morning.setup.location, limit=1)  # reads A 9:30 and A 10:30 only
    assert first.slots == [] and not first.has_more
    monkeypatch.setattr(availability, "BUFFER_ROUNDS", 3)
    later = search_slots(db, seeker, visit, morning.setup.location, limit=1)
    assert [s.starts_at.date() for s in later.slots] == [future_day(4)] and later.has_more


def test_the_front_desk_schedule_shows_a_time_a_buffer_takes_as_kept_free(db, in_app, morning):
    from portal.services.day_view import schedule_for

    morning.setup.in_person.buffer_after_minutes = 15
    book_slot(db, patient(db, in_app, morning.setup, 1), morning.setup.in_person, morning.mine[0].id)
    states = {morning.wall([row.slot])[0]: row.state for row in schedule_for(db, morning.setup.location, future_day(3))}
    assert (states["A 9:00"], states["A 9:30"], states["A 10:00"]) == ("booked", "kept_free", "open")
    assert states["B 9:30"] == "open"
