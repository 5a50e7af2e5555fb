"""C9: BN does not reduce internal covariate shift (Santurkar et al. 2018).

Runs: the ics preset (a layer's gradient before vs after the earlier layers'
update on the same batch: distance and cosine, every 50 steps). Statistic:
BN minus no-norm mean ICS cosine of the last Linear layer (higher = less
shift), Welch; the claim expects BN's shift not to be smaller, and it is
supported when the difference is clearly below 0. Figure: cosine and distance
vs step per arm and layer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import draw, legend, trace
from analysis.claims.probe_tables import arms, completed_series, layer_columns
from analysis.claims.result import ClaimResult
from analysis.claims.rule import CONTRADICTED, NO_EFFECT, SUPPORTED, TRIVIAL, verdict_of
from analysis.claims.runs import ClaimRuns
from analysis.figures import grid, palette
from analysis.stats import Difference, mean_interval, welch_difference
from analysis.summary import norm_name
from analysis.text import bracketed, n_text, short

LITERATURE = "Santurkar et al. 2018 (VGG, CIFAR-10): internal covariate shift is not smaller with BN"
STATISTIC = ("BN minus no-norm mean ICS cosine (gradient of the last Linear layer before vs after the "
             "earlier layers' update; higher = less shift), Welch; the claim expects BN's shift not to be "
             "smaller, i.e. the difference <= 0: supported when it is significantly < 0")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    series, note = completed_series(runs.need("ics").records)
    cos_cols, dist_cols = layer_columns(series, "ics_cosine_"), layer_columns(series, "ics_distance_")
    if not cos_cols:
        return runs.inconclusive(STATISTIC, f"no ICS probe values in the completed runs{note}", unit="cosine")
    per_run = series.groupby("run").agg({"norm": "first", **{c: "mean" for _, c in cos_cols + dist_cols}})
    per_run["norm"] = per_run.norm.astype(str)
    bn, none = per_run[per_run.norm == "batch"], per_run[per_run.norm == "none"]
    last_j, last_c = cos_cols[-1]
    d = welch_difference(bn[last_c], none[last_c])
    details = _layer_lines(bn, none, cos_cols, dist_cols)
    figure = draw("C9", out, lambda: _figure(series, cos_cols, dist_cols), details)
    if d.n_a == 0 or d.n_b == 0:
        missing = [name for name, n in (("BN", d.n_a), ("no norm", d.n_b)) if n == 0]
        return runs.inconclusive(STATISTIC, f"no completed {' or '.join(missing)} run with ICS probes, so the arms "
                                            f"cannot be compared{note}", unit="cosine", figure=figure, details=details)
    verdict = verdict_of(d, runs.claim.margin, expect_positive=False)
    evidence = (f"mean ICS cosine of layer {last_j} (the last Linear layer): BN {short(bn[last_c].mean())}, "
                f"no norm {short(none[last_c].mean())}, difference {bracketed(d, 3)}: {_reading(verdict, d)}. "
                "Figure: ICS cosine (top) and distance (bottom) vs step per arm for each Linear layer >= 1 "
                f"(seeds faint, mean bold){note}.")
    return runs.result(verdict, STATISTIC, interval=d, unit="cosine", n=n_text([d.n_a, d.n_b]), evidence=evidence,
                       figure=figure, details=details)


def _layer_lines(bn: pd.DataFrame, none: pd.DataFrame, cos_cols: list[tuple[int, str]],
                 dist_cols: list[tuple[int, str]]) -> list[str]:
    lines = []
    for j, c in cos_cols:
        lines.append(f"layer {j} cosine: BN {bracketed(mean_interval(bn[c]), 3)}, no norm "
                     f"{bracketed(mean_interval(none[c]), 3)}, BN minus no norm "
                     f"{bracketed(welch_difference(bn[c], none[c]), 3)}")
    for j, c in dist_cols:
        dj = welch_difference(bn[c], none[c])
        lines.append(f"layer {j} distance ||G - G'||: BN {short(mean_interval(bn[c]).mean)}, no norm "
                     f"{short(mean_interval(none[c]).mean)}, BN minus no norm {short(dj.diff)} "
                     f"[{short(dj.low)}, {short(dj.high)}] (raw gradient distances: not scale-free, since BN "
                     "changes the gradients' scale and ||G|| is not recorded)")
    return lines


def _reading(verdict: str, d: Difference) -> str:
    if verdict == SUPPORTED:
        return "lower with BN: more shift with BN, as Santurkar et al. report"
    if verdict == CONTRADICTED:
        return "higher with BN: less shift with BN, i.e. BN does reduce ICS by this measure"
    if verdict in (NO_EFFECT, TRIVIAL):
        return "similar in both arms (within the margin): BN does not meaningfully reduce ICS here, as the claim says"
    if math.isfinite(d.low):
        return ("undecided (the interval contains 0 and reaches past the margin): the data cannot tell whether BN "
                "reduces ICS by this measure")
    return "without an interval (fewer than two seeds in an arm)"


def _figure(series: pd.DataFrame, cos_cols: list[tuple[int, str]],
            dist_cols: list[tuple[int, str]]) -> Optional[Figure]:
    layers = sorted({j for j, _ in cos_cols} | {j for j, _ in dist_cols})
    present = arms(series)
    if not layers or not present:
        return None
    fig, axes = grid(2, len(layers), w=3.2, h=2.8)
    colors = palette(present)
    for k, j in enumerate(layers):
        for row, prefix, label, log in ((0, "ics_cosine_", "ICS cosine (unitless)", False),
                                        (1, "ics_distance_", "ICS distance ||G - G'|| (L2)", True)):
            ax = axes[row, k]
            col = f"{prefix}{j}"
            if col in series:
                for arm in present:
                    trace(ax, series[series.norm.astype(str) == arm], col, colors[arm], norm_name(arm), log=log)
            if log and ax.has_data():
                ax.set_yscale("log")
            ax.set(xlabel="optimizer step", ylabel=label, title=f"Linear layer {j}")
    legend(axes[0, 0], fontsize=8)
    fig.suptitle("C9: faint: one line per seed; bold: mean over seeds (no interval drawn)", fontsize=9)
    return fig
