"""C1: at a fixed lr and epoch budget, BN's advantage grows with batch size.

Runs: the notebook preset at several batch sizes (the suite adds
batch_size=8,64,512), or a sweep without a preset that has both norms at two
or more batch sizes and one lr. Statistic: BN minus no-norm test accuracy at
the largest batch minus the same at the smallest (two Welch differences
contrasted), per setting where other keys vary. Figure: the report's
Figure 1, test accuracy vs batch size per norm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from analysis.claims.plots import draw
from analysis.claims.result import ClaimResult
from analysis.claims.rule import headline, verdict_of
from analysis.claims.runs import ClaimRuns, ExperimentRuns, families
from analysis.figures import fig_accuracy_vs_batch
from analysis.stats import Difference, contrast, scaled
from analysis.summary import setting_groups
from analysis.text import fmt_value

LITERATURE = "no direct figure; Masters & Luschi 2018: best results at batch 2-32 when lr is tuned"
STATISTIC = ("BN minus no-norm test accuracy at the largest batch minus the same at the smallest, expected > 0")


def tests_plain_sweep(exp: ExperimentRuns) -> bool:
    a = exp.analysis  # the MLP's claim: a conv-net sweep answers C17 instead
    return families(exp) == {"mlp"} and {"none", "batch"} <= set(a.norms) and len(a.batch_sizes) >= 2 \
        and not a.lr_varies


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    a = runs.need("notebook").analysis
    if a.lr_varies or a.differences.empty or len(a.batch_sizes) < 2:
        return runs.inconclusive(STATISTIC, "needs both norms at a fixed lr and two or more batch sizes",
                                 unit="points")
    groups = [(label, rows) for label, g in setting_groups(a, a.differences[a.differences.norm == "batch"])
              if (rows := _by_batch(g)) is not None]
    if not groups:
        return runs.inconclusive(STATISTIC, "needs BN and no-norm runs at two or more batch sizes", unit="points")
    settings = [(label, d, verdict_of(d, runs.claim.margin)) for label, g in groups for d in [_growth(g)]]
    label, c = headline(settings)
    g = dict(groups)[label]
    lo, hi = g.iloc[0], g.iloc[-1]
    where = f" at {label} (least favourable of {len(groups)} settings; verdict combined over them)" if label else ""
    evidence = (f"lr {fmt_value(a.fixed.get('lr'))}, {fmt_value(a.fixed.get('epochs'))} epochs{where}: BN minus no "
                f"norm rises from {100 * lo.test_acc_diff:+.2f} points at batch {int(lo.batch_size)} to "
                f"{100 * hi.test_acc_diff:+.2f} at batch {int(hi.batch_size)}")
    details = [f"{label + ', ' if label else ''}batch {int(r.batch_size)}: BN minus no norm "
               f"{100 * r.test_acc_diff:+.2f} points ({100 * r.low:+.2f} to {100 * r.high:+.2f})"
               for label, g in groups for r in g.itertuples()]
    n = min(int(min(g.n.min(), g.n_baseline.min())) for _, g in groups)
    figure = draw("C1", out, lambda: fig_accuracy_vs_batch(a)[0], details)
    return runs.combined(STATISTIC, settings, interval=c, unit="points",
                       n=f"{n} seeds per arm and batch size (at least)", evidence=evidence, figure=figure,
                       details=details)


def _by_batch(g: pd.DataFrame) -> Optional[pd.DataFrame]:
    """BN's difference rows by batch size; None with fewer than two."""
    g = g.dropna(subset=["test_acc_diff"]).sort_values("batch_size")
    return g if len(g) >= 2 else None


def _growth(g: pd.DataFrame) -> Difference:
    """BN minus no norm at the largest batch minus at the smallest, in points."""
    return scaled(contrast(g.iloc[-1]["_difference"], g.iloc[0]["_difference"]), 100)
