"""Choosing a visit, holding a time, booking, and the confirmation."""
from __future__ import annotations

from datetime import timedelta

from flask import Response, current_app, flash, redirect, render_template, request, url_for
from flask_babel import get_locale, gettext as _

from portal.extensions import db
from portal.models import EnrolmentStatus, Modality, Slot
from portal.services import availability, booking, refills
from portal.services.campaigns import active_offer
from portal.services.education import education_note
from portal.services.calendar import appointment_ics
from portal.services.errors import NotAvailable, SlotTaken
from portal.services.previsit import form_response
from portal.services.help_requests import help_requests_for
from portal.web.common import commit
from portal.web.patient import bp
from portal.web.patient.context import current_enrolment, current_patient_session, verified_required
from portal.web.patient.forms import CancelForm, RefillForm, SlotChoiceForm


def patient_zone(session, enrolment) -> str:
    """Where the patient lives, for showing dates that aren't tied to a location."""
    if enrolment.patient.time_zone:
        return enrolment.patient.time_zone
    locations = availability.open_locations(session, enrolment.campaign.clinic_id)
    return locations[0].time_zone if locations else "UTC"


def int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdigit() and len(value) < 12 else None


@bp.get("/visit")
@verified_required
def home():
    enrolment = current_enrolment()
    appointment, follow_up = booking.live_appointments(db.session, enrolment)
    locale = str(get_locale())
    detail = enrolment.campaign.shows_clinical_detail
    offer = active_offer(db.session, enrolment, locale)
    # Load only what the page will show: the medicine's part appears only before a booking.
    medicine = refills.medicine_for(db.session, enrolment) if detail else None
    refill_part = medicine is not None and appointment is None and enrolment.status != EnrolmentStatus.CLOSED
    return render_template(
        "patient/home.html", enrolment=enrolment, appointment=appointment, follow_up=follow_up,
        form=form_response(db.session, enrolment, "previsit") if appointment and detail else None,
        help_requests=help_requests_for(db.session, enrolment),
        note=education_note(enrolment.care_gap_code, locale) if detail else None,
        offer=offer, zone=patient_zone(db.session, enrolment) if offer else None,
        medicine=medicine if refill_part else None,
        refill_requests=refills.refill_requests_for(db.session, enrolment) if refill_part else [],
        refill_form=RefillForm(data={"pharmacy": enrolment.patient.pharmacy}) if refill_part else None)


@bp.get("/visit/choose")
@verified_required
def choose():
    enrolment = current_enrolment()
    return render_template("patient/choose.html", enrolment=enrolment,
                           types=availability.appointment_types_for(db.session, enrolment),
                           locations=availability.open_locations(db.session, enrolment.campaign.clinic_id))


def render_times(type_id: int | None, location_id: int | None, window: str, after_slot_id: int | None = None,
                 status: int = 200, taken: bool = False, pair: dict | None = None,
                 between: tuple | None = None):
    """The times page: soonest open times for a type (and location), one page at a time."""
    enrolment = current_enrolment()
    try:
        appointment_type = availability.appointment_type_for(db.session, enrolment, type_id)
        location = None
        if appointment_type.modality == Modality.IN_PERSON:
            location = availability.location_for(db.session, enrolment.campaign.clinic_id, location_id)
    except NotAvailable:
        return redirect(url_for("patient.choose"), code=303)
    if window not in availability.Window.ALL:
        window = availability.Window.ANY
    page = availability.search_slots(db.session, enrolment, appointment_type, location, window=window,
                                     after_slot_id=after_slot_id, limit=current_app.config["SLOTS_PER_PAGE"],
                                     between=between)
    return render_template("patient/times.html", enrolment=enrolment, appointment_type=appointment_type,
                           location=location, window=window, page=page, taken=taken, pair=pair,
                           days=availability.group_by_local_day(page.slots), form=SlotChoiceForm()), status


@bp.get("/visit/times")
@verified_required
def times():
    return render_times(int_arg("type"), int_arg("location"), request.args.get("when", ""), int_arg("after"))


def _taken(type_id: int, slot_id: int):
    """The polite loser's page: the next open times for the same kind of visit and place."""
    db.session.rollback()
    slot = db.session.get(Slot, slot_id)
    return render_times(type_id, slot.location_id if slot else None, availability.Window.ANY, status=409, taken=True)


