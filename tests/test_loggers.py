"""logger=tensorboard and logger=mlflow: one viewer run per record, read back
with each tool's own reader; a missing extra; a logger that fails."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, tiny_overrides
from study import loggers
from study.config import compose_config
from study.runner import run_job

RUN = [sys.executable, str(REPO / "study" / "run.py")]
EPOCH_KEYS = ("train_loss", "val_acc", "test_acc", "val_loss", "samples_per_second", "step")


def sweep(tmp_path: Path, tiny_mnist: Path, *extra: str) -> tuple[subprocess.CompletedProcess, list[Path]]:
    """A small packed sweep: 2 batch sizes x 2 norms x 2 seeds = 4 packs of 2 runs, in this process."""
    proc = subprocess.run(RUN + ["-m", *tiny_overrides(tiny_mnist), "batch_size=32,64", "seed=0,1", "epochs=2",
                                 "hydra.launcher.n_jobs=1", "hydra.callbacks.summary.report=false",
                                 f"hydra.sweep.dir={tmp_path}/sweep", *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pack of 2" in proc.stdout + proc.stderr
    records = sorted((tmp_path / "sweep").rglob("result.json"))
    assert len(records) == 8
    return proc, records


def history(record_path: Path) -> list[dict]:
    return json.loads(record_path.read_text())["history"]


@pytest.mark.slow
def test_tensorboard_has_one_run_per_record_with_its_curves(tmp_path: Path, tiny_mnist: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra (uv sync --extra tensorboard; CI has it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, records = sweep(tmp_path, tiny_mnist, "logger=tensorboard")
    event_dirs = {p.parent for p in (tmp_path / "sweep").rglob("events.out.tfevents.*")}
    assert event_dirs == {r.parent / "tensorboard" for r in records}  # one run per record, in its dir
    for record in records:
        events = EventAccumulator(str(record.parent / "tensorboard"))
        events.Reload()
        hist = history(record)
        assert [h["epoch"] for h in hist] == [1, 2]
        for key in EPOCH_KEYS:
            logged = [(e.step, e.value) for e in events.Scalars(key)]
            assert logged == [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in hist], key
        final = json.loads(record.read_text())["final"]
        assert events.Scalars("final/test_acc")[0].value == pytest.approx(final["test_acc"], rel=1e-6)
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


@pytest.mark.slow
def test_mlflow_has_one_run_per_record_grouped_by_sweep(tmp_path: Path, tiny_mnist: Path) -> None:
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (uv sync --extra mlflow; CI has it)")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, records = sweep(tmp_path, tiny_mnist, "logger=mlflow", f"logger.tracking_uri='{uri}'")
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("sweep")  # the sweep dir, as the command named it, is the group
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    by_dir = {r.data.tags["bn_study.run_dir"]: r for r in runs}
    assert len(runs) == 8 and set(by_dir) == {str(r.parent) for r in records}
    for record in records:
        run = by_dir[str(record.parent)]
        rec = json.loads(record.read_text())
        assert run.info.status == "FINISHED" and run.data.tags["bn_study.status"] == rec["status"]
        assert run.data.params["batch_size"] == str(rec["config"]["batch_size"])
        assert run.data.params["model.norm"] == rec["config"]["model"]["norm"]
        for key in ("val_acc", "train_loss"):
            logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(logged) == [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in history(record)]
        assert run.data.metrics["final/test_acc"] == pytest.approx(rec["final"]["test_acc"], rel=1e-6)


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow"])
def test_a_logger_without_its_extra_is_one_line_and_exit_2(tmp_path: Path, tiny_mnist: Path, kind: str) -> None:
    # The extra's module made unimportable (a None in sys.modules), as on an install without it.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(f"import sys\nsys.modules[{kind!r}] = None\n")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    proc = subprocess.run(RUN + ["-m", *tiny_overrides(tiny_mnist), f"logger={kind}", "batch_size=64,128",
                                 f"hydra.sweep.dir={tmp_path}/sweep"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines == [f"error: logger={kind} is not allowed: {kind} is not installed: "
                     f"add its extra with `uv sync --extra {kind}`"]
    assert not list(tmp_path.rglob("result.json"))


def test_a_failing_logger_warns_once_and_costs_no_result(tmp_path: Path, tiny_mnist: Path, monkeypatch,
                                                          caplog) -> None:
    class Broken:
        def __init__(self, run_dir, options):
            pass

        def epoch(self, entry):
            raise OSError(28, "No space left on device")

        def finish(self, record):
            raise OSError(28, "No space left on device")

    monkeypatch.setitem(loggers.BACKENDS, "tensorboard", Broken)
    monkeypatch.setattr(loggers, "_warned", False)
    cfg = compose_config(tiny_overrides(tiny_mnist) + ["logger=tensorboard", "epochs=3"])
    with caplog.at_level(logging.WARNING, logger="study.loggers"):
        first = run_job(cfg, tmp_path / "a")
        second = run_job(cfg, tmp_path / "b")
    assert first["status"] == second["status"] == "completed"
    assert len(first["history"]) == 3
    assert (tmp_path / "a" / "result.json").is_file() and (tmp_path / "b" / "result.json").is_file()
    warned = [r for r in caplog.records if "logger=tensorboard failed" in r.getMessage()]
    assert len(warned) == 1 and "No space left on device" in warned[0].getMessage()


def test_the_logger_does_not_change_what_a_run_is() -> None:
    """logger is launch-only: the same run with or without a viewer is the same run (reuse, cells)."""
    from study.reuse import identity

    plain = compose_config(["batch_size=64"])
    viewed = compose_config(["batch_size=64", "logger=mlflow"])
    assert identity(plain) == identity(viewed)
