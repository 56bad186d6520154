"""Send what the outbox holds, after the transaction that wrote it has committed.

A batch is its own unit of work, like a request, and no transaction is held open
while a provider is called:

1. Claim. Due rows are selected with FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite
   serialises writers, so run one dispatcher there). Each is checked again: consent
   (opted out → cancelled), the enrolment (booked, closed, snoozed or holdout →
   campaign messages cancelled), quiet hours and frequency caps (→ deferred). The
   rest get a lease (`claimed_until`) and an attempt, and the claim is COMMITTED
   before anything is sent, so other dispatchers skip them.
2. Send, one provider call at a time: a message per call (`send`), or all of a
   channel's messages in one call for channels that take many (`send_many`: the
   portal inbox, the dev outbox). Before each call one SELECT takes a last look at
   its messages (cancelled by a STOP, channel refused since the claim, lease lost);
   after it the outcomes (sent, retry with exponential backoff, dead letter) are
   written with one executemany per kind, in the same transaction as the next
   call's last look, so each call's outcomes are durable before the next call.

A dispatcher that dies between a call and its commit leaves rows whose lease runs
out; the next run claims them again and the idempotency keys let the provider drop
the second copy (so a `send_many` channel must be one where re-sending a whole call
is harmless). A row that keeps killing its dispatcher is dead-lettered after
`max_attempts` claims.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.orm import Session

from portal.channels import ChannelError, MessageChannel, PermanentChannelError, Sent
from portal.models import (Campaign, Channel, ChannelConsent, Enrolment, EnrolmentStatus, Location, OutboxMessage,
                           OutboxStatus, Patient, utcnow)
from portal.services.consent import REPLY_TEMPLATES

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
EXTERNAL = (str(Channel.SMS), str(Channel.EMAIL))  # channels that reach a phone or a mailbox
EXEMPT_FROM_CONSENT = frozenset(REPLY_TEMPLATES.values())  # the one reply to STOP/START/HELP
FaultHook = Callable[[str, OutboxMessage], None]


@dataclass(frozen=True)
class DispatchPolicy:
    """The rules a dispatcher applies; `from_config` reads the PORTAL_* settings."""

    window_start_hour: int = 8  # campaign messages only between 8:00 ...
    window_end_hour: int = 21  # ... and 21:00 in the patient's own time zone
    default_zone: str = "America/Chicago"  # when neither the patient nor the clinic has one
    cap_day: int = 1  # campaign messages per patient per 24 hours (a campaign's own cap wins)
    cap_week: int = 3  # ... and per 7 days
    lease: timedelta = timedelta(minutes=5)
    max_attempts: int = MAX_ATTEMPTS
    retry_base: timedelta = timedelta(minutes=1)
    retry_max: timedelta = timedelta(hours=6)
    fault_hook: FaultHook | None = None  # tests only: called at "claimed" and "sent"

    @classmethod
    def from_config(cls, config: dict) -> DispatchPolicy:
        return cls(window_start_hour=config.get("SEND_WINDOW_START_HOUR", 8),
                   window_end_hour=config.get("SEND_WINDOW_END_HOUR", 21),
                   default_zone=config.get("DEFAULT_TIME_ZONE") or "America/Chicago",
                   cap_day=config.get("FREQUENCY_CAP_DAY", 1), cap_week=config.get("FREQUENCY_CAP_WEEK", 3),
                   lease=timedelta(seconds=config.get("DISPATCH_LEASE_SECONDS", 300)),
                   max_attempts=config.get("DISPATCH_MAX_ATTEMPTS", MAX_ATTEMPTS),
                   retry_base=timedelta(seconds=config.get("DISPATCH_RETRY_BASE_SECONDS", 60)),
                   fault_hook=None if config.get("PORTAL_ENV") == "production" else config.get("DISPATCH_FAULT_HOOK"))


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    cancelled: int = 0
    retried: int = 0
    dead: int = 0
    sent_ids: list[int] = field(default_factory=list)

    @property
    def handled(self) -> int:
        """Rows this batch touched; 0 means nothing was due."""
        return self.claimed + self.deferred + self.cancelled + self.dead

    def add(self, other: DispatchReport) -> None:
        for name in ("claimed", "sent", "deferred", "cancelled", "retried", "dead"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.sent_ids += other.sent_ids

    def __str__(self) -> str:
        return (f"sent {self.sent}, deferred {self.deferred}, cancelled {self.cancelled}, "
                f"retrying {self.retried}, dead {self.dead}")


# --- quiet hours --------------------------------------------------------------

def zone_or_none(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def next_send_time(moment: datetime, zone: ZoneInfo, start_hour: int = 8, end_hour: int = 21) -> datetime:
    """`moment` itself when it falls inside the sending window in `zone`, else the
    next window start (8:00 local), in UTC. Wall-clock arithmetic in the zone keeps
    8:00 at 8:00 on both sides of a daylight-saving change."""
    local = moment.astimezone(zone)
    if start_hour <= local.hour < end_hour:
        return moment
    day = local.date() if local.hour < start_hour else local.date() + timedelta(days=1)
    return datetime.combine(day, time(start_hour), tzinfo=zone).astimezone(timezone.utc)


# --- claiming -----------------------------------------------------------------

class _BatchContext:
    """What one claim needs to know about the batch's patients, read in a few queries."""

    def __init__(self, session: Session, messages: list[OutboxMessage], policy: DispatchPolicy,
                 now: datetime) -> None:
        self.session, self.policy, self.now = session, policy, now
        patient_ids = {m.patient_id for m in messages if m.patient_id is not None}
        self.refused: dict[int, set[str]] = {}
        for pid, channel in session.execute(select(ChannelConsent.patient_id, ChannelConsent.channel).where(
                ChannelConsent.patient_id.in_(patient_ids), ChannelConsent.granted.is_(False))):
            self.refused.setdefault(pid, set()).add(channel)
        fresh = {"populate_existing": True}
        self.patients = {p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(patient_ids)),
                                                          execution_options=fresh)}
        enrolment_ids = {m.enrolment_id for m in messages if m.enrolment_id is not None}
        self.enrolments = {e.id: e for e in session.scalars(select(Enrolment).where(Enrolment.id.in_(enrolment_ids)),
                                                            execution_options=fresh)}
        campaign_ids = {m.campaign_id for m in messages if m.campaign_id is not None}
        campaign_ids |= {e.campaign_id for e in self.enrolments.values()}
        self.campaigns = {c.id: c for c in session.scalars(select(Campaign).where(Campaign.id.in_(campaign_ids)))}
        self.clinic_zones: dict[int, str] = {}
        clinic_ids = {c.clinic_id for c in self.campaigns.values()}
        for clinic_id, zone in session.execute(
                select(Location.clinic_id, Location.time_zone).where(Location.clinic_id.in_(clinic_ids))
                .order_by(Location.retired, Location.id)):
            self.clinic_zones.setdefault(clinic_id, zone)
        self.counts = self._recent_counts({m.patient_id for m in messages if _is_campaign(m) and m.patient_id})

    def _recent_counts(self, patient_ids: set[int]) -> dict[int, list]:
        """Per patient: [sent in the last day, in the last week, oldest in the day
        window, oldest in the week window]. Messages another dispatcher is sending
        right now (a live lease) count as sent now."""
        if not patient_ids:
            return {}
        day_ago, week_ago = self.now - timedelta(days=1), self.now - timedelta(days=7)
        sent = OutboxMessage.status == OutboxStatus.SENT
        in_flight = and_(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.claimed_until > self.now)
        rows = self.session.execute(
            select(OutboxMessage.patient_id,
                   func.sum(case((and_(sent, OutboxMessage.sent_at <= day_ago), 0), else_=1)),
                   func.count(),
                   func.min(case((and_(sent, OutboxMessage.sent_at > day_ago), OutboxMessage.sent_at))),
                   func.min(OutboxMessage.sent_at))
            .where(OutboxMessage.patient_id.in_(patient_ids), OutboxMessage.step.is_not(None),
                   OutboxMessage.channel.in_(EXTERNAL),
                   or_(and_(sent, OutboxMessage.sent_at > week_ago), in_flight))
            .group_by(OutboxMessage.patient_id))
        return {pid: [day or 0, week or 0, day_oldest, week_oldest]
                for pid, day, week, day_oldest, week_oldest in rows}

    def zone_for(self, message: OutboxMessage) -> ZoneInfo:
        """The patient's zone, else their clinic's (first open location), else the default."""
        patient = self.patients.get(message.patient_id)
        zone = zone_or_none(patient.time_zone if patient else None)
        if zone is None:
            campaign_id = message.campaign_id
            if campaign_id is None and message.enrolment_id in self.enrolments:
                campaign_id = self.enrolments[message.enrolment_id].campaign_id
            campaign = self.campaigns.get(campaign_id)
            zone = zone_or_none(self.clinic_zones.get(campaign.clinic_id) if campaign else None)
        return zone or zone_or_none(self.policy.default_zone) or ZoneInfo("UTC")

    def caps_for(self, message: OutboxMessage) -> tuple[int, int]:
        campaign = self.campaigns.get(message.campaign_id)
        if campaign is not None:
            return campaign.max_per_day, campaign.max_per_week
        return self.policy.cap_day, self.policy.cap_week

    def cap_release(self, message: OutboxMessage) -> datetime | None:
        """None when the patient is under both caps, else when a slot frees up."""
        per_day, per_week = self.caps_for(message)
        day, week, day_oldest, week_oldest = self.counts.get(message.patient_id, [0, 0, None, None])
        release = None
        if day >= per_day:
            release = (day_oldest or self.now) + timedelta(days=1)
        if week >= per_week:
            release = max(release or self.now, (week_oldest or self.now) + timedelta(days=7))
        return release

    def count_claim(self, message: OutboxMessage) -> None:
        entry = self.counts.setdefault(message.patient_id, [0, 0, None, None])
        entry[0] += 1
        entry[1] += 1

    def refusal(self, message: OutboxMessage) -> str | None:
        """Why this message may not go out at all any more, or None."""
        if message.template not in EXEMPT_FROM_CONSENT and message.patient_id is not None:
            refused = self.refused.get(message.patient_id, set())
            if "all" in refused or message.channel in refused:
                return "opted out"
        if _is_campaign(message):
            patient = self.patients.get(message.patient_id)
            if patient is not None and patient.deceased_on is not None:
                return "patient deceased"
            enrolment = self.enrolments.get(message.enrolment_id)
            if enrolment is not None:
                if enrolment.holdout:
                    return "holdout"
                if enrolment.status != EnrolmentStatus.INVITED:
                    return f"enrolment {enrolment.status}"
        return None


