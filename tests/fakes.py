"""Local stand-ins for the providers, listening on 127.0.0.1 port 0 in a thread:
a Twilio-compatible SMS API that records every request and honours idempotency
keys like a real provider, and an SMTP server that records every message."""
from __future__ import annotations

import base64
import email
import email.policy
import itertools
import json
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

SID = "AC00000000000000000000000000000001"
TOKEN = "fake-auth-token"


@dataclass
class SmsRequest:
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class FakeSmsProvider:
    """Accepts POST /2010-04-01/Accounts/{sid}/Messages.json. A request repeating an
    idempotency key gets the first answer again and is not delivered twice."""

    account_sid: str = SID
    auth_token: str = TOKEN
    requests: list[SmsRequest] = field(default_factory=list)
    delivered: list[dict[str, str]] = field(default_factory=list)  # one entry per accepted message
    failures: list[int] = field(default_factory=list)  # statuses to answer with before accepting again
    on_request: object = None  # callable(SmsRequest) run before answering (tests use it as a barrier)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, str] = {}
        self._sids = itertools.count(1)
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                status, body = provider._handle(SmsRequest(self.path, dict(self.headers.items()), form))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def config(self) -> dict:
        return {"SMS_BASE_URL": self.base_url, "SMS_ACCOUNT_SID": self.account_sid,
                "SMS_AUTH_TOKEN": self.auth_token, "SMS_FROM": "+13125550199"}

    def env(self) -> dict:
        return {f"PORTAL_{key}": value for key, value in self.config().items()}

    def _handle(self, request: SmsRequest) -> tuple[int, dict]:
        if self.on_request is not None:
            self.on_request(request)
        with self._lock:
            self.requests.append(request)
            expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                return 401, {"code": 20003, "message": "Authenticate"}
            if request.path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
                return 404, {"code": 20404}
            if self.failures:
                status = self.failures.pop(0)
                return status, {"code": 21211 if status == 400 else 20500}
            key = request.headers.get("I-Twilio-Idempotency-Token", "")
            if key and key in self._by_key:
                return 201, {"sid": self._by_key[key], "status": "queued"}
            sid = f"SM{next(self._sids):032d}"
            if key:
                self._by_key[key] = sid
            self.delivered.append({**request.form, "sid": sid})
            return 201, {"sid": sid, "status": "queued"}

    def __enter__(self) -> FakeSmsProvider:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


class FakeSmtpServer:
    """Enough SMTP for smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
    Recipients in `refuse` get a 550."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []
        self.refuse = refuse or set()
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

            def handle(self) -> None:
                sender, recipients = "", []
                self.reply("220 fake.smtp ESMTP")
                while True:
                    raw = self.rfile.readline()
                    if not raw:
                        return
                    line = raw.decode().rstrip("\r\n")
                    verb = line[:4].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250-fake.smtp" if verb == "EHLO" else "250 fake.smtp")
                        if verb == "EHLO":
                            self.reply("250 8BITMIME")
                    elif verb == "MAIL":
                        sender, recipients = line.split(":", 1)[1].strip().split()[0].strip("<>"), []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        address = line.split(":", 1)[1].strip().strip("<>")
                        if address in server.refuse:
                            self.reply("550 no such user")
                        else:
                            recipients.append(address)
                            self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 go ahead")
                        lines = []
                        while True:
                            data = self.rfile.readline()
                            if data in (b".\r\n", b".\n", b""):
                                break
                            lines.append(data[1:] if data.startswith(b"..") else data)
                        parsed = email.message_from_bytes(b"".join(lines), policy=email.policy.default)
                        server.messages.append((sender, recipients, parsed))
                        self.reply("250 OK queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:  # RSET, NOOP
                        self.reply("250 OK")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def config(self) -> dict:
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": self.port, "SMTP_SECURITY": "none",
                "SMTP_FROM": "Riverside Clinic <care@clinic.example>"}

    def __enter__(self) -> FakeSmtpServer:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
