"""Trial accounting: what a job's run record makes of its trial, which trials
count toward `n_trials`, each study's best and confirmation, and the sweep's
summary lines and optimization_results.yaml (docs/tuning.md: How it works)."""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from study.records import METRIC_KEYS, RESULT_FILE, RecordError
from study.records import read_record as read_checked_record

from .plan import override_key

log = logging.getLogger("study.tune")


def counts_toward_target(t: FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL with a run record (a run that diverged or crashed: a result)."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and bool(t.user_attrs.get("record_path"))


def done_or_in_flight(study: optuna.Study) -> int:
    return sum(counts_toward_target(t) or t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def best_trial(study: optuna.Study) -> Optional[FrozenTrial]:
    """The best COMPLETE trial with a finite value; None if there is none."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(done, key=lambda t: t.value)


def state_counts(trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    """Trials by state, failures by cause (the `status` attribute), for the summary."""
    counts: dict[str, Any] = {"complete": 0, "pruned": 0, "failed": {}}
    for t in trials:
        if t.state == TrialState.FAIL:
            why = str(t.user_attrs.get("status") or "unknown")
            counts["failed"][why] = counts["failed"].get(why, 0) + 1
        else:
            key = t.state.name.lower()
            counts[key] = counts.get(key, 0) + 1
    return counts


def add_counts(total: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    for k, v in counts.items():
        if isinstance(v, dict):
            add_counts(total.setdefault(k, {}), v)
        else:
            total[k] = total.get(k, 0) + v
    return total


def describe_counts(counts: dict[str, Any]) -> str:
    parts = [f"{counts[k]} {k}" for k in ("complete", "pruned", "running", "waiting") if counts.get(k)]
    failed = counts.get("failed") or {}
    if failed:
        parts.append(f"{sum(failed.values())} failed ("
                     + ", ".join(f"{n} {why}" for why, n in sorted(failed.items())) + ")")
    return ", ".join(parts) or "no trials"


# ------------------------------------------------------------- run records
def read_record(path: Optional[Path]) -> tuple[Optional[dict[str, Any]], Optional[str], Optional[str]]:
    """The job's run record (study.records.read_record), or None with the
    trial status that says why ("missing": no file; "unreadable") and the
    reason for an unreadable one."""
    if path is None or not path.exists():
        return None, "missing", None
    try:
        return read_checked_record(path), None, None
    except RecordError as e:
        return None, "unreadable", str(e)


def record_path_of(ret: JobReturn) -> Optional[Path]:
    out_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    return Path(str(out_dir)) / RESULT_FILE if out_dir else None


def finite(x: Any) -> Optional[float]:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def job_outcome(ret: JobReturn, objective: str, stored_path: Callable[[Path], str]
                ) -> tuple[dict[str, Any], TrialState, Optional[float]]:
    """A trial's user attributes, state and value, from its job's run record.

    A record's status decides (completed with a finite objective: COMPLETE;
    pruned: PRUNED; else FAIL, counted). No record: FAIL, not counted, with
    `status` error (the job raised), missing or unreadable.
    """
    path = record_path_of(ret)
    rec, problem, reason = read_record(path)
    attrs: dict[str, Any] = {"overrides": list(ret.overrides or [])}
    if rec is not None:
        assert path is not None
        attrs.update(record_path=stored_path(path), status=rec.get("status"),
                     diverged_at_step=rec.get("diverged_at_step"),
                     # The run's final metrics: a report from the storage alone shows what its record does.
                     final={k: finite((rec.get("final") or {}).get(k)) for k in METRIC_KEYS})
        if rec.get("reused_from"):
            attrs["reused_from"] = rec["reused_from"]
    elif ret.status == JobStatus.FAILED:
        attrs["status"] = "error"
        # Private (JobReturn._return_value): the job's exception, to describe it. The public
        # `return_value` raises it and writes "Error executing job" to stderr.
        attrs["error"] = f"{type(ret._return_value).__name__}: {ret._return_value}"[:500]
    else:  # no record, or a damaged one (never counted: study.records' schema)
        attrs["status"] = problem
        if reason is not None:
            attrs["error"] = f"unreadable: {reason}"[:500]
    value = finite((rec or {}).get("final", {}).get(objective)) if rec else None
    if attrs["status"] == "completed" and value is not None:
        return attrs, TrialState.COMPLETE, value
    if attrs["status"] == "pruned":
        return attrs, TrialState.PRUNED, None
    return attrs, TrialState.FAIL, None


def confirmation(best: FrozenTrial, seeds: list[int], returns: Sequence[JobReturn],
                 stored_path: Callable[[Path], str]) -> dict[str, Any]:
    """The study attribute `confirm`: the best trial's reruns, one per seed, and their test_acc."""
    runs = []
    for seed, ret in zip(seeds, returns):
        path = record_path_of(ret)
        rec, problem, _ = read_record(path)
        final = (rec or {}).get("final") or {}
        runs.append({"seed": seed, "record_path": stored_path(path) if rec and path else None,
                     "status": rec.get("status") if rec else problem,
                     "reused": bool(rec and rec.get("reused_from")),
                     **{k: finite(final.get(k)) for k in METRIC_KEYS}})
    tests = [r["test_acc"] for r in runs if r["status"] == "completed" and r["test_acc"] is not None]
    return {"trial": best.number, "params": dict(best.params), "seeds": seeds,
            "runs": runs, "n_completed": len(tests),
            "test_acc_mean": statistics.fmean(tests) if tests else None,
            "test_acc_sd": statistics.stdev(tests) if len(tests) > 1 else None}


# ------------------------------------------------------------ the sweep's end
@dataclass
class CellResult:
    study: str
    cell: dict[str, str]
    objective: str
    counts: dict[str, Any]
    asked: int
    best: Optional[FrozenTrial]
    confirm: Optional[dict[str, Any]] = None
    confirm_note: Optional[str] = None  # why this sweep did not run the confirmation
    errors: list[str] = field(default_factory=list)
    incomplete: Optional[str] = None  # why the study lacks trials or its confirmation at the sweep's end

    def why_incomplete(self, counted: int, target: int, blind: Sequence[FrozenTrial],
                       confirming: bool) -> Optional[str]:
        """Why the study lacks trials or its confirmation (None: complete)."""
        if blind:
            hosts = sorted({str((t.user_attrs.get("sweep") or {}).get("host")) for t in blind})
            return (f"{len(blind)} trial{'s' if len(blind) > 1 else ''} of a sweep on "
                    f"{', '.join(hosts)} still running, which this sweep cannot tell alive or dead "
                    "without heartbeats (hydra.sweeper.heartbeat_interval=null here or there)")
        if counted < target:
            return (f"{counted} of {target} trials counted (the others failed without a run "
                    "record: see the counts above)")
        if self.best is not None and confirming and self.confirm is None:
            return f"its best trial is not confirmed ({self.confirm_note})"
        return None

    def summary(self) -> str:
        """The cell's line at the sweep's end: trials by state, the best, the confirmation."""
        line = f"{self.study}: {describe_counts(self.counts)} ({self.asked} run now)"
        if self.best is None:
            line += "; no completed trial, so no best and no confirmation"
        else:
            params = ", ".join(f"{override_key(k)}={v:.4g}" if isinstance(v, float)
                               else f"{override_key(k)}={v}" for k, v in self.best.params.items())
            line += f"; best {params} ({self.objective} {self.best.value:.4f}, trial {self.best.number})"
        if self.confirm:
            c = self.confirm
            reused = sum(run["reused"] for run in c["runs"])
            acc = "n/a" if c["test_acc_mean"] is None else f"{c['test_acc_mean']:.4f}"
            if c["test_acc_sd"] is not None:
                acc += f" +- {c['test_acc_sd']:.4f} sd"
            line += (f"; confirm test_acc {acc} ({c['n_completed']}/{len(c['runs'])} seeds completed, "
                     f"{reused} reused finished runs)")
        if self.confirm_note:
            line += f" ({self.confirm_note})" if self.confirm else f"; not confirmed here: {self.confirm_note}"
        return line


def report(results: list[CellResult], url: str, sweep_dir: Path, results_root: str) -> None:
    """Log each study's summary and the totals; write `<sweep dir>/optimization_results.yaml`."""
    totals: dict[str, Any] = {}
    for r in results:
        add_counts(totals, r.counts)
        log.info(r.summary())
        for e in r.errors[:3]:
            log.warning("%s: a job raised: %s", r.study, e)
    log.info("all studies: %s", describe_counts(totals))
    log.info("storage: %s", url)
    log.info("dashboard: optuna-dashboard '%s'  (serves on 127.0.0.1:8080; no authentication)", url)
    OmegaConf.save(OmegaConf.create(results_yaml(results, url, results_root)),
                   sweep_dir / "optimization_results.yaml")


def results_yaml(results: list[CellResult], url: str, results_root: str) -> dict[str, Any]:
    """The plugin's optimization_results.yaml, one entry per study (and the plugin's
    top-level best_params/best_value when there is one study)."""
    studies = []
    for r in results:
        studies.append({
            "study": r.study,
            "cell": {override_key(k): v for k, v in r.cell.items()},
            "best_params": dict(r.best.params) if r.best else None,
            "best_value": r.best.value if r.best else None,
            "best_trial": r.best.number if r.best else None,
            "trials": r.counts,
            "confirm": r.confirm,
        })
    out: dict[str, Any] = {"name": "optuna", "storage": url, "results_root": results_root}
    if len(studies) == 1:
        out.update(best_params=studies[0]["best_params"], best_value=studies[0]["best_value"])
    out["studies"] = studies
    return out
