"""C16: does BN fit a recurrent net? Four rows, one per question, on the LSTM.

Runs: the rnn preset (MNIST read row by row, 28 steps of 28 pixels, one
LSTM layer of 100 units; arms nn.LSTM, BN-LSTM with per-step statistics,
BN-LSTM with shared statistics, LN-LSTM; batch 8 and 128, an equal step
budget) and, where it ran, rnn_permuted (LSTM and BN-LSTM at batch 128 on
permuted pixels). Each row of CLAIMS (C16, C16b, C16c, C16d) calls `evaluate`, which
answers that row's question (`PARTS`):

- C16: BN-LSTM minus LSTM test accuracy at batch 128, on rows and (where
  run) permuted pixels, expected > 0; the verdict combines the two. Details:
  the same after the first epoch (convergence; where the budget is longer
  than an epoch), at batch 8, and the shared-statistics arm.
- C16b: BN-LSTM's seconds per training step relative to the LSTM's, minus
  1, in percent, at each batch size, expected > 0. A run's seconds per step
  are its training seconds over its steps divided by its pack's size: the
  members of a cnn/lstm pack run one after the other (study/models/pack.py: LoopedPack).
- C16c: BN-LSTM's |eval mode - train mode| test-accuracy gap (probe
  `modes`: population statistics vs the batch statistics of test chunks of
  the training batch size) at batch 8 minus at batch 128, expected > 0.
- C16d: LN-LSTM minus BN-LSTM test accuracy at each batch size, expected
  > 0 (LayerNorm as good or better); the verdict combines the batch sizes.
  The rule has no equivalence reading: an interval across zero is
  inconclusive, and the evidence gives its bounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, errorbar, label_axes, panel
from analysis.claims.result import ClaimResult
from analysis.claims.rule import NON_INFERIORITY, combine, headline, verdict_of
from analysis.claims.runs import (DIVERGED_NOTE, ClaimRuns, ExperimentRuns, acc_values, config_of, counts_note, norm_of,
                                  seed_of)
from analysis.collect import finite, num
from analysis.figures import log2_batch_axis, palette
from analysis.stats import Difference, mean_interval, relative_difference, welch_difference
from analysis.summary import norm_order
from analysis.text import bracketed, n_text, with_interval

LITERATURE = ("Cooijmans et al. 2016: pixel MNIST LSTM 98.9% / BN-LSTM 99.0%, permuted 90.2% / 95.4%, BN-LSTM "
              "converging faster; Laurent et al. 2016: faster training, no generalization gain; one reproduction: "
              "a BN-LSTM step 4x an LSTM's")
ARM_NAMES = {"none": "LSTM", "batch": "BN-LSTM", "batch_shared": "BN-LSTM (shared statistics)", "layer": "LN-LSTM"}
BIG, SMALL = 128, 8  # the preset's batch sizes; the largest and smallest present are used

STATISTICS = {
    "C16": "BN-LSTM minus LSTM test accuracy at the largest batch (rows; permuted pixels where run), in points, "
           "expected > 0",
    "C16b": "BN-LSTM's seconds per training step relative to the LSTM's, minus 1, in percent, per batch size, "
            "expected > 0",
    "C16c": "BN-LSTM's |eval mode - train mode| test-accuracy gap at the smallest batch minus at the largest, "
            "in points, expected > 0",
    "C16d": "LN-LSTM minus BN-LSTM test accuracy per batch size, in points; 'as well as' is a non-inferiority "
            "claim: supported when the interval lies above minus the margin",
}


def arm(norm: Any) -> str:
    return ARM_NAMES.get(str(norm), f"norm={norm}")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    rows = table(runs.need("rnn"))
    permuted = runs.get("rnn_permuted")
    if permuted is not None:
        rows = pd.concat([rows, table(permuted)], ignore_index=True)
    return PARTS[runs.claim.id](runs, rows, out)


def table(exp: ExperimentRuns) -> pd.DataFrame:
    """One row per run of a recurrent preset: its arm, batch size, pixel order, accuracies, cost and modes."""
    out = []
    for rec in exp.records:
        cfg = config_of(rec)
        data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
        hist = [h for h in (rec.get("history") or []) if isinstance(h, dict)]
        final = rec.get("final") or {}
        modes = ((rec.get("probes") or {}).get("final") or {}).get("modes") or {}
        steps = num(final.get("step"))
        pack = num(hist[-1].get("pack_size")) if hist else np.nan
        seconds = sum(num(h.get("epoch_seconds")) for h in hist) if hist else np.nan
        out.append({
            "status": rec.get("status"), "norm": str(norm_of(rec)), "seed": seed_of(rec),
            "batch_size": num(cfg.get("batch_size")), "permuted": bool(data.get("permute", False)),
            "test_acc": num(final.get("test_acc")), "steps": steps,
            "first_step": num(hist[0].get("step")) if hist else np.nan,
            "first_test_acc": num(hist[0].get("test_acc")) if hist else np.nan,
            "ms_per_step": 1000 * seconds / steps / pack if finite(steps) and steps > 0 and finite(pack) else np.nan,
            "gap": 100 * abs(num(modes.get("eval_mode_acc")) - num(modes.get("train_mode_acc"))),
            "train_mode_acc": num(modes.get("train_mode_acc")),
        })
    df = pd.DataFrame(out, columns=["status", "norm", "seed", "batch_size", "permuted", "test_acc", "steps",
                                    "first_step", "first_test_acc", "ms_per_step", "gap", "train_mode_acc"])
    return df[df.batch_size.notna()]


def _cell(df: pd.DataFrame, norm: str, batch: float, permuted: bool = False) -> pd.DataFrame:
    return df[(df.norm == norm) & (df.batch_size == batch) & (df.permuted == permuted)]


def _acc_diff(df: pd.DataFrame, a: str, b: str, batch: float, permuted: bool = False,
              metric: str = "test_acc") -> Optional[tuple[Difference, str]]:
    """Arm a minus arm b accuracy (points, Welch) in one cell, and its counts note; None without runs of both."""
    va, d1, l1 = acc_values(_cell(df, a, batch, permuted), metric)
    vb, d2, l2 = acc_values(_cell(df, b, batch, permuted), metric)
    if not va or not vb:
        return None
    return welch_difference(va, vb), counts_note(d1 + d2, l1 + l2)


def _sizes(df: pd.DataFrame) -> list[float]:
    return sorted(df[~df.permuted].batch_size.unique())


def _where(batch: float, permuted: bool) -> str:
    return f"batch {int(batch)}, {'permuted pixels' if permuted else 'rows'}"


# ------------------------------------------------------------------ C16: accuracy and convergence
def _accuracy(runs: ClaimRuns, df: pd.DataFrame, out: Path) -> ClaimResult:
    stat = STATISTICS["C16"]
    sizes = _sizes(df)
    if not sizes:
        return runs.inconclusive(stat, "no LSTM runs on rows here", unit="points")
    big = sizes[-1]
    settings, details = [], []
    for permuted in (False, True):
        got = _acc_diff(df, "batch", "none", big, permuted)
        if got is None:
            continue
        d, note = got
        settings.append((_where(big, permuted), d, verdict_of(d, runs.claim.margin)))
        details.append(f"{_where(big, permuted)}: BN-LSTM minus LSTM {with_interval(d)}{note}")
        first = _acc_diff(df, "batch", "none", big, permuted, "first_test_acc")
        cell = _cell(df, "batch", big, permuted)
        step = cell.first_step.min()
        if first is not None and finite(step) and step < cell.steps.max():  # one evaluation: nothing earlier
            details.append(f"{_where(big, permuted)}, after the first epoch (step {int(step)}): "
                           f"{with_interval(first[0])}")
    if not settings:
        return runs.inconclusive(stat, f"needs BN-LSTM and LSTM runs at batch {int(big)}", unit="points")
    for b in sizes[:-1]:
        got = _acc_diff(df, "batch", "none", b)
        if got is not None:
            details.append(f"{_where(b, False)}: BN-LSTM minus LSTM {with_interval(got[0])}{got[1]}")
    batch_stats = _acc_diff(df, "batch", "none", big, False, "train_mode_acc")
    if batch_stats is not None:
        details.append(f"{_where(big, False)}: BN-LSTM with batch statistics at test (train mode, probe modes) "
                       f"minus LSTM {with_interval(batch_stats[0])}: what BN-LSTM's weights reach before its "
                       "population statistics (C16c)")
    shared = _acc_diff(df, "batch_shared", "batch", big)
    if shared is not None:
        details.append(f"{_where(big, False)}: shared minus per-step statistics (the same training; only the "
                       f"population statistics differ) {with_interval(shared[0])}")
    label, c = headline(settings)
    evidence = ("; ".join(f"{w}: BN-LSTM minus LSTM test accuracy {with_interval(d)}" for w, d, _ in settings)
                + f"; headline: the least favourable, {label}. {_budget(df)} {DIVERGED_NOTE}. Figure: final test "
                  f"accuracy per arm at batch {int(big)}, with population and (BN arms) batch statistics.")
    figure = draw("C16", out, lambda: _accuracy_figure(df, big), details)
    n = n_text([x for _, d, _ in settings for x in (d.n_a, d.n_b)])
    return runs.result(combine(v for *_, v in settings), stat, interval=c, unit="points", n=n, evidence=evidence,
                       figure=figure, details=details)


def _budget(df: pd.DataFrame) -> str:
    steps = sorted({int(s) for s in df.steps.dropna()})
    return f"Budget: {' or '.join(map(str, steps))} steps at every batch size." if steps else ""


def _accuracy_figure(df: pd.DataFrame, big: float) -> Figure:
    """Final test accuracy per arm at the largest batch, on rows (circles) and permuted pixels (squares);
    hollow: the BN arms with batch statistics at test (probe `modes`)."""
    from matplotlib.lines import Line2D

    fig, ax = panel()
    ok = df[(df.status == "completed") & (df.batch_size == big)]
    arms = norm_order(set(ok.norm))
    pal = palette(arms)
    for permuted, marker, dx in ((False, "o", -0.12), (True, "s", 0.12)):
        for i, a in enumerate(arms):
            c = _cell(ok, a, big, permuted)
            if c.empty:
                continue
            errorbar(ax, [i + dx], [mean_interval(100 * c.test_acc.dropna())], color=pal[a], marker=marker,
                     linestyle="none")
            batch_stats = 100 * c.train_mode_acc.dropna()
            if a.startswith("batch") and len(batch_stats):
                errorbar(ax, [i + dx], [mean_interval(batch_stats)], color=pal[a], marker=marker, mfc="none",
                         linestyle="none")
    ax.set_xticks(range(len(arms)), [arm(a).replace(" (", "\n(") for a in arms], fontsize=7)
    ax.set_xlim(-0.6, len(arms) - 0.4)
    grey = "0.35"
    ax.legend(handles=[Line2D([], [], color=grey, marker="o", linestyle="none", label="rows"),
                       Line2D([], [], color=grey, marker="s", linestyle="none", label="permuted pixels"),
                       Line2D([], [], color=grey, marker="o", mfc="none", linestyle="none",
                              label="BN: batch statistics at test")], fontsize=7, frameon=False)
    clamp_axis(ax)
    steps = " or ".join(str(int(s)) for s in sorted(set(ok.steps.dropna())))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"C16: LSTMs at batch {int(big)}, {steps} steps (mean, 95% t-interval over seeds)", fontsize=8)
    return fig


# ------------------------------------------------------------------ C16b: cost per step
def _cost(runs: ClaimRuns, df: pd.DataFrame, out: Path) -> ClaimResult:
    stat = STATISTICS["C16b"]
    ok = df[(df.status == "completed") & np.isfinite(df.ms_per_step) & ~df.permuted]
    settings, details = [], []
    for b in sorted(ok.batch_size.unique()):
        bn, plain = _cell(ok, "batch", b).ms_per_step, _cell(ok, "none", b).ms_per_step
        if bn.empty or plain.empty:
            continue
        d = relative_difference(bn, plain, 100)
        settings.append((f"batch {int(b)}", d, verdict_of(d, runs.claim.margin)))
        others = "; ".join(f"{arm(n)} {_cell(ok, n, b).ms_per_step.mean():.1f} ms"
                           for n in norm_order(ok.norm) if not _cell(ok, n, b).empty)
        details.append(f"batch {int(b)}: BN-LSTM's step {with_interval(d, ' %', 0)} against the LSTM's "
                       f"({bn.mean():.1f} vs {plain.mean():.1f} ms, ratio {bn.mean() / plain.mean():.1f}x); {others}")
    if not settings:
        return runs.inconclusive(stat, "needs completed, timed BN-LSTM and LSTM runs at a shared batch size",
                                 unit="%")
    label, c = headline(settings)
    details.append("per run: training seconds (evaluation and probes left out) over its steps, divided by its "
                   "pack's size (a looped pack runs its members one after the other); machine and load as the "
                   "runs found them")
    parts = "; ".join(f"{with_interval(d, ' %', 0)} at {w}" for w, d, _ in settings)
    evidence = (f"BN-LSTM's step costs more than nn.LSTM's by {parts}; headline: {label}. The BN-LSTM is a "
                "Python loop over the 28 steps, nn.LSTM one fused kernel: the cost includes that, not only BN's "
                "arithmetic.")
    figure = draw("C16b", out, lambda: _per_arm_figure(ok, "ms_per_step", "ms per training step (one run)",
                                                       "C16b: cost per step by arm", log=True), details)
    return runs.result(combine(v for *_, v in settings), stat, interval=c, unit="%",
                       n=n_text([x for _, d, _ in settings for x in (d.n_a, d.n_b)], "runs per arm"),
                       evidence=evidence, figure=figure, details=details)


# ------------------------------------------------------------------ C16c: train/eval discrepancy
def _discrepancy(runs: ClaimRuns, df: pd.DataFrame, out: Path) -> ClaimResult:
    stat = STATISTICS["C16c"]
    ok = df[(df.status == "completed") & np.isfinite(df.gap) & ~df.permuted]
    sizes = sorted(b for b in ok.batch_size.unique() if not _cell(ok, "batch", b).empty)
    details = [f"batch {int(b)}: {arm(n)} gap {bracketed(mean_interval(_cell(ok, n, b).gap))} points"
               for b in sorted(ok.batch_size.unique()) for n in norm_order(ok.norm) if not _cell(ok, n, b).empty]
    if len(sizes) < 2:
        return runs.inconclusive(stat, "needs BN-LSTM runs with the modes probe at two batch sizes", unit="points",
                                 details=details)
    small, big = sizes[0], sizes[-1]
    d = welch_difference(_cell(ok, "batch", small).gap, _cell(ok, "batch", big).gap)
    evidence = (f"BN-LSTM's test accuracy with batch statistics (test chunks of the training batch size) and "
                f"with population statistics differ by {_cell(ok, 'batch', small).gap.mean():.2f} points at batch "
                f"{int(small)} and {_cell(ok, 'batch', big).gap.mean():.2f} at batch {int(big)}: difference "
                f"{with_interval(d)}. LN-LSTM and LSTM have no batch statistics (gap 0 by construction: a control).")
    figure = draw("C16c", out, lambda: _per_arm_figure(ok, "gap", "|eval - train mode| accuracy (points)",
                                                       "C16c: train/eval discrepancy by arm"), details)
    return runs.result(verdict_of(d, runs.claim.margin), stat, interval=d, unit="points",
                       n=n_text([d.n_a, d.n_b], "seeds per batch size"), evidence=evidence, figure=figure,
                       details=details)


# ------------------------------------------------------------------ C16d: LayerNorm instead
def _layer_norm(runs: ClaimRuns, df: pd.DataFrame, out: Path) -> ClaimResult:
    stat = STATISTICS["C16d"]
    settings, details = [], []
    for b in _sizes(df):
        got = _acc_diff(df, "layer", "batch", b)
        if got is None:
            continue
        d, note = got
        settings.append((f"batch {int(b)}", d, verdict_of(d, runs.claim.margin, test=NON_INFERIORITY)))
        details.append(f"batch {int(b)}: LN-LSTM minus BN-LSTM {with_interval(d)}{note}")
        plain = _acc_diff(df, "layer", "none", b)
        if plain is not None:
            details.append(f"batch {int(b)}: LN-LSTM minus LSTM {with_interval(plain[0])}")
    got = _acc_diff(df, "layer", "batch", BIG, True)
    if got is not None:
        details.append(f"permuted pixels, batch {BIG}: LN-LSTM minus BN-LSTM {with_interval(got[0])}")
    if not settings:
        return runs.inconclusive(stat, "needs LN-LSTM and BN-LSTM runs at a shared batch size", unit="points")
    label, c = headline(settings)
    evidence = ("LN-LSTM minus BN-LSTM test accuracy: "
                + "; ".join(f"{with_interval(d)} at {w}" for w, d, _ in settings)
                + f"; headline: the least favourable, {label}. An interval across zero means no difference was "
                  f"resolved, in either direction. {DIVERGED_NOTE}.")
    ok = df[~df.permuted].assign(acc=lambda t: 100 * t.test_acc)
    figure = draw("C16d", out, lambda: _per_arm_figure(ok[ok.status == "completed"], "acc", "test accuracy (%)",
                                                       "C16d: test accuracy by arm and batch size"), details)
    return runs.result(combine(v for *_, v in settings), stat, interval=c, unit="points",
                       n=n_text([x for _, d, _ in settings for x in (d.n_a, d.n_b)]), evidence=evidence,
                       figure=figure, details=details)


def _per_arm_figure(df: pd.DataFrame, col: str, ylabel: str, title: str, log: bool = False) -> Figure:
    fig, ax = panel()
    pal = palette(df.norm)
    for norm in norm_order(df.norm):
        g = df[df.norm == norm]
        xs = sorted(g.batch_size.unique())
        errorbar(ax, xs, [mean_interval(g[g.batch_size == b][col]) for b in xs], color=pal[norm], marker="o",
                 label=arm(norm))
    log2_batch_axis(ax, df.batch_size)
    if log:
        ax.set_yscale("log")
    label_axes(ax, "batch size", ylabel, f"{title} (mean, 95% t-interval over seeds)")
    return fig


PARTS: dict[str, Callable[[ClaimRuns, pd.DataFrame, Path], ClaimResult]] = {
    "C16": _accuracy, "C16b": _cost, "C16c": _discrepancy, "C16d": _layer_norm}
