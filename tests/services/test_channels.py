"""The channels against local fake providers: what goes over the wire, and how each
kind of failure is reported to the dispatcher."""
from __future__ import annotations

import socket

import pytest

from portal.channels import ChannelError, PermanentChannelError, build_channels, idempotency_key
from portal.channels.dev_outbox import DevOutboxChannel
from portal.channels.portal_inbox import PortalInboxChannel
from portal.channels.sms_http import SmsHttpChannel
from portal.channels.smtp import SmtpChannel
from portal.models import OutboxMessage
from portal.services.consent import read_unsubscribe_token
from tests.fakes import SID, TOKEN, FakeSmsProvider, FakeSmtpServer

CONFIG = {"BASE_URL": "https://portal.example.org", "SECRET_KEY": "channel-test-secret", "PORTAL_ENV": "testing"}


def sms(**overrides) -> OutboxMessage:
    fields = dict(id=7, dedupe_key="campaign:1:0:sms", channel="sms", template="invite", locale="en",
                  recipient="+13125550101", body_text="Riverside Clinic: book here. Reply STOP to opt out.")
    return OutboxMessage(**{**fields, **overrides})


def mail(**overrides) -> OutboxMessage:
    fields = dict(id=8, dedupe_key="campaign:1:0:email", channel="email", template="invite", locale="es",
                  recipient="maria@example.org", patient_id=42, step=0, subject="Su visita con Riverside Clinic",
                  body_text="Hola,\n\nRiverside Clinic\n100 River St, Chicago, IL\n",
                  body_html="<p>Hola, ¿qué tal?</p><p>Riverside Clinic<br>100 River St, Chicago, IL</p>")
    return OutboxMessage(**{**fields, **overrides})


def sms_channel(provider: FakeSmsProvider, **overrides) -> SmsHttpChannel:
    return SmsHttpChannel.from_config({**CONFIG, **provider.config(), "SMS_TIMEOUT_SECONDS": 5, **overrides})


def test_sms_posts_the_twilio_form_with_basic_auth_and_a_stable_idempotency_key():
    with FakeSmsProvider() as provider:
        result = sms_channel(provider).send(sms())
        again = sms_channel(provider).send(sms())
    first, second = provider.requests
    assert first.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert first.form == {"To": "+13125550101", "From": "+13125550199",
                          "Body": "Riverside Clinic: book here. Reply STOP to opt out.",
                          "StatusCallback": "https://portal.example.org/hooks/sms/status"}
    assert first.headers["Content-Type"] == "application/x-www-form-urlencoded"
    key = idempotency_key(sms())
    assert first.headers["I-Twilio-Idempotency-Token"] == second.headers["I-Twilio-Idempotency-Token"] == key
    assert first.headers["Idempotency-Key"] == key
    assert "campaign" not in key and len(key) == 40  # no ids leak through the key
    # The provider saw the same key twice and delivered once, answering with the same sid.
    assert len(provider.delivered) == 1
    assert result.provider_message_id == again.provider_message_id == provider.delivered[0]["sid"]


def test_a_messaging_service_replaces_the_sender_number():
    with FakeSmsProvider() as provider:
        sms_channel(provider, SMS_FROM="", SMS_MESSAGING_SERVICE_SID="MG123").send(sms())
    form = provider.requests[0].form
    assert form["MessagingServiceSid"] == "MG123" and "From" not in form


def test_wrong_credentials_are_refused_for_good():
    with FakeSmsProvider() as provider:
        channel = SmsHttpChannel.from_config({**CONFIG, **provider.config(), "SMS_AUTH_TOKEN": "wrong"})
        with pytest.raises(PermanentChannelError):
            channel.send(sms())
    assert provider.delivered == []


@pytest.mark.parametrize("status, error", [(500, ChannelError), (503, ChannelError), (429, ChannelError),
                                           (400, PermanentChannelError)])
def test_provider_errors_are_retryable_or_final(status, error):
    with FakeSmsProvider(failures=[status]) as provider:
        with pytest.raises(error) as raised:
            sms_channel(provider).send(sms())
    assert (type(raised.value) is PermanentChannelError) == (error is PermanentChannelError)
    assert "Reply STOP" not in str(raised.value)  # the body never ends up in last_error


def test_an_unreachable_provider_is_retryable():
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    channel = SmsHttpChannel(base_url=f"http://127.0.0.1:{port}", account_sid=SID, auth_token=TOKEN,
                             sender="+13125550199", timeout=5)
    with pytest.raises(ChannelError) as raised:
        channel.send(sms())
    assert not isinstance(raised.value, PermanentChannelError)


def smtp_channel(server: FakeSmtpServer) -> SmtpChannel:
    return SmtpChannel.from_config({**CONFIG, **server.config()})


def test_email_is_multipart_text_then_html_with_one_click_unsubscribe():
    with FakeSmtpServer() as server:
        result = smtp_channel(server).send(mail())
    sender, recipients, message = server.messages[0]
    assert sender == "care@clinic.example" and recipients == ["maria@example.org"]
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_payload()
    assert text.get_content_type() == "text/plain" and "100 River St, Chicago, IL" in text.get_content()
    assert html.get_content_type() == "text/html" and "¿qué tal?" in html.get_content()
    assert message["Subject"] == "Su visita con Riverside Clinic"
    url = message["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://portal.example.org/unsubscribe/")
    assert read_unsubscribe_token(CONFIG["SECRET_KEY"], url.rsplit("/", 1)[1]) == 42
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"].strip("<>") == result.provider_message_id


def test_transactional_email_has_no_unsubscribe_header_and_a_stable_message_id():
    with FakeSmtpServer() as server:
        channel = smtp_channel(server)
        channel.send(mail(step=None, template="code", body_html=""))
        channel.send(mail(step=None, template="code", body_html=""))
    first, second = (m for _s, _r, m in server.messages)
    assert first["List-Unsubscribe"] is None
    assert first.get_content_type() == "text/plain"
    assert first["Message-ID"] == second["Message-ID"]  # a resend after a crash can be recognised


def test_a_refused_recipient_is_final_and_a_missing_server_is_retried():
    with FakeSmtpServer(refuse={"gone@example.org"}) as server:
        with pytest.raises(PermanentChannelError):
            smtp_channel(server).send(mail(recipient="gone@example.org"))
        port = server.port
    down = SmtpChannel(host="127.0.0.1", port=port, sender="care@clinic.example", security="none", timeout=5)
    with pytest.raises(ChannelError) as raised:
        down.send(mail())
    assert not isinstance(raised.value, PermanentChannelError)


def test_build_channels_uses_providers_only_when_configured():
    plain = build_channels(CONFIG)
    assert isinstance(plain["sms"], DevOutboxChannel) and isinstance(plain["email"], DevOutboxChannel)
    assert isinstance(plain["portal"], PortalInboxChannel)
    with FakeSmsProvider() as provider, FakeSmtpServer() as server:
        real = build_channels({**CONFIG, **provider.config(), **server.config()})
    assert isinstance(real["sms"], SmsHttpChannel) and isinstance(real["email"], SmtpChannel)
    half = build_channels({**CONFIG, "SMS_ACCOUNT_SID": SID, "SMS_AUTH_TOKEN": TOKEN})  # no sender number
    assert isinstance(half["sms"], DevOutboxChannel)


def test_the_portal_inbox_delivers_at_once():
    result = PortalInboxChannel().send(sms(channel="portal", recipient="portal:42"))
    assert result.delivered and result.provider_message_id == "inbox-7"
