"""What every page shares: locale choice, security headers, error pages, date
formatting in the location's time zone, and the commit-then-dispatch boundary."""
from __future__ import annotations

import logging
import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, format_time
from flask import Flask, current_app, g, render_template, request, session
from flask_babel import get_locale, gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from portal.channels import build_channels
from portal.extensions import db
from portal.models import localized
from portal.services.care_gaps import care_gap
from portal.services.dispatch import dispatch_due
from portal.web.labels import answer, label

CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
TOKEN_PATH = re.compile(r"/r/[^\s?\"']+")


def select_locale() -> str:
    """Explicit switch → the patient's stored preference → Accept-Language → English."""
    languages = current_app.config["LANGUAGES"]
    chosen = session.get("lang")
    if chosen in languages:
        return chosen
    if "patient_language" not in g and not request.path.startswith(("/staff", "/static")):
        from portal.web.patient.context import current_patient_session

        current_patient_session()  # error pages, too, speak the patient's language
    preferred = g.get("patient_language")
    if preferred in languages:
        return preferred
    return request.accept_languages.best_match(languages) or "en"


def commit() -> None:
    """End the unit of work: commit, then hand new outbox rows to the channels when
    dispatching inline (development and tests), and commit their status."""
    db.session.commit()
    if current_app.config["DISPATCH_INLINE"]:
        if dispatch_due(db.session, build_channels(current_app.config)):
            db.session.commit()


def _security_headers(response):
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), interest-cohort=()"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        headers["Cache-Control"] = "no-store"
    if current_app.config["PORTAL_ENV"] == "production":
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return response


def _error_page(error: HTTPException):
    code = error.code or 500
    if isinstance(error, CSRFError):
        return render_template("errors/error.html", code=400, title=_("This page timed out"),
                               message=_("For your safety the form expired. Please go back and try again.")), 400
    titles = {
        400: (_("Something in the form wasn't right"), _("Please go back and check what you entered.")),
        403: (_("You can't open this page"), _("This page isn't part of your visit.")),
        404: (_("We couldn't find that page"), _("Check the address, or open the link in your message again.")),
        405: (_("That didn't work"), _("Please go back and use the buttons on the page.")),
        413: (_("That was too much text"), _("Please shorten what you typed and try again.")),
        429: (_("Please wait a moment"), _("There were too many tries. Please wait a few minutes and try again.")),
    }
    title, message = titles.get(code, (_("Something went wrong on our side"),
                                       _("Please try again in a few minutes, or call the clinic.")))
    return render_template("errors/error.html", code=code, title=title, message=message), code


def _unexpected_error(error: Exception):
    current_app.logger.exception("unhandled error on %s", TOKEN_PATH.sub("/r/[redacted]", request.path))
    db.session.rollback()
    return render_template("errors/error.html", code=500, title=_("Something went wrong on our side"),
                           message=_("Please try again in a few minutes, or call the clinic.")), 500


def _zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or "UTC")


# US regional formats: "9:00 a.m. CST" rather than "9:00 -0600" for Spanish speakers here.
FORMAT_LOCALES = {"en": "en_US", "es": "es_US"}


def _format_locale() -> str:
    locale = str(get_locale())
    return FORMAT_LOCALES.get(locale, locale)


def local_day(value: date | datetime, zone: str | None = None) -> str:
    """'Monday, March 9' / 'lunes, 9 de marzo' — the day in the viewer's language."""
    if isinstance(value, datetime):
        value = value.astimezone(_zone(zone)).date()
    return format_date(value, format="full", locale=_format_locale())


def local_time(value: datetime, zone: str | None) -> str:
    return format_time(value, format="short", tzinfo=_zone(zone), locale=_format_locale())


def local_datetime(value: datetime, zone: str | None) -> str:
    """Date and time spelled out, with the zone, e.g. 'Monday, March 9, 2026 at 9:00 AM CDT'."""
    locale = _format_locale()
    day = format_date(value.astimezone(_zone(zone)).date(), format="full", locale=locale)
    time = format_time(value, format="short", tzinfo=_zone(zone), locale=locale)
    zone_name = format_datetime(value, "zzz", tzinfo=_zone(zone), locale=locale)
    return _("%(day)s at %(time)s %(zone)s", day=day, time=time, zone=zone_name)


class _RedactTokens(logging.Filter):
    """Access logs print request paths; a link token must never reach a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = TOKEN_PATH.sub("/r/[redacted]", record.msg)
        if record.args:
            record.args = tuple(TOKEN_PATH.sub("/r/[redacted]", a) if isinstance(a, str) else a
                                for a in (record.args if isinstance(record.args, tuple) else (record.args,)))
        return True


def redact_tokens_in_access_logs(*loggers: logging.Logger) -> None:
    for logger in loggers:
        if not any(isinstance(f, _RedactTokens) for f in logger.filters):
            logger.addFilter(_RedactTokens())


def init_app(app: Flask) -> None:
    app.after_request(_security_headers)
    app.register_error_handler(HTTPException, _error_page)
    app.register_error_handler(Exception, _unexpected_error)
    app.jinja_env.filters.update(local_day=local_day, local_time=local_time, local_datetime=local_datetime,
                                 label=label)
    app.jinja_env.globals.update(get_locale=get_locale, care_gap=care_gap, answer=answer,
                                 localized=lambda texts: localized(texts, str(get_locale())))