def _is_campaign(message: OutboxMessage) -> bool:
    """A sequence step: subject to quiet hours and caps. Codes, booking notices and
    keyword replies have no step: they are transactional and go out at once."""
    return message.step is not None


def claim_due(session: Session, now: datetime, limit: int, policy: DispatchPolicy,
              report: DispatchReport | None = None) -> list[OutboxMessage]:
    """Select and lease up to `limit` due messages; flushes, the caller commits.

    Also cancels what may no longer be sent and defers what is outside the
    patient's quiet hours or over a frequency cap.
    """
    report = report if report is not None else DispatchReport()
    live_lease = and_(OutboxMessage.claimed_until.is_not(None), OutboxMessage.claimed_until > now)
    candidates = list(session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.next_attempt_at <= now, ~live_lease)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)  # the row as locked, not as this session last saw it
    ))
    if not candidates:
        return []
    # Caps count what a patient already got, so two dispatchers must not judge the
    # same patient at once: lock the patients of campaign messages (FOR NO KEY UPDATE,
    # which still lets other rows reference them) and leave the rest for later.
    campaign_patients = {m.patient_id for m in candidates if _is_campaign(m) and m.patient_id is not None}
    if campaign_patients and session.get_bind().dialect.name == "postgresql":
        locked = set(session.scalars(select(Patient.id).where(Patient.id.in_(campaign_patients))
                                     .with_for_update(skip_locked=True, key_share=True)))
        candidates = [m for m in candidates if not _is_campaign(m) or m.patient_id in locked]
    context = _BatchContext(session, candidates, policy, now)
    claimed = []
    for message in candidates:
        reason = context.refusal(message)
        if reason is not None:
            message.status, message.last_error, message.claimed_until = OutboxStatus.CANCELLED, reason, None
            report.cancelled += 1
            continue
        if message.attempts >= policy.max_attempts:
            # Claimed that many times and never finished: it keeps killing dispatchers.
            message.status, message.claimed_until = OutboxStatus.DEAD, None
            message.last_error = f"gave up after {message.attempts} attempts: {message.last_error}"[:200]
            report.dead += 1
            continue
        if _is_campaign(message) and message.channel in EXTERNAL:
            zone = context.zone_for(message)
            release = context.cap_release(message)
            when = next_send_time(release or now, zone, policy.window_start_hour, policy.window_end_hour)
            if when > now:
                message.next_attempt_at, message.claimed_until = when, None
                report.deferred += 1
                continue
            context.count_claim(message)
        message.attempts += 1
        message.claimed_until = now + policy.lease
        claimed.append(message)
    report.claimed += len(claimed)
    session.flush()
    return claimed


