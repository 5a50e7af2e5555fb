"""Hydra callbacks: what a run or multirun checks before it starts
(`Preflight`), and what a multirun prints when it ends (`SweepSummary`)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from analysis import build_report
from study import loggers
from study.config import installed
from study.errors import RunFailed, UserError, UserExit, needs_slurm_extra
from study.records import CLAIM_FILE, OPERATIONAL_KEYS, RESULT_FILE, RecordError, read_record
from study.sweep import progress

log = logging.getLogger("study.sweep")


def count_statuses(sweep_dir: Path) -> Counter:
    counts: Counter = Counter()
    for path in sweep_dir.rglob(RESULT_FILE):
        try:
            counts[read_record(path).get("status", "unreadable")] += 1
        except RecordError:
            counts["unreadable"] += 1
    return counts


def unusable_dir(path: Path) -> Optional[str]:
    """Why `path` cannot be made into a writable folder, or None. Writes nothing:
    it looks at the deepest part of the path that exists."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    if path.is_dir():
        return None if os.access(path, os.W_OK | os.X_OK) else "cannot be written (read-only or no permission)"
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent == path:
        return "is a file, not a folder"
    if not parent.is_dir():
        return f"cannot be made: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK) or parent in (Path("/proc"), Path("/sys")) \
            or str(parent).startswith(("/proc/", "/sys/")):
        return f"cannot be made: {parent} cannot be written (read-only or no permission)"
    return None


def sweep_identity(config: DictConfig) -> dict[str, Any]:
    """What makes a sweep this sweep: its overrides that change what runs compute
    (launch-only and operational keys aside) and the sweeper's own axes."""
    overrides = [o for o in (config.hydra.overrides.task or [])
                 if not any(o.split("=", 1)[0].lstrip("+~") == k or o.split("=", 1)[0].lstrip("+~").startswith(k + ".")
                            for k in OPERATIONAL_KEYS)]
    params = OmegaConf.select(config, "hydra.sweeper.params")
    return {"overrides": sorted(overrides),
            "sweeper_params": OmegaConf.to_container(params, resolve=False) if params is not None else None}


def holds_runs(folder: Path) -> bool:
    return any(True for _ in folder.rglob(RESULT_FILE)) or any(True for _ in folder.rglob(CLAIM_FILE))


_refused = False  # Preflight refused this process's (multi)run: nothing to summarize


class Preflight(Callback):
    """Before a run or multirun writes anything: every output it needs can be
    written, its launcher can work here, and a sweep dir that already holds
    runs holds this sweep's (a rerun goes on from them; another sweep's are
    refused). A problem is one line naming the key and the fix, exit status 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check([("hydra.run.dir", config.hydra.run.dir), ("run_index", config.run_index)])

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        self._check([("hydra.sweep.dir", sweep_dir), ("run_index", config.run_index)])
        try:
            check_launcher(config)
            check_same_sweep(sweep_dir, config)
        except UserError as e:
            self._refuse(str(e))

    def _check(self, outputs: list[tuple[str, Any]]) -> None:
        for key, value in outputs:
            why = unusable_dir(Path(str(value)))
            if why:
                self._refuse(f"{key}={value} {why}; give {key} a folder that can be written")

    @staticmethod
    def _refuse(message: str) -> None:
        global _refused
        _refused = True
        raise UserExit(message)


def check_launcher(config: DictConfig) -> None:
    """A submitit launcher needs the slurm extra, and a SLURM one SLURM here:
    refuse before a sweep dir is made (submitit found no `srun` only after
    writing one). The extra first: it is the fix to make first."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
    choice = OmegaConf.select(config, "hydra.runtime.choices") or {}
    name = choice.get("hydra/launcher") or "submitit_slurm"
    if "submitit" in target and not installed("hydra_plugins.hydra_submitit_launcher"):
        raise UserError(needs_slurm_extra(name))
    dry_run = bool(OmegaConf.select(config, "hydra.launcher.dry_run", default=False))  # prints the plan only
    if target.endswith("SlurmLauncher") and shutil.which("sbatch") is None and not dry_run:
        raise UserError(f"hydra/launcher={name} needs SLURM, and this machine has none (no sbatch on PATH); "
                        "launch from a SLURM login node, or use hydra/launcher=packed here")


