"""Clinic setup for schedulers: locations, providers and appointment types.
List, create, edit, retire (and restore); nothing a booking points to is deleted."""
from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _, lazy_gettext as _l, ngettext
from sqlalchemy import select

from portal.extensions import db
from portal.models import AppointmentType, Clinic, Location, Provider
from portal.services import clinic_setup
from portal.services.clinic_setup import SetupRejected
from portal.web.common import commit
from portal.web.staff import bp
from portal.web.staff.access import SCHEDULING, record_access, roles_required
from portal.web.staff.forms import (ConfirmForm, ProviderForm, appointment_type_form_class, location_form_class)

# What each SetupRejected reason means to the person at the form.
REASONS = {
    "required": _l("Please fill this in."),
    "too_long": _l("That is too long. Please shorten it."),
    "markup": _l("Please remove the < and > characters."),
    "format": _l("That doesn't look right. Please check it."),
    "unknown_zone": _l("Enter a time zone from the IANA list, like America/Chicago."),
    "out_of_range": _l("That is outside the allowed range."),
    "unknown_choice": _l("Choose one of the options."),
    "duplicate": _l("Another appointment type already uses this code."),
    "join_url": _l("Enter an https:// link that contains {code} once, where the visit's video code goes."),
    "retired": _l("This one is retired. Restore it first, or choose another."),
    "schedule": _l("These settings don't make a workable schedule. Please check the times and dates."),
}
SPECIFIC = {
    ("time_zone", "schedule"): _l("This location has future slots. Their times would move, so the time zone can't "
                                  "change now. Retire it and add a new location instead."),
    ("max_days_ahead", "out_of_range"): _l("Patients must be able to book further ahead than the soonest notice."),
    ("end_time", "out_of_range"): _l("The end must be after the start, on the same day."),
    ("last_day", "out_of_range"): _l("The last day must not be before the first day, and at most a year later."),
    ("target_day", "out_of_range"): _l("Choose a different week to copy onto."),
}


def reject(form, error: SetupRejected) -> None:
    """Show a service's refusal next to the field it names (or at the top)."""
    message = SPECIFIC.get((error.field, error.reason)) or REASONS.get(error.reason, REASONS["format"])
    aliases = {"provider_id": "provider", "location_id": "location"}
    field = getattr(form, aliases.get(error.field, error.field), None) if error.field else None
    if field is not None and hasattr(field, "errors") and field.name != "csrf_token":
        field.errors = [*field.errors, message]
    else:
        form.form_errors.append(message)


def _languages() -> tuple[str, ...]:
    return tuple(current_app.config["LANGUAGES"])


def _texts(form, prefix: str) -> dict[str, str]:
    return {lang: getattr(form, f"{prefix}_{lang}").data or "" for lang in _languages()}


def _prepare_clinic(form) -> None:
    """Offer a choice of clinic only when there is more than one."""
    clinics = db.session.scalars(select(Clinic).order_by(Clinic.id)).all()
    if len(clinics) > 1:
        form.clinic.choices = [(c.id, c.name) for c in clinics]
    else:
        del form.clinic


def _clinic_id(form) -> int | None:
    if getattr(form, "clinic", None) is not None:  # wtforms leaves None behind a deleted field
        return form.clinic.data
    return db.session.scalar(select(Clinic.id).order_by(Clinic.id).limit(1))


def _no_clinic(form) -> bool:
    if _clinic_id(form) is None:
        form.form_errors.append(_("There is no clinic yet. Run `portal demo` or import the clinic first."))
        return True
    return False


def _get(model, row_id: int):
    return db.session.get(model, row_id) or abort(404)


def _people(bookings):
    """Future bookings with their patients; each listing is an audited view."""
    rows = clinic_setup.with_patients(db.session, bookings)
    for appointment, _patient in rows:
        record_access("view", "appointment", appointment.id, via="clinic_setup")
    return rows


def _retire_page(kind: str, row, bookings, form, status: int = 200):
    return render_template("staff/setup/retire.html", kind=kind, row=row, bookings=_people(bookings), form=form,
                           action=url_for(f"staff.retire_{kind}", **{f"{kind}_id": row.id}),
                           back=url_for(f"staff.edit_{kind}", **{f"{kind}_id": row.id})), status


