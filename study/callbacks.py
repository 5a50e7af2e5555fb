"""Hydra callbacks: what a multirun prints when it ends."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from study import loggers, progress
from study.errors import RunFailed
from study.records import RESULT_FILE, RecordError, read_record

log = logging.getLogger("study.sweep")


def count_statuses(sweep_dir: Path) -> Counter:
    counts: Counter = Counter()
    for path in sweep_dir.rglob(RESULT_FILE):
        try:
            counts[read_record(path).get("status", "unreadable")] += 1
        except RecordError:
            counts["unreadable"] += 1
    return counts


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
        progress.begin(self.progress_every)  # study/progress.py: a line per finished run and every N s
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
        counts = count_statuses(sweep_dir)
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
            from analysis import build_report

            report_dir = build_report([sweep_dir], out_dir=sweep_dir / "report")
        except Exception as e:  # the sweep's results stand even if the report fails
            log.error("report not built (%s: %s); the results above are intact; "
                      "retry with: python -m analysis %s", type(e).__name__, e, sweep_dir)
            return
        log.info("report: %s", Path(report_dir) / "report.html")
