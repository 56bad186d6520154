"""Each message variant against the holdout (control) group, with honest uncertainty.

The control group is enrolled like everyone else but never contacted, so the
difference between a variant's rate and the control group's rate is the effect of
the outreach itself (an intention-to-treat comparison: everyone assigned to a variant
counts, whether or not a message reached them).

Confidence interval for a difference of two proportions: Newcombe's hybrid score
interval (method 10 in Newcombe 1998, "Interval estimation for the difference between
independent proportions", Statistics in Medicine 17:873-890), built from the Wilson
score interval of each proportion. Unlike the simple Wald interval it stays inside
[-1, 1], behaves at rates near 0% and 100% and with small groups, and needs nothing
but the four counts. statsmodels calls it ``method="newcomb"``; the tests check both
against the paper's worked examples and against statsmodels.

A verdict claims a difference only when the whole interval, as printed (one decimal of
a percentage point), lies on one side of zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import sqrt

from flask_babel import format_decimal, gettext as _, lazy_gettext as _l

from portal.services.analytics import CONTROL, CampaignReport, Column, Group, Table

Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution

# metric key -> (success stage, label); all of them out of every patient in the arm
METRICS = {
    "booking": ("booked", _l("Booked")),
    "kept": ("won_back", _l("Came to a visit in the window")),
    "closure": ("closed", _l("Care gap closed")),
}


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for one proportion. Raises ValueError for impossible counts."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError("need 0 <= successes <= trials and trials > 0")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z_95) -> tuple[float, float, float]:
    """p1 - p2 and its hybrid score interval (Newcombe's method 10): (difference, low, high).
    Raises ValueError for impossible counts."""
    p1, p2 = x1 / n1 if n1 else 0.0, x2 / n2 if n2 else 0.0
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    difference = p1 - p2
    low = difference - sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return difference, max(-1.0, low), min(1.0, high)


@dataclass(frozen=True)
class Comparison:
    variant: str
    metric: str
    treated: int  # patients assigned to the variant
    treated_successes: int
    control: int  # patients in the control group
    control_successes: int
    difference: float | None  # proportion, variant minus control
    low: float | None
    high: float | None

    @property
    def treated_rate(self) -> float | None:
        return self.treated_successes / self.treated if self.treated else None

    @property
    def control_rate(self) -> float | None:
        return self.control_successes / self.control if self.control else None

    @property
    def direction(self) -> str:
        """'more', 'fewer' or 'unclear': the sign of the difference only where the interval
        as printed (in points, one decimal) excludes zero; 'none' when it can't be computed."""
        if self.difference is None:
            return "none"
        if round(self.low * 100, 1) > 0:
            return "more"
        if round(self.high * 100, 1) < 0:
            return "fewer"
        return "unclear"


def compare_arms(arms: list[Group]) -> list[Comparison]:
    """Every variant against the control group on every metric (nothing when there is no
    variant); the interval is left empty where either group has no patients."""
    by_key = {group.key: group for group in arms}
    control = by_key.get(CONTROL)
    comparisons = []
    for group in arms:
        if group.key == CONTROL:
            continue
        for metric, (stage, _label) in METRICS.items():
            n1, x1 = group.counts["audience"], group.counts[stage]
            n2, x2 = (control.counts["audience"], control.counts[stage]) if control else (0, 0)
            difference = low = high = None
            if n1 and n2:
                difference, low, high = newcombe_interval(x1, n1, x2, n2)
            comparisons.append(Comparison(str(group.key), metric, n1, x1, n2, x2, difference, low, high))
    return comparisons


def _points(value: float) -> str:
    return format_decimal(round(value * 100, 1), format="0.0")


def verdict(comparison: Comparison, variant_label: str | None = None) -> str:
    """One plain sentence, in the current language, that never claims more than the interval."""
    name = variant_label or comparison.variant
    if comparison.control == 0:
        return _("There is no control group, so the effect of the messages can't be measured.")
    if comparison.treated == 0:
        return _("No patients were assigned to variant %(variant)s.", variant=name)
    low, high = _points(comparison.low), _points(comparison.high)
    size = _points(abs(comparison.difference))
    direction = comparison.direction
    if comparison.metric == "booking":
        if direction == "more":
            return _("Variant %(variant)s booked %(points)s points more than no outreach (95%% CI %(low)s to "
                     "%(high)s).", variant=name, points=size, low=low, high=high)
        if direction == "fewer":
            return _("Variant %(variant)s booked %(points)s points fewer than no outreach (95%% CI %(low)s to "
                     "%(high)s).", variant=name, points=size, low=low, high=high)
        return _("No clear difference in bookings between variant %(variant)s and no outreach: the 95%% CI runs "
                 "from %(low)s to %(high)s points, so the data fit both more and fewer bookings.",
                 variant=name, low=low, high=high)
    if comparison.metric == "kept":
        if direction == "more":
            return _("Variant %(variant)s brought %(points)s points more patients to a visit than no outreach "
                     "(95%% CI %(low)s to %(high)s).", variant=name, points=size, low=low, high=high)
        if direction == "fewer":
            return _("Variant %(variant)s brought %(points)s points fewer patients to a visit than no outreach "
                     "(95%% CI %(low)s to %(high)s).", variant=name, points=size, low=low, high=high)
        return _("No clear difference in visits between variant %(variant)s and no outreach: the 95%% CI runs "
                 "from %(low)s to %(high)s points.", variant=name, low=low, high=high)
    if direction == "more":
        return _("Variant %(variant)s closed %(points)s points more care gaps than no outreach (95%% CI %(low)s "
                 "to %(high)s).", variant=name, points=size, low=low, high=high)
    if direction == "fewer":
        return _("Variant %(variant)s closed %(points)s points fewer care gaps than no outreach (95%% CI %(low)s "
                 "to %(high)s).", variant=name, points=size, low=low, high=high)
    return _("No clear difference in closed care gaps between variant %(variant)s and no outreach: the 95%% CI "
             "runs from %(low)s to %(high)s points.", variant=name, low=low, high=high)


def experiment_table(report: CampaignReport, label_for=None) -> Table:
    """The comparisons of a campaign report as a table (screen, CSV, CLI); verdicts in the current language."""
    label_for = label_for or (lambda _dim, key: str(key))
    rows = []
    for c in compare_arms(report.arms):
        pct = lambda value: None if value is None else value * 100  # noqa: E731
        rows.append({"variant": label_for("variant", c.variant), "variant_key": c.variant, "metric": METRICS[c.metric][1],
                     "metric_key": c.metric, "patients": c.treated, "successes": c.treated_successes,
                     "rate": c.treated_rate, "control_patients": c.control,
                     "control_successes": c.control_successes, "control_rate": c.control_rate,
                     "difference_points": pct(c.difference), "ci_low_points": pct(c.low),
                     "ci_high_points": pct(c.high), "direction": c.direction,
                     "verdict": verdict(c)})
    every = ("patients", "successes", "control_patients", "control_successes")
    return Table("experiment", _l("Variants against the control group"), [
        Column("variant", _l("Variant"), "label"),
        Column("metric", _l("Outcome"), "text"),
        Column("patients", _l("Patients"), "count", (), False),
        Column("successes", _l("With the outcome"), "count", (), False),
        Column("rate", _l("Rate"), "rate", ("patients", "successes")),
        Column("control_patients", _l("Control patients"), "count", (), False),
        Column("control_successes", _l("Control with the outcome"), "count", (), False),
        Column("control_rate", _l("Control rate"), "rate", ("control_patients", "control_successes")),
        Column("difference_points", _l("Difference (points)"), "points", every),
        Column("ci_low_points", _l("95% CI low"), "points", every, False),
        Column("ci_high_points", _l("95% CI high"), "points", every, False),
        Column("direction", _l("Direction"), "text", every, False),
        Column("verdict", _l("What it means"), "text", every),
    ], rows)
