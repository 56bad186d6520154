"""Inbound: STOP/START/HELP texts, delivery receipts and the email unsubscribe link.
Opt-outs take effect at once, forged webhooks are refused, and opening the
unsubscribe link changes nothing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from portal.models import (ChannelConsent, ConsentChange, DeliveryReceipt, Event, InboundMessage, OutboxMessage,
                           OutboxStatus)
from portal.services.consent import parse_keyword, unsubscribe_token
from portal.web.hooks.signature import twilio_signature
from tests.conftest import BASE_URL
from tests.factories import invite_patient, make_clinic
from tests.fakes import TOKEN, FakeSmsProvider

INBOUND = "/hooks/sms/inbound"
STATUS = "/hooks/sms/status"
PHONE = "+13125550101"


@pytest.fixture()
def provider(app, monkeypatch):
    """Webhook signatures checked with the fake provider's token; replies sent to it."""
    with FakeSmsProvider() as fake:
        for key, value in fake.config().items():
            monkeypatch.setitem(app.config, key, value)
        yield fake


@pytest.fixture()
def world(db, in_app):
    setup = make_clinic(db)
    invited = invite_patient(db, in_app, setup, phone=PHONE, language="es")
    return setup, invited


def queued(db, invited, channel: str, step: int | None = 1) -> OutboxMessage:
    patient = invited.patient
    message = OutboxMessage(dedupe_key=f"campaign:{invited.enrolment.id}:{step}:{channel}",
                            enrolment_id=invited.enrolment.id, patient_id=patient.id, channel=channel,
                            template="reminder", locale="es", campaign_id=invited.enrolment.campaign_id, step=step,
                            recipient=patient.phone if channel == "sms" else patient.email, body_text="x",
                            next_attempt_at=datetime.now(timezone.utc) + timedelta(days=3))
    db.add(message)
    db.commit()
    return message


def post_signed(client, path: str, form: dict, token: str = TOKEN, url: str | None = None,
                headers: dict | None = None):
    signature = twilio_signature(token, url or f"{BASE_URL}{path}", form.items())
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature, **(headers or {})})


def text(client, body: str, sid: str = "SM0001", sender: str = PHONE):
    return post_signed(client, INBOUND, {"From": sender, "To": "+13125550199", "Body": body, "MessageSid": sid})


def consent(db, patient, channel: str) -> bool | None:
    db.expire_all()
    row = db.get(ChannelConsent, (patient.id, channel))
    return None if row is None else row.granted


def test_signature_matches_twilios_published_example():
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    assert twilio_signature("12345", url, params.items()) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


@pytest.mark.parametrize("body", ["STOP", "stop", "Stop.", "  STOP!! ", "StopAll", "UNSUBSCRIBE", "cancel", "End",
                                  "QUIT", "revoke", "OPT OUT", "opt-out", "Opt out.", "optout", "STOP please",
                                  "¡Stop!"])
def test_every_stop_variant_suppresses_texts_at_once(client, db, provider, world, body):
    _setup, invited = world
    text_message = queued(db, invited, "sms")
    mail = queued(db, invited, "email", step=2)
    response = text(client, body)
    assert response.status_code == 200 and "<Response>" in response.get_data(as_text=True)
    assert consent(db, invited.patient, "sms") is False
    assert consent(db, invited.patient, "email") is True  # only the channel they wrote on
    assert db.get(OutboxMessage, text_message.id).status == OutboxStatus.CANCELLED
    assert db.get(OutboxMessage, mail.id).status == OutboxStatus.PENDING
    change = db.scalar(select(ConsentChange).where(ConsentChange.patient_id == invited.patient.id))
    assert (change.channel, change.granted, change.source) == ("sms", False, "sms_keyword")
    event = db.scalar(select(Event).where(Event.enrolment_id == invited.enrolment.id, Event.kind == "opted_out"))
    assert event.detail == {"channel": "sms", "source": "sms_keyword"}
    inbound = db.scalar(select(InboundMessage).where(InboundMessage.patient_id == invited.patient.id))
    assert (inbound.keyword, inbound.sender, inbound.provider_message_id) == ("stop", PHONE, "SM0001")
    # One confirmation, in the patient's language, sent although texts are now refused.
    assert [d["To"] for d in provider.delivered] == [PHONE]
    assert "START" in provider.delivered[0]["Body"] and "Riverside Clinic" in provider.delivered[0]["Body"]


def test_a_retried_webhook_does_not_reply_twice(client, db, provider, world):
    text(client, "STOP", sid="SM0009")
    text(client, "STOP", sid="SM0009")
    assert len(provider.delivered) == 1
    assert db.scalar(select(func.count()).select_from(InboundMessage)
                     .where(InboundMessage.provider_message_id == "SM0009")) == 1


