"""From the run table to the report's numbers: cells, differences, best lrs, cost.

A cell is (norm, batch_size) plus every other config key that varies across
the runs (lr, activation, optimizer, ...), seed excepted: the seeds of a cell
are its replicates. Keys that do not affect what is learned (threads, device,
where the data lives, ...) never split cells; if they vary, the protocol box
says so. Means and intervals use completed runs only; diverged, failed and
other runs are counted beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from analysis.collect import TRIAL_NUMBER, Collection, counted_as
from analysis.stats import Difference, mean_interval, relative_difference, welch_difference
from analysis.text import fmt_value, interval_text
from study.records import OPERATIONAL_KEYS

# How a cell's numbers at its best lr were obtained (best_lr_table's `basis`).
BASIS_ALL = "all runs"  # no tuning trials: chosen and shown on the same runs
BASIS_CONFIRM = "confirmation runs"  # chosen on the trial runs, shown on fresh seeds
BASIS_TRIAL = "selection trial"  # no confirmation run: the trial that chose the lr
BIASED_NOTE = "selected on this seed: biased upward"
SCIENTIFIC = ("norm", "batch_size")  # always the leading cell keys, varying or not
BASELINE_NORM = "none"
NORM_NAMES = {"none": "no norm", "batch": "BN", "ghost": "ghost BN", "layer": "LayerNorm",
              "group": "GroupNorm", "batch_shared": "BN, shared statistics"}  # the last: model=lstm only
# Diverged runs count as this validation accuracy when picking a cell's best lr,
# so that an lr at which some seed blew up is not "best" on its surviving seeds.
DIVERGED_SELECTION_SCORE = 0.0


def is_operational(key: str) -> bool:
    """A config key that changes how or where a run executes, not what it learns (study.records)."""
    return any(key == k or key.startswith(k + ".") for k in OPERATIONAL_KEYS)


def norm_order(norms: Iterable[Any]) -> list[Any]:
    """The distinct norms in the study's order (no norm, BN, ghost BN, LayerNorm, GroupNorm, then the rest)."""
    order = list(NORM_NAMES)
    return sorted({v for v in norms if isinstance(v, str)},
                  key=lambda v: (order.index(v) if v in order else len(order), v))


def norm_name(norm: Any) -> str:
    return NORM_NAMES.get(str(norm), f"norm={norm}")


def seeds_phrase(n_a: int, n_b: int, name_a: str, name_b: str) -> str:
    if n_a == n_b:
        return f"n={n_a} seed{'s' if n_a != 1 else ''} each"
    return f"n={n_a} {name_a}, {n_b} {name_b} seeds"


@dataclass
class Analysis:
    col: Collection
    runs: pd.DataFrame  # collection.runs with cell columns filled
    cell_keys: list[str]  # norm, batch_size, then the other varying keys
    setting_keys: list[str]  # varying keys other than norm, batch_size and lr
    lr_varies: bool
    fixed: dict[str, Any]  # non-varying config keys -> their value
    operational_varying: dict[str, list[Any]]
    # (record left out, record counted): one (cell, seed) trained more than once; the newest counts
    repeats: list[tuple[str, str]] = field(default_factory=list)
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)  # at each cell's own lr
    best: pd.DataFrame = field(default_factory=pd.DataFrame)  # best lr per (norm, batch, setting)
    best_differences: pd.DataFrame = field(default_factory=pd.DataFrame)
    cost: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def completed(self) -> pd.DataFrame:
        return self.runs[self.runs.status == "completed"]

    @property
    def norms(self) -> list[Any]:
        return norm_order(self.runs["norm"].dropna())

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({int(b) for b in self.runs["batch_size"].dropna()})  # 32 and "32" (an override) are one

    def setting_label(self, row: pd.Series | dict[str, Any]) -> str:
        return ", ".join(f"{k}={fmt_value(row[k])}" for k in self.setting_keys)

    @property
    def tuned(self) -> bool:
        """A tuning sweep: some runs are Optuna trials (the others confirm a cell's best lr)."""
        return TRIAL_NUMBER in self.runs and bool(self.runs[TRIAL_NUMBER].notna().any())

    def best_lr_runs(self) -> pd.DataFrame:
        """Runs each (norm, batch_size, setting)'s numbers at its best lr come from; all runs when lr is fixed.

        In a tuning sweep these are the confirmation runs at the chosen lr, or
        the selection trial where a cell has none (see `best_lr_table`).
        """
        if not self.lr_varies or self.best.empty:
            return self.runs
        keys = [*SCIENTIFIC, *self.setting_keys]
        at = self.runs.merge(self.best[[*keys, "lr", "basis"]], on=[*keys, "lr"], how="inner")
        if TRIAL_NUMBER in at:
            trial = at[TRIAL_NUMBER].notna()
            at = at[(at.basis == BASIS_ALL) | ((at.basis == BASIS_CONFIRM) & ~trial)
                    | ((at.basis == BASIS_TRIAL) & trial)]
        return at.drop(columns="basis")


