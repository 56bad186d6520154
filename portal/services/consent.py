"""What patients told us about being contacted, by text keyword or email unsubscribe.

An opt-out takes effect in the same transaction that records it: the channel is
refused (ChannelConsent), the change appended to the history (ConsentChange),
queued messages on that channel cancelled, and an `opted_out` event recorded on the
patient's open enrolments. The dispatcher checks consent again at send time.
Inbound texts are kept as their keyword only: the free text may hold health details.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from flask import current_app, render_template
from flask_babel import force_locale
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from portal.models import (Campaign, Channel, ChannelConsent, Clinic, ConsentChange, DeliveryReceipt, Enrolment,
                           EnrolmentStatus, InboundMessage, OutboxMessage, OutboxStatus, Patient, utcnow)
from portal.services.errors import LinkInvalid
from portal.services.events import record_event

# CTIA / FCC 24-24 opt-out words. A text that is one of these, or starts with one
# ("STOP!!! no more"), suppresses: honouring a clear wish to stop is never wrong.
STOP_WORDS = ("stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout")
START_WORDS = ("start", "unstop")
HELP_WORDS = ("help", "info")

STOP, START, HELP, OTHER = "stop", "start", "help", "other"
# Replies to a keyword: sent even though the number just opted out (the one
# confirmation the rules require), at any hour, and never counted against caps.
REPLY_TEMPLATES = {STOP: "sms_stopped", START: "sms_started", HELP: "sms_help"}
UNSUBSCRIBE_SALT = "unsubscribe:email"
OPEN_STATUSES = (EnrolmentStatus.INVITED, EnrolmentStatus.BOOKED, EnrolmentStatus.SNOOZED)


def parse_keyword(text: str) -> str:
    """stop, start, help or other for an inbound text, ignoring case, accents,
    punctuation and spacing ("Opt-Out.", " stop ", "STOP!!")."""
    folded = unicodedata.normalize("NFKD", (text or "")[:500].casefold())
    words = re.sub(r"[^a-z0-9]+", " ", "".join(c for c in folded if not unicodedata.combining(c))).split()
    if not words:
        return OTHER
    joined = "".join(words)
    if joined in STOP_WORDS or words[0] in STOP_WORDS or "".join(words[:2]) == "optout":
        return STOP
    if joined in START_WORDS:
        return START
    if joined in HELP_WORDS:
        return HELP
    return OTHER


def _set_consent(session: Session, patient_id: int, channel: str, granted: bool, source: str,
                 now: datetime) -> bool:
    """Write the current state and, when it changed, the history row. Returns whether it changed."""
    current = session.get(ChannelConsent, (patient_id, channel))
    if current is not None and current.granted == granted:
        return False
    if current is None:
        session.add(ChannelConsent(patient_id=patient_id, channel=channel, granted=granted, source=source,
                                   updated_at=now))
    else:
        current.granted, current.source, current.updated_at = granted, source, now
    session.add(ConsentChange(patient_id=patient_id, channel=channel, granted=granted, source=source,
                              occurred_at=now))
    return True


def suppress_channel(session: Session, patient_ids: list[int], channel: str, source: str,
                     now: datetime | None = None) -> int:
    """Refuse one channel for these patients, cancel what is queued on it at once,
    and record `opted_out` on their open enrolments. Returns how many queued
    messages were cancelled. Idempotent: a repeated opt-out changes nothing more."""
    now = now or utcnow()
    if not patient_ids:
        return 0
    changed = [pid for pid in patient_ids if _set_consent(session, pid, channel, False, source, now)]
    cancelled = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.patient_id.in_(patient_ids), OutboxMessage.channel == channel,
               OutboxMessage.status == OutboxStatus.PENDING)
        .values(status=OutboxStatus.CANCELLED, last_error=f"opted out: {source}"[:200], claimed_until=None)
        .execution_options(synchronize_session=False)
    ).rowcount or 0
    if changed:
        for enrolment in session.scalars(select(Enrolment).where(Enrolment.patient_id.in_(changed),
                                                                 Enrolment.status.in_(OPEN_STATUSES))):
            record_event(session, enrolment, "opted_out", channel=channel, source=source)
    session.flush()
    return cancelled


def resubscribe(session: Session, patient_ids: list[int], channel: str, source: str,
                now: datetime | None = None) -> None:
    """Allow one channel again (START). A "stop everything" from the link is lifted
    for this channel only: the other channels keep their own refusals."""
    now = now or utcnow()
    for pid in patient_ids:
        if _set_consent(session, pid, channel, True, source, now):
            all_row = session.get(ChannelConsent, (pid, "all"))
            if all_row is not None and not all_row.granted:
                for other in (Channel.SMS, Channel.EMAIL, Channel.PORTAL):
                    if other != channel and session.get(ChannelConsent, (pid, str(other))) is None:
                        session.add(ChannelConsent(patient_id=pid, channel=str(other), granted=False,
                                                   source=all_row.source, updated_at=now))
                _set_consent(session, pid, "all", True, source, now)
            for enrolment in session.scalars(select(Enrolment).where(Enrolment.patient_id == pid,
                                                                     Enrolment.status.in_(OPEN_STATUSES))):
                record_event(session, enrolment, "opted_in", channel=channel, source=source)
    session.flush()


def normalise_phone(value: str) -> str:
    """E.164 as providers send it: '+' and digits only."""
    value = (value or "").strip()
    digits = re.sub(r"\D", "", value)
    return f"+{digits}" if digits else ""


def patients_for_phone(session: Session, phone: str) -> list[Patient]:
    """Everyone on file with this number: a family sharing a phone all stop together."""
    number = normalise_phone(phone)
    if not number:
        return []
    return list(session.scalars(select(Patient).where(Patient.phone == number).order_by(Patient.id)))


def _clinic_for(session: Session, patient: Patient | None) -> Clinic | None:
    """The clinic that last wrote to this patient, or the first clinic."""
    if patient is not None:
        clinic = session.scalar(select(Clinic).join(Campaign, Campaign.clinic_id == Clinic.id)
                                .join(Enrolment, Enrolment.campaign_id == Campaign.id)
                                .where(Enrolment.patient_id == patient.id)
                                .order_by(Enrolment.created_at.desc(), Enrolment.id.desc()).limit(1))
        if clinic is not None:
            return clinic
    return session.scalar(select(Clinic).order_by(Clinic.id).limit(1))


def _queue_reply(session: Session, *, keyword: str, to: str, patient: Patient | None, dedupe_key: str,
                 now: datetime) -> OutboxMessage | None:
    template = REPLY_TEMPLATES.get(keyword)
    if template is None or not to:
        return None
    existing = session.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == dedupe_key))
    if existing is not None:
        return existing
    clinic = _clinic_for(session, patient)
    languages = current_app.config.get("LANGUAGES", ("en",))
    locale = patient.preferred_language if patient is not None and patient.preferred_language in languages else "en"
    context = {"clinic_name": clinic.name if clinic else current_app.config["CLINIC_NAME"],
               "clinic_phone": clinic.phone if clinic else ""}
    with force_locale(locale):
        text = render_template(f"messages/{template}/sms.txt", **context).strip()
    message = OutboxMessage(dedupe_key=dedupe_key, enrolment_id=None, patient_id=patient.id if patient else None,
                            channel=str(Channel.SMS), template=template, locale=locale, recipient=to,
                            body_text=text, next_attempt_at=now, created_at=now)
    session.add(message)
    session.flush()
    return message


def receive_sms(session: Session, *, sender: str, body: str, provider_message_id: str = "",
                now: datetime | None = None) -> str:
    """Act on an inbound text and return its keyword (stop, start, help, other).

    STOP and its variants refuse SMS for every patient with this number and cancel
    their queued texts; START allows SMS again; both and HELP queue one reply. Only
    the keyword is stored. A provider retrying the same webhook changes nothing more.
    """
    now = now or utcnow()
    provider_message_id = (provider_message_id or "")[:64]
    if provider_message_id and session.scalar(select(InboundMessage.id).where(
            InboundMessage.provider_message_id == provider_message_id, InboundMessage.channel == Channel.SMS)):
        return parse_keyword(body)
    number = normalise_phone(sender)
    keyword = parse_keyword(body)
    patients = patients_for_phone(session, number)
    ids = [p.id for p in patients]
    session.add(InboundMessage(channel=str(Channel.SMS), sender=number[:200], keyword=keyword,
                               patient_id=ids[0] if ids else None, provider_message_id=provider_message_id,
                               received_at=now))
    if keyword == STOP:
        suppress_channel(session, ids, Channel.SMS, "sms_keyword", now)
    elif keyword == START:
        resubscribe(session, ids, Channel.SMS, "sms_keyword", now)
    reply_key = f"reply:{provider_message_id}" if provider_message_id else f"reply:{keyword}:{number}:{now.isoformat()}"
    _queue_reply(session, keyword=keyword, to=number, patient=patients[0] if patients else None,
                 dedupe_key=reply_key[:200], now=now)
    session.flush()
    return keyword


# --- email unsubscribe --------------------------------------------------------

def _unsubscribe_serializer(secret: str) -> URLSafeSerializer:
    # Untimed on purpose: an unsubscribe link must keep working long after the mail
    # (CAN-SPAM asks for at least 30 days); all it can ever do is stop email.
    return URLSafeSerializer(secret, salt=UNSUBSCRIBE_SALT)


def unsubscribe_token(secret: str, patient_id: int) -> str:
    return _unsubscribe_serializer(secret).dumps({"p": patient_id})


def unsubscribe_url(config: dict, patient_id: int) -> str:
    """The one-click unsubscribe URL for a patient's campaign email (also the
    List-Unsubscribe header). Built from the configured public base URL."""
    return f"{config['BASE_URL']}/unsubscribe/{unsubscribe_token(config['SECRET_KEY'], patient_id)}"


def read_unsubscribe_token(secret: str, token: str) -> int:
    """The patient id a token names. Raises LinkInvalid for anything tampered with."""
    try:
        payload = _unsubscribe_serializer(secret).loads(token[:512])
    except BadSignature as exc:
        raise LinkInvalid() from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("p"), int) or isinstance(payload["p"], bool):
        raise LinkInvalid()
    return payload["p"]


def patient_for_unsubscribe(session: Session, secret: str, token: str) -> Patient:
    """Resolve a token to its patient without changing anything. Raises LinkInvalid."""
    patient = session.get(Patient, read_unsubscribe_token(secret, token))
    if patient is None:
        raise LinkInvalid()
    return patient


def unsubscribe_email(session: Session, patient: Patient, now: datetime | None = None) -> int:
    """Stop email to this patient's address, for everyone on file with it, and cancel
    what is queued. Returns how many queued emails were cancelled."""
    ids = [patient.id]
    if patient.email:
        ids += [pid for pid in session.scalars(select(Patient.id).where(
            func.lower(Patient.email) == patient.email.strip().lower(), Patient.id != patient.id))]
    return suppress_channel(session, ids, Channel.EMAIL, "email_unsubscribe", now)


def email_unsubscribed(session: Session, patient: Patient) -> bool:
    refused = set(session.scalars(select(ChannelConsent.channel).where(
        ChannelConsent.patient_id == patient.id, ChannelConsent.granted.is_(False))))
    return bool(refused & {"all", str(Channel.EMAIL)})


# --- delivery receipts --------------------------------------------------------

DELIVERED = {"delivered", "read"}
FAILED = {"failed", "undelivered"}


def record_delivery_status(session: Session, *, provider_message_id: str, status: str, error_code: str = "",
                           now: datetime | None = None) -> DeliveryReceipt | None:
    """Store a provider's status callback and stamp delivered_at on the message.
    Unknown message ids are kept too (the receipt may beat our own bookkeeping)."""
    now = now or utcnow()
    provider_message_id, status = (provider_message_id or "")[:64], (status or "").strip().lower()[:32]
    if not provider_message_id or not status:
        return None
    message = session.scalar(select(OutboxMessage).where(OutboxMessage.provider_message_id == provider_message_id))
    receipt = DeliveryReceipt(outbox_message_id=message.id if message else None,
                              provider_message_id=provider_message_id, status=status, received_at=now)
    session.add(receipt)
    if message is not None:
        if status in DELIVERED and message.delivered_at is None:
            message.delivered_at = now
        elif status in FAILED:
            message.last_error = f"{status} {re.sub(r'[^0-9A-Za-z]', '', error_code or '')[:16]}".strip()
    session.flush()
    return receipt
