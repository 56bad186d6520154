"""Who is on the other end of a patient request: the server-side session, its
enrolment, and whether they have been verified. Every patient route reads the
enrolment from here, never from an id in the URL or form."""
from __future__ import annotations

from functools import wraps

from flask import current_app, g, redirect, render_template, session, url_for
from flask_babel import get_locale, gettext as _

from portal.database import commit_best_effort
from portal.extensions import db
from portal.models import Enrolment, Modality, WebSession, localized
from portal.services.calendar import join_link
from portal.services.errors import LinkExpired, LinkRevoked, SessionEnded
from portal.services.links import check_link_live
from portal.services.patient_sessions import TOUCHED, load_patient_session, session_key_hash

COOKIE_KEY = "psid"


def current_patient_session() -> WebSession | None:
    """Load (once per request) the live patient session behind the cookie, or None."""
    if "patient_session" in g:
        return g.patient_session
    g.patient_session = None
    key = session.get(COOKIE_KEY)
    if key:
        try:
            live = load_patient_session(db.session, key, current_app.config["PATIENT_IDLE"],
                                        current_app.config["PATIENT_ABSOLUTE"])
            check_link_live(live.link)
        except (SessionEnded, LinkExpired, LinkRevoked):
            session.pop(COOKIE_KEY, None)
            commit_best_effort(db.session)  # the expired row was deleted (or is, next time)
        else:
            if db.session.info.pop(TOUCHED, False):
                # Keep the idle-clock touch even on pages that change nothing else; if a
                # concurrent write got in first, the next page touches it again.
                commit_best_effort(db.session)
            g.patient_session = live.web_session
            g.enrolment = live.enrolment
            g.patient_language = live.enrolment.patient.preferred_language
    return g.patient_session


def current_enrolment() -> Enrolment:
    return g.enrolment


def current_key_hash() -> str:
    return session_key_hash(session[COOKIE_KEY])


def start_cookie(key: str) -> None:
    """Put a (new) session key in the cookie, dropping anything else but the language."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    session[COOKIE_KEY] = key
    session.permanent = False


def remember_language(lang: str) -> None:
    """Store a language switch on the patient once they are verified."""
    row = current_patient_session()
    if row is not None and row.verified_at is not None:
        g.enrolment.patient.preferred_language = lang


def session_required(view):
    """A patient session must exist (they opened a link); otherwise explain how to get back in."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        if current_patient_session() is None:
            return render_template("patient/session_ended.html"), 401
        return view(*args, **kwargs)
    return wrapper


def verified_required(view):
    """The patient must have confirmed who they are in this session."""
    @wraps(view)
    @session_required
    def wrapper(*args, **kwargs):
        if g.patient_session.verified_at is None:
            return redirect(url_for("patient.welcome"), code=303)
        return view(*args, **kwargs)
    return wrapper


def visit_label(appointment_type, enrolment) -> str:
    """The type's name, or only 'In-person visit' / 'Video visit' when the campaign's
    verification policy allows no clinical detail."""
    if enrolment.campaign.shows_clinical_detail:
        return localized(appointment_type.name, str(get_locale()))
    return _("Video visit") if appointment_type.modality == Modality.TELEHEALTH else _("In-person visit")


def template_helpers() -> dict:
    return {"visit_label": visit_label, "join_link": join_link}
