"""Run records -> two tidy tables: one row per run, one row per (run, epoch).

Inputs are sweep dirs, any folder of runs (every `result.json` below it), a
single `result.json`, or an Optuna storage URL with a study name. A record
that cannot be read is listed as a problem, never fatal; a run dir that was
claimed by a job but holds no record (killed, or still running) is listed as
missing.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from study.records import (CLAIM_FILE, COUNT_KEYS, HISTORY_NUMBERS, METRIC_KEYS, RESULT_FILE, RecordError,
                           read_record)

# The record's schema (study/records.py) names them once.
FINAL_METRICS = METRIC_KEYS
HISTORY_FIELDS = (*COUNT_KEYS, *METRIC_KEYS, *HISTORY_NUMBERS)
# Study terms for config keys whose dotted name is long; every other key keeps its dotted name.
COLUMN_NAMES = {"model.norm": "norm"}
# The config key a tuning trial's record holds its trial number in (null on a confirmation run's record).
TRIAL_NUMBER = "trial.number"
OPTUNA_STATES = {"COMPLETE": "completed", "FAIL": "failed", "PRUNED": "pruned",
                 "RUNNING": "running", "WAITING": "waiting"}


class AnalysisError(Exception):
    """A problem with the analysis input; `str(e)` is one line for the user."""


class NoRecordsError(AnalysisError):
    pass


@dataclass
class Problem:
    path: str
    kind: str  # "unreadable" | "missing"
    reason: str


@dataclass
class Collection:
    runs: pd.DataFrame  # one row per run; config keys as columns (see `config_columns`)
    history: pd.DataFrame  # one row per (run, epoch)
    records: list[dict[str, Any]]  # the readable records, in `runs` order where they exist
    config_columns: list[str]  # the flattened config keys, in config order
    problems: list[Problem] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    studies: list[str] = field(default_factory=list)  # the Optuna studies named by a storage URL input
    # storage URL -> studies of the tuning sweeps under a dir input (their trials are in `runs`, wherever they ran)
    tuning_studies: dict[str, list[str]] = field(default_factory=dict)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (record path, the path counted)

    @property
    def study_name(self) -> str | None:
        """The studies of a storage URL input, for titles; None without one."""
        return ", ".join(self.studies) or None


def is_storage_url(path: str | Path) -> bool:
    return "://" in str(path)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {dotted key: value}; lists become JSON text (comparable, CSV-safe)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[COLUMN_NAMES.get(key, key)] = json.dumps(v) if isinstance(v, list) else v
    return out


def num(x: Any) -> float:
    """A record's or a table's number as a float; NaN for anything else (None, a bool, text, inf)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return math.nan
    v = float(x)
    return v if math.isfinite(v) else math.nan


def finite(x: Any) -> bool:
    return math.isfinite(num(x))


def _median_after_first(values: list[float]) -> float:
    """Median over epochs after the first one (warm-up), or the only epoch."""
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(vals) > 1:
        vals = vals[1:]
    return float(pd.Series(vals).median()) if vals else math.nan


NORMALIZE_KEY = "data.normalize"
NORMALIZE_BEFORE_THE_KEY = "standard"  # the pixel scaling of every run recorded before data.normalize existed


def normalize_of(rec: dict[str, Any]) -> str:
    """The pixel scaling a run trained with: the data's own word (what the loader did), else the config's,
    else the scaling of the records written before the key existed (mean 0, std 1)."""
    data, cfg_data = rec.get("data") or {}, rec["config"].get("data")
    return (data.get("normalize") or (cfg_data.get("normalize") if isinstance(cfg_data, dict) else None)
            or NORMALIZE_BEFORE_THE_KEY)


