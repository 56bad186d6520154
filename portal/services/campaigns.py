"""Campaigns: who is in the audience, previewing it, and launching, pausing,
resuming and stopping outreach.

The audience is built with one INSERT ... SELECT per care gap: no Python object
per patient, so it stays fast at a million patients. Exclusions are part of the
SELECT; the holdout group is enrolled (so it is counted) but never contacted.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import BigInteger, and_, case, cast, exists, func, insert, literal, not_, select, update
from sqlalchemy.orm import Session

from portal.models import (Appointment, AppointmentStatus, Campaign, CampaignVariant, ChannelConsent, ClinicalFact,
                           Enrolment, EnrolmentStatus, OutboxMessage, OutboxStatus, Patient, Slot, utcnow)
from portal.services.care_gap_rules import gap_conditions
from portal.services.care_gaps import CARE_GAPS
from portal.services.errors import InvalidInput, MessageRejected
from portal.services.events import record_event
from portal.services.message_linter import SAMPLE_LINK, lint_message

DRAFT, ACTIVE, PAUSED, STOPPED = "draft", "active", "paused", "stopped"


def _eligible(session: Session, campaign: Campaign, gap_code: str, as_of: date, now: datetime):
    """WHERE clause, over patient, of the patients with the gap, minus every exclusion of the brief."""
    refused_all = exists().where(ChannelConsent.patient_id == Patient.id, ChannelConsent.channel == "all",
                                 ChannelConsent.granted.is_(False))
    already_booked = exists().where(Appointment.patient_id == Patient.id,
                                    Appointment.status == AppointmentStatus.BOOKED,
                                    Appointment.slot_id == Slot.id, Slot.starts_at > now)
    contacted_recently = exists().where(OutboxMessage.patient_id == Patient.id, OutboxMessage.step.is_not(None),
                                        OutboxMessage.status == OutboxStatus.SENT,
                                        OutboxMessage.sent_at > now - timedelta(days=campaign.recontact_days))
    conditions = [*gap_conditions(gap_code, as_of), Patient.coverage_active.is_(True),
                  not_(refused_all), not_(already_booked), not_(contacted_recently)]
    enrolled = exists().where(Enrolment.campaign_id == campaign.id, Enrolment.care_gap_code == gap_code)
    if session.scalar(select(enrolled)):
        # Only then can anyone be enrolled already (a trigger gap after an import). Left out otherwise: over
        # an empty enrolment table PostgreSQL plans this NOT EXISTS as a scan of enrolment per patient, and
        # the INSERT it feeds makes that scan longer row after row (38 s of the first build at 1M patients).
        conditions.append(not_(enrolled.where(Enrolment.patient_id == Patient.id)))
    return and_(*conditions)


def _holdout(campaign: Campaign):
    """Stable per patient: the same patient is always in (or out of) this campaign's
    control group. 7919 is prime to 100, so consecutive ids spread evenly; 64-bit
    arithmetic, because PostgreSQL's 32-bit integer overflows past 271 181 patients."""
    return (cast(Patient.id, BigInteger) * 7919 + campaign.id * 104729) % 100 < campaign.holdout_percent


def _variant(campaign: Campaign, variants: list[CampaignVariant]):
    if not variants:
        return literal("A")
    total = sum(max(v.weight, 1) for v in variants)
    bucket = (cast(Patient.id, BigInteger) * 31 + campaign.id * 17) % total  # 64-bit: no overflow past 69M ids
    whens, upper = [], 0
    for variant in variants[:-1]:
        upper += max(variant.weight, 1)
        whens.append((bucket < upper, variant.key))
    return case(*whens, else_=variants[-1].key) if whens else literal(variants[-1].key)


