"""C8: BN stabilizes activation distributions (Ioffe & Szegedy 2015, fig. 1b,c).

Runs: the ioffe2015 preset (the activation probe follows the input of one
last-hidden sigmoid: its 15/50/85th percentiles over a fixed validation
sample). Statistic: no-norm minus BN drift of those percentiles over the whole
of training, from the first probe to the last, in units of the run's final
p85-p15 spread (Welch). Figure: the percentiles vs step, one panel per arm.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import draw, legend
from analysis.claims.probe_tables import PERCENTILES, arms, completed_series, seed_order
from analysis.claims.result import ClaimResult
from analysis.claims.rule import verdict_of
from analysis.claims.runs import ClaimRuns, activation_of
from analysis.figures import grid, palette
from analysis.stats import mean_interval, welch_difference
from analysis.summary import norm_name
from analysis.text import bracketed, count, n_text, short

LITERATURE = ("Ioffe & Szegedy 2015, fig. 1b,c: 15/50/85th percentiles of a last-hidden sigmoid input "
              "drift without BN and stay stable with BN")
# Drift is measured from the first probe, over the whole of training: without BN the distribution moves
# most early (the BN paper's figure 1), so a window that starts later measures what is left of it. The unit is
# the run's final spread, the width the distribution ends at (the no-norm spread grows some 300-fold over
# training, so a mean over probes would mix widths). The drift from 10% of training on, the previous
# statistic, is in the details.
REFERENCE, LATE = 0.0, 0.10
STATISTIC = ("no-norm minus BN drift of a last-hidden sigmoid unit's input 15/50/85th percentiles over training "
             "(mean |last probe - first probe| over the three, in units of the run's final p85-p15 spread), "
             "Welch, expected > 0")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    # the sigmoid network (the BN paper's figure 1); the preset's ReLU arm answers C11's comparison only
    series, note = completed_series([r for r in runs.need("ioffe2015").records if activation_of(r, "sigmoid") == "sigmoid"])
    drift = drift_table(series)
    late = drift_table(series, LATE)
    none, bn = drift[drift.norm == "none"], drift[drift.norm == "batch"]
    d = welch_difference(none.drift, bn.drift)
    details: list[str] = []
    figure = draw("C8", out, lambda: _figure(series) if not series.empty else None, details)
    if d.n_a == 0 or d.n_b == 0:
        missing = [name for name, n in (("no norm", d.n_a), ("BN", d.n_b)) if n == 0]
        return runs.inconclusive(STATISTIC, f"no {' or '.join(missing)} run with at least two activation probes, "
                                            f"so the arms cannot be compared{note}",
                                 unit="spreads", figure=figure, details=details)
    details += [f"{norm_name(arm)}: drift {bracketed(mean_interval(g.drift), 3)} spreads; reference probe at step "
                f"{count(g.ref_step.median())}, last at step {count(g.last_step.median())} (medians); "
                f"final spread {short(g.spread.mean())}" for arm, g in (("none", none), ("batch", bn))]
    late_d = welch_difference(late[late.norm == "none"].drift, late[late.norm == "batch"].drift)
    details.append(f"from 10% of training on (the window of earlier reports): no-norm minus BN drift "
                   f"{bracketed(late_d, 3)} spreads")
    details += [line for arm in ("none", "batch") if (line := _first_seed(series, arm))]
    evidence = (f"drift of the percentiles over training (first to last probe): no norm {short(none.drift.mean())}, "
                f"BN {short(bn.drift.mean())} of the run's final p15-p85 spread (difference {bracketed(d, 3)}). "
                "Figure: the 15/50/85th percentiles vs step, one panel per arm (lowest seed bold, others "
                f"faint){note}.")
    return runs.result(verdict_of(d, runs.claim.margin), STATISTIC, interval=d, unit="spreads",
                       n=n_text([d.n_b, d.n_a]), evidence=evidence, figure=figure, details=details)


def drift_table(series: pd.DataFrame, start: float = REFERENCE) -> pd.DataFrame:
    """Per run: drift of the tracked unit's percentiles from a reference probe to the last one.

    drift = mean over p15/p50/p85 of |p(last) - p(reference)| / the run's final
    spread (p85 - p15 at the last probe); reference = the first probe at or
    after `start` x the run's last probed step (0: its first probe).
    """
    rows = []
    for run, g in series.groupby("run"):
        g = g[np.isfinite(g[[f"act_{p}" for p in PERCENTILES]].astype(float)).all(axis=1)
              & np.isfinite(g.step.astype(float))].sort_values("step")
        row = {"run": run, "norm": str(g.norm.iloc[0]) if len(g) else None,
               "seed": g.seed.iloc[0] if len(g) else None, "drift": math.nan, "ref_step": math.nan,
               "last_step": math.nan, "spread": math.nan}
        if len(g) >= 2:
            ref = g[g.step >= start * float(g.step.max())].iloc[0]
            last = g.iloc[-1]
            spread = float(last.act_p85 - last.act_p15)
            row.update(ref_step=ref.step, last_step=last.step, spread=spread)
            if ref.step < last.step and spread > 0:
                row["drift"] = float(np.mean([abs(last[f"act_{p}"] - ref[f"act_{p}"]) for p in PERCENTILES])
                                     / spread)
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", "norm", "seed", "drift", "ref_step", "last_step", "spread"])


def _first_seed(series: pd.DataFrame, arm: str) -> Optional[str]:
    """The lowest seed's percentiles at its first and last probe."""
    g = series[series.norm.astype(str) == arm]
    seeds = seed_order(g)
    r = g[g.seed == seeds[0]].dropna(subset=["act_p50"]).sort_values("step") if seeds else g.iloc[:0]
    if r.empty:
        return None
    first, last = r.iloc[0], r.iloc[-1]
    return (f"{norm_name(arm)} seed {seeds[0]}: percentiles (15/50/85) at step {count(first.step)}: "
            f"{short(first.act_p15)}/{short(first.act_p50)}/{short(first.act_p85)}; at step {count(last.step)}: "
            f"{short(last.act_p15)}/{short(last.act_p50)}/{short(last.act_p85)}")


def _figure(series: pd.DataFrame) -> Optional[Figure]:
    present = arms(series)
    if not present:
        return None
    fig, axes = grid(1, len(present), w=3.6, h=2.8, sharey=False)
    colors = palette(present)
    shades = {"p15": 0.55, "p50": 1.0, "p85": 0.55}
    styles = {"p15": "--", "p50": "-", "p85": ":"}
    for ax, arm in zip(axes[0], present):
        g = series[series.norm.astype(str) == arm]
        seeds = seed_order(g)
        for seed in seeds:
            r = g[g.seed == seed].sort_values("step")
            first = seed == seeds[0]
            for p in PERCENTILES:
                ax.plot(r.step, r[f"act_{p}"], color=colors[arm], ls=styles[p],
                        alpha=shades[p] if first else 0.2, lw=1.6 if first else 0.8,
                        label=f"{p[1:]}th percentile" if first else None)
        ax.set(xlabel="optimizer step", ylabel="input to the nonlinearity" + (" (after BN)" if arm == "batch" else ""),
               title=f"{norm_name(arm)}" + (f" (bold: seed {seeds[0]})" if seeds else ""))
        legend(ax, fontsize=7)
    fig.suptitle("C8: one last-hidden unit's 15/50/85th percentiles over a fixed validation sample "
                 "(no interval: one line per seed)", fontsize=9)
    return fig
