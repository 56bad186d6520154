"""Email over SMTP: a multipart message with the plain-text part first and the HTML
part second (the clinic's postal address is in both, from the templates), and for
campaign mail the List-Unsubscribe headers of RFC 2369 and RFC 8058, so mail clients
offer a one-click unsubscribe that POSTs to the portal."""
from __future__ import annotations

import hashlib
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from portal.channels import ChannelError, PermanentChannelError, Sent
from portal.models import OutboxMessage

class SmtpChannel:
    def __init__(self, *, host: str, port: int, sender: str, username: str = "", password: str = "",
                 security: str = "starttls", timeout: float = 20,
                 unsubscribe_url: Callable[[OutboxMessage], str] | None = None) -> None:
        if security not in {"starttls", "ssl", "none"}:
            raise ValueError("SMTP security must be starttls, ssl or none")
        self.host, self.port, self.sender = host, port, sender
        self.username, self.password = username, password
        self.security, self.timeout = security, timeout
        self.unsubscribe_url = unsubscribe_url
        domain = parseaddr(sender)[1].rpartition("@")[2]
        self.domain = domain or "localhost"

    @classmethod
    def from_config(cls, config: dict) -> SmtpChannel:
        from portal.services.consent import unsubscribe_url

        return cls(host=config["SMTP_HOST"], port=config["SMTP_PORT"], sender=config["SMTP_FROM"],
                   username=config.get("SMTP_USERNAME", ""), password=config.get("SMTP_PASSWORD", ""),
                   security=config.get("SMTP_SECURITY", "starttls"), timeout=config.get("SMTP_TIMEOUT_SECONDS", 20),
                   unsubscribe_url=lambda message: unsubscribe_url(config, message.patient_id))

    def message_id(self, message: OutboxMessage) -> str:
        """The same Message-ID for every attempt at one outbox row, so a receiving
        server that deduplicates by Message-ID drops a copy re-sent after a crash."""
        digest = hashlib.sha256(f"outbox:{message.dedupe_key}".encode()).hexdigest()[:32]
        return f"<{digest}@{self.domain}>"

    def compose(self, message: OutboxMessage) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = message.recipient
        email["Subject"] = message.subject
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = self.message_id(message)
        # Campaign mail (a sequence step) carries the one-click unsubscribe; codes and
        # booking notices are transactional and must keep reaching the patient.
        if message.step is not None and message.patient_id is not None and self.unsubscribe_url is not None:
            url = self.unsubscribe_url(message)
            email["List-Unsubscribe"] = f"<{url}>"
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        email.set_content(message.body_text)
        if message.body_html:
            email.add_alternative(message.body_html, subtype="html")
        return email

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                                    context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.security == "starttls":
                client.starttls(context=ssl.create_default_context())
        if self.username:
            client.login(self.username, self.password)
        return client

    def send(self, message: OutboxMessage) -> Sent:
        if not message.recipient or "@" not in message.recipient:
            raise PermanentChannelError("no email address")
        email = self.compose(message)
        try:
            client = self._connect()
            try:
                client.send_message(email)
            finally:
                try:
                    client.quit()
                except (smtplib.SMTPException, OSError):
                    pass  # the message was accepted; a lost goodbye changes nothing
        except smtplib.SMTPRecipientsRefused:
            raise PermanentChannelError("recipient refused") from None
        except smtplib.SMTPResponseException as exc:
            # A refused recipient or message is final; a refused greeting, login or sender
            # is the server or our configuration, which an operator fixes: retried.
            config_problem = isinstance(exc, (smtplib.SMTPAuthenticationError, smtplib.SMTPSenderRefused,
                                              smtplib.SMTPConnectError, smtplib.SMTPHeloError))
            if 500 <= exc.smtp_code < 600 and not config_problem:
                raise PermanentChannelError(f"smtp {exc.smtp_code}") from None
            raise ChannelError(f"smtp {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError(f"smtp unavailable: {type(exc).__name__}") from None
        return Sent(provider_message_id=self.message_id(message).strip("<>")[:64])

