"""SMS through a Twilio-compatible HTTP API.

POST {base}/2010-04-01/Accounts/{sid}/Messages.json with the form fields To, From
(or MessagingServiceSid), Body and StatusCallback, HTTP Basic auth with the account
SID and auth token, and an idempotency key that stays the same for every attempt at
one outbox row. The standard library's urllib is enough for one form POST; no
client library is needed.
"""
from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request

from portal.channels import ChannelError, PermanentChannelError, Sent, idempotency_key
from portal.models import OutboxMessage

# Header names providers read an idempotency key from: Twilio's own, and the IETF
# draft's (used by most other Twilio-compatible gateways). Sending both is harmless.
IDEMPOTENCY_HEADERS = ("I-Twilio-Idempotency-Token", "Idempotency-Key")
RETRYABLE_STATUS = {408, 409, 425, 429}


class SmsHttpChannel:
    def __init__(self, *, base_url: str, account_sid: str, auth_token: str, sender: str = "",
                 messaging_service_sid: str = "", status_callback: str = "", timeout: float = 15) -> None:
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{urllib.parse.quote(account_sid, safe='')}/Messages.json"
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.authorization = f"Basic {credentials}"
        self.sender = sender
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback
        self.timeout = timeout

    @classmethod
    def from_config(cls, config: dict) -> SmsHttpChannel:
        return cls(base_url=config["SMS_BASE_URL"], account_sid=config["SMS_ACCOUNT_SID"],
                   auth_token=config["SMS_AUTH_TOKEN"], sender=config.get("SMS_FROM", ""),
                   messaging_service_sid=config.get("SMS_MESSAGING_SERVICE_SID", ""),
                   status_callback=f"{config['BASE_URL']}/hooks/sms/status",
                   timeout=config.get("SMS_TIMEOUT_SECONDS", 15))

    def form(self, message: OutboxMessage) -> dict[str, str]:
        fields = {"To": message.recipient, "Body": message.body_text}
        if self.messaging_service_sid:
            fields["MessagingServiceSid"] = self.messaging_service_sid
        else:
            fields["From"] = self.sender
        if self.status_callback:
            fields["StatusCallback"] = self.status_callback
        return fields

    def send(self, message: OutboxMessage) -> Sent:
        if not message.recipient:
            raise PermanentChannelError("no phone number")
        key = idempotency_key(message)
        request = urllib.request.Request(
            self.url, data=urllib.parse.urlencode(self.form(message)).encode(), method="POST",
            headers={"Authorization": self.authorization, "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded",
                     **{name: key for name in IDEMPOTENCY_HEADERS}})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code in RETRYABLE_STATUS or exc.code >= 500:
                raise ChannelError(f"sms provider {exc.code} {detail}".strip()) from None
            raise PermanentChannelError(f"sms provider refused: {exc.code} {detail}".strip()) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
            raise ChannelError(f"sms provider unreachable: {type(exc).__name__}") from None
        try:
            sid = str(json.loads(payload or b"{}").get("sid") or "")
        except (ValueError, AttributeError):
            sid = ""
        return Sent(provider_message_id=sid[:64])


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The provider's error code (e.g. 21211 invalid number), never the body we sent."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        return ""
    return f"code {body['code']}" if isinstance(body, dict) and body.get("code") else ""
