"""What a patient may book: appointment types for their care gap, locations, and
the soonest open times, one indexed query per page."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, exists, or_, select
from sqlalchemy.orm import Session, joinedload

from portal.models import (Appointment, AppointmentStatus, AppointmentType, AppointmentTypeGap, Enrolment, Location,
                           Modality, Slot, utcnow)
from portal.services.errors import NotAvailable

MIN_NOTICE = timedelta(hours=2)  # no booking a time the clinic can't prepare for
BOOKING_HORIZON = timedelta(days=90)
EVENING_STARTS = time(17, 0)
MAX_BUFFER_MINUTES = 240  # the longest buffer a type may keep (the console refuses more)
BUFFER_ROUNDS = 10  # pages of candidates a search reads, at most, to fill one page around buffered bookings


class Window:
    ANY = "any"
    THIS_WEEK = "week"
    EVENINGS_WEEKENDS = "evening"
    ALL = (ANY, THIS_WEEK, EVENINGS_WEEKENDS)


def appointment_types_for(session: Session, enrolment: Enrolment) -> list[AppointmentType]:
    """The campaign clinic's types that close the enrolment's care gap, in-person first."""
    return list(session.scalars(
        select(AppointmentType)
        .join(AppointmentTypeGap)
        .where(AppointmentTypeGap.care_gap_code == enrolment.care_gap_code, AppointmentType.retired.is_(False),
               AppointmentType.clinic_id == enrolment.campaign.clinic_id)
        .order_by(case((AppointmentType.service == "lab", 0), else_=1), AppointmentType.modality, AppointmentType.id)
    ))


def follow_up_types(session: Session, enrolment: Enrolment) -> list[AppointmentType]:
    """Provider visits that can follow a lab visit for the same care gap."""
    return [t for t in appointment_types_for(session, enrolment) if t.service == "visit"]


def appointment_type_for(session: Session, enrolment: Enrolment, type_id: int | None) -> AppointmentType:
    """The chosen type, if it closes this enrolment's gap; otherwise NotAvailable."""
    for appointment_type in appointment_types_for(session, enrolment):
        if appointment_type.id == type_id:
            return appointment_type
    raise NotAvailable()


def open_locations(session: Session, clinic_id: int) -> list[Location]:
    return list(session.scalars(select(Location).where(Location.clinic_id == clinic_id, Location.retired.is_(False))
                                .order_by(Location.name)))


def all_locations(session: Session) -> list[Location]:
    """Every open location, for the console."""
    return list(session.scalars(select(Location).where(Location.retired.is_(False)).order_by(Location.name)))


def location_for(session: Session, clinic_id: int, location_id: int | None) -> Location:
    for location in open_locations(session, clinic_id):
        if location.id == location_id:
            return location
    raise NotAvailable()


def slot_is_free(now: datetime, enrolment_id: int):
    """SQL condition: the slot has a seat nobody else is holding right now."""
    return and_(
        Slot.blocked.is_(False),
        Slot.booked_count < Slot.capacity,
        or_(Slot.held_until.is_(None), Slot.held_until <= now, Slot.held_by_enrolment_id == enrolment_id,
            Slot.capacity - Slot.booked_count > 1),
    )


def booking_window(appointment_type: AppointmentType, now: datetime) -> tuple[datetime, datetime]:
    """How soon and how far ahead patients may book this type."""
    notice = max(MIN_NOTICE, timedelta(hours=appointment_type.min_notice_hours))
    return now + notice, now + min(BOOKING_HORIZON, timedelta(days=appointment_type.max_days_ahead))


@dataclass
class SlotPage:
    slots: list[Slot]
    has_more: bool


