"""Keeping the slots patients see in step with what schedulers decide: weekly
templates turned into slots, blocks (vacation, holidays, a closed afternoon) and
copying a week.

Three rules run through everything here:

- Wall-clock times belong to the location. A template says "9:00 in Chicago", so its
  slots start at 9:00 local on both sides of a daylight-saving change; a local time
  that does not exist (the spring-forward gap) is skipped, and an ambiguous one (the
  repeated autumn hour) is used once, at its first occurrence.
- Idempotent. Generating or copying twice changes nothing the second time; a slot
  is never created where the same provider already has a slot overlapping it at
  that location (the unique index on provider, location and start backs this up).
- A slot someone booked or holds is never deleted and its time never changes. When
  a template edit means it no longer fits, it stays, stops selling its remaining
  seats (blocked), and its bookings are handed back as conflicts for a person to
  deal with: call the patient, move the visit.

An open slot that no longer fits is deleted, unless an appointment (cancelled or
moved) still points to it: then it is kept for history and blocked instead.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, case, delete, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, contains_eager

from portal.models import (Appointment, AppointmentStatus, AvailabilityBlock, AvailabilityTemplate, Location,
                           Modality, Provider, Slot, utcnow)
from portal.services.availability import wall_clock_starts
from portal.services.errors import InvalidInput, NotAvailable

DEFAULT_HORIZON_DAYS = 90
MAX_HORIZON_DAYS = 366
MIN_SLOT_MINUTES = 5
MAX_CAPACITY = 100  # a group visit, not a lecture hall
REASON_MAX = 200  # the width of availability_block.reason
_DELETE_CHUNK = 500  # ids per statement, well under every backend's parameter limit


# -- templates as plain values -------------------------------------------------------------------

@dataclass(frozen=True)
class Pattern:
    """What a template says, detached from the ORM so an edit can be tried out
    without touching the row (see `affected_bookings`)."""

    provider_id: int
    location_id: int
    modality: str
    weekdays: str
    start_time: time
    end_time: time
    slot_minutes: int
    capacity: int
    valid_from: date
    valid_until: date
    active: bool

    @classmethod
    def of(cls, template: AvailabilityTemplate, changes: dict | None = None) -> Pattern:
        values = {f.name: getattr(template, f.name) for f in fields(cls)}
        pattern = cls(**values)
        if changes:
            unknown = set(changes) - set(values)
            if unknown:
                raise InvalidInput(f"not a template field: {', '.join(sorted(unknown))}")
            pattern = replace(pattern, **changes)
        return pattern

    @property
    def days(self) -> set[int]:
        return {int(digit) for digit in self.weekdays}

    def runs_on(self, day: date) -> bool:
        return self.active and self.valid_from <= day <= self.valid_until and day.weekday() in self.days


def check_pattern(pattern: Pattern) -> None:
    """Refuse a template that cannot make sense, before it makes any slot.

    Raises InvalidInput for: weekdays that are not distinct digits 0-6 (Monday = 0),
    a start not before the end (a template stays within one local day), slots shorter
    than five minutes or longer than the day's window, a capacity outside 1-100, an
    unknown modality, or a date range that ends before it starts.
    """
    def require(condition: bool, why: str) -> None:
        if not condition:
            raise InvalidInput(why)

    require(all(isinstance(v, int) and not isinstance(v, bool)
                for v in (pattern.provider_id, pattern.location_id, pattern.slot_minutes, pattern.capacity)),
            "ids, slot length and capacity must be whole numbers")
    require(isinstance(pattern.weekdays, str) and 0 < len(pattern.weekdays) <= 7
            and all(c in "0123456" for c in pattern.weekdays)
            and len(set(pattern.weekdays)) == len(pattern.weekdays), "weekdays must be distinct digits 0-6")
    require(isinstance(pattern.start_time, time) and isinstance(pattern.end_time, time)
            and pattern.start_time.tzinfo is None and pattern.end_time.tzinfo is None, "times must be local")
    require(pattern.start_time < pattern.end_time, "the day must start before it ends")
    window = (datetime.combine(date.min, pattern.end_time) - datetime.combine(date.min, pattern.start_time))
    require(MIN_SLOT_MINUTES <= pattern.slot_minutes <= window.total_seconds() // 60,
            "slot length must fit between start and end")
    require(1 <= pattern.capacity <= MAX_CAPACITY, "capacity out of range")
    require(isinstance(pattern.modality, str) and pattern.modality in set(Modality), "unknown modality")
    require(isinstance(pattern.valid_from, date) and isinstance(pattern.valid_until, date)
            and not isinstance(pattern.valid_from, datetime) and not isinstance(pattern.valid_until, datetime)
            and pattern.valid_from <= pattern.valid_until, "the date range must not end before it starts")
    require(isinstance(pattern.active, bool), "active must be true or false")


def check_template(session: Session, template: AvailabilityTemplate) -> Location:
    """Check a template (see `check_pattern`) and that its provider and location exist
    and belong to the same clinic; return the location.

    Raises InvalidInput (a rule broken) or NotAvailable (unknown or mismatched
    provider or location, or a location whose time zone is not a known IANA name).
    """
    return _location_for(session, Pattern.of(template))


def _location_for(session: Session, pattern: Pattern) -> Location:
    check_pattern(pattern)
    location = session.get(Location, pattern.location_id)
    provider = session.get(Provider, pattern.provider_id)
    if location is None or provider is None or provider.clinic_id != location.clinic_id:
        raise NotAvailable()
    _zone(location)
    return location


def _zone(location: Location) -> ZoneInfo:
    try:
        return ZoneInfo(location.time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise NotAvailable() from exc


def _local_day_bounds(zone: ZoneInfo, first: date, last: date) -> tuple[datetime, datetime]:
    """UTC instants of the first day's local midnight and the midnight after the last
    day; a DST day is 23 or 25 hours long and these bounds follow it."""
    start = datetime.combine(first, time(0), tzinfo=zone).astimezone(timezone.utc)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone).astimezone(timezone.utc)
    return start, end


class _Grid:
    """The slot starts a pattern offers, computed once per local day."""

    def __init__(self, pattern: Pattern, zone: ZoneInfo):
        self.pattern, self.zone = pattern, zone
        self._days: dict[date, dict[datetime, datetime]] = {}

    def starts(self, day: date) -> dict[datetime, datetime]:
        """{UTC start: local wall time} for one local day (empty when the pattern is off)."""
        if day not in self._days:
            p = self.pattern
            pairs = (wall_clock_starts(self.zone, day, p.start_time, p.end_time, p.slot_minutes)
                     if p.runs_on(day) else [])
            self._days[day] = {starts_at: wall for wall, starts_at in pairs}
        return self._days[day]

    def fits_time(self, slot: Slot) -> bool:
        """Same provider, place, local day, start and length as the pattern offers."""
        p = self.pattern
        return (slot.provider_id == p.provider_id and slot.location_id == p.location_id
                and slot.ends_at - slot.starts_at == timedelta(minutes=p.slot_minutes)
                and slot.starts_at in self.starts(slot.starts_at.astimezone(self.zone).date()))

    def fits(self, slot: Slot) -> bool:
        return self.fits_time(slot) and slot.modality == self.pattern.modality


# -- slot state ---------------------------------------------------------------------------------

def _held(slot: Slot, now: datetime) -> bool:
    return slot.held_by_enrolment_id is not None and slot.held_until is not None and slot.held_until > now


def _in_use(slot: Slot, now: datetime) -> bool:
    return slot.booked_count > 0 or _held(slot, now)


def _live_bookings_on_template_slots(session: Session, template_id: int, now: datetime) -> dict[int, list[Appointment]]:
    rows = session.scalars(
        select(Appointment).join(Slot, Appointment.slot_id == Slot.id).options(contains_eager(Appointment.slot))
        .where(Slot.template_id == template_id, Slot.starts_at >= now, Appointment.status == AppointmentStatus.BOOKED)
        .order_by(Slot.starts_at, Appointment.id))
    by_slot: dict[int, list[Appointment]] = defaultdict(list)
    for appointment in rows:
        by_slot[appointment.slot_id].append(appointment)
    return by_slot


class _Blocks:
    """Which time ranges are blocked for one provider at one location."""

    def __init__(self, session: Session, location_id: int, provider_id: int, start: datetime, end: datetime):
        self.ranges = list(session.execute(
            select(AvailabilityBlock.starts_at, AvailabilityBlock.ends_at)
            .where(AvailabilityBlock.location_id == location_id,
                   or_(AvailabilityBlock.provider_id.is_(None), AvailabilityBlock.provider_id == provider_id),
                   AvailabilityBlock.starts_at < end, AvailabilityBlock.ends_at > start)))

    def cover(self, starts_at: datetime, ends_at: datetime) -> bool:
        return any(block_start < ends_at and block_end > starts_at for block_start, block_end in self.ranges)


class _Occupied:
    """Time a provider already has slots at a location, bucketed by UTC date so each
    overlap check looks at a day or two of slots, not the whole range."""

    def __init__(self, session: Session, location_id: int, provider_id: int, start: datetime, end: datetime):
        self._by_day: dict[date, list[tuple[datetime, datetime]]] = defaultdict(list)
        for slot_start, slot_end in session.execute(
                select(Slot.starts_at, Slot.ends_at)
                .where(Slot.location_id == location_id, Slot.provider_id == provider_id,
                       Slot.starts_at < end, Slot.ends_at > start)):
            self.add(slot_start, slot_end)

    @staticmethod
    def _days(starts_at: datetime, ends_at: datetime):
        day, last = starts_at.date(), (ends_at - timedelta(microseconds=1)).date()
        while day <= last:
            yield day
            day += timedelta(days=1)

    def add(self, starts_at: datetime, ends_at: datetime) -> None:
        for day in self._days(starts_at, ends_at):
            self._by_day[day].append((starts_at, ends_at))

    def overlaps(self, starts_at: datetime, ends_at: datetime) -> bool:
        return any(other_start < ends_at and other_end > starts_at
                   for day in self._days(starts_at, ends_at) for other_start, other_end in self._by_day[day])


@dataclass(frozen=True)
class _NewSlot:
    starts_at: datetime
    ends_at: datetime
    wall: datetime
    modality: str
    capacity: int


def _add_slots(session: Session, location: Location, provider_id: int, template_id: int | None,
               wanted: list[_NewSlot], now: datetime) -> int:
    """Insert the wanted slots that are in the future and overlap nothing the provider
    already has there; inside a block they are created blocked. Returns how many were
    inserted. A concurrent run inserting the same start is absorbed by ON CONFLICT."""
    if not wanted:
        return 0
    wanted = sorted(wanted, key=lambda new: new.starts_at)
    span = (wanted[0].starts_at, max(new.ends_at for new in wanted))
    occupied = _Occupied(session, location.id, provider_id, *span)
    blocks = _Blocks(session, location.id, provider_id, *span)
    rows = []
    for new in wanted:
        if new.starts_at < now or occupied.overlaps(new.starts_at, new.ends_at):
            continue
        occupied.add(new.starts_at, new.ends_at)
        rows.append({"location_id": location.id, "provider_id": provider_id, "modality": new.modality,
                     "starts_at": new.starts_at, "ends_at": new.ends_at, "local_weekday": new.wall.weekday(),
                     "local_minutes": new.wall.hour * 60 + new.wall.minute, "capacity": new.capacity,
                     "booked_count": 0, "blocked": blocks.cover(new.starts_at, new.ends_at),
                     "template_id": template_id})
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Slot).on_conflict_do_nothing().returning(Slot.id)
    return len(session.execute(statement, rows).all())


# -- generating slots from a template -------------------------------------------------------------

@dataclass
class GenerationResult:
    created: int = 0
    removed: int = 0  # open slots that no longer fitted and were deleted
    updated: int = 0  # slots kept but brought in line: capacity, modality, blocked or not
    kept: list[Slot] = field(default_factory=list)  # no longer fit but booked or held: left where they are
    conflicts: list[Appointment] = field(default_factory=list)  # live bookings on those kept slots


def generate_slots(session: Session, template: AvailabilityTemplate, today: date,
                   horizon_days: int = DEFAULT_HORIZON_DAYS, *, now: datetime | None = None) -> GenerationResult:
    """Bring the template's future slots in line with it, then create what is missing.

    Creates a slot for each start the template offers on its weekdays, from
    max(valid_from, today) through min(valid_until, today + horizon_days), in the
    location's zone (DST rules in the module docstring); never in the past (`now`),
    never overlapping a slot the provider already has there. A new slot inside an
    AvailabilityBlock is created blocked rather than left out, so lifting the block
    (`unblock`) reopens it without regenerating. Existing future slots of the template
    (at any distance, so a shortened date range takes effect) are then reconciled:
    fitting open slots take the template's capacity and modality; fitting slots
    with bookings take its capacity but never fewer seats than are booked; a slot
    that no longer fits is deleted when open, kept and blocked when an old
    appointment points to it, and kept, blocked for further sales and reported
    (`kept`, `conflicts`) when someone booked or holds it. Deactivating a template
    is just an edit that nothing fits. Flushes; raises InvalidInput (bad template or
    horizon) or NotAvailable (unknown provider or location, or a bad time zone).
    """
    now = now or utcnow()
    if not isinstance(horizon_days, int) or not 0 <= horizon_days <= MAX_HORIZON_DAYS:
        raise InvalidInput("horizon out of range")
    pattern = Pattern.of(template)
    location = _location_for(session, pattern)
    zone = _zone(location)
    session.flush()
    result = GenerationResult()
    _reconcile(session, template, pattern, zone, now, result)

    first, last = max(pattern.valid_from, today), min(pattern.valid_until, today + timedelta(days=horizon_days))
    grid = _Grid(pattern, zone)
    wanted = []
    day = first
    while day <= last:
        for starts_at, wall in grid.starts(day).items():
            wanted.append(_NewSlot(starts_at, starts_at + timedelta(minutes=pattern.slot_minutes), wall,
                                   pattern.modality, pattern.capacity))
        day += timedelta(days=1)
    result.created = _add_slots(session, location, pattern.provider_id, template.id, wanted, now)
    session.flush()
    return result


def _reconcile(session: Session, template: AvailabilityTemplate, pattern: Pattern, zone: ZoneInfo,
               now: datetime, result: GenerationResult) -> None:
    owned = list(session.scalars(select(Slot).where(Slot.template_id == template.id, Slot.starts_at >= now)
                                 .order_by(Slot.starts_at)))
    if not owned:
        return
    grid = _Grid(pattern, zone)
    blocks = _Blocks(session, pattern.location_id, pattern.provider_id, owned[0].starts_at,
                     max(slot.ends_at for slot in owned))
    bookings = _live_bookings_on_template_slots(session, template.id, now)
    with_history = set(session.scalars(
        select(Appointment.slot_id).join(Slot, Appointment.slot_id == Slot.id)
        .where(Slot.template_id == template.id, Slot.starts_at >= now)))
    to_delete: list[int] = []
    to_resize: list[int] = []
    for slot in owned:
        in_use = _in_use(slot, now)
        if grid.fits(slot) or (grid.fits_time(slot) and not in_use):
            changed = False
            if slot.modality != pattern.modality:  # only an open slot gets here with another modality
                slot.modality, changed = pattern.modality, True
            covered = blocks.cover(slot.starts_at, slot.ends_at)
            if slot.blocked != covered:
                slot.blocked, changed = covered, True
            if slot.capacity != max(pattern.capacity, slot.booked_count):
                to_resize.append(slot.id)
                changed = True
            result.updated += changed
        elif not in_use and slot.id not in with_history:
            to_delete.append(slot.id)
        else:
            if not slot.blocked:
                slot.blocked = True
                result.updated += 1
            if in_use:
                result.kept.append(slot)
                result.conflicts.extend(bookings.get(slot.id, []))
    session.flush()
    for chunk in _chunks(to_resize):
        # The template's capacity, but never below the seats booked when the row is
        # written, so a booking racing this edit cannot be squeezed out.
        session.execute(update(Slot).where(Slot.id.in_(chunk))
                        .values(capacity=case((Slot.booked_count > pattern.capacity, Slot.booked_count),
                                              else_=pattern.capacity))
                        .execution_options(synchronize_session="fetch"))
    for chunk in _chunks(to_delete):
        # Re-checked in the statement itself: a booking that landed since we read the
        # slot wins, and the slot stays (the next run reports it).
        result.removed += len(session.execute(
            delete(Slot).where(Slot.id.in_(chunk), Slot.booked_count == 0,
                               or_(Slot.held_until.is_(None), Slot.held_until <= now),
                               ~exists().where(Appointment.slot_id == Slot.id))
            .returning(Slot.id).execution_options(synchronize_session="fetch")).all())


def _chunks(ids: list[int]):
    for i in range(0, len(ids), _DELETE_CHUNK):
        yield ids[i:i + _DELETE_CHUNK]


def affected_bookings(session: Session, template: AvailabilityTemplate, proposed_changes: dict,
                      *, now: datetime | None = None) -> list[Appointment]:
    """The live bookings a proposed edit would leave on slots that no longer fit.

    `proposed_changes` maps template field names to new values (e.g. {"end_time":
    time(16)}, {"active": False}); nothing is changed or flushed, so the console can
    show the list and ask before saving. A booking is affected when its slot (in the
    future) would no longer match the edited template's provider, location, dates,
    weekdays, start times, length or modality; a capacity change affects nobody.
    These are exactly the `conflicts` `generate_slots` reports after the edit is
    saved. Raises InvalidInput (unknown field or an edit that breaks a template
    rule) or NotAvailable (unknown provider or location).
    """
    now = now or utcnow()
    pattern = Pattern.of(template, proposed_changes)
    grid = _Grid(pattern, _zone(_location_for(session, pattern)))
    if template.id is None:
        return []
    affected = []
    for appointments in _live_bookings_on_template_slots(session, template.id, now).values():
        if not grid.fits(appointments[0].slot):
            affected.extend(appointments)
    return affected


def generate_all_slots(session: Session, today: date, horizon_days: int = DEFAULT_HORIZON_DAYS,
                       *, now: datetime | None = None) -> GenerationResult:
    """Run `generate_slots` for every template whose date range has not ended, so the
    horizon rolls forward a day at a time (for a nightly job). Sums the results.
    Raises what `generate_slots` raises for the first broken template.
    """
    total = GenerationResult()
    for template in session.scalars(select(AvailabilityTemplate).where(AvailabilityTemplate.valid_until >= today)
                                    .order_by(AvailabilityTemplate.id)):
        one = generate_slots(session, template, today, horizon_days, now=now)
        total.created += one.created
        total.removed += one.removed
        total.updated += one.updated
        total.kept += one.kept
        total.conflicts += one.conflicts
    return total


# -- "first Saturday 9-12" ------------------------------------------------------------------------

def nth_weekday(year: int, month: int, weekday: int, nth: int) -> date | None:
    """The nth (1-5) given weekday of a month, or the last one for nth = -1; None when
    the month has no such day (a fifth Saturday, say)."""
    if nth == -1:
        following = date(year + month // 12, month % 12 + 1, 1)
        last = following - timedelta(days=1)
        return last - timedelta(days=(last.weekday() - weekday) % 7)
    first = date(year, month, 1)
    day = first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))
    return day if day.month == month else None


def add_monthly_templates(session: Session, *, provider_id: int, location_id: int, modality: str, weekday: int,
                          nth: int, start_time: time, end_time: time, slot_minutes: int, capacity: int = 1,
                          first_month: date, months: int) -> list[AvailabilityTemplate]:
    """Templates for a monthly pattern such as "first Saturday 9-12": one single-date
    template (valid_from = valid_until = that day) per month, for `months` months
    from `first_month`'s month.

    A weekly template cannot say "first Saturday", and one template per date keeps
    every other rule unchanged: each is generated, edited, deactivated and checked
    for affected bookings like any template. Months without such a day are skipped.
    Flushes but does not generate slots (call `generate_slots` on each). Raises
    InvalidInput (weekday not 0-6, nth not 1-5 or -1, months not 1-36, or a template
    rule broken) or NotAvailable (unknown provider or location).
    """
    if weekday not in range(7) or nth not in (1, 2, 3, 4, 5, -1) or not isinstance(months, int) \
            or not 1 <= months <= 36:
        raise InvalidInput("monthly pattern out of range")
    templates = []
    year, month = first_month.year, first_month.month
    for _ in range(months):
        day = nth_weekday(year, month, weekday, nth)
        if day is not None:
            template = AvailabilityTemplate(provider_id=provider_id, location_id=location_id, modality=modality,
                                            weekdays=str(weekday), start_time=start_time, end_time=end_time,
                                            slot_minutes=slot_minutes, capacity=capacity, valid_from=day,
                                            valid_until=day, active=True)
            check_template(session, template)
            templates.append(template)
        year, month = year + month // 12, month % 12 + 1
    session.add_all(templates)
    session.flush()
    return templates


# -- blocks ---------------------------------------------------------------------------------------

@dataclass
class BlockResult:
    block: AvailabilityBlock
    slots_blocked: int  # slots newly marked blocked (open ones, and the unsold seats of booked ones)
    bookings: list[Appointment]  # live bookings inside the block: still booked, for staff to move


def _applies(location_id: int, provider_id: int | None):
    """SQL: the slots a block for this location (and provider, or everyone) covers."""
    condition = Slot.location_id == location_id
    return condition if provider_id is None else and_(condition, Slot.provider_id == provider_id)


def block_time(session: Session, *, location: Location, provider: Provider | None, starts_at: datetime,
               ends_at: datetime, reason: str, staff_id: int) -> BlockResult:
    """Close a stretch of time for one provider at a location, or for the whole
    location when `provider` is None.

    Records the block, marks every slot overlapping it blocked (so nobody can book
    or finish holding it) and returns the live bookings inside it. Those bookings are
    not cancelled: the patient has not been told, so the list goes back to staff to
    call and move each one. A booked slot is blocked too, which only stops its
    remaining seats (group visits) from being sold. Slots generated into the range
    later are created blocked. Flushes; raises InvalidInput (naive or reversed
    times, a reason over 200 characters) or NotAvailable (provider of another clinic).
    """
    if starts_at.tzinfo is None or ends_at.tzinfo is None or ends_at <= starts_at:
        raise InvalidInput("a block needs an aware start before its end")
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX:
        raise InvalidInput("reason too long")
    if provider is not None and provider.clinic_id != location.clinic_id:
        raise NotAvailable()
    provider_id = provider.id if provider is not None else None
    block = AvailabilityBlock(location_id=location.id, provider_id=provider_id, starts_at=starts_at,
                              ends_at=ends_at, reason=reason, created_by_id=staff_id)
    session.add(block)
    session.flush()
    inside = and_(_applies(location.id, provider_id), Slot.starts_at < ends_at, Slot.ends_at > starts_at)
    blocked = len(session.execute(update(Slot).where(inside, Slot.blocked.is_(False)).values(blocked=True)
                                  .returning(Slot.id).execution_options(synchronize_session="fetch")).all())
    bookings = list(session.scalars(select(Appointment).join(Slot, Appointment.slot_id == Slot.id)
                                    .where(inside, Appointment.status == AppointmentStatus.BOOKED)
                                    .order_by(Slot.starts_at, Appointment.id)))
    return BlockResult(block=block, slots_blocked=blocked, bookings=bookings)


def block_day(session: Session, *, location: Location, provider: Provider | None, day: date, reason: str,
              staff_id: int) -> BlockResult:
    """Block one whole local day (midnight to midnight in the location's zone, so 23
    or 25 hours on a DST day) for a provider or, with None, the whole location.
    Raises what `block_time` raises, and NotAvailable for a bad time zone."""
    starts_at, ends_at = _local_day_bounds(_zone(location), day, day)
    return block_time(session, location=location, provider=provider, starts_at=starts_at, ends_at=ends_at,
                      reason=reason, staff_id=staff_id)


def unblock(session: Session, block: AvailabilityBlock) -> int:
    """Lift a block and reopen the slots it covered, except those another block still
    covers and template slots that no longer fit their template (kept only for
    their bookings or history). Deletes the block row; returns how many slots
    reopened. Flushes; raises NotAvailable if the block's location has a bad time zone.
    """
    location = session.get(Location, block.location_id)
    zone = _zone(location)
    session.delete(block)
    session.flush()
    covered = list(session.scalars(
        select(Slot).where(_applies(block.location_id, block.provider_id), Slot.blocked.is_(True),
                           Slot.starts_at < block.ends_at, Slot.ends_at > block.starts_at)
        .order_by(Slot.starts_at)))
    others = list(session.execute(
        select(AvailabilityBlock.provider_id, AvailabilityBlock.starts_at, AvailabilityBlock.ends_at)
        .where(AvailabilityBlock.location_id == block.location_id,
               AvailabilityBlock.starts_at < max((slot.ends_at for slot in covered), default=block.ends_at),
               AvailabilityBlock.ends_at > min((slot.starts_at for slot in covered), default=block.starts_at))))
    grids: dict[int, _Grid] = {}
    reopened = 0
    for slot in covered:
        if any((provider_id is None or provider_id == slot.provider_id) and starts_at < slot.ends_at
               and ends_at > slot.starts_at for provider_id, starts_at, ends_at in others):
            continue
        if slot.template_id is not None:
            if slot.template_id not in grids:
                template = session.get(AvailabilityTemplate, slot.template_id)
                grids[slot.template_id] = _Grid(Pattern.of(template), zone)
            if not grids[slot.template_id].fits(slot):
                continue
        slot.blocked = False
        reopened += 1
    session.flush()
    return reopened


# -- copying a week -------------------------------------------------------------------------------

def copy_week(session: Session, *, provider_id: int, location_id: int, source_monday: date, target_monday: date,
              now: datetime | None = None) -> int:
    """Copy one week's offered times for a provider at a location onto another week.

    Every slot of the source week (Monday to Sunday, local) that is not blocked is
    copied at the same local weekday and wall-clock time, with its length, modality
    and capacity, whether or not it was booked; the copies are open. DST-safe: a
    9:00 slot lands at 9:00 local in the target week even across a change, a time
    that does not exist there is skipped, an ambiguous one is used once. Target times
    in the past, or overlapping a slot the provider already has there, are skipped,
    so copying twice creates nothing new; inside a block they are created blocked.
    Copies belong to no template (template_id empty), so no later template edit
    deletes them. Flushes; returns how many slots were created. Raises InvalidInput
    (a date that is not a Monday, or the same week twice) or NotAvailable (unknown
    location or provider, provider of another clinic, bad time zone).
    """
    now = now or utcnow()
    if source_monday.weekday() != 0 or target_monday.weekday() != 0 or source_monday == target_monday:
        raise InvalidInput("copy from one Monday to another")
    location = session.get(Location, location_id)
    provider = session.get(Provider, provider_id)
    if location is None or provider is None or provider.clinic_id != location.clinic_id:
        raise NotAvailable()
    zone = _zone(location)
    week_start, week_end = _local_day_bounds(zone, source_monday, source_monday + timedelta(days=6))
    shift = target_monday - source_monday
    session.flush()
    wanted = []
    for slot in session.scalars(select(Slot).where(Slot.location_id == location_id, Slot.provider_id == provider_id,
                                                   Slot.blocked.is_(False), Slot.starts_at >= week_start,
                                                   Slot.starts_at < week_end).order_by(Slot.starts_at)):
        wall = slot.starts_at.astimezone(zone).replace(tzinfo=None) + shift
        starts_at = wall.replace(tzinfo=zone).astimezone(timezone.utc)
        if starts_at.astimezone(zone).replace(tzinfo=None) != wall:
            continue  # the spring-forward gap: this wall time does not exist that day
        wanted.append(_NewSlot(starts_at, starts_at + (slot.ends_at - slot.starts_at), wall, slot.modality,
                               slot.capacity))
    created = _add_slots(session, location, provider_id, None, wanted, now)
    session.flush()
    return created
