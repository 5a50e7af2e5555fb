"""C6: BN's train/inference discrepancy, worse under a shifted test set.

Runs: the shift preset (batch 2..512, both arms, probes `modes` and
`shift`). Two parts, both needed for 'supported': (a) BN's test-accuracy gap
|eval mode - train mode| at the smallest batch size minus at the largest;
(b) at each batch size, BN's accuracy on a shifted test set with statistics
recomputed on it minus with its running statistics. Figure: the gap vs batch
size per arm; shifted-test accuracies per batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, errorbar, legend
from analysis.claims.probe_tables import counted, left_out, probe_finals
from analysis.claims.result import ClaimResult
from analysis.claims.rule import INCONCLUSIVE, combine, verdict_of
from analysis.claims.runs import ClaimRuns, column
from analysis.figures import grid, log2_batch_axis, palette
from analysis.stats import Difference, mean_interval, welch_difference
from analysis.summary import norm_name
from analysis.text import bracketed, short, signed

LITERATURE = ("Ioffe 2017 (Batch Renorm) and Wu & He 2018: small batches make BN's batch statistics "
              "inaccurate, so training and inference disagree")
STATISTIC = ("BN's test-accuracy gap |eval mode - train mode| at the smallest batch size minus at the "
             "largest, in points (Welch), expected > 0; with, at each batch size, BN's shifted-test accuracy "
             "with recomputed minus running statistics, expected > 0 (the verdict combines both parts)")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    finals = probe_finals(runs.need("shift").records)
    note, ok = left_out(finals), counted(finals)
    bn, none = (_with_gaps(ok[ok.norm.astype(str) == arm]) for arm in ("batch", "none"))
    if bn.empty:
        return runs.inconclusive(STATISTIC, "no completed BN run here, so there is no train/eval-mode discrepancy "
                                            "to measure" + note, unit="points")
    v_a, part_a, d_a, n, details = _part_a(bn, none, runs.claim.margin)
    v_b, part_b, lines = _part_b(bn, none, runs.claim.margin)
    verdict = combine([v_a, v_b])
    details += lines + [f"verdict: (a) {v_a}, (b) {v_b} -> {verdict} (supported only when both parts are)"]
    evidence = (f"{part_a}; {part_b}. {_budget(ok)}Figure: left, the gap vs batch size per arm; right, shifted-test "
                "accuracy with running vs recomputed statistics and clean accuracy, per batch size "
                f"(means over seeds, 95% t-intervals){note}.")
    figure = draw("C6", out, lambda: _figure(bn, none), details)
    return runs.result(verdict, STATISTIC, interval=d_a, unit="points", n=n, evidence=evidence, figure=figure,
                       details=details)


def _budget(df: pd.DataFrame) -> str:
    """The training length, read from the runs: the gap's size depends on it (it falls with training)."""
    epochs = pd.to_numeric(column(df, "epochs"), errors="coerce").dropna().unique()
    if len(epochs) != 1:
        return ""
    e = int(epochs[0])
    return (f"Read after {e} epoch{'s' if e != 1 else ''}: the gap's size falls with training, the verdict "
            "does not (the budget pilot, docs/claims.md#budgets). ")


def _with_gaps(df: pd.DataFrame) -> pd.DataFrame:
    """An arm's runs with the train/eval-mode gap, the gain from recomputed statistics and the shift's cost (points)."""
    return df.assign(gap=100 * (df.eval_mode_acc - df.train_mode_acc).abs(),
                     recompute_gain=100 * (df.recomputed_acc - df.running_acc),
                     shift_loss=100 * (df.clean_acc - df.running_acc))


