"""C2: BN raises the largest stable learning rate.

Runs: the max_lr preset (a log grid of lr per arm), or a sweep without a
preset that has both norms at two or more learning rates. Statistic: per
seed, log10(BN's largest stable lr / no norm's), over the lrs both arms of
that seed tried (an lr only one arm tried says nothing about the other), mean
over seeds with its t interval; per setting where the batch size or other keys
vary. Figure: final validation accuracy against lr per arm.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, label_axes, panel
from analysis.claims.result import ClaimResult
from analysis.claims.rule import headline, verdict_of
from analysis.claims.runs import ClaimRuns, ExperimentRuns, column, families, runs_table
from analysis.figures import palette
from analysis.stats import MeanInterval, mean_interval
from analysis.summary import norm_name, norm_order, setting_groups
from analysis.text import with_interval

LITERATURE = ("Bjorck et al. 2018 (ResNet-110, CIFAR-10): BN's benefit comes mainly from enabling larger "
              "learning rates")
UNSTABLE_VAL_ACC = 0.2  # a run that ends below this validation accuracy did not learn (chance is 0.1)
STATISTIC = ("log10(BN's largest stable lr / no norm's), paired by seed, mean over seeds, expected > 0 "
             f"(unstable: diverged, or final validation accuracy below {UNSTABLE_VAL_ACC:.0%})")
ARMS = ("batch", "none")


def tests_plain_sweep(exp: ExperimentRuns) -> bool:
    return families(exp) == {"mlp"} and {"none", "batch"} <= set(exp.analysis.norms) and exp.analysis.lr_varies


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    exp = runs.need("max_lr")
    df = runs_table(exp)
    df = df[df.status.isin(["completed", "diverged"]) & df.lr.notna() & (df.lr > 0)]
    if not set(ARMS) <= set(df.norm.dropna()):
        return runs.inconclusive(STATISTIC, "needs completed or diverged runs of both BN and no norm")
    a = exp.analysis
    keys = [*(["batch_size"] if len(a.batch_sizes) > 1 else []), *a.setting_keys]
    settings, bounds, details = [], {}, []
    for label, g in setting_groups(a, df, keys):
        m, lines, bounds[label] = _paired_ratio(g)
        details += [f"{label}: {line}" if label else line for line in lines]
        if m is not None:
            settings.append((label, m, verdict_of(m, runs.claim.margin)))
    figure = draw("C2", out, lambda: _figure(df), details)
    if not settings:
        return runs.inconclusive(STATISTIC, "no seed has a stable lr in both arms: no paired ratio", figure=figure,
                                 details=details)
    label, m = headline(settings)
    where = f"At {label} (least favourable of {len(settings)} settings; verdict combined over them), " if label else ""
    ci = f"{10 ** m.low:.2g}x to {10 ** m.high:.2g}x" if math.isfinite(m.low) else "no interval"
    evidence = (f"{where}BN's largest stable lr is {10 ** m.mean:.3g}x no norm's (geometric mean over {m.n} paired "
                f"seeds; {ci}); log10 ratio {with_interval(m, '', 3)}. Diverged runs and runs "
                f"ending below {UNSTABLE_VAL_ACC:.0%} validation accuracy count as unstable. Figure: final "
                f"validation accuracy against lr per arm, one point per seed, diverged runs as crosses at 0."
                f"{bounds[label]}")
    return runs.combined(STATISTIC, settings, interval=m, unit="log10",
                       n=f"{m.n} paired seeds", evidence=evidence, figure=figure, details=details)


def _largest_stable(states: dict[float, bool]) -> tuple[float, bool]:
    """Largest stable lr of one seed and arm, and whether the walk ran off the top of the grid.

    From the smallest stable lr upward (a too-small lr that ends near chance
    within the budget is slow, not unstable) to the last stable lr before the
    first unstable one.
    """
    lrs = sorted(states)
    stable = [lr for lr in lrs if states[lr]]
    if not stable:
        return math.nan, False
    best = stable[0]
    for lr in lrs[lrs.index(best) + 1:]:
        if not states[lr]:
            return best, False
        best = lr
    return best, True


def _per_seed(df: pd.DataFrame) -> dict[str, dict[Any, tuple[float, bool]]]:
    """Per arm and seed: (largest stable lr, ran off the top), on the lrs both arms of that seed tried."""
    ok = (df.status == "completed") & (column(df, "val_acc").astype(float) >= UNSTABLE_VAL_ACC)
    states = {key: g.groupby("lr").ok.all().to_dict()
              for key, g in df.assign(ok=ok).groupby(["norm", "seed"], dropna=False)}
    out: dict[str, dict[Any, tuple[float, bool]]] = {norm: {} for norm in ARMS}
    for (norm, seed), grid in states.items():
        if norm in out:
            other = states.get(("none" if norm == "batch" else "batch", seed))
            shared = {lr: s for lr, s in grid.items() if other is None or lr in other}
            out[norm][seed] = _largest_stable(shared)
    return out


def _paired_ratio(df: pd.DataFrame) -> tuple[Optional[MeanInterval], list[str], str]:
    """Mean log10 ratio over the seeds stable in both arms (None without one), detail lines, and the bound note."""
    per_seed, lines = _per_seed(df), []
    for norm in ARMS:
        arm = df[df.norm == norm]
        if arm.empty:
            lines.append(f"{norm_name(norm)}: no runs")
            continue
        listing = ", ".join(f"seed {s}: {v[0]:g}" if math.isfinite(v[0]) else f"seed {s}: none stable"
                            for s, v in sorted(per_seed[norm].items(), key=lambda kv: str(kv[0])))
        n_chance = int(((arm.status == "completed") & (column(arm, "val_acc").astype(float) < UNSTABLE_VAL_ACC)).sum())
        lines.append(f"{norm_name(norm)}: largest stable lr, {listing} (grid up to {arm.lr.max():g}); "
                     f"{int((arm.status == 'diverged').sum())} diverged run(s), {n_chance} completed below "
                     f"{UNSTABLE_VAL_ACC:.0%} (too-slow small lrs included)")
    bn, no = per_seed["batch"], per_seed["none"]
    seeds = [s for s in bn if s in no and math.isfinite(bn[s][0]) and math.isfinite(no[s][0])]
    dropped = [s for s in sorted(set(bn) | set(no), key=str) if s not in seeds]
    if dropped:
        lines.append(f"seeds without a pair (an arm has no stable lr or no run): {', '.join(map(str, dropped))}")
    if not seeds:
        return None, lines, ""
    m = mean_interval([math.log10(bn[s][0] / no[s][0]) for s in seeds])
    return m, lines, _bound_note(any(bn[s][1] for s in seeds), any(no[s][1] for s in seeds))


def _bound_note(bn_top: bool, none_top: bool) -> str:
    if bn_top and none_top:
        return (" Both arms were stable at the largest lr tried for some seed: the grid does not reach "
                "their limits, so the ratio bounds nothing.")
    if bn_top:
        return " BN was stable at the largest lr tried for some seed: the statistic is a lower bound."
    if none_top:
        return " No norm was stable at the largest lr tried for some seed: the statistic is an upper bound."
    return ""


def _figure(df: pd.DataFrame) -> Figure:
    fig, ax = panel()
    pal = palette(df.norm)
    for norm in norm_order(df.norm):
        arm = df[df.norm == norm]
        acc = np.where(arm.status == "completed", column(arm, "val_acc").astype(float), 0.0) * 100
        done = (arm.status == "completed").to_numpy()
        ax.scatter(arm.lr[done], acc[done], color=pal[norm], s=14, alpha=0.7)
        ax.scatter(arm.lr[~done], acc[~done], color=pal[norm], marker="x", s=30)
        lrs = sorted(arm.lr.unique())
        ax.plot(lrs, [np.mean(acc[(arm.lr == lr).to_numpy()]) for lr in lrs], color=pal[norm], label=norm_name(norm))
    ax.axhline(UNSTABLE_VAL_ACC * 100, color="0.4", linestyle="--", linewidth=1, label="stability threshold")
    ax.set_xscale("log")
    clamp_axis(ax)
    label_axes(ax, "learning rate (log scale)", "final validation accuracy (%)",
          "C2: final accuracy vs lr\n(dots: seeds; line: mean over seeds; x: diverged, at 0)")
    return fig