# --- sending ------------------------------------------------------------------

def _backoff(policy: DispatchPolicy, attempts: int) -> timedelta:
    return min(policy.retry_base * (2 ** max(attempts - 1, 0)), policy.retry_max)


_outbox = OutboxMessage.__table__
# Outcomes are written with executemany, one statement per kind for a whole hand-off.
# Sent is the truth even if a STOP cancelled the row while the provider had it.
_MARK_SENT = (update(_outbox)
              .where(_outbox.c.id == bindparam("b_id"), _outbox.c.status != OutboxStatus.SENT)
              .values(status=OutboxStatus.SENT, sent_at=bindparam("b_at", type_=_outbox.c.sent_at.type),
                      claimed_until=None, last_error="",
                      provider_message_id=func.coalesce(
                          bindparam("b_provider_id", type_=_outbox.c.provider_message_id.type),
                          _outbox.c.provider_message_id),
                      delivered_at=func.coalesce(bindparam("b_delivered", type_=_outbox.c.delivered_at.type),
                                                 _outbox.c.delivered_at)))
# Not sent: a retry later (status stays pending), a dead letter, or cancelled at the last look.
_MARK_UNSENT = (update(_outbox)
                .where(_outbox.c.id == bindparam("b_id"), _outbox.c.status == OutboxStatus.PENDING)
                .values(status=bindparam("b_status", type_=_outbox.c.status.type), claimed_until=None,
                        last_error=bindparam("b_error", type_=_outbox.c.last_error.type),
                        next_attempt_at=func.coalesce(bindparam("b_next", type_=_outbox.c.next_attempt_at.type),
                                                      _outbox.c.next_attempt_at)))


