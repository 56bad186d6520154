"""What the front desk sees: one local day (or week) of slots with their state."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, joinedload

from portal.models import Appointment, AppointmentStatus, Location, Patient, Slot, utcnow
from portal.services.availability import buffer_clashes, clinic_uses_buffers

SHOWN_STATUSES = (AppointmentStatus.BOOKED, AppointmentStatus.ATTENDED, AppointmentStatus.NO_SHOW)


@dataclass
class ScheduleRow:
    slot: Slot
    state: str  # open, held, booked, blocked, kept_free (an open time a booking's buffer takes)
    appointments: list[tuple[Appointment, Patient]]


def local_day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """UTC start and end of a local calendar day (23 or 25 hours on DST days)."""
    tz = ZoneInfo(zone)
    return (datetime.combine(day, time(0), tz).astimezone(ZoneInfo("UTC")),
            datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(ZoneInfo("UTC")))


def schedule_for(session: Session, location: Location, first_day: date, days: int = 1,
                 provider_id: int | None = None, now: datetime | None = None) -> list[ScheduleRow]:
    """Slots at a location over `days` local days, each with its booked visits and state, in two
    queries (two more where the clinic uses buffers)."""
    now = now or utcnow()
    start, _ = local_day_bounds(first_day, location.time_zone)
    _, end = local_day_bounds(first_day + timedelta(days=days - 1), location.time_zone)
    query = (select(Slot).options(joinedload(Slot.provider))
             .where(Slot.location_id == location.id, Slot.starts_at >= start, Slot.starts_at < end)
             .order_by(Slot.starts_at, Slot.provider_id))
    if provider_id is not None:
        query = query.where(Slot.provider_id == provider_id)
    slots = list(session.scalars(query))
    booked: dict[int, list[tuple[Appointment, Patient]]] = {}
    if slots:
        rows = session.execute(
            select(Appointment, Patient).join(Patient, Patient.id == Appointment.patient_id)
            .where(and_(Appointment.slot_id.in_([s.id for s in slots]), Appointment.status.in_(SHOWN_STATUSES)))
            .order_by(Appointment.id)).all()
        for appointment, patient in rows:
            booked.setdefault(appointment.slot_id, []).append((appointment, patient))
    states = {slot.id: _state(slot, bool(booked.get(slot.id)), now) for slot in slots}
    open_slots = [slot for slot in slots if states[slot.id] == "open"]
    if open_slots and clinic_uses_buffers(session, location.clinic_id):
        for slot_id in buffer_clashes(session, open_slots):
            states[slot_id] = "kept_free"
    return [ScheduleRow(slot, states[slot.id], booked.get(slot.id, [])) for slot in slots]


def _state(slot: Slot, has_visits: bool, now: datetime) -> str:
    if slot.blocked:
        return "blocked"
    if has_visits:
        return "booked"
    if slot.held_until is not None and slot.held_until > now:
        return "held"
    return "open"