def check_same_sweep(sweep_dir: Path, config: DictConfig) -> None:
    """A sweep dir that holds runs of another sweep (other overrides or sweeper
    axes, as its multirun.yaml says) is refused: rerun the same command to go
    on, or give a new dir."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file() or not holds_runs(sweep_dir):
        return
    try:
        before = sweep_identity(OmegaConf.load(saved))
    except Exception:  # unreadable: the runs' own dirs are checked one by one (study.reuse.record_in_dir)
        return
    now = sweep_identity(config)
    if before != now:
        what = (f"its overrides: {' '.join(before['overrides']) or 'none'}; this sweep's: "
                f"{' '.join(now['overrides']) or 'none'}" if before["overrides"] != now["overrides"]
                else f"its hydra.sweeper.params: {before['sweeper_params']}; this sweep's: {now['sweeper_params']}")
        raise UserError(f"hydra.sweep.dir={sweep_dir} holds another sweep's runs ({what}); rerun that sweep's "
                        "command to go on with it, or give this sweep a new hydra.sweep.dir (or leave it out "
                        "for a new timestamped one)")


class SweepSummary(Callback):
    """At multirun end: where the results are, counts by status, the report,
    and the exit status.

    The report is built from the sweep dir's records and, for a tuning sweep,
    every trial of its studies wherever it ran (a resumed sweep's earlier
    trials sit in the stopped sweep's dir): analysis.collect reads them from
    the storage that the dir's optimization_results.yaml names; the counts
    logged here are the dir's own. A report that cannot be built leaves the
    results intact and says why in one line. When a run of
    the sweep failed (crashed in training; its record holds the traceback)
    the sweep ends with RunFailed: one line, exit status 1 (study/run.py),
    unless the sweep is already ending with an error of its own.
    """

    def __init__(self, report: bool = True, progress_every: float = 30.0) -> None:
        self.report, self.progress_every = report, float(progress_every)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        progress.begin(self.progress_every)  # study/sweep/progress.py: a line per finished run and every N s
        logger = OmegaConf.select(config, "logger")
        if logger is not None:  # one process sets up a shared store before the workers write to it
            loggers.prepare(OmegaConf.to_container(logger), Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if getattr(sys.exc_info()[1], "dry_run", False):  # hydra.launcher.dry_run: the plan is all it prints
            progress.abandon()
            return
        if sys.exc_info()[0] is None:
            progress.end()  # the last progress line
        else:
            progress.abandon()  # an interrupt or an error ends the sweep: its own line says so
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        if _refused or not sweep_dir.is_dir():  # refused, or stopped before it made its dir: nothing to say
            return
        counts = count_statuses(sweep_dir)
        ended_by_error = sys.exc_info()[0] is not None
        if ended_by_error and not counts and [p.name for p in sweep_dir.iterdir()] == ["multirun.yaml"]:
            # Stopped before its first job (a refused value, an interrupt): its error line is all it says,
            # and the dir Hydra made for it, holding only the config dump, goes rather than look like results.
            (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
            sweep_dir.rmdir()
            return
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs"
        log.info("results: %s (%s)", sweep_dir, summary)
        if self.report and counts:
            self.build_report(sweep_dir)
        # Hydra calls this in a `finally`: an error already ending the sweep
        # (a user error, an interrupt) is reported instead.
        if counts["failed"] and sys.exc_info()[0] is None:
            raise RunFailed(f"{counts['failed']} of {sum(counts.values())} runs failed; their records "
                            f"(status failed, with the traceback) are under {sweep_dir}")

    @staticmethod
    def build_report(sweep_dir: Path) -> None:
        try:
            report_dir = build_report([sweep_dir], out_dir=sweep_dir / "report")
        except Exception as e:  # the sweep's results stand even if the report fails
            log.error("report not built (%s: %s); the results above are intact; "
                      "retry with: python -m analysis %s", type(e).__name__, e, sweep_dir)
            return
        log.info("report: %s", Path(report_dir) / "report.html")
