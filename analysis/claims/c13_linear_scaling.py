"""C13: linear lr scaling holds over a range of batch sizes (Goyal et al. 2017).

Runs: the linear_scaling preset (lr = 0.01 x B/64, batch 16..4096, equal
epochs). At large batch and lr the no-norm arm's outcome is bimodal: some
seeds train, others diverge or stall at chance (the old report: no norm at
batch 1024 gave 88.0, 91.2 and 91.7%, at 4096 all three seeds near chance).
A mean with a Welch interval is wrecked by that, so the claim counts seeds.

A run "holds" when its final validation accuracy is at most HOLD_POINTS
below its arm's batch-64 median (a diverged run counts at chance: it does
not hold). Statistic: at the largest batch size of the preset (fixed before
the data: the end of the range the rule is claimed over), the share of BN's
runs that hold minus no norm's share, in percentage points, with Newcombe's
hybrid score interval (Wilson intervals of each share combined; exact
enough at 8 runs per arm, and defined at 0% and 100%, where a Wald interval
collapses). Expected > 0: BN holds at larger batch sizes than no norm. The
details give every batch size's shares and interval and each arm's largest
batch up to which every batch size keeps at least half its runs. Figure:
each run's final validation accuracy vs batch size, the median per arm, and
each arm's hold threshold.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, label_axes, panel
from analysis.claims.result import ClaimResult
from analysis.claims.rule import verdict_of
from analysis.claims.runs import CHANCE_ACC, ClaimRuns, acc_values, column, counts_note, runs_table
from analysis.figures import log2_batch_axis, palette
from analysis.stats import LEVEL, Difference
from analysis.summary import norm_name, norm_order
from analysis.text import n_text

LITERATURE = "Goyal et al. 2017 (ImageNet): lr proportional to batch size, with warm-up, holds to batch 8k"
REFERENCE_BATCH = 64
# A run holds when it ends at most this many points below its arm's batch-64 median: fixed before the data
# (a one-point loss is a clear one on MNIST, 4-6x the seed sd at batch 64 in the old report: 0.17 BN, 0.26
# no norm).
HOLD_POINTS = 1.0
STATISTIC = (f"at the preset's largest batch size (lr = 0.01 x B/{REFERENCE_BATCH}): the share of BN's runs whose "
             f"final validation accuracy holds within {HOLD_POINTS:g} point of BN's batch-{REFERENCE_BATCH} "
             "median, minus no norm's share (its own batch-64 median), in percentage points (Newcombe's "
             "interval), expected > 0 (BN holds longer)")


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval of a proportion k/n (NaN for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def share_difference(k_a: int, n_a: int, k_b: int, n_b: int) -> Difference:
    """k_a/n_a - k_b/n_b in percentage points with Newcombe's (1998, method 10) hybrid score interval; no
    interval unless both arms have 2+ runs."""
    if n_a == 0 or n_b == 0:
        return Difference(math.nan, math.nan, math.nan, n_a, n_b)
    p_a, p_b = k_a / n_a, k_b / n_b
    d = p_a - p_b
    if n_a < 2 or n_b < 2:
        return Difference(100 * d, math.nan, math.nan, n_a, n_b)
    l_a, u_a = wilson(k_a, n_a)
    l_b, u_b = wilson(k_b, n_b)
    low = d - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)
    high = d + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)
    return Difference(100 * d, 100 * low, 100 * high, n_a, n_b)


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    df = runs_table(runs.need("linear_scaling"))
    df = df[df.batch_size.notna()]
    if not {"none", "batch"} <= set(df.norm.dropna()):
        return runs.inconclusive(STATISTIC, "needs runs of both BN and no norm")
    sizes = sorted(int(b) for b in set(df[df.norm == "batch"].batch_size) & set(df[df.norm == "none"].batch_size))
    above = [b for b in sizes if b > REFERENCE_BATCH]
    if REFERENCE_BATCH not in sizes or not above:
        return runs.inconclusive(STATISTIC, f"needs both arms at batch {REFERENCE_BATCH} and a larger batch")
    arms = {norm: _arm(df[df.norm == norm], sizes) for norm in ("batch", "none")}
    if any(not math.isfinite(a["ref"]) for a in arms.values()):
        return runs.inconclusive(STATISTIC, f"an arm has no completed or diverged run at batch {REFERENCE_BATCH}")
    details = []
    for norm, a in arms.items():
        details.append(f"{norm_name(norm)}: batch-{REFERENCE_BATCH} median {a['ref']:.2f}%, a run holds at "
                       f">= {a['ref'] - HOLD_POINTS:.2f}%; largest batch up to which every batch size keeps at "
                       f"least half its runs: {a['largest']}{counts_note(a['diverged'], a['left_out'])}")
    diffs = {}
    for b in above:
        (kb, nb), (kn, nn) = arms["batch"]["holds"][b], arms["none"]["holds"][b]
        d = diffs[b] = share_difference(kb, nb, kn, nn)
        details.append(f"batch {b} (lr {0.01 * b / REFERENCE_BATCH:g}): BN {kb} of {nb} runs hold, no norm {kn} of "
                       f"{nn}; BN minus no norm {_share_text(d)}: {verdict_of(d, runs.claim.margin)}; median "
                       f"accuracy BN {arms['batch']['median'][b]:.2f}%, no norm {arms['none']['median'][b]:.2f}%")
    b = above[-1]
    d = diffs[b]
    (kb, nb), (kn, nn) = arms["batch"]["holds"][b], arms["none"]["holds"][b]
    figure = draw("C13", out, lambda: _figure(df, {n: a["ref"] for n, a in arms.items()}), details)
    evidence = (f"{_schedule(df)} At batch {b}, the largest of the preset (lr {0.01 * b / REFERENCE_BATCH:g}), {kb} of {nb} BN runs "
                f"and {kn} of {nn} no-norm runs end within {HOLD_POINTS:g} point of their arm's batch-"
                f"{REFERENCE_BATCH} median: BN minus no norm {_share_text(d)} (Newcombe's hybrid score interval "
                "of a difference of two shares; a share, not a mean, because the no-norm outcome at large batch "
                f"is bimodal: a run trains or it stalls). Largest batch up to which each arm keeps at least half "
                f"its runs: BN {arms['batch']['largest']}, no norm {arms['none']['largest']}. A diverged run "
                f"counts at chance accuracy ({CHANCE_ACC:.0%}), which never holds; failed and pruned runs are left "
                "out. Figure: each run's final validation accuracy vs batch size, the median per arm, and each "
                "arm's hold threshold (dashed).")
    return runs.result(verdict_of(d, runs.claim.margin), STATISTIC, interval=d, unit="points",
                       n=n_text([d.n_a, d.n_b], "runs per arm at the largest batch"), evidence=evidence,
                       figure=figure, details=details)


def _schedule(df: pd.DataFrame) -> str:
    """The budget and warm-up the runs trained with (Goyal et al.'s rule includes a gradual warm-up)."""
    epochs = pd.to_numeric(column(df, "epochs"), errors="coerce").dropna().unique()
    warm = pd.to_numeric(column(df, "warmup_epochs"), errors="coerce").fillna(0).unique()
    start = pd.to_numeric(column(df, "warmup_lr"), errors="coerce").dropna().unique()
    budget = (f"{int(epochs[0])} epoch{'s' if int(epochs[0]) != 1 else ''}" if len(epochs) == 1
              else "several budgets (see the runs)")
    if len(warm) == 1 and warm[0] == 0:
        return f"Trained {budget} at lr = 0.01 x B/{REFERENCE_BATCH}, without warm-up."
    if len(warm) == 1 and len(start) == 1:
        return (f"Trained {budget} at lr = 0.01 x B/{REFERENCE_BATCH}, with Goyal et al.'s gradual warm-up: the "
                f"lr rises linearly from {start[0]:g} over the first {warm[0]:g} epochs (batch sizes whose lr is "
                f"not above {start[0]:g} train at their lr throughout).")
    return f"Trained {budget} at lr = 0.01 x B/{REFERENCE_BATCH}, with warm-ups that differ between runs."


def _share_text(d: Difference) -> str:
    if not (math.isfinite(d.low) and math.isfinite(d.high)):
        return f"{d.diff:+.0f} points (no interval: fewer than two runs)"
    return f"{d.diff:+.0f} points ({d.low:+.0f} to {d.high:+.0f})"


def _arm(arm: pd.DataFrame, sizes: list[int]) -> dict:
    """One arm: its batch-64 median accuracy (points), per batch size (runs that hold, runs) and median, the
    largest batch up to which every batch size keeps at least half its runs, and the runs left out."""
    vals = {b: acc_values(arm[arm.batch_size == b], "val_acc") for b in sizes}
    ref_vals = vals[REFERENCE_BATCH][0]
    ref = float(np.median(ref_vals)) if ref_vals else math.nan
    holds = {b: (sum(v >= ref - HOLD_POINTS for v in vals[b][0]), len(vals[b][0])) for b in sizes}
    largest = REFERENCE_BATCH
    for b in sizes:
        if b <= REFERENCE_BATCH:
            continue
        k, n = holds[b]
        if n == 0 or 2 * k < n:
            break
        largest = b
    return {"ref": ref, "holds": holds, "largest": largest,
            "median": {b: float(np.median(v[0])) if v[0] else math.nan for b, v in vals.items()},
            "diverged": sum(v[1] for v in vals.values()), "left_out": sum(v[2] for v in vals.values())}


def _figure(df: pd.DataFrame, refs: dict[str, float]) -> Figure:
    fig, ax = panel()
    pal = palette(df.norm.dropna())
    norms = norm_order(df.norm.dropna())
    for i, norm in enumerate(norms):
        sizes = sorted(df[df.norm == norm].batch_size.unique())
        meds = []
        for b in sizes:
            vals = acc_values(df[(df.norm == norm) & (df.batch_size == b)], "val_acc")[0]
            shift = 2 ** (0.08 * (i - (len(norms) - 1) / 2))  # side by side on the log axis
            ax.scatter([b * shift] * len(vals), vals, color=pal[norm], s=12, alpha=0.6)
            meds.append(float(np.median(vals)) if vals else math.nan)
        ax.plot(sizes, meds, color=pal[norm], marker="o", label=norm_name(norm))
        if norm in refs and math.isfinite(refs[norm]):
            ax.axhline(refs[norm] - HOLD_POINTS, color=pal[norm], linestyle="--", linewidth=0.8)
    log2_batch_axis(ax, df.batch_size)
    clamp_axis(ax)
    label_axes(ax, f"batch size (lr = 0.01 x B/{REFERENCE_BATCH})", "final validation accuracy (%)",
               f"C13: linear lr scaling (dots: runs; line: median;\ndashed: {HOLD_POINTS:g} point below the "
               f"arm's batch-{REFERENCE_BATCH} median, a run above it holds)")
    return fig
