"""Every patient page, in English and Spanish, at the small-phone viewport:

- axe-core finds no WCAG 2.1 A/AA violation (colour contrast included);
- every input, select and textarea has a visible label;
- with text at 200% the 360 px page does not scroll sideways;
- errors are announced (role=alert), take focus, and each field points at its message;
- <html lang> follows the language switch, and the switch keeps the place.

The walk also saves a screenshot of each step in each language to screenshots/<lang>/,
and writes the list of pages it checked to screenshots/accessibility.txt.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import pytest

from tests.browser.conftest import PHONE, SCREENSHOTS
from tests.browser.journey import Visitor, assert_errors_announced

pytestmark = pytest.mark.browser

AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

UNLABELLED_JS = """() => {
    const shown = el => { const box = el.getBoundingClientRect(), style = getComputedStyle(el);
        return box.width > 1 && box.height > 1 && style.visibility !== 'hidden' && style.opacity !== '0'; };
    return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
        .filter(el => shown(el))
        .filter(el => ![...(el.labels || [])].some(label => shown(label) && label.textContent.trim()))
        .map(el => el.name || el.id || el.outerHTML.slice(0, 60));
}"""

# Text-only zoom, like a phone's large-text setting: every size in the stylesheet is in rem.
WIDEST_AT_200_PERCENT_JS = """() => {
    const root = document.documentElement;
    root.style.fontSize = '200%';
    const result = {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, culprits: []};
    if (result.scrollWidth > result.clientWidth) {
        for (const el of document.body.querySelectorAll('*')) {
            const box = el.getBoundingClientRect();
            if (box.right > result.clientWidth + 1 && result.culprits.length < 5)
                result.culprits.push(el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') +
                                     ' right=' + Math.round(box.right));
        }
    }
    return result;
}"""
RESET_TEXT_SIZE_JS = "() => { document.documentElement.style.fontSize = ''; }"


@dataclass
class Finding:
    step: str
    lang: str
    path: str
    violations: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    overflow: str = ""

    @property
    def clean(self) -> bool:
        return not (self.violations or self.unlabelled or self.overflow)


class Audit:
    def __init__(self) -> None:
        from axe_playwright_python.sync_playwright import Axe

        self.axe = Axe()
        self.findings: list[Finding] = []
        self.steps: list[str] = []
        for lang in ("en", "es"):
            shutil.rmtree(SCREENSHOTS / lang, ignore_errors=True)
            (SCREENSHOTS / lang).mkdir(parents=True)

    def number(self, step: str) -> str:
        if step not in self.steps:
            self.steps.append(step)
        return f"{self.steps.index(step) + 1:02d}-{step}"

    def check(self, visitor: Visitor, step: str) -> None:
        page, lang = visitor.page, visitor.lang
        # Folded sections hide their forms: open them so axe and the label check see everything,
        # then fold them again so the screenshot shows the page as the patient first sees it.
        page.evaluate("() => document.querySelectorAll('details:not([open])').forEach(d => {"
                      " d.open = true; d.dataset.auditOpened = ''; })")
        finding = Finding(step, lang, visitor.path)
        results = self.axe.run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS},
                                              "resultTypes": ["violations"]})
        for violation in results.response["violations"]:
            targets = ", ".join(str(node["target"]) for node in violation["nodes"][:3])
            finding.violations.append(f"{violation['id']} ({violation['impact']}): {targets}")
        finding.unlabelled = page.evaluate(UNLABELLED_JS)
        widths = page.evaluate(WIDEST_AT_200_PERCENT_JS)
        if widths["scrollWidth"] > widths["clientWidth"]:
            finding.overflow = (f"{widths['scrollWidth']}px wide in {widths['clientWidth']}px: "
                                + "; ".join(widths["culprits"]))
            failures = SCREENSHOTS / "failures"
            failures.mkdir(exist_ok=True)
            page.screenshot(path=str(failures / f"text-200-{lang}-{self.number(step)}.png"), full_page=True)
        page.evaluate(RESET_TEXT_SIZE_JS)
        page.evaluate("() => document.querySelectorAll('details[data-audit-opened]').forEach(d => {"
                      " d.open = false; delete d.dataset.auditOpened; })")
        page.screenshot(path=str(SCREENSHOTS / lang / f"{self.number(step)}.png"), full_page=True)
        self.findings.append(finding)

    def both(self, visitor: Visitor, step: str, status: int = 200) -> None:
        """Check the page, switch language with the header button, check it again.
        The walk carries on in the new language, so it switches at every step."""
        self.check(visitor, step)
        visitor.switch_language(status)
        self.check(visitor, step)

    def errors(self, visitor: Visitor, step: str, submit: str, expect_path: str, form_page: str,
               before_submit=None) -> None:
        """Send a form with a slip in each language; the answer must announce and focus its errors.
        Switching language from the error page goes back to the form (GET) in the other language."""
        for round_ in range(2):
            if round_:
                visitor.switch_language(lands_on=form_page)
            if before_submit:
                before_submit()
            visitor.tap(submit, expect_path, status=400)
            assert_errors_announced(visitor.page)
            self.check(visitor, step)

    def report(self) -> str:
        lines = [f"{'step':<22} {'lang':<4} {'path':<20} result"]
        for f in self.findings:
            problems = f.violations + [f"unlabelled: {name}" for name in f.unlabelled] + (
                [f"sideways scroll at 200% text: {f.overflow}"] if f.overflow else [])
            lines.append(f"{f.step:<22} {f.lang:<4} {f.path:<20} {'ok' if not problems else problems[0]}")
            lines.extend(f"{'':<48} {problem}" for problem in problems[1:])
        clean = sum(f.clean for f in self.findings)
        lines.append(f"{len(self.findings)} page views checked ({len(self.steps)} steps x 2 languages), "
                     f"{clean} clean; axe tags {', '.join(AXE_TAGS)}")
        return "\n".join(lines)


def test_every_patient_page_is_accessible_in_both_languages(server, browser, new_context):
    audit = Audit()

    # Pages anyone can reach: a broken link, and a page after the session has gone.
    stranger = Visitor(new_context(PHONE).new_page(), server, None)
    stranger.page.goto(server.url("/r/not-a-real-link"))
    audit.both(stranger, "link-not-valid", status=404)
    stranger.page.goto(server.url("/visit"))
    audit.both(stranger, "session-ended", status=401)

    patient = server.take_patient("en")
    me = Visitor(new_context(PHONE).new_page(), server, patient)
    me.open_link()
    audit.both(me, "welcome")
    audit.errors(me, "welcome-error", 'main form[action$="/welcome/code"] button[type="submit"]',
                 "/welcome/code", "/welcome")
    me.ask_for_code()
    audit.both(me, "verify")
    audit.errors(me, "verify-error", 'main form[action$="/welcome/verify"] button[type="submit"]',
                 "/welcome/verify", "/welcome/verify")
    me.confirm_identity(me.read_code(browser))
    audit.both(me, "home")
    me.follow("/visit/choose")
    audit.both(me, "choose")
    me.choose_first_place()
    audit.both(me, "times")
    me.hold_first_time()
    audit.both(me, "review")
    me.book()
    audit.both(me, "booked")
    me.follow("/visit/form")
    audit.both(me, "form")
    audit.errors(me, "form-error", 'main button[name="submit"]', "/visit/form", "/visit/form")
    me.fill_previsit_form()
    audit.both(me, "home-booked")
    me.follow("/visit/help")
    audit.both(me, "help")
    audit.errors(me, "help-error", 'main form[action$="/visit/help/ride"] button[type="submit"]',
                 "/visit/help/ride", "/visit/help", before_submit=lambda: me.open_section("/visit/help/ride"))
    me.ask_for_ride()
    audit.both(me, "help-asked")
    me.follow("/visit")
    me.follow("/visit/other")
    audit.both(me, "other")
    audit.errors(me, "other-error", 'main form[action$="/visit/other"] button[type="submit"]',
                 "/visit/other", "/visit/other")
    me.follow("/visit")
    me.follow("/visit/cancel")
    audit.both(me, "cancel")
    me.cancel_visit()
    audit.both(me, "home-cancelled")
    me.follow("/visit/other")
    for round_ in range(2):  # the goodbye page answers a POST, so it is reached once per language
        if round_:
            me.switch_language(lands_on="/visit/other")  # from the goodbye page back to the choices
        me.page.locator('input[name="choice"][value="done_elsewhere"]').check()
        me.tap('main form[action$="/visit/other"] button[type="submit"]', "/visit/other")
        audit.check(me, "goodbye")

    # A "birth date + last name" campaign: no code, no clinical detail.
    dorothy = Visitor(new_context(PHONE).new_page(), server, server.demo["Dorothy Smith"])
    dorothy.open_link()
    audit.both(dorothy, "verify-by-name")
    audit.errors(dorothy, "verify-by-name-error", 'main form[action$="/welcome/verify"] button[type="submit"]',
                 "/welcome/verify", "/welcome")

    # Five wrong birth dates lock the link; the page that says so, in each language.
    for lang in ("en", "es"):
        locked = Visitor(new_context(PHONE).new_page(), server, server.take_patient())
        locked.open_link()
        locked.use_language(lang)
        locked.ask_for_code()
        wrong = locked.patient.birth_date.replace(year=locked.patient.birth_date.year - 1)
        for attempt in range(5):
            locked.fill_birth_date(wrong)
            locked.page.fill('input[name="code"]', "000000")
            locked.tap('main form[action$="/welcome/verify"] button[type="submit"]', "/welcome/verify",
                       status=423 if attempt == 4 else 400)
        audit.check(locked, "locked")

    report = audit.report()
    print("\naxe-core and page checks, 360x640:\n" + report)
    (SCREENSHOTS / "accessibility.txt").write_text(report + "\n")
    problems = [f for f in audit.findings if not f.clean]
    assert not problems, "accessibility problems:\n" + report
    assert {f.lang for f in audit.findings} == {"en", "es"}
    assert all(sum(1 for f in audit.findings if f.step == step) == 2 for step in audit.steps)
