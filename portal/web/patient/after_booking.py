"""The pre-visit form, help requests, and the link's other answers."""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from portal.extensions import db
from portal.models import HelpKind
from portal.services import responses
from portal.services.booking import live_appointment
from portal.services.help_requests import help_requests_for, request_help
from portal.services.previsit import form_response, save_form
from portal.web.common import commit, local_day
from portal.web.patient import bp
from portal.web.patient.context import COOKIE_KEY, current_enrolment, verified_required
from portal.web.patient.forms import HELP_FORMS, DeclineForm, PrevisitForm, SurveyForm
from portal.models import utcnow


@bp.route("/visit/form", methods=["GET", "POST"])
@verified_required
def previsit_form():
    enrolment = current_enrolment()
    appointment = live_appointment(db.session, enrolment)
    if appointment is None or not enrolment.campaign.shows_clinical_detail:
        return redirect(url_for("patient.home"), code=303)
    form_code = appointment.appointment_type.form_code
    saved = form_response(db.session, enrolment, form_code)
    form = PrevisitForm(data=saved.answers if saved and request.method == "GET" else None)
    if request.method == "GET":
        return render_template("patient/previsit_form.html", form=form, saved=saved)
    submitting = "submit" in request.form
    valid = form.validate()
    if valid and submitting:
        for name in PrevisitForm.REQUIRED_TO_SUBMIT:
            if not getattr(form, name).data:
                getattr(form, name).errors.append(_("Please fill this in before you send the form."))
                valid = False
    if not valid:
        return render_template("patient/previsit_form.html", form=form, saved=saved), 400
    save_form(db.session, enrolment, form_code, {name: form[name].data or "" for name in PrevisitForm.ANSWERS},
              complete=submitting)
    commit()
    flash(_("Thank you. Your answers were sent to the clinic.") if submitting
          else _("Saved. You can finish the form later from the same link."))
    return redirect(url_for("patient.home"), code=303)


@bp.route("/visit/help", methods=["GET"])
@verified_required
def help_options():
    return render_template("patient/help.html", requests=help_requests_for(db.session, current_enrolment()),
                           forms={kind: form_class(prefix=kind) for kind, form_class in HELP_FORMS.items()})


@bp.post("/visit/help/<kind>")
@verified_required
def ask_for_help(kind: str):
    if kind not in set(HelpKind):
        abort(404)
    enrolment = current_enrolment()
    forms = {name: form_class(prefix=name) for name, form_class in HELP_FORMS.items()}
    form = forms[kind]
    if not form.validate():
        return render_template("patient/help.html", requests=help_requests_for(db.session, enrolment),
                               forms=forms, open_kind=kind), 400
    details = {name: field.data for name, field in form._fields.items() if name != "csrf_token"}
    request_help(db.session, enrolment, kind, details)
    commit()
    flash(_("We got your request. Someone from the clinic will contact you."))
    return redirect(url_for("patient.help_options"), code=303)


@bp.route("/visit/other", methods=["GET", "POST"])
@verified_required
def other_choices():
    enrolment = current_enrolment()
    form = DeclineForm()
    if request.method == "GET":
        return render_template("patient/other.html", form=form, survey=SurveyForm(prefix="survey"))
    if not form.validate():
        return render_template("patient/other.html", form=form, survey=SurveyForm(prefix="survey")), 400
    clinic = enrolment.campaign.clinic
    if form.choice.data == "remind_later":
        until = responses.snooze(db.session, enrolment, form.weeks.data or 4, utcnow().date())
        commit()
        flash(_("We'll remind you after %(day)s.", day=local_day(until)))
        return redirect(url_for("patient.home"), code=303)
    if form.choice.data == "stop":
        responses.opt_out(db.session, enrolment)
        commit()
        session.pop(COOKIE_KEY, None)
        return render_template("patient/goodbye.html", clinic=clinic, stopped=True)
    responses.close_enrolment(db.session, enrolment, form.choice.data, note=form.note.data or "")
    commit()
    return render_template("patient/goodbye.html", clinic=clinic, stopped=False,
                           survey=SurveyForm(prefix="survey"))


@bp.post("/visit/survey")
@verified_required
def survey():
    form = SurveyForm(prefix="survey")
    if not form.validate():
        return render_template("patient/other.html", form=DeclineForm(formdata=None), survey=form), 400
    responses.answer_survey(db.session, current_enrolment(), form.reason.data)
    commit()
    flash(_("Thank you for telling us."))
    return redirect(url_for("patient.home"), code=303)
