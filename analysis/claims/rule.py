"""The one verdict rule: a signed statistic's 95% interval, the claim's margin -> a verdict.

Every claim module takes its verdicts from `verdict_of`, passing its own
margin (`runs.claim.margin`); docs/claims.md#the-verdict-rule says why.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from analysis.stats import Difference, MeanInterval

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN, OUT_OF_SCOPE = (
    "supported", "not supported", "inconclusive", "not run", "out of scope")
NO_EFFECT = "no meaningful effect"  # the equivalence verdict: the whole interval inside +-the claim's margin
NOT_REPLICATED = "not replicated"  # the two seed sets of a claim gave different verdicts

VERDICT_RULE = (
    "Each claim is measured as one signed statistic (the table says which, and which sign the "
    "claim expects) with a 95% interval over seeds (Student t for a mean, Welch for a difference of "
    "means), and has a margin: the smallest effect that matters for it, in the statistic's unit, fixed "
    "before the runs (docs/claims.md says why each). No meaningful effect: the whole interval lies inside "
    "plus or minus the margin. Otherwise supported: the whole interval is on the expected side of zero; "
    "not supported: the whole interval is on the other side; inconclusive: the interval contains zero "
    "(the row then says how large an effect the data still allow), there are fewer than two seeds per "
    "arm (no interval), or every seed gave the same value (a zero-width interval says nothing about "
    "the spread). A claim checked per setting (batch size, ...) gets a verdict only where every setting "
    "gives the same one. A claim whose runs are missing is 'not run'. With a replication (python -m "
    "study.suite --replicate: every preset again on a disjoint seed set) a claim is settled only where "
    "both seed sets give the same verdict; otherwise it reads 'not replicated' with both verdicts shown. "
    "The verdicts are computed from the runs each time the report is built.")

ZERO_WIDTH_NOTE = ("The headline interval has zero width: every seed gave the same value, so the t interval "
                   "measures no spread (identical replicates, a discrete grid or a constant metric) and the rule "
                   "reads it as inconclusive")


def zero_width(low: Optional[float], high: Optional[float]) -> bool:
    """A finite interval with no width: identical values in every arm, not certainty."""
    return low is not None and high is not None and math.isfinite(low) and math.isfinite(high) and not high > low


def within_margin(low: Optional[float], high: Optional[float], margin: Optional[float]) -> bool:
    """The whole interval inside (-margin, +margin): no effect that matters."""
    return (margin is not None and low is not None and high is not None and math.isfinite(low)
            and math.isfinite(high) and -margin < low and high < margin)


def directional(low: Optional[float], high: Optional[float], margin: Optional[float],
                expect_positive: bool = True) -> str:
    """The verdict rule for one interval of a statistic whose expected sign is given; an interval inside
    +-margin (the claim's smallest effect that matters; None: no margin) is 'no meaningful effect'.

    stats gives a zero-width 95% interval when every seed of every arm has the
    same value (seeds that agree to the last digit, steps on a coarse probe
    grid, a largest stable lr on a decade grid): that is no evidence of a
    small spread, and it must not make a claim 'supported'.
    """
    if low is None or high is None or math.isnan(low) or math.isnan(high) or zero_width(low, high):
        return INCONCLUSIVE
    if within_margin(low, high, margin):
        return NO_EFFECT
    if (low > 0) if expect_positive else (high < 0):
        return SUPPORTED
    if (high < 0) if expect_positive else (low > 0):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def verdict_of(x: Difference | MeanInterval, margin: Optional[float], expect_positive: bool = True) -> str:
    """The rule on a difference or a mean with its interval, against the claim's margin."""
    return directional(x.low, x.high, margin, expect_positive)


def combine(verdicts: Iterable[str]) -> str:
    """One verdict from several settings: the verdict every setting gives (supported, not supported, no
    meaningful effect), else inconclusive."""
    vs = [v for v in verdicts if v not in (NOT_RUN, OUT_OF_SCOPE)]
    if not vs:
        return NOT_RUN
    for v in (SUPPORTED, NOT_SUPPORTED, NO_EFFECT):
        if all(x == v for x in vs):
            return v
    return INCONCLUSIVE


def headline(settings: list[tuple[str, Any, str]], expect_positive: bool = True) -> tuple[str, Any]:
    """(label, interval) of the least favourable setting: lowest low bound (expected > 0), highest high bound
    (expected < 0). `settings` holds (label, Difference or MeanInterval, verdict)."""
    def key(s: tuple[str, Any, str]) -> float:
        bound = s[1].low if expect_positive else -s[1].high
        return bound if math.isfinite(bound) else -math.inf
    label, d, _ = min(settings, key=key)
    return label, d