def test_a_family_sharing_a_phone_all_stop(client, db, in_app, provider, world):
    setup, invited = world
    sibling = invite_patient(db, in_app, setup, given="Luis", phone=PHONE, email="luis@example.org")
    text(client, "stop")
    assert consent(db, invited.patient, "sms") is False and consent(db, sibling.patient, "sms") is False
    assert len(provider.delivered) == 1


def test_start_resubscribes_and_help_gives_the_clinics_number(client, db, provider, world):
    _setup, invited = world
    text(client, "STOP", sid="SM1")
    text(client, "Start", sid="SM2")
    assert consent(db, invited.patient, "sms") is True
    assert [c.granted for c in db.scalars(select(ConsentChange).where(
        ConsentChange.patient_id == invited.patient.id).order_by(ConsentChange.id))] == [False, True]
    text(client, "help", sid="SM3")
    assert len(provider.delivered) == 3
    assert "+1 312 555 0100" in provider.delivered[2]["Body"]


def test_start_lifts_stop_everything_for_texts_only(client, db, provider, world):
    _setup, invited = world
    now = datetime.now(timezone.utc)
    for channel in ("all", "sms", "email", "portal"):
        row = db.get(ChannelConsent, (invited.patient.id, channel))
        if row is None:
            db.add(ChannelConsent(patient_id=invited.patient.id, channel=channel, granted=False,
                                  source="patient_link", updated_at=now))
        else:
            row.granted = False
    db.commit()
    text(client, "START")
    assert consent(db, invited.patient, "sms") is True and consent(db, invited.patient, "all") is True
    assert consent(db, invited.patient, "email") is False


def test_free_text_is_never_stored_and_gets_no_reply(client, db, provider, world):
    _setup, invited = world
    queued_text = queued(db, invited, "sms")
    text(client, "I can't come, my diabetes is worse", sid="SM7")
    inbound = db.scalar(select(InboundMessage).where(InboundMessage.provider_message_id == "SM7"))
    assert inbound.keyword == "other"
    stored = " ".join(str(getattr(inbound, column.key)) for column in InboundMessage.__table__.columns)
    assert "diabetes" not in stored
    assert provider.delivered == []
    assert db.get(OutboxMessage, queued_text.id).status == OutboxStatus.PENDING


def test_a_stop_from_an_unknown_number_is_recorded_and_answered(client, db, provider, world):
    text(client, "STOP", sender="+15555550123", sid="SM8")
    inbound = db.scalar(select(InboundMessage).where(InboundMessage.provider_message_id == "SM8"))
    assert (inbound.keyword, inbound.patient_id) == ("stop", None)
    assert [d["To"] for d in provider.delivered] == ["+15555550123"]


@pytest.mark.parametrize("forgery", ["no signature", "wrong token", "changed body", "host header"])
def test_forged_webhooks_are_refused_and_change_nothing(client, db, provider, world, forgery):
    _setup, invited = world
    form = {"From": PHONE, "Body": "STOP", "MessageSid": "SM66"}
    if forgery == "no signature":
        response = client.post(INBOUND, data=form)
    elif forgery == "wrong token":
        response = post_signed(client, INBOUND, form, token="not-the-token")
    elif forgery == "changed body":
        signature = twilio_signature(TOKEN, f"{BASE_URL}{INBOUND}", {**form, "Body": "HELP"}.items())
        response = client.post(INBOUND, data=form, headers={"X-Twilio-Signature": signature})
    else:  # signed for the Host the attacker sent, not for our configured public URL
        response = post_signed(client, INBOUND, form, url=f"http://evil.example{INBOUND}",
                               headers={"Host": "evil.example"})
    assert response.status_code == 403
    assert consent(db, invited.patient, "sms") is True
    assert db.scalar(select(func.count()).select_from(InboundMessage)) == 0
    forged_status = client.post(STATUS, data={"MessageSid": "SM1", "MessageStatus": "delivered"})
    assert forged_status.status_code == 403


def test_webhooks_are_refused_when_no_token_is_configured(client, db, world, app, monkeypatch):
    monkeypatch.setitem(app.config, "SMS_AUTH_TOKEN", "")
    response = post_signed(client, INBOUND, {"From": PHONE, "Body": "STOP"}, token="")
    assert response.status_code == 403


