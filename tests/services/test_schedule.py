"""Templates, blocks and week copies turned into the slots patients see.

Every date here is in 2027 in America/Chicago, where clocks spring forward on
Sunday 14 March (2:00 -> 3:00) and fall back on Sunday 7 November (2:00 -> 1:00).
Each test passes its own `now`, so nothing depends on when the suite runs.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from portal.models import Appointment, AppointmentStatus, AvailabilityBlock, Enrolment, Modality, Slot
from portal.services.availability import Window, search_slots
from portal.services.booking import book_slot, cancel_appointment, hold_slot
from portal.services.errors import InvalidInput, NotAvailable, SlotTaken
from portal.services.schedule import (add_monthly_templates, affected_bookings, block_day, block_time, copy_week,
                                      generate_slots, nth_weekday, unblock)
from tests.factories import (ZONE, add_provider, add_slots, invite_patient, make_clinic, make_scheduler,
                             make_template)

CHICAGO = ZoneInfo(ZONE)


def at(day: date, hour: int, minute: int = 0, fold: int = 0) -> datetime:
    """A Chicago wall-clock time as an aware UTC instant."""
    return datetime.combine(day, time(hour, minute), tzinfo=CHICAGO).replace(fold=fold).astimezone(timezone.utc)


NOW = at(date(2027, 3, 1), 0)
TODAY = date(2027, 3, 1)


def template_slots(db, template) -> list[Slot]:
    db.expire_all()
    return list(db.scalars(select(Slot).where(Slot.template_id == template.id).order_by(Slot.starts_at)))


def provider_slots(db, setup, provider=None, location=None) -> list[Slot]:
    db.expire_all()
    return list(db.scalars(select(Slot).where(Slot.provider_id == (provider or setup.provider).id,
                                              Slot.location_id == (location or setup.location).id)
                           .order_by(Slot.starts_at)))


def wall(slot: Slot) -> tuple[date, time]:
    local = slot.starts_at.astimezone(CHICAGO)
    return local.date(), local.time()


def assert_no_overlap(slots: list[Slot]) -> None:
    ordered = sorted(slots, key=lambda s: s.starts_at)
    for earlier, later in zip(ordered, ordered[1:]):
        assert earlier.ends_at <= later.starts_at, (earlier.starts_at, later.starts_at)


def book(db, in_app, setup, slot: Slot, name: str, now: datetime = NOW) -> Appointment:
    invited = invite_patient(db, in_app, setup, given=name, phone="", email=f"{name.lower()}@example.org")
    with in_app():
        return book_slot(db, invited.enrolment, setup.in_person, slot.id, now=now)


def slot_at(db, setup, when: datetime, location=None) -> Slot:
    db.expire_all()
    return db.scalar(select(Slot).where(Slot.provider_id == setup.provider.id, Slot.starts_at == when,
                                        Slot.location_id == (location or setup.location).id))


# -- templates across daylight-saving changes ------------------------------------------------------

def test_spring_forward_keeps_nine_oclock_at_nine_local(db):
    setup = make_clinic(db)
    template = make_template(db, setup, weekdays="0123456", valid_from=date(2027, 3, 10),
                             valid_until=date(2027, 3, 17))

    result = generate_slots(db, template, TODAY, now=NOW)

    slots = template_slots(db, template)
    assert result.created == len(slots) == 8 * 6
    assert {wall(s)[1] for s in slots} == {time(9), time(9, 30), time(10), time(10, 30), time(11), time(11, 30)}
    # The same wall time is a different UTC hour on either side of the change.
    assert slot_at(db, setup, at(date(2027, 3, 13), 9)).starts_at.hour == 15  # CST, UTC-6
    assert slot_at(db, setup, at(date(2027, 3, 15), 9)).starts_at.hour == 14  # CDT, UTC-5
    assert all(s.local_minutes == wall(s)[1].hour * 60 + wall(s)[1].minute for s in slots)
    assert all(s.local_weekday == wall(s)[0].weekday() for s in slots)
    assert all(s.ends_at - s.starts_at == timedelta(minutes=30) for s in slots)


def test_fall_back_keeps_nine_oclock_at_nine_local(db):
    setup = make_clinic(db)
    template = make_template(db, setup, start=time(9), end=time(10), valid_from=date(2027, 11, 1),
                             valid_until=date(2027, 11, 12))

    generate_slots(db, template, date(2027, 10, 25), now=at(date(2027, 10, 25), 0))

    slots = template_slots(db, template)
    assert len(slots) == 10 * 2  # two weeks of weekdays, 9:00 and 9:30
    assert {wall(s)[1] for s in slots} == {time(9), time(9, 30)}
    assert {s.starts_at.hour for s in slots if wall(s)[0] < date(2027, 11, 7)} == {14}  # CDT
    assert {s.starts_at.hour for s in slots if wall(s)[0] > date(2027, 11, 7)} == {15}  # CST


def test_a_time_that_does_not_exist_is_skipped_and_slots_never_overlap(db):
    setup = make_clinic(db)
    spring = date(2027, 3, 14)
    half_hours = make_template(db, setup, weekdays="6", start=time(0), end=time(4), modality=Modality.TELEHEALTH,
                               valid_from=spring, valid_until=spring)
    generate_slots(db, half_hours, TODAY, now=NOW)
    assert [wall(s)[1] for s in template_slots(db, half_hours)] == [
        time(0), time(0, 30), time(1), time(1, 30), time(3), time(3, 30)]  # 2:00 and 2:30 never happen

    # 45-minute slots: the 1:30 CST slot runs until 3:15 CDT, so the 3:00 start would overlap it.
    other = add_provider(db, setup)
    long_slots = make_template(db, setup, weekdays="6", start=time(0), end=time(4, 30), minutes=45,
                               provider=other, valid_from=spring, valid_until=spring)
    generate_slots(db, long_slots, TODAY, now=NOW)
    slots = template_slots(db, long_slots)
    assert [wall(s)[1] for s in slots] == [time(0), time(0, 45), time(1, 30), time(3, 45)]
    assert_no_overlap(slots)


def test_the_repeated_autumn_hour_is_used_once_at_its_first_occurrence(db):
    setup = make_clinic(db)
    autumn = date(2027, 11, 7)
    template = make_template(db, setup, weekdays="6", start=time(0), end=time(3), modality=Modality.TELEHEALTH,
                             valid_from=autumn, valid_until=autumn)
    now = at(date(2027, 11, 1), 0)

    generate_slots(db, template, date(2027, 11, 1), now=now)
    again = generate_slots(db, template, date(2027, 11, 1), now=now)

    slots = template_slots(db, template)
    assert again.created == 0
    assert [s.starts_at.strftime("%H:%M") for s in slots] == ["05:00", "05:30", "06:00", "06:30", "08:00", "08:30"]
    assert [wall(s)[1] for s in slots] == [time(0), time(0, 30), time(1), time(1, 30), time(2), time(2, 30)]
    one_am = [s for s in slots if wall(s)[1] == time(1)]
    assert len(one_am) == 1 and one_am[0].starts_at.astimezone(CHICAGO).utcoffset() == timedelta(hours=-5)


# -- idempotency and the date window -----------------------------------------------------------------

def test_regenerating_never_duplicates_and_the_horizon_rolls_forward(db):
    setup = make_clinic(db)
    template = make_template(db, setup, valid_from=date(2027, 1, 1), valid_until=date(2027, 12, 31))

    first = generate_slots(db, template, TODAY, horizon_days=13, now=NOW)  # Mon 1 to Sun 14 March
    second = generate_slots(db, template, TODAY, horizon_days=13, now=NOW)
    count = len(template_slots(db, template))
    assert (first.created, count) == (10 * 6, 10 * 6)
    assert (second.created, second.removed, second.updated, second.conflicts) == (0, 0, 0, [])
    assert db.scalar(select(func.count(func.distinct(Slot.starts_at))).where(Slot.template_id == template.id)) == count

    # A day later the window reaches Monday 15 March: one more day of slots, nothing else.
    rolled = generate_slots(db, template, TODAY + timedelta(days=1), horizon_days=13, now=NOW + timedelta(days=1))
    assert (rolled.created, rolled.removed) == (6, 0)
    assert min(wall(s)[0] for s in template_slots(db, template)) == date(2027, 3, 1)  # past days left as they were


def test_window_is_clipped_to_today_the_horizon_and_the_clock(db):
    setup = make_clinic(db)
    template = make_template(db, setup, weekdays="0123456", valid_from=date(2027, 2, 1),
                             valid_until=date(2027, 12, 31))
    now = at(TODAY, 10, 15)  # Monday 1 March, mid-morning

    generate_slots(db, template, TODAY, horizon_days=2, now=now)

    days = sorted({wall(s)[0] for s in template_slots(db, template)})
    assert days == [date(2027, 3, 1), date(2027, 3, 2), date(2027, 3, 3)]
    assert min(wall(s)[1] for s in template_slots(db, template) if wall(s)[0] == TODAY) == time(10, 30)


def test_a_slot_the_provider_already_has_is_never_overlapped(db):
    setup = make_clinic(db)
    day = date(2027, 3, 3)
    manual = add_slots(db, setup, day, start=time(9, 15), end=time(9, 45))  # a hand-made 9:15
    template = make_template(db, setup, weekdays="2", valid_from=day, valid_until=day)

    generate_slots(db, template, TODAY, now=NOW)

    slots = provider_slots(db, setup)
    assert [wall(s)[1] for s in slots] == [time(9, 15), time(10), time(10, 30), time(11), time(11, 30)]
    assert_no_overlap(slots)
    assert slots[0].id == manual[0].id and slots[0].template_id is None


# -- edits never drop a booking -------------------------------------------------------------------

def test_an_edit_lists_and_keeps_the_booked_slot_and_removes_the_open_ones(db, in_app):
    setup = make_clinic(db)
    template = make_template(db, setup, valid_from=date(2027, 3, 8), valid_until=date(2027, 3, 12))
    generate_slots(db, template, TODAY, now=NOW)
    booked_slot = slot_at(db, setup, at(date(2027, 3, 10), 11))
    appointment = book(db, in_app, setup, booked_slot, "Maria")

    proposed = affected_bookings(db, template, {"end_time": time(11)}, now=NOW)
    assert [a.id for a in proposed] == [appointment.id]
    assert len(template_slots(db, template)) == 30  # looking changes nothing

    template.end_time = time(11)
    result = generate_slots(db, template, TODAY, now=NOW)

    assert result.removed == 5 * 2 - 1
    assert [a.id for a in result.conflicts] == [appointment.id]
    assert [s.id for s in result.kept] == [booked_slot.id]
    db.expire_all()
    kept = db.get(Slot, booked_slot.id)
    assert (kept.booked_count, kept.starts_at, kept.blocked) == (1, at(date(2027, 3, 10), 11), True)
    assert db.get(Appointment, appointment.id).status == AppointmentStatus.BOOKED
    assert max(wall(s)[1] for s in template_slots(db, template) if s.id != kept.id) == time(10, 30)

    # Still reported on the next run, until someone moves the visit.
    assert [a.id for a in generate_slots(db, template, TODAY, now=NOW).conflicts] == [appointment.id]

    # Undoing the edit brings every slot back and the kept one reopens where it was.
    template.end_time = time(12)
    undone = generate_slots(db, template, TODAY, now=NOW)
    assert (undone.created, undone.conflicts) == (9, [])
    assert len(template_slots(db, template)) == 30
    assert db.get(Slot, booked_slot.id).blocked is False


def test_deactivating_keeps_booked_and_held_slots_and_a_late_confirmation_fails(db, in_app):
    setup = make_clinic(db)
    template = make_template(db, setup, weekdays="1", valid_from=date(2027, 3, 9), valid_until=date(2027, 3, 9))
    generate_slots(db, template, TODAY, now=NOW)
    nine, ten = slot_at(db, setup, at(date(2027, 3, 9), 9)), slot_at(db, setup, at(date(2027, 3, 9), 10))
    appointment = book(db, in_app, setup, nine, "Maria")
    holder = invite_patient(db, in_app, setup, given="Ana", phone="", email="ana@example.org")
    hold_slot(db, holder.enrolment, setup.in_person, ten.id, now=NOW)

    assert [a.id for a in affected_bookings(db, template, {"active": False}, now=NOW)] == [appointment.id]
    template.active = False
    result = generate_slots(db, template, TODAY, now=NOW)

    assert (result.created, result.removed) == (0, 4)
    assert {s.id for s in result.kept} == {nine.id, ten.id}
    assert [a.id for a in result.conflicts] == [appointment.id]
    with pytest.raises(SlotTaken), in_app():  # mid-confirmation: "someone else got it", pick another time
        book_slot(db, holder.enrolment, setup.in_person, ten.id, now=NOW)

    # Once the hold has run out the empty slot goes; the booked one never does.
    later = NOW + timedelta(hours=1)
    assert generate_slots(db, template, TODAY, now=later).removed == 1
    assert [s.id for s in template_slots(db, template)] == [nine.id]


def test_an_open_slot_with_a_cancelled_visit_is_closed_not_deleted(db, in_app):
    setup = make_clinic(db)
    template = make_template(db, setup, weekdays="1", valid_from=date(2027, 3, 9), valid_until=date(2027, 3, 9))
    generate_slots(db, template, TODAY, now=NOW)
    nine = slot_at(db, setup, at(date(2027, 3, 9), 9))
    appointment = book(db, in_app, setup, nine, "Maria")
    with in_app():
        cancel_appointment(db, db.get(Enrolment, appointment.enrolment_id), now=NOW)

    template.start_time = time(10)
    result = generate_slots(db, template, TODAY, now=NOW)

    assert (result.removed, result.conflicts) == (1, [])  # 9:30 goes; 9:00 has history
    db.expire_all()
    assert db.get(Slot, nine.id).blocked is True
    assert db.get(Appointment, appointment.id).slot_id == nine.id


def test_capacity_follows_the_template_but_never_below_booked_seats(db, in_app):
    setup = make_clinic(db)
    template = make_template(db, setup, weekdays="1", start=time(9), end=time(10), capacity=3,
                             valid_from=date(2027, 3, 9), valid_until=date(2027, 3, 9))
    generate_slots(db, template, TODAY, now=NOW)
    group = slot_at(db, setup, at(date(2027, 3, 9), 9))
    book(db, in_app, setup, group, "Maria")
    book(db, in_app, setup, group, "Ana")

    template.capacity = 1
    result = generate_slots(db, template, TODAY, now=NOW)

    db.expire_all()
    assert result.conflicts == []
    assert db.get(Slot, group.id).capacity == 2  # full: no third seat sold, nobody squeezed out
    assert slot_at(db, setup, at(date(2027, 3, 9), 9, 30)).capacity == 1
    assert result.updated == 2


def test_a_modality_change_converts_open_slots_and_lists_in_person_bookings(db, in_app):
    setup = make_clinic(db)
    template = make_template(db, setup, weekdays="1", start=time(9), end=time(10),
                             valid_from=date(2027, 3, 9), valid_until=date(2027, 3, 9))
    generate_slots(db, template, TODAY, now=NOW)
    nine, half_past = slot_at(db, setup, at(date(2027, 3, 9), 9)), slot_at(db, setup, at(date(2027, 3, 9), 9, 30))
    appointment = book(db, in_app, setup, nine, "Maria")

    template.modality = Modality.TELEHEALTH
    result = generate_slots(db, template, TODAY, now=NOW)

    db.expire_all()
    assert (result.created, result.removed, [a.id for a in result.conflicts]) == (0, 0, [appointment.id])
    assert db.get(Slot, half_past.id).modality == Modality.TELEHEALTH
    assert db.get(Slot, nine.id).modality == Modality.IN_PERSON


def test_moving_a_template_to_another_location_keeps_the_booking_where_it_is(db, in_app):
    setup = make_clinic(db)
    template = make_template(db, setup, weekdays="1", start=time(9), end=time(10),
                             valid_from=date(2027, 3, 9), valid_until=date(2027, 3, 9))
    generate_slots(db, template, TODAY, now=NOW)
    appointment = book(db, in_app, setup, slot_at(db, setup, at(date(2027, 3, 9), 9)), "Maria")

    template.location_id = setup.other_location.id
    result = generate_slots(db, template, TODAY, now=NOW)

    assert (result.created, result.removed, [a.id for a in result.conflicts]) == (2, 1, [appointment.id])
    assert [wall(s)[1] for s in provider_slots(db, setup, location=setup.other_location)] == [time(9), time(9, 30)]
    assert [s.booked_count for s in provider_slots(db, setup)] == [1]


def test_affected_bookings_refuses_unknown_fields_and_broken_edits(db, in_app):
    setup = make_clinic(db)
    template = make_template(db, setup, valid_from=date(2027, 3, 8), valid_until=date(2027, 3, 12))
    generate_slots(db, template, TODAY, now=NOW)
    book(db, in_app, setup, slot_at(db, setup, at(date(2027, 3, 8), 9)), "Maria")

    assert affected_bookings(db, template, {"capacity": 4}, now=NOW) == []
    assert affected_bookings(db, template, {"weekdays": "1234"}, now=NOW) != []
    with pytest.raises(InvalidInput):
        affected_bookings(db, template, {"starts": time(8)}, now=NOW)
    with pytest.raises(InvalidInput):
        affected_bookings(db, template, {"end_time": time(8)}, now=NOW)


@pytest.mark.parametrize("change", [
    {"end_time": time(9)}, {"weekdays": "7"}, {"weekdays": "11"}, {"weekdays": ""}, {"capacity": 0},
    {"slot_minutes": 2}, {"slot_minutes": 240}, {"modality": "carrier pigeon"},
    {"valid_until": date(2027, 2, 1)}, {"slot_minutes": "30"},
])
def test_a_broken_template_makes_no_slots(db, change):
    setup = make_clinic(db)
    template = make_template(db, setup, valid_from=date(2027, 3, 8), valid_until=date(2027, 3, 12))
    for name, value in change.items():
        setattr(template, name, value)
    with pytest.raises(InvalidInput):
        generate_slots(db, template, TODAY, now=NOW)
    assert template_slots(db, template) == []


def test_a_provider_from_another_clinic_is_refused(db):
    setup, elsewhere = make_clinic(db), make_clinic(db)
    template = make_template(db, setup, provider=elsewhere.provider, valid_from=date(2027, 3, 8),
                             valid_until=date(2027, 3, 12))
    with pytest.raises(NotAvailable):
        generate_slots(db, template, TODAY, now=NOW)


# -- the patterns the clinic asked for --------------------------------------------------------------

def test_tuesday_thursday_evenings_show_up_as_evening_times(db, in_app):
    setup = make_clinic(db)
    template = make_template(db, setup, weekdays="13", start=time(17), end=time(19),
                             valid_from=date(2027, 3, 8), valid_until=date(2027, 3, 21))
    generate_slots(db, template, TODAY, now=NOW)

    slots = template_slots(db, template)
    assert {wall(s)[0] for s in slots} == {date(2027, 3, 9), date(2027, 3, 11), date(2027, 3, 16), date(2027, 3, 18)}
    assert sorted({wall(s)[1] for s in slots}) == [time(17), time(17, 30), time(18), time(18, 30)]
    patient = invite_patient(db, in_app, setup)
    page = search_slots(db, patient.enrolment, setup.in_person, setup.location, Window.EVENINGS_WEEKENDS,
                        limit=50, now=NOW)
    assert [s.id for s in page.slots] == [s.id for s in slots]


def test_first_saturday_mornings_are_one_template_per_month(db):
    setup = make_clinic(db)
    templates = add_monthly_templates(db, provider_id=setup.provider.id, location_id=setup.location.id,
                                      modality=Modality.IN_PERSON, weekday=5, nth=1, start_time=time(9),
                                      end_time=time(12), slot_minutes=30, first_month=date(2027, 3, 1), months=3)
    for template in templates:
        generate_slots(db, template, TODAY, now=NOW)

    slots = provider_slots(db, setup)
    assert sorted({wall(s)[0] for s in slots}) == [date(2027, 3, 6), date(2027, 4, 3), date(2027, 5, 1)]
    assert len(slots) == 3 * 6 and {wall(s)[1] for s in slots} == {time(h, m) for h in (9, 10, 11) for m in (0, 30)}
    assert nth_weekday(2027, 5, 5, -1) == date(2027, 5, 29)
    assert nth_weekday(2027, 2, 5, 5) is None
    with pytest.raises(InvalidInput):
        add_monthly_templates(db, provider_id=setup.provider.id, location_id=setup.location.id,
                              modality=Modality.IN_PERSON, weekday=7, nth=1, start_time=time(9), end_time=time(12),
                              slot_minutes=30, first_month=date(2027, 3, 1), months=3)


# -- blocks ---------------------------------------------------------------------------------------

def test_blocking_an_afternoon_closes_slots_and_lists_bookings_without_cancelling(db, in_app):
    setup = make_clinic(db)
    staff = make_scheduler(db)
    second = add_provider(db, setup)
    day = date(2027, 3, 10)
    for provider in (setup.provider, second):
        template = make_template(db, setup, weekdays="2", start=time(12), end=time(16), valid_from=day,
                                 valid_until=day, provider=provider)
        generate_slots(db, template, TODAY, now=NOW)
    appointment = book(db, in_app, setup, slot_at(db, setup, at(day, 13, 30)), "Maria")

    mine = block_time(db, location=setup.location, provider=setup.provider, starts_at=at(day, 13),
                      ends_at=at(day, 15), reason="Staff meeting", staff_id=staff.id)

    assert mine.slots_blocked == 4  # 13:00-14:30 for this provider only
    assert [a.id for a in mine.bookings] == [appointment.id]
    db.expire_all()
    assert db.get(Appointment, appointment.id).status == AppointmentStatus.BOOKED
    assert [s.blocked for s in provider_slots(db, setup, provider=second)] == [False] * 8
    patient = invite_patient(db, in_app, setup, given="Ana", phone="", email="ana@example.org")
    offered = search_slots(db, patient.enrolment, setup.in_person, setup.location, limit=50, now=NOW).slots
    assert not any(s.provider_id == setup.provider.id and at(day, 13) <= s.starts_at < at(day, 15) for s in offered)

    everyone = block_time(db, location=setup.location, provider=None, starts_at=at(day, 14),
                          ends_at=at(day, 16), reason="Closed", staff_id=staff.id)
    assert everyone.slots_blocked == 2 + 4  # this provider's 15:00 and 15:30, and the second one's four


def test_slots_generated_inside_a_block_are_created_blocked_and_reopen_on_unblock(db):
    setup = make_clinic(db)
    staff = make_scheduler(db)
    vacation = block_day(db, location=setup.location, provider=setup.provider, day=date(2027, 3, 9),
                         reason="Vacation", staff_id=staff.id)
    template = make_template(db, setup, valid_from=date(2027, 3, 8), valid_until=date(2027, 3, 12))

    generate_slots(db, template, TODAY, now=NOW)
    blocked = [s for s in template_slots(db, template) if s.blocked]
    assert {wall(s)[0] for s in blocked} == {date(2027, 3, 9)} and len(blocked) == 6
    assert generate_slots(db, template, TODAY, now=NOW).updated == 0  # stays blocked, nothing to redo

    assert unblock(db, vacation.block) == 6
    assert not any(s.blocked for s in template_slots(db, template))
    assert db.scalar(select(func.count()).select_from(AvailabilityBlock)) == 0


def test_unblock_leaves_what_another_block_still_covers(db):
    setup = make_clinic(db)
    staff = make_scheduler(db)
    day = date(2027, 3, 9)
    template = make_template(db, setup, weekdays="1", valid_from=day, valid_until=day)
    generate_slots(db, template, TODAY, now=NOW)
    morning = block_time(db, location=setup.location, provider=setup.provider, starts_at=at(day, 9),
                         ends_at=at(day, 12), reason="Training", staff_id=staff.id)
    clinic_closed = block_time(db, location=setup.location, provider=None, starts_at=at(day, 11, 15),
                               ends_at=at(day, 12), reason="Fire drill", staff_id=staff.id)
    assert clinic_closed.slots_blocked == 0  # already blocked

    assert unblock(db, morning.block) == 4
    assert [wall(s)[1] for s in template_slots(db, template) if s.blocked] == [time(11), time(11, 30)]


def test_a_day_block_follows_the_local_day_on_dst_days(db):
    setup = make_clinic(db)
    staff = make_scheduler(db)
    spring = block_day(db, location=setup.location, provider=None, day=date(2027, 3, 14), reason="", staff_id=staff.id)
    autumn = block_day(db, location=setup.location, provider=None, day=date(2027, 11, 7), reason="", staff_id=staff.id)
    assert spring.block.ends_at - spring.block.starts_at == timedelta(hours=23)
    assert autumn.block.ends_at - autumn.block.starts_at == timedelta(hours=25)
    assert autumn.block.starts_at == at(date(2027, 11, 7), 0)


@pytest.mark.parametrize("starts_at, ends_at, reason", [
    (at(date(2027, 3, 9), 12), at(date(2027, 3, 9), 9), "reversed"),
    (datetime(2027, 3, 9, 9), datetime(2027, 3, 9, 12), "naive"),
    (at(date(2027, 3, 9), 9), at(date(2027, 3, 9), 12), "x" * 201),
])
def test_a_bad_block_is_refused_and_nothing_is_written(db, starts_at, ends_at, reason):
    setup = make_clinic(db)
    staff = make_scheduler(db)
    with pytest.raises(InvalidInput):
        block_time(db, location=setup.location, provider=None, starts_at=starts_at, ends_at=ends_at, reason=reason,
                   staff_id=staff.id)
    assert db.scalar(select(func.count()).select_from(AvailabilityBlock)) == 0


# -- copying a week -------------------------------------------------------------------------------

def test_copy_week_keeps_local_times_across_the_spring_change_and_skips_what_exists(db):
    setup = make_clinic(db)
    staff = make_scheduler(db)
    source, target = date(2027, 3, 8), date(2027, 3, 15)  # CST week, CDT week
    add_slots(db, setup, source, start=time(9), end=time(11))                          # Monday morning
    add_slots(db, setup, source + timedelta(days=1), start=time(17), end=time(19))     # Tuesday evening
    add_slots(db, setup, source + timedelta(days=4), start=time(9), end=time(10), capacity=4,
              modality=Modality.TELEHEALTH)                                            # Friday group video
    lunch = add_slots(db, setup, source + timedelta(days=2), start=time(12), end=time(13))
    block_time(db, location=setup.location, provider=None, starts_at=lunch[0].starts_at, ends_at=lunch[-1].ends_at,
               reason="Closed", staff_id=staff.id)                                     # blocked: not copied
    add_slots(db, setup, target, start=time(9, 30), end=time(10))                      # already there

    created = copy_week(db, provider_id=setup.provider.id, location_id=setup.location.id, source_monday=source,
                        target_monday=target, now=NOW)

    copied = [s for s in provider_slots(db, setup) if wall(s)[0] >= target and s.template_id is None]
    expected = {(target, time(9)), (target, time(9, 30)), (target, time(10)), (target, time(10, 30)),
                (target + timedelta(days=1), time(17)), (target + timedelta(days=1), time(17, 30)),
                (target + timedelta(days=1), time(18)), (target + timedelta(days=1), time(18, 30)),
                (target + timedelta(days=4), time(9)), (target + timedelta(days=4), time(9, 30))}
    assert created == len(expected) - 1
    assert {wall(s) for s in copied} == expected
    assert slot_at(db, setup, at(target, 9)).starts_at.hour == 14  # 9:00 CDT, where the source was 15:00 UTC
    friday = slot_at(db, setup, at(target + timedelta(days=4), 9))
    assert (friday.capacity, friday.modality, friday.booked_count) == (4, Modality.TELEHEALTH, 0)
    assert_no_overlap(provider_slots(db, setup))
    assert copy_week(db, provider_id=setup.provider.id, location_id=setup.location.id, source_monday=source,
                     target_monday=target, now=NOW) == 0


def test_copy_week_skips_a_time_the_target_day_does_not_have(db):
    setup = make_clinic(db)
    source, target = date(2027, 3, 1), date(2027, 3, 8)  # Sunday 7th copies onto Sunday 14th
    add_slots(db, setup, date(2027, 3, 7), start=time(1), end=time(4), modality=Modality.TELEHEALTH)

    assert copy_week(db, provider_id=setup.provider.id, location_id=setup.location.id, source_monday=source,
                     target_monday=target, now=NOW) == 4
    assert [wall(s)[1] for s in provider_slots(db, setup) if wall(s)[0] == date(2027, 3, 14)] == [
        time(1), time(1, 30), time(3), time(3, 30)]


def test_copy_week_refuses_days_that_are_not_mondays(db):
    setup = make_clinic(db)
    with pytest.raises(InvalidInput):
        copy_week(db, provider_id=setup.provider.id, location_id=setup.location.id,
                  source_monday=date(2027, 3, 9), target_monday=date(2027, 3, 15), now=NOW)
    with pytest.raises(InvalidInput):
        copy_week(db, provider_id=setup.provider.id, location_id=setup.location.id,
                  source_monday=date(2027, 3, 8), target_monday=date(2027, 3, 8), now=NOW)
