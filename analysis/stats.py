"""Intervals over seeds: Student t for one mean, Welch for a difference.

Seeds per cell are few (often 3), so intervals use the t distribution, not a
bootstrap (a percentile bootstrap of 3 values is far too narrow). The t
quantile comes from scipy, which also takes Welch's fractional degrees of
freedom.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import scipy.stats

LEVEL = 0.95  # every interval in the report is a 95% interval


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t with `df` (> 0, may be fractional: Welch) degrees of freedom."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    return float(scipy.stats.t.ppf(p, df))


def _clean(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    return a[np.isfinite(a)]


@dataclass(frozen=True)
class MeanInterval:
    """Mean of n values with its 95% t-interval (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float


def mean_interval(values: Iterable[float]) -> MeanInterval:
    a = _clean(values)
    n = len(a)
    if n == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0, math.nan)
    mean = float(a.mean())
    if n < 2:  # one value has no spread: no interval, never a zero-width one
        return MeanInterval(mean, math.nan, math.nan, 1, math.nan)
    sd = float(a.std(ddof=1))
    half = t_quantile(0.5 + LEVEL / 2, n - 1) * sd / math.sqrt(n)
    return MeanInterval(mean, mean - half, mean + half, n, sd)


def interval_bounds(values: Iterable[float]) -> tuple[float, float]:
    """(low, high) for seaborn's `errorbar=` callable; the mean twice for n < 2."""
    m = mean_interval(values)
    if m.n < 2:
        return (m.mean, m.mean)
    return (m.low, m.high)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with Welch's 95% interval (NaN bounds unless both n >= 2)."""

    diff: float
    low: float
    high: float
    n_a: int
    n_b: int
    se: float = math.nan
    df: float = math.nan


def _with_interval(diff: float, se: float, df: float, n_a: int, n_b: int) -> Difference:
    if not (math.isfinite(se) and df > 0):
        return Difference(diff, math.nan, math.nan, n_a, n_b)
    half = t_quantile(0.5 + LEVEL / 2, df) * se if se > 0 else 0.0
    return Difference(diff, diff - half, diff + half, n_a, n_b, se, df)


def welch_difference(a: Iterable[float], b: Iterable[float]) -> Difference:
    xa, xb = _clean(a), _clean(b)
    na, nb = len(xa), len(xb)
    if na == 0 or nb == 0:
        return Difference(math.nan, math.nan, math.nan, na, nb)
    diff = float(xa.mean() - xb.mean())
    if na < 2 or nb < 2:
        return Difference(diff, math.nan, math.nan, na, nb)
    va, vb = float(xa.var(ddof=1)) / na, float(xb.var(ddof=1)) / nb
    if va + vb == 0.0:  # identical values in both arms (e.g. every run at 100%)
        return _with_interval(diff, 0.0, math.inf, na, nb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return _with_interval(diff, math.sqrt(va + vb), df, na, nb)


def scaled(d: Difference, k: float) -> Difference:
    """The same difference in other units (k = 100: fractions to points)."""
    return Difference(d.diff * k, d.low * k, d.high * k, d.n_a, d.n_b, d.se * abs(k), d.df)


def relative_difference(a: Iterable[float], b: Iterable[float], unit: float = 1.0) -> Difference:
    """(mean a - mean b) / mean b, Welch's interval of the difference divided
    by mean b, times `unit` (100: percent); NaN where mean b is not > 0."""
    d = welch_difference(a, b)
    xb = _clean(b)
    ref = float(xb.mean()) if len(xb) else math.nan
    if not (math.isfinite(ref) and ref > 0):
        return Difference(math.nan, math.nan, math.nan, d.n_a, d.n_b)
    return scaled(d, unit / ref)


def contrast(d1: Difference, d2: Difference) -> Difference:
    """d1 - d2 for two independent differences (conservative df: the smaller)."""
    return _with_interval(d1.diff - d2.diff, math.sqrt(d1.se**2 + d2.se**2), min(d1.df, d2.df),
                          min(d1.n_a, d2.n_a), min(d1.n_b, d2.n_b))
