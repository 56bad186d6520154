"""The base of every portal form.

Flask-WTF reads WTForms' own catalog (messages such as "Not a valid choice") from disk
on every request that builds a form; here it is read once per language per process.
"""
from __future__ import annotations

from functools import lru_cache

from babel import support
from flask_babel import get_locale
from flask_wtf import FlaskForm
from wtforms.i18n import messages_path


@lru_cache(maxsize=None)  # keyed by the few languages the portal serves
def _wtforms_catalog(locale: str) -> support.Translations:
    return support.Translations.load(messages_path(), [locale], domain="wtforms")


class PortalForm(FlaskForm):
    class Meta(FlaskForm.Meta):
        def get_translations(self, form):
            return _wtforms_catalog(str(get_locale()))