def run_row(rec: dict[str, Any], run: str, record_path: str) -> dict[str, Any]:
    final = rec.get("final") or {}
    history = rec.get("history") or []
    env = rec.get("env") or {}
    data = rec.get("data") or {}
    err = rec.get("error") or {}
    row: dict[str, Any] = {"run": run, "record": record_path, "status": rec["status"],
                           "experiment": rec.get("experiment")}
    row.update(flatten(rec["config"]))
    row[NORMALIZE_KEY] = normalize_of(rec)
    if rec.get("seed") is not None:
        row["seed"] = rec["seed"]
    row.update({k: num(final.get(k)) for k in FINAL_METRICS})
    row.update({
        "epochs_done": num(final.get("epoch", len(history) if history else math.nan)),
        "steps_done": num(final.get("step")),
        "diverged_at_step": num(rec.get("diverged_at_step")),
        # Stopped at its target validation accuracy (probes.stop_at) before the budget: NaN where not.
        "stopped_at_step": num((rec.get("probes") or {}).get("stopped_at_step")),
        "seconds_per_epoch": _median_after_first([h.get("epoch_seconds") for h in history]),
        "samples_per_second": _median_after_first([h.get("samples_per_second") for h in history]),
        "pack_size": num(history[-1].get("pack_size")) if history else math.nan,
        "wall_seconds": num(rec.get("wall_seconds")),
        "started_at": rec.get("started_at"),
        "finished_at": rec.get("finished_at"),
        "data_verified": data.get("verified"),
        "data_source": data.get("source"),
        "n_train": data.get("n_train"),
        "n_val": data.get("n_val"),
        "n_test": data.get("n_test"),
        "device_name": env.get("device_name"),
        "threads": env.get("threads", row.get("threads")),
        "host": env.get("hostname"),
        "process": env.get("process"),  # the process that timed it (study.records.process_id); older: none
        "git_commit": env.get("git_commit"),
        "git_dirty": env.get("git_dirty"),
        "code_version": rec.get("code_version"),
        "reused_from": rec.get("reused_from"),
        "error": f"{err.get('type', 'error')}: {err.get('message', '')}" if err else None,
    })
    return row


def history_rows(rec: dict[str, Any], run: str) -> list[dict[str, Any]]:
    rows = []
    for h in rec.get("history") or []:
        row = {"run": run}
        row.update({k: (num(h.get(k)) if k != "epoch" else h.get(k)) for k in HISTORY_FIELDS})
        rows.append(row)
    return rows