def _retired_flash(result) -> None:
    if result.bookings:
        flash(ngettext("Retired. %(num)d future visit is still booked: call the patient to move it.",
                       "Retired. %(num)d future visits are still booked: call those patients to move them.",
                       len(result.bookings)))
    else:
        flash(_("Retired. Patients no longer see it; past visits stay on record."))


@bp.get("/setup")
@roles_required(*SCHEDULING)
def setup():
    return render_template("staff/setup/index.html")


# -- locations ----------------------------------------------------------------------------------

def _location_form(obj=None):
    form = location_form_class(_languages())(obj=None)
    if obj is not None and request.method == "GET":
        for name in ("name", "address", "time_zone", "phone"):
            getattr(form, name).data = getattr(obj, name)
        for lang in _languages():
            getattr(form, f"transit_notes_{lang}").data = obj.transit_notes.get(lang, "")
            getattr(form, f"parking_notes_{lang}").data = obj.parking_notes.get(lang, "")
    return form


def _location_values(form) -> dict:
    return dict(name=form.name.data, address=form.address.data, time_zone=form.time_zone.data,
                phone=form.phone.data or "", transit_notes=_texts(form, "transit_notes"),
                parking_notes=_texts(form, "parking_notes"))


@bp.get("/setup/locations")
@roles_required(*SCHEDULING)
def locations():
    rows = db.session.scalars(select(Location).order_by(Location.retired, Location.name)).all()
    return render_template("staff/setup/locations.html", locations=rows)


