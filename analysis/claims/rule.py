"""The one verdict rule: a signed statistic's 95% interval, the claim's margin -> a verdict.

Every claim module takes its verdicts from `verdict_of`, passing its own
margin (`runs.claim.margin`); docs/claims.md#the-verdict-rule says why.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Optional

from analysis.stats import Difference, MeanInterval

SUPPORTED, CONTRADICTED, TRIVIAL, NO_EFFECT, INCONCLUSIVE = (
    "supported", "contradicted", "trivially small", "no meaningful effect", "inconclusive")
MIXED = "mixed"  # a claim's settings give different answers (its details list each)
PREMISE_NOT_MET = "premise not met"  # the difference the claim is about is absent from the data
ERROR = "error"  # the claim's code raised: a bug or unforeseen data, never a verdict
NOT_RUN, OUT_OF_SCOPE = "not run", "out of scope"
NOT_REPLICATED = "not replicated"  # the two seed sets of a claim gave different verdicts
ANSWERS = (SUPPORTED, CONTRADICTED, TRIVIAL, NO_EFFECT)  # the verdicts that answer a claim's question

EFFECT, NON_INFERIORITY = "effect", "non-inferiority"  # what a claim asserts: an effect, or "as good as"

VERDICT_RULE = (
    "Each claim is measured as one signed statistic (the table says which, and which sign the claim expects) "
    "with a 95% interval over seeds (Student t for a mean, Welch for a difference of means), and has a margin "
    "m: the smallest effect that matters for it, in the statistic's unit, fixed before the runs "
    "(docs/claims.md says why each). The verdict reads the interval against 0 and +-m, as equivalence and "
    "minimum-effect tests do (Lakens 2017, 'Equivalence tests', Soc. Psychol. Personal. Sci. 8(4)). "
    "Supported: clear of 0 on the expected side and not inside +-m. Trivially small: clear of 0 but inside "
    "+-m (a real effect, smaller than any that matters). No meaningful effect: inside +-m and containing 0. "
    "Contradicted: clear of 0 on the other side and not inside +-m. Inconclusive: otherwise (the row then says "
    "how large an effect the data still allow), or fewer than two seeds per arm, or every seed gave the same "
    "value (a zero-width interval measures no spread). A claim that one arm does as well as another "
    "(non-inferiority) is supported when the interval lies above -m, contradicted when it lies below -m, "
    "else inconclusive. A claim checked per setting (batch size, ...) takes the verdict every setting gives; "
    "settings that answer differently make it 'mixed' (its row and details list each), and an undecided setting "
    "makes it inconclusive. A claim about a difference the data lack (a gap to recover or to shrink) reads "
    "'premise not met', with the numbers. A claim whose runs are missing is 'not run'; one whose code raised "
    "reads 'error' with the exception, never a verdict. With a replication (python -m study.suite "
    "--replicate: every preset again on a disjoint seed set) a claim is settled only where both seed sets "
    "give the same verdict; otherwise it reads 'not replicated' with both verdicts shown. The verdicts are "
    "computed from the runs each time the report is built.")

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
                expect_positive: bool = True, test: str = EFFECT) -> str:
    """The verdict rule (VERDICT_RULE) for one interval of a statistic whose expected sign is given, against
    the claim's margin (None: no margin, so nothing is 'inside' it).

    stats gives a zero-width 95% interval when every seed of every arm has the
    same value (seeds that agree to the last digit, steps on a coarse probe
    grid, a largest stable lr on a decade grid): that is no evidence of a
    small spread, and it must not make a claim 'supported'.
    """
    if low is None or high is None or math.isnan(low) or math.isnan(high) or zero_width(low, high):
        return INCONCLUSIVE
    if not expect_positive:
        low, high = -high, -low
    if test == NON_INFERIORITY:
        m = margin or 0.0
        return SUPPORTED if low > -m else CONTRADICTED if high < -m else INCONCLUSIVE
    inside = within_margin(low, high, margin)
    if low > 0 or high < 0:
        return TRIVIAL if inside else SUPPORTED if low > 0 else CONTRADICTED
    return NO_EFFECT if inside else INCONCLUSIVE


def verdict_of(x: Difference | MeanInterval, margin: Optional[float], expect_positive: bool = True,
               test: str = EFFECT) -> str:
    """The rule on a difference or a mean with its interval, against the claim's margin."""
    return directional(x.low, x.high, margin, expect_positive, test)


def combine(verdicts: Iterable[str]) -> str:
    """One verdict from several settings: the one every setting gives; 'mixed' where the settings answer
    differently; inconclusive where one is undecided. An error or a missing premise anywhere is the row's."""
    vs = [v for v in verdicts if v not in (NOT_RUN, OUT_OF_SCOPE)]
    if not vs:
        return NOT_RUN
    for special in (ERROR, PREMISE_NOT_MET):
        if special in vs:
            return special
    if all(v == vs[0] for v in vs):
        return vs[0]
    return MIXED if all(v in ANSWERS + (MIXED,) for v in vs) else INCONCLUSIVE


def headline(settings: list[tuple[str, Any, str]], expect_positive: bool = True) -> tuple[str, Any]:
    """(label, interval) of the least favourable setting: lowest low bound (expected > 0), highest high bound
    (expected < 0). `settings` holds (label, Difference or MeanInterval, verdict)."""
    def key(s: tuple[str, Any, str]) -> float:
        bound = s[1].low if expect_positive else -s[1].high
        return bound if math.isfinite(bound) else -math.inf
    label, d, _ = min(settings, key=key)
    return label, d

