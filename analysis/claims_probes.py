"""Claims read from the runs' probes (study/probes.py): C6, C8, C9, C10, C15.

Each of these claims is about something the trainer measures besides the
final metrics: train- vs eval-mode accuracy and a shifted test set (C6), one
unit's activation-input percentiles (C8, Ioffe & Szegedy fig. 1b,c),
Santurkar et al.'s internal covariate shift (C9) and loss-landscape
smoothness (C10), and per-layer gradient norms in a deep MLP (C15).

Two tidy tables are built from the records and exported for other code:
`probe_series` (one row per run x probed step) and `probe_finals` (one row
per run: the after-training probes). Runs that did not complete (diverged,
failed, pruned) are left out of every statistic here and counted in the
claim's evidence: a diverged run's probe series stops early and would be
compared with full ones. One (config, seed) recorded twice counts once (the
newest record), as in `summary.drop_repeats`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import matplotlib

matplotlib.use("Agg")  # no display where a report is built

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis.claims import (CLAIMS, INCONCLUSIVE, LITERATURE, NOT_SUPPORTED, SUPPORTED,  # noqa: E402
                             ClaimResult, ExperimentRuns, combine, guarded, not_run, save_figure, verdict_of)
from analysis.claims_metrics import clamp_axis  # noqa: E402
from analysis.figures import DPI, log2_batch_axis  # noqa: E402
from analysis.stats import Difference, MeanInterval, mean_interval, welch_difference  # noqa: E402

BN, NONE = "batch", "none"
ARM_NAMES = {BN: "BN", NONE: "no norm"}
_COLORS = sns.color_palette("colorblind", 10)
ARM_COLORS = {BN: _COLORS[0], NONE: _COLORS[1]}  # as analysis/figures.palette
PERCENTILES = ("p15", "p50", "p85")
LANDSCAPE = ("loss_range", "grad_change", "beta_smoothness")
LANDSCAPE_NAMES = {"loss_range": "loss range", "grad_change": "gradient change",
                   "beta_smoothness": "effective beta-smoothness"}
LANDSCAPE_UNITS = {"loss_range": "max - min loss, nats", "grad_change": "max ||g - g'||, L2",
                   "beta_smoothness": "max ||g - g'|| / (eta ||g||)"}
C8_REFERENCE = 0.10  # C8 drift is measured from the probe that ends the first 10% of training
C10_EARLY, C10_LATE = 0.25, 0.75  # C10: first 25% / last 25% of training probes
C15_EARLY = 0.10  # C15: the probes of the first 10% of training

META = ("run", "experiment", "status", "seed", "norm", "activation", "batch_size", "lr", "finished_at")
SERIES_FIXED = ("step", "act_p15", "act_p50", "act_p85", *LANDSCAPE, "val_acc")
FINAL_FIELDS = ("eval_mode_acc", "train_mode_acc", "modes_batch_size", "shift_brightness", "shift_contrast",
                "clean_acc", "running_acc", "recomputed_acc")
# What identifies a replicate (seed aside) in the claims of this module.
REPLICATE_KEYS = ("experiment", "norm", "activation", "batch_size", "lr")


# ------------------------------------------------------------------ tidy tables
def _num(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    return float(x) if math.isfinite(x) else math.nan


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _meta(i: int, rec: dict[str, Any]) -> dict[str, Any]:
    seed = rec.get("seed", _get(rec, "config", "seed"))
    return {"run": i, "experiment": rec.get("experiment"), "status": rec.get("status"),
            "seed": seed, "norm": _get(rec, "config", "model", "norm"),
            "activation": _get(rec, "config", "model", "activation"),
            "batch_size": _get(rec, "config", "batch_size"), "lr": _get(rec, "config", "lr"),
            "finished_at": rec.get("finished_at")}


def _probes(rec: Any) -> dict[str, Any]:
    p = rec.get("probes") if isinstance(rec, dict) else None
    return p if isinstance(p, dict) else {}


def _per_layer(values: Any, prefix: str, first: int = 0) -> dict[str, float]:
    if not isinstance(values, list):
        return {}
    return {f"{prefix}{j}": _num(v) for j, v in enumerate(values) if j >= first}


def probe_series(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run x probed step: the run's config, then every step probe flattened.

    `run` is the record's position in `records`. Columns: act_p15/p50/p85
    (activations), grad_norm_<layer> (one per Linear layer, input first),
    ics_distance_<layer> and ics_cosine_<layer> (layers >= 1), loss_range,
    grad_change, beta_smoothness (landscape) and val_acc; NaN where a probe
    did not run or its value was not finite.
    """
    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            continue
        meta = _meta(i, rec)
        series = _probes(rec).get("series")
        for entry in series if isinstance(series, list) else []:
            if not isinstance(entry, dict):
                continue
            row: dict[str, Any] = {**meta, "step": _num(entry.get("step"))}
            act = entry.get("activations") if isinstance(entry.get("activations"), dict) else {}
            row.update({f"act_{p}": _num(act.get(p)) for p in PERCENTILES})
            row.update(_per_layer(entry.get("grad_norms"), "grad_norm_"))
            ics = entry.get("ics") if isinstance(entry.get("ics"), dict) else {}
            row.update(_per_layer(ics.get("distance"), "ics_distance_", first=1))
            row.update(_per_layer(ics.get("cosine"), "ics_cosine_", first=1))
            land = entry.get("landscape") if isinstance(entry.get("landscape"), dict) else {}
            row.update({k: _num(land.get(k)) for k in LANDSCAPE})
            row["val_acc"] = _num(entry.get("val_acc"))
            rows.append(row)
    df = pd.DataFrame(rows)
    for c in (*META, *SERIES_FIXED):
        if c not in df:
            df[c] = pd.Series(dtype=float)
    layered = sorted((c for c in df.columns if c not in META and c not in SERIES_FIXED),
                     key=lambda c: (c.rsplit("_", 1)[0], int(c.rsplit("_", 1)[1])))
    return df[[*META, *SERIES_FIXED, *layered]]


