"""C5: small batches hurt BN but not LayerNorm, GroupNorm or no norm.

Runs: the small_batch preset (batch 2..64 x four norms, lr = 0.01 x B/64
at an equal epoch budget: equal lr x steps at every batch size, as Wu & He
scaled theirs, so a small batch does not also get 32x the total step
length). Statistic: BN's rise in test error from the reference batch (64)
to the smallest batch minus the largest such rise among the other norms.
The details give the same contrast at every smaller batch (where the rise
starts) and the lr each batch size ran at. Figure: test error vs batch size
per norm.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, label_axes, mean_band, panel
from analysis.claims.result import ClaimResult
from analysis.claims.rule import verdict_of
from analysis.claims.runs import DIVERGED_NOTE, ClaimRuns, acc_values, column, counts_note, runs_table
from analysis.figures import log2_batch_axis, palette
from analysis.stats import Difference, contrast, welch_difference
from analysis.summary import norm_name, norm_order
from analysis.text import n_text, with_interval

LITERATURE = ("Wu & He 2018 (ResNet-50, ImageNet): BN top-1 error 23.6/23.7/24.8/27.3/34.7 at 32/16/8/4/2 "
              "images per GPU; GroupNorm 24.1/24.2/24.0/24.2/24.1")
REFERENCE_BATCH = 64
STATISTIC = ("BN's rise in test error from the reference batch to the smallest batch minus the largest such "
             "rise among the other norms, in points, expected > 0")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    df = runs_table(runs.need("small_batch"))
    df = df[df.batch_size.notna()]
    norms = norm_order(df.norm.dropna())
    others = [n for n in norms if n != "batch"]
    if "batch" not in norms or not others:
        return runs.inconclusive(STATISTIC, "needs BN and at least one other norm")
    sizes = sorted(set(df[df.norm == "batch"].batch_size) & set(df[df.norm.isin(others)].batch_size))
    if len(sizes) < 2:
        return runs.inconclusive(STATISTIC, "needs two batch sizes shared by BN and another norm")
    small = int(sizes[0])
    ref = REFERENCE_BATCH if REFERENCE_BATCH in sizes else int(sizes[-1])
    rises, details = _rises(df, norms, small, ref)
    details.append("mean test error (%) by batch size: " + "; ".join(_errors(df, n) for n in norms))
    details.append(_lrs(df))
    details += _contrast_by_batch(df, norms, sizes, ref)
    figure = draw("C5", out, lambda: _figure(df), details)
    other = [n for n in others if n in rises and math.isfinite(rises[n].diff)]
    if "batch" not in rises or not other:
        return runs.inconclusive(STATISTIC, f"BN or every other norm lacks runs at batch {small} and {ref}",
                                 figure=figure, details=details)
    worst = max(other, key=lambda n: rises[n].diff)
    c = contrast(rises["batch"], rises[worst])
    evidence = (f"{_schedule(df, ref)} From batch {ref} to {small}, BN's test error rises by {with_interval(rises['batch'])}; the "
                f"largest rise among the other norms is {norm_name(worst)}'s, {with_interval(rises[worst])}; BN's "
                f"rise minus it: {with_interval(c)}. {DIVERGED_NOTE}. Figure: test error vs batch size per norm (log2 "
                "axis), mean and 95% t-interval over seeds.")
    return runs.result(verdict_of(c, runs.claim.margin), STATISTIC, interval=c, unit="points",
                       n=n_text([c.n_a, c.n_b], "seeds per cell (smallest)"), evidence=evidence, figure=figure,
                       details=details)


def _schedule(df: pd.DataFrame, ref: int) -> str:
    """How the lr was set across batch sizes, read from the runs: linearly scaled (equal lr x steps per epoch
    budget) or fixed (then a small batch also takes more total step length: the old design's confound)."""
    per = df.dropna(subset=["batch_size", "lr"]).groupby("batch_size").lr.median()
    if len(per) < 2 or ref not in per.index:
        return ""
    if np.allclose(per.values, per[ref] * per.index.values / ref, rtol=1e-6):
        steps = pd.to_numeric(column(df, "steps"), errors="coerce").dropna()
        budget = (f"at a budget of {int(steps.max())} steps, so not equal lr x steps (a smoke-test budget)"
                  if len(steps) else "equal lr x steps at every batch size")
        return f"lr scaled with the batch size (lr = {per[ref]:g} x B/{ref}: {budget})."
    if np.allclose(per.values, per[ref], rtol=1e-6):
        return (f"lr fixed at {per[ref]:g}: a small batch also takes more steps of the same size (a step-count "
                "confound; the preset now scales the lr).")
    return "lr set per batch size (details)."


def _rises(df: pd.DataFrame, norms: list[Any], small: int, ref: int) -> tuple[dict[Any, Difference], list[str]]:
    """Per norm: test error at the small batch minus at the reference batch (Welch), and its detail lines."""
    rises: dict[Any, Difference] = {}
    details = [] if ref == REFERENCE_BATCH else [f"no batch {REFERENCE_BATCH}: the reference is batch {ref}"]
    for norm in norms:
        a_small, dv1, lo1 = acc_values(df[(df.norm == norm) & (df.batch_size == small)], "test_acc")
        a_ref, dv2, lo2 = acc_values(df[(df.norm == norm) & (df.batch_size == ref)], "test_acc")
        if not a_small or not a_ref:
            details.append(f"{norm_name(norm)}: no runs at batch {small} or {ref}")
            continue
        rises[norm] = welch_difference([100 - a for a in a_small], [100 - a for a in a_ref])
        details.append(f"{norm_name(norm)}: error at batch {small} minus at {ref}: {with_interval(rises[norm])}"
                       f"{counts_note(dv1 + dv2, lo1 + lo2)}")
    return rises, details


def _contrast_by_batch(df: pd.DataFrame, norms: list[Any], sizes: list[float], ref: int) -> list[str]:
    """The headline's contrast at every batch size below the reference: where BN's excess rise starts."""
    parts = []
    for b in sizes:
        if b >= ref:
            continue
        rises, _ = _rises(df, norms, int(b), ref)
        other = [n for n in rises if n != "batch" and math.isfinite(rises[n].diff)]
        if "batch" in rises and other:
            worst = max(other, key=lambda n: rises[n].diff)
            parts.append(f"{with_interval(contrast(rises['batch'], rises[worst]))} at batch {int(b)} "
                         f"(vs {norm_name(worst)})")
    if not parts:
        return []
    return [f"BN's rise minus the largest other rise, from batch {ref} to each smaller batch, in points: "
            + "; ".join(parts)]


def _lrs(df: pd.DataFrame) -> str:
    """The learning rates the runs trained at, per batch size (the preset's linear scaling, or not)."""
    by_batch = df.dropna(subset=["batch_size"]).groupby("batch_size").lr.unique()
    text = "; ".join(f"{'/'.join(f'{v:g}' for v in sorted(lrs))} at batch {int(b)}" for b, lrs in by_batch.items())
    return f"lr: {text}"


def _errors(df: pd.DataFrame, norm: Any) -> str:
    errs = []
    for b in sorted(df.batch_size.unique()):
        v, _, _ = acc_values(df[(df.norm == norm) & (df.batch_size == b)], "test_acc")
        if v:
            errs.append(f"{100 - float(np.mean(v)):.2f}@{int(b)}")
    return f"{norm_name(norm)} {' / '.join(errs)}"


def _figure(df: pd.DataFrame) -> Figure:
    fig, ax = panel()
    pal = palette(df.norm.dropna())
    for norm in norm_order(df.norm.dropna()):
        sizes = sorted(df[df.norm == norm].batch_size.unique())
        groups = [[100 - a for a in acc_values(df[(df.norm == norm) & (df.batch_size == b)], "test_acc")[0]]
                  for b in sizes]
        mean_band(ax, list(sizes), groups, pal[norm], norm_name(norm), bars=True)
    log2_batch_axis(ax, df.batch_size)
    clamp_axis(ax)
    label_axes(ax, "batch size", "test error (%)",
          "C5: test error vs batch size (95% t-interval over seeds)")
    return fig
