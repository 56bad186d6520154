"""Queue messages in the outbox, rendered in the recipient's language.

Bodies come from the safe templates under templates/messages/<name>/; they carry
no condition, test, medicine or procedure. The outbox row is written in the same
transaction as the event that caused it and sent by the dispatcher after commit.
"""
from __future__ import annotations

from flask import current_app, render_template
from flask_babel import force_locale
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import Channel, ChannelConsent, Enrolment, OutboxMessage, Patient, utcnow


def consented_channels(session: Session, patient: Patient) -> list[str]:
    """External channels we may use for this patient: a contact on file and no opt-out."""
    refused = set(session.scalars(select(ChannelConsent.channel).where(
        ChannelConsent.patient_id == patient.id, ChannelConsent.granted.is_(False))))
    if "all" in refused:
        return []
    available = [(Channel.SMS, patient.phone), (Channel.EMAIL, patient.email)]
    return [str(channel) for channel, address in available if address and channel not in refused]


def render_message(template: str, channel: str, locale: str, context: dict) -> tuple[str, str, str]:
    """Subject, text and HTML of a message template in the recipient's language
    (SMS has only text)."""
    folder = f"messages/{template}"
    with force_locale(locale):
        if channel == Channel.SMS:
            return "", render_template(f"{folder}/sms.txt", **context).strip(), ""
        return (render_template(f"{folder}/subject.txt", **context).strip(),
                render_template(f"{folder}/body.txt", **context).strip(),
                render_template(f"{folder}/body.html", **context))


def queue_message(session: Session, *, enrolment: Enrolment, template: str, channel: str,
                  dedupe_key: str, context: dict | None = None) -> OutboxMessage:
    """Render a template for the enrolment's patient and add it to the outbox.

    A second call with the same dedupe_key returns the message already queued, so a
    retried request never sends twice.
    """
    existing = session.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == dedupe_key))
    if existing is not None:
        return existing
    patient = enrolment.patient
    context = {"clinic": enrolment.campaign.clinic, "base_url": current_app.config["BASE_URL"], **(context or {})}
    subject, text, html = render_message(template, channel, patient.preferred_language, context)
    message = OutboxMessage(
        dedupe_key=dedupe_key, enrolment_id=enrolment.id, patient_id=patient.id, channel=channel,
        template=template, locale=patient.preferred_language,
        recipient={Channel.SMS: patient.phone, Channel.EMAIL: patient.email}.get(channel, f"portal:{patient.id}"),
        subject=subject, body_text=text, body_html=html, next_attempt_at=utcnow(), created_at=utcnow(),
    )
    session.add(message)
    session.flush()
    return message


def queue_notice(session: Session, enrolment: Enrolment, template: str, dedupe_key: str,
                 context: dict | None = None) -> OutboxMessage | None:
    """Queue a transactional notice (booking, cancellation) on the patient's first
    consented channel; nothing is queued when they have none."""
    channels = consented_channels(session, enrolment.patient)
    if not channels:
        return None
    return queue_message(session, enrolment=enrolment, template=template, channel=channels[0],
                         dedupe_key=f"{dedupe_key}:{channels[0]}", context=context)
