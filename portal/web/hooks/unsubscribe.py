"""Email unsubscribe. GET only shows a confirm page (mail scanners open links);
POST unsubscribes: the page's button, or a mail client's RFC 8058 one-click POST
(body `List-Unsubscribe=One-Click`), authenticated by the signed token alone."""
from __future__ import annotations

from flask import current_app, g, render_template

from portal.extensions import db
from portal.services.consent import email_unsubscribed, patient_for_unsubscribe, unsubscribe_email
from portal.services.errors import LinkInvalid
from portal.web.common import commit
from portal.web.hooks import bp


def _patient(token: str):
    patient = patient_for_unsubscribe(db.session, current_app.config["SECRET_KEY"], token)
    g.patient_language = patient.preferred_language
    return patient


@bp.get("/unsubscribe/<path:token>")
def confirm_unsubscribe(token: str):
    try:
        patient = _patient(token)
    except LinkInvalid:
        return render_template("errors/link.html", problem="invalid"), 404
    return render_template("hooks/unsubscribe.html", done=email_unsubscribed(db.session, patient))


@bp.post("/unsubscribe/<path:token>")
def unsubscribe(token: str):
    try:
        patient = _patient(token)
    except LinkInvalid:
        return render_template("errors/link.html", problem="invalid"), 404
    unsubscribe_email(db.session, patient)
    commit()
    return render_template("hooks/unsubscribe.html", done=True)
