"""Keyed hashing for secrets we only ever compare: link nonces, codes, session keys.

A plain SHA-256 of a 6-digit code can be reversed from a database dump in a
second; an HMAC under the app's secret cannot.
"""
from __future__ import annotations

import hashlib
import hmac

from flask import current_app


def keyed_hash(value: str, purpose: str) -> str:
    key = f"{current_app.config['SECRET_KEY']}:{purpose}".encode()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def short_fingerprint(value: str) -> str:
    """A short, non-reversible tag for log lines that must refer to a secret."""
    return keyed_hash(value, "log")[:10]
