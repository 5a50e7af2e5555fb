"""C17: BN's accuracy advantage at C1's fixed budget carries to conv nets (BatchNorm2d).

Runs: the cnn preset (the notebook grid of C1 on `model=cnn`: no norm vs
BatchNorm2d at batch 8, 64 and 512, lr 0.01, 5 epochs), or a sweep without
a preset whose runs are all conv nets of both arms (`python study/run.py -m
model=cnn batch_size=8,64,512` answers it in its own report). Statistic: per
batch size, BN minus no-norm test accuracy (Welch over seeds); the verdict
combines the batch sizes and the headline is the least favourable one. The
details add C1's reading on the conv net (BN's advantage at the largest
batch minus at the smallest) and, where the notebook preset ran too, the
MLP's advantage at the same batch sizes. Figure: test accuracy vs batch size
per arm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, label_axes, mean_band, panel
from analysis.claims.result import ClaimResult
from analysis.claims.rule import headline, verdict_of
from analysis.claims.runs import DIVERGED_NOTE, ClaimRuns, ExperimentRuns, acc_values, counts_note, families, runs_table
from analysis.figures import log2_batch_axis, palette
from analysis.stats import Difference, contrast, welch_difference
from analysis.summary import norm_name, norm_order
from analysis.text import n_text, with_interval

LITERATURE = ("Ioffe & Szegedy 2015 (Inception, ImageNet): BN's accuracy in 14x fewer steps (with a 5x lr); "
              "Santurkar et al. 2018 (VGG, CIFAR-10, SGD lr 0.1, batch 128): 83% with BN vs 80% without")
STATISTIC = "BN minus no-norm test accuracy of the conv net at each batch size, in points, expected > 0"


def tests_plain_sweep(exp: ExperimentRuns) -> bool:
    return families(exp) == {"cnn"} and {"none", "batch"} <= set(exp.runs.norm.dropna())


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    df = _table(runs.need("cnn"))
    sizes = sorted(set(df[df.norm == "batch"].batch_size) & set(df[df.norm == "none"].batch_size))
    if not sizes:
        return runs.inconclusive(STATISTIC, "needs conv-net runs of BN and no norm at a shared batch size",
                                 unit="points")
    diffs, details = _advantages(df, sizes)
    if not diffs:
        return runs.inconclusive(STATISTIC, "no batch size has completed runs of both arms", unit="points")
    settings = [(f"batch {b}", d, verdict_of(d, runs.claim.margin)) for b, d in diffs.items()]
    label, c = headline(settings)
    lr = ", ".join(f"{v:g}" for v in sorted(df.lr.dropna().unique()))
    evidence = (f"Conv net (lr {lr}): BN minus no norm "
                + "; ".join(f"{with_interval(d)} at batch {b}" for b, d in diffs.items())
                + f"; headline: the least favourable, {label}. {DIVERGED_NOTE}. Figure: test accuracy vs batch "
                  "size per arm, mean and 95% t-interval over seeds.")
    if len(diffs) >= 2:
        lo, hi = min(diffs), max(diffs)
        details.append(f"C1 on the conv net: BN's advantage at batch {hi} minus at batch {lo}: "
                       f"{with_interval(contrast(diffs[hi], diffs[lo]))}")
    details += _mlp_beside(runs, sizes)
    figure = draw("C17", out, lambda: _figure(df), details)
    n = n_text([x for d in diffs.values() for x in (d.n_a, d.n_b)], "seeds per arm and batch size")
    return runs.combined(STATISTIC, settings, interval=c, unit="points", n=n,
                       evidence=evidence, figure=figure, details=details)


def _table(exp: Any) -> pd.DataFrame:
    df = runs_table(exp)
    return df[df.batch_size.notna() & df.norm.isin(["none", "batch"])]


def _advantages(df: pd.DataFrame, sizes: list[float]) -> tuple[dict[int, Difference], list[str]]:
    """Per batch size: BN minus no norm test accuracy (points, Welch) and a detail line."""
    diffs: dict[int, Difference] = {}
    details = []
    for b in sizes:
        bn, d1, l1 = acc_values(df[(df.norm == "batch") & (df.batch_size == b)], "test_acc")
        none, d2, l2 = acc_values(df[(df.norm == "none") & (df.batch_size == b)], "test_acc")
        if not bn or not none:
            continue
        d = welch_difference(bn, none)
        diffs[int(b)] = d
        details.append(f"batch {int(b)}: BN {sum(bn) / len(bn):.2f}%, no norm {sum(none) / len(none):.2f}%, "
                       f"difference {with_interval(d)}{counts_note(d1 + d2, l1 + l2)}")
    return diffs, details


def _mlp_beside(runs: ClaimRuns, sizes: list[float]) -> list[str]:
    """The MLP's BN advantage at the same batch sizes, where the notebook preset ran here."""
    mlp = runs.get("notebook")
    if mlp is None:
        return []
    df = _table(mlp)
    diffs, _ = _advantages(df, [b for b in sizes if b in set(df.batch_size)])
    return [f"beside it, the MLP (notebook preset) at batch {b}: BN minus no norm {with_interval(d)}"
            for b, d in diffs.items()]


def _figure(df: pd.DataFrame) -> Figure:
    fig, ax = panel()
    pal = palette(df.norm.dropna())
    for norm in norm_order(df.norm.dropna()):
        sizes = sorted(df[df.norm == norm].batch_size.unique())
        groups = [acc_values(df[(df.norm == norm) & (df.batch_size == b)], "test_acc")[0] for b in sizes]
        mean_band(ax, list(sizes), groups, pal[norm], norm_name(norm), bars=True)
    log2_batch_axis(ax, df.batch_size)
    clamp_axis(ax)
    label_axes(ax, "batch size", "test accuracy (%)", "C17: conv net, test accuracy vs batch size (95% t-interval)")
    return fig
