"""Patient records in the console: search, a patient's enrolments, booking or
moving a visit on their behalf. Every view and change is audited."""
from __future__ import annotations

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from portal.extensions import db
from portal.models import Appointment, Enrolment, FormResponse, HelpRequest, Patient, Role
from portal.services import availability, booking, work_queue
from portal.services.errors import InvalidInput, NoLiveAppointment, NotAvailable, SlotTaken
from portal.web.common import commit
from portal.web.patient.forms import SlotChoiceForm
from portal.web.staff import bp
from portal.web.staff.access import SCHEDULE_VIEW, record_access, roles_required
from portal.web.staff.forms import OutreachForm


@bp.get("/patients")
@roles_required(*SCHEDULE_VIEW)
def patients():
    text = request.args.get("q", "")[:100]
    found = work_queue.find_patients(db.session, text)
    for patient in found:
        record_access("search", "patient", patient.id)
    commit()
    return render_template("staff/patients.html", patients=found, q=text)


@bp.get("/patients/<int:patient_id>")
@roles_required(*SCHEDULE_VIEW)
def patient(patient_id: int):
    row = db.session.get(Patient, patient_id) or abort(404)
    enrolments = db.session.scalars(select(Enrolment).where(Enrolment.patient_id == row.id)).all()
    record_access("view", "patient", row.id)
    commit()
    return render_template("staff/patient.html", patient=row, enrolments=enrolments)


@bp.get("/enrolments/<int:enrolment_id>")
@roles_required(*SCHEDULE_VIEW)
def enrolment(enrolment_id: int):
    row = db.session.get(Enrolment, enrolment_id) or abort(404)
    sees_help = g.staff.role in (Role.ADMIN, Role.COORDINATOR)  # billing and transport notes
    record_access("view", "enrolment", row.id, patient_id=row.patient_id)
    commit()
    types = availability.appointment_types_for(db.session, row)
    return render_template(
        "staff/enrolment.html", enrolment=row, appointment=booking.live_appointment(db.session, row),
        appointments=db.session.scalars(select(Appointment).where(Appointment.enrolment_id == row.id)
                                        .order_by(Appointment.id.desc())).all(),
        forms=db.session.scalars(select(FormResponse).where(FormResponse.enrolment_id == row.id)).all()
        if sees_help else [],
        help_requests=db.session.scalars(select(HelpRequest).where(HelpRequest.enrolment_id == row.id)).all()
        if sees_help else [],
        history=work_queue.enrolment_history(db.session, row), types=types,
        open_slots={t.id: availability.search_slots(db.session, row, t, None, limit=8).slots for t in types},
        call_form=OutreachForm(), book_form=SlotChoiceForm())


@bp.post("/enrolments/<int:enrolment_id>/book")
@roles_required(*SCHEDULE_VIEW)
def book_for_patient(enrolment_id: int):
    """Book or move a visit on the patient's behalf, under the portal's atomic rules."""
    row = db.session.get(Enrolment, enrolment_id) or abort(404)
    form = SlotChoiceForm()
    if not form.validate():
        abort(400)
    try:
        appointment_type = availability.appointment_type_for(db.session, row, form.appointment_type.data)
        appointment = booking.book_slot(db.session, row, appointment_type, form.slot.data, via="staff", actor="staff")
    except NotAvailable:
        abort(400)
    except SlotTaken:
        db.session.rollback()
        flash(_("Someone else just booked that time. Choose another."))
        return redirect(url_for("staff.enrolment", enrolment_id=enrolment_id), code=303)
    record_access("update", "appointment", appointment.id, action="booked_for_patient")
    commit()
    flash(_("Booked."))
    return redirect(url_for("staff.enrolment", enrolment_id=row.id), code=303)


@bp.post("/appointments/<int:appointment_id>/status")
@roles_required(*SCHEDULE_VIEW)
def appointment_status(appointment_id: int):
    """Attended, no-show, or cancelled by the clinic."""
    appointment = db.session.get(Appointment, appointment_id) or abort(404)
    outcome = request.form.get("status", "")
    try:
        if outcome == "cancelled_by_clinic":
            row = db.session.get(Enrolment, appointment.enrolment_id)
            if booking.live_appointment(db.session, row) is not appointment:
                raise NoLiveAppointment()
            booking.cancel_appointment(db.session, row, reason="clinic", actor="staff")
        else:
            booking.record_visit_outcome(db.session, appointment, outcome)
    except NoLiveAppointment:
        flash(_("That visit is no longer booked."))
        return redirect(url_for("staff.schedule"), code=303)
    except InvalidInput:
        abort(400)
    record_access("update", "appointment", appointment.id, change=outcome)
    commit()
    flash(_("Saved."))
    return redirect(url_for("staff.schedule", day=request.form.get("day", "")[:10],
                            location=request.form.get("location", "")[:12]), code=303)
