"""In Chromium: a refill request and a lab visit with its follow-up at phone size; a
scheduler's new weekly template reaching a patient and the visit marked attended;
the campaign dashboard. Screenshots go to screenshots/."""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, timedelta

import pyotp
import pytest

from tests.browser.conftest import DESKTOP, SCREENSHOTS
from tests.browser.journey import Visitor

pytestmark = pytest.mark.browser


def shot(page, name: str) -> None:
    (SCREENSHOTS / "care").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "care" / f"{name}.png"), full_page=True)


def staff_sign_in(page, server, role: str) -> None:
    account = server.staff[role]
    page.goto(server.url("/staff/login"))
    page.fill('input[name="email"]', account["email"])
    page.fill('input[name="password"]', account["password"])
    page.locator('main button[type="submit"]').click()
    page.fill('input[name="code"]', pyotp.TOTP(account["totp_secret"]).now())  # each role signs in once per run
    page.locator('main button[type="submit"]').click()
    assert "/staff/login" not in page.url, page.locator("main").inner_text()


def demo_patient(server, name: str, phone: str):
    """A demo patient with the phone on file the code goes to (see portal/services/demo.py)."""
    return replace(server.demo[name], phone=phone)


def test_a_refill_request_at_phone_size(browser, server, new_context):
    visitor = Visitor(new_context().new_page(), server, demo_patient(server, "Carlos Rivera", "+13125550107"))
    visitor.verify(browser)
    page = visitor.page
    assert "Lisinopril 10 MG Oral Tablet" in page.locator("main").inner_text()
    shot(page, "refill-1-home")
    visitor.tap('main form[action$="/visit/refill/refill"] button[type="submit"]', "/visit")
    assert page.locator('main .notice[role="status"]').count() == 1
    shot(page, "refill-2-requested")


def test_a_lab_visit_and_its_follow_up_at_phone_size(browser, server, new_context):
    visitor = Visitor(new_context().new_page(), server, demo_patient(server, "Robert Johnson", "+13125550104"))
    visitor.verify(browser)
    visitor.follow("/visit/choose")
    visitor.choose_first_place()  # lab visits are listed first for a lab gap
    shot(visitor.page, "lab-1-times")
    visitor.hold_first_time()
    assert visitor.page.locator('main a[href*="/visit/follow-up?"]').count() == 1
    visitor.tap('main a[href*="/visit/follow-up?"]', "/visit/follow-up")
    shot(visitor.page, "lab-2-follow-up-times")
    with visitor.navigation("/visit/review-pair"):
        visitor.page.locator("ul.times button").first.click()
    visitor.tap('main form[action$="/visit/book-pair"] button[type="submit"]', "/visit/booked")
    text = visitor.page.locator("main").inner_text()
    assert "How to prepare" in text and "Your follow-up visit" in text
    shot(visitor.page, "lab-3-booked")


def test_a_schedulers_template_reaches_the_patient_and_the_visit_is_marked_attended(browser, server, new_context):
    staff = new_context(viewport=DESKTOP).new_page()
    staff_sign_in(staff, server, "scheduler")
    staff.goto(server.url("/staff/availability/templates/new"))
    sunday = date.today() + timedelta(days=(6 - date.today().weekday()) % 7 + 7)
    staff.select_option('select[name="provider"]', label="Dr. Luis Romero")
    staff.select_option('select[name="location"]', label="Riverside North")
    for box in staff.locator('input[name="weekdays"]').all():
        box.set_checked(box.get_attribute("value") == "6")  # Sundays: the demo has none
    staff.fill('input[name="start_time"]', "13:00")
    staff.fill('input[name="end_time"]', "15:00")
    staff.fill('input[name="valid_from"]', sunday.isoformat())
    staff.fill('input[name="valid_until"]', (sunday + timedelta(days=7)).isoformat())
    staff.locator('main form button[type="submit"]').first.click()
    staff.locator('main form[action$="/generate"] button[type="submit"]').click()
    assert re.search(r"\b[1-9]\d* ", staff.locator("main").inner_text()), "some slots should have been made"
    shot(staff, "scheduler-1-generated")

    visitor = Visitor(new_context().new_page(), server, server.take_patient("en"))
    visitor.verify(browser)
    visitor.page.goto(server.url("/visit/choose"))
    visitor.tap('main a[href*="/visit/times?"][href*="location=2"]', "/visit/times")
    visitor.tap('main nav.filters a[href*="when=evening"]', "/visit/times")
    sundays = visitor.page.locator("section.day", has_text="Sunday")
    for _page in range(15):  # page on through earlier evening and Saturday times
        if sundays.count() or not visitor.page.locator('main a[href*="after="]').count():
            break
        visitor.tap('main a[href*="after="]', "/visit/times")
    assert sundays.count() >= 1, "the new Sunday times should be offered"
    with visitor.navigation("/visit/review"):
        sundays.first.locator("ul.times button").first.click()
    visitor.book()

    staff.goto(server.url(f"/staff/schedule?location=2&day={sunday.isoformat()}"))
    row = staff.locator("tr", has_text=visitor.patient.name)
    row.locator('button[value="attended"]').click()
    assert "attended" in staff.locator("tr", has_text=visitor.patient.name).inner_text()
    shot(staff, "scheduler-2-attended")


def test_the_campaign_dashboard(browser, server, new_context):
    page = new_context(viewport=DESKTOP).new_page()
    staff_sign_in(page, server, "campaign_manager")
    page.goto(server.url("/staff/dashboard"))
    page.locator('main a[href*="/staff/dashboard/"]').first.click()
    assert page.locator("main svg").count() >= 1 and page.locator("main table").count() >= 1
    shot(page, "dashboard")