@bp.route("/setup/locations/new", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def new_location():
    form = _location_form()
    _prepare_clinic(form)
    if request.method == "GET":
        return render_template("staff/setup/location_form.html", form=form, location=None, zones=_zone_list())
    if form.validate() and not _no_clinic(form):
        try:
            location = clinic_setup.create_location(db.session, clinic_id=_clinic_id(form), **_location_values(form))
        except SetupRejected as error:
            db.session.rollback()
            reject(form, error)
        else:
            commit()
            flash(_("Location added."))
            return redirect(url_for("staff.locations", _anchor=f"location-{location.id}"), code=303)
    return render_template("staff/setup/location_form.html", form=form, location=None, zones=_zone_list()), 400


@bp.route("/setup/locations/<int:location_id>", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def edit_location(location_id: int):
    location = _get(Location, location_id)
    form = _location_form(location)
    del form.clinic
    if request.method == "GET":
        return render_template("staff/setup/location_form.html", form=form, location=location, zones=_zone_list(),
                               confirm=ConfirmForm())
    if form.validate():
        try:
            clinic_setup.update_location(db.session, location, **_location_values(form))
        except SetupRejected as error:
            db.session.rollback()
            reject(form, error)
        else:
            commit()
            flash(_("Location saved."))
            return redirect(url_for("staff.locations", _anchor=f"location-{location.id}"), code=303)
    return render_template("staff/setup/location_form.html", form=form, location=location, zones=_zone_list(),
                           confirm=ConfirmForm()), 400


@bp.route("/setup/locations/<int:location_id>/retire", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def retire_location(location_id: int):
    """GET shows who is still booked there; POST retires and keeps those bookings."""
    location = _get(Location, location_id)
    form = ConfirmForm()
    if request.method == "GET" or not form.validate():
        page = _retire_page("location", location, clinic_setup.future_bookings(db.session, location_id=location.id),
                            form, 200 if request.method == "GET" else 400)
        commit()
        return page
    result = clinic_setup.retire_location(db.session, location)
    _people(result.bookings)
    commit()
    _retired_flash(result)
    return redirect(url_for("staff.locations", _anchor=f"location-{location.id}"), code=303)


@bp.post("/setup/locations/<int:location_id>/restore")
@roles_required(*SCHEDULING)
def restore_location(location_id: int):
    location = _get(Location, location_id)
    if not ConfirmForm().validate():
        abort(400)
    clinic_setup.restore_location(db.session, location)
    commit()
    flash(_("Restored. Turn its availability templates back on to offer times there."))
    return redirect(url_for("staff.locations", _anchor=f"location-{location.id}"), code=303)


def _zone_list() -> list[str]:
    """Suggestions for the time zone input: the Americas and the Pacific (any known zone is accepted)."""
    return sorted(z for z in clinic_setup.known_time_zones() if z.startswith(("America/", "Pacific/")))


# -- providers ----------------------------------------------------------------------------------

@bp.get("/setup/providers")
@roles_required(*SCHEDULING)
def providers():
    rows = db.session.scalars(select(Provider).order_by(Provider.retired, Provider.display_name)).all()
    return render_template("staff/setup/providers.html", providers=rows)


@bp.route("/setup/providers/new", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def new_provider():
    form = ProviderForm()
    _prepare_clinic(form)
    if request.method == "GET":
        return render_template("staff/setup/provider_form.html", form=form, provider=None)
    if form.validate() and not _no_clinic(form):
        try:
            provider = clinic_setup.create_provider(db.session, clinic_id=_clinic_id(form),
                                                    display_name=form.display_name.data)
        except SetupRejected as error:
            db.session.rollback()
            reject(form, error)
        else:
            commit()
            flash(_("Provider added."))
            return redirect(url_for("staff.providers", _anchor=f"provider-{provider.id}"), code=303)
    return render_template("staff/setup/provider_form.html", form=form, provider=None), 400


@bp.route("/setup/providers/<int:provider_id>", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def edit_provider(provider_id: int):
    provider = _get(Provider, provider_id)
    form = ProviderForm(data={"display_name": provider.display_name} if request.method == "GET" else None)
    del form.clinic
    if request.method == "GET":
        return render_template("staff/setup/provider_form.html", form=form, provider=provider, confirm=ConfirmForm())
    if form.validate():
        try:
            clinic_setup.update_provider(db.session, provider, display_name=form.display_name.data)
        except SetupRejected as error:
            db.session.rollback()
            reject(form, error)
        else:
            commit()
            flash(_("Provider saved."))
            return redirect(url_for("staff.providers", _anchor=f"provider-{provider.id}"), code=303)
    return render_template("staff/setup/provider_form.html", form=form, provider=provider,
                           confirm=ConfirmForm()), 400


@bp.route("/setup/providers/<int:provider_id>/retire", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def retire_provider(provider_id: int):
    provider = _get(Provider, provider_id)
    form = ConfirmForm()
    if request.method == "GET" or not form.validate():
        page = _retire_page("provider", provider, clinic_setup.future_bookings(db.session, provider_id=provider.id),
                            form, 200 if request.method == "GET" else 400)
        commit()
        return page
    result = clinic_setup.retire_provider(db.session, provider)
    _people(result.bookings)
    commit()
    _retired_flash(result)
    return redirect(url_for("staff.providers", _anchor=f"provider-{provider.id}"), code=303)


@bp.post("/setup/providers/<int:provider_id>/restore")
@roles_required(*SCHEDULING)
def restore_provider(provider_id: int):
    provider = _get(Provider, provider_id)
    if not ConfirmForm().validate():
        abort(400)
    clinic_setup.restore_provider(db.session, provider)
    commit()
    flash(_("Restored. Turn their availability templates back on to offer their times."))
    return redirect(url_for("staff.providers", _anchor=f"provider-{provider.id}"), code=303)


# -- appointment types --------------------------------------------------------------------------

def _type_form(obj: AppointmentType | None = None):
    form = appointment_type_form_class(_languages())()
    if obj is not None and request.method == "GET":
        for name in ("modality", "join_url_pattern", "duration_minutes", "form_code", "buffer_before_minutes",
                     "buffer_after_minutes", "min_notice_hours", "max_days_ahead"):
            getattr(form, name).data = getattr(obj, name)
        form.care_gaps.data = sorted(obj.gap_codes)
        for lang in _languages():
            getattr(form, f"name_{lang}").data = obj.name.get(lang, "")
            getattr(form, f"what_to_bring_{lang}").data = obj.what_to_bring.get(lang, "")
    return form


def _type_values(form) -> dict:
    return dict(name=_texts(form, "name"), what_to_bring=_texts(form, "what_to_bring"),
                modality=form.modality.data, duration_minutes=form.duration_minutes.data,
                form_code=form.form_code.data, join_url_pattern=form.join_url_pattern.data or "",
                care_gaps=list(form.care_gaps.data), buffer_before_minutes=form.buffer_before_minutes.data,
                buffer_after_minutes=form.buffer_after_minutes.data, min_notice_hours=form.min_notice_hours.data,
                max_days_ahead=form.max_days_ahead.data)


@bp.get("/setup/appointment-types")
@roles_required(*SCHEDULING)
def appointment_types():
    rows = db.session.scalars(select(AppointmentType).order_by(AppointmentType.retired, AppointmentType.code)).all()
    return render_template("staff/setup/appointment_types.html", types=rows)


@bp.route("/setup/appointment-types/new", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def new_appointment_type():
    form = _type_form()
    _prepare_clinic(form)
    if request.method == "GET":
        return render_template("staff/setup/appointment_type_form.html", form=form, appointment_type=None)
    if form.validate() and not _no_clinic(form):
        try:
            created = clinic_setup.create_appointment_type(db.session, clinic_id=_clinic_id(form), code=form.code.data,
                                                           **_type_values(form))
        except SetupRejected as error:
            db.session.rollback()
            reject(form, error)
        else:
            commit()
            flash(_("Appointment type added."))
            return redirect(url_for("staff.appointment_types", _anchor=f"type-{created.id}"), code=303)
    return render_template("staff/setup/appointment_type_form.html", form=form, appointment_type=None), 400


@bp.route("/setup/appointment-types/<int:type_id>", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def edit_appointment_type(type_id: int):
    appointment_type = _get(AppointmentType, type_id)
    form = _type_form(appointment_type)
    del form.clinic
    del form.code  # the code is how imports and reports name the type: fixed once made
    page = "staff/setup/appointment_type_form.html"
    if request.method == "GET":
        return render_template(page, form=form, appointment_type=appointment_type, confirm=ConfirmForm())
    if form.validate():
        try:
            clinic_setup.update_appointment_type(db.session, appointment_type, **_type_values(form))
        except SetupRejected as error:
            db.session.rollback()
            reject(form, error)
        else:
            commit()
            flash(_("Appointment type saved."))
            return redirect(url_for("staff.appointment_types", _anchor=f"type-{appointment_type.id}"), code=303)
    return render_template(page, form=form, appointment_type=appointment_type, confirm=ConfirmForm()), 400


@bp.route("/setup/appointment-types/<int:type_id>/retire", methods=["GET", "POST"])
@roles_required(*SCHEDULING)
def retire_appointment_type(type_id: int):
    appointment_type = _get(AppointmentType, type_id)
    form = ConfirmForm()
    if request.method == "GET" or not form.validate():
        bookings = clinic_setup.future_bookings(db.session, appointment_type_id=appointment_type.id)
        page = render_template("staff/setup/retire.html", kind="appointment_type", row=appointment_type,
                               bookings=_people(bookings), form=form,
                               action=url_for("staff.retire_appointment_type", type_id=appointment_type.id),
                               back=url_for("staff.edit_appointment_type", type_id=appointment_type.id))
        commit()
        return page, 200 if request.method == "GET" else 400
    result = clinic_setup.retire_appointment_type(db.session, appointment_type)
    _people(result.bookings)
    commit()
    _retired_flash(result)
    return redirect(url_for("staff.appointment_types", _anchor=f"type-{appointment_type.id}"), code=303)


@bp.post("/setup/appointment-types/<int:type_id>/restore")
@roles_required(*SCHEDULING)
def restore_appointment_type(type_id: int):
    appointment_type = _get(AppointmentType, type_id)
    if not ConfirmForm().validate():
        abort(400)
    clinic_setup.restore_appointment_type(db.session, appointment_type)
    commit()
    flash(_("Restored. Patients with a matching care gap can book it again."))
    return redirect(url_for("staff.appointment_types", _anchor=f"type-{appointment_type.id}"), code=303)
