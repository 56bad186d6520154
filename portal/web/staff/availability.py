"""Availability for schedulers: weekly templates (and monthly ones such as "first
Saturday"), generating slots from them, blocks and copying a week. A change that
would take a booked time away lists the bookings and keeps them."""
from __future__ import annotations

from collections import Counter

from flask import abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _, ngettext
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import AvailabilityBlock, AvailabilityTemplate, Location, Provider, Slot, utcnow
from portal.services import clinic_setup, schedule
from portal.services.clinic_setup import SetupRejected
from portal.services.errors import InvalidInput, NotAvailable
from portal.web.common import commit
from portal.web.staff import bp
from portal.web.staff.access import SCHEDULING, record_access, roles_required
from portal.web.staff.forms import (BlockDaysForm, BlockTimeForm, ConfirmForm, CopyWeekForm, GenerateForm,
                                    MonthlyTemplateForm, TemplateForm)
from portal.web.staff.setup import reject


def _choices(form, *, keep_provider: int | None = None, keep_location: int | None = None,
             whole_location: bool = False) -> None:
    """Fill the provider and location selects with what is open (plus a template's own,
    retired or not, so an old template can still be edited down or ended)."""
    providers = db.session.scalars(select(Provider).where(Provider.retired.is_(False) | (Provider.id == keep_provider))
                                   .order_by(Provider.display_name)).all()
    locations = db.session.scalars(select(Location).where(Location.retired.is_(False) | (Location.id == keep_location))
                                   .order_by(Location.name)).all()
    if getattr(form, "provider", None) is not None:
        first = [("", _("Everyone at the location"))] if whole_location else [("", _("Choose…"))]
        form.provider.choices = first + [(p.id, p.display_name) for p in providers]
    if getattr(form, "location", None) is not None:
        form.location.choices = [("", _("Choose…"))] + [(loc.id, loc.name) for loc in locations]


def _people(bookings, via: str):
    """Bookings with their patients' names; listing them is an audited view."""
    rows = clinic_setup.with_patients(db.session, bookings)
    for appointment, _patient in rows:
        record_access("view", "appointment", appointment.id, via=via)
    return rows


def _template(template_id: int) -> AvailabilityTemplate:
    return db.session.get(AvailabilityTemplate, template_id) or abort(404)


def _today_at(location_id: int):
    location = db.session.get(Location, location_id)
    return clinic_setup.local_today(location) if location else utcnow().date()


# -- templates ----------------------------------------------------------------------------------

@bp.get("/availability")
@roles_required(*SCHEDULING)
def availability():
    templates = db.session.scalars(select(AvailabilityTemplate).order_by(
        AvailabilityTemplate.active.desc(), AvailabilityTemplate.location_id, AvailabilityTemplate.provider_id,
        AvailabilityTemplate.valid_from, AvailabilityTemplate.id)).all()
    future = dict(db.session.execute(select(Slot.template_id, func.count()).where(
        Slot.template_id.is_not(None), Slot.starts_at >= utcnow()).group_by(Slot.template_id)).all())
    return render_template("staff/availability/templates.html", templates=templates, future=future,
                           **_names())


def _names() -> dict:
    locations = db.session.execute(select(Location.id, Location.name, Location.time_zone)).all()
    return {"provider_names": dict(db.session.execute(select(Provider.id, Provider.display_name)).all()),
            "location_names": {row.id: row.name for row in locations},
            "location_zones": {row.id: row.time_zone for row in locations}}


