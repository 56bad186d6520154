"""Queue messages in the outbox, rendered in the recipient's language.

Bodies come from the safe templates under templates/messages/<name>/; they carry
no condition, test, medicine or procedure. The outbox row is written in the same
transaction as the event that caused it and sent by the dispatcher after commit.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from flask import current_app
from flask_babel import force_locale
from jinja2 import Template
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import Channel, ChannelConsent, Clinic, Enrolment, OutboxMessage, Patient, utcnow


def refused_channels(session: Session, patient_ids: Iterable[int]) -> dict[int, set[str]]:
    """Per patient, the channels they refused ("all" for everything), in one query."""
    refused: dict[int, set[str]] = {}
    for patient_id, channel in session.execute(select(ChannelConsent.patient_id, ChannelConsent.channel).where(
            ChannelConsent.patient_id.in_(set(patient_ids)), ChannelConsent.granted.is_(False))):
        refused.setdefault(patient_id, set()).add(channel)
    return refused


def allowed_channels(patient: Patient, refused: set[str]) -> list[str]:
    """External channels we may use for this patient: a contact on file and no opt-out."""
    if "all" in refused:
        return []
    available = [(Channel.SMS, patient.phone), (Channel.EMAIL, patient.email)]
    return [str(channel) for channel, address in available if address and channel not in refused]


def consented_channels(session: Session, patient: Patient) -> list[str]:
    return allowed_channels(patient, refused_channels(session, [patient.id]).get(patient.id, set()))


class MessageRenderer:
    """Renders message templates, each looked up (and compiled) once per renderer.

    It calls Jinja directly: render_template would also run the request context
    processors and signals for every message, which message templates never use.
    Translations (`_`) and `get_locale()` are Jinja globals and follow force_locale.
    """

    def __init__(self) -> None:
        self._env = current_app.jinja_env
        self._templates: dict[str, Template] = {}

    def _render(self, name: str, context: dict) -> str:
        if name not in self._templates:
            self._templates[name] = self._env.get_template(name)
        return self._templates[name].render(context)

    def render(self, template: str, channel: str, locale: str, context: dict) -> tuple[str, str, str]:
        """Subject, text and HTML of a message template in the recipient's language
        (SMS has only text)."""
        folder = f"messages/{template}"
        with force_locale(locale):
            if channel == Channel.SMS:
                return "", self._render(f"{folder}/sms.txt", context).strip(), ""
            return (self._render(f"{folder}/subject.txt", context).strip(),
                    self._render(f"{folder}/body.txt", context).strip(),
                    self._render(f"{folder}/body.html", context))


def render_message(template: str, channel: str, locale: str, context: dict) -> tuple[str, str, str]:
    """One message's subject, text and HTML (see MessageRenderer)."""
    return MessageRenderer().render(template, channel, locale, context)


def outbox_row(renderer: MessageRenderer, *, patient: Patient, clinic: Clinic, enrolment_id: int | None,
               template: str, channel: str, dedupe_key: str, context: dict, now: datetime) -> dict:
    """The column values of one outbox row, rendered for the patient, due at `now`."""
    context = {"clinic": clinic, "base_url": current_app.config["BASE_URL"], **context}
    subject, text, html = renderer.render(template, channel, patient.preferred_language, context)
    return dict(dedupe_key=dedupe_key, enrolment_id=enrolment_id, patient_id=patient.id, channel=channel,
                template=template, locale=patient.preferred_language,
                recipient={Channel.SMS: patient.phone, Channel.EMAIL: patient.email}.get(channel,
                                                                                         f"portal:{patient.id}"),
                subject=subject, body_text=text, body_html=html, next_attempt_at=now, created_at=now)


def queue_message(session: Session, *, enrolment: Enrolment, template: str, channel: str,
                  dedupe_key: str, context: dict | None = None) -> OutboxMessage:
    """Render a template for the enrolment's patient and add it to the outbox.

    A second call with the same dedupe_key returns the message already queued, so a
    retried request never sends twice.
    """
    existing = session.scalar(select(OutboxMessage).where(OutboxMessage.dedupe_key == dedupe_key))
    if existing is not None:
        return existing
    message = OutboxMessage(**outbox_row(MessageRenderer(), patient=enrolment.patient,
                                         clinic=enrolment.campaign.clinic, enrolment_id=enrolment.id,
                                         template=template, channel=channel, dedupe_key=dedupe_key,
                                         context=context or {}, now=utcnow()))
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