def search_slots(session: Session, enrolment: Enrolment, appointment_type: AppointmentType,
                 location: Location | None, window: str = Window.ANY, after_slot_id: int | None = None,
                 limit: int = 12, between: tuple[datetime, datetime] | None = None,
                 now: datetime | None = None) -> SlotPage:
    """The soonest open times for a type (and location, for in-person), oldest first,
    within the type's booking notice and horizon (and `between`, for a follow-up).

    Paging is by keyset: `after_slot_id` continues after that slot's time, so every
    page is one index range scan however far the patient pages.
    """
    now = now or utcnow()
    earliest, latest = booking_window(appointment_type, now)
    if window == Window.THIS_WEEK:
        latest = min(latest, now + timedelta(days=7))
    if between is not None:
        earliest, latest = max(earliest, between[0]), min(latest, between[1])
    query = (
        select(Slot)
        .options(joinedload(Slot.location), joinedload(Slot.provider))
        .where(Slot.modality == appointment_type.modality, Slot.starts_at >= earliest, Slot.starts_at < latest,
               slot_is_free(now, enrolment.id))
        .order_by(Slot.starts_at, Slot.id)
        .limit(limit + 1)
    )
    if location is not None:
        query = query.where(Slot.location_id == location.id)
    else:  # telehealth: any location of the type's own clinic
        query = query.where(Slot.location_id.in_(select(Location.id).where(
            Location.clinic_id == appointment_type.clinic_id)))
    if window == Window.EVENINGS_WEEKENDS:
        query = query.where(or_(Slot.local_weekday >= 5, Slot.local_minutes >= EVENING_STARTS.hour * 60))
    if after_slot_id is not None:
        after = select(Slot.starts_at).where(Slot.id == after_slot_id).scalar_subquery()
        query = query.where(or_(Slot.starts_at > after, and_(Slot.starts_at == after, Slot.id > after_slot_id)))
    rows = list(session.scalars(query).unique())
    if clinic_uses_buffers(session, appointment_type.clinic_id):
        return _page_clear_of_buffers(session, query, rows, appointment_type, limit)
    return SlotPage(slots=rows[:limit], has_more=len(rows) > limit)


def _page_clear_of_buffers(session: Session, query, rows: list[Slot], appointment_type: AppointmentType,
                           limit: int) -> SlotPage:
    """Leave out the times that buffers make unbookable, reading further candidates (by the
    same keyset) until the page is full, the times run out or BUFFER_ROUNDS pages were read."""
    kept: list[Slot] = []
    for _round in range(BUFFER_ROUNDS):
        clashing = buffer_clashes(session, rows, appointment_type.buffer_before_minutes,
                                  appointment_type.buffer_after_minutes)
        kept += [slot for slot in rows if slot.id not in clashing]
        if len(kept) > limit or len(rows) <= limit:
            return SlotPage(slots=kept[:limit], has_more=len(kept) > limit)
        last = rows[-1]
        rows = list(session.scalars(query.where(or_(Slot.starts_at > last.starts_at,
                                                    and_(Slot.starts_at == last.starts_at, Slot.id > last.id))))
                    .unique())
    return SlotPage(slots=kept, has_more=bool(kept))  # "later times" continue after the last one shown


def clinic_uses_buffers(session: Session, clinic_id: int) -> bool:
    """Whether any of the clinic's appointment types keeps time free around its visits."""
    return bool(session.scalar(select(exists().where(
        AppointmentType.clinic_id == clinic_id,
        or_(AppointmentType.buffer_before_minutes > 0, AppointmentType.buffer_after_minutes > 0)))))


