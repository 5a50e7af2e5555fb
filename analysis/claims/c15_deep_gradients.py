"""C15: BN mitigates vanishing/exploding gradients.

Runs: the deep preset (15 hidden layers of 100, sigmoid and ReLU, per-layer
weight-gradient norms every 10 steps). Statistic: per activation, no-norm
minus BN spread of the per-layer gradient norms, log10(max/min over layers),
averaged over the probes of the first 10% of training (Welch); verdict
combined over activations, value shown for sigmoid. Figure: mean gradient
norm over the early probes vs layer, one panel per activation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.claims.plots import draw, legend
from analysis.claims.probe_tables import completed_series, layer_columns, run_total
from analysis.claims.result import ClaimResult
from analysis.claims.rule import INCONCLUSIVE, combine, verdict_of
from analysis.claims.runs import ClaimRuns
from analysis.figures import grid, palette
from analysis.stats import Difference, mean_interval, welch_difference
from analysis.summary import norm_name
from analysis.text import bracketed, n_text, short

LITERATURE = ("Ioffe & Szegedy 2015: BN prevents small parameter changes from amplifying through deep "
              "networks and lets saturating nonlinearities train")
EARLY = 0.10  # the probes of the first 10% of training
STATISTIC = ("no-norm minus BN spread of per-layer weight-gradient norms, log10(max/min over layers) "
             f"averaged over the probes of the first {int(100 * EARLY)}% of training, in decades "
             "(Welch), per activation (value shown: {shown}), expected > 0; verdict combined over "
             "activations")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    series, note = completed_series(runs.need("deep").records)
    per_run, layers = spreads(series)
    if per_run.empty:
        return runs.inconclusive("no-norm minus BN spread of per-layer weight-gradient norms, log10(max/min over "
                                 "layers), over the first 10% of training probes, expected > 0",
                                 f"no gradient-norm probe values in the completed runs{note}", unit="decades")
    activations = sorted(per_run.activation.unique())
    shown = "sigmoid" if "sigmoid" in activations else activations[0]
    verdicts, parts, details, diffs = [], [], [], {}
    for act in activations:
        diffs[act], v, line, part = _activation(per_run[per_run.activation == act], act, runs.claim.margin)
        verdicts.append(v)
        details.append(line)
        parts.append(part)
    verdict, d = combine(verdicts), diffs[shown]
    details.append(f"verdict over activations: {', '.join(f'{a} {v}' for a, v in zip(activations, verdicts))}"
                   f" -> {verdict}")
    evidence = ("spread of the per-layer gradient norms early in training, " + "; ".join(parts)
                + ". Figure: mean weight-gradient norm over the early probes vs layer index (log y), one panel "
                f"per activation, per arm (seeds faint, geometric mean bold){note}.")
    figure = draw("C15", out, lambda: _figure(layers, activations), details)
    return runs.result(verdict, STATISTIC.format(shown=shown), interval=d, unit="decades",
                       n=n_text([d.n_b, d.n_a]) + f" ({shown})", evidence=evidence, figure=figure, details=details)


def spreads(series: pd.DataFrame, early: float = EARLY) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per run: mean spread log10(max/min layer gradient norm) early and over all probes;
    per run x layer: mean log10 gradient norm over the early probes).

    A layer whose norm is exactly 0 or not finite is left out of that probe's spread.
    """
    cols = layer_columns(series, "grad_norm_")
    s = series[np.isfinite(series.step.astype(float))].copy()
    if s.empty or not cols:
        return pd.DataFrame(columns=["run", "norm", "activation", "seed", "early", "all", "zeros"]), pd.DataFrame()
    norms = s[[c for _, c in cols]].astype(float)
    pos = norms.where(norms > 0)
    s["spread"] = np.log10(pos.max(axis=1) / pos.min(axis=1)).where(pos.notna().sum(axis=1) >= 2)
    s["zeros"] = (norms == 0).sum(axis=1)
    first = s.groupby("run").step.transform("min")
    s["early"] = (s.step <= early * run_total(s)) | (s.step == first)  # at least the first probe
    per_run = s.groupby("run").agg(norm=("norm", "first"), activation=("activation", "first"),
                                   seed=("seed", "first"), all=("spread", "mean"), zeros=("zeros", "sum"))
    per_run["early"] = s[s.early].groupby("run").spread.mean()
    per_run["norm"] = per_run.norm.astype(str)
    per_run["activation"] = per_run.activation.astype(str)
    logs = np.log10(pos)[s.early].assign(run=s.run[s.early]).groupby("run").mean()
    layers = logs.rename(columns={c: j for j, c in cols}).reset_index().melt(
        id_vars="run", var_name="layer", value_name="log10_norm")
    layers = layers.merge(per_run[["norm", "activation", "seed"]], left_on="run", right_index=True)
    return per_run.reset_index(), layers


def _activation(g: pd.DataFrame, act: str, margin: float) -> tuple[Difference, str, str, str]:
    """One activation: no norm minus BN early spread, its verdict, detail line and evidence phrase."""
    none, bn = g[g.norm == "none"], g[g.norm == "batch"]
    d = welch_difference(none.early, bn.early)
    d_all = welch_difference(none["all"], bn["all"])
    v = verdict_of(d, margin) if d.n_a and d.n_b else INCONCLUSIVE
    zeros = int(g.zeros.sum())
    line = (f"{act}: spread early: no norm {bracketed(mean_interval(none.early))}, BN "
            f"{bracketed(mean_interval(bn.early))} decades; no norm minus BN {bracketed(d)} -> {v}. Over all probes: "
            f"no norm {short(none['all'].mean())}, BN {short(bn['all'].mean())}, difference {bracketed(d_all)}"
            + (f"; {zeros} layer norms exactly 0 left out of the spreads" if zeros else ""))
    part = f"{act}: no norm {short(none.early.mean())} vs BN {short(bn.early.mean())} decades ({bracketed(d)}, {v})"
    return d, v, line, part


def _figure(layers: pd.DataFrame, activations: list[str]) -> Optional[Figure]:
    if layers.empty:
        return None
    fig, axes = grid(1, len(activations), w=3.6, h=2.8, sharey=True)
    colors = palette(["none", "batch"])
    for ax, act in zip(axes[0], activations):
        g = layers[(layers.activation == act) & np.isfinite(layers.log10_norm.astype(float))]
        for arm in ("none", "batch"):
            a = g[g.norm == arm]
            if a.empty:
                continue
            for _, r in a.groupby("run"):
                r = r.sort_values("layer")
                ax.plot(r.layer, 10 ** r.log10_norm.astype(float), color=colors[arm], alpha=0.25, lw=0.8)
            mean = a.groupby("layer").log10_norm.mean()
            ax.plot(mean.index, 10 ** mean.values, color=colors[arm], lw=1.8, marker="o", ms=3,
                    label=norm_name(arm))
        if ax.has_data():
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="Linear layer (0 = input)", ylabel="weight-gradient L2 norm (log)", title=act)
        legend(ax, fontsize=8)
    fig.suptitle(f"C15: mean over the probes of the first {int(100 * EARLY)}% of training\nfaint: one line per "
                 "seed; bold: geometric mean over seeds (no interval drawn)", fontsize=9)
    return fig
