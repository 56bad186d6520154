"""The patient journey as a person does it in a browser: tap the link, ask for a code,
read it on the "phone" (the dev outbox), type the birth date and code, pick a time…

Selectors lean on what the page promises (form field names, link targets, roles)
rather than on wording, because the Spanish catalog is still being written and the
same steps run in both languages.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tests.browser.conftest import Patient, Server

CODE = re.compile(r"\b(\d{6})\b")


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Visitor:
    """One patient on one browser page."""

    def __init__(self, page, server: Server, patient: Patient) -> None:
        self.page = page
        self.server = server
        self.patient = patient
        self.last_status = 0

    # -- plumbing ---------------------------------------------------------------------
    @property
    def path(self) -> str:
        return urlsplit(self.page.url).path

    @property
    def lang(self) -> str:
        return self.page.evaluate("document.documentElement.lang")

    @contextmanager
    def navigation(self, expect_path: str | None = None, status: int = 200):
        """Wrap a tap that loads a new page; check where it landed and how it answered."""
        with self.page.expect_navigation() as navigation:
            yield
        response = navigation.value
        self.last_status = response.status if response else 0
        assert self.last_status == status, f"{self.page.url} answered {self.last_status}, expected {status}"
        if expect_path is not None:
            assert self.path == expect_path, f"landed on {self.page.url}, expected {expect_path}"

    def tap(self, selector: str, expect_path: str | None = None, status: int = 200) -> None:
        with self.navigation(expect_path, status):
            self.page.locator(selector).first.click()

    def follow(self, target_path: str, expect_path: str | None = None) -> None:
        """Tap the first link (or button-styled link) in the main content that goes to target_path."""
        self.tap(f'main a[href="{target_path}"], main a[href^="{target_path}?"]', expect_path or target_path)

    def switch_language(self, status: int = 200, lands_on: str | None = None) -> str:
        """Tap the header's language button; the same page must come back in the other language.
        (From a form sent back with errors, `lands_on` is the address that shows that form.)"""
        before_lang, before_place = self.lang, lands_on or path_of(self.page.url)
        button = self.page.locator("header form.lang button")
        target = button.get_attribute("value")
        assert button.get_attribute("lang") == target, "the language button should be marked up in its own language"
        assert target != before_lang
        with self.navigation(status=status):
            button.click()
        assert self.lang == target, f"<html lang> is {self.lang!r} after switching to {target!r}"
        assert path_of(self.page.url) == before_place, f"the switch went to {self.page.url}, not {before_place}"
        assert self.page.locator("header form.lang button").get_attribute("value") == before_lang
        return target

    def use_language(self, lang: str, status: int = 200) -> None:
        if self.lang != lang:
            self.switch_language(status)

    # -- the journey -------------------------------------------------------------------
    def open_link(self) -> None:
        response = self.page.goto(self.patient.link)
        assert response.status == 200 and self.path == "/welcome", f"{self.page.url} answered {response.status}"
        assert self.patient.token not in self.page.url, "the token must leave the address bar"

    def ask_for_code(self, channel: str = "sms") -> None:
        self.page.locator(f'input[name="channel"][value="{channel}"]').check()
        self.tap('main form[action$="/welcome/code"] button[type="submit"]', "/welcome/verify")

    def read_code(self, browser) -> str:
        """Read the newest code sent to the patient, the way they would read their phone."""
        phone = browser.new_context()
        try:
            outbox = phone.new_page()
            outbox.goto(self.server.url("/dev/outbox"))
            bodies = outbox.locator(f'article.message[data-recipient="{self.patient.code_recipient}"] pre')
            for body in bodies.all_inner_texts():
                found = CODE.search(body)
                if found:
                    return found.group(1)
        finally:
            phone.close()
        raise AssertionError(f"no code for {self.patient.code_recipient} in the outbox")

    def fill_birth_date(self, birth_date=None) -> None:
        birth = birth_date or self.patient.birth_date
        self.page.select_option('select[name="birth_month"]', str(birth.month))
        self.page.fill('input[name="birth_day"]', str(birth.day))
        self.page.fill('input[name="birth_year"]', str(birth.year))

    def confirm_identity(self, code: str) -> None:
        self.fill_birth_date()
        self.page.fill('input[name="code"]', code)
        self.tap('main form[action$="/welcome/verify"] button[type="submit"]', "/visit")

    def choose_first_place(self) -> None:
        self.tap('main a[href*="/visit/times?"][href*="location="]', "/visit/times")

    def hold_first_time(self) -> str:
        """Tap the first open time; returns what the button said."""
        first = self.page.locator("ul.times button").first
        said = first.inner_text().split("\n")[0].strip()
        with self.navigation("/visit/review"):
            first.click()
        return said

    def book(self) -> None:
        self.tap('main form[action$="/visit/book"] button[type="submit"]', "/visit/booked")

    def appointment_summary(self) -> str:
        return self.page.locator("main dl.summary").first.inner_text()

    def fill_previsit_form(self) -> None:
        self.page.fill('textarea[name="reason"]', "Check-up and a question about my knee — rodilla ✓")
        self.page.fill('input[name="insurance_carrier"]', "Blue Cross")
        self.page.fill('textarea[name="medications"]', "Metformin 500 mg")
        self.page.select_option('select[name="interpreter"]', "es")
        self.tap('main button[name="submit"]', "/visit")
        assert self.page.locator('main .notice[role="status"]').count() == 1

    def ask_for_ride(self) -> None:
        ride = self.open_section("/visit/help/ride")
        ride.locator('input[name="ride-pickup_address"]').fill("742 Evergreen Terrace, Chicago")
        ride.locator('select[name="ride-time_window"]').select_option("morning")
        ride.locator('input[name="ride-mobility"][value="wheelchair"]').check()
        with self.navigation("/visit/help"):
            ride.locator('button[type="submit"]').click()
        assert self.page.locator('main .notice[role="status"]').count() == 1
        assert self.page.locator("main ul.plain li").count() == 1, "the ride request should be listed"

    def open_section(self, form_action: str):
        """Unfold the <details> holding a form (tapping its summary works without JavaScript)."""
        section = self.page.locator(f'details:has(form[action$="{form_action}"])')
        if section.get_attribute("open") is None:
            section.locator("summary").click()
        return section

    def cancel_visit(self) -> None:
        self.page.select_option('select[name="reason"]', "time")
        self.tap('main form[action$="/visit/cancel"] button[type="submit"]', "/visit")
        assert self.page.locator('main .notice[role="status"]').count() == 1
        assert self.page.locator('main a[href="/visit/cancel"]').count() == 0, "the visit should be gone"

    def verify(self, browser, channel: str = "sms") -> None:
        self.open_link()
        self.ask_for_code(channel)
        self.confirm_identity(self.read_code(browser))


def assert_errors_announced(page) -> None:
    """The error summary is an alert, has focus (autofocus works without JavaScript),
    and every field in error points at its message; the summary's links lead somewhere."""
    summary = page.locator('main [role="alert"]')
    assert summary.count() == 1 and summary.is_visible(), "one visible error summary with role=alert"
    focused = page.evaluate("document.activeElement ? document.activeElement.id : ''")
    assert focused == "error-summary", f"focus is on #{focused}, not on the error summary"
    broken = page.evaluate("""() => {
        const missing = [];
        for (const el of document.querySelectorAll('[aria-invalid="true"]')) {
            const ids = (el.getAttribute('aria-describedby') || '').split(/\\s+/).filter(Boolean);
            if (!ids.length || ids.some(id => !document.getElementById(id))) missing.push(el.name || el.id);
        }
        for (const a of document.querySelectorAll('[role="alert"] a[href^="#"]')) {
            if (!document.getElementById(a.getAttribute('href').slice(1))) missing.push(a.getAttribute('href'));
        }
        return missing;
    }""")
    assert not broken, f"fields or summary links that point at nothing: {broken}"
