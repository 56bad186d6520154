"""The portal inbox: a message the patient reads after opening their link. Nothing
leaves the building, so the outbox row itself is the stored state; sending it marks
it delivered, and `inbox_for` reads what a patient has received."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.channels import Sent
from portal.models import Channel, OutboxMessage, OutboxStatus


class PortalInboxChannel:
    def send(self, message: OutboxMessage) -> Sent:
        return Sent(provider_message_id=f"inbox-{message.id}", delivered=True)

    def send_many(self, messages: list[OutboxMessage]) -> list[Sent]:
        """Nothing leaves the building, so a whole batch is one hand-off."""
        return [self.send(message) for message in messages]


def inbox_for(session: Session, patient_id: int, limit: int = 50) -> list[OutboxMessage]:
    """The patient's inbox, newest first: portal messages that have been sent."""
    return list(session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.patient_id == patient_id, OutboxMessage.channel == Channel.PORTAL,
               OutboxMessage.status == OutboxStatus.SENT)
        .order_by(OutboxMessage.sent_at.desc(), OutboxMessage.id.desc())
        .limit(limit)))
