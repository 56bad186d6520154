"""Fixtures shared by the console page tests."""
from __future__ import annotations

import pytest

from tests.factories import make_clinic
from tests.staff_helpers import make_staff, sign_in


@pytest.fixture()
def clinic(db):
    setup = make_clinic(db)
    db.commit()
    return setup


@pytest.fixture()
def scheduler(db, client, in_app, clinic):
    """A scheduler signed in with both factors, in the test client."""
    browser = sign_in(client, make_staff(db, in_app, "scheduler"))
    assert "Hello" in browser.page
    return browser
