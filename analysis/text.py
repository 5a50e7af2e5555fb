"""Numbers in words, written once for the report, the summary and the claims.

`interval_text` is the one way a value and its 95% interval are printed; the
sections differ only in its arguments (digits, unit, brackets, scale).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd

from analysis.collect import finite, num
from analysis.stats import Difference, MeanInterval

# Where the bounds stand: '(+0.50 to +1.96)', '[+0.50, +1.96]', '+0.50 to +1.96'.
ROUND, SQUARE, BARE = "({} to {})", "[{}, {}]", "{} to {}"
NO_INTERVAL = "(no interval: fewer than two seeds)"
ALONE = object()  # interval_text without a value: the bounds alone


def interval_text(low: Any, high: Any, *, value: Any = ALONE, spec: str = "+.2f", unit: str = "", form: str = ROUND,
                  none: str = NO_INTERVAL, scale: float = 1.0) -> str:
    """'+1.23 points (+0.50 to +1.96)': `value` (times `scale`, in `spec`) and `unit`, then the bounds in `form`.

    Without `value`, the interval alone; a value that is not a finite number: 'n/a'. `none` stands for the
    interval where a bound is not finite (fewer than two seeds)."""
    bounds = (form.format(format(scale * low, spec), format(scale * high, spec)) if finite(low) and finite(high)
              else none)
    if value is ALONE:
        return bounds
    return f"{format(scale * value, spec)}{unit} {bounds}" if finite(value) else "n/a"


def estimate(x: Difference | MeanInterval) -> float:
    """The value an interval is around: a difference's diff, a mean's mean."""
    return x.diff if isinstance(x, Difference) else x.mean


def with_interval(x: Difference | MeanInterval, unit: str = " points", digits: int = 2) -> str:
    """'+1.23 points (+0.50 to +1.96)'; the missing interval said in words."""
    return interval_text(x.low, x.high, value=estimate(x), spec=f"+.{digits}f", unit=unit)


def bracketed(x: Difference | MeanInterval, digits: int = 2) -> str:
    """'+1.23 [+0.50, +1.96] (n=3)' for a mean, '(n=3, 3)' for a difference of two arms."""
    n = f"{x.n_a}, {x.n_b}" if isinstance(x, Difference) else str(x.n)
    iv = interval_text(x.low, x.high, spec=f"+.{digits}f", form=SQUARE, none="no interval")
    return f"{signed(estimate(x), digits)} {iv} (n={n})"


def signed(x: Any, digits: int = 2) -> str:
    """+1.23; n/a where not a finite number."""
    return f"{num(x):+.{digits}f}" if finite(x) else "n/a"


def short(x: Any) -> str:
    """Three significant digits; n/a where not a finite number."""
    return f"{num(x):.3g}" if finite(x) else "n/a"


def count(x: Any) -> str:
    """A step or other count with thousands separators; n/a where not a finite number."""
    return f"{num(x):,.0f}" if finite(x) else "n/a"


def pct(x: float) -> str:
    """A fraction as a percentage with two decimals: '97.31%'."""
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def fmt_value(v: Any) -> str:
    """A config value as the tables show it ('0.01', 'batch'); null where missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "null"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def n_text(counts: Iterable[int], what: str = "seeds per arm") -> str:
    """'3 seeds per arm', '2 to 3 seeds per arm'."""
    c = [int(x) for x in counts if x]
    if not c:
        return f"0 {what}"
    lo, hi = min(c), max(c)
    return f"{lo} {what}" if lo == hi else f"{lo} to {hi} {what}"
