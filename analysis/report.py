"""`build_report`: run records -> a `report/` folder a reader can trust.

The folder holds `results.csv` (one row per run), `history.csv` (one row per
run and epoch), `cells.csv` and `differences.csv` (the tables' numbers), the
figures (PNG), `report.md` and `report.html` (one file, figures embedded). It
is written into a staging dir next to its destination and moved into place
at the end, so a build that fails never leaves a half report that looks
complete.
"""

from __future__ import annotations

import datetime as dt
import math
import shlex
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from analysis.claims import REPLICATION_SEED, evaluate_claims
from analysis.claims.notebook_claims import notebook_verdicts
from analysis.claims.result import ClaimResult, claims_table
from analysis.claims.rule import NOT_RUN, VERDICT_RULE
from analysis.claims.runs import NO_PRESET, ExperimentRuns, preset_of, split_by_experiment
from analysis.collect import NORMALIZE_KEY, AnalysisError, Collection, collect, is_storage_url, normalize_of
from analysis.document import Bullets, Details, Figure_, Para, Section, Table, Warning_, to_html, to_markdown
from analysis.figures import draw_figures
from analysis.summary import BASELINE_NORM, Analysis, analyze, best_lr_phrase, norm_name
from analysis.text import BARE, fmt_value, interval_text, pct, signed
from study.records import OPERATIONAL_KEYS

REPORT_HTML = "report.html"
# Findings: the protocol's claims these runs test, each computed by its claim module (analysis/claims/).
SECTION_TITLES = ("Findings", "Protocol", "Difference to no norm", "Figures", "Per-cell results", "Files")
# A folder with the runs of several presets (python -m study.suite): the claims,
# then one sub-report per preset (experiments/<preset>/report.html).
CLAIMS_REPORT_TITLES = ("Claims", "The notebook's claims", "Claim figures", "Experiments", "Files")
EXPERIMENTS_DIR = "experiments"
LIBRARIES = ("torch", "torchvision", "numpy", "hydra", "optuna", "python")
MAX_LISTED = 25  # problem runs listed in the report; the rest are in results.csv
ONE_SEED = "none: 1 seed"  # a cell's interval where it has one seed


def default_out_dir(paths: list[str], studies: list[str]) -> Path:
    first = paths[0]
    if is_storage_url(first):
        return Path("outputs") / "reports" / (studies[0] if len(studies) == 1 else "study")
    p = Path(first).expanduser()
    return (p if p.is_dir() else p.parent) / "report"