def best_lr_phrase(a: Analysis) -> str:
    """How each cell's best lr was chosen and which runs show it (for captions and tables)."""
    if a.tuned:
        return "chosen on the validation accuracy of its tuning trials and shown with its confirmation runs"
    return "chosen on mean validation accuracy"


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _varies(s: pd.Series) -> bool:
    return s.dropna().astype(str).nunique() > 1


def analyze(col: Collection) -> Analysis:
    runs = col.runs.copy()
    for k in SCIENTIFIC:
        if k not in runs.columns:
            runs[k] = pd.NA
    config = [c for c in col.config_columns if c in runs.columns and c != "seed"]
    varying = [c for c in config if not is_operational(c) and _varies(runs[c])]
    cell_keys = [*SCIENTIFIC, *[c for c in varying if c not in SCIENTIFIC]]
    setting_keys = [c for c in cell_keys if c not in (*SCIENTIFIC, "lr")]
    fixed = {c: _plain(runs[c].dropna().iloc[0]) if runs[c].notna().any() else None for c in config
             if c not in varying and not is_operational(c)}
    operational = {c: sorted(runs[c].dropna().astype(str).unique()) for c in [*config, "threads"]
                   if is_operational(c) and c in runs.columns and _varies(runs[c])}
    runs, repeats = drop_repeats(runs, cell_keys)
    a = Analysis(col=col, runs=runs, cell_keys=cell_keys, setting_keys=setting_keys,
                 lr_varies="lr" in varying, fixed=fixed, operational_varying=operational, repeats=repeats)
    a.cells = cell_table(a)
    a.differences = difference_table(a, a.runs, [k for k in cell_keys if k != "norm"])
    if a.lr_varies:
        a.best = best_lr_table(a)
        a.best_differences = best_difference_table(a)
    a.cost = cost_table(a)
    return a


