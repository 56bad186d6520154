"""The coordinators' work queue: help requests, locked links, people to call."""
from __future__ import annotations

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from portal.extensions import db
from portal.models import Enrolment, HelpNote, HelpRequest, RefillRequest
from portal.services import dispatch, refills, work_queue
from portal.services.errors import InvalidInput
from portal.web.common import commit
from portal.web.staff import bp
from portal.web.staff.access import QUEUE, record_access, roles_required
from portal.web.staff.forms import NoteForm, OutreachForm


@bp.get("/queue")
@roles_required(*QUEUE)
def queue():
    kind = request.args.get("kind", "")
    if kind not in ("", "help", "refill", "locked", "call"):
        kind = ""
    mine = request.args.get("mine") == "1"
    items = work_queue.open_queue(db.session, kind=kind, mine_only_staff_id=g.staff.id if mine else None)
    return render_template("staff/queue.html", items=items, kind=kind, mine=mine)


def _help_request(help_id: int) -> HelpRequest:
    request_row = db.session.get(HelpRequest, help_id)
    if request_row is None:
        abort(404)
    return request_row


@bp.get("/help/<int:help_id>")
@roles_required(*QUEUE)
def help_request(help_id: int):
    row = _help_request(help_id)
    enrolment = db.session.get(Enrolment, row.enrolment_id)
    record_access("view", "help_request", row.id, patient_id=enrolment.patient_id)
    commit()
    notes = db.session.scalars(select(HelpNote).where(HelpNote.help_request_id == row.id).order_by(HelpNote.id)).all()
    return render_template("staff/help_request.html", item=row, enrolment=enrolment, notes=notes, form=NoteForm())


@bp.post("/help/<int:help_id>")
@roles_required(*QUEUE)
def update_help_request(help_id: int):
    row = _help_request(help_id)
    action = request.form.get("action", "")
    form = NoteForm()
    if action == "assign":
        work_queue.assign_help(db.session, row, g.staff)
    elif action in ("note", "resolve"):
        if not form.validate():
            enrolment = db.session.get(Enrolment, row.enrolment_id)
            notes = db.session.scalars(select(HelpNote).where(HelpNote.help_request_id == row.id)).all()
            return render_template("staff/help_request.html", item=row, enrolment=enrolment, notes=notes,
                                   form=form), 400
        work_queue.add_help_note(db.session, row, g.staff, form.text.data)
        if action == "resolve":
            work_queue.resolve_help(db.session, row, g.staff, form.text.data)
    else:
        abort(400)
    record_access("update", "help_request", row.id, action=action)
    commit()
    flash(_("Saved."))
    return redirect(url_for("staff.help_request", help_id=row.id), code=303)


@bp.post("/enrolments/<int:enrolment_id>/calls")
@roles_required(*QUEUE)
def log_call(enrolment_id: int):
    enrolment = db.session.get(Enrolment, enrolment_id) or abort(404)
    form = OutreachForm()
    if not form.validate():
        flash(_("Choose how the call went."))
        return redirect(url_for("staff.enrolment", enrolment_id=enrolment.id), code=303)
    work_queue.log_outreach(db.session, enrolment, g.staff, form.outcome.data, form.note.data or "")
    record_access("update", "enrolment", enrolment.id, action="call_logged", outcome=form.outcome.data)
    commit()
    flash(_("Call logged."))
    return redirect(url_for("staff.enrolment", enrolment_id=enrolment.id), code=303)


@bp.post("/enrolments/<int:enrolment_id>/unlock")
@roles_required(*QUEUE)
def unlock(enrolment_id: int):
    enrolment = db.session.get(Enrolment, enrolment_id) or abort(404)
    work_queue.unlock_enrolment(db.session, enrolment, g.staff)
    record_access("update", "enrolment", enrolment.id, action="unlocked")
    commit()
    flash(_("The link works again."))
    return redirect(url_for("staff.enrolment", enrolment_id=enrolment.id), code=303)


@bp.post("/refills/<int:refill_id>")
@roles_required(*QUEUE)
def update_refill(refill_id: int):
    """Move a refill request along: sent to the pharmacy, done, or needs a visit first."""
    row = db.session.get(RefillRequest, refill_id) or abort(404)
    try:
        refills.set_refill_status(db.session, row, request.form.get("status", ""))
    except InvalidInput:
        abort(400)
    record_access("update", "refill_request", row.id, status=row.status)
    commit()
    flash(_("Saved."))
    return redirect(url_for("staff.queue", kind="refill"), code=303)


@bp.get("/dead-letters")
@roles_required(*QUEUE)
def dead_letter_list():
    """Messages the dispatcher gave up on, so someone can fix the address and try again."""
    return render_template("staff/dead_letters.html", messages=dispatch.dead_letters(db.session))


@bp.post("/dead-letters/<int:message_id>")
@roles_required(*QUEUE)
def requeue(message_id: int):
    if not dispatch.requeue_dead_letter(db.session, message_id):
        abort(404)
    commit()
    flash(_("The message will be sent again."))
    return redirect(url_for("staff.dead_letter_list"), code=303)
