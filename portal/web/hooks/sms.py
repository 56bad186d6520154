"""The SMS provider's webhooks: inbound texts (STOP/START/HELP) and status callbacks.

The URL the signature covers is rebuilt from the configured public base URL, never
from the Host header, which anyone can set.
"""
from __future__ import annotations

from flask import Response, abort, current_app, request

from portal.extensions import db
from portal.services.consent import receive_sms, record_delivery_status
from portal.web.common import commit
from portal.web.hooks import bp
from portal.web.hooks.signature import signature_valid

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _public_url() -> str:
    query = request.query_string.decode("latin-1")
    return f"{current_app.config['BASE_URL']}{request.path}" + (f"?{query}" if query else "")


def _require_signature() -> None:
    if not signature_valid(current_app.config.get("SMS_AUTH_TOKEN", ""), _public_url(),
                           request.form.items(multi=True), request.headers.get("X-Twilio-Signature", "")):
        abort(403)


@bp.post("/hooks/sms/inbound")
def sms_inbound():
    """A text to our number. The reply (if any) goes through the outbox, so a retried
    webhook never sends two; the provider gets an empty TwiML answer."""
    _require_signature()
    receive_sms(db.session, sender=request.form.get("From", ""), body=request.form.get("Body", ""),
                provider_message_id=request.form.get("MessageSid", "") or request.form.get("SmsSid", ""))
    commit()
    return Response(EMPTY_TWIML, mimetype="text/xml")


@bp.post("/hooks/sms/status")
def sms_status():
    """Delivery status callback (queued, sent, delivered, undelivered, failed)."""
    _require_signature()
    record_delivery_status(db.session, provider_message_id=request.form.get("MessageSid", ""),
                           status=request.form.get("MessageStatus", "") or request.form.get("SmsStatus", ""),
                           error_code=request.form.get("ErrorCode", ""))
    commit()
    return Response(status=204)