def build_audience(session: Session, campaign: Campaign, as_of: date | None = None,
                   now: datetime | None = None, gaps: tuple[str, ...] | None = None,
                   facts_since: datetime | None = None) -> int:
    """Enrol every eligible patient for each of the campaign's care gaps (or only
    `gaps`), highest tier first, up to max_invites; with `facts_since`, only patients
    with clinical facts imported since then. Holdout enrolments get no next step.
    Returns how many were enrolled."""
    now = now or utcnow()
    as_of = as_of or now.date()
    variants = list(session.scalars(select(CampaignVariant).where(CampaignVariant.campaign_id == campaign.id)
                                    .order_by(CampaignVariant.key)))
    added = 0
    wanted = [code for code in campaign.care_gap_codes if gaps is None or code in gaps]
    for gap_code in sorted(wanted, key=lambda code: CARE_GAPS[code].tier):
        remaining = None if campaign.max_invites is None else campaign.max_invites - added
        if remaining is not None and remaining <= 0:
            break
        tier = CARE_GAPS[gap_code].tier
        held = _holdout(campaign)
        query = (select(literal(campaign.id), Patient.id, literal(gap_code), literal(EnrolmentStatus.INVITED.value),
                        literal(tier), _variant(campaign, variants), held, literal(0),
                        case((held, None), else_=literal(now)), literal(now), literal(0), literal(""))
                 .where(_eligible(session, campaign, gap_code, as_of, now)))
        if facts_since is not None:
            query = query.where(exists().where(ClinicalFact.patient_id == Patient.id,
                                               ClinicalFact.imported_at >= facts_since))
        if remaining is not None:
            # Older patients first within a tier. Only a cap needs an order: unsorted, the rows come in the
            # scan's patient id order, which the enrolment indexes take far faster than birth date order.
            query = query.order_by(Patient.birth_date, Patient.id).limit(remaining)
        result = session.execute(insert(Enrolment).from_select(
            ["campaign_id", "patient_id", "care_gap_code", "status", "tier", "variant", "holdout", "next_step",
             "next_step_at", "created_at", "dob_failures", "closed_reason"], query),
            execution_options={"preserve_rowcount": True})  # INSERT ... SELECT: ask for the count explicitly
        added += result.rowcount
    return added


@dataclass
class AudiencePreview:
    total: int
    holdout: int
    by_tier: dict[int, int]
    by_language: dict[str, int]
    by_channel: dict[str, int]


def preview_audience(session: Session, campaign: Campaign, as_of: date | None = None,
                     now: datetime | None = None) -> AudiencePreview:
    """What build_audience would enrol, counted in SQL without writing anything."""
    now = now or utcnow()
    as_of = as_of or now.date()
    by_tier: dict[int, int] = {}
    by_language: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    total = holdout = 0
    for gap_code in campaign.care_gap_codes:
        tier = CARE_GAPS[gap_code].tier
        sms_ok = and_(Patient.phone != "", not_(exists().where(
            ChannelConsent.patient_id == Patient.id, ChannelConsent.channel == "sms", ChannelConsent.granted.is_(False))))
        email_ok = and_(Patient.email != "", not_(exists().where(
            ChannelConsent.patient_id == Patient.id, ChannelConsent.channel == "email",
            ChannelConsent.granted.is_(False))))
        rows = session.execute(
            select(Patient.preferred_language, _holdout(campaign).label("held"),
                   case((sms_ok, "sms"), (email_ok, "email"), else_="none").label("channel"), func.count())
            .where(_eligible(session, campaign, gap_code, as_of, now))
            .group_by(Patient.preferred_language, "held", "channel"))
        for language, held, channel, count in rows:
            total += count
            holdout += count if held else 0
            by_tier[tier] = by_tier.get(tier, 0) + count
            by_language[language] = by_language.get(language, 0) + count
            if not held:
                by_channel[channel] = by_channel.get(channel, 0) + count
    return AudiencePreview(total, holdout, by_tier, by_language, by_channel)


def launch(session: Session, campaign: Campaign, now: datetime | None = None) -> int:
    """Build the audience and start the sequence: day-0 messages are due at once,
    and tier-1 patients also go straight to the coordinators' call list.
    Raises InvalidInput unless the campaign is a draft with at least one care gap."""
    now = now or utcnow()
    if campaign.status != DRAFT or not campaign.care_gap_codes:
        raise InvalidInput()
    enrolled = build_audience(session, campaign, now=now)
    if campaign.escalate_tier1:
        session.execute(update(Enrolment).where(Enrolment.campaign_id == campaign.id, Enrolment.tier == 1,
                                                Enrolment.holdout.is_(False)).values(escalated_at=now))
    campaign.status = ACTIVE
    campaign.launched_at = now
    return enrolled


TRIGGER_GAPS = ("referral_open", "post_discharge_followup")


def enrol_from_import(session: Session, imported_since: datetime, now: datetime | None = None) -> int:
    """Referral and procedure triggers: after an import, every active campaign that
    covers a trigger gap enrols the patients whose newly imported facts opened it.
    Their sequence starts at the next dispatcher run. Returns how many were enrolled."""
    now = now or utcnow()
    enrolled = 0
    for campaign in session.scalars(select(Campaign).where(Campaign.status == ACTIVE)):
        if set(campaign.care_gap_codes) & set(TRIGGER_GAPS):
            enrolled += build_audience(session, campaign, now=now, gaps=TRIGGER_GAPS, facts_since=imported_since)
    return enrolled


