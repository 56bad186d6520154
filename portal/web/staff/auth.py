"""Signing in (password, then TOTP; first time: enrol the authenticator) and out."""
from __future__ import annotations

import segno
from flask import current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from markupsafe import Markup

from portal.extensions import db
from portal.services import staff_auth
from portal.services.errors import AccountLocked, SessionEnded, SignInFailed
from portal.web.common import commit
from portal.web.language import safe_next
from portal.web.staff import bp
from portal.web.staff.access import sign_in, sign_out
from portal.web.staff.forms import CodeForm, SignInForm

PENDING_KEY = "staff_pending"


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = SignInForm()
    if request.method == "GET" or not form.validate():
        return render_template("staff/login.html", form=form), 200 if request.method == "GET" else 400
    try:
        user = staff_auth.check_password(db.session, form.email.data, form.password.data)
    except (SignInFailed, AccountLocked) as error:
        commit()  # the failed try is counted
        form.form_errors.append(_("Too many tries. Wait 15 minutes and try again.") if isinstance(error, AccountLocked)
                                else _("That email and password don't match an account."))
        return render_template("staff/login.html", form=form), 429 if isinstance(error, AccountLocked) else 400
    data = {"next": safe_next(request.args.get("next")) if request.args.get("next") else ""}
    if not user.totp_secret:
        data["secret"] = staff_auth.new_totp_secret()
    key = staff_auth.start_staff_session(db.session, user, staff_auth.PENDING, data=data)
    commit()
    session[PENDING_KEY] = key
    return redirect(url_for("staff.second_factor"), code=303)


def _pending():
    try:
        return staff_auth.load_staff_session(db.session, session.get(PENDING_KEY), staff_auth.PENDING,
                                             current_app.config["STAFF_IDLE"], current_app.config["STAFF_ABSOLUTE"])
    except SessionEnded:
        commit()
        return None


@bp.route("/login/code", methods=["GET", "POST"])
def second_factor():
    """The TOTP step; on first sign-in it enrols the authenticator with a QR code."""
    pending = _pending()
    if pending is None:
        return redirect(url_for("staff.login"), code=303)
    user, enrolling = pending.user, "secret" in pending.row.data
    form = CodeForm()
    context = {"form": form, "enrolling": enrolling}
    if enrolling:
        uri = staff_auth.provisioning_uri(user, pending.row.data["secret"], current_app.config["CLINIC_NAME"])
        context.update(qr=Markup(segno.make(uri, error="m").svg_inline(scale=4, omitsize=False)),
                       secret=pending.row.data["secret"])
    if request.method == "GET" or not form.validate():
        return render_template("staff/second_factor.html", **context), 200 if request.method == "GET" else 400
    recovery_codes = None
    try:
        if enrolling:
            recovery_codes = staff_auth.finish_enrolment(user, pending.row.data["secret"], form.code.data)
        elif not (staff_auth.check_totp(user, form.code.data) or staff_auth.use_recovery_code(user, form.code.data)):
            raise SignInFailed()
    except SignInFailed:
        commit()
        form.form_errors.append(_("That code didn't work. Codes change every 30 seconds; try the newest one."))
        return render_template("staff/second_factor.html", **context), 400
    next_path = pending.row.data.get("next") or url_for("staff.home")
    db.session.delete(pending.row)
    sign_in(user)
    commit()
    if recovery_codes:
        return render_template("staff/recovery_codes.html", codes=recovery_codes, next_path=next_path)
    return redirect(next_path, code=303)


@bp.post("/logout")
def logout():
    sign_out()
    commit()
    return redirect(url_for("staff.login"), code=303)