@bp.route("/availability/templates/new", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def new_template():
    form = TemplateForm()
    _choices(form)
    if request.method == "GET":
        if not form.weekdays.data:
            form.weekdays.data = ["0", "1", "2", "3", "4"]
        return render_template("staff/availability/template_form.html", form=form, template=None)
    if form.validate():
        try:
            template = clinic_setup.create_template(db.session, **form.template_values())
        except SetupRejected as error:
            db.session.rollback()
            reject(form, error)
        else:
            commit()
            flash(_("Template saved. Generate slots to offer these times to patients."))
            return redirect(url_for("staff.availability_template", template_id=template.id), code=303)
    return render_template("staff/availability/template_form.html", form=form, template=None), 400


@bp.get("/availability/templates/<int:template_id>")
@roles_required(*SCHEDULING)
def availability_template(template_id: int):
    """The template, its future slots, and any bookings left on slots that no longer fit."""
    template = _template(template_id)
    try:
        stranded = schedule.affected_bookings(db.session, template, {})
    except (InvalidInput, NotAvailable):
        stranded = []
    now = utcnow()
    counts = Counter()
    for booked, capacity, blocked in db.session.execute(
            select(Slot.booked_count, Slot.capacity, Slot.blocked)
            .where(Slot.template_id == template.id, Slot.starts_at >= now)):
        counts["slots"] += 1
        counts["booked"] += booked > 0
        counts["blocked"] += blocked
    rows = _people(stranded, "availability_template")
    commit()
    return render_template("staff/availability/template.html", template=template, counts=counts, stranded=rows,
                           generate_form=GenerateForm(), confirm=ConfirmForm(),
                           provider=db.session.get(Provider, template.provider_id),
                           location=db.session.get(Location, template.location_id))


@bp.route("/availability/templates/<int:template_id>/edit", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def edit_template(template_id: int):
    """Edit in two steps when needed: if the change would leave booked visits on
    times the template no longer offers, show them and ask before saving. Saving
    keeps those visits booked (their slots stop selling) and brings the open slots
    in line at once."""
    template = _template(template_id)
    form = TemplateForm(obj=None)
    _choices(form, keep_provider=template.provider_id, keep_location=template.location_id)
    page = "staff/availability/template_form.html"
    if request.method == "GET":
        form.provider.data, form.location.data = template.provider_id, template.location_id
        form.modality.data, form.weekdays.data = template.modality, list(template.weekdays)
        for name in ("start_time", "end_time", "slot_minutes", "capacity", "valid_from", "valid_until"):
            getattr(form, name).data = getattr(template, name)
        return render_template(page, form=form, template=template)
    if not form.validate():
        return render_template(page, form=form, template=template), 400
    values = form.template_values()
    try:
        affected = clinic_setup.preview_template_change(db.session, template, values)
        if affected and form.confirm.data != "1":
            rows = _people(affected, "availability_edit")
            commit()
            form.confirm.data = "1"
            return render_template(page, form=form, template=template, affected=rows)
        result = clinic_setup.update_template(db.session, template, values, today=_today_at(values["location_id"]))
    except SetupRejected as error:
        db.session.rollback()
        reject(form, error)
        return render_template(page, form=form, template=template), 400
    _people(result.conflicts, "availability_edit")
    commit()
    _flash_result(result)
    return redirect(url_for("staff.availability_template", template_id=template.id), code=303)


def _flash_result(result: schedule.GenerationResult) -> None:
    flash(_("Slots: %(created)d added, %(removed)d open ones removed, %(updated)d updated.",
            created=result.created, removed=result.removed, updated=result.updated))
    if result.conflicts:
        flash(ngettext("%(num)d booked visit no longer fits and was kept. It is listed below: call the patient.",
                       "%(num)d booked visits no longer fit and were kept. They are listed below: call those patients.",
                       len(result.conflicts)))


@bp.route("/availability/templates/<int:template_id>/deactivate", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def deactivate_template(template_id: int):
    """GET lists the bookings that ending the template would strand; POST ends it
    (open slots removed, booked ones kept)."""
    template = _template(template_id)
    form = ConfirmForm()
    if request.method == "GET":
        try:
            affected = clinic_setup.preview_template_change(db.session, template, {"active": False})
        except SetupRejected:
            affected = []
        rows = _people(affected, "availability_deactivate")
        commit()
        return render_template("staff/availability/deactivate.html", template=template, affected=rows, form=form)
    try:
        result = clinic_setup.update_template(db.session, template, {"active": False},
                                              today=_today_at(template.location_id))
    except SetupRejected:
        db.session.rollback()
        abort(400)
    _people(result.conflicts, "availability_deactivate")
    commit()
    _flash_result(result)
    return redirect(url_for("staff.availability_template", template_id=template.id), code=303)


@bp.post("/availability/templates/<int:template_id>/activate")
@roles_required(*SCHEDULING)
def activate_template(template_id: int):
    template = _template(template_id)
    try:
        result = clinic_setup.update_template(db.session, template, {"active": True},
                                              today=_today_at(template.location_id))
    except SetupRejected as error:
        db.session.rollback()
        flash(_("This template's provider or location is retired. Restore it first.") if error.reason == "retired"
              else _("This template can't make slots. Edit it first."))
        return redirect(url_for("staff.availability_template", template_id=template.id), code=303)
    commit()
    _flash_result(result)
    return redirect(url_for("staff.availability_template", template_id=template.id), code=303)


@bp.post("/availability/templates/<int:template_id>/generate")
@roles_required(*SCHEDULING)
def generate_slots(template_id: int):
    """Make the template's slots for the coming days; safe to press twice."""
    template = _template(template_id)
    form = GenerateForm()
    if not form.validate():
        flash(_("Enter how many days ahead, from 1 to 366."))
        return redirect(url_for("staff.availability_template", template_id=template.id), code=303)
    try:
        result = clinic_setup.generate_template_slots(db.session, template, today=_today_at(template.location_id),
                                                      horizon_days=form.horizon_days.data)
    except SetupRejected as error:
        db.session.rollback()
        flash(_("This template's provider or location is retired. Restore it first.") if error.reason == "retired"
              else _("This template can't make slots. Edit it first."))
        return redirect(url_for("staff.availability_template", template_id=template.id), code=303)
    _people(result.conflicts, "availability_generate")
    commit()
    _flash_result(result)
    return redirect(url_for("staff.availability_template", template_id=template.id), code=303)


@bp.route("/availability/monthly", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def monthly_templates():
    """"First Saturday 9-12": one single-day template per month."""
    form = MonthlyTemplateForm()
    _choices(form)
    page = "staff/availability/monthly.html"
    if request.method == "GET":
        return render_template(page, form=form)
    if form.validate():
        try:
            made = clinic_setup.create_monthly_templates(
                db.session, provider_id=form.provider.data, location_id=form.location.data,
                modality=form.modality.data, weekday=int(form.weekday.data), nth=int(form.nth.data),
                start_time=form.start_time.data, end_time=form.end_time.data, slot_minutes=form.slot_minutes.data,
                capacity=form.capacity.data, first_month=form.first_month.data, months=form.months.data)
            today = _today_at(form.location.data)
            created = sum(clinic_setup.generate_template_slots(db.session, t, today=today).created for t in made)
        except SetupRejected as error:
            db.session.rollback()
            reject(form, error)
        else:
            commit()
            flash(_("Monthly templates saved: %(templates)d. Slots added: %(slots)d.", templates=len(made),
                    slots=created))
            return redirect(url_for("staff.availability"), code=303)
    return render_template(page, form=form), 400


# -- blocks -------------------------------------------------------------------------------------

def _block_forms(time_form=None, days_form=None):
    time_form = time_form or BlockTimeForm(prefix="time")
    days_form = days_form or BlockDaysForm(prefix="days")
    for form in (time_form, days_form):
        _choices(form, whole_location=True)
    return time_form, days_form


def _blocks_page(time_form, days_form, status: int = 200, bookings=None):
    location_filter = request.args.get("location", "")
    location_id = int(location_filter) if location_filter.isdigit() and len(location_filter) < 12 else None
    rows = clinic_setup.upcoming_blocks(db.session, location_id)
    return render_template("staff/availability/blocks.html", time_form=time_form, days_form=days_form, blocks=rows,
                           bookings=bookings or [], confirm=ConfirmForm(), location_id=location_id,
                           **_names()), status


@bp.get("/availability/blocks")
@roles_required(*SCHEDULING)
def blocks():
    return _blocks_page(*_block_forms())


def _after_block(result: schedule.BlockResult, time_form, days_form):
    rows = _people(result.bookings, "availability_block")
    commit()
    flash(_("Blocked. Slots closed to new bookings: %(count)d.", count=result.slots_blocked))
    if rows:
        # Shown at once rather than after a redirect: these people still have to be called.
        flash(ngettext("%(num)d visit inside the block is still booked: call the patient to move it.",
                       "%(num)d visits inside the block are still booked: call those patients to move them.",
                       len(rows)))
        return _blocks_page(time_form, days_form, 200, rows)
    return redirect(url_for("staff.blocks"), code=303)


@bp.post("/availability/blocks/time")
@roles_required(*SCHEDULING)
def block_time():
    """Block part of a day: a closed afternoon, a staff meeting."""
    time_form, days_form = _block_forms(BlockTimeForm(prefix="time"))
    if not time_form.validate():
        return _blocks_page(time_form, days_form, 400)
    try:
        result = clinic_setup.block_local_time(
            db.session, location_id=time_form.location.data, provider_id=time_form.provider.data,
            day=time_form.day.data, start_time=time_form.start_time.data, end_time=time_form.end_time.data,
            reason=time_form.reason.data or "", staff_id=g.staff.id)
    except SetupRejected as error:
        db.session.rollback()
        reject(time_form, error)
        return _blocks_page(time_form, days_form, 400)
    return _after_block(result, *_block_forms())


@bp.post("/availability/blocks/days")
@roles_required(*SCHEDULING)
def block_days():
    """Block whole days: a holiday, a vacation."""
    time_form, days_form = _block_forms(None, BlockDaysForm(prefix="days"))
    if not days_form.validate():
        return _blocks_page(time_form, days_form, 400)
    try:
        result = clinic_setup.block_local_days(
            db.session, location_id=days_form.location.data, provider_id=days_form.provider.data,
            first_day=days_form.first_day.data, last_day=days_form.last_day.data or days_form.first_day.data,
            reason=days_form.reason.data or "", staff_id=g.staff.id)
    except SetupRejected as error:
        db.session.rollback()
        reject(days_form, error)
        return _blocks_page(time_form, days_form, 400)
    return _after_block(result, *_block_forms())


@bp.post("/availability/blocks/<int:block_id>/remove")
@roles_required(*SCHEDULING)
def remove_block(block_id: int):
    block = db.session.get(AvailabilityBlock, block_id) or abort(404)
    try:
        reopened = schedule.unblock(db.session, block)
    except NotAvailable:
        db.session.rollback()
        abort(400)
    commit()
    flash(_("Block removed. Slots open again: %(count)d.", count=reopened))
    return redirect(url_for("staff.blocks"), code=303)


# -- copy a week --------------------------------------------------------------------------------

@bp.route("/availability/copy-week", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def copy_week():
    form = CopyWeekForm()
    _choices(form)
    page = "staff/availability/copy_week.html"
    if request.method == "GET":
        return render_template(page, form=form)
    if form.validate():
        try:
            created = clinic_setup.copy_local_week(db.session, provider_id=form.provider.data,
                                                   location_id=form.location.data, source_day=form.source_day.data,
                                                   target_day=form.target_day.data)
        except SetupRejected as error:
            db.session.rollback()
            reject(form, error)
        else:
            commit()
            flash(_("Slots copied: %(count)d. Times already there were left as they were.", count=created))
            return redirect(url_for("staff.copy_week"), code=303)
    return render_template(page, form=form), 400

