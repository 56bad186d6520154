"""Twilio's request signature (X-Twilio-Signature): base64 HMAC-SHA1, keyed with the
account's auth token, over the full URL the provider called followed by every POST
parameter's name and value, sorted by name."""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def twilio_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    payload = url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str) -> bool:
    if not auth_token or not signature:
        return False
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), signature.encode())
