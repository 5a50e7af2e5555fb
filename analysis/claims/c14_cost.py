"""C14: BN costs compute, in training and in inference.

Runs: the overhead preset. Each of its runs, after its short training, times
BN's and no norm's network of its shape in the process that trained it, with the arms
interleaved (study/measure/cost.py, recorded as the record's `cost`): a block of
training steps and a block of eval-mode forward passes of each arm on one
fixed minibatch of the run's batch size, the arms taking turns
(none, BN, BN, none, ...) over `cost_repeats` repeats, after a warm-up; per
arm the median over repeats of the seconds per call. A burst of load hits
both arms alike, and the two arms never ran in different processes.
Statistic: per batch size, for the training step and for the inference
pass, BN's median time over no norm's, minus 1, in percent: one value per
measurement (run), the mean over measurements with its 95% t interval. The
verdict combines every (batch size, kind) setting; the headline is the least
favourable. Figure: the relative cost per batch size, training step and
inference, mean and 95% t interval.

Records without a `cost` measurement (older overhead runs, a sweep without a
preset) fall back to the trainer's own per-epoch timings of separate runs:
per batch size, BN's seconds per training step relative to no norm's
(Welch over seeds, divided by no norm's mean; per run the median over epochs
after the first), compared only on lone (unpacked) runs timed in one process
(summary.timed_in_one_process): a batch size without such runs is "not
comparable", never a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import draw, errorbar, label_axes, log_y, mean_band, panel
from analysis.claims.result import ClaimResult
from analysis.claims.rule import headline, verdict_of
from analysis.claims.runs import ClaimRuns, ExperimentRuns, column, families, norm_of, runs_table
from analysis.collect import finite, num
from analysis.figures import log2_batch_axis, palette
from analysis.stats import Difference, mean_interval, relative_difference
from analysis.summary import (NOT_COMPARABLE, NOT_COMPARABLE_WHY, norm_name, norm_order, setting_groups,
                              timed_in_one_process)
from analysis.text import n_text, with_interval

LITERATURE = "measured on this project's trainer only; the notebook names the overhead without a number"
STATISTIC = ("BN's time relative to no norm's, minus 1, in percent, per batch size, for a training step and for an "
             "inference pass, timed in one process with the arms interleaved (mean over measurements, t interval), "
             "expected > 0")
EPOCH_STATISTIC = ("BN's seconds per training step relative to no norm's, minus 1, in percent, per batch size "
                   "(Welch over seeds), expected > 0")
KINDS = ("train", "infer")  # the record's cost keys (study/measure/cost.py KINDS)
KIND_NAMES = {"train": "training step", "infer": "inference pass"}
LOADED = 0.10  # a measurement whose cpu wait share exceeds this ran while other processes competed


def tests_plain_sweep(exp: ExperimentRuns) -> bool:
    if families(exp) != {"mlp"}:
        return False
    if not cost_table(exp.records).empty:
        return True
    t = timing_table(exp)
    return {"none", "batch"} <= set(t.norm)


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    exp = runs.need("overhead")
    m = cost_table(exp.records)
    if not m.empty:
        return _interleaved(runs, exp, m, out)
    return _epoch_timings(runs, exp, out)


def cost_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per interleaved cost measurement (study/measure/cost.py) in the records: a measurement that a pack's
    members share counts once."""
    rows, seen = [], set()
    for r in records:
        c = r.get("cost")
        if not isinstance(c, dict) or c.get("error") or not all(isinstance(c.get(k), dict) for k in KINDS):
            continue
        key = (c.get("process"), c.get("measured_at"), c.get("batch_size"))
        if key in seen:
            continue
        seen.add(key)
        row = {"batch_size": c.get("batch_size"), "seed": r.get("seed"), "norm": norm_of(r),
               "process": c.get("process"), "cpu_wait": c.get("cpu_wait"), "repeats": c.get("repeats"),
               "threads": c.get("threads"), "device": c.get("device")}
        for k in KINDS:
            ck = c[k]
            row[f"{k}_pct"] = 100 * num(ck.get("relative"))
            for arm in ("none", "batch"):
                row[f"{k}_{arm}_ms"] = 1e3 * num((ck.get(arm) or {}).get("median_seconds"))
        if finite(row["batch_size"]) and all(finite(row[f"{k}_pct"]) for k in KINDS):
            rows.append(row)
    return pd.DataFrame(rows)


