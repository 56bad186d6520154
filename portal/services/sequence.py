"""The outreach sequence: day-0 invitation, reminders on the campaign's days, then
escalation to a coordinator's call list. Sending stops the moment the patient
books, closes the enrolment or opts out.

Due steps are handled in batches: the batch's enrolments (with patient and
campaign), refusals, variants and already-queued keys are read in a few queries,
links are issued and outbox rows and events written with multi-row INSERTs, and
the templates are compiled once per batch."""
from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, joinedload

from portal.models import (Campaign, CampaignVariant, Channel, Enrolment, EnrolmentStatus, Event, OutboxMessage,
                           OutboxStatus, utcnow)
from portal.services.consent import unsubscribe_url
from portal.services.events import record_event
from portal.services.links import issue_links, link_url
from portal.services.messages import MessageRenderer, allowed_channels, outbox_row, refused_channels

ACTIVE = "active"
BATCH = 500


def stop_sequence(session: Session, enrolment: Enrolment, reason: str) -> None:
    """No more outreach for this enrolment: clear the next step and cancel what is queued."""
    enrolment.next_step_at = None
    session.execute(update(OutboxMessage).where(OutboxMessage.enrolment_id == enrolment.id,
                                                OutboxMessage.status == OutboxStatus.PENDING,
                                                OutboxMessage.step.is_not(None))
                    .values(status=OutboxStatus.CANCELLED, last_error=f"stopped: {reason}"[:200]))


def channel_for_step(enrolment: Enrolment, step: int, refused: set[str]) -> str | None:
    """Portal inbox first for portal users, then the campaign's channels the patient
    consented to, taking the next one at each reminder."""
    if "all" in refused:
        return None
    consented = allowed_channels(enrolment.patient, refused)
    available = [c for c in (enrolment.campaign.channels or [Channel.SMS, Channel.EMAIL]) if c in consented]
    if enrolment.patient.uses_portal and Channel.PORTAL not in refused:
        available = [str(Channel.PORTAL)] + available
    return available[step % len(available)] if available else None


def _variant_sms_texts(session: Session, enrolments: list[Enrolment]) -> dict[tuple[int, str], dict]:
    """Each (campaign, variant)'s own SMS wording by language, where staff wrote one."""
    campaign_ids = {e.campaign_id for e in enrolments}
    return {(v.campaign_id, v.key): v.sms_text or {} for v in session.scalars(
        select(CampaignVariant).where(CampaignVariant.campaign_id.in_(campaign_ids)))}


def _queue_steps(session: Session, sending: list[tuple[Enrolment, str]], now: datetime) -> None:
    """Issue a fresh link (superseding the last) for each (enrolment, channel),
    render its message and write the outbox rows and "sent" events."""
    links = issue_links(session, [enrolment for enrolment, _channel in sending], now)
    variants = _variant_sms_texts(session, [enrolment for enrolment, channel in sending if channel == Channel.SMS])
    renderer = MessageRenderer()
    queued_at = utcnow()
    rows = []
    for (enrolment, channel), (_link_id, token) in zip(sending, links):
        campaign, patient, step, url = enrolment.campaign, enrolment.patient, enrolment.next_step, link_url(token)
        row = outbox_row(renderer, patient=patient, clinic=campaign.clinic, enrolment_id=enrolment.id,
                         template="invite" if step == 0 else "reminder", channel=channel,
                         dedupe_key=_dedupe_key(enrolment, channel), now=queued_at,
                         context={"link": url, "link_days": campaign.link_lifetime_days,
                                  "unsubscribe_url": unsubscribe_url(current_app.config, patient.id)})
        custom = variants.get((campaign.id, enrolment.variant), {}).get(patient.preferred_language, "")
        if channel == Channel.SMS and custom:
            row["body_text"] = custom.replace("{clinic}", campaign.clinic.name).replace("{link}", url)
        rows.append({**row, "campaign_id": campaign.id, "step": step, "variant": enrolment.variant})
    message_ids = session.scalars(insert(OutboxMessage).returning(OutboxMessage.id, sort_by_parameter_order=True),
                                  rows).all()
    session.execute(insert(Event), [
        dict(enrolment_id=enrolment.id, campaign_id=enrolment.campaign_id, kind="sent", actor="system",
             occurred_at=queued_at, detail=dict(step=enrolment.next_step, channel=channel, link_id=link_id,
                                                message_id=message_id, variant=enrolment.variant))
        for (enrolment, channel), (link_id, _token), message_id in zip(sending, links, message_ids)])
    for enrolment, _channel in sending:
        enrolment.last_contacted_at = now


def _dedupe_key(enrolment: Enrolment, channel: str) -> str:
    return f"campaign:{enrolment.id}:{enrolment.next_step}:{channel}"


def _advance(session: Session, enrolment: Enrolment, now: datetime) -> None:
    """Schedule the enrolment's next step, or escalate when the steps are used up."""
    step = enrolment.next_step
    steps = enrolment.campaign.step_days or [0]
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


def run_due_steps(session: Session, now: datetime | None = None, limit: int = BATCH) -> int:
    """Queue up to `limit` due steps of active campaigns (holdout patients never get
    anything), each with a fresh link, and return how many enrolments advanced.
    On PostgreSQL the due enrolments are locked with SKIP LOCKED, so dispatchers
    running side by side take different ones. The caller commits."""
    now = now or utcnow()
    query = (select(Enrolment).join(Campaign)
             .options(joinedload(Enrolment.campaign).joinedload(Campaign.clinic), joinedload(Enrolment.patient))
             .where(Campaign.status == ACTIVE, Enrolment.holdout.is_(False), Enrolment.next_step_at <= now,
                    Enrolment.status.in_((EnrolmentStatus.INVITED, EnrolmentStatus.SNOOZED)),
                    Enrolment.locked_at.is_(None))
             .order_by(Enrolment.next_step_at, Enrolment.id).limit(limit)
             .execution_options(populate_existing=True))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Enrolment)
    due = session.scalars(query).unique().all()
    if not due:
        return 0
    refused = refused_channels(session, [e.patient_id for e in due])
    steps = [(e, channel_for_step(e, e.next_step, refused.get(e.patient_id, set()))) for e in due]
    # A step already in the outbox (another run queued it) is not queued, linked or counted twice.
    keys = [_dedupe_key(e, channel) for e, channel in steps if channel is not None]
    queued = set(session.scalars(select(OutboxMessage.dedupe_key).where(OutboxMessage.dedupe_key.in_(keys))))
    sending = [(e, channel) for e, channel in steps if channel is not None and _dedupe_key(e, channel) not in queued]
    if sending:
        _queue_steps(session, sending, now)
    for enrolment in due:
        enrolment.status = EnrolmentStatus.INVITED
        _advance(session, enrolment, now)
    session.flush()
    return len(due)