def build_report(paths: list[str | Path], out_dir: Path | None = None, *,
                 study_name: str | Sequence[str] | None = None, results_root: str | Path | None = None,
                 problems: list[Any] | None = None) -> Path:
    """Collect every run record under `paths`, write the report folder, return it.

    `results_root`: where relative record paths of a storage are looked up
    first; `problems`, when given, receives the records that could not be
    read (analysis.collect.Problem). Raises `AnalysisError` (one-line
    message) for unusable input: no such path, no records, an Optuna storage
    without the named study.
    """
    paths = [str(p) for p in paths]
    col = collect(paths, study_name=study_name, results_root=results_root)
    if problems is not None:
        problems.extend(col.problems)
    out = Path(out_dir) if out_dir is not None else default_out_dir(paths, col.studies)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / REPORT_HTML).exists())):
        raise AnalysisError(f"refusing to replace {out}: it exists and is not a report folder")
    presets = {preset_of(e)[0] for e in (col.runs["experiment"] if "experiment" in col.runs else [])}
    several = len(presets - {NO_PRESET}) > 1  # a claims report splits (and analyzes) its runs per seed set itself
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-building-", dir=out.parent))
    except OSError as e:  # a read-only results dir (the default out is inside it), a file in the way
        raise AnalysisError(f"cannot write the report to {out}: {e.strerror or e} ({e.filename}); "
                            "give --out DIR somewhere writable") from None
    staging.chmod(0o755)  # mkdtemp makes it private; a report is for reading
    try:
        if several:
            write_claims_report(col, staging)
        else:
            write_report(analyze(col), staging, split_by_experiment(col))
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _move_into_place(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
        out.rename(old / out.name)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------- tables
def _lead_columns(a: Analysis) -> list[str]:
    return ["run", "status", *a.cell_keys, "seed"]


def results_table(a: Analysis) -> pd.DataFrame:
    lead = [c for c in _lead_columns(a) if c in a.runs]
    metrics = [c for c in ("val_acc", "test_acc", "train_loss", "val_loss", "epochs_done", "steps_done",
                           "diverged_at_step", "seconds_per_epoch", "samples_per_second") if c in a.runs]
    rest = [c for c in a.runs.columns if c not in lead and c not in metrics]
    return a.runs[[*lead, *metrics, *rest]]


def history_table(a: Analysis) -> pd.DataFrame:
    keys = [c for c in _lead_columns(a) if c != "run" and c in a.runs]
    return a.col.history.merge(a.runs[["run", *keys]], on="run", how="left")[
        ["run", *keys, *[c for c in a.col.history.columns if c != "run"]]]


def _interval(mean: float, low: float, high: float, n: int) -> str:
    """A cell's 95% interval in points ('96.10 to 97.85'), beside its mean."""
    if n == 0 or not math.isfinite(mean):
        return "n/a"
    if n < 2:
        return ONE_SEED
    return interval_text(low, high, spec=".2f", form=BARE, none=ONE_SEED, scale=100)


def _cell_display(a: Analysis) -> pd.DataFrame:
    rows = []
    for d in a.cells.to_dict("records"):
        row = {k: fmt_value(d[k]) for k in a.cell_keys}
        row.update({
            "runs": d["n_runs"],
            "completed": d["n_completed"],
            "diverged": d["n_diverged"],
            "failed or other": d["n_failed"] + d["n_other"],
            "seeds": d["seeds"],
            "val acc": pct(d["val_acc_mean"]),
            "val 95% interval": _interval(d["val_acc_mean"], d["val_acc_low"], d["val_acc_high"], d["val_acc_n"]),
            "test acc": pct(d["test_acc_mean"]),
            "test 95% interval": _interval(d["test_acc_mean"], d["test_acc_low"], d["test_acc_high"],
                                           d["test_acc_n"]),
            "final train loss": f"{d['train_loss_mean']:.4f}" if math.isfinite(d["train_loss_mean"]) else "n/a",
            "train s/epoch": (f"{d['seconds_per_epoch_mean']:.3g}" if math.isfinite(d["seconds_per_epoch_mean"])
                              else "n/a"),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def _difference_display(a: Analysis, diffs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    rows = []
    for d in diffs.to_dict("records"):
        row = {k: fmt_value(d[k]) for k in keys}
        row["comparison"] = f"{norm_name(d['norm'])} minus {norm_name(d['baseline'])}"
        row["test acc difference (points)"] = signed(100 * d["test_acc_diff"])
        row["95% interval (Welch)"] = interval_text(d["low"], d["high"], spec=".2f", form=BARE, none="none", scale=100)
        row["reading"] = d["reading"]
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- sections
def findings_section(a: Analysis, results: list[ClaimResult], figures: dict[str, int]) -> Section:
    """The runs in one line, then the claims they test (`results`, from the claim modules; `figures`: claim ->
    its figure's number) and, in an lr sweep, each cell's best-lr comparison."""
    status = Counter(a.runs.status)
    counts = ", ".join(f"{n} {s}" for s, n in status.most_common())
    # A record missing here whose run the storage describes is one of the runs above (from the storage).
    from_storage = int((a.runs.record == "").sum()) if "record" in a.runs else 0
    unrecorded = max(0, len(a.col.problems) - from_storage)
    counts += f"; {unrecorded} more without a readable record, not counted" if unrecorded else ""
    counts += f"; {from_storage} of them from the Optuna storage only" if from_storage else ""
    blocks: list[Any] = [Para(f"{len(a.runs)} runs ({counts}) in {len(a.cells)} cells "
                              f"({' x '.join(a.cell_keys)}); seeds are the replicates.")]
    tested = [r for r in results if r.verdict != NOT_RUN]
    if tested:
        blocks += [Para(VERDICT_RULE),
                   Table(claims_table(tested), note="The value is the claim's statistic with its 95% interval; "
                                                    "the figure file is in this folder."),
                   Bullets(claim_lines(tested, figures))]
    else:
        blocks.append(Para("No claim of the protocol can be tested with these runs alone (they need both norms "
                           "at two or more batch sizes, an lr range, or lone timed runs)."))
    untested = [r.claim for r in results if r.verdict == NOT_RUN]
    if untested:
        blocks.append(Para(f"Not tested by these runs: {', '.join(untested)} (each needs its preset's runs; "
                           "`python -m study.suite` runs every preset and reports on all claims)."))
    stopped = int(a.runs.stopped_at_step.notna().sum()) if "stopped_at_step" in a.runs else 0
    if stopped:
        blocks.append(Para(f"{stopped} run(s) stopped at their target validation accuracy (probes.stop_at) before "
                           "the step budget: their final accuracies are at the stop, so the accuracy tables and "
                           "figures compare runs trained for different numbers of steps, and no best-lr "
                           "accuracy comparison is made."))
    elif a.lr_varies and not a.best_differences.empty:
        blocks.append(Para(f"At each cell's best lr ({best_lr_phrase(a)}; Figure 5):"))
        blocks.append(Bullets([f"batch {fmt_value(r['batch_size'])}"
                               f"{(', ' + a.setting_label(r)) if a.setting_keys else ''}: {r['reading']}"
                               for r in a.best_differences.to_dict("records")]))
    return Section("Findings", blocks)


def claim_lines(results: list[ClaimResult], figures: dict[str, int] | None = None) -> list[str]:
    """One line per claim: verdict, claim, evidence, the per-setting details and its figure."""
    figures = figures or {}
    return [f"{r.settled}: {r.claim}: {r.title}. {r.evidence}" + (f" ({'; '.join(r.details)})" if r.details else "")
            + (f" (Figure {figures[r.claim]})" if r.claim in figures else "") + _replication_line(r) for r in results]


def _replication_line(r: ClaimResult) -> str:
    """The replication seed set's verdict and evidence, where it ran."""
    rep = r.replication
    if rep is None or rep.verdict == NOT_RUN:
        return ""
    agree = "agrees" if rep.verdict == r.verdict else f"DISAGREES with the first set ({r.verdict})"
    return f" Replication (seeds {REPLICATION_SEED} and up, {agree}): {rep.verdict}: {rep.evidence}"


def _distinct(records: list[dict[str, Any]], section: str, key: str) -> list[str]:
    vals = Counter(str((r.get(section) or {}).get(key)) for r in records if (r.get(section) or {}).get(key)
                   is not None)
    return [f"{v} ({n})" if len(vals) > 1 else v for v, n in vals.most_common()]


def protocol_section(a: Analysis) -> Section:
    col: Collection = a.col
    recs = col.records
    runs = a.runs
    blocks: list[Any] = []
    # Data first: unverified data changes what every number means.
    unverified = runs[runs.data_verified == False]  # noqa: E712 (pandas comparison)
    if len(unverified):
        sources = ", ".join(sorted(unverified.data_source.dropna().astype(str).unique()))
        blocks.append(Warning_(f"{len(unverified)} of {len(runs)} runs trained on unverified data "
                               f"(data.verified is false; source: {sources}): these numbers do not measure "
                               "official MNIST."))
    items = [f"Inputs: {', '.join(col.sources)}" + (f" (Optuna study {col.study_name})" if col.study_name else "")]
    for url, names in col.tuning_studies.items():
        items.append(f"Tuning studies: every trial of the {len(names)} Optuna stud{'y' if len(names) == 1 else 'ies'} "
                     f"of this tuning sweep in {url} ({', '.join(names)}), wherever its run dir is (a resumed "
                     "sweep's earlier trials sit in the dir of the sweep that was stopped).")
    varied = []
    for k in a.cell_keys:
        vals = a.norms if k == "norm" else sorted(runs[k].dropna().unique(), key=lambda v: (str(type(v)), v))
        varied.append(f"{k} in {{{', '.join(fmt_value(v) for v in vals)}}}")
    seeds = runs.seed.dropna().unique() if "seed" in runs else []
    lo, hi = int(a.cells.n_runs.min()), int(a.cells.n_runs.max())
    items.append(f"Varied (the cell key): {'; '.join(varied)}. Seeds: {len(seeds)} distinct "
                 f"({', '.join(str(s) for s in sorted(seeds))}); {lo if lo == hi else f'{lo} to {hi}'} "
                 f"run{'s' if hi != 1 else ''} per cell.")
    if a.operational_varying:
        items.append("Varied but not part of the cell key (they change where or how a run executes, "
                     "not what it learns): " + "; ".join(
                         f"{k} in {{{', '.join(v)}}}" if len(v) <= 8 else f"{k} ({len(v)} values)"
                         for k, v in a.operational_varying.items()))
    caveats = []
    if "lr" in a.fixed:
        caveats.append(f"lr is fixed at {fmt_value(a.fixed['lr'])} for every arm, while the fair comparison "
                       "tunes lr per arm (Tuning Playbook); at one fixed lr, norm and batch size are "
                       "confounded with how well that lr suits each arm.")
    if len(a.batch_sizes) > 1 and a.fixed.get("steps") in (None, "null") and "epochs" in a.fixed:
        caveats.append(f"batch sizes are compared at an equal budget of {fmt_value(a.fixed['epochs'])} epochs, "
                       "so larger batches take fewer optimizer steps (Figure 2, bottom row).")
    items.extend(f"Caveat: {c}" for c in caveats)
    items.append(_data_line(a))
    started = pd.to_datetime(runs.started_at.dropna(), utc=True, errors="coerce").dropna()
    finished = pd.to_datetime(runs.finished_at.dropna(), utc=True, errors="coerce").dropna()
    if len(started):
        end = finished.max() if len(finished) else started.max()
        items.append(f"Dates (UTC): {started.min():%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}.")
    commits = Counter((str(r.get("env", {}).get("git_commit") or "unknown")[:12],
                       (r.get("env") or {}).get("git_dirty")) for r in recs)
    if commits:
        items.append("Code: " + "; ".join(
            f"git {c}{' with local edits' if dirty else ''} ({n} runs)" if c != "unknown"
            else f"no git commit recorded ({n} runs)" for (c, dirty), n in commits.most_common()) + ".")
    libs = [f"{lib} {', '.join(v)}" for lib in LIBRARIES if (v := _distinct(recs, "env", lib))]
    if libs:
        items.append("Libraries: " + "; ".join(libs) + ".")
    machine = [f"{k}: {', '.join(v)}" for k, v in (("device", _distinct(recs, "env", "device")),
                                                    ("device name", _distinct(recs, "env", "device_name")),
                                                    ("threads", _distinct(recs, "env", "threads")),
                                                    ("host", _distinct(recs, "env", "hostname"))) if v]
    if machine:
        items.append("Machine: " + "; ".join(machine) + ".")
    reused = runs.reused_from.notna().sum() if "reused_from" in runs else 0
    if reused:
        items.append(f"{reused} run{'s reuse' if reused != 1 else ' reuses'} the record of an earlier identical "
                     "run (same config, seed and code; see reused_from in results.csv) instead of training again.")
    if col.duplicates:
        n = len(col.duplicates)
        items.append(f"{n} record{' is a copy' if n == 1 else 's are copies'} of runs already counted (a reused "
                     "record next to its original, or the same run reached twice): each run is counted once, "
                     f"e.g. {col.duplicates[0][0]} (same run as {col.duplicates[0][1]}).")
    if a.repeats:
        n = len(a.repeats)
        listed = "; ".join(f"{left} (counted: {kept})" for left, kept in a.repeats[:MAX_LISTED])
        more = f"; ... and {n - MAX_LISTED} more" if n > MAX_LISTED else ""
        items.append(f"{n} duplicate run{'s' if n != 1 else ''} left out: the same cell and seed trained again "
                     "(a forced retrain, other threads, or changed code); only the newest (finished_at) is "
                     f"counted: {listed}{more}.")
    params_only = runs[runs.record == ""] if "record" in runs else runs.iloc[:0]
    confirmations = params_only[params_only.trial_state == "confirmation"] if "trial_state" in runs else params_only.iloc[:0]
    trials = params_only.drop(confirmations.index)
    if len(trials):
        items.append(f"{len(trials)} Optuna trials have no run record: they appear with their "
                     "parameters, state and objective value only (no history, no test accuracy).")
    if len(confirmations):
        items.append(f"{len(confirmations)} confirmation runs have no run record here: they appear with the "
                     "val_acc and test_acc the sweeper stored in the study (no history).")
    blocks.append(Bullets(items))
    blocks.extend(_problem_blocks(a))
    fixed = pd.DataFrame([{"key": k, "value": fmt_value(v)} for k, v in a.fixed.items()])
    blocks.append(Details(f"Fixed settings ({len(fixed)} config keys with one value in every run)",
                          [Table(fixed, f"Operational keys ({', '.join(OPERATIONAL_KEYS)}, and the keys under "
                                        "them) are not listed.")]))
    return Section("Protocol", blocks, boxed=True)


# A record's data (study/data.py load_mnist) -> what its content depends on. The source (cache, wheel,
# download) is where the files came from, not what they hold: the MD5s say that.
SPLIT_KEYS = {"n_train": "data.val_size", "n_val": "data.val_size", "split_seed": "data.split_seed",
              "normalize": NORMALIZE_KEY}  # content field -> the config key that sets it
SCALINGS = {"notebook": "pixels scaled to [-1, 1] as in the notebook",
            "standard": "pixels standardized to mean 0, std 1", "none": "pixels in [0, 1]"}


def _data_content(rec: dict[str, Any]) -> dict[str, Any]:
    d = rec.get("data") or {}
    md5 = d.get("md5")
    return {"md5": ",".join(sorted(str(v)[:8] for v in md5.values())) if isinstance(md5, dict) else "",
            "n_train": d.get("n_train"), "n_val": d.get("n_val"), "n_test": d.get("n_test"),
            "split_seed": d.get("split_seed"), "normalize": normalize_of(rec)}


def _data_line(a: Analysis) -> str:
    """What the runs trained and were tested on, compared by content: equal MD5s and split are the same
    data whatever the source; a difference set on purpose (a varied cell key) is said as such, any other
    is a warning."""
    recs = [r for r in a.col.records if r.get("data")]
    if not recs:
        return "Data: no data description in the records."
    groups: dict[tuple, dict[str, Any]] = {}
    for r in recs:
        c = _data_content(r)
        g = groups.setdefault(tuple(c.items()), {"content": c, "n": 0, "sources": Counter(), "verified": set()})
        g["n"] += 1
        g["sources"][str((r.get("data") or {}).get("source"))] += 1
        g["verified"].add(bool((r.get("data") or {}).get("verified")))
    parts = []
    for g in sorted(groups.values(), key=lambda g: -g["n"]):
        c = g["content"]
        split = (f"{c['n_train']} train / no validation split / {c['n_test']} test images" if c["n_val"] == 0 else
                 f"{c['n_train']} train / {c['n_val']} validation / {c['n_test']} test images, validation split "
                 f"seed {c['split_seed']}")
        verified = ("verified" if g["verified"] == {True} else "NOT verified" if g["verified"] == {False}
                    else "partly verified")
        parts.append(f"{split}, {SCALINGS.get(c['normalize'], c['normalize'])} (data.normalize={c['normalize']}), "
                     f"source {', '.join(g['sources'])}, {verified} (md5 {c['md5'] or 'unknown'})"
                     + (f" ({g['n']} runs)" if len(groups) > 1 else ""))
    text = "Data: " + "; ".join(parts) + "."
    varied = sorted({key for field, key in SPLIT_KEYS.items() if key in a.cell_keys
                     and len({g["content"][field] for g in groups.values()}) > 1})
    if varied:
        text += f" The data differ on purpose: {', '.join(varied)} is a varied key of the cells."
    unexplained = sorted({field for field in ("md5", "n_test", *SPLIT_KEYS)
                          if SPLIT_KEYS.get(field) not in a.cell_keys
                          and len({g["content"][field] for g in groups.values()}) > 1})
    if unexplained:
        text += (f" Runs used different data ({', '.join(unexplained)} differ, not as a varied key): "
                 "compare with care.")
    return text + " " + _selection_line(a)


def _selection_line(a: Analysis) -> str:
    """What the validation split is for in these runs; runs without one (data.val_size=0) select nothing."""
    n_val = pd.to_numeric(a.runs.n_val, errors="coerce") if "n_val" in a.runs else pd.Series(dtype=float)
    without = a.runs[n_val == 0]
    with_val = "Model selection uses the validation split; the test split is reported, never selected on."
    if without.empty:
        return with_val
    n_train = sorted(int(v) for v in pd.to_numeric(without.n_train, errors="coerce").dropna().unique())
    lr_fixed = not (a.lr_varies and without.lr.nunique() > 1) if "lr" in without else True
    none = (f"trained on all {', '.join(f'{n:,}' for n in n_train)} training images; no validation split "
            + ("(nothing is selected at a fixed lr): their test accuracy is the metric read, as in the notebook"
               if lr_fixed else "and their lr varies: no lr can be selected on them without reading the test "
               "split, so no best lr is chosen from them"))
    if len(without) == len(a.runs):
        return f"Every run {none}."
    return f"{with_val} {len(without)} of {len(a.runs)} runs {none}."


def _all_completed(col: Collection) -> str:
    """'Every run completed.' only where no run dir lacks a readable record: a job killed before its record
    is a run that did not complete."""
    n = len(col.problems)
    if not n:
        return "Every run completed."
    return (f"Every run with a readable record completed; not every run: {n} could not be counted (a run dir "
            "without a record, or a record or storage that could not be read; listed below).")


def _problem_blocks(a: Analysis) -> list[Any]:
    runs = a.runs
    blocks: list[Any] = []
    bad = runs[runs.status != "completed"]
    if len(bad):
        rows = []
        for d in bad.head(MAX_LISTED).to_dict("records"):
            what = d.get("error") or ""
            if d["status"] == "diverged":
                what = f"non-finite loss at step {fmt_value(d.get('diverged_at_step'))}"
            rows.append({"run": d["run"], "status": d["status"],
                         **{k: fmt_value(d.get(k)) for k in a.cell_keys}, "seed": fmt_value(d.get("seed")),
                         "detail": what or "-"})
        more = f" and {len(bad) - MAX_LISTED} more (see results.csv)" if len(bad) > MAX_LISTED else ""
        blocks.append(Para(f"Runs that did not complete ({len(bad)}){more}:"))
        blocks.append(Table(pd.DataFrame(rows)))
    else:
        blocks.append(Para(_all_completed(a.col)))
    for kind, label in (("missing", "Missing records"), ("unreadable", "Unreadable records (skipped)")):
        probs = [p for p in a.col.problems if p.kind == kind]
        if probs:
            more = [f"... and {len(probs) - MAX_LISTED} more"] if len(probs) > MAX_LISTED else []
            blocks.append(Para(f"{label} ({len(probs)}):"))
            blocks.append(Bullets([f"{p.path}: {p.reason}" for p in probs[:MAX_LISTED]] + more))
    return blocks


def difference_section(a: Analysis) -> Section:
    if BASELINE_NORM not in a.norms or len(a.norms) < 2:
        return Section("Difference to no norm", [Para(
            f"Not computed: the runs have norm in {{{', '.join(map(str, a.norms))}}}; a difference needs "
            f"norm={BASELINE_NORM} and at least one other norm.")])
    keys = [k for k in a.cell_keys if k != "norm"]
    blocks: list[Any] = [Para("Final test accuracy of each norm minus no norm, in percentage points, per "
                              f"{', '.join(keys)}: mean difference over seeds with Welch's 95% interval; "
                              "completed runs only.")]
    if a.differences.empty:
        # e.g. a tuning sweep: every arm ran at its own lrs, so no two arms share a setting.
        blocks.append(Para("No norm has a no-norm run with the same other settings (lr included), "
                           "so no difference at equal settings is computed."))
    else:
        one_seed = ((a.differences.n < 2) | (a.differences.n_baseline < 2)).any()
        blocks.append(Table(_difference_display(a, a.differences, keys),
                            "An arm with one seed has no spread, so no interval is given for it." if one_seed else ""))
    if a.lr_varies and not a.best_differences.empty:
        bkeys = ["batch_size", *a.setting_keys]
        blocks.append(Para(f"The same at each (norm, batch size)'s best lr ({best_lr_phrase(a)}, Figure 5): "
                           "the comparison the tuning protocol asks for."))
        blocks.append(Table(_difference_display(a, a.best_differences, bkeys)))
    return Section("Difference to no norm", blocks)


def figures_section(a: Analysis, figs: list, claim_figs: list[Figure_]) -> Section:
    """The report's figures, then the figures of the findings' claims."""
    return Section("Figures", [*(Figure_(f.number, f.title, f.file, f.caption, f.skipped) for f in figs), *claim_figs])


def cells_section(a: Analysis) -> Section:
    blocks: list[Any] = [
        Para("One row per cell. Accuracies are means over completed runs with a 95% t-interval over seeds; "
             "training loss is the last epoch's mean; seconds per epoch exclude evaluation."),
        Table(_cell_display(a), f"'{ONE_SEED}': a single seed has no spread, so no interval is claimed."
              if ((a.cells.val_acc_n == 1) | (a.cells.test_acc_n == 1)).any() else ""),
    ]
    if a.lr_varies and not a.best.empty:
        best = a.best.copy()
        show = pd.DataFrame({
            **{k: best[k].map(fmt_value) for k in ["norm", "batch_size", *a.setting_keys]},
            "best lr": best.lr.map(fmt_value),
            "lrs tried": best.n_lr_tried,
            "val acc": best.val_acc_mean.map(pct),
            "test acc": best.test_acc_mean.map(pct),
            "test 95% interval": [_interval(m, lo, hi, n) for m, lo, hi, n in
                                  zip(best.test_acc_mean, best.test_acc_low, best.test_acc_high, best.n)],
            "seeds": best.n,
            **({"runs shown": best.basis, "note": best.note.replace("", "-")} if a.tuned else {}),
        })
        blocks.append(Para(f"Best lr per (norm, batch size), {best_lr_phrase(a)} (diverged runs count as 0 "
                           "in the choice):"))
        blocks.append(Table(show))
    return Section("Per-cell results", blocks)


def files_section() -> Section:
    return Section("Files", [Bullets([
        "results.csv: one row per run (cell keys, seed, final metrics, timing, environment, error).",
        "history.csv: one row per run and epoch (the curves' data).",
        "cells.csv and differences.csv: the numbers of the tables above, unrounded.",
        "fig*.png: the figures; claim_c*.png: the figures of the findings; report.md: this report in Markdown.",
    ])])


def claim_figures(results: list[ClaimResult], start: int) -> dict[str, Figure_]:
    """Claim -> its figure, numbered from `start` in the claims' order."""
    figs: dict[str, Figure_] = {}
    for r in results:
        if r.figure:
            caption = r.evidence + (". " + "; ".join(r.details) if r.details else "")
            figs[r.claim] = Figure_(start + len(figs), f"{r.claim}: {r.title} ({r.verdict})", r.figure,
                                    caption + f". n = {r.n or 'see the claims table'}. Preset: {r.experiment}.")
    return figs


def write_claims_report(col: Collection, out: Path) -> None:
    """The report of a claims suite: a verdict per claim (on the first seed set, beside the replication
    seed set's where it ran), then one sub-report per preset and seed set."""
    exps = split_by_experiment(col, replication=False)
    replication = split_by_experiment(col, replication=True)
    results = evaluate_claims(exps, out, replication)
    claims_table(results).to_csv(out / "claims.csv", index=False)
    nb = pd.DataFrame(notebook_verdicts(results))
    nb.to_csv(out / "notebook_claims.csv", index=False)
    rows = []
    for seed_set, runs in (("first", exps), ("replication", replication)):
        for name, exp in runs.items():
            sub = out / EXPERIMENTS_DIR / (name.replace("/", "_") + ("" if seed_set == "first" else f"-{seed_set}"))
            sub.mkdir(parents=True)
            write_report(exp.analysis, sub, {name: exp})
            status = Counter(exp.runs.status)
            seeds = sorted({int(s) for s in exp.runs.get("seed", pd.Series(dtype=float)).dropna()})
            rows.append({"preset": exp.label, "seed set": seed_set, "seeds": _seed_span(seeds),
                         "runs": len(exp.runs), "status": ", ".join(f"{n} {s}" for s, n in status.most_common()),
                         "report": f"{EXPERIMENTS_DIR}/{sub.name}/{REPORT_HTML}"})
    problems = _problem_blocks_col(col)
    sections = [
        Section("Claims", [Para(VERDICT_RULE), Table(claims_table(results)), Bullets(claim_lines(results))]),
        Section("The notebook's claims", [
            Para("The nine claims of the notebook the project grew from, each answered through the rows "
                 "above that test it (a row read in reverse contradicts the notebook's claim when supported; "
                 "several rows: all must agree, otherwise inconclusive)."),
            Table(nb)]),
        Section("Claim figures", list(claim_figures(results, 1).values()) or [Para("No claim had runs to draw.")]),
        Section("Experiments", [Para("Each preset's runs, analyzed on their own (cells, differences, "
                                     "figures), in its own report:"), Table(pd.DataFrame(rows)), *problems]),
        Section("Files", [Bullets([
            "claims.csv: the claims table; notebook_claims.csv: the notebook's claims.",
            "claim_c*.png: the claim figures; experiments/<preset>/: each preset's full report "
            "(results.csv, history.csv, figures).",
            "report.md: this report in Markdown."])]),
    ]
    assert tuple(s.title for s in sections) == CLAIMS_REPORT_TITLES
    title = "Batch Normalization study: the claims"
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    n_runs = sum(len(e.runs) for e in (*exps.values(), *replication.values()))
    seed_sets = (f" (first seed set and the replication set, seeds {REPLICATION_SEED} and up)" if replication
                 else "; no replication seed set (python -m study.suite --replicate runs one)")
    intro = [Para(f"Built {now} from {n_runs} runs of {len(exps)} presets{seed_sets}; "
                  f"rebuild with: {rebuild_command(col)}")]
    (out / "report.md").write_text(to_markdown(title, intro, sections))
    (out / REPORT_HTML).write_text(to_html(title, intro, sections, out))


def _seed_span(seeds: list[int]) -> str:
    """'0-7' for a run of consecutive seeds, else the list."""
    if not seeds:
        return "-"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _problem_blocks_col(col: Collection) -> list[Any]:
    if not col.problems:
        return []
    return [Warning_(f"{len(col.problems)} run dirs could not be read or hold no record: "
                     + "; ".join(f"{p.path} ({p.reason})" for p in col.problems[:MAX_LISTED]))]


def rebuild_command(col: Collection) -> str:
    return shlex.join(["python", "-m", "analysis", *col.sources, *(x for n in col.studies for x in ("--study", n))])


def write_report(a: Analysis, out: Path, exps: dict[str, ExperimentRuns] | None = None) -> None:
    results_table(a).to_csv(out / "results.csv", index=False)
    history_table(a).to_csv(out / "history.csv", index=False)
    a.cells.to_csv(out / "cells.csv", index=False)
    diffs = a.differences.drop(columns="_difference", errors="ignore")
    if a.lr_varies and not a.best_differences.empty:
        best = a.best_differences.drop(columns="_difference", errors="ignore").assign(lr="best")
        diffs = pd.concat([diffs, best], ignore_index=True)
    diffs.to_csv(out / "differences.csv", index=False)
    figs = draw_figures(a, out)
    results = evaluate_claims(exps, out) if exps is not None else []
    extra = claim_figures([r for r in results if r.verdict != NOT_RUN], len(figs) + 1)
    sections = [findings_section(a, results, {c: f.number for c, f in extra.items()}), protocol_section(a),
                difference_section(a), figures_section(a, figs, list(extra.values())), cells_section(a),
                files_section()]
    assert tuple(s.title for s in sections) == SECTION_TITLES
    name = a.col.study_name or ", ".join(Path(p).name or p for p in a.col.sources)
    title = f"Batch Normalization study: {name}"
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    intro = [Para(f"Built {now} from {len(a.runs)} runs; rebuild with: {rebuild_command(a.col)}")]
    (out / "report.md").write_text(to_markdown(title, intro, sections))
    (out / REPORT_HTML).write_text(to_html(title, intro, sections, out))