@dataclass
class _Outcomes:
    """What one hand-off to a channel came to, written in the next transaction."""

    sent: list[dict] = field(default_factory=list)
    unsent: list[dict] = field(default_factory=list)

    def write(self, session: Session) -> None:
        if self.sent:
            session.execute(_MARK_SENT, self.sent)
        if self.unsent:
            session.execute(_MARK_UNSENT, self.unsent)
        self.sent, self.unsent = [], []


def _hand_offs(messages: list[OutboxMessage], channels: dict[str, MessageChannel]) -> list[list[OutboxMessage]]:
    """The batch cut into provider calls, in claim order: all of a channel's messages
    in one call when the channel takes many at once (`send_many`), else one each."""
    groups: list[list[OutboxMessage]] = []
    together: dict[str, list[OutboxMessage]] = {}
    for message in messages:
        if not hasattr(channels.get(message.channel), "send_many"):
            groups.append([message])
        elif message.channel in together:
            together[message.channel].append(message)
        else:
            together[message.channel] = [message]
            groups.append(together[message.channel])
    return groups


def _last_look(session: Session, group: list[OutboxMessage]) -> tuple[list[OutboxMessage], list[OutboxMessage]]:
    """(still ours to send, opted out since the claim), in one SELECT: a STOP may have
    cancelled a row or refused its channel, or a slow batch may have lost its lease."""
    refused = exists().where(ChannelConsent.patient_id == OutboxMessage.patient_id,
                             ChannelConsent.granted.is_(False),
                             or_(ChannelConsent.channel == OutboxMessage.channel, ChannelConsent.channel == "all"))
    rows = {id_: (status, claimed_until, opted_out) for id_, status, claimed_until, opted_out in session.execute(
        select(OutboxMessage.id, OutboxMessage.status, OutboxMessage.claimed_until, refused)
        .where(OutboxMessage.id.in_([m.id for m in group])))}
    live, opted_out = [], []
    for message in group:
        status, claimed_until, refusal = rows.get(message.id, (None, None, False))
        if status != OutboxStatus.PENDING or claimed_until != message.claimed_until:
            continue
        if refusal and message.template not in EXEMPT_FROM_CONSENT:
            opted_out.append(message)
        else:
            live.append(message)
    return live, opted_out


def _hand_off(channel: MessageChannel | None, messages: list[OutboxMessage]) -> list[Sent | ChannelError | None]:
    """One provider call: each message's Sent (or None), or the ChannelError it met."""
    try:
        if channel is None:
            raise PermanentChannelError(f"no channel {messages[0].channel!r}")
        send_many = getattr(channel, "send_many", None)
        results = list(send_many(messages)) if send_many else [channel.send(messages[0])]
        if len(results) != len(messages):
            raise TypeError(f"{len(results)} results for {len(messages)} messages")
        return results
    except ChannelError as exc:
        return [exc] * len(messages)
    except Exception as exc:  # a bug in a channel must not stop the other messages
        log.exception("channel %s raised on outbox messages %s", messages[0].channel, [m.id for m in messages])
        return [ChannelError(type(exc).__name__)] * len(messages)


