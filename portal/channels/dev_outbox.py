"""The development outbox: messages stay in the database (shown at /dev/outbox)
and are echoed to the server console instead of leaving the machine."""
from __future__ import annotations

import sys

from portal.models import OutboxMessage


class DevOutboxChannel:
    def __init__(self, echo: bool) -> None:
        self.echo = echo

    def send(self, message: OutboxMessage) -> None:
        if self.echo:
            # Printed, not logged: this is the developer's stand-in for a phone.
            print(f"[dev outbox] {message.channel} to {message.recipient}: {message.subject or ''}\n"
                  f"{message.body_text}\n", file=sys.stderr, flush=True)

    def send_many(self, messages: list[OutboxMessage]) -> list[None]:
        """Nothing leaves the machine, so a whole batch is one hand-off."""
        return [self.send(message) for message in messages]
