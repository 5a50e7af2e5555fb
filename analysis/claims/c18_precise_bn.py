"""C18: BN's moving-average statistics vs "precise BN" (statistics recomputed with the final weights).

Runs: the precise_bn preset (BN MLP, batch 2..1024, lr 0.01, one epoch, 16
seeds, probe `precise_bn`). Each run's test accuracy is measured (eval mode)
with the running statistics as trained (the exponential moving average, EMA)
and with statistics recomputed with the frozen final weights from N = 10^2,
10^3, 10^4 training images in normalization batches of the run's batch size
(study/probes.py; as torch.optim.swa_utils.update_bn), and in train mode
(batch statistics of the test set at the run's batch size).

Statistic (the verdict): precise (N = 10^4) minus EMA test accuracy of the
same run, in points, at the smallest batch size, a mean over seeds (paired:
both from one run), expected > 0. The smallest batch is where the EMA is
least accurate by construction: with momentum m each EMA update sees one
batch of B images, so the EMA rests on about B (2 - m) / m images (38 at
B = 2, m = 0.1) while precise BN rests on 10^4. Second line (reported, not
in the verdict): "10^3 samples suffice", precise (10^3) minus precise (10^4)
per batch size, inside plus or minus the claim's margin (Claim.margin, points:
a 95% interval inside it: suffice, as the rule's "no meaningful effect";
wholly outside it: do not). Details per batch size: EMA,
precise at each N, train-mode accuracy, and each difference. Figure: test
accuracy vs batch size (EMA, precise(N), train mode); differences from EMA.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, errorbar, legend
from analysis.claims.probe_tables import counted, left_out, probe_finals
from analysis.claims.result import ClaimResult
from analysis.claims.rule import NON_INFERIORITY, verdict_of, within_margin, zero_width
from analysis.claims.runs import ClaimRuns
from analysis.collect import num
from analysis.figures import grid, log2_batch_axis
from analysis.stats import MeanInterval, mean_interval
from analysis.text import bracketed, short, signed

LITERATURE = ("Wu & Johnson 2021 (Rethinking \"Batch\" in BatchNorm), sec. 3-4: the EMA of BN's statistics can be "
              "inaccurate (it mixes statistics of older weights; unstable in ResNet-50/ImageNet training at batch "
              "8192); precise BN, recomputed with frozen weights, is better or equal, and 10^3-10^4 samples suffice "
              "for it; over normalization batches 2..1024, small batches leave a train/test gap")
STATISTIC = ("precise BN (statistics recomputed with the final weights from 10^4 training images) minus the EMA "
             "running statistics: test accuracy of the same run at the smallest batch size, in points; 'match or beat' is a "
             "non-inferiority claim: supported when the interval lies above minus the margin")
PRESET = "precise_bn"
REFERENCE_N, SUFFICE_N, FEW_N = 10_000, 1_000, 100  # the probe's sample counts (study.probes.PRECISE_SAMPLES)


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    finals = precise_finals(runs.need(PRESET).records)
    note = left_out(finals)
    ok = counted(finals)
    bn = ok[(ok.norm.astype(str) == "batch") & np.isfinite(ok.ema_acc.astype(float))
            & np.isfinite(ok[_col(REFERENCE_N)].astype(float))]
    if bn.empty:
        return runs.inconclusive(STATISTIC, "no completed BN run recorded the precise_bn probe (EMA and recomputed "
                                            "statistics), so there is nothing to compare" + note, unit="points")
    bn = bn.assign(gain=100 * (bn[_col(REFERENCE_N)] - bn.ema_acc),
                   suffice=100 * (bn[_col(SUFFICE_N)] - bn[_col(REFERENCE_N)]),
                   few=100 * (bn[_col(FEW_N)] - bn[_col(REFERENCE_N)]),
                   batch_gap=100 * (bn[_col(REFERENCE_N)] - bn.batch_stats_acc))
    batches = sorted(int(b) for b in bn.batch_size.dropna().unique())
    margin = runs.claim.margin
    details, gains, checks = [], {}, {}
    for b in batches:
        g = bn[bn.batch_size == b]
        gains[b] = mean_interval(g.gain)
        checks[b] = mean_interval(g.suffice)
        details.append(
            f"batch {b}: test accuracy (%) EMA {_mean(g.ema_acc)}, precise N=10^2 {_mean(g[_col(FEW_N)])}, "
            f"10^3 {_mean(g[_col(SUFFICE_N)])}, 10^4 {_mean(g[_col(REFERENCE_N)])}, train mode (batch statistics "
            f"at batch {b}) {_mean(g.batch_stats_acc)}; precise(10^4) - EMA {bracketed(gains[b])} points -> "
            f"{verdict_of(gains[b], margin, test=NON_INFERIORITY)}; precise(10^3) - precise(10^4) {bracketed(checks[b])} -> "
            f"{suffices(checks[b], margin)}; precise(10^2) - precise(10^4) {bracketed(mean_interval(g.few))}; "
            f"precise(10^4) - train mode {bracketed(mean_interval(g.batch_gap))}")
    small = batches[0]
    head = gains[small]
    verdict = verdict_of(head, margin, test=NON_INFERIORITY)
    line2 = [suffices(checks[b], margin) for b in batches]
    n_ok = sum(v == SUFFICE for v in line2)
    worst = max(batches, key=lambda b: _reach(checks[b]))
    details.append(f"10^3 samples suffice (precise(10^3) - precise(10^4) within +-{margin:g} points, 95%) "
                   f"at {n_ok} of {len(batches)} batch sizes")
    details.append(f"verdict: precise(10^4) - EMA at batch {small}, the smallest: {verdict}; the 10^3-samples check "
                   "is reported, not part of the verdict")
    big = batches[-1]
    gap_small, gap_big = (mean_interval(bn[bn.batch_size == b].batch_gap) for b in (small, big))
    evidence = (f"At batch {small}, the smallest, precise BN from 10^4 training images gives "
                f"{signed(head.mean)} points of test accuracy over the EMA statistics ({bracketed(head)}: {verdict}; "
                f"EMA {_mean(bn[bn.batch_size == small].ema_acc)}%, precise "
                f"{_mean(bn[bn.batch_size == small][_col(REFERENCE_N)])}%); at the other batch sizes "
                + (", ".join(f"{signed(gains[b].mean)} at {b}" for b in batches[1:]) or "none") + ". "
                f"10^3 samples suffice (within +-{margin:g} points of 10^4, the claim's margin; 95%) at {n_ok} of "
                f"{len(batches)} batch sizes (farthest: batch {worst}, {bracketed(checks[worst])}); 10^2 samples give "
                f"{signed(mean_interval(bn.few).mean)} points against 10^4 (mean over the runs). Batch statistics "
                f"(train mode) minus precise BN: {signed(-gap_small.mean)} points at batch {small}, "
                f"{signed(-gap_big.mean)} at batch {big}. Differences are paired within each run; 95% t-intervals "
                f"over seeds{note}. Figure: test accuracy vs batch size with EMA, precise and batch statistics; right, "
                "each minus EMA.")
    figure = draw("C18", out, lambda: _figure(bn, batches), details)
    return runs.result(verdict, STATISTIC, interval=head, unit="points",
                       n=f"{head.n} BN seeds at batch {small}", evidence=evidence, figure=figure, details=details)


SUFFICE, NOT_SUFFICE, UNDECIDED = "10^3 suffice", "10^3 do not suffice", "undecided"


def suffices(m: MeanInterval, margin: float) -> str:
    """The 10^3-samples check on precise(10^3) - precise(10^4): the 95% interval inside +-margin (suffice: the
    rule's 'no meaningful effect', rule.within_margin), wholly outside it (do not suffice), else undecided
    (also without an interval, or with a zero-width one: identical seeds say nothing about the spread)."""
    if not (math.isfinite(m.low) and math.isfinite(m.high)) or zero_width(m.low, m.high):
        return UNDECIDED
    if within_margin(m.low, m.high, margin):
        return SUFFICE
    if m.high < -margin or m.low > margin:
        return NOT_SUFFICE
    return UNDECIDED


def _reach(m: MeanInterval) -> float:
    """How far from zero the interval reaches (inf without one)."""
    return max(abs(m.low), abs(m.high)) if math.isfinite(m.low) and math.isfinite(m.high) else math.inf


def _col(n: int) -> str:
    return f"precise_{n}"


def _mean(values: Iterable[Any]) -> str:
    """Mean accuracy in percent from fractions."""
    return short(mean_interval(100 * np.asarray(list(values), dtype=float)).mean)


def precise_finals(records: list[dict[str, Any]]) -> pd.DataFrame:
    """probe_finals (one row per run) plus the precise_bn probe: ema_acc, batch_stats_acc (its train_mode_acc),
    precise_<N> for each sample count N the probe recorded (fractions; NaN where absent or not finite) and
    precise_batch_size."""
    df = probe_finals(records)
    rows = []
    for i, rec in enumerate(records):
        p = rec.get("probes") if isinstance(rec, dict) else None
        fin = p.get("final") if isinstance(p, dict) else None
        pb = fin.get("precise_bn") if isinstance(fin, dict) else None
        pb = pb if isinstance(pb, dict) else {}
        row: dict[str, Any] = {"run": i, "ema_acc": num(pb.get("ema_acc")),
                               "batch_stats_acc": num(pb.get("train_mode_acc")),
                               "precise_batch_size": num(pb.get("batch_size"))}
        samples, accs = pb.get("samples"), pb.get("precise_acc")
        if isinstance(samples, list) and isinstance(accs, list):
            for n, a in zip(samples, accs):
                if isinstance(n, (int, float)) and not isinstance(n, bool):
                    row[_col(int(n))] = num(a)
        rows.append(row)
    extra = pd.DataFrame(rows)
    for c in ("run", "ema_acc", "batch_stats_acc", "precise_batch_size", *(_col(n) for n in (FEW_N, SUFFICE_N,
                                                                                          REFERENCE_N))):
        if c not in extra:
            extra[c] = pd.Series(dtype=float)
    return df.merge(extra.astype({c: float for c in extra.columns if c != "run"}), on="run", how="left")


def _figure(bn: pd.DataFrame, batches: list[int]) -> Optional[Figure]:
    fig, axes = grid(1, 2, w=4.2, h=3.0)
    lines = [("ema_acc", "EMA (as trained)", "k", "-", "o"),
             (_col(FEW_N), "precise, N=$10^2$", "C1", ":", "v"),
             (_col(SUFFICE_N), "precise, N=$10^3$", "C2", "--", "^"),
             (_col(REFERENCE_N), "precise, N=$10^4$", "C0", "-", "s"),
             ("batch_stats_acc", "batch statistics (train mode)", "C3", "-.", "x")]
    ax = axes[0, 0]
    for col, label, color, ls, marker in lines:
        ms = {b: mean_interval(100 * bn[bn.batch_size == b][col].astype(float)) for b in batches}
        bs = [b for b in batches if ms[b].n]
        if bs:
            errorbar(ax, bs, [ms[b] for b in bs], color=color, ls=ls, marker=marker, label=label)
    log2_batch_axis(ax, batches)
    clamp_axis(ax)
    ax.set(xlabel="batch size (= normalization batch)", ylabel="test accuracy (%)", title="test accuracy")
    legend(ax, fontsize=7)
    ax = axes[0, 1]
    for col, label, color, ls, marker in lines[1:4]:
        ms = {b: mean_interval(100 * (bn[bn.batch_size == b][col] - bn[bn.batch_size == b].ema_acc).astype(float))
              for b in batches}
        bs = [b for b in batches if ms[b].n]
        if bs:
            errorbar(ax, bs, [ms[b] for b in bs], color=color, ls=ls, marker=marker, label=f"{label} - EMA")
    ax.axhline(0.0, color="gray", lw=0.8)
    log2_batch_axis(ax, batches)
    clamp_axis(ax, -100.0, 100.0)
    ax.set(xlabel="batch size (= normalization batch)", ylabel="minus EMA (points)", title="gain over the EMA")
    legend(ax, fontsize=7)
    fig.suptitle("C18: BN, mean over seeds, bars: 95% t interval over seeds (cut at the axis)", fontsize=9)
    return fig