def counted_as(runs: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Keep one record per run: for each row, the label of the row that counts in its place.

    Rows equal in `keys` (a cell and its seed) are records of one run trained
    more than once (a forced retrain, other threads, changed code); counting
    each would pass one seed off as several replicates. The newest by
    `finished_at` counts (a missing or unreadable time is the oldest; on a tie
    the later row). A row whose label is its own counts.
    """
    finished = pd.to_datetime(runs["finished_at"], utc=True, errors="coerce")
    order = runs.assign(_finished=finished).sort_values("_finished", na_position="first", kind="stable")
    keyed = order[list(keys)].astype(str).assign(_label=order.index)
    return keyed.groupby(list(keys), sort=False)["_label"].transform("last").reindex(runs.index)


def run_identity(rec: dict[str, Any]) -> str:
    """Equal for two records of one run: a reused copy (`reused_from`) or a deterministic retraining.

    Counting such a record twice would pass one run off as two replicates.
    The preset is part of it: one run reused by two presets (ics and
    landscape share their runs) counts once for each.
    """
    return json.dumps([rec.get("experiment"), rec.get("config"), rec.get("seed"), rec.get("final"), rec.get("error"),
                       rec.get("code_version"), (rec.get("data") or {}).get("md5")], sort_keys=True, default=str)


class _Builder:
    def __init__(self, results_root: Path | None = None) -> None:
        # Where relative record paths in a storage are looked up first (the sweep's results_root).
        self.roots: list[Path] = [results_root] if results_root is not None else []
        self.rows: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.problems: list[Problem] = []
        self.config_columns: list[str] = []
        self.seen: set[Path] = set()
        self.identities: dict[str, str] = {}  # run identity -> path of the record counted
        self.duplicates: list[tuple[str, str]] = []
        self.tuning_studies: dict[str, list[str]] = {}

    def add_record(self, rec: dict[str, Any], run: str, path: Path, extra: dict[str, Any] | None = None) -> None:
        identity = run_identity(rec)
        if identity in self.identities:
            self.duplicates.append((str(path), self.identities[identity]))
            return
        self.identities[identity] = str(path)
        row = run_row(rec, run, str(path))
        row.update(extra or {})
        for k in [*flatten(rec["config"]), NORMALIZE_KEY]:
            if k not in self.config_columns:
                self.config_columns.append(k)
        self.rows.append(row)
        self.history.extend(history_rows(rec, run))
        self.records.append(rec)

    def read(self, path: Path) -> dict[str, Any] | None:
        """The record at `path`; None (and a listed problem) if unreadable or already read."""
        real = path.resolve()
        if real in self.seen:
            return None
        self.seen.add(real)
        try:
            return read_record(path)  # checked against the record schema: a damaged record is no run
        except RecordError as e:
            self.problems.append(Problem(str(path), "unreadable", str(e)))
            return None

    def add_file(self, path: Path, run: str, extra: dict[str, Any] | None = None) -> bool:
        rec = self.read(path)
        if rec is not None:
            self.add_record(rec, run, path, extra)
        return rec is not None

    def add_dir(self, root: Path) -> None:
        # A tuning sweep's studies first (their trials may sit in other dirs: a resumed sweep), so that the
        # trials carry their Optuna state; the dir's own records after them (each record is read once).
        self.roots += [r for r in _results_roots(root) if r not in self.roots]
        for url, names in tuning_studies(root).items():
            try:
                self.add_storage(url, names, root)
                self.tuning_studies.setdefault(url, []).extend(n for n in names if n not in self.tuning_studies[url])
            except AnalysisError as e:
                self.problems.append(Problem(url, "unreadable", f"the tuning studies of {root}: {e}"))
        loaded = [(p, rec) for p in sorted(root.rglob(RESULT_FILE), key=_natural_key)
                  if (rec := self.read(p)) is not None]
        # Originals before reused copies, so that a copy is the one left out.
        for path, rec in sorted(loaded, key=lambda pr: bool(pr[1].get("reused_from"))):
            self.add_record(rec, _run_name(path.parent, root), path)
        for claim in sorted(root.rglob(CLAIM_FILE), key=_natural_key):
            if not (claim.parent / RESULT_FILE).exists():
                self.problems.append(Problem(str(claim.parent), "missing",
                                             "the job started here but wrote no result.json "
                                             "(killed, crashed, or still running)"))

    def add_storage(self, url: str, study_names: Sequence[str] | None, root: Path | None = None) -> list[str]:
        """Every trial of the named studies (the only one when None), and their confirmation runs.

        `root`: the dir that named the studies (its optimization_results.yaml); run labels are then paths
        as for the dir's own records."""
        studies = load_optuna_studies(url, study_names)
        for study in studies:
            self._add_study(study, url, root, several=len(studies) > 1)
        return [s.study_name for s in studies]

    def _add_study(self, study: Any, url: str, root: Path | None, several: bool) -> None:
        objectives: set[Any] = set()
        experiments: set[Any] = set()
        params_only = []
        name = study.study_name
        for trial in study.get_trials(deepcopy=False):
            state = OPTUNA_STATES.get(trial.state.name, trial.state.name.lower())
            value = trial.values[0] if trial.values else math.nan
            extra = {"study": name, "trial": trial.number, "trial_state": state, "objective_value": value}
            run = f"{name}: trial {trial.number}" if several or root is not None else f"trial {trial.number}"
            record_path = trial.user_attrs.get("record_path")
            if record_path:
                path = _resolve_record_path(record_path, url, self.roots)
                if not path.is_file():
                    self.problems.append(Problem(str(path), "missing", f"record of {run} not found"))
                elif path.resolve() in self.seen:
                    continue  # counted already, from another input or trial
                elif (rec := self.read(path)) is not None:
                    self.add_record(rec, run if root is None else _run_name(path.parent, root), path, extra)
                    objectives.add(rec["config"].get("objective"))
                    experiments.add(rec.get("experiment"))
                    continue
            params_only.append((trial, run, state, extra))
        confirm_rows = []
        for run_attrs, path in _confirmation_records(study, url, self.roots):
            if path is not None and path.is_file() and (rec := self.read(path)) is not None:
                self.add_record(rec, _run_name(path.parent, root) if root is not None else str(path.parent), path)
            elif path is None or path.resolve() not in self.seen:
                if path is not None:
                    self.problems.append(Problem(str(path), "missing",
                                                 f"record of {name}'s confirmation run (seed {run_attrs.get('seed')}) not found"))
                confirm_rows.append((run_attrs, path))
        # Trials without a record: their objective value is the metric the sweep optimized (the study's
        # `objective` attribute, else the other trials' records when they agree on it); so is their preset.
        objectives.discard(None)
        metric = study.user_attrs.get("objective") or (objectives.pop() if len(objectives) == 1 else None)
        cell = study.user_attrs.get("cell") if isinstance(study.user_attrs.get("cell"), dict) else {}
        # What every trial of the study shares (the sweeper stores it): the config of a trial without a record.
        fixed = study.user_attrs.get("fixed_config") if isinstance(study.user_attrs.get("fixed_config"), dict) else {}
        for trial, run, state, extra in params_only:
            # The sweeper's own word on a job (diverged, error, stale, ...) says more than FAIL.
            status = trial.user_attrs.get("status")
            status = status if isinstance(status, str) and state != "completed" else state
            row: dict[str, Any] = {"run": run, "record": "", "status": status, **extra,
                                   "diverged_at_step": num(trial.user_attrs.get("diverged_at_step")),
                                   "error": trial.user_attrs.get("error")}
            if len(experiments) == 1:
                row["experiment"] = next(iter(experiments))
            # The stored config's typed values over the override strings of the cell and Hydra's attributes;
            # the trial number, as a trial's record has it: what makes the report treat the runs as a tuning
            # sweep (each cell's lr chosen on its trials, shown on its confirmation runs).
            self._config_row(row, {**cell, **_config_attrs(trial.user_attrs), **fixed, **trial.params,
                                   TRIAL_NUMBER: trial.number})
            final = trial.user_attrs.get("final")
            if isinstance(final, dict):  # the run's final metrics, stored by the sweeper from its record
                row.update({k: num(final.get(k)) for k in FINAL_METRICS})
            elif metric in FINAL_METRICS and state == "completed":  # an older study: its value only
                row[metric] = num(extra["objective_value"])
            self.rows.append(row)
        # Confirmation runs whose records are not here: the sweeper stored their metrics in the study.
        confirm = study.user_attrs.get("confirm") if isinstance(study.user_attrs.get("confirm"), dict) else {}
        for attrs, path in confirm_rows:
            row = {"run": f"{name}: confirm seed {attrs.get('seed')}", "record": "", "study": name,
                   "status": attrs.get("status") or "missing", "trial_state": "confirmation",
                   **{k: num(attrs.get(k)) for k in FINAL_METRICS if k in attrs}}
            if len(experiments) == 1:
                row["experiment"] = next(iter(experiments))
            params = confirm.get("params") if isinstance(confirm.get("params"), dict) else {}
            self._config_row(row, {**cell, **fixed, **params, "seed": attrs.get("seed"), TRIAL_NUMBER: None})
            self.rows.append(row)

    def _config_row(self, row: dict[str, Any], config: dict[str, Any]) -> None:
        """Config values (dotted keys, the study's column names) onto a row built from the storage."""
        for k, v in config.items():
            key = k.lstrip("+~")
            key = COLUMN_NAMES.get(key, key)
            row[key] = json.dumps(v) if isinstance(v, list) else v
            if key not in self.config_columns and key != "seed":
                self.config_columns.append(key)


TUNING_RESULTS = "optimization_results.yaml"  # the bn_optuna sweeper's summary of a sweep (storage, studies)


def tuning_studies(root: Path) -> dict[str, list[str]]:
    """Storage URL -> study names, from the tuning sweeps' summaries under `root`.

    A tuning sweep's report covers every trial of its studies: a resumed
    sweep's earlier trials sit in the killed sweep's dir. Summaries without a
    storage and studies (Hydra's own Optuna sweeper) name none.
    """
    import yaml

    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob(TUNING_RESULTS), key=_natural_key):
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("storage"), str):
            continue
        names = [s["study"] for s in doc.get("studies") or []
                 if isinstance(s, dict) and isinstance(s.get("study"), str)]
        if names:
            found.setdefault(doc["storage"], [])
            found[doc["storage"]] += [n for n in names if n not in found[doc["storage"]]]
    return found