def drop_repeats(runs: pd.DataFrame, cell_keys: list[str]) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Keep one completed or diverged run per (cell, seed): the newest by finished_at.

    A forced retrain, another thread count or a code change writes a second
    record of the same cell and seed; counting both would pass one seed off
    as two replicates. Returns the runs kept and (record left out, record counted).
    """
    if "seed" not in runs:
        return runs, []
    scored = runs[runs.status.isin(["completed", "diverged"]) & runs.seed.notna()]
    if scored.empty:
        return runs, []
    counted = counted_as(scored, [*cell_keys, "seed"])
    left_out = counted.index[counted != counted.index]
    pairs = [(str(scored.record[i]), str(scored.record[counted[i]])) for i in left_out]
    return runs.drop(index=left_out), pairs


def _groups(df: pd.DataFrame, keys: list[str]):
    """(key tuple, rows) per value of `keys`, norms in their study order (no norm first)."""
    if not keys:
        return [((), df)]
    groups = [((k if isinstance(k, tuple) else (k,)), g) for k, g in df.groupby(keys, dropna=False, sort=True)]
    if "norm" in keys:
        i = keys.index("norm")
        order = list(NORM_NAMES)
        groups.sort(key=lambda kg: order.index(kg[0][i]) if kg[0][i] in order else len(order))  # stable
    return groups


def cell_table(a: Analysis) -> pd.DataFrame:
    rows = []
    for key, g in _groups(a.runs, a.cell_keys):
        done = g[g.status == "completed"]
        row: dict[str, Any] = dict(zip(a.cell_keys, key))
        row.update({
            "n_runs": len(g),
            "n_completed": len(done),
            "n_diverged": int((g.status == "diverged").sum()),
            "n_failed": int((g.status == "failed").sum()),
            "n_other": int((~g.status.isin(["completed", "diverged", "failed"])).sum()),
            "seeds": " ".join(str(s) for s in sorted(g["seed"].dropna().unique())) if "seed" in g else "",
        })
        for metric in ("val_acc", "test_acc"):
            m = mean_interval(done[metric])
            row.update({f"{metric}_mean": m.mean, f"{metric}_low": m.low, f"{metric}_high": m.high,
                        f"{metric}_sd": m.sd, f"{metric}_n": m.n})
        row["train_loss_mean"] = done["train_loss"].mean() if len(done) else math.nan
        row["seconds_per_epoch_mean"] = done["seconds_per_epoch"].mean() if len(done) else math.nan
        row["samples_per_second_mean"] = done["samples_per_second"].mean() if len(done) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _excluded(g: pd.DataFrame, name: str) -> list[str]:
    out = []
    for status, n in g.status.value_counts().items():
        if status != "completed":
            out.append(f"{n} {status} {name} run{'s' if n != 1 else ''}")
    return out


def reading(d: Difference, name: str, base: str, excluded: list[str]) -> str:
    """One line: who is ahead, by how much, the interval, n; or why there is none."""
    if d.n_a == 0 or d.n_b == 0:
        missing = name if d.n_a == 0 else base
        return f"no comparison: no completed {missing} run" + (f" ({'; '.join(excluded)})" if excluded else "")
    size = abs(100 * d.diff)
    if d.diff > 0:
        head = f"{name} ahead by {size:.2f} points"
    elif d.diff < 0:
        head = f"{name} behind by {size:.2f} points"
    else:
        head = "no difference: 0.00 points"
    n = seeds_phrase(d.n_a, d.n_b, name, base)
    if math.isnan(d.low):
        text = f"{head}, {n}: no interval (a single seed has no spread; run more seeds)"
    else:
        text = f"{head} {interval_text(d.low, d.high, spec='.2f', scale=100)}, {n}"
        if d.low <= 0 <= d.high and d.diff != 0:
            text += "; the interval includes 0: no clear difference"
    if excluded:
        text += f" (excluded: {'; '.join(excluded)})"
    return text


def difference_table(a: Analysis, runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Each norm minus no norm in final test accuracy, per value of `keys`."""
    if BASELINE_NORM not in a.norms:
        return pd.DataFrame()
    rows = []
    for key, g in _groups(runs, keys):
        base = g[g.norm == BASELINE_NORM]
        for norm in a.norms:
            if norm == BASELINE_NORM:
                continue
            arm = g[g.norm == norm]
            if arm.empty or base.empty:
                continue
            d = welch_difference(arm.loc[arm.status == "completed", "test_acc"],
                                 base.loc[base.status == "completed", "test_acc"])
            name, bname = norm_name(norm), norm_name(BASELINE_NORM)
            row = dict(zip(keys, key))
            row.update({"norm": norm, "baseline": BASELINE_NORM, "test_acc_diff": d.diff,
                        "low": d.low, "high": d.high, "n": d.n_a, "n_baseline": d.n_b,
                        "reading": reading(d, name, bname, _excluded(arm, name) + _excluded(base, bname)),
                        "_difference": d})
            rows.append(row)
    return pd.DataFrame(rows)


