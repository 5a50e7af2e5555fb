"""C13: linear lr scaling holds over a range of batch sizes (Goyal et al. 2017).

Runs: the linear_scaling preset (lr = 0.01 x B/64, batch 16..4096, equal
epochs). Statistic: at the first batch size above 64 where either arm's final
validation accuracy falls clearly below its batch-64 value, no norm's drop
minus BN's drop (BN holds longer). Figure: final validation accuracy vs
batch size per arm, with each arm's batch-64 interval shaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.common import (DIVERGED_NOTE, ClaimResult, ClaimRuns, acc_values, clamp_axis, counts_note,
                                    diff_text, draw, label_axes, log2_batch_axis, mean_band, n_text, palette, panel,
                                    runs_table, verdict_of)
from analysis.stats import Difference, contrast, interval_bounds, welch_difference
from analysis.summary import norm_name, norm_order

LITERATURE = "Goyal et al. 2017 (ImageNet): lr proportional to batch size, with warm-up, holds to batch 8k"
REFERENCE_BATCH = 64
STATISTIC = (f"at the first batch size above {REFERENCE_BATCH} where either arm's final validation accuracy "
             f"falls clearly below its batch-{REFERENCE_BATCH} value: no norm's drop minus BN's drop, in "
             "points, expected > 0 (BN holds longer)")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    df = runs_table(runs.need("linear_scaling"))
    df = df[df.batch_size.notna()]
    if not {"none", "batch"} <= set(df.norm.dropna()):
        return runs.inconclusive(STATISTIC, "needs runs of both BN and no norm")
    sizes = sorted(int(b) for b in set(df[df.norm == "batch"].batch_size) & set(df[df.norm == "none"].batch_size))
    above = [b for b in sizes if b > REFERENCE_BATCH]
    if REFERENCE_BATCH not in sizes or not above:
        return runs.inconclusive(STATISTIC, f"needs both arms at batch {REFERENCE_BATCH} and a larger batch")
    drops, aligned, details = {}, {}, []
    for norm in ("batch", "none"):
        drops[norm], aligned[norm], line = _drops(df[df.norm == norm], above)
        details.append(f"{norm_name(norm)}: {line}")
    dropped = [b for b in above if any(math.isfinite(drops[n][b].low) and drops[n][b].low > 0 for n in drops)]
    b = dropped[0] if dropped else above[-1]
    c = contrast(drops["none"][b], drops["batch"][b])
    where = (f"batch {b}, the first where an arm falls clearly below batch {REFERENCE_BATCH}" if dropped
             else f"batch {b}, the largest tried (neither arm fell clearly below batch {REFERENCE_BATCH})")
    figure = draw("C13", out, lambda: _figure(df), details)
    evidence = (f"Largest batch aligned with batch {REFERENCE_BATCH} (lr = 0.01 x B/64): BN {aligned['batch']}, no "
                f"norm {aligned['none']}. At {where}: no norm's drop minus BN's {diff_text(c)}. {DIVERGED_NOTE}. "
                f"Figure: final validation accuracy vs batch size per arm, mean and 95% t-interval, shaded: each "
                f"arm's batch-{REFERENCE_BATCH} interval.")
    return runs.result(verdict_of(c), STATISTIC, interval=c, unit="points",
                       n=n_text([c.n_a, c.n_b], "seeds per cell (smallest)"), evidence=evidence, figure=figure,
                       details=details)


def _drops(arm: pd.DataFrame, above: list[int]) -> tuple[dict[int, Difference], int, str]:
    """One arm: its drop from batch 64 at each larger batch (Welch: batch 64 minus batch B), the largest batch
    aligned with batch 64 (every batch up to it within the seed spread), and its detail line."""
    ref, dv, lo = acc_values(arm[arm.batch_size == REFERENCE_BATCH], "val_acc")
    drops: dict[int, Difference] = {}
    largest, walking, parts = REFERENCE_BATCH, True, []
    for b in above:
        vals, dvb, lob = acc_values(arm[arm.batch_size == b], "val_acc")
        dv, lo = dv + dvb, lo + lob
        d = drops[b] = welch_difference(ref, vals)
        ok = math.isfinite(d.low) and -d.low >= 0  # interval of acc_B - acc_64 reaches 0 or above
        parts.append(f"{b}: drop {diff_text(d)}{'' if ok else ' (clearly below)' if math.isfinite(d.low) else ''}")
        if walking and ok:
            largest = b
        else:
            walking = False
    return drops, largest, (f"largest batch aligned with batch {REFERENCE_BATCH} (every batch up to it within the "
                            f"seed spread): {largest}; drops from batch {REFERENCE_BATCH}: {'; '.join(parts)}"
                            f"{counts_note(dv, lo)}")


def _figure(df: pd.DataFrame) -> Figure:
    fig, ax = panel()
    pal = palette(df.norm.dropna())
    for norm in norm_order(df.norm.dropna()):
        sizes = sorted(df[df.norm == norm].batch_size.unique())
        groups = [acc_values(df[(df.norm == norm) & (df.batch_size == b)], "val_acc")[0] for b in sizes]
        mean_band(ax, list(sizes), groups, pal[norm], norm_name(norm), bars=True)
        ref = acc_values(df[(df.norm == norm) & (df.batch_size == REFERENCE_BATCH)], "val_acc")[0]
        if len(ref) >= 2:
            lo, hi = interval_bounds(ref)
            ax.axhspan(lo, hi, color=pal[norm], alpha=0.12, linewidth=0)
    log2_batch_axis(ax, df.batch_size)
    clamp_axis(ax)
    label_axes(ax, "batch size (lr = 0.01 x B/64)", "final validation accuracy (%)",
          f"C13: linear lr scaling (bars: mean and 95% t interval over seeds;\n"
          f"shaded: each arm's batch-{REFERENCE_BATCH} interval)")
    return fig
