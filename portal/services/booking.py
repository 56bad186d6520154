"""Holding and booking slots atomically.

Every change to a slot's seats is one conditional UPDATE whose WHERE clause states
the rule ("a seat is free and nobody else holds it"). The database applies it to
the row atomically on SQLite and PostgreSQL alike, so two patients can never get
the same seat: the loser's UPDATE matches no row and becomes SlotTaken.

Where a clinic's appointment types keep time free around their visits (buffers), a
booking also may not overlap another booking of the same provider once both are
widened by their buffers; bookings of one provider are then judged one at a time.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from portal.models import (Appointment, AppointmentStatus, AppointmentType, Enrolment, EnrolmentStatus, Link,
                           Modality, Provider, Slot, utcnow)
from portal.services.availability import booking_window, buffer_clashes, clinic_uses_buffers, slot_is_free
from portal.services.errors import InvalidInput, NoLiveAppointment, NotAvailable, SlotTaken
from portal.services.events import record_event
from portal.services.messages import queue_notice
from portal.services.sequence import stop_sequence

DEFAULT_HOLD = timedelta(minutes=10)


def _live_bookings(enrolment: Enrolment):
    """The enrolment's live bookings, with the time, place, provider and type every page
    that shows one needs."""
    return (select(Appointment)
            .options(joinedload(Appointment.slot).joinedload(Slot.location),
                     joinedload(Appointment.slot).joinedload(Slot.provider),
                     joinedload(Appointment.appointment_type))
            .where(Appointment.enrolment_id == enrolment.id, Appointment.status == AppointmentStatus.BOOKED))


def live_appointment(session: Session, enrolment: Enrolment, sequence: int = 0) -> Appointment | None:
    """The enrolment's booked visit (sequence 1: the follow-up booked with a lab visit)."""
    return session.scalar(_live_bookings(enrolment).where(Appointment.sequence == sequence))


def live_appointments(session: Session, enrolment: Enrolment) -> tuple[Appointment | None, Appointment | None]:
    """The booked visit and its follow-up (None where there is none), in one statement."""
    both = session.scalars(_live_bookings(enrolment).where(Appointment.sequence.in_((0, 1))))
    by_sequence = {appointment.sequence: appointment for appointment in both}
    return by_sequence.get(0), by_sequence.get(1)


def held_slot(session: Session, enrolment: Enrolment, slot_id: int | None,
              now: datetime | None = None) -> Slot | None:
    """The slot, if this enrolment holds it right now (the hold has not run out)."""
    now = now or utcnow()
    return session.scalar(select(Slot).where(Slot.id == slot_id, Slot.held_by_enrolment_id == enrolment.id,
                                             Slot.held_until > now))


def _check_slot_fits(slot: Slot | None, appointment_type: AppointmentType, now: datetime) -> Slot:
    earliest, latest = booking_window(appointment_type, now)
    if (slot is None or slot.modality != appointment_type.modality or not earliest <= slot.starts_at <= latest
            or slot.location.clinic_id != appointment_type.clinic_id):
        raise NotAvailable()
    return slot


def _check_buffers(session: Session, slot: Slot, appointment_type: AppointmentType, *,
                   replacing: Appointment | None = None, moving: Enrolment | None = None, lock: bool = False) -> None:
    """Raise SlotTaken when buffers make the slot unbookable for this type (see
    `availability.buffer_clashes`). The booking being replaced doesn't count (nor, for a
    hold, the `moving` enrolment's live visit: the hold may start a move). With `lock` the
    provider's row is locked first, so two requests booking neighbouring times of one
    provider are judged one after the other (PostgreSQL; SQLite's write lock already
    serialises them)."""
    if not clinic_uses_buffers(session, appointment_type.clinic_id):
        return
    if moving is not None:
        replacing = live_appointment(session, moving)
    if lock:
        session.execute(select(Provider.id).where(Provider.id == slot.provider_id).with_for_update())
    if buffer_clashes(session, [slot], appointment_type.buffer_before_minutes, appointment_type.buffer_after_minutes,
                      replacing.id if replacing is not None else None):
        raise SlotTaken()