def best_lr_table(a: Analysis) -> pd.DataFrame:
    """Per (norm, batch_size, setting): the lr with the best mean validation accuracy.

    Selection is on validation accuracy (the protocol: test only in the final
    table); diverged runs count as 0 so that a fragile lr is not picked. In a
    tuning sweep the lr is chosen on the cell's trial runs only (among lrs tied
    at the best score, the one with confirmation runs: the sweeper's choice)
    and its numbers come from the confirmation runs at that lr (fresh seeds:
    the trial that chose an lr is biased upward); a cell without them falls
    back to that trial, marked BIASED_NOTE.
    """
    keys = [*SCIENTIFIC, *a.setting_keys]
    tuned = a.tuned
    rows = []
    for key, g in _groups(a.runs, keys):
        trial = g[TRIAL_NUMBER].notna() if tuned else pd.Series(False, index=g.index)
        pool = g[trial] if trial.any() else g
        scored = pool[pool.status.isin(["completed", "diverged"])].copy()
        scored["score"] = np.where(scored.status == "diverged", DIVERGED_SELECTION_SCORE, scored.val_acc)
        scored = scored[scored.score.notna()]
        if scored.empty or not (scored.status == "completed").any():
            continue
        means = scored.groupby("lr").score.mean()
        tied = list(means.index[means == means.max()])
        # Of lrs tied at the best score, the one the sweeper confirmed (it broke the tie its own way); a
        # tie broken otherwise showed the cell on one biased trial beside eight confirmation runs unused.
        confirmed = set(g.lr[~trial]) if tuned and trial.any() else set()
        lr = next((x for x in tied if x in confirmed), tied[0])
        basis = BASIS_ALL
        at = g[g.lr == lr]
        if trial.any():
            confirm = at[~trial[at.index]]
            basis = BASIS_CONFIRM if len(confirm) else BASIS_TRIAL
            at = confirm if len(confirm) else at[trial[at.index]]
        done = at[at.status == "completed"]
        m = mean_interval(done.test_acc)
        row = dict(zip(keys, key))
        row.update({"lr": lr, "n_lr_tried": int(pool.lr.nunique()), "val_acc_mean": done.val_acc.mean(),
                    "test_acc_mean": m.mean, "test_acc_low": m.low, "test_acc_high": m.high,
                    "n": m.n, "n_diverged_at_lr": int((at.status == "diverged").sum()), "basis": basis,
                    "note": BIASED_NOTE if basis == BASIS_TRIAL else ""})
        rows.append(row)
    return pd.DataFrame(rows)


def best_difference_table(a: Analysis) -> pd.DataFrame:
    """Each norm minus no norm at each arm's best lr; readings note an arm shown on its selection trial."""
    keys = ["batch_size", *a.setting_keys]
    diffs = difference_table(a, a.best_lr_runs(), keys)
    if diffs.empty:
        return diffs
    biased = a.best[a.best.basis == BASIS_TRIAL]
    for i, d in diffs.iterrows():
        same = np.ones(len(biased), dtype=bool)
        for k in keys:
            same &= biased[k].astype(str).to_numpy() == str(d[k])
        arms = set(biased.norm[same])
        if arms & {d["norm"], d["baseline"]}:
            names = " and ".join(norm_name(n) for n in (d["norm"], d["baseline"]) if n in arms)
            diffs.at[i, "reading"] = f"{d['reading']}; {names}: no confirmation runs, {BIASED_NOTE}"
    return diffs


def timings(a: Analysis) -> pd.DataFrame:
    """One row per timed training epoch: the replicates of a cost measurement.

    Seeds do not change the work, so the spread that matters is the
    machine's: every epoch after the first (warm-up) is one measurement. Runs
    trained together in a pack share their epochs' timing; it counts once.
    Each row names the process that timed it (`process`).
    """
    keys = [k for k in a.cell_keys if k in a.runs]
    cols = ["run", *keys, *(["process"] if "process" in a.runs else [])]
    hist = a.col.history.merge(a.runs[cols], on="run", how="inner")
    if "process" not in hist:
        hist["process"] = None
    hist = hist[hist.samples_per_second.notna() & hist.epoch_seconds.notna()]
    if hist.empty:
        return hist
    n_epochs = hist.groupby("run").epoch.transform("count")
    first = hist.groupby("run").epoch.transform("min")
    hist = hist[(n_epochs == 1) | (hist.epoch != first)]
    return hist.drop_duplicates([*keys, "epoch", "step", "epoch_seconds", "samples_per_second"])