def _cannot_choose(form: SlotChoiceForm):
    """A time or kind of visit that isn't on offer to this patient (an edited or stale form)."""
    errors = form.slot.errors or form.appointment_type.errors
    return render_template("errors/error.html", code=400, title=_("Something in the form wasn't right"),
                           message=errors[0] if errors else _("Please choose a time.")), 400


@bp.post("/visit/hold")
@verified_required
def hold():
    enrolment = current_enrolment()
    form = SlotChoiceForm()
    if not form.validate():
        return _cannot_choose(form)
    try:
        appointment_type = availability.appointment_type_for(db.session, enrolment, form.appointment_type.data)
        slot = booking.hold_slot(db.session, enrolment, appointment_type, form.slot.data,
                                 hold_for=timedelta(minutes=current_app.config["HOLD_MINUTES"]))
    except NotAvailable:
        return _cannot_choose(form)
    except SlotTaken:
        return _taken(form.appointment_type.data, form.slot.data)
    commit()
    return redirect(url_for("patient.review", type=appointment_type.id, slot=slot.id), code=303)


@bp.get("/visit/review")
@verified_required
def review():
    enrolment = current_enrolment()
    slot = booking.held_slot(db.session, enrolment, int_arg("slot"))
    try:
        appointment_type = availability.appointment_type_for(db.session, enrolment, int_arg("type"))
    except NotAvailable:
        return redirect(url_for("patient.choose"), code=303)
    if slot is None:  # the hold ran out: choose again
        return redirect(url_for("patient.choose"), code=303)
    current = booking.live_appointment(db.session, enrolment)
    pairable = appointment_type.service == "lab" and current is None
    return render_template("patient/review.html", enrolment=enrolment, slot=slot, appointment_type=appointment_type,
                           current=current, form=SlotChoiceForm(),
                           follow_up_types=availability.follow_up_types(db.session, enrolment) if pairable else [])


@bp.post("/visit/book")
@verified_required
def book():
    enrolment = current_enrolment()
    form = SlotChoiceForm()
    if not form.validate():
        return _cannot_choose(form)
    try:
        appointment_type = availability.appointment_type_for(db.session, enrolment, form.appointment_type.data)
        booking.book_slot(db.session, enrolment, appointment_type, form.slot.data,
                          link_id=current_patient_session().link_id)
    except NotAvailable:
        return _cannot_choose(form)
    except SlotTaken:
        return _taken(form.appointment_type.data, form.slot.data)
    commit()
    return redirect(url_for("patient.booked"), code=303)


@bp.get("/visit/booked")
@verified_required
def booked():
    enrolment = current_enrolment()
    appointment, follow_up = booking.live_appointments(db.session, enrolment)
    if appointment is None:
        return redirect(url_for("patient.home"), code=303)
    return render_template("patient/booked.html", enrolment=enrolment, appointment=appointment,
                           follow_up=follow_up)


@bp.get("/visit/appointment.ics")
@verified_required
def calendar_file():
    enrolment = current_enrolment()
    appointment = booking.live_appointment(db.session, enrolment)
    if appointment is None:
        return redirect(url_for("patient.home"), code=303)
    body = appointment_ics(appointment, enrolment, current_app.config["BASE_URL"])
    return Response(body, mimetype="text/calendar",
                    headers={"Content-Disposition": 'attachment; filename="visit.ics"'})


@bp.route("/visit/cancel", methods=["GET", "POST"])
@verified_required
def cancel():
    enrolment = current_enrolment()
    appointment = booking.live_appointment(db.session, enrolment)
    if appointment is None:
        return redirect(url_for("patient.home"), code=303)
    form = CancelForm()
    if request.method == "GET":
        return render_template("patient/cancel.html", form=form, appointment=appointment, enrolment=enrolment)
    if not form.validate():
        return render_template("patient/cancel.html", form=form, appointment=appointment, enrolment=enrolment), 400
    booking.cancel_appointment(db.session, enrolment, reason=form.reason.data or "")
    commit()
    flash(_("Your visit is cancelled. You can choose a new time whenever you are ready."))
    return redirect(url_for("patient.home"), code=303)
