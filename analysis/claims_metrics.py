"""Claims answered from final metrics, per-epoch history and the val_acc probe.

C2 (max_lr), C3 (tune + notebook), C4 (steps_to_target), C5 (small_batch),
C7 (ghost), C11 (ioffe2015 + notebook), C12 (regularization),
C13 (linear_scaling), C14 (overhead). Each `claim_cN(exps, out)` reads the
runs of its preset(s) (`analysis.claims.CLAIMS`), computes one signed
statistic with a 95% interval over seeds (`analysis.stats`), takes its
verdict from `analysis.claims`' one rule, and draws one figure
`out/claim_cN.png`.

Conventions shared by these claims (each result's evidence repeats the ones
that apply):
- A diverged run has no final accuracy; where a claim compares accuracies it
  counts at chance (CHANCE_ACC): a model whose weights went non-finite
  predicts no better than chance, and leaving it out would credit the arm
  that blew up with its surviving seeds. Failed and pruned runs are left out
  and counted. Timing (C14) and the train/test gap (C12) use completed runs.
- A claim checked per setting (batch size, ghost size) takes its verdict from
  `combine` over the settings; its headline value is the least favourable
  setting's (the lowest interval bound on the expected side), so that a
  supported claim's headline interval is itself clear of zero. `details`
  lists every setting.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from analysis.claims import (CLAIMS, INCONCLUSIVE, LITERATURE, NOT_SUPPORTED, SUPPORTED,  # noqa: E402
                             ClaimResult, ExperimentRuns, combine, guarded, not_run,
                             save_figure, verdict_of)
from analysis.figures import DPI, log2_batch_axis  # noqa: E402
from analysis.stats import (Difference, contrast, interval_bounds, mean_interval,  # noqa: E402
                            welch_difference)
from analysis.summary import NORM_NAMES, norm_name  # noqa: E402

# C2: a run that ends below this validation accuracy did not learn (chance is 0.1).
UNSTABLE_VAL_ACC = 0.2
# C4: the validation accuracy to reach (the protocol's "e.g. 97%").
TARGET_VAL_ACC = 0.97
# C4: a doubling of the batch size that cuts the steps to target by less than this
# fraction of perfect (1/B) scaling marks the end of the 1/B regime (Shallue et al. 2018).
PERFECT_SCALING_FRACTION = 0.5
# C3: the notebook's fixed learning rate; C5, C13: the reference batch size.
NOTEBOOK_LR = 0.01
REFERENCE_BATCH = 64
# Accuracy a diverged run counts at where accuracies are compared (ten classes).
CHANCE_ACC = 0.1
DIVERGED_NOTE = f"A diverged run counts at chance accuracy ({CHANCE_ACC:.0%}); failed and pruned runs are left out"


# ------------------------------------------------------------------ plumbing
def _presets(claim: str, exps: Mapping[str, ExperimentRuns]) -> str:
    names = []
    for p in CLAIMS[claim][1]:
        e = exps.get(p)
        names.append(f"quick/{p}" if e is not None and e.quick else p)
    return ", ".join(names)


def _result(claim: str, exps: Mapping[str, ExperimentRuns], **kw: Any) -> ClaimResult:
    return ClaimResult(claim=claim, title=CLAIMS[claim][0], experiment=_presets(claim, exps),
                       literature=LITERATURE[claim], **kw)


def _inconclusive(claim: str, statistic: str, why: str, exps: Mapping[str, ExperimentRuns],
                  details: Optional[list[str]] = None) -> ClaimResult:
    return _result(claim, exps, verdict=INCONCLUSIVE, statistic=statistic, evidence=why,
                   details=details or [])


def _missing(claim: str, exps: Mapping[str, ExperimentRuns], presets: Iterable[str] | None = None) -> Optional[str]:
    """The first needed preset without runs, or None."""
    for p in presets if presets is not None else CLAIMS[claim][1]:
        if p not in exps:
            return p
    return None


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series(np.nan, index=df.index, dtype=float)


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool) and math.isfinite(float(x))


def _runs(e: ExperimentRuns) -> pd.DataFrame:
    df = e.runs.copy()
    for c in ("norm", "batch_size", "lr", "seed", "status", "val_acc", "test_acc"):
        if c not in df.columns:
            df[c] = np.nan
    df["batch_size"] = pd.to_numeric(df["batch_size"], errors="coerce")
    df["lr"] = pd.to_numeric(df["lr"], errors="coerce")
    return df


def _scaled(d: Difference, k: float) -> Difference:
    """The same difference in other units (k = 100: fractions to points)."""
    return Difference(d.diff * k, d.low * k, d.high * k, d.n_a, d.n_b, d.se * abs(k), d.df)


def _abs(d: Difference) -> Difference:
    """|d| as a difference: the sign flipped where the estimate is negative (se and df kept)."""
    if d.diff >= 0 or math.isnan(d.diff):
        return d
    return Difference(-d.diff, -d.high, -d.low, d.n_a, d.n_b, d.se, d.df)


def _interval(v: float, lo: float, hi: float, unit: str = " points", digits: int = 2) -> str:
    if not math.isfinite(v):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{v:+.{digits}f}{unit} (no interval: fewer than two seeds)"
    return f"{v:+.{digits}f}{unit} ({lo:+.{digits}f} to {hi:+.{digits}f})"


def _d_text(d: Difference, unit: str = " points", digits: int = 2) -> str:
    return _interval(d.diff, d.low, d.high, unit, digits)


def _n_text(counts: Iterable[int], what: str = "seeds per arm") -> str:
    c = [int(x) for x in counts if x]
    if not c:
        return f"0 {what}"
    lo, hi = min(c), max(c)
    return f"{lo} {what}" if lo == hi else f"{lo} to {hi} {what}"


def _headline(settings: list[tuple[str, Difference, str]], expect_positive: bool = True) -> tuple[str, Difference]:
    """The least favourable setting: lowest low bound (expected > 0), highest high bound (expected < 0)."""
    def key(s: tuple[str, Difference, str]) -> float:
        d = s[1]
        bound = d.low if expect_positive else -d.high
        return bound if math.isfinite(bound) else -math.inf
    label, d, _ = min(settings, key=key)
    return label, d


def _acc_values(g: pd.DataFrame, metric: str, scale: float = 100.0) -> tuple[list[float], int, int]:
    """Per-run accuracies in points (completed: the metric; diverged: chance); (values, n diverged, n left out)."""
    vals: list[float] = []
    diverged = left_out = 0
    for status, v in zip(g["status"], _col(g, metric)):
        if status == "completed" and _finite(v):
            vals.append(scale * float(v))
        elif status == "diverged":
            vals.append(scale * CHANCE_ACC)
            diverged += 1
        else:
            left_out += 1
    return vals, diverged, left_out


def _counts_note(diverged: int, left_out: int) -> str:
    parts = []
    if diverged:
        parts.append(f"{diverged} diverged run{'s' if diverged != 1 else ''} counted at chance")
    if left_out:
        parts.append(f"{left_out} failed/pruned/incomplete run{'s' if left_out != 1 else ''} left out")
    return f" ({'; '.join(parts)})" if parts else ""


def _dedupe_records(records: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
    """One record per key (cell and seed): the newest by finished_at, as summary.drop_repeats keeps."""
    best: dict[Any, dict[str, Any]] = {}
    for r in records:
        if not isinstance(r, dict):
            continue
        k = json.dumps(key(r), default=str)
        if k not in best or str(r.get("finished_at") or "") >= str(best[k].get("finished_at") or ""):
            best[k] = r
    return list(best.values())


def _cfg(r: dict[str, Any]) -> dict[str, Any]:
    c = r.get("config")
    return c if isinstance(c, dict) else {}


def _norm_of(r: dict[str, Any]) -> Any:
    m = _cfg(r).get("model")
    return m.get("norm") if isinstance(m, dict) else None


def _seed_of(r: dict[str, Any]) -> Any:
    return r.get("seed", _cfg(r).get("seed"))


def _val_series(r: dict[str, Any]) -> tuple[list[tuple[float, float]], str]:
    """(step, val_acc) pairs from the val_acc probe, else from the per-epoch history; and which."""
    probes = r.get("probes")
    series = probes.get("series") if isinstance(probes, dict) else None
    pts = []
    for s in series if isinstance(series, list) else []:
        if isinstance(s, dict) and _finite(s.get("step")) and _finite(s.get("val_acc")):
            pts.append((float(s["step"]), float(s["val_acc"])))
    if pts:
        return sorted(pts), "probe"
    hist = r.get("history") if isinstance(r.get("history"), list) else []
    pts = [(float(h["step"]), float(h["val_acc"])) for h in hist
           if isinstance(h, dict) and _finite(h.get("step")) and _finite(h.get("val_acc"))]
    return sorted(pts), ("history" if pts else "none")


# ------------------------------------------------------------------ figures
def _palette(norms: Iterable[Any]) -> dict[Any, Any]:
    colors = sns.color_palette("colorblind", 10)
    fixed = {"batch": colors[0], "none": colors[1], "ghost": colors[2], "layer": colors[3], "group": colors[4]}
    spare = iter(colors[5:])
    return {n: fixed.get(str(n)) or next(spare, "gray") for n in norms}


def _norm_order(norms: Iterable[Any]) -> list[Any]:
    order = list(NORM_NAMES)
    return sorted(set(n for n in norms if isinstance(n, str)),
                  key=lambda n: (order.index(n) if n in order else len(order), n))


def _figure(cols: int = 1, width: float = 5.2, height: float = 3.6) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * cols, height), dpi=DPI, layout="constrained")
    return fig, fig.subplots(1, cols, squeeze=False)[0]


def _log_y(ax) -> None:
    """A log y axis with ticks at 1, 2, 3, 5, 7 per decade (data within one decade still get labelled ticks)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _mean_band(ax, xs: list[float], groups: list[list[float]], color: Any, label: str,
               bars: bool = False, marker: str = "o") -> None:
    """Mean over seeds at each x with its 95% t-interval (bars or band; none for one seed)."""
    pts = [(x, float(np.mean(v)), *interval_bounds(v)) for x, v in zip(xs, groups) if len(v)]
    if not pts:
        return
    x, m, lo, hi = (np.array(c, dtype=float) for c in zip(*pts))
    if bars:
        ax.errorbar(x, m, yerr=[m - lo, hi - m], color=color, marker=marker, capsize=3, label=label)
    else:
        ax.plot(x, m, color=color, label=label)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)


