"""Inbound traffic that is not a person at a form: the SMS provider's webhooks
(replies and delivery receipts, signed by the provider) and the email unsubscribe
link (signed by us). Exempt from CSRF: each request is authenticated by its
signature instead.

SMS hooks live under /hooks/; the unsubscribe link is /unsubscribe/<token>, the
address campaign emails already carry (and the List-Unsubscribe header).
"""
import logging
import re

from flask import Blueprint

from portal.extensions import csrf

bp = Blueprint("hooks", __name__)
csrf.exempt(bp)

UNSUBSCRIBE_PATH = re.compile(r"/unsubscribe/[^\s?\"']+")


class RedactUnsubscribeTokens(logging.Filter):
    """Access logs print request paths; an unsubscribe token stays out of them too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = UNSUBSCRIBE_PATH.sub("/unsubscribe/[redacted]", record.msg)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(UNSUBSCRIBE_PATH.sub("/unsubscribe/[redacted]", a) if isinstance(a, str) else a
                                for a in args)
        return True


@bp.record_once
def _redact_access_logs(_state) -> None:
    for name in ("werkzeug", "gunicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUnsubscribeTokens) for f in logger.filters):
            logger.addFilter(RedactUnsubscribeTokens())


from portal.web.hooks import sms, unsubscribe  # noqa: E402,F401  (routes register on bp)
