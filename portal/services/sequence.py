"""The outreach sequence: day-0 invitation, reminders on the campaign's days, then
escalation to a coordinator's call list. Sending stops the moment the patient
books, closes the enrolment or opts out.

Due steps are handled in batches: the batch's enrolments (with what the step needs
of patient and campaign, as Core rows), refusals, variants and already-queued keys
are read in a few queries, links are issued and outbox rows and events written with
batched INSERTs, the enrolments advanced with one executemany, and the templates
compiled once per batch. No ORM object is loaded per enrolment."""
from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from portal.models import (Campaign, CampaignVariant, Channel, Clinic, Enrolment, EnrolmentStatus, Event,
                           OutboxMessage, OutboxStatus, Patient, utcnow)
from portal.services.consent import unsubscribe_url
from portal.services.bulk import insert_returning_ids
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


def channel_for_step(row, refused: set[str]) -> str | None:
    """Portal inbox first for portal users, then the campaign's channels the patient
    consented to, taking the next one at each reminder. `row` is a due row of
    run_due_steps (the patient's contacts, the campaign's channels, the next step)."""
    if "all" in refused:
        return None
    consented = allowed_channels(row, refused)
    available = [c for c in (row.channels or [Channel.SMS, Channel.EMAIL]) if c in consented]
    if row.uses_portal and Channel.PORTAL not in refused:
        available = [str(Channel.PORTAL)] + available
    return available[row.next_step % len(available)] if available else None


_enrolment, _campaign, _patient = Enrolment.__table__, Campaign.__table__, Patient.__table__
_outbox, _event = OutboxMessage.__table__, Event.__table__
# A due enrolment with what its step needs of the campaign and the patient, as one Core row.
_DUE = (select(_enrolment.c.id, _enrolment.c.campaign_id, _enrolment.c.patient_id, _enrolment.c.next_step,
               _enrolment.c.variant, _enrolment.c.created_at, _enrolment.c.escalated_at, _campaign.c.clinic_id,
               _campaign.c.channels, _campaign.c.step_days, _campaign.c.link_lifetime_days, _patient.c.phone,
               _patient.c.email, _patient.c.preferred_language, _patient.c.uses_portal)
        .select_from(_enrolment.join(_campaign, _campaign.c.id == _enrolment.c.campaign_id)
                     .join(_patient, _patient.c.id == _enrolment.c.patient_id))
        .where(_campaign.c.status == ACTIVE, _enrolment.c.holdout.is_(False),
               _enrolment.c.next_step_at <= bindparam("now", type_=_enrolment.c.next_step_at.type),
               _enrolment.c.status.in_((EnrolmentStatus.INVITED, EnrolmentStatus.SNOOZED)),
               _enrolment.c.locked_at.is_(None))
        .order_by(_enrolment.c.next_step_at, _enrolment.c.id).limit(bindparam("limit")))
# Every due enrolment is invited again (a snooze has run out) and moves to its next step.
_ADVANCE = (update(_enrolment).where(_enrolment.c.id == bindparam("b_id"))
            .values(status=EnrolmentStatus.INVITED, next_step=bindparam("b_step"),
                    next_step_at=bindparam("b_at", type_=_enrolment.c.next_step_at.type),
                    escalated_at=func.coalesce(bindparam("b_escalated", type_=_enrolment.c.escalated_at.type),
                                               _enrolment.c.escalated_at),
                    last_contacted_at=func.coalesce(bindparam("b_contacted", type_=_enrolment.c.last_contacted_at.type),
                                                    _enrolment.c.last_contacted_at)))


def _variant_sms_texts(session: Session, campaign_ids: set[int]) -> dict[tuple[int, str], dict]:
    """Each (campaign, variant)'s own SMS wording by language, where staff wrote one."""
    if not campaign_ids:
        return {}
    return {(campaign_id, key): sms_text or {} for campaign_id, key, sms_text in session.execute(
        select(CampaignVariant.campaign_id, CampaignVariant.key, CampaignVariant.sms_text)
        .where(CampaignVariant.campaign_id.in_(campaign_ids)))}


