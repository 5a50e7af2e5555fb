"""C19: BN makes the network insensitive to input scaling.

Runs: the input_scaling preset (the notebook's setup with pixels scaled two
ways, data.normalize=standard (mean 0, std 1) and notebook ([-1, 1]), both
arms, 8 seeds). Statistic: the BN gap (BN minus no-norm test accuracy) under
the notebook's scaling minus the BN gap under standard scaling, in points:
the same number as no norm's change between the scalings (standard minus
notebook) minus BN's, so positive where the scaling moves no norm more than
it moves BN. Test accuracy is read because nothing is selected here (fixed
lr; the notebook's setup may have no validation split). Figure: test accuracy
per (scaling, norm), seeds as dots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, errorbar, label_axes, panel
from analysis.claims.result import ClaimResult
from analysis.claims.rule import combine, headline, verdict_of
from analysis.claims.runs import DIVERGED_NOTE, ClaimRuns, acc_values, counts_note, runs_table
from analysis.collect import NORMALIZE_KEY
from analysis.figures import palette
from analysis.stats import Difference, contrast, mean_interval, welch_difference
from analysis.summary import norm_name, setting_groups
from analysis.text import n_text, with_interval

LITERATURE = ("no published number for this setup; LeCun, Bottou, Orr & Mueller 1998 (Efficient BackProp): "
              "inputs of mean zero speed up SGD; Ioffe & Szegedy 2015: BN makes a layer's output invariant to "
              "the scale of its inputs")
SCALINGS = {"standard": "mean 0, std 1", "notebook": "[-1, 1], the notebook's"}  # data.normalize -> pixels
STATISTIC = ("BN minus no-norm test accuracy with the notebook's pixel scaling ([-1, 1]) minus the same with "
             "standard scaling (mean 0, std 1), in points (= no norm's change between the scalings minus BN's), "
             "expected > 0")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    exp = runs.need("input_scaling")
    df = runs_table(exp)
    df[NORMALIZE_KEY] = df[NORMALIZE_KEY] if NORMALIZE_KEY in df else np.nan
    missing = [f"{norm_name(n)} with data.normalize={s}" for s in SCALINGS for n in ("none", "batch")
               if df[(df[NORMALIZE_KEY] == s) & (df.norm == n)].empty]
    if missing:
        return runs.inconclusive(STATISTIC, f"needs both arms under both scalings; no runs of {', '.join(missing)}",
                                 unit="points")
    a = exp.analysis
    keys = [k for k in a.setting_keys if k != NORMALIZE_KEY] + (["lr"] if a.lr_varies else [])
    settings, details = [], []
    for label, g in setting_groups(a, df, keys):
        moves, note = _moves(g)
        c = contrast(moves["none"], moves["batch"])
        settings.append((label, c, verdict_of(c, runs.claim.margin), moves))
        where = f"{label}: " if label else ""
        details.append(f"{where}no norm moves by {with_interval(moves['none'])}, BN by "
                       f"{with_interval(moves['batch'])} (standard minus notebook scaling); difference "
                       f"{with_interval(c)}{note}")
    details.append("test accuracy (%) by scaling: " + "; ".join(
        f"{norm_name(n)} {' / '.join(_mean(df, n, s) for s in SCALINGS)} (standard / notebook)"
        for n in ("none", "batch")))
    figure = draw("C19", out, lambda: _figure(df), details)
    label, c = headline([s[:3] for s in settings])
    moves = next(s[3] for s in settings if s[0] == label)
    where = f" At {label} (least favourable of {len(settings)} settings; verdict combined over them)" if label else ""
    # After the title in the report's line: "C19: BN makes the network insensitive to input scaling. No norm
    # moves by X points between the two scalings, BN by Y ..."
    evidence = (f"No norm moves by {with_interval(moves['none'])} between the two scalings, BN by "
                f"{with_interval(moves['batch'])} (test accuracy, standard minus notebook scaling).{where} The "
                f"scaling's effect on no norm minus its effect on BN: {with_interval(c)}. "
                f"{DIVERGED_NOTE}. Test accuracy is read: nothing is selected at this fixed lr. Figure: test "
                "accuracy per scaling and norm, mean and 95% t-interval over seeds, seeds as dots.")
    return runs.result(combine(v for _, _, v, _ in settings), STATISTIC, interval=c, unit="points",
                       n=n_text([c.n_a, c.n_b], "seeds per arm and scaling (smallest)"), evidence=evidence,
                       figure=figure, details=details)


def _moves(g: pd.DataFrame) -> tuple[dict[str, Difference], str]:
    """Per norm: test accuracy with standard scaling minus with the notebook's (Welch, points); the note of
    diverged and left-out runs."""
    moves, diverged, left_out = {}, 0, 0
    for norm in ("none", "batch"):
        arm = g[g.norm == norm]
        std, dv1, lo1 = acc_values(arm[arm[NORMALIZE_KEY] == "standard"], "test_acc")
        nb, dv2, lo2 = acc_values(arm[arm[NORMALIZE_KEY] == "notebook"], "test_acc")
        moves[norm] = welch_difference(std, nb)
        diverged, left_out = diverged + dv1 + dv2, left_out + lo1 + lo2
    return moves, counts_note(diverged, left_out)


def _mean(df: pd.DataFrame, norm: str, scaling: str) -> str:
    vals = acc_values(df[(df.norm == norm) & (df[NORMALIZE_KEY] == scaling)], "test_acc")[0]
    return f"{np.mean(vals):.2f}" if vals else "n/a"


def _figure(df: pd.DataFrame) -> Figure:
    fig, ax = panel()
    pal = palette(["batch", "none"])
    for k, norm in enumerate(("none", "batch")):
        x = np.arange(len(SCALINGS)) + (k - 0.5) * 0.25
        groups = [acc_values(df[(df.norm == norm) & (df[NORMALIZE_KEY] == s)], "test_acc")[0] for s in SCALINGS]
        errorbar(ax, list(x), [mean_interval(v) for v in groups], fmt="o", color=pal[norm], label=norm_name(norm))
        for xi, v in zip(x, groups):
            ax.scatter(np.full(len(v), xi + 0.06), v, color=pal[norm], alpha=0.45, s=14, linewidths=0)
    clamp_axis(ax)
    ax.set_xlim(-0.7, len(SCALINGS) - 0.3)
    ax.set_xticks(np.arange(len(SCALINGS)), [f"{s}\n({pixels})" for s, pixels in SCALINGS.items()])
    label_axes(ax, "pixel scaling (data.normalize)", "test accuracy (%)",
               "C19: test accuracy per input scaling\n(bars: mean and 95% t interval over seeds; dots: seeds)")
    return fig