def _results_roots(root: Path) -> list[Path]:
    """The `results_root` of the tuning sweeps under `root`: their studies' record paths are relative to it."""
    import yaml

    roots = []
    for path in sorted(root.rglob(TUNING_RESULTS), key=_natural_key):
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("results_root"), str):
            roots.append(Path(doc["results_root"]))
    return roots


def _confirmation_records(study: Any, url: str, roots: Sequence[Path] = ()) -> list[tuple[dict[str, Any], Path | None]]:
    """The study's confirmation runs (the sweeper's `confirm` attribute): each run's stored
    attributes and its record path (None when it has none)."""
    confirm = study.user_attrs.get("confirm")
    runs = confirm.get("runs") if isinstance(confirm, dict) else None
    return [(r, _resolve_record_path(r["record_path"], url, roots) if isinstance(r.get("record_path"), str) else None)
            for r in runs or [] if isinstance(r, dict)]


# Trial attributes the study's sweeper (hydra_plugins/bn_study_sweeper) writes about the job, not the config.
TRIAL_BOOKKEEPING = ("record_path", "status", "diverged_at_step", "reused_from", "error", "sweep", "overrides",
                     "retry_of", "final")


def _config_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Hydra's Optuna sweeper stores fixed (non-distribution) sweep values as user attributes."""
    return {k: v for k, v in attrs.items() if k not in TRIAL_BOOKKEEPING and not isinstance(v, (dict, list))}


