"""The language switch: a small POST form on every page that brings the visitor
back to the same place in the other language."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, request, session

from portal.web.patient.context import remember_language
from portal.web.common import commit

bp = Blueprint("language", __name__)


def safe_next(target: str | None) -> str:
    """Only our own paths: no scheme, no host, no protocol-relative '//' tricks."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(character) < 32 or ord(character) == 127 for character in target):
        return "/"  # CR/LF would split the Location header; no real page address has control characters
    return target


@bp.post("/language")
def switch():
    lang = request.form.get("lang", "")
    if lang in current_app.config["LANGUAGES"]:
        session["lang"] = lang
        remember_language(lang)
        commit()
    return redirect(safe_next(request.form.get("next")), code=303)
