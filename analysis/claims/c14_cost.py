"""C14: BN costs compute.

Runs: the overhead preset (one run at a time, one thread, unpacked), or a
sweep without a preset that has lone (unpacked) timed runs of both arms: a
pack's epochs are timed together, so packed runs are left out. Two arms are
compared only on runs timed in one process (summary.timed_in_one_process): a
resumed sweep's or another worker's timings ran under other conditions; a
batch size without such runs is "not comparable", never a number.
Statistic: per batch size (and setting where other keys vary), BN's seconds
per training step relative to no norm's, minus 1, in percent (Welch over
seeds, divided by no norm's mean); per run, the median over epochs after the
first (warm-up). Figure: milliseconds per training step by batch size and
arm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.common import (ClaimResult, ClaimRuns, ExperimentRuns, column, combine, diff_text, draw, finite,
                                    headline, label_axes, log2_batch_axis, log_y, mean_band, n_text, num, palette,
                                    panel, runs_table, verdict_of)
from analysis.stats import Difference, relative_difference
from analysis.summary import NOT_COMPARABLE, NOT_COMPARABLE_WHY, norm_name, norm_order, setting_groups, timed_in_one_process

LITERATURE = "measured on this project's trainer only; the notebook names the overhead without a number"
STATISTIC = ("BN's seconds per training step relative to no norm's, minus 1, in percent, per batch size "
             "(Welch over seeds), expected > 0")


def tests_plain_sweep(exp: ExperimentRuns) -> bool:
    t = timing_table(exp)
    return {"none", "batch"} <= set(t.norm)


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    exp = runs.need("overhead")
    table, t = runs_table(exp), timing_table(exp)
    if t.empty or not {"none", "batch"} <= set(t.norm):
        return runs.inconclusive(STATISTIC, "needs completed lone (unpacked) timed runs of both BN and no norm")
    settings, details, apart = [], [], []
    for label, g in setting_groups(exp.analysis, t):
        for b in sorted(g.batch_size.dropna().unique()):
            where = f"batch {int(b)}" + (f", {label}" if label else "")
            line, setting = _compare(where, g[g.batch_size == b])
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
        return runs.inconclusive(STATISTIC, why, figure=figure, details=details)
    label, d = headline(settings)
    evidence = (f"At {label} (least favourable of {len(settings)}) BN's training step time relative to no norm's "
                f"is {diff_text(d, '%', 1)} (positive: BN slower; interval: Welch difference over seeds divided by no "
                "norm's mean; both arms timed in one process); verdict combined over batch sizes"
                + (f" ({NOT_COMPARABLE}, left out: {', '.join(apart)})" if apart else "")
                + ". Figure: milliseconds per training step by batch size and arm, mean and 95% t-interval over "
                "seeds.")
    return runs.result(combine(v for *_, v in settings), STATISTIC, interval=d, unit="%",
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


def _compare(label: str, t: pd.DataFrame) -> tuple[str, tuple[str, Difference, str] | None]:
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
    v = verdict_of(d)
    return (f"{label}: training step BN {1e3 * bn.sec_per_step.mean():.3f} ms vs no norm "
            f"{1e3 * no.sec_per_step.mean():.3f} ms: {diff_text(d, '%', 1)}: {v}; inference (eval-mode "
            f"passes over validation+test) {diff_text(ev, '%', 1)}"
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
