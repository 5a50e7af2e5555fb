"""C10: BN smooths the loss landscape (Santurkar et al. 2018, sec. 3.1).

Runs: the landscape preset, which is the ics preset (same config, both
probes on): where only ics ran, its runs answer, if they carry the landscape
probe. Along the gradient, at steps of 0.5x to 4x the lr: the loss range, the
gradient change and the effective beta-smoothness. Statistic: log10(no norm /
BN) of the mean effective beta-smoothness over the first 25% of training
probes (Welch on per-seed log10 values). Figure: the three quantities vs
step per arm.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import draw, legend, trace
from analysis.claims.probe_tables import LANDSCAPE, arms, completed_series, probe_series, run_total
from analysis.claims.result import ClaimResult
from analysis.claims.rule import verdict_of
from analysis.claims.runs import ClaimRuns
from analysis.figures import grid, palette
from analysis.stats import welch_difference
from analysis.summary import norm_name
from analysis.text import bracketed, n_text, short

LITERATURE = ("Santurkar et al. 2018: loss variation, gradient change and effective beta-smoothness along "
              "the gradient are smaller with BN, by up to two orders of magnitude early in training")
EARLY, LATE = 0.25, 0.75  # the first 25% / last 25% of training probes
NAMES = {"loss_range": "loss range", "grad_change": "gradient change", "beta_smoothness": "effective beta-smoothness"}
UNITS = {"loss_range": "max - min loss, nats", "grad_change": "max ||g - g'||, L2",
         "beta_smoothness": "max ||g - g'|| / (eta ||g||)"}
STATISTIC = ("log10(no norm / BN) of the mean effective beta-smoothness over the first 25% of training "
             "probes (Welch on per-seed log10 values), expected > 0")
VIA_ICS = " (the runs of the ics preset, which carry the landscape probe)"


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    exp, experiment = runs.get("landscape"), runs.experiment
    if exp is None:  # the ics runs answer where they carry the landscape probe
        exp = runs.get("ics")
        if exp is None or probe_series(exp.records)[list(LANDSCAPE)].notna().to_numpy().sum() == 0:
            return runs.not_run()
        experiment = exp.label + VIA_ICS
    series, note = completed_series(exp.records)
    win = windows(series)
    if win.empty or "norm" not in win:
        return runs.inconclusive(STATISTIC, f"no landscape probe values in the completed runs{note}", unit="log10",
                                 experiment=experiment)
    none, bn = win[win.norm == "none"], win[win.norm == "batch"]
    diffs = {(q, w): welch_difference(_log10(none[f"{q}_{w}"]), _log10(bn[f"{q}_{w}"]))
             for q in LANDSCAPE for w in ("early", "late")}
    details = [_window_line(q, w, none, bn, diffs[(q, w)], runs.claim.margin)
               for q in LANDSCAPE for w in ("early", "late")]
    figure = draw("C10", out, lambda: _figure(series), details)
    d, late = diffs[("beta_smoothness", "early")], diffs[("beta_smoothness", "late")]
    if d.n_a == 0 or d.n_b == 0:
        missing = [name for name, n in (("no norm", d.n_a), ("BN", d.n_b)) if n == 0]
        return runs.inconclusive(STATISTIC, f"no completed {' or '.join(missing)} run with a positive early "
                                            f"beta-smoothness, so the arms cannot be compared{note}", unit="log10",
                                 experiment=experiment, figure=figure, details=details)
    evidence = (f"early in training the effective beta-smoothness without BN is {short(10 ** d.diff)}x BN's "
                f"(no norm / BN; above 1: smoother with BN; log10 ratio {bracketed(d)}); late in training "
                f"{short(10 ** late.diff)}x (log10 {bracketed(late)}). "
                "Figure: loss range, gradient change and beta-smoothness vs step per arm (log y; seeds faint, "
                f"geometric mean bold; shaded: the first 25% of training){note}.")
    return runs.result(verdict_of(d, runs.claim.margin), STATISTIC, interval=d, unit="log10", n=n_text([d.n_b, d.n_a]),
                       evidence=evidence, experiment=experiment, figure=figure, details=details)


def windows(series: pd.DataFrame, early: float = EARLY, late: float = LATE) -> pd.DataFrame:
    """Per run: the mean of each landscape quantity over its early and late probes."""
    s = series[np.isfinite(series.step.astype(float))].copy()
    if s.empty:
        return pd.DataFrame(columns=["run", "norm", "seed"])
    total = run_total(s)
    s["early"] = s.step <= early * total
    s["late"] = s.step >= late * total
    rows = []
    for run, g in s.groupby("run"):
        row = {"run": run, "norm": str(g.norm.iloc[0]), "seed": g.seed.iloc[0]}
        for q in LANDSCAPE:
            for window in ("early", "late"):
                row[f"{q}_{window}"] = float(g[g[window]][q].astype(float).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _log10(values: pd.Series) -> pd.Series:
    v = values.astype(float)
    return np.log10(v.where(v > 0))


def _window_line(q: str, w: str, none: pd.DataFrame, bn: pd.DataFrame, d, margin: float) -> str:
    span = f"first {int(100 * EARLY)}" if w == "early" else f"last {int(round(100 * (1 - LATE)))}"
    return (f"{NAMES[q]}, {w} (probes of the {span}% of training): no norm {short(none[f'{q}_{w}'].mean())}, BN "
            f"{short(bn[f'{q}_{w}'].mean())}; log10(no norm / BN) {bracketed(d)} -> {verdict_of(d, margin)}")


def _figure(series: pd.DataFrame) -> Optional[Figure]:
    present = arms(series)
    if not present or series[list(LANDSCAPE)].notna().to_numpy().sum() == 0:
        return None
    fig, axes = grid(1, 3, w=3.4, h=2.8)
    colors = palette(present)
    total = float(series.step.max()) if series.step.notna().any() else math.nan
    for ax, q in zip(axes[0], LANDSCAPE):
        for arm in present:
            trace(ax, series[series.norm.astype(str) == arm], q, colors[arm], norm_name(arm), log=True)
        if ax.has_data():
            ax.set_yscale("log")
        if math.isfinite(total) and total > 0:
            ax.axvspan(0, EARLY * total, color="0.9", zorder=0)
        ax.set(xlabel="optimizer step", ylabel=f"{UNITS[q]} (log)", title=NAMES[q])
    legend(axes[0, 0], fontsize=8)
    fig.suptitle(f"C10, along the gradient (faint: one line per seed; bold: geometric mean over\n"
                 f"seeds, no interval drawn; shaded: the first {int(100 * EARLY)}% of training)", fontsize=9)
    return fig
