"""C7: ghost BN at large batch recovers part of the small-batch result.

Runs: the ghost preset (batch 64 and 512; ghost sizes 32, 64, 512; a ghost
size >= the batch is plain BN). Statistic: per ghost size, ghost BN minus
plain BN test accuracy at the largest batch (Welch); where BN at batch 64 is
clearly ahead of plain BN at the large batch, the share of that gap each ghost
size recovers. Figure: test accuracy per arm, one point per seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, label_axes, panel
from analysis.claims.result import ClaimResult
from analysis.claims.rule import SUPPORTED, headline, verdict_of
from analysis.claims.runs import DIVERGED_NOTE, ClaimRuns, acc_values, column, counts_note, runs_table
from analysis.collect import counted_as
from analysis.figures import palette
from analysis.stats import Difference, interval_bounds, welch_difference
from analysis.text import n_text, with_interval

LITERATURE = "Hoffer et al. 2017: the large-batch gap comes from fewer updates; ghost BN reduces it"
REFERENCE_BATCH = 64  # the small-batch result
STATISTIC = "ghost BN minus plain BN test accuracy at batch 512, in points, per ghost size (Welch), expected > 0"


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    df = runs_table(runs.need("ghost"))
    df["ghost"] = pd.to_numeric(column(df, "model.ghost_size"), errors="coerce")
    df = df[df.norm.isin(["ghost", "batch"]) & df.batch_size.notna()]
    large = int(df.batch_size.max()) if len(df) else 0
    plain_large = _plain_bn(df, large)
    ghosts = df[(df.norm == "ghost") & ~(df.ghost >= df.batch_size) & (df.batch_size == large)]
    if plain_large.empty or ghosts.empty or large <= REFERENCE_BATCH:
        return runs.inconclusive(STATISTIC, f"needs plain BN and ghost BN runs at the largest batch ({large}), above "
                                            f"batch {REFERENCE_BATCH}")
    a_plain, dv, lo = acc_values(plain_large, "test_acc")
    a_small, dv64, lo64 = acc_values(_plain_bn(df, REFERENCE_BATCH), "test_acc")
    details = [f"plain BN at batch {large}: {np.mean(a_plain):.2f}% (n={len(a_plain)}){counts_note(dv, lo)}"]
    series = {f"BN@{large}": a_plain}
    small_gap = welch_difference(a_small, a_plain) if a_small else None
    gap_clear = small_gap is not None and verdict_of(small_gap, runs.claim.margin) == SUPPORTED
    if a_small:
        series[f"BN@{REFERENCE_BATCH}"] = a_small
        details += [f"BN at batch {REFERENCE_BATCH}: {np.mean(a_small):.2f}% (n={len(a_small)})"
                    f"{counts_note(dv64, lo64)}",
                    f"BN at batch {REFERENCE_BATCH} minus plain BN at {large}: {with_interval(small_gap)}: "
                    f"{verdict_of(small_gap, runs.claim.margin)}"
                    + ("" if gap_clear else ", so no share of it is computed")]
    settings, lines = _ghost_sizes(ghosts, a_plain, small_gap if gap_clear else None, large, series,
                                   runs.claim.margin)
    details += lines
    figure = draw("C7", out, lambda: _figure(series), details)
    if not settings:
        return runs.inconclusive(STATISTIC, f"no ghost BN run at batch {large} has a test accuracy", figure=figure,
                                 details=details)
    label, d = headline(settings)
    if not gap_clear:
        gap = (f"BN at batch {REFERENCE_BATCH} minus plain BN at batch {large} is {with_interval(small_gap)}, "
               f"{verdict_of(small_gap, runs.claim.margin)} against the claim's margin of {runs.claim.margin:g} "
               "points" if small_gap is not None else f"there are no plain BN runs at batch {REFERENCE_BATCH}")
        return runs.premise_not_met(
            STATISTIC, f"No small-batch result to recover: {gap}, so ghost BN at batch {large} has no gap to close "
                       f"(the claim presupposes one). For the record, {label} minus plain BN at batch {large}: "
                       f"{with_interval(d)}. {DIVERGED_NOTE}. Figure: test accuracy per arm, one point per seed, "
                       "mean and 95% t-interval.", interval=d, unit="points", n=n_text([d.n_a, d.n_b], "seeds per arm"),
            figure=figure, details=details)
    evidence = (f"At batch {large}, {label} (least favourable of {len(settings)}) minus plain BN: "
                f"{with_interval(d)}; verdict combined over ghost sizes. {DIVERGED_NOTE}. Figure: test accuracy per "
                "arm, one point per seed, mean and 95% t-interval.")
    return runs.combined(STATISTIC, settings, interval=d, unit="points",
                       n=n_text([d.n_a, d.n_b], "seeds per arm"), evidence=evidence, figure=figure, details=details)


def _ghost_sizes(ghosts: pd.DataFrame, a_plain: list[float], small_gap: Optional[Difference], large: int,
                 series: dict[str, list[float]], margin: float) -> tuple[list[tuple[str, Difference, str]], list[str]]:
    """Per ghost size at the large batch: (label, minus plain BN, verdict) and its detail line, with the share
    of the small-batch gap it recovers where that gap is clear (`small_gap`); adds its accuracies to `series`."""
    settings, details = [], []
    for g, h in ghosts.groupby("ghost"):
        vals, dvg, log_ = acc_values(h, "test_acc")
        if not vals:
            continue
        d = welch_difference(vals, a_plain)
        v = verdict_of(d, margin)
        settings.append((f"ghost size {int(g)}", d, v))
        series[f"ghost {int(g)}@{large}"] = vals
        share = ""
        if small_gap is not None:
            share = (f"; recovers {100 * (np.mean(vals) - np.mean(a_plain)) / small_gap.diff:.0f}% of the gap from "
                     f"plain BN@{large} to BN@{REFERENCE_BATCH} ({small_gap.diff:+.2f} points)")
        details.append(f"ghost size {int(g)} at batch {large}: {np.mean(vals):.2f}%, minus plain BN "
                       f"{with_interval(d)}: {v}{share}{counts_note(dvg, log_)}")
    return settings, details


def _plain_bn(df: pd.DataFrame, batch: int) -> pd.DataFrame:
    """Plain BN at `batch`: norm batch, or ghost with a ghost size >= the batch (one chunk). Runs that differ
    only in an unused ghost size are one model: one record per seed (collect.counted_as)."""
    plain = df[((df.norm == "batch") | (df.ghost >= df.batch_size)) & (df.batch_size == batch)]
    return plain[counted_as(plain, ["seed"]) == plain.index]


def _figure(series: dict[str, list[float]]) -> Figure:
    fig, ax = panel()
    colors = palette(["batch", "none", "ghost"])
    for i, (name, vals) in enumerate(series.items()):
        color = colors["batch"] if name.startswith("BN") else colors["ghost"]
        ax.scatter([i] * len(vals), vals, color=color, s=14, alpha=0.6)
        lo, hi = interval_bounds(vals)
        m = float(np.mean(vals))
        ax.errorbar([i + 0.15], [m], yerr=[[m - lo], [hi - m]], fmt="o", color=color, capsize=3)
    clamp_axis(ax)
    ax.set_xticks(range(len(series)), list(series), fontsize=8)
    label_axes(ax, "arm (norm @ batch size)", "test accuracy (%)",
          "C7: ghost BN at large batch vs plain BN\n(dots: seeds; bars: mean and 95% t interval over seeds)")
    return fig
