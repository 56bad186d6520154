"""The catalogue of care gaps: code, plain-language service line, and risk tier.

Tiers order outreach by clinical urgency, not recency: 1 post-discharge or
post-procedure follow-up, 2 chronic disease with missed monitoring, 3 high-risk
preventive gaps, 4 routine annual visit.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask_babel import lazy_gettext as _l


@dataclass(frozen=True)
class CareGap:
    code: str
    service_line: object  # lazy translated string, shown only after verification
    tier: int
    name: object  # what staff call it (lazy translated); precise where service_line is vague


CARE_GAPS: dict[str, CareGap] = {
    gap.code: gap
    for gap in (
        CareGap("post_discharge_followup", _l("follow-up visit"), 1, _l("Follow-up after a hospital stay")),
        CareGap("diabetes_a1c", _l("lab recheck"), 2, _l("Diabetes A1c check")),
        CareGap("refill_gap", _l("medicine check-in"), 2, _l("Medicine refill check-in")),
        CareGap("referral_open", _l("specialist visit"), 2, _l("Open specialist referral")),
        CareGap("breast_screening", _l("screening visit"), 3, _l("Breast cancer screening")),
        CareGap("colorectal_screening", _l("screening visit"), 3, _l("Colorectal screening")),
        CareGap("flu_vaccine", _l("vaccine visit"), 4, _l("Flu vaccine")),
        CareGap("annual_wellness", _l("annual wellness visit"), 4, _l("Annual wellness visit")),
    )
}


def care_gap(code: str) -> CareGap:
    """Look up a care gap by code; raises KeyError for an unknown code."""
    return CARE_GAPS[code]