def set_status(session: Session, campaign: Campaign, status: str) -> None:
    """Pause, resume or stop. Stopping cancels every queued campaign message.
    Raises InvalidInput for a move the lifecycle doesn't allow."""
    allowed = {PAUSED: {ACTIVE}, ACTIVE: {PAUSED}, STOPPED: {ACTIVE, PAUSED}}
    if campaign.status not in allowed.get(status, set()):
        raise InvalidInput()
    campaign.status = status
    if status == STOPPED:
        session.execute(update(OutboxMessage).where(OutboxMessage.campaign_id == campaign.id,
                                                    OutboxMessage.status == OutboxStatus.PENDING)
                        .values(status=OutboxStatus.CANCELLED, last_error="campaign stopped"))
        session.execute(update(Enrolment).where(Enrolment.campaign_id == campaign.id).values(next_step_at=None))


def enrol_patient(session: Session, campaign: Campaign, patient: Patient, gap_code: str,
                  now: datetime | None = None) -> Enrolment | None:
    """Enrol one patient now (a referral or procedure trigger from an import), unless
    already enrolled for this gap; the sequence starts with the next dispatcher run."""
    now = now or utcnow()
    found = session.scalar(select(Enrolment).where(Enrolment.campaign_id == campaign.id,
                                                   Enrolment.patient_id == patient.id,
                                                   Enrolment.care_gap_code == gap_code))
    if found is not None:
        return None
    enrolment = Enrolment(campaign_id=campaign.id, patient_id=patient.id, care_gap_code=gap_code,
                          tier=CARE_GAPS[gap_code].tier, next_step=0, next_step_at=now, created_at=now,
                          holdout=(patient.id * 7919 + campaign.id * 104729) % 100 < campaign.holdout_percent)
    if enrolment.holdout:
        enrolment.next_step_at = None
    session.add(enrolment)
    session.flush()
    record_event(session, enrolment, "enrolled", actor="system", trigger="import")
    return enrolment


def parse_step_days(text: str) -> list[int]:
    """'0, 7, 14, 30' -> [0, 7, 14, 30]; raises InvalidInput unless it starts at 0 and rises."""
    try:
        days = [int(part) for part in text.split(",")]
    except ValueError:
        raise InvalidInput() from None
    if not days or days[0] != 0 or any(b <= a for a, b in zip(days, days[1:])):
        raise InvalidInput()
    return days


def save_variant(session: Session, campaign: Campaign, key: str, label: str, weight: int,
                 sms_text: dict[str, str], offer_text: dict[str, str] | None = None,
                 offer_ends_at: datetime | None = None) -> CampaignVariant:
    """Add or change a variant. Staff wording must use {link}, name the clinic or use
    {clinic}, say STOP, and pass the clinical-word linter; raises InvalidInput
    (MessageRejected) with the problems otherwise."""
    problems = []
    for locale, text in sms_text.items():
        if text:
            rendered = text.replace("{clinic}", campaign.clinic.name).replace("{link}", SAMPLE_LINK)
            problems += [(locale, p) for p in lint_message(rendered, "sms", campaign.clinic.name)]
    if problems:
        raise MessageRejected(problems)
    variant = session.scalar(select(CampaignVariant).where(CampaignVariant.campaign_id == campaign.id,
                                                           CampaignVariant.key == key))
    if variant is None:
        variant = CampaignVariant(campaign_id=campaign.id, key=key, sms_text={}, email_subject={}, email_text={})
        session.add(variant)
    variant.label, variant.weight, variant.sms_text = label, weight, {k: v for k, v in sms_text.items() if v}
    offer = {k: v for k, v in (offer_text or {}).items() if v}
    variant.offer_text, variant.offer_ends_at = (offer, offer_ends_at) if offer and offer_ends_at else ({}, None)
    session.flush()
    return variant


@dataclass
class Offer:
    text: str
    ends_at: datetime


def active_offer(session: Session, enrolment: Enrolment, locale: str, now: datetime | None = None) -> Offer | None:
    """The enrolment's variant offer, in the patient's language, while it lasts."""
    now = now or utcnow()
    variant = session.scalar(select(CampaignVariant).where(CampaignVariant.campaign_id == enrolment.campaign_id,
                                                           CampaignVariant.key == enrolment.variant))
    if variant is None or variant.offer_ends_at is None or variant.offer_ends_at <= now:
        return None
    text = (variant.offer_text or {}).get(locale) or (variant.offer_text or {}).get("en")
    return Offer(text, variant.offer_ends_at) if text else None
