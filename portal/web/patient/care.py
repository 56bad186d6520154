"""Refills and lab visits: the paths that don't start with a doctor's visit."""
from __future__ import annotations

from datetime import timedelta

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from portal.extensions import db
from portal.models import Modality, Slot
from portal.services import availability, booking, refills
from portal.services.errors import InvalidInput, NotAvailable, SlotTaken
from portal.web.common import commit
from portal.web.patient import bp
from portal.web.patient.booking import int_arg, render_times
from portal.web.patient.context import current_enrolment, current_patient_session, verified_required
from portal.web.patient.forms import PairForm, RefillForm


@bp.post("/visit/refill/<kind>")
@verified_required
def ask_for_refill(kind: str):
    enrolment = current_enrolment()
    form = RefillForm()
    if enrolment.care_gap_code != "refill_gap" or not form.validate():
        return redirect(url_for("patient.home"), code=303)
    try:
        refills.request_refill(db.session, enrolment, kind, form.pharmacy.data or "")
    except InvalidInput:
        return redirect(url_for("patient.home"), code=303)
    commit()
    flash(_("We sent your refill request to the care team.") if kind == "refill"
          else _("A pharmacist will call you."))
    return redirect(url_for("patient.home"), code=303)


@bp.post("/visit/refill-stopped")
@verified_required
def refill_stopped():
    enrolment = current_enrolment()
    if enrolment.care_gap_code == "refill_gap" and RefillForm().validate():
        refills.stopped_on_purpose(db.session, enrolment)
        commit()
        flash(_("Thank you for telling us. We won't send reminders about this medicine."))
    return redirect(url_for("patient.home"), code=303)


def _pair_window(first: Slot):
    return first.starts_at + booking.PAIR_GAP[0], first.starts_at + booking.PAIR_GAP[1]


@bp.get("/visit/follow-up")
@verified_required
def follow_up_times():
    """Times for the follow-up visit, 2 to 21 days after the held lab visit."""
    enrolment = current_enrolment()
    first = booking.held_slot(db.session, enrolment, int_arg("first"))
    types = availability.follow_up_types(db.session, enrolment)
    if first is None or not types:
        return redirect(url_for("patient.choose"), code=303)
    chosen = next((t for t in types if t.id == int_arg("type")), types[0])
    location_id = first.location_id if chosen.modality == Modality.IN_PERSON else None
    return render_times(chosen.id, location_id, request.args.get("when", ""), int_arg("after"),
                        pair={"first": first, "first_type": int_arg("first_type"), "types": types},
                        between=_pair_window(first))


@bp.post("/visit/hold-follow-up")
@verified_required
def hold_follow_up():
    enrolment = current_enrolment()
    form = PairForm()
    if not form.validate():
        return redirect(url_for("patient.choose"), code=303)
    try:
        second_type = availability.appointment_type_for(db.session, enrolment, form.second_type.data)
        booking.hold_slot(db.session, enrolment, second_type, form.second.data, keep_slot_id=form.first.data,
                          hold_for=timedelta(minutes=current_app.config["HOLD_MINUTES"]))
    except NotAvailable:
        return redirect(url_for("patient.choose"), code=303)
    except SlotTaken:
        db.session.rollback()
        flash(_("Sorry, someone just took that time. Please pick another one."))
        return redirect(url_for("patient.follow_up_times", first=form.first.data, first_type=form.first_type.data,
                                type=form.second_type.data), code=303)
    commit()
    return redirect(url_for("patient.review_pair", **{k: form[k].data for k in ("first", "first_type", "second",
                                                                                  "second_type")}), code=303)


def _pair_from(values) -> tuple | None:
    enrolment = current_enrolment()
    try:
        first_type = availability.appointment_type_for(db.session, enrolment, values("first_type"))
        second_type = availability.appointment_type_for(db.session, enrolment, values("second_type"))
    except NotAvailable:
        return None
    return first_type, second_type


@bp.get("/visit/review-pair")
@verified_required
def review_pair():
    enrolment = current_enrolment()
    types = _pair_from(int_arg)
    first = booking.held_slot(db.session, enrolment, int_arg("first"))
    second = booking.held_slot(db.session, enrolment, int_arg("second"))
    if types is None or first is None or second is None:
        return redirect(url_for("patient.choose"), code=303)
    return render_template("patient/review_pair.html", enrolment=enrolment, first=first, second=second,
                           first_type=types[0], second_type=types[1], form=PairForm())


@bp.post("/visit/book-pair")
@verified_required
def book_pair():
    enrolment = current_enrolment()
    form = PairForm()
    types = _pair_from(lambda name: form[name].data) if form.validate() else None
    if types is None:
        return redirect(url_for("patient.choose"), code=303)
    try:
        booking.book_pair(db.session, enrolment, (types[0], form.first.data), (types[1], form.second.data),
                          link_id=current_patient_session().link_id)
    except NotAvailable:
        return redirect(url_for("patient.choose"), code=303)
    except SlotTaken:
        db.session.rollback()
        flash(_("Sorry, one of those times was just taken, so nothing was booked. Please choose again."))
        return redirect(url_for("patient.choose"), code=303)
    commit()
    return redirect(url_for("patient.booked"), code=303)