def _interleaved(runs: ClaimRuns, exp: ExperimentRuns, m: pd.DataFrame, out: Path) -> ClaimResult:
    settings, details = [], []
    for b in sorted(m.batch_size.unique()):
        g = m[m.batch_size == b]
        for k in KINDS:
            mi = mean_interval(g[f"{k}_pct"])
            v = verdict_of(mi, runs.claim.margin)
            settings.append((f"batch {int(b)}, {KIND_NAMES[k]}", mi, v))
            details.append(f"batch {int(b)}, {KIND_NAMES[k]}: BN {g[f'{k}_batch_ms'].median():.4g} ms vs no norm "
                           f"{g[f'{k}_none_ms'].median():.4g} ms (medians over measurements); BN relative to no norm "
                           f"{with_interval(mi, '%', 1)} (n={mi.n}): {v}")
    loaded = int((pd.to_numeric(m.cpu_wait, errors="coerce") > LOADED).sum())
    threads = sorted({int(t) for t in m.threads if finite(t)})
    reps = pd.to_numeric(m.repeats, errors="coerce").dropna()
    machines = sorted(column(runs_table(exp), "device_name").dropna().astype(str).unique())
    details.append(f"{len(m)} measurement(s), {int(reps.median()) if len(reps) else 'n/a'} interleaved repeats each "
                   f"(median); threads {', '.join(map(str, threads)) or 'unknown'}; device "
                   f"{', '.join(sorted(map(str, set(m.device))))}; machine {', '.join(machines) or 'unknown'}"
                   + (f"; {loaded} measured while other processes competed for the CPU (cpu wait > "
                      f"{LOADED:.0%}): the interleaving shares such load between the arms" if loaded else ""))
    figure = draw("C14", out, lambda: _relative_figure(m), details)
    label, d = headline(settings)
    evidence = (f"At {label} (least favourable of {len(settings)} settings: {m.batch_size.nunique()} batch size(s) x "
                f"training step and inference pass) BN's time relative to no norm's is "
                f"{with_interval(d, '%', 1)} (positive: BN slower; per measurement BN's median "
                "time over no norm's, minus 1, both arms timed in one process, interleaved; mean and 95% t interval "
                "over measurements, one per run); verdict combined over every setting. Figure: the relative cost per "
                "batch size, training step and inference pass, mean and 95% t interval.")
    return runs.combined(STATISTIC, settings, interval=d, unit="%",
                       n=n_text([s[1].n for s in settings], "measurements per batch size"), evidence=evidence,
                       figure=figure, details=details)


def _relative_figure(m: pd.DataFrame) -> Figure:
    fig, ax = panel()
    sizes = sorted(m.batch_size.unique())
    for i, (k, marker) in enumerate(zip(KINDS, ("o", "s"))):
        shift = 2 ** (0.06 * (2 * i - 1))
        mis = [mean_interval(m[m.batch_size == b][f"{k}_pct"]) for b in sizes]
        errorbar(ax, [b * shift for b in sizes], mis, marker=marker, label=KIND_NAMES[k], color=f"C{i}")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    log2_batch_axis(ax, m.batch_size)
    label_axes(ax, "batch size", "BN's time relative to no norm's (%)",
               "C14: BN's cost, arms interleaved in one process\n(mean and 95% t interval over measurements)")
    return fig


def _epoch_timings(runs: ClaimRuns, exp: ExperimentRuns, out: Path) -> ClaimResult:
    table, t = runs_table(exp), timing_table(exp)
    if t.empty or not {"none", "batch"} <= set(t.norm):
        return runs.inconclusive(EPOCH_STATISTIC, "needs completed lone (unpacked) timed runs of both BN and no norm")
    settings, details, apart = [], [], []
    for label, g in setting_groups(exp.analysis, t):
        for b in sorted(g.batch_size.dropna().unique()):
            where = f"batch {int(b)}" + (f", {label}" if label else "")
            line, setting = _compare(where, g[g.batch_size == b], runs.claim.margin)
            if setting is not None:
                settings.append(setting)
            if line:
                details.append(line)
                apart += [where] if setting is None else []
    machines = sorted(column(table, "device_name").dropna().astype(str).unique())
    details.append(f"per run: median over epochs after the first (warm-up) of epoch seconds / steps in the epoch; "
                   f"machine: {', '.join(machines) or 'unknown'}")
    n_packed = int((pd.to_numeric(column(table, "pack_size"), errors="coerce") > 1).sum())
    n_out = int((table.status != "completed").sum())
    if n_packed or n_out:
        details.append(f"left out: {n_packed} packed run(s) (their epochs are timed together), {n_out} run(s) not "
                       "completed")
    figure = draw("C14", out, lambda: _figure(t), details)
    if not settings:
        why = (f"{NOT_COMPARABLE} at every batch size ({', '.join(apart)}): {NOT_COMPARABLE_WHY}" if apart
               else "no batch size has timed runs of both arms")
        return runs.inconclusive(EPOCH_STATISTIC, why, figure=figure, details=details)
    label, d = headline(settings)
    evidence = ("No interleaved cost measurement in these records (study/measure/cost.py; the overhead preset's cost_repeats): "
                "the trainer's per-epoch timings of separate runs stand in. "
                f"At {label} (least favourable of {len(settings)}) BN's training step time relative to no norm's "
                f"is {with_interval(d, '%', 1)} (positive: BN slower; interval: Welch difference over seeds divided by "
                "no norm's mean; both arms timed in one process); verdict combined over batch sizes"
                + (f" ({NOT_COMPARABLE}, left out: {', '.join(apart)})" if apart else "")
                + ". Figure: milliseconds per training step by batch size and arm, mean and 95% t-interval over "
                "seeds.")
    return runs.combined(EPOCH_STATISTIC, settings, interval=d, unit="%",
                       n=n_text([d.n_a, d.n_b], "seeds per arm"), evidence=evidence, figure=figure, details=details)


