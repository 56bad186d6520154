"""Configuration: safe defaults, overridden by PORTAL_* environment variables.

The app refuses to start outside development without a real secret key, so a
forgotten variable can never ship signed links that anyone could forge.
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEVELOPMENT_SECRET = "development-only-secret-do-not-use-in-production"


class ConfigError(RuntimeError):
    """Raised when the environment leaves the app unsafe to run."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"PORTAL_{name}")
    return value if value not in (None, "") else default


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def load_config(instance_path: str, overrides: dict | None = None) -> dict:
    """Build the Flask config mapping from defaults, environment and overrides."""
    overrides = dict(overrides or {})
    env = overrides.get("PORTAL_ENV") or _env("ENV", "development")
    development = env == "development"
    database_url = _env("DATABASE_URL") or "sqlite:///" + os.path.join(instance_path, "portal.sqlite3")
    secret = _env("SECRET_KEY") or (DEVELOPMENT_SECRET if development or env == "testing" else None)

    config = {
        "PORTAL_ENV": env,
        "SECRET_KEY": secret,
        "DATABASE_URL": database_url,
        "BASE_URL": (_env("BASE_URL") or "http://127.0.0.1:5000").rstrip("/"),
        "CLINIC_NAME": _env("CLINIC_NAME", "Riverside Clinic"),
        # Messages are dispatched right after the request commits in development so
        # the one-time code shows up in the dev outbox at once.
        "DISPATCH_INLINE": _env_bool("DISPATCH_INLINE", development or env == "testing"),
        "HOLD_MINUTES": int(_env("HOLD_MINUTES", "10")),
        # How many proxies (e.g. nginx) stand in front of the app and set X-Forwarded-For/-Proto.
        # 0 trusts no such header: a client could otherwise write any address into the audit log.
        "PROXIES": int(_env("PROXIES", "0")),
        "PATIENT_IDLE": timedelta(minutes=15),
        "PATIENT_ABSOLUTE": timedelta(minutes=60),
        "STAFF_IDLE": timedelta(minutes=30),
        "STAFF_ABSOLUTE": timedelta(hours=12),
        "SLOTS_PER_PAGE": 12,
        "BABEL_DEFAULT_LOCALE": "en",
        "BABEL_DEFAULT_TIMEZONE": "UTC",
        "BABEL_TRANSLATION_DIRECTORIES": str(PROJECT_ROOT / "translations"),
        "LANGUAGES": ("en", "es"),
        "SESSION_COOKIE_NAME": "portal_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": not development and env != "testing",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
        "WTF_CSRF_TIME_LIMIT": None,  # the CSRF token lives as long as the server-side session
        "MAX_CONTENT_LENGTH": 64 * 1024,  # no patient form needs more; bigger bodies get a 413
        "TESTING": env == "testing",
        # Messaging (docs/messaging.md). Unset providers fall back to the development outbox.
        "DEFAULT_TIME_ZONE": _env("DEFAULT_TIME_ZONE", "America/Chicago"),  # when patient and clinic have none
        "SEND_WINDOW_START_HOUR": int(_env("SEND_WINDOW_START_HOUR", "8")),  # quiet hours end, patient-local
        "SEND_WINDOW_END_HOUR": int(_env("SEND_WINDOW_END_HOUR", "21")),  # quiet hours start, patient-local
        "FREQUENCY_CAP_DAY": int(_env("FREQUENCY_CAP_DAY", "1")),  # campaign messages per patient per 24 h
        "FREQUENCY_CAP_WEEK": int(_env("FREQUENCY_CAP_WEEK", "3")),  # ... and per 7 days
        "DISPATCH_BATCH": int(_env("DISPATCH_BATCH", "100")),
        "DISPATCH_INTERVAL_SECONDS": float(_env("DISPATCH_INTERVAL_SECONDS", "5")),
        "DISPATCH_LEASE_SECONDS": int(_env("DISPATCH_LEASE_SECONDS", "300")),
        "DISPATCH_MAX_ATTEMPTS": int(_env("DISPATCH_MAX_ATTEMPTS", "6")),
        "DISPATCH_RETRY_BASE_SECONDS": int(_env("DISPATCH_RETRY_BASE_SECONDS", "60")),
        "DISPATCH_FAULT_HOOK": None,  # tests only: callable(point, message) run between claim and marking sent
        "SMTP_HOST": _env("SMTP_HOST", ""),
        "SMTP_PORT": int(_env("SMTP_PORT", "587")),
        "SMTP_USERNAME": _env("SMTP_USERNAME", ""),
        "SMTP_PASSWORD": _env("SMTP_PASSWORD", ""),
        "SMTP_SECURITY": _env("SMTP_SECURITY", "starttls"),  # starttls, ssl, or none (local relay only)
        "SMTP_FROM": _env("SMTP_FROM", ""),  # e.g. "Riverside Clinic <care@clinic.example>"
        "SMTP_TIMEOUT_SECONDS": float(_env("SMTP_TIMEOUT_SECONDS", "20")),
        "SMS_BASE_URL": (_env("SMS_BASE_URL") or "https://api.twilio.com").rstrip("/"),
        "SMS_ACCOUNT_SID": _env("SMS_ACCOUNT_SID", ""),
        "SMS_AUTH_TOKEN": _env("SMS_AUTH_TOKEN", ""),  # also verifies the provider's webhook signatures
        "SMS_FROM": _env("SMS_FROM", ""),  # E.164 sender number
        "SMS_MESSAGING_SERVICE_SID": _env("SMS_MESSAGING_SERVICE_SID", ""),  # instead of SMS_FROM
        "SMS_TIMEOUT_SECONDS": float(_env("SMS_TIMEOUT_SECONDS", "15")),
    }
    config.update(overrides)
    if not config["SECRET_KEY"] or (config["SECRET_KEY"] == DEVELOPMENT_SECRET and config["PORTAL_ENV"] == "production"):
        raise ConfigError("PORTAL_SECRET_KEY must be set outside development")
    return config
