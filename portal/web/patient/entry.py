"""Opening the link and confirming who you are."""
from __future__ import annotations

from flask import current_app, g, redirect, render_template, session, url_for
from flask_babel import gettext as _

from portal.extensions import db
from portal.models import VerificationPolicy
from portal.services import identity
from portal.services.errors import (CodeExpired, CodeSendLimited, EnrolmentLocked, LinkExpired, LinkInvalid,
                                    LinkRevoked, NoContactOnFile, VerificationFailed)
from portal.services.events import record_event
from portal.services.links import resolve_token
from portal.services.patient_sessions import mark_verified, start_patient_session
from portal.web.common import commit
from portal.web.patient import bp
from portal.web.patient.context import (current_enrolment, current_key_hash, current_patient_session, session_required,
                                        start_cookie)
from portal.web.patient.forms import SendCodeForm, VerifyCodeForm, VerifyNameForm


@bp.get("/r/<path:token>")
def open_link(token: str):
    """GET never consumes the link: it opens a session and moves the token out of the URL."""
    try:
        link = resolve_token(db.session, token[:512])
    except LinkInvalid:
        return render_template("errors/link.html", problem="invalid"), 404
    except LinkExpired:
        return render_template("errors/link.html", problem="expired"), 410
    except LinkRevoked:
        return render_template("errors/link.html", problem="revoked"), 410
    start_cookie(start_patient_session(db.session, link))
    record_event(db.session, link.enrolment, "link_opened", link_id=link.id)
    commit()
    return redirect(url_for("patient.welcome"), code=303)


def _channel_choices(enrolment) -> list[tuple[str, str]]:
    patient = enrolment.patient
    labels = {
        "sms": lambda: _("Text message to the phone ending in %(last)s", last=patient.phone[-4:]),
        "email": lambda: _("Email to %(masked)s", masked=mask_email(patient.email)),
    }
    return [(channel, labels[channel]()) for channel in identity.code_channels(db.session, enrolment)]


def mask_email(address: str) -> str:
    name, _sep, domain = address.partition("@")
    return f"{name[:1]}•••@{domain}"


def _locked_page():
    return render_template("patient/locked.html", clinic=current_enrolment().campaign.clinic), 423


@bp.get("/welcome")
@session_required
def welcome():
    enrolment = current_enrolment()
    if current_patient_session().verified_at is not None:
        return redirect(url_for("patient.home"), code=303)
    if enrolment.locked_at is not None:
        return _locked_page()
    if enrolment.campaign.verification_policy == VerificationPolicy.DOB_AND_LAST_NAME:
        return render_template("patient/verify.html", form=VerifyNameForm(), by_name=True)
    form = SendCodeForm()
    form.channel.choices = _channel_choices(enrolment)
    if len(form.channel.choices) == 1:  # one contact on file: nothing to choose
        form.channel.data = form.channel.choices[0][0]
    return render_template("patient/welcome.html", form=form, clinic=enrolment.campaign.clinic)


@bp.post("/welcome/code")
@session_required
def send_code():
    """A code is only ever sent on this deliberate POST, to a contact on file."""
    enrolment = current_enrolment()
    form = SendCodeForm()
    form.channel.choices = _channel_choices(enrolment)
    if not form.validate():
        return render_template("patient/welcome.html", form=form, clinic=enrolment.campaign.clinic), 400
    try:
        identity.send_code(db.session, enrolment, current_key_hash(), form.channel.data)
    except EnrolmentLocked:
        return _locked_page()
    except NoContactOnFile:
        form.channel.errors = [_("Choose where to send your code.")]
        return render_template("patient/welcome.html", form=form, clinic=enrolment.campaign.clinic), 400
    except CodeSendLimited:
        form.channel.errors = [_("We've sent several codes already. Please wait 15 minutes, or use the last code we sent.")]
        return render_template("patient/welcome.html", form=form, clinic=enrolment.campaign.clinic), 429
    commit()
    session["code_channel"] = form.channel.data
    return redirect(url_for("patient.verify"), code=303)


@bp.get("/welcome/verify")
@session_required
def verify():
    if current_enrolment().campaign.verification_policy == VerificationPolicy.DOB_AND_LAST_NAME:
        return redirect(url_for("patient.welcome"), code=303)
    return render_template("patient/verify.html", form=VerifyCodeForm(), by_name=False,
                           channel=session.get("code_channel"))


@bp.post("/welcome/verify")
@session_required
def check_identity():
    enrolment = current_enrolment()
    by_name = enrolment.campaign.verification_policy == VerificationPolicy.DOB_AND_LAST_NAME
    form = VerifyNameForm() if by_name else VerifyCodeForm()

    def again(message: str, status: int):
        form.form_errors.append(message)
        return render_template("patient/verify.html", form=form, by_name=by_name,
                               channel=session.get("code_channel")), status

    if not form.validate():
        return render_template("patient/verify.html", form=form, by_name=by_name,
                               channel=session.get("code_channel")), 400
    try:
        identity.verify_identity(db.session, enrolment, form.birth_date,
                                 code="" if by_name else form.code.data,
                                 last_name=form.last_name.data if by_name else "",
                                 session_key_hash="" if by_name else current_key_hash())
    except EnrolmentLocked:
        commit()
        return _locked_page()
    except VerificationFailed:
        commit()  # the wrong try is counted even though the answer is "no"
        return again(_("Those details don't match our records. Please check them and try again."), 400)
    except CodeExpired:
        return again(_("That code can no longer be used. Please ask for a new code."), 400)
    start_cookie(mark_verified(db.session, current_patient_session()))
    if session.get("lang") in current_app.config["LANGUAGES"]:
        enrolment.patient.preferred_language = session["lang"]
    commit()
    g.pop("patient_session", None)
    return redirect(url_for("patient.home"), code=303)
