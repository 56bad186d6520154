"""How a message leaves the building. Each channel sends one outbox row or raises
ChannelError; the dispatcher owns retries and bookkeeping."""
from __future__ import annotations

from typing import Protocol

from portal.models import OutboxMessage


class ChannelError(Exception):
    """A send failed; the dispatcher will retry later."""


class MessageChannel(Protocol):
    def send(self, message: OutboxMessage) -> None: ...


def build_channels(config: dict) -> dict[str, MessageChannel]:
    """Every channel goes to the development outbox until real providers are configured."""
    from portal.channels.dev_outbox import DevOutboxChannel

    dev = DevOutboxChannel(echo=config.get("PORTAL_ENV") == "development")
    return {"sms": dev, "email": dev, "portal": dev}