def hold_slot(session: Session, enrolment: Enrolment, appointment_type: AppointmentType, slot_id: int,
              hold_for: timedelta = DEFAULT_HOLD, keep_slot_id: int | None = None,
              now: datetime | None = None) -> Slot:
    """Hold a seat for a few minutes while the patient confirms.

    Releases any other hold of this enrolment first, except `keep_slot_id` (the lab
    visit held while the patient picks its follow-up). Raises NotAvailable (no such
    slot, wrong kind, too soon) or SlotTaken (full, blocked or held by someone else).
    """
    now = now or utcnow()
    slot = _check_slot_fits(session.get(Slot, slot_id), appointment_type, now)
    _check_buffers(session, slot, appointment_type, moving=enrolment)
    session.execute(update(Slot).where(Slot.held_by_enrolment_id == enrolment.id, Slot.id != slot.id,
                                       Slot.id != (keep_slot_id or 0))
                    .values(held_by_enrolment_id=None, held_until=None))
    taken = session.execute(
        update(Slot).where(Slot.id == slot.id, slot_is_free(now, enrolment.id))
        .values(held_by_enrolment_id=enrolment.id, held_until=now + hold_for)
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken != 1:
        raise SlotTaken()
    session.refresh(slot)
    record_event(session, enrolment, "slot_held", slot_id=slot.id)
    return slot


def _take_seat(session: Session, enrolment: Enrolment, appointment_type: AppointmentType, slot: Slot,
               sequence: int, via: str, now: datetime, replacing: Appointment | None = None) -> Appointment:
    """Seat the enrolment in the slot and write the appointment row; call inside a
    savepoint. Raises SlotTaken when the conditional UPDATE matches no row, or when
    a twin request booked at the same moment (the unique index), or buffers clash."""
    _check_buffers(session, slot, appointment_type, replacing=replacing, lock=True)
    seated = session.execute(
        update(Slot).where(Slot.id == slot.id, slot_is_free(now, enrolment.id))
        .values(booked_count=Slot.booked_count + 1, held_by_enrolment_id=None, held_until=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if seated != 1:
        raise SlotTaken()
    if replacing is not None:
        _release_seat(session, replacing, AppointmentStatus.RESCHEDULED, now)
    appointment = Appointment(
        enrolment_id=enrolment.id, patient_id=enrolment.patient_id, slot_id=slot.id, sequence=sequence,
        appointment_type_id=appointment_type.id, booked_via=via, booked_at=now,
        video_code=secrets.token_urlsafe(12) if appointment_type.modality == Modality.TELEHEALTH else "",
    )
    session.add(appointment)
    try:
        session.flush()
    except IntegrityError as exc:
        raise SlotTaken() from exc
    if replacing is not None:
        replacing.replaced_by_id = appointment.id
    return appointment


def _booked(session: Session, enrolment: Enrolment, appointment: Appointment, kind: str, actor: str, via: str,
            link_id: int | None) -> None:
    """What follows every booking: stop outreach, keep the link alive, record, confirm."""
    session.refresh(appointment.slot)
    enrolment.status = EnrolmentStatus.BOOKED
    stop_sequence(session, enrolment, "booked")
    _keep_links_until_visit(session, enrolment, appointment.slot)
    record_event(session, enrolment, kind, actor=actor, appointment_id=appointment.id, slot_id=appointment.slot_id,
                 appointment_type=appointment.appointment_type.code, via=via, link_id=link_id,
                 sequence=appointment.sequence)
    queue_notice(session, enrolment, "booking_confirmed", dedupe_key=f"booked:{appointment.id}")


def book_slot(session: Session, enrolment: Enrolment, appointment_type: AppointmentType, slot_id: int,
              via: str = "portal", actor: str = "patient", link_id: int | None = None,
              now: datetime | None = None) -> Appointment:
    """Book a seat for the enrolment, atomically; a live booking becomes a reschedule.

    Idempotent: confirming the same slot twice (double submit, refresh) returns the
    booking already made. Raises NotAvailable or SlotTaken; on SlotTaken nothing
    has changed. Queues a PHI-free confirmation, stops the outreach sequence, and
    records `booked` or `rescheduled` with the link used (for attribution).
    """
    now = now or utcnow()
    current = live_appointment(session, enrolment)
    if current is not None and current.slot_id == slot_id:
        return current
    slot = _check_slot_fits(session.get(Slot, slot_id), appointment_type, now)
    try:
        with session.begin_nested():
            appointment = _take_seat(session, enrolment, appointment_type, slot, 0, via, now, replacing=current)
    except SlotTaken:
        already = live_appointment(session, enrolment)  # a twin request may have just won
        if already is not None and already.slot_id == slot_id:
            return already
        raise
    _booked(session, enrolment, appointment, "rescheduled" if current is not None else "booked", actor, via, link_id)
    return appointment


PAIR_GAP = (timedelta(days=2), timedelta(days=21))  # a follow-up 2 to 21 days after the lab visit


def book_pair(session: Session, enrolment: Enrolment, first: tuple[AppointmentType, int],
              second: tuple[AppointmentType, int], via: str = "portal", link_id: int | None = None,
              now: datetime | None = None) -> tuple[Appointment, Appointment]:
    """Book a lab visit and the follow-up visit after it as one unit: both or neither.

    Raises NotAvailable (a slot doesn't fit its type, or the follow-up isn't 2-21 days
    after the first) or SlotTaken (either seat is gone; nothing is kept).
    """
    now = now or utcnow()
    (first_type, first_id), (second_type, second_id) = first, second
    first_slot = _check_slot_fits(session.get(Slot, first_id), first_type, now)
    second_slot = _check_slot_fits(session.get(Slot, second_id), second_type, now)
    if not PAIR_GAP[0] <= second_slot.starts_at - first_slot.starts_at <= PAIR_GAP[1]:
        raise NotAvailable()
    with session.begin_nested():
        lab = _take_seat(session, enrolment, first_type, first_slot, 0, via, now,
                         replacing=live_appointment(session, enrolment))
        follow_up = _take_seat(session, enrolment, second_type, second_slot, 1, via, now,
                               replacing=live_appointment(session, enrolment, sequence=1))
    _booked(session, enrolment, lab, "booked", "patient", via, link_id)
    _booked(session, enrolment, follow_up, "booked", "patient", via, link_id)
    return lab, follow_up


def cancel_appointment(session: Session, enrolment: Enrolment, reason: str = "", actor: str = "patient",
                       now: datetime | None = None) -> Appointment:
    """Cancel the enrolment's live booking (and the follow-up booked with it) and
    free the seats. The link keeps working so the patient can book again.
    Raises NoLiveAppointment."""
    now = now or utcnow()
    appointment, follow_up = live_appointments(session, enrolment)
    if appointment is None:
        raise NoLiveAppointment()
    for booked in (appointment, follow_up):
        if booked is not None:
            _release_seat(session, booked, AppointmentStatus.CANCELLED, now)
            booked.cancel_reason = reason
    enrolment.status = EnrolmentStatus.INVITED
    record_event(session, enrolment, "cancelled", actor=actor, appointment_id=appointment.id, reason=reason)
    queue_notice(session, enrolment, "booking_cancelled", dedupe_key=f"cancelled:{appointment.id}")
    return appointment


def _release_seat(session: Session, appointment: Appointment, status: AppointmentStatus, now: datetime) -> None:
    appointment.status = status
    appointment.cancelled_at = now
    session.flush()
    session.execute(update(Slot).where(Slot.id == appointment.slot_id, Slot.booked_count > 0)
                    .values(booked_count=Slot.booked_count - 1).execution_options(synchronize_session=False))


def _keep_links_until_visit(session: Session, enrolment: Enrolment, slot: Slot) -> None:
    """After booking, the link must let the patient view, move or cancel the visit
    until it has passed, even if that is beyond the campaign's link lifetime."""
    session.execute(update(Link).where(Link.enrolment_id == enrolment.id, Link.revoked_at.is_(None),
                                       Link.expires_at < slot.ends_at + timedelta(days=1))
                    .values(expires_at=slot.ends_at + timedelta(days=1)))


VISIT_OUTCOMES = (AppointmentStatus.ATTENDED, AppointmentStatus.NO_SHOW)


def record_visit_outcome(session: Session, appointment: Appointment, outcome: str) -> None:
    """Mark a booked visit attended or no-show (they feed the kept-appointment rate).
    Raises NoLiveAppointment when the visit isn't booked, InvalidInput for another outcome."""
    if outcome not in VISIT_OUTCOMES:
        raise InvalidInput()
    if appointment.status != AppointmentStatus.BOOKED:
        raise NoLiveAppointment()
    appointment.status = AppointmentStatus(outcome)
    enrolment = session.get(Enrolment, appointment.enrolment_id)
    record_event(session, enrolment, str(outcome), actor="staff", appointment_id=appointment.id)