def _resolve_record_path(record_path: str, url: str, roots: Sequence[Path] = ()) -> Path:
    """A record path stored in a study: absolute, or relative to the sweep's results root (given with
    --root, or named by the sweep dir's optimization_results.yaml), the current dir, or the SQLite file's dir."""
    path = Path(record_path).expanduser()
    if path.is_absolute():
        return path
    db = sqlite_path(url)
    for base in [*roots, Path.cwd(), *([db.parent] if db is not None else [])]:
        if (base / path).exists():
            return base / path
    return (roots[0] if roots else Path.cwd()) / path


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


def load_optuna_studies(url: str, study_names: Sequence[str] | None) -> list[Any]:
    """The named studies of the storage at `url`; its only study when no name is given."""
    import optuna

    db = sqlite_path(url)
    if db is not None and not db.is_file():  # optuna would create an empty database there
        raise AnalysisError(f"no Optuna storage at {url}: {db} does not exist")
    try:
        storage = optuna.storages.get_storage(url)  # one connection for the listing and every study
        names = optuna.study.get_all_study_names(storage=storage)
    except Exception as e:  # a bad URL or an unreachable database: say so in one line
        raise AnalysisError(f"cannot open Optuna storage {url}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not study_names:
        if len(names) != 1:
            listing = ", ".join(sorted(names)) or "none"
            raise AnalysisError(f"{url} holds {len(names)} studies ({listing}): pick one with --study NAME")
        study_names = names
    unknown = [n for n in study_names if n not in names]
    if unknown:
        raise AnalysisError(f"no study named {', '.join(map(repr, unknown))} in {url} "
                            f"(studies: {', '.join(sorted(names)) or 'none'})")
    return [optuna.load_study(study_name=n, storage=storage) for n in study_names]


def _natural_key(path: Path) -> list[Any]:
    """Sort `10_x` after `9_x` (Hydra job numbers)."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _run_name(run_dir: Path, root: Path) -> str:
    try:
        rel = run_dir.relative_to(root)
    except ValueError:
        return str(run_dir)
    return str(rel) if str(rel) != "." else run_dir.name


def _tidy_types(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Integer config columns stay integers (nullable) when a row lacks them."""
    for c in columns:
        vals = df[c].dropna()
        if len(vals) and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            df[c] = df[c].astype("Int64")
    return df


def collect(paths: Iterable[str | Path], study_name: str | Sequence[str] | None = None,
            results_root: str | Path | None = None) -> Collection:
    """The runs under `paths`; `study_name`: the Optuna study (or studies) of a storage URL among them;
    `results_root`: where the record paths that a storage holds (relative to it) are looked up first."""
    paths = [str(p) for p in paths]
    names = [study_name] if isinstance(study_name, str) else list(study_name or [])
    if not paths:
        raise AnalysisError("no input: give a sweep dir, a folder of runs, or an Optuna storage URL")
    b = _Builder(Path(results_root).expanduser() if results_root is not None else None)
    studies: list[str] = []
    for p in paths:
        if is_storage_url(p):
            studies += b.add_storage(p, names)
            continue
        path = Path(p).expanduser()
        if path.is_dir():
            b.add_dir(path)
        elif path.is_file():
            b.add_file(path, _run_name(path.parent, path.parent.parent))
        else:
            raise AnalysisError(f"{p}: no such file or directory")
    if not b.rows:
        where = ", ".join(paths)
        found = []
        for kind, one, many in (("unreadable", "unreadable result.json", "unreadable result.json files"),
                                ("missing", "run dir without a record", "run dirs without a record")):
            n = sum(pr.kind == kind for pr in b.problems)
            if n:
                found.append(f"{n} {one if n == 1 else many}")
        extra = f" ({'; '.join(found)})" if found else ""
        raise NoRecordsError(f"no run records found under {where}{extra}")
    runs = pd.DataFrame(b.rows)
    # Rows from a storage alone (no record readable here) lack what only a record says: every column a
    # record gives is there, empty where unknown.
    for column, empty in run_row({"status": "", "config": {}}, "", "").items():
        if column not in runs.columns:
            runs[column] = empty if not isinstance(empty, str) else None
    runs = _tidy_types(runs, [c for c in [*b.config_columns, "seed"] if c in runs.columns])
    history = pd.DataFrame(b.history, columns=["run", *HISTORY_FIELDS])
    return Collection(runs=runs, history=history, records=b.records, config_columns=b.config_columns,
                      problems=b.problems, sources=paths, studies=studies, duplicates=b.duplicates,
                      tuning_studies=b.tuning_studies)
