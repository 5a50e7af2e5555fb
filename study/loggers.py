"""Each run's curves in TensorBoard or MLflow as well (`logger=tensorboard`,
`logger=mlflow`; docs/viewing.md). A viewer only: the run's result is its
`result.json`, and a logger that fails warns once and never costs a result."""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

log = logging.getLogger(__name__)

KINDS = ("none", "tensorboard", "mlflow")
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # kind -> the module its extra installs
EPOCH_METRICS = ("train_loss", "val_acc", "test_acc", "val_loss", "samples_per_second", "step")
FINAL_METRICS = ("train_loss", "val_acc", "test_acc", "val_loss")
TENSORBOARD_DIR = "tensorboard"
SINGLE_RUNS_EXPERIMENT = "runs"
_warned = False  # a failing logger warns once per process


def default_tracking_uri() -> str:
    return f"sqlite:///{Path('outputs').resolve() / 'mlflow.db'}"


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config as dotted keys and scalar values (lists and null as text)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v) if v is not None else "null"
    return out


def _finite(v: Any) -> Optional[float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def epoch_metrics(entry: dict[str, Any]) -> dict[str, float]:
    return {k: v for k in EPOCH_METRICS if (v := _finite(entry.get(k))) is not None}


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    final = record.get("final") or {}
    return {f"final/{k}": v for k in FINAL_METRICS if (v := _finite(final.get(k))) is not None}


class _TensorBoardRun:
    def __init__(self, run_dir: Path, options: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # the tensorboard extra: only where it is chosen

        logdir = run_dir / TENSORBOARD_DIR
        shutil.rmtree(logdir, ignore_errors=True)  # a run trained again here: its old curves are not this run's
        self.writer = SummaryWriter(log_dir=str(logdir))

    def epoch(self, entry: dict[str, Any]) -> None:
        for k, v in epoch_metrics(entry).items():
            self.writer.add_scalar(k, v, global_step=int(entry["epoch"]))
        self.writer.flush()

    def finish(self, record: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = final_metrics(record)
        hp = {k: v for k, v in flat_params(record.get("config") or {}).items()}
        hp.update(status=str(record.get("status")), seed=int(record.get("seed", 0)))
        # The HParams tab reads these three summaries from the run's own event file
        # (SummaryWriter.add_hparams would write them to a new sub-run).
        for summary in hparams(hp, metrics):
            self.writer.file_writer.add_summary(summary)
        last = max((int(h["epoch"]) for h in record.get("history") or []), default=0)
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, global_step=last)
        self.writer.close()


class _MLflowRun:
    def __init__(self, run_dir: Path, options: dict[str, Any]) -> None:
        self.client, experiment_id = self.store(options)
        tags = {"bn_study.run_dir": str(run_dir), "bn_study.group": options.get("experiment") or ""}
        self.run_id = _retry(lambda: self.client.create_run(experiment_id, run_name=run_dir.name,
                                                            tags=tags).info.run_id)

    @staticmethod
    def store(options: dict[str, Any]) -> tuple[Any, str]:
        """The tracking client and the experiment's id (created if new)."""
        import mlflow  # the mlflow extra: only where it is chosen

        for name in ("mlflow", "alembic"):  # their store setup logs a line per table migration
            logging.getLogger(name).setLevel(logging.WARNING)
        uri = options.get("tracking_uri") or default_tracking_uri()
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):].split("?")[0]).parent.mkdir(parents=True, exist_ok=True)
        client = mlflow.MlflowClient(tracking_uri=uri)
        name = options.get("experiment") or SINGLE_RUNS_EXPERIMENT

        def experiment() -> str:
            found = client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            try:
                return client.create_experiment(name)
            except Exception:  # another worker created it meanwhile
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise
                return found.experiment_id

        return client, _retry(experiment)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        if batch:
            _retry(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def epoch(self, entry: dict[str, Any]) -> None:
        self._log(epoch_metrics(entry), int(entry["epoch"]))

    def finish(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        params = [Param(k, str(v)[:6000]) for k, v in flat_params(record.get("config") or {}).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            _retry(lambda: self.client.log_batch(self.run_id, params=params[i:i + 100]))
        last = max((int(h["epoch"]) for h in record.get("history") or []), default=0)
        self._log(final_metrics(record), last)
        tags = [RunTag("bn_study.status", str(record.get("status"))), RunTag("bn_study.seed", str(record.get("seed")))]
        _retry(lambda: self.client.log_batch(self.run_id, tags=tags))
        status = "FAILED" if record.get("status") == "failed" else "FINISHED"
        _retry(lambda: self.client.set_terminated(self.run_id, status=status))


def _retry(call, tries: int = 5):
    """SQLite stores are shared by the sweep's workers: a locked database is retried."""
    for attempt in range(tries):
        try:
            return call()
        except Exception:
            if attempt == tries - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)


BACKENDS = {"tensorboard": _TensorBoardRun, "mlflow": _MLflowRun}


class RunLoggers:
    """The viewer runs of a pack's members (or of reused records): `epoch`
    while training, `finish` once each record is written. Every call is
    guarded: a failure warns once per process and turns this logger off."""

    def __init__(self, kind: str, options: dict[str, Any], run_dirs: Sequence[Path]) -> None:
        self.kind, self.options = kind, options
        self.runs: list[Any] = [None] * len(run_dirs)
        self.logged = [0] * len(run_dirs)  # the last epoch logged, per member
        self.off = kind == "none"
        for k, d in enumerate(run_dirs):
            self.runs[k] = self._guard(lambda: BACKENDS[kind](Path(d), options))

    def _guard(self, call):
        global _warned
        if self.off:
            return None
        try:
            return call()
        except Exception as e:
            self.off = True
            if not _warned:
                _warned = True
                log.warning("logger=%s failed (%s: %s); it is off for the rest of this process, "
                            "the runs and their records go on", self.kind, type(e).__name__, e)
            return None

    def on_epoch(self, epoch: int, outcomes: Sequence[Any]) -> bool:
        """For train_runs' on_epoch: each live member's newest history entry. Never prunes."""
        for k, out in enumerate(outcomes):
            if self.runs[k] is not None and out.history and out.history[-1]["epoch"] > self.logged[k]:
                entry = out.history[-1]
                self._guard(lambda: self.runs[k].epoch(entry))
                self.logged[k] = entry["epoch"]
        return False

    def finish(self, k: int, record: dict[str, Any]) -> None:
        """Member k's record is written: the epochs not logged yet, the final metrics, its config."""
        run = self.runs[k]
        if run is None:
            return
        for entry in record.get("history") or []:
            if entry["epoch"] > self.logged[k]:
                self._guard(lambda: run.epoch(entry))
                self.logged[k] = entry["epoch"]
        self._guard(lambda: run.finish(record))
        self.runs[k] = None


def _with_experiment(options: dict[str, Any], group: Optional[str | Path]) -> dict[str, Any]:
    options = dict(options)
    if not options.get("experiment") and group:
        rel = os.path.relpath(group)
        options["experiment"] = str(group) if rel.startswith("..") else rel
    return options


def open_loggers(options: dict[str, Any], run_dirs: Sequence[Path],
                 group: Optional[str | Path]) -> Optional[RunLoggers]:
    """The loggers `options` (the config's `logger` node, plain) asks for;
    `group`: the sweep dir of a multirun (MLflow's default experiment)."""
    kind = str(options.get("kind", "none"))
    if kind == "none":
        return None
    return RunLoggers(kind, _with_experiment(options, group), run_dirs)


def prepare(options: dict[str, Any], group: Optional[str | Path]) -> None:
    """Before a sweep's jobs start (its launching process): create the MLflow
    store's tables and the sweep's experiment once. Workers that each found
    an empty SQLite store ran its schema migration at once and broke it
    (`table _alembic_tmp_tags already exists`, seen with 2 workers)."""
    if str(options.get("kind", "none")) != "mlflow":
        return
    global _warned
    try:
        _MLflowRun.store(_with_experiment(options, group))
    except Exception as e:
        _warned = True
        log.warning("logger=mlflow: the tracking store could not be prepared (%s: %s); "
                    "the runs and their records go on", type(e).__name__, e)