def clamp_axis(ax, low: float = 0.0, high: float = 100.0) -> None:
    """Keep an axis within the range its quantity can take (accuracy: 0-100%; a difference of two: +-100 points).

    The 95% t interval of 2 seeds has a t quantile of 12.7 and can reach far
    past the possible range; left alone it sets the axis (-200..300%) and
    flattens the data to a line. Bars that run past the edge are cut there.
    """
    y0, y1 = ax.get_ylim()
    pad = 0.03 * (high - low)
    ax.set_ylim(max(y0, low - pad), min(y1, high + pad))


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False)


def _draw(claim: str, out: Path, draw: Callable[[], Figure], details: list[str]) -> Optional[str]:
    """Draw and save one claim figure; a drawing error costs the figure, not the claim (noted in details)."""
    try:
        return save_figure(draw(), out, claim)
    except Exception as e:
        details.append(f"figure not drawn: {type(e).__name__}: {e}")
        return None


# ------------------------------------------------------------------ C2
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


@guarded("C2")
def claim_c2(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    claim = "C2"
    if _missing(claim, exps):
        return not_run(claim)
    statistic = ("log10(BN's largest stable lr / no norm's), paired by seed, mean over seeds, expected > 0 "
                 f"(unstable: diverged, or final validation accuracy below {UNSTABLE_VAL_ACC:.0%})")
    df = _runs(exps["max_lr"])
    df = df[df.status.isin(["completed", "diverged"]) & df.lr.notna() & (df.lr > 0)]
    if not {"none", "batch"} <= set(df.norm.dropna()):
        return _inconclusive(claim, statistic, "needs completed or diverged runs of both BN and no norm", exps)
    details: list[str] = []
    per_seed: dict[str, dict[Any, tuple[float, bool]]] = {}
    for norm in ("batch", "none"):
        arm = df[df.norm == norm]
        per_seed[norm] = {}
        for seed, g in arm.groupby("seed", dropna=False):
            states: dict[float, bool] = {}
            for lr, h in g.groupby("lr"):
                ok = (h.status == "completed") & (_col(h, "val_acc").astype(float) >= UNSTABLE_VAL_ACC)
                states[float(lr)] = bool(ok.all())
            per_seed[norm][seed] = _largest_stable(states)
        top = arm.lr.max()
        n_div = int((arm.status == "diverged").sum())
        n_chance = int(((arm.status == "completed") & (_col(arm, "val_acc").astype(float) < UNSTABLE_VAL_ACC)).sum())
        listing = ", ".join(f"seed {s}: {v[0]:g}" if math.isfinite(v[0]) else f"seed {s}: none stable"
                            for s, v in sorted(per_seed[norm].items(), key=lambda kv: str(kv[0])))
        details.append(f"{norm_name(norm)}: largest stable lr, {listing} (grid up to {top:g}); "
                       f"{n_div} diverged run(s), {n_chance} completed below {UNSTABLE_VAL_ACC:.0%} "
                       "(too-slow small lrs included)")
    seeds = [s for s in per_seed["batch"] if s in per_seed["none"]
             and math.isfinite(per_seed["batch"][s][0]) and math.isfinite(per_seed["none"][s][0])]
    dropped = sorted(set(per_seed["batch"]) | set(per_seed["none"]), key=str)
    dropped = [s for s in dropped if s not in seeds]
    if dropped:
        details.append(f"seeds without a pair (an arm has no stable lr or no run): {', '.join(map(str, dropped))}")
    if not seeds:
        fig_name = _draw(claim, out, lambda: _fig_c2(df), details)
        return _result(claim, exps, verdict=INCONCLUSIVE, statistic=statistic, figure=fig_name, details=details,
                       evidence="no seed has a stable lr in both arms: no paired ratio")
    logs = [math.log10(per_seed["batch"][s][0] / per_seed["none"][s][0]) for s in seeds]
    m = mean_interval(logs)
    bn_top = any(per_seed["batch"][s][1] for s in seeds)
    none_top = any(per_seed["none"][s][1] for s in seeds)
    bound = ""
    if bn_top and none_top:
        bound = (" Both arms were stable at the largest lr tried for some seed: the grid does not reach "
                 "their limits, so the ratio bounds nothing.")
    elif bn_top:
        bound = " BN was stable at the largest lr tried for some seed: the statistic is a lower bound."
    elif none_top:
        bound = " No norm was stable at the largest lr tried for some seed: the statistic is an upper bound."
    ratio = 10 ** m.mean
    ci = (f"{10 ** m.low:.2g}x to {10 ** m.high:.2g}x" if math.isfinite(m.low) else "no interval")
    evidence = (f"BN's largest stable lr is {ratio:.3g}x no norm's (geometric mean over {m.n} paired seeds; "
                f"{ci}); log10 ratio {_interval(m.mean, m.low, m.high, '', 3)}. Diverged runs and runs ending "
                f"below {UNSTABLE_VAL_ACC:.0%} validation accuracy count as unstable. Figure: final validation "
                f"accuracy against lr per arm, one point per seed, diverged runs as crosses at 0.{bound}")
    fig_name = _draw(claim, out, lambda: _fig_c2(df), details)
    return _result(claim, exps, verdict=verdict_of(m), statistic=statistic, value=m.mean, low=m.low, high=m.high,
                   unit="log10", n=f"{m.n} paired seeds", evidence=evidence, figure=fig_name, details=details)


def _fig_c2(df: pd.DataFrame) -> Figure:
    fig, (ax,) = _figure()
    pal = _palette(df.norm)
    for norm in _norm_order(df.norm):
        arm = df[df.norm == norm]
        acc = np.where(arm.status == "completed", _col(arm, "val_acc").astype(float), 0.0) * 100
        done = (arm.status == "completed").to_numpy()
        ax.scatter(arm.lr[done], acc[done], color=pal[norm], s=14, alpha=0.7)
        ax.scatter(arm.lr[~done], acc[~done], color=pal[norm], marker="x", s=30)
        lrs = sorted(arm.lr.unique())
        ax.plot(lrs, [np.mean(acc[(arm.lr == lr).to_numpy()]) for lr in lrs], color=pal[norm], label=norm_name(norm))
    ax.axhline(UNSTABLE_VAL_ACC * 100, color="0.4", linestyle="--", linewidth=1, label="stability threshold")
    ax.set_xscale("log")
    clamp_axis(ax)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("final validation accuracy (%)")
    ax.set_title("C2: final accuracy vs lr\n(dots: seeds; line: mean over seeds; x: diverged, at 0)", fontsize=9)
    _legend(ax)
    return fig


# ------------------------------------------------------------------ C3
def _batch_rows(diffs: pd.DataFrame, lr: Optional[float] = None) -> dict[int, Difference]:
    """BN's difference row per batch size (first row where settings vary), at `lr` when the table has lr."""
    if diffs is None or diffs.empty or "_difference" not in diffs:
        return {}
    d = diffs[diffs.norm == "batch"]
    if lr is not None and "lr" in d:
        d = d[np.isclose(pd.to_numeric(d.lr, errors="coerce").astype(float), lr)]
    out: dict[int, Difference] = {}
    for _, row in d.iterrows():
        if _finite(_num(row.get("batch_size"))) and int(row["batch_size"]) not in out:
            out[int(row["batch_size"])] = row["_difference"]
    return out


@guarded("C3")
def claim_c3(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    claim = "C3"
    if _missing(claim, exps):
        return not_run(claim, f"no runs of preset {_missing(claim, exps)}")
    statistic = ("|BN minus no norm| test accuracy at the notebook's fixed lr 0.01 minus the same gap with the lr "
                 "tuned per arm (best vs best), in points, at each batch size where the fixed-lr gap is clear; "
                 "expected > 0")
    tune, nb = exps["tune"].analysis, exps["notebook"].analysis
    tuned = _batch_rows(tune.best_differences if tune.lr_varies else tune.differences)
    fixed = _batch_rows(nb.differences, NOTEBOOK_LR if nb.lr_varies else None)
    if not nb.lr_varies and nb.fixed.get("lr") is not None and not math.isclose(_num(nb.fixed["lr"]), NOTEBOOK_LR):
        fixed = {}
    both = sorted(set(tuned) & set(fixed))
    if not both:
        return _inconclusive(claim, statistic,
                             f"no batch size has a BN-vs-no-norm difference in both presets (tune: "
                             f"{sorted(tuned) or 'none'}; notebook at lr {NOTEBOOK_LR}: {sorted(fixed) or 'none'})",
                             exps)
    details, settings, rows = [], [], []
    for b in both:
        f, t = _scaled(fixed[b], 100), _scaled(tuned[b], 100)
        c = contrast(_abs(f), _abs(t))
        clear = verdict_of(f) != INCONCLUSIVE
        rows.append((b, f, t))
        line = (f"batch {b}: fixed-lr gap {_d_text(f)}, tuned gap {_d_text(t)}; "
                f"|fixed| - |tuned| {_d_text(c)}")
        if clear:
            settings.append((f"batch {b}", c, verdict_of(c)))
            line += f": {verdict_of(c)}"
        else:
            line += ": fixed-lr gap not clear of zero, not counted"
        details.append(line)
    how = ("tuned arms: each cell's best lr (chosen on validation accuracy of its tuning trials) shown with its "
           "confirmation runs" if tune.lr_varies else "tune preset with a single lr per arm")
    not_done = []
    for name in ("notebook", "tune"):
        r = _runs(exps[name])
        bad = r[r.status != "completed"]
        if len(bad):
            not_done.append(f"{name}: " + ", ".join(f"{len(g)} {st} ({norm_name(n)})" for (st, n), g in
                                                   bad.groupby([bad.status.astype(str), bad.norm.astype(str)])))
    details.append(f"{how}; means over completed runs, as in the report's tables (unlike C5, C7, C11, C13, a "
                   "diverged run is left out here, not counted at chance)"
                   + (f"; runs left out: {'; '.join(not_done)}" if not_done else "")
                   + ". The interval of |gap| is the signed gap's, reflected where the estimate is negative.")
    fig_name = _draw(claim, out, lambda: _fig_c3(rows), details)
    if not settings:
        return _result(claim, exps, verdict=INCONCLUSIVE, statistic=statistic, figure=fig_name, details=details,
                       evidence="the fixed-lr gap is not clear of zero at any batch size present in both presets: "
                                "there is no gap to shrink")
    verdict = combine([v for _, _, v in settings])
    label, d = _headline(settings)
    evidence = (f"At {label} (least favourable of {len(settings)} batch size(s) with a clear fixed-lr gap) the "
                f"fixed-lr gap exceeds the tuned gap by {_d_text(d)}; verdict combined over batch sizes. "
                "Figure: BN minus no-norm test accuracy per batch size, fixed lr vs tuned lr, 95% Welch intervals.")
    return _result(claim, exps, verdict=verdict, statistic=statistic, value=d.diff, low=d.low, high=d.high,
                   unit="points", n=_n_text([min(d.n_a, d.n_b)], "seeds per arm (smallest)"),
                   evidence=evidence, figure=fig_name, details=details)


def _fig_c3(rows: list[tuple[int, Difference, Difference]]) -> Figure:
    fig, (ax,) = _figure()
    colors = sns.color_palette("colorblind", 10)
    for k, (name, idx, color) in enumerate((("fixed lr 0.01 (notebook)", 1, colors[1]),
                                            ("lr tuned per arm (tune)", 2, colors[0]))):
        x = np.arange(len(rows)) + (k - 0.5) * 0.25
        d = [r[idx] for r in rows]
        m = np.array([v.diff for v in d])
        lo = np.array([v.low if math.isfinite(v.low) else v.diff for v in d])
        hi = np.array([v.high if math.isfinite(v.high) else v.diff for v in d])
        ax.errorbar(x, m, yerr=[m - lo, hi - m], fmt="o", color=color, capsize=3, label=name)
    ax.axhline(0, color="0.4", linewidth=1)
    clamp_axis(ax, -100.0, 100.0)
    ax.set_xticks(np.arange(len(rows)), [str(r[0]) for r in rows])
    ax.set_xlabel("batch size")
    ax.set_ylabel("BN minus no norm, test acc. (points)")
    ax.set_title("C3: the BN gap at a fixed lr and with tuned lrs\n(bars: 95% Welch interval over seeds)",
                 fontsize=9)
    _legend(ax)
    return fig


# ------------------------------------------------------------------ C4
def _steps_to_target(r: dict[str, Any]) -> tuple[float, str]:
    """First step with val_acc >= target (inf: censored: never reached, or the run diverged); and the source."""
    pts, source = _val_series(r)
    if r.get("status") != "completed":
        return math.inf, source
    for step, acc in pts:
        if acc >= TARGET_VAL_ACC:
            return max(step, 1.0), source
    return math.inf, source


def _budget(r: dict[str, Any]) -> float:
    steps = _cfg(r).get("steps")
    if _finite(steps):
        return float(steps)
    pts, _ = _val_series(r)
    final = r.get("final") if isinstance(r.get("final"), dict) else {}
    return max([p[0] for p in pts] + ([float(final["step"])] if _finite(final.get("step")) else []) + [1.0])


@guarded("C4")
def claim_c4(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    claim = "C4"
    if _missing(claim, exps):
        return not_run(claim)
    statistic = (f"log10(no norm's steps / BN's steps) to {TARGET_VAL_ACC:.0%} validation accuracy at each arm's "
                 "best lr, per batch size (Welch over seeds), expected > 0")
    recs = [r for r in exps["steps_to_target"].records if r.get("status") in ("completed", "diverged")]
    recs = _dedupe_records(recs, lambda r: [_norm_of(r), _cfg(r).get("batch_size"), _cfg(r).get("lr"), _seed_of(r)])
    rows = []
    for r in recs:
        steps, source = _steps_to_target(r)
        b, lr = _num(_cfg(r).get("batch_size")), _num(_cfg(r).get("lr"))
        if _norm_of(r) is None or not (_finite(b) and _finite(lr)):
            continue
        rows.append({"norm": _norm_of(r), "batch_size": int(b), "lr": lr, "seed": _seed_of(r), "steps": steps,
                     "source": source, "budget": _budget(r), "status": r.get("status")})
    df = pd.DataFrame(rows)
    if df.empty or not {"none", "batch"} <= set(df.norm):
        return _inconclusive(claim, statistic, "needs completed or diverged runs of both BN and no norm", exps)
    details: list[str] = []
    n_hist = int((df.source == "history").sum())
    if n_hist:
        details.append(f"{n_hist} run(s) without a val_acc probe series: steps read from per-epoch validation "
                       "(coarser: an upper bound on the step the target was first reached)")
    chosen: dict[tuple[Any, int], dict[str, Any]] = {}
    for (norm, b), g in df.groupby(["norm", "batch_size"]):
        reached = {lr: h for lr, h in g.groupby("lr") if np.isfinite(h.steps).all()}
        if reached:
            lr = min(reached, key=lambda k: (float(np.median(reached[k].steps)), k))
            chosen[(norm, b)] = {"lr": lr, "steps": list(reached[lr].steps), "censored": False,
                                 "n_lr": g.lr.nunique(), "edge": lr == g.lr.max() and g.lr.nunique() > 1}
        else:
            n = int(g.groupby("lr").size().max())
            chosen[(norm, b)] = {"lr": math.nan, "steps": [float(g.budget.max())] * n, "censored": True,
                                 "n_lr": g.lr.nunique()}
    settings, plot_rows = [], []
    for b in sorted(df.batch_size.unique()):
        bn, no = chosen.get(("batch", b)), chosen.get(("none", b))
        for norm, c in (("batch", bn), ("none", no)):
            if c:
                plot_rows.append({"norm": norm, "batch_size": b, **c})
        if not (bn and no):
            details.append(f"batch {b}: an arm has no runs")
            continue
        def arm_text(name: str, c: dict[str, Any]) -> str:
            if c["censored"]:
                return (f"{name} never reached it at any of {c['n_lr']} lr(s) "
                        f"(censored at the {c['steps'][0]:.0f}-step budget)")
            edge = " (the largest lr tried: a larger one might be faster)" if c.get("edge") else ""
            return f"{name} median {np.median(c['steps']):.0f} steps at lr {c['lr']:g}{edge}"
        text = f"batch {b}: {arm_text('BN', bn)}; {arm_text('no norm', no)}"
        if bn["censored"] and no["censored"]:
            details.append(text + ": neither arm reached the target, no statistic")
            continue
        d = welch_difference(np.log10(no["steps"]), np.log10(bn["steps"]))
        v = verdict_of(d)
        if no["censored"]:
            text += "; a lower bound (no norm censored)"
        elif bn["censored"]:
            text += "; an upper bound (BN censored)"
        details.append(f"{text}; log10 ratio {_d_text(d, '', 3)} ({10 ** d.diff:.3g}x): {v}")
        settings.append((f"batch {b}", d, v))
    details.extend(_scaling_lines(plot_rows))
    fig_name = _draw(claim, out, lambda: _fig_c4(plot_rows), details)
    if not settings:
        return _result(claim, exps, verdict=INCONCLUSIVE, statistic=statistic, figure=fig_name, details=details,
                       evidence=f"at no batch size did either arm reach {TARGET_VAL_ACC:.0%} validation accuracy "
                                "within the budget")
    verdict = combine([v for _, _, v in settings])
    label, d = _headline(settings)
    evidence = (f"At {label} (least favourable of {len(settings)} batch size(s)) no norm needs {10 ** d.diff:.3g}x "
                f"BN's steps to {TARGET_VAL_ACC:.0%} validation accuracy (log10 {_d_text(d, '', 3)}); verdict "
                "combined over batch sizes. Each arm's lr is the one with the fewest median steps among lrs where "
                "every seed reached the target; a run that never reached it, or diverged, counts as not reaching "
                "it. Figure: steps to target vs batch size (log-log), one point per seed, median line, dashed "
                "perfect 1/B scaling.")
    return _result(claim, exps, verdict=verdict, statistic=statistic, value=d.diff, low=d.low, high=d.high,
                   unit="log10", n=_n_text([min(d.n_a, d.n_b)], "seeds per arm (smallest)"), evidence=evidence,
                   figure=fig_name, details=details)


def _scaling_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per arm: where the steps to target stop falling as 1/B (Shallue et al. 2018's perfect-scaling regime)."""
    out = []
    for norm in _norm_order(r["norm"] for r in rows):
        pts = sorted((r["batch_size"], float(np.median(r["steps"]))) for r in rows
                     if r["norm"] == norm and not r["censored"])
        if len(pts) < 2:
            continue
        effs, stop = [], None
        for (b1, s1), (b2, s2) in zip(pts, pts[1:]):
            eff = (s1 / s2) / (b2 / b1)
            effs.append(f"{b1}->{b2}: {eff:.2f}")
            if stop is None and eff < PERFECT_SCALING_FRACTION:
                stop = (b1, b2)
        where = (f"stops scaling as 1/B between batch {stop[0]} and {stop[1]}" if stop
                 else "scales within a factor 2 of 1/B across the range tried")
        out.append(f"{norm_name(norm)}: {where} (fraction of perfect scaling per step up: {', '.join(effs)}; "
                   f"below {PERFECT_SCALING_FRACTION} counts as the end of the 1/B regime)")
    return out


def _fig_c4(rows: list[dict[str, Any]]) -> Figure:
    fig, (ax,) = _figure()
    pal = _palette(r["norm"] for r in rows)
    for norm in _norm_order(r["norm"] for r in rows):
        mine = sorted((r for r in rows if r["norm"] == norm), key=lambda r: r["batch_size"])
        ok = [r for r in mine if not r["censored"]]
        for r in ok:
            ax.scatter([r["batch_size"]] * len(r["steps"]), r["steps"], color=pal[norm], s=12, alpha=0.6)
        if ok:
            xs = [r["batch_size"] for r in ok]
            med = [float(np.median(r["steps"])) for r in ok]
            ax.plot(xs, med, color=pal[norm], marker="o", label=norm_name(norm))
            ax.plot(xs, [med[0] * xs[0] / x for x in xs], color=pal[norm], linestyle="--", linewidth=0.8)
        for r in mine:
            if r["censored"]:
                ax.scatter([r["batch_size"]], [r["steps"][0]], color=pal[norm], marker="^", s=40)
    ax.set_xscale("log", base=2)
    _log_y(ax)
    log2_batch_axis(ax, [r["batch_size"] for r in rows])
    ax.set_xlabel("batch size (examples per step)")
    ax.set_ylabel(f"optimizer steps to {TARGET_VAL_ACC:.0%} val. accuracy")
    ax.set_title("C4: steps to target (dots: seeds; line: median over seeds;\n"
                 "dashed: perfect 1/B scaling; triangle: never reached, at the budget)", fontsize=9)
    _legend(ax)
    return fig


# ------------------------------------------------------------------ C5
@guarded("C5")
def claim_c5(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    claim = "C5"
    if _missing(claim, exps):
        return not_run(claim)
    df = _runs(exps["small_batch"])
    df = df[df.batch_size.notna()]
    norms = _norm_order(df.norm.dropna())
    statistic = ("BN's rise in test error from the reference batch to the smallest batch minus the largest such "
                 "rise among the other norms, in points, expected > 0")
    others = [n for n in norms if n != "batch"]
    if "batch" not in norms or not others:
        return _inconclusive(claim, statistic, "needs BN and at least one other norm", exps)
    sizes = sorted(set(df[df.norm == "batch"].batch_size) & set(df[df.norm.isin(others)].batch_size))
    if len(sizes) < 2:
        return _inconclusive(claim, statistic, "needs two batch sizes shared by BN and another norm", exps)
    small = int(sizes[0])
    ref = REFERENCE_BATCH if REFERENCE_BATCH in sizes else int(sizes[-1])
    details = [] if ref == REFERENCE_BATCH else [f"no batch {REFERENCE_BATCH}: the reference is batch {ref}"]
    rises: dict[Any, Difference] = {}
    for norm in norms:
        a_small, dv1, lo1 = _acc_values(df[(df.norm == norm) & (df.batch_size == small)], "test_acc")
        a_ref, dv2, lo2 = _acc_values(df[(df.norm == norm) & (df.batch_size == ref)], "test_acc")
        if not a_small or not a_ref:
            details.append(f"{norm_name(norm)}: no runs at batch {small} or {ref}")
            continue
        d = welch_difference([100 - a for a in a_small], [100 - a for a in a_ref])
        rises[norm] = d
        details.append(f"{norm_name(norm)}: error at batch {small} minus at {ref}: {_d_text(d)}"
                       f"{_counts_note(dv1 + dv2, lo1 + lo2)}")
    table = []
    for norm in norms:
        errs = []
        for b in sorted(df.batch_size.unique()):
            v, _, _ = _acc_values(df[(df.norm == norm) & (df.batch_size == b)], "test_acc")
            if v:
                errs.append(f"{100 - float(np.mean(v)):.2f}@{int(b)}")
        table.append(f"{norm_name(norm)} {' / '.join(errs)}")
    details.append("mean test error (%) by batch size: " + "; ".join(table))
    fig_name = _draw(claim, out, lambda: _fig_c5(df), details)
    other = [n for n in others if n in rises and math.isfinite(rises[n].diff)]
    if "batch" not in rises or not other:
        return _result(claim, exps, verdict=INCONCLUSIVE, statistic=statistic, figure=fig_name, details=details,
                       evidence=f"BN or every other norm lacks runs at batch {small} and {ref}")
    worst = max(other, key=lambda n: rises[n].diff)
    c = contrast(rises["batch"], rises[worst])
    evidence = (f"From batch {ref} to {small}, BN's test error rises by {_d_text(rises['batch'])}; the largest rise "
                f"among the other norms is {norm_name(worst)}'s, {_d_text(rises[worst])}; BN's rise minus it: "
                f"{_d_text(c)}. {DIVERGED_NOTE}. Figure: test error vs batch size per norm (log2 axis), mean and "
                "95% t-interval over seeds.")
    return _result(claim, exps, verdict=verdict_of(c), statistic=statistic, value=c.diff, low=c.low,
                   high=c.high, unit="points", n=_n_text([c.n_a, c.n_b], "seeds per cell (smallest)"),
                   evidence=evidence, figure=fig_name, details=details)


def _fig_c5(df: pd.DataFrame) -> Figure:
    fig, (ax,) = _figure()
    pal = _palette(df.norm.dropna())
    for norm in _norm_order(df.norm.dropna()):
        sizes = sorted(df[df.norm == norm].batch_size.unique())
        groups = [[100 - a for a in _acc_values(df[(df.norm == norm) & (df.batch_size == b)], "test_acc")[0]]
                  for b in sizes]
        _mean_band(ax, list(sizes), groups, pal[norm], norm_name(norm), bars=True)
    log2_batch_axis(ax, df.batch_size)
    clamp_axis(ax)
    ax.set_xlabel("batch size")
    ax.set_ylabel("test error (%)")
    ax.set_title("C5: test error vs batch size (95% t-interval over seeds)", fontsize=9)
    _legend(ax)
    return fig


# ------------------------------------------------------------------ C7
@guarded("C7")
def claim_c7(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    claim = "C7"
    if _missing(claim, exps):
        return not_run(claim)
    statistic = ("ghost BN minus plain BN test accuracy at batch 512, in points, per ghost size (Welch), "
                 "expected > 0")
    df = _runs(exps["ghost"])
    df["ghost"] = pd.to_numeric(_col(df, "model.ghost_size"), errors="coerce")
    df = df[df.norm.isin(["ghost", "batch"]) & df.batch_size.notna()]
    # Plain BN: norm batch, or ghost with a ghost size >= the batch (one chunk). One run per seed: runs
    # that differ only in an unused ghost size are the same model, not extra replicates.
    plain = (df.norm == "batch") | (df.ghost >= df.batch_size)
    large = int(df.batch_size.max()) if len(df) else 0
    p512 = df[plain & (df.batch_size == large)].sort_values("ghost").drop_duplicates("seed")
    p64 = df[plain & (df.batch_size == REFERENCE_BATCH)].sort_values("ghost").drop_duplicates("seed")
    ghosts = df[~plain & (df.norm == "ghost") & (df.batch_size == large)]
    if p512.empty or ghosts.empty or large <= REFERENCE_BATCH:
        return _inconclusive(claim, statistic, f"needs plain BN and ghost BN runs at the largest batch "
                             f"({large}), above batch {REFERENCE_BATCH}", exps)
    a_plain, dv, lo = _acc_values(p512, "test_acc")
    a_small, dv64, lo64 = _acc_values(p64, "test_acc")
    details = [f"plain BN at batch {large}: {np.mean(a_plain):.2f}% (n={len(a_plain)}){_counts_note(dv, lo)}"]
    if a_small:
        details.append(f"BN at batch {REFERENCE_BATCH}: {np.mean(a_small):.2f}% (n={len(a_small)})"
                       f"{_counts_note(dv64, lo64)}")
    settings, series = [], {f"BN@{large}": a_plain}
    # The share of the small-batch gap a ghost size recovers means something only where that gap is clear.
    small_gap = welch_difference(a_small, a_plain) if a_small else None
    gap_clear = small_gap is not None and verdict_of(small_gap) == SUPPORTED
    if a_small:
        series[f"BN@{REFERENCE_BATCH}"] = a_small
        details.append(f"BN at batch {REFERENCE_BATCH} minus plain BN at {large}: {_d_text(small_gap)}"
                       + ("" if gap_clear else ": not clearly positive, so no share of it is computed"))
    for g, h in ghosts.groupby("ghost"):
        vals, dvg, log_ = _acc_values(h, "test_acc")
        if not vals:
            continue
        d = welch_difference(vals, a_plain)
        v = verdict_of(d)
        settings.append((f"ghost size {int(g)}", d, v))
        series[f"ghost {int(g)}@{large}"] = vals
        line = f"ghost size {int(g)} at batch {large}: {np.mean(vals):.2f}%, minus plain BN {_d_text(d)}: {v}"
        if gap_clear:
            frac = (np.mean(vals) - np.mean(a_plain)) / small_gap.diff
            line += (f"; recovers {100 * frac:.0f}% of the gap from plain BN@{large} to BN@{REFERENCE_BATCH} "
                     f"({small_gap.diff:+.2f} points)")
        details.append(line + _counts_note(dvg, log_))
    fig_name = _draw(claim, out, lambda: _fig_c7(series), details)
    if not settings:
        return _result(claim, exps, verdict=INCONCLUSIVE, statistic=statistic, figure=fig_name, details=details,
                       evidence=f"no ghost BN run at batch {large} has a test accuracy")
    verdict = combine([v for _, _, v in settings])
    label, d = _headline(settings)
    evidence = (f"At batch {large}, {label} (least favourable of {len(settings)}) minus plain BN: {_d_text(d)}; "
                f"verdict combined over ghost sizes. {DIVERGED_NOTE}. Figure: test accuracy per arm, one point per "
                "seed, mean and 95% t-interval.")
    return _result(claim, exps, verdict=verdict, statistic=statistic, value=d.diff, low=d.low, high=d.high,
                   unit="points", n=_n_text([d.n_a, d.n_b], "seeds per arm"), evidence=evidence,
                   figure=fig_name, details=details)


def _fig_c7(series: dict[str, list[float]]) -> Figure:
    fig, (ax,) = _figure()
    colors = sns.color_palette("colorblind", 10)
    for i, (name, vals) in enumerate(series.items()):
        color = colors[0] if name.startswith("BN") else colors[2]
        ax.scatter([i] * len(vals), vals, color=color, s=14, alpha=0.6)
        lo, hi = interval_bounds(vals)
        m = float(np.mean(vals))
        ax.errorbar([i + 0.15], [m], yerr=[[m - lo], [hi - m]], fmt="o", color=color, capsize=3)
    clamp_axis(ax)
    ax.set_xticks(range(len(series)), list(series), fontsize=8)
    ax.set_xlabel("arm (norm @ batch size)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("C7: ghost BN at large batch vs plain BN\n(dots: seeds; bars: mean and 95% t interval over seeds)",
                 fontsize=9)
    return fig


# ------------------------------------------------------------------ C11
def _gap(df: pd.DataFrame) -> tuple[Difference, str]:
    bn, dv1, lo1 = _acc_values(df[df.norm == "batch"], "test_acc")
    no, dv2, lo2 = _acc_values(df[df.norm == "none"], "test_acc")
    return welch_difference(bn, no), _counts_note(dv1 + dv2, lo1 + lo2)


@guarded("C11")
def claim_c11(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    claim = "C11"
    if _missing(claim, exps, ["ioffe2015"]):
        return not_run(claim, "no runs of preset ioffe2015")
    statistic = "BN minus no norm test accuracy in the 3x100 sigmoid network, in points (Welch), expected > 0"
    df = _runs(exps["ioffe2015"])
    if not {"none", "batch"} <= set(df.norm.dropna()):
        return _inconclusive(claim, statistic, "needs runs of both BN and no norm", exps)
    d, note = _gap(df)
    details = []
    for norm in ("batch", "none"):
        vals, _, _ = _acc_values(df[df.norm == norm], "test_acc")
        m = mean_interval([v / 100 for v in vals])
        details.append(f"{norm_name(norm)}: test accuracy {m.mean:.4f}" +
                       (f" ({m.low:.4f} to {m.high:.4f})" if math.isfinite(m.low) else "") + f", n={m.n}")
    details.append("literature (a public re-run of Ioffe & Szegedy 2015 sec. 4.1): 0.980 with BN vs 0.977 without")
    if "notebook" in exps:
        nb = _runs(exps["notebook"])
        nb = nb[(nb.batch_size == REFERENCE_BATCH) & (np.isclose(nb.lr.astype(float), NOTEBOOK_LR))]
        if {"none", "batch"} <= set(nb.norm.dropna()):
            relu, rnote = _gap(nb)
            c = contrast(d, relu)
            reading = {SUPPORTED: "larger with sigmoid", NOT_SUPPORTED: "smaller with sigmoid"}.get(
                verdict_of(c), "no clear difference")
            details.append(f"ReLU notebook network at batch {REFERENCE_BATCH}, lr {NOTEBOOK_LR}: BN minus no norm "
                           f"{_d_text(relu)}{rnote}; sigmoid gap minus ReLU gap {_d_text(c)}: {reading}")
        else:
            details.append(f"notebook runs lack both arms at batch {REFERENCE_BATCH}, lr {NOTEBOOK_LR}: "
                           "no ReLU comparison")
    else:
        details.append("no notebook runs: no ReLU comparison")
    recs = [r for r in exps["ioffe2015"].records if r.get("status") in ("completed", "diverged")]
    recs = _dedupe_records(recs, lambda r: [_norm_of(r), _seed_of(r)])
    curves = [(_norm_of(r), *_val_series(r)) for r in recs]
    fig_name = _draw(claim, out, lambda: _fig_curves(
        [(n, pts) for n, pts, _ in curves], "optimizer steps", "validation accuracy (%)",
        "C11: 3x100 sigmoid MLP, validation accuracy", scale=100, log_x=False, clamp=(0.0, 100.0)), details)
    sources = {s for _, _, s in curves}
    source = "val_acc probe" if sources == {"probe"} else "per-epoch history where a run has no probe"
    evidence = (f"BN minus no norm test accuracy: {_d_text(d)}{note}. {DIVERGED_NOTE}. Figure: validation "
                f"accuracy vs steps per arm ({source}), "
                "mean and 95% t-band over seeds.")
    return _result(claim, exps, verdict=verdict_of(d), statistic=statistic, value=d.diff, low=d.low,
                   high=d.high, unit="points", n=_n_text([d.n_a, d.n_b]), evidence=evidence, figure=fig_name,
                   details=details)


def _fig_curves(curves: list[tuple[Any, list[tuple[float, float]]]], xlabel: str, ylabel: str, title: str,
                scale: float = 1.0, log_x: bool = False, clamp: tuple[float, float] = (0.0, 100.0)) -> Figure:
    """Mean and 95% band over seeds per norm; each run's (x, y) points, pooled at equal x; y kept within `clamp`."""
    fig, (ax,) = _figure()
    pal = _palette(n for n, _ in curves)
    for norm in _norm_order(n for n, _ in curves):
        by_x: dict[float, list[float]] = {}
        for n, pts in curves:
            if n == norm:
                for x, y in pts:
                    by_x.setdefault(x, []).append(scale * y)
        xs = sorted(by_x)
        _mean_band(ax, xs, [by_x[x] for x in xs], pal[norm], norm_name(norm))
    if log_x:
        ax.set_xscale("log")
    clamp_axis(ax, *clamp)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n(line: mean over seeds; band: 95% t interval over seeds)", fontsize=9)
    _legend(ax)
    return fig


# ------------------------------------------------------------------ C12
@guarded("C12")
def claim_c12(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    claim = "C12"
    if _missing(claim, exps):
        return not_run(claim)
    statistic = ("no norm's final-epoch generalization gap (train minus test accuracy, points) minus BN's "
                 "(Welch), expected > 0")
    e = exps["regularization"]
    runs = _runs(e)
    hist = e.analysis.col.history
    if hist is None or hist.empty or "train_acc" not in hist or hist.train_acc.isna().all():
        return _inconclusive(claim, statistic, "no per-epoch train_acc in the history (probes.kinds lacks "
                             "train_acc)", exps)
    h = hist.merge(runs[["run", "norm", "status"]], on="run", how="inner")
    h = h[h.train_acc.notna() & h.test_acc.notna()].copy()
    h["gap"] = 100 * (h.train_acc.astype(float) - h.test_acc.astype(float))
    done = h[h.status == "completed"].sort_values("epoch")
    last = done.groupby("run").tail(1)
    gaps = {n: list(last[last.norm == n].gap) for n in ("none", "batch")}
    n_out = int((runs.status != "completed").sum())
    details = []
    for n, g in gaps.items():
        arm = last[last.norm == n]
        if g:
            details.append(f"{norm_name(n)}: final gap {np.mean(g):.2f} points (n={len(g)}; train "
                           f"{100 * arm.train_acc.mean():.2f}%, test {100 * arm.test_acc.mean():.2f}%) at epoch "
                           f"{int(arm.epoch.max())}")
    if n_out:
        details.append(f"{n_out} run(s) not completed (diverged, failed or pruned): left out, they have no final gap")
    fig_name = _draw(claim, out, lambda: _fig_curves(
        [(n, list(zip(g.epoch.astype(float), g.gap / 100))) for (n, _), g in done.groupby(["norm", "run"])],
        "epoch", "train minus test accuracy (points)", "C12: generalization gap per epoch", scale=100,
        clamp=(-100.0, 100.0)), details)
    if not gaps["none"] or not gaps["batch"]:
        return _result(claim, exps, verdict=INCONCLUSIVE, statistic=statistic, figure=fig_name, details=details,
                       evidence="needs completed runs with train_acc of both BN and no norm")
    d = welch_difference(gaps["none"], gaps["batch"])
    evidence = (f"No norm's gap minus BN's: {_d_text(d)}; 'not supported' here means BN's gap is the larger. "
                "Training accuracy is measured in eval mode on a fixed subset of the training split. Figure: the "
                "gap per epoch, mean and 95% t-band over seeds.")
    return _result(claim, exps, verdict=verdict_of(d), statistic=statistic, value=d.diff, low=d.low,
                   high=d.high, unit="points", n=_n_text([d.n_a, d.n_b]), evidence=evidence, figure=fig_name,
                   details=details)


# ------------------------------------------------------------------ C13
@guarded("C13")
def claim_c13(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    claim = "C13"
    if _missing(claim, exps):
        return not_run(claim)
    statistic = (f"at the first batch size above {REFERENCE_BATCH} where either arm's final validation accuracy "
                 f"falls clearly below its batch-{REFERENCE_BATCH} value: no norm's drop minus BN's drop, in "
                 "points, expected > 0 (BN holds longer)")
    df = _runs(exps["linear_scaling"])
    df = df[df.batch_size.notna()]
    if not {"none", "batch"} <= set(df.norm.dropna()):
        return _inconclusive(claim, statistic, "needs runs of both BN and no norm", exps)
    sizes = sorted(int(b) for b in set(df[df.norm == "batch"].batch_size) & set(df[df.norm == "none"].batch_size))
    above = [b for b in sizes if b > REFERENCE_BATCH]
    if REFERENCE_BATCH not in sizes or not above:
        return _inconclusive(claim, statistic, f"needs both arms at batch {REFERENCE_BATCH} and a larger batch", exps)
    drops: dict[str, dict[int, Difference]] = {"none": {}, "batch": {}}
    details, aligned = [], {}
    for norm in ("batch", "none"):
        ref, dv, lo = _acc_values(df[(df.norm == norm) & (df.batch_size == REFERENCE_BATCH)], "val_acc")
        largest, walking, parts = REFERENCE_BATCH, True, []
        for b in above:
            vals, dvb, lob = _acc_values(df[(df.norm == norm) & (df.batch_size == b)], "val_acc")
            dv, lo = dv + dvb, lo + lob
            d = welch_difference(ref, vals)  # batch 64 minus batch B: the drop
            drops[norm][b] = d
            ok = math.isfinite(d.low) and -d.low >= 0  # interval of acc_B - acc_64 reaches 0 or above
            parts.append(f"{b}: drop {_d_text(d)}{'' if ok else ' (clearly below)' if math.isfinite(d.low) else ''}")
            if walking and ok:
                largest = b
            else:
                walking = False
        aligned[norm] = largest
        details.append(f"{norm_name(norm)}: largest batch aligned with batch {REFERENCE_BATCH} (every batch up to it "
                       f"within the seed spread): {largest}; drops from batch {REFERENCE_BATCH}: {'; '.join(parts)}"
                       f"{_counts_note(dv, lo)}")
    dropped = [b for b in above if any(math.isfinite(drops[n][b].low) and drops[n][b].low > 0 for n in drops)]
    b = dropped[0] if dropped else above[-1]
    c = contrast(drops["none"][b], drops["batch"][b])
    where = (f"batch {b}, the first where an arm falls clearly below batch {REFERENCE_BATCH}" if dropped
             else f"batch {b}, the largest tried (neither arm fell clearly below batch {REFERENCE_BATCH})")
    fig_name = _draw(claim, out, lambda: _fig_c13(df), details)
    evidence = (f"Largest batch aligned with batch {REFERENCE_BATCH} (lr = 0.01 x B/64): BN {aligned['batch']}, no "
                f"norm {aligned['none']}. At {where}: no norm's drop minus BN's {_d_text(c)}. {DIVERGED_NOTE}. "
                f"Figure: final validation accuracy vs batch size per arm, mean and 95% t-interval, shaded: each "
                f"arm's batch-{REFERENCE_BATCH} interval.")
    return _result(claim, exps, verdict=verdict_of(c), statistic=statistic, value=c.diff, low=c.low,
                   high=c.high, unit="points", n=_n_text([c.n_a, c.n_b], "seeds per cell (smallest)"),
                   evidence=evidence, figure=fig_name, details=details)


def _fig_c13(df: pd.DataFrame) -> Figure:
    fig, (ax,) = _figure()
    pal = _palette(df.norm.dropna())
    for norm in _norm_order(df.norm.dropna()):
        sizes = sorted(df[df.norm == norm].batch_size.unique())
        groups = [_acc_values(df[(df.norm == norm) & (df.batch_size == b)], "val_acc")[0] for b in sizes]
        _mean_band(ax, list(sizes), groups, pal[norm], norm_name(norm), bars=True)
        ref = _acc_values(df[(df.norm == norm) & (df.batch_size == REFERENCE_BATCH)], "val_acc")[0]
        if len(ref) >= 2:
            lo, hi = interval_bounds(ref)
            ax.axhspan(lo, hi, color=pal[norm], alpha=0.12, linewidth=0)
    log2_batch_axis(ax, df.batch_size)
    clamp_axis(ax)
    ax.set_xlabel("batch size (lr = 0.01 x B/64)")
    ax.set_ylabel("final validation accuracy (%)")
    ax.set_title(f"C13: linear lr scaling (bars: mean and 95% t interval over seeds;\n"
                 f"shaded: each arm's batch-{REFERENCE_BATCH} interval)", fontsize=9)
    _legend(ax)
    return fig


# ------------------------------------------------------------------ C14
def _per_run_timing(e: ExperimentRuns) -> pd.DataFrame:
    """Per completed lone run: median seconds per training step and median eval seconds, epochs after the first."""
    runs = _runs(e)
    hist = e.analysis.col.history
    cols = ["run", "norm", "batch_size", "seed", "sec_per_step", "eval_sec"]
    if hist is None or hist.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    keep = runs[(runs.status == "completed")]
    for _, r in keep.iterrows():
        h = hist[hist.run == r["run"]].sort_values("epoch")
        if h.empty:
            continue
        if _finite(_num(r.get("pack_size"))) and _num(r.get("pack_size")) > 1:
            continue
        steps = pd.to_numeric(h.step, errors="coerce").diff()
        steps.iloc[0] = _num(h.step.iloc[0])
        sps = pd.to_numeric(h.epoch_seconds, errors="coerce") / steps.where(steps > 0)
        ev = pd.to_numeric(h.eval_seconds, errors="coerce")
        if len(h) > 1:  # the first epoch is warm-up
            sps, ev = sps.iloc[1:], ev.iloc[1:]
        rows.append({"run": r["run"], "norm": r["norm"], "batch_size": r["batch_size"], "seed": r.get("seed"),
                     "sec_per_step": float(sps.median()), "eval_sec": float(ev.median())})
    return pd.DataFrame(rows, columns=cols)


def _relative(a: list[float], b: list[float]) -> Difference:
    """(mean a - mean b) / mean b in percent, the Welch interval of the difference divided by mean b."""
    d = welch_difference(a, b)
    ref = float(np.mean([x for x in b if _finite(x)])) if b else math.nan
    if not (math.isfinite(ref) and ref > 0):
        return Difference(math.nan, math.nan, math.nan, d.n_a, d.n_b)
    return _scaled(d, 100 / ref)


@guarded("C14")
def claim_c14(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    claim = "C14"
    if _missing(claim, exps):
        return not_run(claim)
    statistic = ("BN's seconds per training step relative to no norm's, minus 1, in percent, per batch size "
                 "(Welch over seeds), expected > 0")
    e = exps["overhead"]
    runs = _runs(e)
    t = _per_run_timing(e)
    t = t[np.isfinite(t.sec_per_step.astype(float))] if len(t) else t
    n_packed = int((pd.to_numeric(_col(runs, "pack_size"), errors="coerce") > 1).sum())
    n_out = int((runs.status != "completed").sum())
    if t.empty or not {"none", "batch"} <= set(t.norm):
        return _inconclusive(claim, statistic, "needs completed lone (unpacked) timed runs of both BN and no norm",
                             exps)
    details, settings = [], []
    for b in sorted(t.batch_size.dropna().unique()):
        bn, no = t[(t.norm == "batch") & (t.batch_size == b)], t[(t.norm == "none") & (t.batch_size == b)]
        if bn.empty or no.empty:
            continue
        d = _relative(list(bn.sec_per_step), list(no.sec_per_step))
        ev = _relative(list(bn.eval_sec.dropna()), list(no.eval_sec.dropna()))
        v = verdict_of(d)
        settings.append((f"batch {int(b)}", d, v))
        details.append(f"batch {int(b)}: training step BN {1e3 * bn.sec_per_step.mean():.3f} ms vs no norm "
                       f"{1e3 * no.sec_per_step.mean():.3f} ms: {_d_text(d, '%', 1)}: {v}; inference (eval-mode "
                       f"passes over validation+test) {_d_text(ev, '%', 1)}")
    machines = sorted(_col(runs, "device_name").dropna().astype(str).unique())
    details.append(f"per run: median over epochs after the first (warm-up) of epoch seconds / steps in the epoch; "
                   f"machine: {', '.join(machines) or 'unknown'}")
    if n_packed or n_out:
        details.append(f"left out: {n_packed} packed run(s) (their epochs are timed together), {n_out} run(s) not "
                       "completed")
    fig_name = _draw(claim, out, lambda: _fig_c14(t), details)
    if not settings:
        return _result(claim, exps, verdict=INCONCLUSIVE, statistic=statistic, figure=fig_name, details=details,
                       evidence="no batch size has timed runs of both arms")
    verdict = combine([v for _, _, v in settings])
    label, d = _headline(settings)
    evidence = (f"At {label} (least favourable of {len(settings)}) BN's training step time relative to no norm's "
                f"is {_d_text(d, '%', 1)} (positive: BN slower; interval: Welch difference over seeds divided by no "
                "norm's mean); verdict "
                "combined over batch sizes. Figure: milliseconds per training step by batch size and arm, mean and "
                "95% t-interval over seeds.")
    return _result(claim, exps, verdict=verdict, statistic=statistic, value=d.diff, low=d.low, high=d.high,
                   unit="%", n=_n_text([d.n_a, d.n_b], "seeds per arm"), evidence=evidence, figure=fig_name,
                   details=details)


def _fig_c14(t: pd.DataFrame) -> Figure:
    fig, (ax,) = _figure()
    pal = _palette(t.norm)
    for norm in _norm_order(t.norm):
        sizes = sorted(t[t.norm == norm].batch_size.unique())
        groups = [list(1e3 * t[(t.norm == norm) & (t.batch_size == b)].sec_per_step) for b in sizes]
        _mean_band(ax, list(sizes), groups, pal[norm], norm_name(norm), bars=True)
    log2_batch_axis(ax, t.batch_size)
    _log_y(ax)
    ms = 1e3 * t.sec_per_step.astype(float)
    ms = ms[np.isfinite(ms) & (ms > 0)]
    if len(ms):  # a lower bound below 0 ms (2 seeds) would drag a log axis down by decades
        ax.set_ylim(bottom=max(ax.get_ylim()[0], float(ms.min()) / 3))
    ax.set_xlabel("batch size")
    ax.set_ylabel("ms per training step (log scale)")
    ax.set_title("C14: time per training step, lone runs\n(bars: mean and 95% t interval over seeds)", fontsize=9)
    _legend(ax)
    return fig


CLAIM_FUNCTIONS = {"C2": claim_c2, "C3": claim_c3, "C4": claim_c4, "C5": claim_c5, "C7": claim_c7,
                   "C11": claim_c11, "C12": claim_c12, "C13": claim_c13, "C14": claim_c14}