def probe_finals(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: its config, status, and the after-training probes (modes, shift).

    eval_mode_acc / train_mode_acc: test accuracy with running vs batch
    statistics (modes_batch_size: the batch used in train mode); clean_acc,
    running_acc, recomputed_acc: the clean test set, and the shifted one with
    running statistics or statistics recomputed on it (NaN without running
    statistics). Accuracies are fractions, as in the records.
    """
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            continue
        p = _probes(rec)
        fin = p.get("final") if isinstance(p.get("final"), dict) else {}
        modes = fin.get("modes") if isinstance(fin.get("modes"), dict) else {}
        shift = fin.get("shift") if isinstance(fin.get("shift"), dict) else {}
        series = p.get("series") if isinstance(p.get("series"), list) else []
        rows.append({**_meta(i, rec),
                     "eval_mode_acc": _num(modes.get("eval_mode_acc")),
                     "train_mode_acc": _num(modes.get("train_mode_acc")),
                     "modes_batch_size": _num(modes.get("batch_size")),
                     "shift_brightness": _num(shift.get("brightness")),
                     "shift_contrast": _num(shift.get("contrast")),
                     "clean_acc": _num(shift.get("clean_acc")),
                     "running_acc": _num(shift.get("running_acc")),
                     "recomputed_acc": _num(shift.get("recomputed_acc")),
                     "probe_every": _num(p.get("every")), "probe_seconds": _num(p.get("seconds")),
                     "n_probes": len(series)})
    df = pd.DataFrame(rows)
    for c in (*META, *FINAL_FIELDS, "probe_every", "probe_seconds", "n_probes"):
        if c not in df:
            df[c] = pd.Series(dtype=float)
    return df


# ------------------------------------------------------------------ shared helpers
def _counted(df: pd.DataFrame) -> pd.DataFrame:
    """Completed runs, one per (config, seed): the newest record of a repeated one."""
    ok = df[df.status == "completed"]
    if ok.empty:
        return ok
    runs = ok.drop_duplicates("run").copy()
    runs["_finished"] = pd.to_datetime(runs.finished_at, utc=True, errors="coerce")
    runs = runs.sort_values("_finished", na_position="first", kind="stable")
    keys = [k for k in (*REPLICATE_KEYS, "seed")]
    keep = runs.astype({k: str for k in keys}).drop_duplicates(keys, keep="last").run
    return ok[ok.run.isin(set(keep))]


def _completed_series(exp: ExperimentRuns) -> tuple[pd.DataFrame, str]:
    """The step-probe series of the runs the statistics count (`_counted`), and
    the note naming the runs left out (`_left_out`)."""
    return _counted(probe_series(exp.records)), _left_out(probe_finals(exp.records))


def _left_out(finals: pd.DataFrame) -> str:
    """'; left out: 1 diverged (no norm), ...' for runs that did not complete, '' if none."""
    bad = finals[finals.status != "completed"]
    if bad.empty:
        return ""
    parts = [f"{len(g)} {status} ({_arm(norm)})" for (status, norm), g in
             bad.groupby([bad.status.astype(str), bad.norm.astype(str)], sort=True)]
    return "; left out of the statistics (a run that did not complete has a partial or no probe record): " \
        + ", ".join(parts)


def _arm(norm: Any) -> str:
    return ARM_NAMES.get(str(norm), f"norm={norm}")


def _f(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def _g(x: float) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def _step(x: float) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def _iv(low: float, high: float, digits: int = 2) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no interval"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def _mi(m: MeanInterval, digits: int = 2) -> str:
    return f"{_f(m.mean, digits)} {_iv(m.low, m.high, digits)} (n={m.n})"


def _di(d: Difference, digits: int = 2) -> str:
    return f"{_f(d.diff, digits)} {_iv(d.low, d.high, digits)} (n={d.n_a}, {d.n_b})"


def _n_phrase(n_a: int, n_b: int, a: str = "BN", b: str = "no-norm") -> str:
    if n_a == n_b:
        return f"{n_a} seed{'s' if n_a != 1 else ''} per arm"
    return f"{n_a} {a} and {n_b} {b} seeds"


def _experiment(exp: ExperimentRuns) -> str:
    return ("quick/" if exp.quick else "") + exp.name


def _base(claim: str, exp: Optional[ExperimentRuns], statistic: str, unit: str) -> ClaimResult:
    return ClaimResult(claim=claim, title=CLAIMS[claim][0], verdict=INCONCLUSIVE, statistic=statistic,
                       unit=unit, experiment=_experiment(exp) if exp is not None else ", ".join(CLAIMS[claim][1]),
                       literature=LITERATURE[claim])


def _fill(res: ClaimResult, d: Difference | MeanInterval) -> None:
    if isinstance(d, Difference):
        res.value, res.low, res.high = d.diff, d.low, d.high
    else:
        res.value, res.low, res.high = d.mean, d.low, d.high
    res.value, res.low, res.high = (None if v is None or not math.isfinite(v) else float(v)
                                    for v in (res.value, res.low, res.high))


def _figure(rows: int, cols: int, w: float = 3.6, h: float = 2.8, **kw: Any) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(w * cols + 0.6, h * rows + 0.5), dpi=DPI, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def _legend(ax, fontsize: int = 8) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize=fontsize)


def _errorbar(ax, xs: list[float], ms: list[MeanInterval], **kw: Any) -> None:
    """Means with their 95% t-intervals (none where n < 2)."""
    y = np.array([m.mean for m in ms], dtype=float)
    lo = np.array([m.mean - m.low if math.isfinite(m.low) else 0.0 for m in ms])
    hi = np.array([m.high - m.mean if math.isfinite(m.high) else 0.0 for m in ms])
    ax.errorbar(xs, y, yerr=[lo, hi], capsize=3, **kw)


def _arms(df: pd.DataFrame) -> list[str]:
    present = set(df.norm.dropna().astype(str))
    return [a for a in (NONE, BN) if a in present]


def _run_total(series: pd.DataFrame) -> pd.Series:
    """Each run's last probed step (its training length, for a completed run)."""
    return series.groupby("run").step.transform("max")


def _seed_order(df: pd.DataFrame) -> list[Any]:
    return sorted(df.seed.dropna().unique(), key=lambda s: (str(type(s)), s))


def _trace(ax, g: pd.DataFrame, ycol: str, color: Any, label: Optional[str], log: bool = False,
           style: str = "-") -> None:
    """Per-seed faint lines and the mean over seeds (geometric on a log axis) per step."""
    g = g[np.isfinite(g[ycol].astype(float))]
    if log:
        g = g[g[ycol] > 0]
    if g.empty:
        return
    for _, r in g.groupby("run"):
        r = r.sort_values("step")
        ax.plot(r.step, r[ycol], color=color, alpha=0.25, lw=0.8, ls=style)
    vals = np.log10(g[ycol].astype(float)) if log else g[ycol].astype(float)
    mean = vals.groupby(g.step).mean()
    ax.plot(mean.index, 10 ** mean.values if log else mean.values, color=color, lw=1.8, ls=style, label=label)


# ------------------------------------------------------------------ C6
@guarded("C6")
def claim_c6(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    """Train/inference discrepancy: BN's train- vs eval-mode gap by batch size, and a shifted test set."""
    claim = "C6"
    exp = exps.get("shift")
    if exp is None:
        return not_run(claim)
    statistic = ("BN's test-accuracy gap |eval mode - train mode| at the smallest batch size minus at the "
                 "largest, in points (Welch), expected > 0; with, at each batch size, BN's shifted-test accuracy "
                 "with recomputed minus running statistics, expected > 0 (the verdict combines both parts)")
    res = _base(claim, exp, statistic, "points")
    finals = probe_finals(exp.records)
    left_out = _left_out(finals)
    ok = _counted(finals)
    bn = ok[ok.norm.astype(str) == BN].copy()
    none = ok[ok.norm.astype(str) == NONE].copy()
    if bn.empty:
        res.evidence = "no completed BN run here, so there is no train/eval-mode discrepancy to measure" + left_out
        return res
    for df in (bn, none):
        df["gap"] = 100 * (df.eval_mode_acc - df.train_mode_acc).abs()
        df["recompute_gain"] = 100 * (df.recomputed_acc - df.running_acc)
        df["shift_loss"] = 100 * (df.clean_acc - df.running_acc)
    with_gap = bn[np.isfinite(bn.gap)]
    batches = sorted(int(b) for b in with_gap.batch_size.dropna().unique())
    details: list[str] = []

    # (a) the gap between train-mode and eval-mode accuracy, per batch size
    gap_means = {b: mean_interval(with_gap[with_gap.batch_size == b].gap) for b in batches}
    for b in batches:
        ctrl = mean_interval(none[none.batch_size == b].gap)
        details.append(f"(a) batch {b}: BN |eval - train mode| gap {_mi(gap_means[b])} points"
                       + (f"; no norm (no batch statistics, a control) {_mi(ctrl)}" if ctrl.n else ""))
    if len(batches) >= 2:
        small, large = batches[0], batches[-1]
        d_a = welch_difference(with_gap[with_gap.batch_size == small].gap,
                               with_gap[with_gap.batch_size == large].gap)
        v_a = verdict_of(d_a)
        _fill(res, d_a)
        res.n = (f"{d_a.n_a} BN seeds at batch {small}, {d_a.n_b} at batch {large}" if d_a.n_a != d_a.n_b
                 else f"{d_a.n_a} BN seeds per batch size")
        part_a = (f"BN's train/eval-mode gap is {_g(gap_means[small].mean)} points at batch {small} and "
                  f"{_g(gap_means[large].mean)} at batch {large} (difference {_di(d_a)}: {v_a})")
        details.append(f"(a) gap at batch {small} minus at batch {large}: {_di(d_a)} points -> {v_a}")
    else:
        v_a = INCONCLUSIVE
        part_a = ("BN's train/eval-mode gap was measured at fewer than two batch sizes "
                  f"({', '.join(map(str, batches)) or 'none'}), so its trend with batch size is unknown")
        details.append("(a) inconclusive: " + part_a)

    # (b) the shifted test set: recomputed vs running statistics, per batch size
    v_bs, gains = [], []
    for b in sorted(int(x) for x in bn.batch_size.dropna().unique()):
        g = bn[bn.batch_size == b]
        m = mean_interval(g.recompute_gain)
        if m.n == 0:
            continue
        v = verdict_of(m)
        v_bs.append(v)
        gains.append(f"{_f(m.mean)} points at batch {b}")
        loss_bn = mean_interval(g.shift_loss)
        loss_none = mean_interval(none[none.batch_size == b].shift_loss)
        d_loss = welch_difference(g.shift_loss, none[none.batch_size == b].shift_loss)
        details.append(f"(b) batch {b}: BN shifted accuracy, recomputed minus running statistics {_mi(m)} points "
                       f"-> {v}; accuracy lost to the shift (clean - shifted with running statistics): "
                       f"BN {_mi(loss_bn)}, no norm {_mi(loss_none)}, BN minus no norm {_di(d_loss)}")
    if v_bs:
        v_b = combine(v_bs)
        part_b = (f"on the shifted test set, recomputing BN's statistics changes its accuracy by "
                  f"{', '.join(gains)} ({v_b} over the batch sizes)")
    else:
        v_b = INCONCLUSIVE
        part_b = "no BN run recorded the shifted test set with both running and recomputed statistics"
        details.append("(b) inconclusive: " + part_b)
    res.verdict = combine([v_a, v_b])
    details.append(f"verdict: (a) {v_a}, (b) {v_b} -> {res.verdict} (supported only when both parts are)")
    res.details = details
    res.evidence = (f"{part_a}; {part_b}. Figure: left, the gap vs batch size per arm; right, shifted-test "
                    "accuracy with running vs recomputed statistics and clean accuracy, per batch size "
                    f"(means over seeds, 95% t-intervals){left_out}.")
    res.figure = _figure_c6(bn, none, out, claim)
    return res


def _figure_c6(bn: pd.DataFrame, none: pd.DataFrame, out: Path, claim: str) -> Optional[str]:
    fig, axes = _figure(1, 2, w=4.0)
    all_b = sorted({int(b) for b in pd.concat([bn.batch_size, none.batch_size]).dropna()})
    if not all_b:
        return None
    ax = axes[0, 0]
    for arm, df in ((NONE, none), (BN, bn)):
        bs = [b for b in all_b if mean_interval(df[df.batch_size == b].gap).n]
        if bs:
            _errorbar(ax, bs, [mean_interval(df[df.batch_size == b].gap) for b in bs], color=ARM_COLORS[arm],
                      marker="o", label=_arm(arm))
    log2_batch_axis(ax, all_b)
    clamp_axis(ax)
    ax.set(xlabel="batch size", ylabel="|eval - train mode| test acc. (points)", title="train/inference gap")
    _legend(ax, fontsize=8)
    ax = axes[0, 1]
    lines = [(BN, bn, "clean_acc", ":", "s", "clean"), (BN, bn, "running_acc", "-", "o", "shifted, running"),
             (BN, bn, "recomputed_acc", "--", "^", "shifted, recomputed"),
             (NONE, none, "clean_acc", ":", "s", "clean"), (NONE, none, "running_acc", "-", "o", "shifted")]
    for arm, df, col, ls, marker, what in lines:
        ms = {b: mean_interval(100 * df[df.batch_size == b][col]) for b in all_b}
        bs = [b for b in all_b if ms[b].n]
        if bs:
            _errorbar(ax, bs, [ms[b] for b in bs], color=ARM_COLORS[arm], ls=ls, marker=marker,
                      label=f"{_arm(arm)}: {what}")
    log2_batch_axis(ax, all_b)
    clamp_axis(ax)
    ax.set(xlabel="batch size", ylabel="test accuracy (%)", title="shifted test set")
    _legend(ax, fontsize=7)
    fig.suptitle("C6: mean over seeds, bars: 95% t interval over seeds (cut at the axis)", fontsize=9)
    return save_figure(fig, out, claim)


# ------------------------------------------------------------------ C8
def c8_drift(series: pd.DataFrame) -> pd.DataFrame:
    """Per run: drift of the tracked unit's percentiles from the end of the first 10% to the last probe.

    drift = mean over p15/p50/p85 of |p(last) - p(reference)| / the run's mean
    spread (p85 - p15) over all its probes; reference = the first probe at or
    after 10% of the run's last probed step.
    """
    rows = []
    for run, g in series.groupby("run"):
        g = g[np.isfinite(g[[f"act_{p}" for p in PERCENTILES]].astype(float)).all(axis=1)
              & np.isfinite(g.step.astype(float))].sort_values("step")
        row = {"run": run, "norm": str(g.norm.iloc[0]) if len(g) else None,
               "seed": g.seed.iloc[0] if len(g) else None, "drift": math.nan, "ref_step": math.nan,
               "last_step": math.nan, "spread": math.nan}
        if len(g) >= 2:
            total = float(g.step.max())
            ref = g[g.step >= C8_REFERENCE * total].iloc[0]
            last = g.iloc[-1]
            spread = float((g.act_p85 - g.act_p15).mean())
            row.update(ref_step=ref.step, last_step=last.step, spread=spread)
            if ref.step < last.step and spread > 0:
                row["drift"] = float(np.mean([abs(last[f"act_{p}"] - ref[f"act_{p}"]) for p in PERCENTILES])
                                     / spread)
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", "norm", "seed", "drift", "ref_step", "last_step", "spread"])


@guarded("C8")
def claim_c8(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    """Activation percentiles drift without BN and stay put with BN (Ioffe & Szegedy fig. 1b,c)."""
    claim = "C8"
    exp = exps.get("ioffe2015")
    if exp is None:
        return not_run(claim)
    statistic = ("no-norm minus BN drift of a last-hidden unit's activation-input 15/50/85th percentiles "
                 "(mean |last probe - probe at 10% of training| over the three, in units of the run's own "
                 "p85-p15 spread), Welch, expected > 0")
    res = _base(claim, exp, statistic, "spreads")
    series, left_out = _completed_series(exp)
    drift = c8_drift(series)
    a, b = drift[drift.norm == NONE].drift, drift[drift.norm == BN].drift
    d = welch_difference(a, b)
    if d.n_a == 0 or d.n_b == 0:
        missing = [name for name, n in (("no norm", d.n_a), ("BN", d.n_b)) if n == 0]
        res.evidence = (f"no {' or '.join(missing)} run with at least two activation probes after 10% of "
                        f"training, so the arms cannot be compared{left_out}")
        res.figure = _figure_c8(series, out, claim) if not series.empty else None
        return res
    _fill(res, d)
    res.verdict = verdict_of(d)
    res.n = _n_phrase(d.n_b, d.n_a)
    m_none, m_bn = mean_interval(a), mean_interval(b)
    res.details = [f"{_arm(arm)}: drift {_mi(mean_interval(g.drift), 3)} spreads; reference probe at step "
                   f"{_step(g.ref_step.median())}, last at step {_step(g.last_step.median())} (medians); mean p85-p15 "
                   f"spread {_g(g.spread.mean())}" for arm, g in ((NONE, drift[drift.norm == NONE]),
                                                                  (BN, drift[drift.norm == BN]))]
    for arm in (NONE, BN):
        g = series[series.norm.astype(str) == arm]
        seeds = _seed_order(g)
        if seeds:
            r = g[g.seed == seeds[0]].dropna(subset=["act_p50"]).sort_values("step")
            if len(r):
                res.details.append(f"{_arm(arm)} seed {seeds[0]}: percentiles (15/50/85) at step "
                                   f"{_step(r.step.iloc[0])}: {_g(r.act_p15.iloc[0])}/{_g(r.act_p50.iloc[0])}/"
                                   f"{_g(r.act_p85.iloc[0])}; at step {_step(r.step.iloc[-1])}: "
                                   f"{_g(r.act_p15.iloc[-1])}/{_g(r.act_p50.iloc[-1])}/{_g(r.act_p85.iloc[-1])}")
    res.evidence = (f"drift of the percentiles from 10% of training to the end: no norm {_g(m_none.mean)}, "
                    f"BN {_g(m_bn.mean)} of the run's own p15-p85 spread (difference {_di(d, 3)}). "
                    "Figure: the 15/50/85th percentiles vs step, one panel per arm (lowest seed bold, others "
                    f"faint){left_out}.")
    res.figure = _figure_c8(series, out, claim)
    return res


def _figure_c8(series: pd.DataFrame, out: Path, claim: str) -> Optional[str]:
    arms = _arms(series)
    if not arms:
        return None
    fig, axes = _figure(1, len(arms), sharey=False)
    shades = {"p15": 0.55, "p50": 1.0, "p85": 0.55}
    styles = {"p15": "--", "p50": "-", "p85": ":"}
    for ax, arm in zip(axes[0], arms):
        g = series[series.norm.astype(str) == arm]
        seeds = _seed_order(g)
        for seed in seeds:
            r = g[g.seed == seed].sort_values("step")
            first = seed == seeds[0]
            for p in PERCENTILES:
                ax.plot(r.step, r[f"act_{p}"], color=ARM_COLORS[arm], ls=styles[p],
                        alpha=shades[p] if first else 0.2, lw=1.6 if first else 0.8,
                        label=f"{p[1:]}th percentile" if first else None)
        ax.set(xlabel="optimizer step", ylabel="input to the nonlinearity" + (" (after BN)" if arm == BN else ""),
               title=f"{_arm(arm)}" + (f" (bold: seed {seeds[0]})" if seeds else ""))
        _legend(ax, fontsize=7)
    fig.suptitle("C8: one last-hidden unit's 15/50/85th percentiles over a fixed validation sample "
                 "(no interval: one line per seed)", fontsize=9)
    return save_figure(fig, out, claim)


# ------------------------------------------------------------------ C9
def _layer_columns(df: pd.DataFrame, prefix: str) -> list[tuple[int, str]]:
    cols = [(int(c[len(prefix):]), c) for c in df.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    return sorted((j, c) for j, c in cols if df[c].notna().any())


@guarded("C9")
def claim_c9(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    """Santurkar et al.'s internal covariate shift, BN vs no norm, per Linear layer."""
    claim = "C9"
    exp = exps.get("ics")
    if exp is None:
        return not_run(claim)
    statistic = ("BN minus no-norm mean ICS cosine (gradient of the last Linear layer before vs after the "
                 "earlier layers' update; higher = less shift), Welch; the claim expects BN's shift not to be "
                 "smaller, i.e. the difference <= 0: supported when it is significantly < 0")
    res = _base(claim, exp, statistic, "cosine")
    series, left_out = _completed_series(exp)
    cos_cols, dist_cols = _layer_columns(series, "ics_cosine_"), _layer_columns(series, "ics_distance_")
    if not cos_cols:
        res.evidence = f"no ICS probe values in the completed runs{left_out}"
        return res
    per_run = series.groupby("run").agg({"norm": "first", **{c: "mean" for _, c in cos_cols + dist_cols}})
    per_run["norm"] = per_run.norm.astype(str)
    bn, none = per_run[per_run.norm == BN], per_run[per_run.norm == NONE]
    last_j, last_c = cos_cols[-1]
    d = welch_difference(bn[last_c], none[last_c])
    details = []
    for j, c in cos_cols:
        dj = welch_difference(bn[c], none[c])
        details.append(f"layer {j} cosine: BN {_mi(mean_interval(bn[c]), 3)}, no norm "
                       f"{_mi(mean_interval(none[c]), 3)}, BN minus no norm {_di(dj, 3)}")
    for j, c in dist_cols:
        dj = welch_difference(bn[c], none[c])
        details.append(f"layer {j} distance ||G - G'||: BN {_g(mean_interval(bn[c]).mean)}, no norm "
                       f"{_g(mean_interval(none[c]).mean)}, BN minus no norm {_g(dj.diff)} "
                       f"[{_g(dj.low)}, {_g(dj.high)}] (raw gradient distances: not scale-free, since BN changes "
                       "the gradients' scale and ||G|| is not recorded)")
    res.details = details
    if d.n_a == 0 or d.n_b == 0:
        missing = [name for name, n in (("BN", d.n_a), ("no norm", d.n_b)) if n == 0]
        res.evidence = f"no completed {' or '.join(missing)} run with ICS probes, so the arms cannot be compared" \
            + left_out
        res.figure = _figure_c9(series, cos_cols, dist_cols, out, claim)
        return res
    _fill(res, d)
    res.verdict = verdict_of(d, expect_positive=False)
    res.n = _n_phrase(d.n_a, d.n_b)
    if res.verdict == SUPPORTED:
        reading = "lower with BN: more shift with BN, as Santurkar et al. report"
    elif res.verdict == NOT_SUPPORTED:
        reading = "higher with BN: less shift with BN, i.e. BN does reduce ICS by this measure"
    elif math.isfinite(d.low):
        reading = ("similar in both arms (the interval contains 0): BN does not measurably reduce ICS here, "
                   "which agrees with the claim's 'similar', but the rule reads an interval across 0 as inconclusive")
    else:
        reading = "without an interval (fewer than two seeds in an arm)"
    res.evidence = (f"mean ICS cosine of layer {last_j} (the last Linear layer): BN {_g(bn[last_c].mean())}, "
                    f"no norm {_g(none[last_c].mean())}, difference {_di(d, 3)}: {reading}. "
                    "Figure: ICS cosine (top) and distance (bottom) vs step per arm for each Linear layer >= 1 "
                    f"(seeds faint, mean bold){left_out}.")
    res.figure = _figure_c9(series, cos_cols, dist_cols, out, claim)
    return res


def _figure_c9(series: pd.DataFrame, cos_cols: list[tuple[int, str]], dist_cols: list[tuple[int, str]],
               out: Path, claim: str) -> Optional[str]:
    layers = sorted({j for j, _ in cos_cols} | {j for j, _ in dist_cols})
    arms = _arms(series)
    if not layers or not arms:
        return None
    fig, axes = _figure(2, len(layers), w=3.2)
    for k, j in enumerate(layers):
        for row, prefix, label, log in ((0, "ics_cosine_", "ICS cosine (unitless)", False),
                                        (1, "ics_distance_", "ICS distance ||G - G'|| (L2)", True)):
            ax = axes[row, k]
            col = f"{prefix}{j}"
            if col in series:
                for arm in arms:
                    _trace(ax, series[series.norm.astype(str) == arm], col, ARM_COLORS[arm], _arm(arm), log=log)
            if log and ax.has_data():
                ax.set_yscale("log")
            ax.set(xlabel="optimizer step", ylabel=label, title=f"Linear layer {j}")
    _legend(axes[0, 0], fontsize=8)
    fig.suptitle("C9: faint: one line per seed; bold: mean over seeds (no interval drawn)", fontsize=9)
    return save_figure(fig, out, claim)


# ------------------------------------------------------------------ C10
def c10_windows(series: pd.DataFrame, early: float = C10_EARLY, late: float = C10_LATE) -> pd.DataFrame:
    """Per run: the mean of each landscape quantity over its early and late probes."""
    s = series[np.isfinite(series.step.astype(float))].copy()
    if s.empty:
        return pd.DataFrame(columns=["run", "norm", "seed"])
    total = _run_total(s)
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


@guarded("C10")
def claim_c10(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    """Loss-landscape smoothness along the gradient (Santurkar et al. sec. 3.1), BN vs no norm."""
    claim = "C10"
    exp = exps.get("landscape")
    via = ""
    if exp is None:
        # The landscape preset is the ics preset (same config, both probes on): a record reused
        # for landscape is the same run as its ics original, and collect keeps one of the two.
        ics = exps.get("ics")
        if ics is None or probe_series(ics.records)[list(LANDSCAPE)].notna().to_numpy().sum() == 0:
            return not_run(claim)
        exp, via = ics, " (the runs of the ics preset, which carry the landscape probe)"
    statistic = ("log10(no norm / BN) of the mean effective beta-smoothness over the first 25% of training "
                 "probes (Welch on per-seed log10 values), expected > 0")
    res = _base(claim, exp, statistic, "log10")
    res.experiment += via
    series, left_out = _completed_series(exp)
    win = c10_windows(series)
    if win.empty or "norm" not in win:
        res.evidence = f"no landscape probe values in the completed runs{left_out}"
        return res
    none, bn = win[win.norm == NONE], win[win.norm == BN]
    diffs = {(q, w): welch_difference(_log10(none[f"{q}_{w}"]), _log10(bn[f"{q}_{w}"]))
             for q in LANDSCAPE for w in ("early", "late")}
    d = diffs[("beta_smoothness", "early")]
    res.details = [f"{LANDSCAPE_NAMES[q]}, {w} (probes of the "
                   f"{f'first {int(100 * C10_EARLY)}' if w == 'early' else f'last {int(round(100 * (1 - C10_LATE)))}'}"
                   f"% of training): no norm {_g(none[f'{q}_{w}'].mean())}, BN "
                   f"{_g(bn[f'{q}_{w}'].mean())}; log10(no norm / BN) {_di(diffs[(q, w)])} "
                   f"-> {verdict_of(diffs[(q, w)])}"
                   for q in LANDSCAPE for w in ("early", "late")]
    if d.n_a == 0 or d.n_b == 0:
        missing = [name for name, n in (("no norm", d.n_a), ("BN", d.n_b)) if n == 0]
        res.evidence = (f"no completed {' or '.join(missing)} run with a positive early beta-smoothness, so the "
                        f"arms cannot be compared{left_out}")
        res.figure = _figure_c10(series, out, claim)
        return res
    _fill(res, d)
    res.verdict = verdict_of(d)
    res.n = _n_phrase(d.n_b, d.n_a)
    late = diffs[("beta_smoothness", "late")]
    res.evidence = (f"early in training the effective beta-smoothness without BN is {_g(10 ** d.diff)}x BN's "
                    f"(no norm / BN; above 1: smoother with BN; log10 ratio {_di(d)}); late in training "
                    f"{_g(10 ** late.diff)}x (log10 {_di(late)}). "
                    "Figure: loss range, gradient change and beta-smoothness vs step per arm (log y; seeds faint, "
                    f"geometric mean bold; shaded: the first 25% of training){left_out}.")
    res.figure = _figure_c10(series, out, claim)
    return res


def _figure_c10(series: pd.DataFrame, out: Path, claim: str) -> Optional[str]:
    arms = _arms(series)
    if not arms or series[list(LANDSCAPE)].notna().to_numpy().sum() == 0:
        return None
    fig, axes = _figure(1, 3, w=3.4)
    total = float(series.step.max()) if series.step.notna().any() else math.nan
    for ax, q in zip(axes[0], LANDSCAPE):
        for arm in arms:
            _trace(ax, series[series.norm.astype(str) == arm], q, ARM_COLORS[arm], _arm(arm), log=True)
        if ax.has_data():
            ax.set_yscale("log")
        if math.isfinite(total) and total > 0:
            ax.axvspan(0, C10_EARLY * total, color="0.9", zorder=0)
        ax.set(xlabel="optimizer step", ylabel=f"{LANDSCAPE_UNITS[q]} (log)", title=LANDSCAPE_NAMES[q])
    _legend(axes[0, 0], fontsize=8)
    fig.suptitle(f"C10, along the gradient (faint: one line per seed; bold: geometric mean over\n"
                 f"seeds, no interval drawn; shaded: the first {int(100 * C10_EARLY)}% of training)", fontsize=9)
    return save_figure(fig, out, claim)


# ------------------------------------------------------------------ C15
def c15_spreads(series: pd.DataFrame, early: float = C15_EARLY) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per run: mean spread log10(max/min layer gradient norm) early and over all probes;
    per run x layer: mean log10 gradient norm over the early probes).

    A layer whose norm is exactly 0 or not finite is left out of that probe's spread.
    """
    cols = _layer_columns(series, "grad_norm_")
    s = series[np.isfinite(series.step.astype(float))].copy()
    if s.empty or not cols:
        return pd.DataFrame(columns=["run", "norm", "activation", "seed", "early", "all", "zeros"]), pd.DataFrame()
    norms = s[[c for _, c in cols]].astype(float)
    pos = norms.where(norms > 0)
    s["spread"] = np.log10(pos.max(axis=1) / pos.min(axis=1)).where(pos.notna().sum(axis=1) >= 2)
    s["zeros"] = (norms == 0).sum(axis=1)
    total = _run_total(s)
    first = s.groupby("run").step.transform("min")
    s["early"] = (s.step <= early * total) | (s.step == first)  # at least the first probe
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


@guarded("C15")
def claim_c15(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    """Per-layer gradient norms in a deep MLP: a narrow band with BN, spread by decades without."""
    claim = "C15"
    exp = exps.get("deep")
    if exp is None:
        return not_run(claim)
    res = _base(claim, exp, "", "decades")
    series, left_out = _completed_series(exp)
    per_run, layers = c15_spreads(series)
    if per_run.empty:
        res.statistic = ("no-norm minus BN spread of per-layer weight-gradient norms, log10(max/min over "
                         "layers), over the first 10% of training probes, expected > 0")
        res.evidence = f"no gradient-norm probe values in the completed runs{left_out}"
        return res
    activations = sorted(per_run.activation.unique())
    shown = "sigmoid" if "sigmoid" in activations else activations[0]
    res.statistic = ("no-norm minus BN spread of per-layer weight-gradient norms, log10(max/min over layers) "
                     f"averaged over the probes of the first {int(100 * C15_EARLY)}% of training, in decades "
                     f"(Welch), per activation (value shown: {shown}), expected > 0; verdict combined over "
                     "activations")
    verdicts, parts, details = [], [], []
    shown_d: Optional[Difference] = None
    for act in activations:
        g = per_run[per_run.activation == act]
        none, bn = g[g.norm == NONE], g[g.norm == BN]
        d = welch_difference(none.early, bn.early)
        d_all = welch_difference(none["all"], bn["all"])
        v = verdict_of(d) if d.n_a and d.n_b else INCONCLUSIVE
        verdicts.append(v)
        if act == shown:
            shown_d = d
        zeros = int(g.zeros.sum())
        details.append(f"{act}: spread early: no norm {_mi(mean_interval(none.early))}, BN "
                       f"{_mi(mean_interval(bn.early))} decades; no norm minus BN {_di(d)} -> {v}. Over all probes: "
                       f"no norm {_g(none['all'].mean())}, BN {_g(bn['all'].mean())}, difference {_di(d_all)}"
                       + (f"; {zeros} layer norms exactly 0 left out of the spreads" if zeros else ""))
        parts.append(f"{act}: no norm {_g(none.early.mean())} vs BN {_g(bn.early.mean())} decades "
                     f"({_di(d)}, {v})")
    res.details = details + [f"verdict over activations: {', '.join(f'{a} {v}' for a, v in zip(activations, verdicts))}"
                             f" -> {combine(verdicts)}"]
    if shown_d is not None:
        _fill(res, shown_d)
        res.n = _n_phrase(shown_d.n_b, shown_d.n_a) + f" ({shown})"
    res.verdict = combine(verdicts)
    res.evidence = ("spread of the per-layer gradient norms early in training, " + "; ".join(parts)
                    + ". Figure: mean weight-gradient norm over the early probes vs layer index (log y), one panel "
                    f"per activation, per arm (seeds faint, geometric mean bold){left_out}.")
    res.figure = _figure_c15(layers, activations, out, claim)
    return res


def _figure_c15(layers: pd.DataFrame, activations: list[str], out: Path, claim: str) -> Optional[str]:
    if layers.empty:
        return None
    fig, axes = _figure(1, len(activations), sharey=True)
    for ax, act in zip(axes[0], activations):
        g = layers[(layers.activation == act) & np.isfinite(layers.log10_norm.astype(float))]
        for arm in (NONE, BN):
            a = g[g.norm == arm]
            if a.empty:
                continue
            for _, r in a.groupby("run"):
                r = r.sort_values("layer")
                ax.plot(r.layer, 10 ** r.log10_norm.astype(float), color=ARM_COLORS[arm], alpha=0.25, lw=0.8)
            mean = a.groupby("layer").log10_norm.mean()
            ax.plot(mean.index, 10 ** mean.values, color=ARM_COLORS[arm], lw=1.8, marker="o", ms=3,
                    label=_arm(arm))
        if ax.has_data():
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="Linear layer (0 = input)", ylabel="weight-gradient L2 norm (log)", title=act)
        _legend(ax, fontsize=8)
    fig.suptitle(f"C15: mean over the probes of the first {int(100 * C15_EARLY)}% of training\nfaint: one line per "
                 "seed; bold: geometric mean over seeds (no interval drawn)", fontsize=9)
    return save_figure(fig, out, claim)


PROBE_CLAIMS: dict[str, Callable[[Mapping[str, ExperimentRuns], Path], ClaimResult]] = {
    "C6": claim_c6, "C8": claim_c8, "C9": claim_c9, "C10": claim_c10, "C15": claim_c15}
