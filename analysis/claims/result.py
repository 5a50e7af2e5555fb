"""A claim's result: its row of the claims table, and the notes the guard adds to its evidence.

`ClaimResult` is what a claim module returns; `claims_table` is the table the
report prints (and writes as claims.csv), one row per result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from analysis.claims.rule import (INCONCLUSIVE, MIXED, NO_EFFECT, NOT_REPLICATED, NOT_RUN, TRIVIAL, ZERO_WIDTH_NOTE,
                                  zero_width)
from analysis.text import BARE, SQUARE, interval_text


@dataclass
class ClaimResult:
    claim: str  # "C5"
    title: str  # the claim in words, from the protocol's table
    verdict: str  # a verdict of analysis.claims.rule: supported, contradicted, trivially small, ...
    statistic: str  # what was measured, with the sign the claim expects ("BN minus LayerNorm ..., expected > 0")
    value: Optional[float] = None  # the statistic
    low: Optional[float] = None  # its 95% interval
    high: Optional[float] = None
    unit: str = ""  # "points", "x", "steps", "log10", ...
    n: str = ""  # replicates, e.g. "3 seeds per arm"
    evidence: str = ""  # one or two sentences with the numbers behind the statistic
    figure: Optional[str] = None  # file name (in the report folder) of the figure it comes from
    experiment: str = ""  # the preset(s) whose runs it read
    literature: str = ""  # the published number it stands beside (the claim module's LITERATURE)
    details: list[str] = field(default_factory=list)  # per-setting lines (per batch size, per layer, ...)
    margin: Optional[float] = None  # the smallest effect that matters, in `unit` (Claim.margin)
    seeds: Optional[int] = None  # replicates behind the headline interval (the smaller arm's)
    replication: Optional["ClaimResult"] = None  # the same claim on the disjoint replication seed set
    # The settings its verdict combines (rule.combine), each (label, value with interval, verdict): a mixed
    # row's table cell shows them all, and the notebook's claims read each through their own reading.
    settings: tuple[tuple[str, str, str], ...] = ()

    @property
    def bound(self) -> Optional[float]:
        """The largest effect (either sign) the 95% interval still allows: max(|low|, |high|)."""
        if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            return None
        return max(abs(self.low), abs(self.high))

    @property
    def settled(self) -> str:
        """The verdict the report stands by: this seed set's, unless a replication gave another one."""
        if self.replication is None or self.replication.verdict == NOT_RUN or self.verdict == NOT_RUN:
            return self.verdict
        return self.verdict if self.replication.verdict == self.verdict else NOT_REPLICATED

    @property
    def agreement(self) -> str:
        """'yes' / 'no' where both seed sets ran, '-' otherwise."""
        if self.replication is None or NOT_RUN in (self.verdict, self.replication.verdict):
            return "-"
        return "yes" if self.replication.verdict == self.verdict else "no"


def flag_zero_width(res: ClaimResult) -> ClaimResult:
    """Say in the evidence when the headline interval has zero width."""
    if zero_width(res.low, res.high) and ZERO_WIDTH_NOTE not in res.evidence:
        res.evidence = f"{res.evidence.rstrip('.')}. {ZERO_WIDTH_NOTE}."
    return res


def bound_note(res: ClaimResult) -> str:
    """What an interval that decides nothing still says: how large an effect it allows, against the margin."""
    unit = f" {res.unit}" if res.unit else ""
    if res.verdict == NO_EFFECT:
        return (f"The whole 95% interval lies within +-{res.margin:g}{unit}, the smallest effect that matters for "
                f"this claim: no meaningful effect")
    if res.verdict == TRIVIAL:
        return (f"The 95% interval excludes 0 but lies within +-{res.margin:g}{unit}, the smallest effect that "
                f"matters for this claim: a real effect, trivially small")
    b = res.bound
    if res.verdict != INCONCLUSIVE or b is None or zero_width(res.low, res.high) or not res.low <= 0 <= res.high:
        return ""  # an interval clear of zero undecided only because the settings disagree: the details say
    margin = (f"; the smallest effect that matters here is {res.margin:g}{unit}, so the data cannot yet tell "
              f"a meaningful effect from none" if res.margin is not None and b >= res.margin else "")
    return (f"Bound: no effect larger than {b:.3g}{unit} in either direction is compatible with the data (95%; "
            f"the interval runs from {interval_text(res.low, res.high, spec='+.3g', form=BARE)}){margin}")

def format_value(r: ClaimResult) -> str:
    """The statistic with its interval, for the tables: '+1.23 points [+0.50, +1.96]'. A mixed row, whose
    headline is one setting's, gives every setting with its verdict: the headline alone would read as
    the verdict's number."""
    if r.verdict == MIXED and len(r.settings) > 1:
        return "; ".join(f"{label}: {value} ({verdict})" for label, value, verdict in r.settings)
    return value_text(r.value, r.low, r.high, r.unit)


def value_text(value: Optional[float], low: Optional[float], high: Optional[float], unit: str) -> str:
    return interval_text(low, high, value=value, spec="+.3g", unit=f" {unit}" if unit else "", form=SQUARE,
                         none="(no interval)")


def format_margin(r: ClaimResult) -> str:
    return f"+-{r.margin:g}{' ' + r.unit if r.unit else ''}" if r.margin is not None else "-"


def format_replication(r: ClaimResult) -> str:
    """The replication seed set's verdict and value, for the tables."""
    rep = r.replication
    if rep is None or rep.verdict == NOT_RUN:
        return "not run"
    return f"{rep.verdict}: {format_value(rep)} (n={rep.seeds if rep.seeds is not None else '-'})"


def claims_table(results: list[ClaimResult]) -> pd.DataFrame:
    """The claims table: the settled verdict first; with a replication, both seed sets' verdicts and numbers."""
    replicated = any(r.replication is not None for r in results)

    def row(r: ClaimResult) -> dict[str, str]:
        out = {"claim": f"{r.claim}: {r.title}", "verdict": r.settled, "statistic (expected sign)": r.statistic or "-"}
        if replicated:
            out["first seed set [95% CI]"] = f"{r.verdict}: {format_value(r)}" if r.verdict != NOT_RUN else NOT_RUN
            out["replication [95% CI]"] = format_replication(r)
            out["agree"] = r.agreement
        else:
            out["measured [95% CI]"] = format_value(r)
        return {**out, "margin": format_margin(r), "n": r.n or "-", "preset": r.experiment or "-",
                "figure": r.figure or "-", "literature": r.literature}

    return pd.DataFrame([row(r) for r in results])

