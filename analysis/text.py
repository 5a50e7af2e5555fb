"""Numbers in words for the claims: signed values, counts, a value with its 95% interval."""

from __future__ import annotations

import math
from typing import Any, Iterable

from analysis.collect import finite, num
from analysis.stats import Difference, MeanInterval


def signed(x: Any, digits: int = 2) -> str:
    """+1.23; n/a where not a finite number."""
    return f"{num(x):+.{digits}f}" if finite(x) else "n/a"


def short(x: Any) -> str:
    """Three significant digits; n/a where not a finite number."""
    return f"{num(x):.3g}" if finite(x) else "n/a"


def count(x: Any) -> str:
    """A step or other count with thousands separators; n/a where not a finite number."""
    return f"{num(x):,.0f}" if finite(x) else "n/a"


def with_interval(v: float, lo: float, hi: float, unit: str = " points", digits: int = 2) -> str:
    """'+1.23 points (+0.50 to +1.96)'; the missing interval said in words."""
    if not math.isfinite(v):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{v:+.{digits}f}{unit} (no interval: fewer than two seeds)"
    return f"{v:+.{digits}f}{unit} ({lo:+.{digits}f} to {hi:+.{digits}f})"


def diff_text(d: Difference, unit: str = " points", digits: int = 2) -> str:
    return with_interval(d.diff, d.low, d.high, unit, digits)


def bracketed(x: Difference | MeanInterval, digits: int = 2) -> str:
    """'+1.23 [+0.50, +1.96] (n=3)' for a mean, '(n=3, 3)' for a difference of two arms."""
    v, n = (x.diff, f"{x.n_a}, {x.n_b}") if isinstance(x, Difference) else (x.mean, str(x.n))
    iv = (f"[{x.low:+.{digits}f}, {x.high:+.{digits}f}]" if math.isfinite(x.low) and math.isfinite(x.high)
          else "no interval")
    return f"{signed(v, digits)} {iv} (n={n})"


def n_text(counts: Iterable[int], what: str = "seeds per arm") -> str:
    """'3 seeds per arm', '2 to 3 seeds per arm'."""
    c = [int(x) for x in counts if x]
    if not c:
        return f"0 {what}"
    lo, hi = min(c), max(c)
    return f"{lo} {what}" if lo == hi else f"{lo} to {hi} {what}"