NOT_COMPARABLE = "not comparable"
NOT_COMPARABLE_WHY = ("timings are compared only between arms timed in one process (one pack job, one launcher "
                      "worker, one sequential sweep) at one pack size; these arms were timed in different processes "
                      "(e.g. a resumed sweep, two workers) or by records that name no process")


def timed_in_one_process(a: pd.DataFrame, b: pd.DataFrame) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """(process, a's rows, b's rows) of the process (study.records.process_id) that timed both `a` and `b`,
    the one with the most timings of the two; (None, a, b) where no process timed both. Another process ran
    under other conditions (other load, other workers alongside, another day), so its timings are not
    compared with these."""
    if "process" not in a or "process" not in b:
        return None, a, b
    shared = set(a.process.dropna()) & set(b.process.dropna())
    if not shared:
        return None, a, b
    counts = pd.concat([a.process, b.process]).value_counts()
    process = max(sorted(shared), key=lambda p: counts[p])
    return process, a[a.process == process], b[b.process == process]


def cost_table(a: Analysis) -> pd.DataFrame:
    """Training throughput per (norm, batch_size[, setting], pack_size) and each norm's relative cost.

    A pack steps several seeds' models together, so its per-run samples/s is
    not comparable with a lone run's: norms are compared at equal pack sizes,
    and only on the epochs timed in one process (`timed_in_one_process`); where no
    process timed both, `vs_baseline` is NaN and `comparable` false.
    """
    timed = timings(a)
    if timed.empty:
        return pd.DataFrame()
    keys = ["batch_size", *a.setting_keys, "pack_size"]  # the lr changes the numbers, not the work per step
    rows = []
    for key, g in _groups(timed, keys):
        base = g[g.norm == BASELINE_NORM]
        for norm in a.norms:
            arm = g[g.norm == norm]
            if arm.empty:
                continue
            m = mean_interval(arm.samples_per_second)
            row = dict(zip(keys, key))
            row.update({"norm": norm, "n_epochs_timed": m.n, "samples_per_second": m.mean,
                        "samples_per_second_low": m.low, "samples_per_second_high": m.high,
                        "seconds_per_epoch": arm.epoch_seconds.mean()})
            if norm != BASELINE_NORM and not base.empty:
                process, x, y = timed_in_one_process(arm, base)
                row.update({"comparable": process is not None, "process": process,
                            "vs_baseline": math.nan, "vs_baseline_low": math.nan, "vs_baseline_high": math.nan})
                if process is not None:
                    d = relative_difference(x.samples_per_second, y.samples_per_second)
                    # A throughput cannot fall by more than all of it: clip the t-interval at -100%.
                    row.update({"vs_baseline": d.diff, "vs_baseline_low": max(d.low, -1.0),
                                "vs_baseline_high": d.high, "n_epochs_compared": d.n_a,
                                "n_baseline_epochs_compared": d.n_b})
            rows.append(row)
    return pd.DataFrame(rows)


def setting_groups(a: Analysis, df: pd.DataFrame, keys: list[str] | None = None) -> list[tuple[str, pd.DataFrame]]:
    """(label "k=v, ...", rows) per combination of `keys` (default: the varying keys other than norm,
    batch_size and lr); one group labelled "" when there are none."""
    keys = a.setting_keys if keys is None else keys
    if not keys:
        return [("", df)]
    return [(", ".join(f"{k}={fmt_value(v)}" for k, v in zip(keys, key)), g) for key, g in _groups(df, keys)]
