"""How a message leaves the building. Each channel sends one outbox row and returns
what the provider told us (a `Sent`), or raises ChannelError; the dispatcher owns
retries, bookkeeping and every rule about whether a message may go out at all."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from portal.models import OutboxMessage


class ChannelError(Exception):
    """A send failed in a way that may pass on a later try (timeout, 5xx, 429)."""


class PermanentChannelError(ChannelError):
    """A send failed in a way no retry will fix (bad number, refused address, 4xx):
    the message becomes a dead letter at once."""


@dataclass(frozen=True)
class Sent:
    provider_message_id: str = ""
    delivered: bool = False  # the channel itself delivered it (the portal inbox), no receipt will follow


class MessageChannel(Protocol):
    """`send` hands one message to the provider. A channel that can take many in one
    call (the portal inbox, the dev outbox, a provider's bulk API) may also offer
    `send_many(messages) -> list[Sent | None | ChannelError]`, one result per message
    in order: the dispatcher then makes one call per batch and writes the outcomes in
    one transaction. A crash between the call and that commit re-sends the whole call
    (with the same idempotency keys), so only channels where that is harmless offer it.

    The dispatcher hands over the outbox row as a read-only Core row (every column of
    outbox_message by name, like the ORM object's attributes), not an OutboxMessage."""

    def send(self, message: OutboxMessage) -> Sent | None: ...


def idempotency_key(message: OutboxMessage) -> str:
    """The same key for every attempt at one outbox row, so a provider that honours
    idempotency keys accepts a message re-sent after a crash only once. Derived from
    the dedupe key, which names enrolment, step and channel, hashed so no id leaks."""
    return hashlib.sha256(f"outbox:{message.dedupe_key}".encode()).hexdigest()[:40]


def sms_configured(config: dict) -> bool:
    return bool(config.get("SMS_ACCOUNT_SID") and config.get("SMS_AUTH_TOKEN")
                and (config.get("SMS_FROM") or config.get("SMS_MESSAGING_SERVICE_SID")))


def smtp_configured(config: dict) -> bool:
    return bool(config.get("SMTP_HOST") and config.get("SMTP_FROM"))


def build_channels(config: dict) -> dict[str, MessageChannel]:
    """Real providers where configured (PORTAL_SMS_*, PORTAL_SMTP_*), the development
    outbox for the rest. The portal inbox needs no provider: it is always real."""
    from portal.channels.dev_outbox import DevOutboxChannel
    from portal.channels.portal_inbox import PortalInboxChannel

    dev = DevOutboxChannel(echo=config.get("PORTAL_ENV") == "development")
    channels: dict[str, MessageChannel] = {"sms": dev, "email": dev, "portal": PortalInboxChannel()}
    if sms_configured(config):
        from portal.channels.sms_http import SmsHttpChannel

        channels["sms"] = SmsHttpChannel.from_config(config)
    if smtp_configured(config):
        from portal.channels.smtp import SmtpChannel

        channels["email"] = SmtpChannel.from_config(config)
    return channels


def channels_on_dev_outbox(config: dict) -> list[str]:
    """External channels that would fall back to the development outbox: in production
    those messages would be marked sent without leaving the building."""
    return [name for name, ok in (("sms", sms_configured(config)), ("email", smtp_configured(config))) if not ok]
