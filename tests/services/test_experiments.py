"""The variant-versus-control intervals, checked against the published worked examples and
statsmodels, and verdicts that never claim more than the interval supports."""
from __future__ import annotations

import random

import pytest
from flask_babel import force_locale

from portal.services.analytics import CONTROL, Group
from portal.services.experiments import (Comparison, compare_arms, newcombe_interval, verdict, wilson_interval)

# Newcombe (1998), Statistics in Medicine 17:873-890, Table II, method 10 (hybrid score):
# (x1, n1, x2, n2) -> 95% interval for p1 - p2, to four decimals as printed in the paper.
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "expected"), NEWCOMBE_TABLE_II)
def test_interval_matches_newcombes_published_examples(counts, expected):
    _difference, low, high = newcombe_interval(*counts)
    assert (round(low, 4), round(high, 4)) == expected


def test_wilson_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I: 81/263 -> 0.2553 to 0.3662
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_interval_agrees_with_statsmodels_on_random_counts():
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    rng = random.Random(20261130)
    for _ in range(300):
        n1, n2 = rng.randint(1, 5000), rng.randint(1, 5000)
        x1, x2 = rng.randint(0, n1), rng.randint(0, n2)
        expected = proportion.confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff")
        difference, low, high = newcombe_interval(x1, n1, x2, n2)
        assert difference == pytest.approx(x1 / n1 - x2 / n2)
        assert (low, high) == pytest.approx(tuple(float(v) for v in expected), abs=1e-9)
        w_low, w_high = wilson_interval(x1, n1)
        assert (w_low, w_high) == pytest.approx(proportion.proportion_confint(x1, n1, method="wilson"), abs=1e-9)


def test_impossible_counts_are_refused():
    with pytest.raises(ValueError):
        wilson_interval(5, 3)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def arm(key: str, audience: int, booked: int, won_back: int = 0, closed: int = 0) -> Group:
    return Group(key, {"audience": audience, "booked": booked, "won_back": won_back, "closed": closed})


def test_each_variant_is_compared_with_the_control_group():
    comparisons = compare_arms([arm("A", 1000, 140, 90), arm("B", 1000, 100, 60), arm(CONTROL, 1000, 90, 50)])
    booking = {c.variant: c for c in comparisons if c.metric == "booking"}
    assert set(booking) == {"A", "B"}
    a = booking["A"]
    assert (a.treated, a.treated_successes, a.control, a.control_successes) == (1000, 140, 1000, 90)
    assert a.difference == pytest.approx(0.05)
    assert a.direction == "more"  # 5.0 points, the interval is well above zero
    assert booking["B"].direction == "unclear"  # 1.0 point with ~2.6 points of noise either way
    assert {c.metric for c in comparisons} == {"booking", "kept", "closure"}


def test_without_a_control_group_nothing_is_claimed(app):
    comparisons = compare_arms([arm("A", 500, 80)])
    assert all(c.difference is None and c.direction == "none" for c in comparisons)
    with app.test_request_context(), force_locale("en"):
        assert "can't be measured" in verdict(comparisons[0])


def test_verdicts_state_the_interval_and_claim_only_what_it_supports(app):
    more = compare_arms([arm("B", 2000, 300), arm(CONTROL, 2000, 218)])[0]
    unclear = compare_arms([arm("B", 200, 30), arm(CONTROL, 200, 26)])[0]
    fewer = compare_arms([arm("B", 2000, 150), arm(CONTROL, 2000, 230)])[0]
    with app.test_request_context(), force_locale("en"):
        text = verdict(more)
        assert text.startswith("Variant B booked 4.1 points more than no outreach (95% CI ")
        assert f"{more.low * 100:.1f} to {more.high * 100:.1f})" in text
        assert "fewer" in verdict(fewer) and "more than" not in verdict(fewer)
        text = verdict(unclear)
        assert text.startswith("No clear difference in bookings between variant B and no outreach")
        assert "more than" not in text
    with app.test_request_context(), force_locale("es"):
        assert "4,1" in verdict(more)  # numbers in the reader's convention: a decimal comma in Spanish


def test_an_interval_that_only_rounds_away_from_zero_is_not_a_claim():
    """Lower bound 0.04 points: printed as 0.0, so the verdict must not say 'more'."""
    comparison = Comparison("B", "booking", 100, 10, 100, 5, 0.05, 0.0004, 0.10)
    assert comparison.direction == "unclear"
    assert Comparison("B", "booking", 100, 10, 100, 5, 0.05, 0.0006, 0.10).direction == "more"
