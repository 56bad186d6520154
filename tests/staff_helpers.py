"""Staff accounts and sign-in for console tests."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyotp

from portal.models import StaffUser
from portal.services.staff_auth import create_staff, new_totp_secret
from tests.helpers import PatientBrowser

PASSWORD = "correct horse battery staple"
_numbers = itertools.count(1)


@dataclass
class StaffAccount:
    user: StaffUser
    email: str
    secret: str

    def code(self, steps_ahead: int = 0) -> str:
        """The authenticator's code now (or one step ahead, which the server also accepts)."""
        return pyotp.TOTP(self.secret).at(datetime.now(timezone.utc) + timedelta(seconds=30 * steps_ahead))


def make_staff(db, in_app, role: str) -> StaffAccount:
    email = f"{role}{next(_numbers)}@clinic.test"
    with in_app():
        user = create_staff(db, email, role, role.title(), PASSWORD)
    user.totp_secret = new_totp_secret()
    db.commit()
    return StaffAccount(user, email, user.totp_secret)


def sign_in(client, account: StaffAccount, steps_ahead: int = 0) -> PatientBrowser:
    browser = PatientBrowser(client)
    browser.get("/staff/login")
    browser.post("/staff/login", {"email": account.email, "password": PASSWORD})
    browser.post("/staff/login/code", {"code": account.code(steps_ahead)})
    return browser