def buffer_clashes(session: Session, slots: list[Slot], before_minutes: int = 0, after_minutes: int = 0,
                   ignore_appointment_id: int | None = None) -> set[int]:
    """The ids of the slots that can't be booked, because of buffers, for a type keeping
    `before_minutes` and `after_minutes` free around its visits (0 and 0: for any type).

    A booking takes from its provider its slot's time plus its type's buffers (time kept
    free before and after, e.g. for check-in or cleaning); two bookings' times may not
    overlap. So a slot clashes when its time widened by these buffers overlaps another live
    booking of the same provider, in another slot, widened by that booking's type's
    buffers. One statement for all the slots; the overlap is judged here so the SQL stays
    the same on SQLite and PostgreSQL."""
    if not slots:
        return set()
    before, after = timedelta(minutes=before_minutes), timedelta(minutes=after_minutes)
    reach = timedelta(minutes=MAX_BUFFER_MINUTES)  # how far another booking's buffers can stretch
    earliest = min(slot.starts_at for slot in slots) - before - reach
    latest = max(slot.ends_at for slot in slots) + after + reach
    booked = session.execute(
        select(Slot.id, Slot.provider_id, Slot.starts_at, Slot.ends_at,
               AppointmentType.buffer_before_minutes, AppointmentType.buffer_after_minutes)
        .join(Appointment, Appointment.slot_id == Slot.id)
        .join(AppointmentType, AppointmentType.id == Appointment.appointment_type_id)
        .where(Appointment.status == AppointmentStatus.BOOKED, Appointment.id != (ignore_appointment_id or 0),
               Slot.provider_id.in_({slot.provider_id for slot in slots}),
               Slot.starts_at < latest, Slot.ends_at > earliest))
    taken = defaultdict(list)  # provider -> (slot id, busy from, busy until)
    for slot_id, provider_id, starts_at, ends_at, its_before, its_after in booked:
        taken[provider_id].append((slot_id, starts_at - timedelta(minutes=its_before),
                                   ends_at + timedelta(minutes=its_after)))
    return {slot.id for slot in slots
            if any(other != slot.id and busy_from < slot.ends_at + after and busy_until > slot.starts_at - before
                   for other, busy_from, busy_until in taken[slot.provider_id])}


def group_by_local_day(slots: list[Slot]) -> list[tuple[date, list[Slot]]]:
    """Group slots by calendar day in each slot's location time zone, keeping order."""
    groups: list[tuple[date, list[Slot]]] = []
    for slot in slots:
        day = slot.starts_at.astimezone(ZoneInfo(slot.location.time_zone)).date()
        if groups and groups[-1][0] == day:
            groups[-1][1].append(slot)
        else:
            groups.append((day, [slot]))
    return groups


def wall_clock_starts(zone: ZoneInfo, day: date, start: time, end: time,
                      minutes: int) -> list[tuple[datetime, datetime]]:
    """Back-to-back slot starts between two local wall-clock times on one day, as
    (naive local wall time, aware UTC start) pairs, earliest first.

    A 9:00 start is 9:00 local on either side of a daylight-saving change. A wall
    time that does not exist that day (the spring-forward gap) is skipped rather
    than shifted; an ambiguous one (the autumn repeated hour) is taken once, at its
    first occurrence. Pure: no database, no errors beyond what zoneinfo raises.
    """
    starts: list[tuple[datetime, datetime]] = []
    step = timedelta(minutes=minutes)
    cursor = datetime.combine(day, start)
    last = datetime.combine(day, end)
    while cursor + step <= last:
        local = cursor.replace(tzinfo=zone)  # fold=0: the first occurrence of an ambiguous time
        starts_at = local.astimezone(timezone.utc)
        if starts_at.astimezone(zone).replace(tzinfo=None) == cursor:  # round trip fails only in the gap
            starts.append((cursor, starts_at))
        cursor += step
    return starts


def add_slots_for_day(session: Session, *, location: Location, provider_id: int, modality: str,
                      day: date, start: time, end: time, minutes: int, capacity: int = 1) -> list[Slot]:
    """Create back-to-back slots between two local wall-clock times on one day.

    Local times are converted with the location's zone (see `wall_clock_starts`), so
    a 9:00 slot is 9:00 on either side of a daylight-saving change and a wall time
    that does not exist that day is skipped rather than shifted. Existing slots are
    left alone, so running it twice creates nothing new. Raises nothing of its own.
    """
    created: list[Slot] = []
    for wall, starts_at in wall_clock_starts(ZoneInfo(location.time_zone), day, start, end, minutes):
        exists = session.scalar(select(Slot.id).where(Slot.provider_id == provider_id,
                                                      Slot.location_id == location.id,
                                                      Slot.starts_at == starts_at))
        if exists is None:
            slot = Slot(location_id=location.id, provider_id=provider_id, modality=Modality(modality),
                        starts_at=starts_at, ends_at=starts_at + timedelta(minutes=minutes), capacity=capacity,
                        local_weekday=day.weekday(), local_minutes=wall.hour * 60 + wall.minute)
            session.add(slot)
            created.append(slot)
    session.flush()
    return created
