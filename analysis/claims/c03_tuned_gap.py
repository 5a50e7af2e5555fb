"""C3: with lr tuned per arm the gap shrinks.

Runs: the tune preset (each cell's best lr, chosen on its tuning trials and
shown with its confirmation runs) and the tune_reference preset (the
notebook's lr 0.01 for both arms, on tune's training split). Statistic: per
batch size where the fixed-lr gap is clear of zero and beyond the margin,
|BN minus no norm| at the fixed lr minus the same gap with tuned lrs.
Figure: both gaps per batch size.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, label_axes, panel
from analysis.claims.result import ClaimResult
from analysis.claims.rule import SUPPORTED, headline, verdict_of
from analysis.claims.runs import ClaimRuns, runs_table
from analysis.collect import num
from analysis.figures import palette
from analysis.stats import Difference, contrast, scaled
from analysis.summary import Analysis, norm_name
from analysis.text import n_text, with_interval

LITERATURE = ("Bjorck et al. 2018: at the same small learning rate the two are close; Tuning Playbook: "
              "tune the baseline's lr as well")
NOTEBOOK_LR = 0.01  # the notebook's fixed learning rate
STATISTIC = ("|BN minus no norm| test accuracy at the notebook's fixed lr 0.01 minus the same gap with the lr "
             "tuned per arm (best vs best), in points, at each batch size where the fixed-lr gap is clear of zero "
             "and larger than the margin (the premise); "
             "expected > 0")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    tune, nb = runs.need("tune").analysis, runs.need("tune_reference").analysis
    tuned = _bn_gaps(tune.best_differences if tune.lr_varies else tune.differences)
    fixed = _bn_gaps(nb.differences, NOTEBOOK_LR if nb.lr_varies else None)
    if not nb.lr_varies and nb.fixed.get("lr") is not None and not math.isclose(num(nb.fixed["lr"]), NOTEBOOK_LR):
        fixed = {}
    both = sorted(set(tuned) & set(fixed))
    if not both:
        return runs.inconclusive(STATISTIC, f"no batch size has a BN-vs-no-norm difference in both presets (tune: "
                                            f"{sorted(tuned) or 'none'}; tune_reference at lr {NOTEBOOK_LR}: "
                                            f"{sorted(fixed) or 'none'})")
    rows = [(b, scaled(fixed[b], 100), scaled(tuned[b], 100)) for b in both]
    details, settings = [], []
    for b, f, t in rows:
        line, setting = _compare(b, f, t, runs.claim.margin)
        details.append(line)
        if setting is not None:
            settings.append(setting)
    details.append(_protocol_note(tune, {"tune_reference": runs.need("tune_reference"), "tune": runs.need("tune")}))
    figure = draw("C3", out, lambda: _figure(rows), details)
    if not settings:
        return runs.premise_not_met(STATISTIC, "at no batch size present in both presets is the fixed-lr gap clear of "
                                               f"zero and larger than the margin ({runs.claim.margin:g} points): there is "
                                               "no gap to shrink (the details give each)", figure=figure, details=details)
    label, d = headline(settings)
    evidence = (f"At {label} (least favourable of {len(settings)} batch size(s) with a clear fixed-lr gap) the "
                f"fixed-lr gap exceeds the tuned gap by {with_interval(d)}; verdict combined over batch sizes. "
                "Figure: BN minus no-norm test accuracy per batch size, fixed lr vs tuned lr, 95% Welch intervals.")
    return runs.combined(STATISTIC, settings, interval=d, unit="points",
                       n=n_text([min(d.n_a, d.n_b)], "seeds per arm (smallest)"), evidence=evidence,
                       figure=figure, details=details)


def _bn_gaps(diffs: pd.DataFrame, lr: Optional[float] = None) -> dict[int, Difference]:
    """BN's difference row per batch size (first row where settings vary), at `lr` when the table has lr."""
    if diffs is None or diffs.empty or "_difference" not in diffs:
        return {}
    d = diffs[diffs.norm == "batch"]
    if lr is not None and "lr" in d:
        d = d[np.isclose(pd.to_numeric(d.lr, errors="coerce").astype(float), lr)]
    out: dict[int, Difference] = {}
    for _, row in d.iterrows():
        b = num(row.get("batch_size"))
        if math.isfinite(b) and int(b) not in out:
            out[int(b)] = row["_difference"]
    return out


def _abs(d: Difference) -> Difference:
    """|d| as a difference: the sign flipped where the estimate is negative (se and df kept)."""
    if d.diff >= 0 or math.isnan(d.diff):
        return d
    return Difference(-d.diff, -d.high, -d.low, d.n_a, d.n_b, d.se, d.df)


def _compare(b: int, fixed: Difference, tuned: Difference,
             margin: float) -> tuple[str, Optional[tuple[str, Difference, str]]]:
    """One batch size: its detail line, and its setting (label, |fixed| - |tuned|, verdict) where the
    fixed-lr gap is clear of zero."""
    c = contrast(_abs(fixed), _abs(tuned))
    line = (f"batch {b}: fixed-lr gap {with_interval(fixed)}, tuned gap {with_interval(tuned)}; "
            f"|fixed| - |tuned| {with_interval(c)}")
    premise = verdict_of(_abs(fixed), margin)
    if premise != SUPPORTED:
        return line + f": the fixed-lr gap is {premise} against the margin, no gap to shrink: not counted", None
    return f"{line}: {verdict_of(c, margin)}", (f"batch {b}", c, verdict_of(c, margin))


def _protocol_note(tune: Analysis, exps: dict) -> str:
    how = ("tuned arms: each cell's best lr (chosen on validation accuracy of its tuning trials) shown with its "
           "confirmation runs" if tune.lr_varies else "tune preset with a single lr per arm")
    not_done = []
    for name, exp in exps.items():
        r = runs_table(exp)
        bad = r[r.status != "completed"]
        if len(bad):
            not_done.append(f"{name}: " + ", ".join(f"{len(g)} {st} ({norm_name(n)})" for (st, n), g in
                                                   bad.groupby([bad.status.astype(str), bad.norm.astype(str)])))
    return (f"{how}; means over completed runs, as in the report's tables (unlike C5, C7, C11, C13, a "
            "diverged run is left out here, not counted at chance)"
            + (f"; runs left out: {'; '.join(not_done)}" if not_done else "")
            + ". The interval of |gap| is the signed gap's, reflected where the estimate is negative.")


def _figure(rows: list[tuple[int, Difference, Difference]]) -> Figure:
    fig, ax = panel()
    pal = palette(["batch", "none"])
    for k, (name, idx, color) in enumerate((("fixed lr 0.01 (tune_reference)", 1, pal["none"]),
                                            ("lr tuned per arm (tune)", 2, pal["batch"]))):
        x = np.arange(len(rows)) + (k - 0.5) * 0.25
        d = [r[idx] for r in rows]
        m = np.array([v.diff for v in d])
        lo = np.array([v.low if math.isfinite(v.low) else v.diff for v in d])
        hi = np.array([v.high if math.isfinite(v.high) else v.diff for v in d])
        ax.errorbar(x, m, yerr=[m - lo, hi - m], fmt="o", color=color, capsize=3, label=name)
    ax.axhline(0, color="0.4", linewidth=1)
    clamp_axis(ax, -100.0, 100.0)
    ax.set_xticks(np.arange(len(rows)), [str(r[0]) for r in rows])
    label_axes(ax, "batch size", "BN minus no norm, test acc. (points)",
          "C3: the BN gap at a fixed lr and with tuned lrs\n(bars: 95% Welch interval over seeds)")
    return fig
