"""The outreach sequence: day-0 invitation, reminders on the campaign's days, then
escalation to a coordinator's call list. Sending stops the moment the patient
books, closes the enrolment or opts out."""
from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from itsdangerous import URLSafeSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from portal.models import (Campaign, CampaignVariant, Channel, ChannelConsent, Enrolment, EnrolmentStatus, OutboxMessage,
                           OutboxStatus, utcnow)
from portal.services.events import record_event
from portal.services.links import issue_link, link_url
from portal.services.messages import consented_channels, queue_message

ACTIVE = "active"
BATCH = 500


def stop_sequence(session: Session, enrolment: Enrolment, reason: str) -> None:
    """No more outreach for this enrolment: clear the next step and cancel what is queued."""
    enrolment.next_step_at = None
    session.execute(update(OutboxMessage).where(OutboxMessage.enrolment_id == enrolment.id,
                                                OutboxMessage.status == OutboxStatus.PENDING,
                                                OutboxMessage.step.is_not(None))
                    .values(status=OutboxStatus.CANCELLED, last_error=f"stopped: {reason}"[:200]))


def unsubscribe_url(patient_id: int) -> str:
    token = URLSafeSerializer(current_app.config["SECRET_KEY"], salt="unsubscribe:email").dumps({"p": patient_id})
    return f"{current_app.config['BASE_URL']}/unsubscribe/{token}"


def channel_for_step(session: Session, enrolment: Enrolment, step: int) -> str | None:
    """Portal inbox first for portal users, then the campaign's channels the patient
    consented to, taking the next one at each reminder."""
    refused = _refused(session, enrolment)
    if "all" in refused:
        return None
    consented = consented_channels(session, enrolment.patient)
    available = [c for c in (enrolment.campaign.channels or [Channel.SMS, Channel.EMAIL]) if c in consented]
    if enrolment.patient.uses_portal and Channel.PORTAL not in refused:
        available = [str(Channel.PORTAL)] + available
    return available[step % len(available)] if available else None


def _refused(session: Session, enrolment: Enrolment) -> set[str]:
    return set(session.scalars(select(ChannelConsent.channel).where(
        ChannelConsent.patient_id == enrolment.patient_id, ChannelConsent.granted.is_(False))))


def variant_sms_text(session: Session, enrolment: Enrolment) -> str:
    """The campaign variant's own SMS wording in the patient's language, if staff wrote one."""
    variant = session.scalar(select(CampaignVariant).where(CampaignVariant.campaign_id == enrolment.campaign_id,
                                                           CampaignVariant.key == enrolment.variant))
    return (variant.sms_text or {}).get(enrolment.patient.preferred_language, "") if variant else ""


def send_step(session: Session, enrolment: Enrolment, now: datetime) -> OutboxMessage | None:
    """Queue this enrolment's due step (with a fresh link that supersedes the last)
    and schedule the next one, or escalate when the steps are used up."""
    campaign = enrolment.campaign
    step = enrolment.next_step
    channel = channel_for_step(session, enrolment, step)
    message = None
    if channel is not None:
        link, token = issue_link(session, enrolment, now)
        message = queue_message(
            session, enrolment=enrolment, template="invite" if step == 0 else "reminder", channel=channel,
            dedupe_key=f"campaign:{enrolment.id}:{step}:{channel}",
            context={"link": link_url(token), "link_days": campaign.link_lifetime_days,
                     "unsubscribe_url": unsubscribe_url(enrolment.patient_id)})
        message.campaign_id, message.step, message.variant = campaign.id, step, enrolment.variant
        custom = variant_sms_text(session, enrolment) if channel == Channel.SMS else ""
        if custom:
            message.body_text = custom.replace("{clinic}", campaign.clinic.name).replace("{link}", link_url(token))
        enrolment.last_contacted_at = now
        record_event(session, enrolment, "sent", actor="system", step=step, channel=channel, link_id=link.id,
                     message_id=message.id, variant=enrolment.variant)
    steps = campaign.step_days or [0]
    enrolment.next_step = step + 1
    if step + 1 < len(steps):
        enrolment.next_step_at = enrolment.created_at + timedelta(days=steps[step + 1])
        if enrolment.next_step_at <= now:  # a late run: don't send two steps back to back
            enrolment.next_step_at = now + timedelta(days=1)
    else:
        enrolment.next_step_at = None
        if enrolment.escalated_at is None:
            enrolment.escalated_at = now
            record_event(session, enrolment, "escalated", actor="system", reason="no_response")
    return message


def run_due_steps(session: Session, now: datetime | None = None, limit: int = BATCH) -> int:
    """Send every due step of every active campaign (holdout patients never get
    anything) and return how many enrolments advanced. The caller commits."""
    now = now or utcnow()
    due = session.scalars(
        select(Enrolment).join(Campaign).options(joinedload(Enrolment.campaign), joinedload(Enrolment.patient))
        .where(Campaign.status == ACTIVE, Enrolment.holdout.is_(False), Enrolment.next_step_at <= now,
               Enrolment.status.in_((EnrolmentStatus.INVITED, EnrolmentStatus.SNOOZED)),
               Enrolment.locked_at.is_(None))
        .order_by(Enrolment.next_step_at, Enrolment.id).limit(limit)
    ).all()
    for enrolment in due:
        enrolment.status = EnrolmentStatus.INVITED
        send_step(session, enrolment, now)
    session.flush()
    return len(due)