def timing_table(exp: ExperimentRuns) -> pd.DataFrame:
    """Per completed lone run: median seconds per training step and median eval seconds, epochs after the first."""
    runs, hist = runs_table(exp), exp.analysis.col.history
    keys = exp.analysis.setting_keys
    cols = ["run", "norm", "batch_size", *keys, "seed", "process", "sec_per_step", "eval_sec"]
    if hist is None or hist.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for _, r in runs[runs.status == "completed"].iterrows():
        h = hist[hist.run == r["run"]].sort_values("epoch")
        if h.empty or (finite(r.get("pack_size")) and num(r.get("pack_size")) > 1):
            continue
        steps = pd.to_numeric(h.step, errors="coerce").diff()
        steps.iloc[0] = num(h.step.iloc[0])
        sps = pd.to_numeric(h.epoch_seconds, errors="coerce") / steps.where(steps > 0)
        ev = pd.to_numeric(h.eval_seconds, errors="coerce")
        if len(h) > 1:  # the first epoch is warm-up
            sps, ev = sps.iloc[1:], ev.iloc[1:]
        rows.append({**{k: r.get(k) for k in cols[:-2]}, "sec_per_step": float(sps.median()),
                     "eval_sec": float(ev.median())})
    t = pd.DataFrame(rows, columns=cols)
    return t[np.isfinite(t.sec_per_step.astype(float))] if len(t) else t


def _compare(label: str, t: pd.DataFrame, margin: float) -> tuple[str, tuple[str, Difference, str] | None]:
    """One batch size (and setting): its detail line and setting (label, relative step time, verdict); no
    line without timed runs of both arms, no setting where no process timed both."""
    bn, no = t[t.norm == "batch"], t[t.norm == "none"]
    if bn.empty or no.empty:
        return "", None
    process, bn_one, no_one = timed_in_one_process(bn, no)
    if process is None:
        return (f"{label}: {NOT_COMPARABLE} (BN timed in {bn.process.nunique()} process(es), no norm in "
                f"{no.process.nunique()}, none in common)"), None
    n_left = len(bn) + len(no) - len(bn_one) - len(no_one)
    bn, no = bn_one, no_one
    d = relative_difference(bn.sec_per_step, no.sec_per_step, 100)
    ev = relative_difference(bn.eval_sec, no.eval_sec, 100)
    v = verdict_of(d, margin)
    return (f"{label}: training step BN {1e3 * bn.sec_per_step.mean():.3f} ms vs no norm "
            f"{1e3 * no.sec_per_step.mean():.3f} ms: {with_interval(d, '%', 1)}: {v}; inference (eval-mode "
            f"passes over validation+test) {with_interval(ev, '%', 1)}"
            + (f"; {n_left} run(s) timed in other processes left out" if n_left else "")), (label, d, v)


def _figure(t: pd.DataFrame) -> Figure:
    fig, ax = panel()
    pal = palette(t.norm)
    for norm in norm_order(t.norm):
        sizes = sorted(t[t.norm == norm].batch_size.unique())
        groups = [list(1e3 * t[(t.norm == norm) & (t.batch_size == b)].sec_per_step) for b in sizes]
        mean_band(ax, list(sizes), groups, pal[norm], norm_name(norm), bars=True)
    log2_batch_axis(ax, t.batch_size)
    log_y(ax)
    ms = 1e3 * t.sec_per_step.astype(float)
    ms = ms[np.isfinite(ms) & (ms > 0)]
    if len(ms):  # a lower bound below 0 ms (2 seeds) would drag a log axis down by decades
        ax.set_ylim(bottom=max(ax.get_ylim()[0], float(ms.min()) / 3))
    label_axes(ax, "batch size", "ms per training step (log scale)",
          "C14: time per training step, lone runs\n(bars: mean and 95% t interval over seeds)")
    return fig