def _part_a(bn: pd.DataFrame, none: pd.DataFrame,
            margin: float) -> tuple[str, str, Optional[Difference], str, list[str]]:
    """(a) BN's gap at the smallest batch minus at the largest: verdict, its sentence, the difference, its n,
    details."""
    with_gap = bn[np.isfinite(bn.gap)]
    batches = sorted(int(b) for b in with_gap.batch_size.dropna().unique())
    means = {b: mean_interval(with_gap[with_gap.batch_size == b].gap) for b in batches}
    details = []
    for b in batches:
        ctrl = mean_interval(none[none.batch_size == b].gap)
        details.append(f"(a) batch {b}: BN |eval - train mode| gap {bracketed(means[b])} points"
                       + (f"; no norm (no batch statistics, a control) {bracketed(ctrl)}" if ctrl.n else ""))
    if len(batches) < 2:
        text = ("BN's train/eval-mode gap was measured at fewer than two batch sizes "
                f"({', '.join(map(str, batches)) or 'none'}), so its trend with batch size is unknown")
        return INCONCLUSIVE, text, None, "", details + ["(a) inconclusive: " + text]
    small, large = batches[0], batches[-1]
    d = welch_difference(with_gap[with_gap.batch_size == small].gap, with_gap[with_gap.batch_size == large].gap)
    v = verdict_of(d, margin)
    text = (f"BN's train/eval-mode gap is {short(means[small].mean)} points at batch {small} and "
            f"{short(means[large].mean)} at batch {large} (difference {bracketed(d)}: {v})")
    n = (f"{d.n_a} BN seeds at batch {small}, {d.n_b} at batch {large}" if d.n_a != d.n_b
         else f"{d.n_a} BN seeds per batch size")
    return v, text, d, n, details + [f"(a) gap at batch {small} minus at batch {large}: {bracketed(d)} points -> {v}"]


def _part_b(bn: pd.DataFrame, none: pd.DataFrame, margin: float) -> tuple[str, str, list[str]]:
    """(b) per batch size, BN's shifted accuracy with recomputed minus running statistics."""
    verdicts, gains, details = [], [], []
    for b in sorted(int(x) for x in bn.batch_size.dropna().unique()):
        g, ctrl = bn[bn.batch_size == b], none[none.batch_size == b]
        m = mean_interval(g.recompute_gain)
        if m.n == 0:
            continue
        verdicts.append(verdict_of(m, margin))
        gains.append(f"{signed(m.mean)} points at batch {b}")
        details.append(f"(b) batch {b}: BN shifted accuracy, recomputed minus running statistics {bracketed(m)} "
                       f"points -> {verdicts[-1]}; accuracy lost to the shift (clean - shifted with running "
                       f"statistics): BN {bracketed(mean_interval(g.shift_loss))}, no norm "
                       f"{bracketed(mean_interval(ctrl.shift_loss))}, BN minus no norm "
                       f"{bracketed(welch_difference(g.shift_loss, ctrl.shift_loss))}")
    if not verdicts:
        text = "no BN run recorded the shifted test set with both running and recomputed statistics"
        return INCONCLUSIVE, text, ["(b) inconclusive: " + text]
    v = combine(verdicts)
    return v, (f"on the shifted test set, recomputing BN's statistics changes its accuracy by {', '.join(gains)} "
               f"({v} over the batch sizes)"), details


def _figure(bn: pd.DataFrame, none: pd.DataFrame) -> Optional[Figure]:
    all_b = sorted({int(b) for b in pd.concat([bn.batch_size, none.batch_size]).dropna()})
    if not all_b:
        return None
    fig, axes = grid(1, 2, w=4.0, h=2.8)
    colors = palette(["batch", "none"])
    ax = axes[0, 0]
    for arm, df in (("none", none), ("batch", bn)):
        bs = [b for b in all_b if mean_interval(df[df.batch_size == b].gap).n]
        if bs:
            errorbar(ax, bs, [mean_interval(df[df.batch_size == b].gap) for b in bs], color=colors[arm],
                     marker="o", label=norm_name(arm))
    log2_batch_axis(ax, all_b)
    clamp_axis(ax)
    ax.set(xlabel="batch size", ylabel="|eval - train mode| test acc. (points)", title="train/inference gap")
    legend(ax, fontsize=8)
    ax = axes[0, 1]
    lines = [("batch", bn, "clean_acc", ":", "s", "clean"), ("batch", bn, "running_acc", "-", "o", "shifted, running"),
             ("batch", bn, "recomputed_acc", "--", "^", "shifted, recomputed"),
             ("none", none, "clean_acc", ":", "s", "clean"), ("none", none, "running_acc", "-", "o", "shifted")]
    for arm, df, col, ls, marker, what in lines:
        ms = {b: mean_interval(100 * df[df.batch_size == b][col]) for b in all_b}
        bs = [b for b in all_b if ms[b].n]
        if bs:
            errorbar(ax, bs, [ms[b] for b in bs], color=colors[arm], ls=ls, marker=marker,
                     label=f"{norm_name(arm)}: {what}")
    log2_batch_axis(ax, all_b)
    clamp_axis(ax)
    ax.set(xlabel="batch size", ylabel="test accuracy (%)", title="shifted test set")
    legend(ax, fontsize=7)
    fig.suptitle("C6: mean over seeds, bars: 95% t interval over seeds (cut at the axis)", fontsize=9)
    return fig
