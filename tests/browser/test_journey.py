"""The whole patient journey in a real browser: small phone, large phone and desktop,
with JavaScript on and off, starting in English or Spanish and switching language
halfway, from the link in the message to a cancelled visit."""
from __future__ import annotations

import pytest

from tests.browser.conftest import DESKTOP, LARGE_PHONE, PHONE
from tests.browser.journey import Visitor, assert_errors_announced

pytestmark = pytest.mark.browser

JOURNEYS = [
    pytest.param(PHONE, True, "en", id="360x640-js-en-to-es"),
    pytest.param(PHONE, False, "es", id="360x640-nojs-es-to-en"),
    pytest.param(LARGE_PHONE, True, "es", id="390x844-js-es-to-en"),
    pytest.param(LARGE_PHONE, False, "en", id="390x844-nojs-en-to-es"),
    pytest.param(DESKTOP, True, "en", id="1280x800-js-en-to-es"),
    pytest.param(DESKTOP, False, "es", id="1280x800-nojs-es-to-en"),
]


@pytest.mark.parametrize(("viewport", "javascript", "start"), JOURNEYS)
def test_link_to_booked_rescheduled_and_cancelled(server, browser, new_context, viewport, javascript, start):
    patient = server.take_patient(language=start)
    page = new_context(viewport, javascript).new_page()
    me = Visitor(page, server, patient)
    other = "es" if start == "en" else "en"

    me.open_link()
    assert me.lang == start, "the first page speaks the patient's stored language"
    me.ask_for_code()

    # A slip first: the code left out. The errors are announced and take focus.
    me.fill_birth_date()
    me.tap('main form[action$="/welcome/verify"] button[type="submit"]', "/welcome/verify", status=400)
    assert_errors_announced(page)
    me.confirm_identity(me.read_code(browser))

    me.follow("/visit/choose")
    me.choose_first_place()
    first_day = page.locator("main section.day h2").first.inner_text()
    me.switch_language()  # mid-flow: same page, same filters, other language
    assert me.lang == other
    assert page.locator("main section.day h2").first.inner_text() != first_day, "dates follow the language"

    chosen = me.hold_first_time()
    assert chosen in me.appointment_summary()
    me.book()
    booked = me.appointment_summary()
    assert chosen in booked

    me.follow("/visit/form")
    me.fill_previsit_form()
    me.follow("/visit/help")
    me.ask_for_ride()
    me.follow("/visit")

    # Reschedule: the hub's "Change the time" goes through the same choice of times.
    me.follow("/visit/choose")
    me.choose_first_place()
    moved_to = me.hold_first_time()
    me.book()
    assert moved_to in me.appointment_summary()
    assert me.appointment_summary() != booked

    me.follow("/visit/cancel")
    me.cancel_visit()
    assert me.lang == other, "the language chosen mid-flow sticks"