def _queue_steps(session: Session, sending: list[tuple], now: datetime) -> dict[int, datetime]:
    """Issue a fresh link (superseding the last) for each (due row, channel), render
    its message and write the outbox rows and "sent" events. Returns when each
    enrolment was contacted."""
    links = issue_links(session, [(row.id, row.link_lifetime_days) for row, _channel in sending], now)
    variants = _variant_sms_texts(session, {row.campaign_id for row, channel in sending if channel == Channel.SMS})
    clinics = {clinic.id: clinic for clinic in session.scalars(
        select(Clinic).where(Clinic.id.in_({row.clinic_id for row, _channel in sending})))}
    config = current_app.config
    renderer = MessageRenderer()
    queued_at = utcnow()
    rows = []
    for (row, channel), (_link_id, token) in zip(sending, links):
        clinic, url = clinics[row.clinic_id], link_url(token)
        context = {"link": url, "link_days": row.link_lifetime_days}
        if channel != Channel.SMS:  # the texts carry "Reply STOP" instead of a link to unsubscribe
            context["unsubscribe_url"] = unsubscribe_url(config, row.patient_id)
        outbox = outbox_row(renderer, patient=_Recipient(row), clinic=clinic, enrolment_id=row.id,
                            template="invite" if row.next_step == 0 else "reminder", channel=channel,
                            dedupe_key=_dedupe_key(row, channel), now=now, context=context)
        custom = variants.get((row.campaign_id, row.variant), {}).get(row.preferred_language, "")
        if channel == Channel.SMS and custom:
            outbox["body_text"] = custom.replace("{clinic}", clinic.name).replace("{link}", url)
        rows.append({**outbox, "campaign_id": row.campaign_id, "step": row.next_step, "variant": row.variant,
                     "status": OutboxStatus.PENDING, "attempts": 0, "last_error": "", "provider_message_id": ""})
    message_ids = insert_returning_ids(session, _outbox, rows)
    session.execute(_event.insert(), [
        dict(enrolment_id=row.id, campaign_id=row.campaign_id, kind="sent", actor="system", occurred_at=queued_at,
             detail=dict(step=row.next_step, channel=channel, link_id=link_id, message_id=message_id,
                         variant=row.variant))
        for (row, channel), (link_id, _token), message_id in zip(sending, links, message_ids)])
    return {row.id: now for row, _channel in sending}


class _Recipient:
    """What outbox_row reads of a patient, from a due row."""

    __slots__ = ("id", "phone", "email", "preferred_language")

    def __init__(self, row) -> None:
        self.id, self.phone, self.email, self.preferred_language = (row.patient_id, row.phone, row.email,
                                                                    row.preferred_language)


def _dedupe_key(enrolment, channel: str) -> str:
    return f"campaign:{enrolment.id}:{enrolment.next_step}:{channel}"


def _advance(row, now: datetime, contacted: datetime | None) -> tuple[dict, dict | None]:
    """The enrolment's next step (or escalation when the steps are used up), as
    parameters of _ADVANCE, and the "escalated" event to record, if any."""
    step = row.next_step
    steps = row.step_days or [0]
    change = {"b_id": row.id, "b_step": step + 1, "b_at": None, "b_escalated": None, "b_contacted": contacted}
    if step + 1 < len(steps):
        change["b_at"] = row.created_at + timedelta(days=steps[step + 1])
        if change["b_at"] <= now:  # a late run: don't send two steps back to back
            change["b_at"] = now + timedelta(days=1)
        return change, None
    if row.escalated_at is not None:
        return change, None
    change["b_escalated"] = now
    return change, dict(enrolment_id=row.id, campaign_id=row.campaign_id, kind="escalated", actor="system",
                        occurred_at=utcnow(), detail={"reason": "no_response"})


def run_due_steps(session: Session, now: datetime | None = None, limit: int = BATCH) -> int:
    """Queue up to `limit` due steps of active campaigns (holdout patients never get
    anything), each with a fresh link, and return how many enrolments advanced.
    On PostgreSQL the due enrolments are locked with SKIP LOCKED, so dispatchers
    running side by side take different ones. The caller commits.

    The batch is read as Core rows and written with executemany and multi-row
    INSERTs; Enrolment objects this session holds for those rows are expired."""
    now = now or utcnow()
    session.flush()
    query = _DUE
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=_enrolment)
    due = session.execute(query, {"now": now, "limit": limit}).all()
    if not due:
        return 0
    refused = refused_channels(session, [row.patient_id for row in due])
    steps = [(row, channel_for_step(row, refused.get(row.patient_id, set()))) for row in due]
    # A step already in the outbox (another run queued it) is not queued, linked or counted twice.
    keys = [_dedupe_key(row, channel) for row, channel in steps if channel is not None]
    queued = set(session.scalars(select(_outbox.c.dedupe_key).where(_outbox.c.dedupe_key.in_(keys))))
    sending = [(row, channel) for row, channel in steps
               if channel is not None and _dedupe_key(row, channel) not in queued]
    contacted = _queue_steps(session, sending, now) if sending else {}
    changes, escalations = [], []
    for row in due:
        change, escalation = _advance(row, now, contacted.get(row.id))
        changes.append(change)
        if escalation is not None:
            escalations.append(escalation)
    session.execute(_ADVANCE, changes)
    if escalations:
        session.execute(_event.insert(), escalations)
    ids = {row.id for row in due}
    for key, obj in list(session.identity_map.items()):
        if key[0] is Enrolment and key[1][0] in ids:
            session.expire(obj)
    return len(due)