def test_a_delivery_receipt_marks_the_message_delivered(client, db, provider, world):
    _setup, invited = world
    message = queued(db, invited, "sms")
    message.status, message.provider_message_id = OutboxStatus.SENT, "SM4242"
    db.commit()
    assert post_signed(client, STATUS, {"MessageSid": "SM4242", "MessageStatus": "sent"}).status_code == 204
    assert post_signed(client, STATUS, {"MessageSid": "SM4242", "MessageStatus": "delivered"}).status_code == 204
    db.expire_all()
    assert db.get(OutboxMessage, message.id).delivered_at is not None
    receipts = db.scalars(select(DeliveryReceipt.status).where(DeliveryReceipt.outbox_message_id == message.id)).all()
    assert sorted(receipts) == ["delivered", "sent"]


def test_a_failed_delivery_is_noted_on_the_message(client, db, provider, world):
    _setup, invited = world
    message = queued(db, invited, "sms")
    message.status, message.provider_message_id = OutboxStatus.SENT, "SM4343"
    db.commit()
    post_signed(client, STATUS, {"MessageSid": "SM4343", "MessageStatus": "undelivered", "ErrorCode": "30005"})
    db.expire_all()
    stored = db.get(OutboxMessage, message.id)
    assert (stored.delivered_at, stored.last_error) == (None, "undelivered 30005")


# --- email unsubscribe ------------------------------------------------------------

def unsubscribe_path(app, patient_id: int) -> str:
    return f"/unsubscribe/{unsubscribe_token(app.config['SECRET_KEY'], patient_id)}"


def test_opening_the_unsubscribe_link_changes_nothing(client, db, app, world):
    _setup, invited = world
    mail = queued(db, invited, "email")
    response = client.get(unsubscribe_path(app, invited.patient.id))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'method="post" action="/unsubscribe/' in page  # a confirm button ...
    assert '<html lang="es">' in page  # ... in the patient's language
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert consent(db, invited.patient, "email") is True
    assert db.get(OutboxMessage, mail.id).status == OutboxStatus.PENDING
    assert db.scalar(select(func.count()).select_from(ConsentChange)) == 0


def test_one_click_unsubscribe_stops_email_at_once_without_a_csrf_token(client, db, app, world):
    _setup, invited = world
    mail = queued(db, invited, "email")
    text_message = queued(db, invited, "sms", step=2)
    response = client.post(unsubscribe_path(app, invited.patient.id), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert consent(db, invited.patient, "email") is False
    assert consent(db, invited.patient, "sms") is True
    assert db.get(OutboxMessage, mail.id).status == OutboxStatus.CANCELLED
    assert db.get(OutboxMessage, text_message.id).status == OutboxStatus.PENDING
    change = db.scalar(select(ConsentChange).where(ConsentChange.patient_id == invited.patient.id))
    assert (change.channel, change.granted, change.source) == ("email", False, "email_unsubscribe")
    # A second click (or a mail scanner replaying the POST) adds nothing.
    client.post(unsubscribe_path(app, invited.patient.id), data={"List-Unsubscribe": "One-Click"})
    assert db.scalar(select(func.count()).select_from(ConsentChange)
                     .where(ConsentChange.patient_id == invited.patient.id)) == 1
    again = client.get(unsubscribe_path(app, invited.patient.id))
    assert 'action="/unsubscribe/' not in again.get_data(as_text=True)


@pytest.mark.parametrize("token", ["nonsense", "eyJwIjoxfQ.forged-signature", ""])
def test_a_bad_unsubscribe_token_is_refused(client, db, app, world, token):
    _setup, invited = world
    for method in (client.get, client.post):
        response = method(f"/unsubscribe/{token}x")
        assert response.status_code == 404
    assert consent(db, invited.patient, "email") is True


def test_a_token_signed_for_another_purpose_does_not_unsubscribe(client, db, app, world):
    from itsdangerous import URLSafeSerializer

    _setup, invited = world
    other = URLSafeSerializer(app.config["SECRET_KEY"], salt="link:invite").dumps({"p": invited.patient.id})
    assert client.post(f"/unsubscribe/{other}").status_code == 404
    assert consent(db, invited.patient, "email") is True


@pytest.mark.parametrize("body, keyword", [("STOP", "stop"), ("Stop all", "stop"), ("stopped", "other"),
                                           ("Unstop", "start"), ("INFO", "help"), ("help me please", "other"),
                                           ("", "other"), ("Can I stop by tomorrow?", "other")])
def test_keywords(body, keyword):
    assert parse_keyword(body) == keyword


def test_unsubscribe_tokens_stay_out_of_access_logs(app, world):
    import logging

    token = unsubscribe_token(app.config["SECRET_KEY"], 1)
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '"%s" %s', (f"GET /unsubscribe/{token} HTTP/1.1",
                                                                                 200), None)
    for handler_filter in logging.getLogger("werkzeug").filters:
        handler_filter.filter(record)
    assert token not in record.getMessage() and "/unsubscribe/[redacted]" in record.getMessage()