def _send(channels: dict[str, MessageChannel], group: list[OutboxMessage], now: datetime, policy: DispatchPolicy,
          report: DispatchReport, outcomes: _Outcomes) -> None:
    if policy.fault_hook:
        for message in group:
            policy.fault_hook("claimed", message)
    results = _hand_off(channels.get(group[0].channel), group)
    for message, result in zip(group, results):
        if not isinstance(result, ChannelError):
            if policy.fault_hook:
                policy.fault_hook("sent", message)
            outcomes.sent.append({"b_id": message.id, "b_at": now,
                                  "b_provider_id": (result.provider_message_id[:64] or None) if result else None,
                                  "b_delivered": now if result is not None and result.delivered else None})
            report.sent += 1
            report.sent_ids.append(message.id)
            continue
        final = isinstance(result, PermanentChannelError) or message.attempts >= policy.max_attempts
        error = str(result)[:200] or type(result).__name__
        outcomes.unsent.append({"b_id": message.id, "b_error": error,
                                "b_status": OutboxStatus.DEAD if final else OutboxStatus.PENDING,
                                "b_next": None if final else now + _backoff(policy, message.attempts)})
        if final:
            report.dead += 1
        else:
            report.retried += 1
        log.warning("outbox message %s on %s failed (attempt %s): %s", message.id, message.channel,
                    message.attempts, error)


def dispatch_batch(session: Session, channels: dict[str, MessageChannel], now: datetime | None = None,
                   limit: int = 100, policy: DispatchPolicy | None = None) -> DispatchReport:
    """Claim up to `limit` due messages and commit the claim; then, per provider call,
    take a last look, hand the messages over, and write their outcomes in the same
    transaction as the next call's last look. This is a unit-of-work boundary (like a
    request or a CLI command): it commits on `session`, and expects no uncommitted
    work in it."""
    now = now or utcnow()
    policy = policy or _policy_from_app()
    report = DispatchReport()
    claimed = claim_due(session, now, limit, policy, report)
    # Channels get detached copies: reading them never opens a transaction (SQLite's
    # BEGIN IMMEDIATE would hold the write lock through a provider call).
    copies = [_detached_copy(m) for m in claimed]
    session.commit()
    outcomes = _Outcomes()
    for group in _hand_offs(copies, channels):
        outcomes.write(session)
        live, opted_out = _last_look(session, group)
        session.commit()  # the previous call's outcomes are durable before the next call
        for message in opted_out:
            outcomes.unsent.append({"b_id": message.id, "b_status": OutboxStatus.CANCELLED,
                                    "b_error": "opted out", "b_next": None})
            report.cancelled += 1
        if live:
            _send(channels, live, now, policy, report, outcomes)
    outcomes.write(session)
    session.commit()
    for message in claimed:
        session.expire(message)  # the outcome was written with UPDATEs; reload on next use
    if report.handled:
        log.info("dispatch: %s", report)
    return report


def _detached_copy(message: OutboxMessage) -> OutboxMessage:
    columns = OutboxMessage.__mapper__.column_attrs
    return OutboxMessage(**{attr.key: getattr(message, attr.key) for attr in columns})


def dispatch_due(session: Session, channels: dict[str, MessageChannel], now: datetime | None = None,
                 limit: int = 100, policy: DispatchPolicy | None = None) -> int:
    """Send up to `limit` due messages and return how many went out (see dispatch_batch)."""
    return dispatch_batch(session, channels, now, limit, policy).sent


def _policy_from_app() -> DispatchPolicy:
    from flask import current_app, has_app_context

    return DispatchPolicy.from_config(current_app.config) if has_app_context() else DispatchPolicy()


# --- dead letters -------------------------------------------------------------

def dead_letters(session: Session, limit: int = 100) -> list[OutboxMessage]:
    """Messages that will not be retried any more, newest first (for the console)."""
    return list(session.scalars(select(OutboxMessage).where(OutboxMessage.status == OutboxStatus.DEAD)
                                .order_by(OutboxMessage.id.desc()).limit(limit)))


def requeue_dead_letter(session: Session, message_id: int, now: datetime | None = None) -> bool:
    """Give a dead letter a fresh set of attempts (after staff fixed the cause).
    Consent, quiet hours and caps are checked again when it is sent."""
    done = session.execute(update(OutboxMessage).where(OutboxMessage.id == message_id,
                                                       OutboxMessage.status == OutboxStatus.DEAD)
                           .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now or utcnow(),
                                   claimed_until=None, last_error="")
                           .execution_options(synchronize_session=False)).rowcount
    session.flush()
    return bool(done)
