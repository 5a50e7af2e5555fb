"""analysis/text.py: the one interval formatter, in every form the report, the summary and the claims print."""

from __future__ import annotations

import math

import pytest

from analysis.stats import Difference, MeanInterval
from analysis.text import BARE, SQUARE, bracketed, interval_text, with_interval

NAN = math.nan


@pytest.mark.parametrize("kwargs, text", [
    # claims' evidence (with_interval): signed, two decimals, a unit, round brackets
    ({"value": 1.2345, "unit": " points"}, "+1.23 points (+0.50 to +1.96)"),
    # the claims table (format_value): three significant digits, square brackets
    ({"value": 1.2345, "spec": "+.3g", "unit": " x", "form": SQUARE}, "+1.23 x [+0.5, +1.96]"),
    # the summary's reading: fractions as points, the bounds alone
    ({"spec": ".2f", "scale": 100}, "(50.00 to 196.00)"),
    # the report's tables and the bound note: the bounds alone, no brackets
    ({"spec": ".2f", "form": BARE, "scale": 100}, "50.00 to 196.00"),
    ({"spec": "+.3g", "form": BARE}, "+0.5 to +1.96"),
])
def test_one_formatter_many_forms(kwargs: dict, text: str) -> None:
    assert interval_text(0.5, 1.96, **kwargs) == text


def test_a_missing_interval_or_value_is_said_in_words() -> None:
    assert interval_text(NAN, NAN, value=1.0) == "+1.00 (no interval: fewer than two seeds)"
    assert interval_text(NAN, NAN, form=BARE, none="none: 1 seed") == "none: 1 seed"
    assert interval_text(0.5, 1.5, value=None) == "n/a"
    assert interval_text(0.5, 1.5, value=NAN) == "n/a"


def test_means_and_differences() -> None:
    d = Difference(1.2345, 0.5, 1.96, 3, 4)
    m = MeanInterval(2.0, NAN, NAN, 1, NAN)
    assert with_interval(d) == "+1.23 points (+0.50 to +1.96)"
    assert with_interval(m, "%", 1) == "+2.0% (no interval: fewer than two seeds)"
    assert bracketed(d) == "+1.23 [+0.50, +1.96] (n=3, 4)"
    assert bracketed(m) == "+2.00 no interval (n=1)"
