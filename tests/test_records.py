"""The record schema (study.records.read_record): what the runner writes passes; a damaged record is no run.

A damaged record (a key missing, a wrong type, a status no runner writes, a
metric that is no number) raises RecordError with a one-line reason: the
report lists it as unreadable, and a later job of the same config trains
again instead of reusing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import build_report
from helpers import tiny_overrides
from study.config import compose_config
from study.records import RESULT_FILE, RecordError, read_record
from study.runner import run_job


def job(root: Path, out: Path, *extra: str) -> dict:
    overrides = ["epochs=1", "batch_size=64", "seed=3", "force=false", *extra]
    return run_job(compose_config(tiny_overrides(root) + overrides), out, overrides)


def write(path: Path, rec: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    return path


@pytest.fixture(scope="module")
def finished(tiny_mnist, tmp_path_factory):
    """A completed run of the runner, its index and record."""
    out = tmp_path_factory.mktemp("finished")
    return out, job(tiny_mnist, out / "a", f"run_index={out}/index")


def test_a_record_is_as_readable_as_the_files_beside_it(finished):
    """The umask's mode, as the run's other files have (mkstemp's 0600 hid records from a team)."""
    import os

    out, _ = finished
    mask = os.umask(0o022)
    os.umask(mask)
    assert (out / "a" / RESULT_FILE).stat().st_mode & 0o777 == 0o666 & ~mask


def test_what_the_runner_writes_passes(finished, tmp_path):
    out, rec = finished
    assert read_record(out / "a" / RESULT_FILE) == rec
    # the other statuses, as the runner writes them (study/runner.py run_record, study/train.py RunOutcome.final)
    nulls = {"train_loss": None, "val_acc": None, "test_acc": None, "val_loss": None}
    diverged = dict(rec, status="diverged", diverged_at_step=12, final={**nulls, "epoch": 1, "step": 12})
    failed = dict(rec, status="failed", final={}, history=[],
                  error={"type": "RuntimeError", "message": "boom", "traceback": "..."})
    pruned = dict(rec, status="pruned", final={**nulls, "epoch": 0, "step": None}, history=[])
    # data.val_size=0: no validation split, so no validation metrics
    no_val = dict(rec, final=dict(rec["final"], val_acc=None, val_loss=None),
                  history=[dict(h, val_acc=None, val_loss=None) for h in rec["history"]])
    # a record from before data.normalize, and before experiment/pack/probes/run_hash/code_version
    old = {k: v for k, v in rec.items() if k not in ("experiment", "pack", "probes", "run_hash", "code_version")}
    old["data"] = {k: v for k, v in rec["data"].items() if k not in ("normalize", "normalization")}
    for name, r in {"diverged": diverged, "failed": failed, "pruned": pruned, "no_val": no_val, "old": old}.items():
        assert read_record(write(tmp_path / name / RESULT_FILE, r)) == r, name


@pytest.mark.parametrize("edit, reason", [
    (lambda r: r.pop("final"), "no 'final'"),
    (lambda r: r.update(history={"epoch": 1}), "'history' is not a list (dict)"),
    (lambda r: r.update(status="running"), "status 'running' is not one of completed, diverged, pruned, failed"),
    (lambda r: r["final"].update(test_acc="0.9"), "'final.test_acc' is not a number ('0.9')"),
    (lambda r: r["final"].update(test_acc=None), "'final.test_acc' is null in a completed run"),
    (lambda r: r["final"].update(train_loss=float("nan")), "'final.train_loss' is not a number (nan)"),
    (lambda r: r["history"][0].update(step=1.5), "'history[0].step' is not an integer (1.5)"),
    (lambda r: r["history"][0].update(val_acc=True), "'history[0].val_acc' is not a number (True)"),
    (lambda r: r.update(history=[]), "a completed run with an empty 'history'"),
    (lambda r: r.update(seed="3"), "'seed' is not an integer (str)"),
    (lambda r: r.update(schema_version=2), "schema_version 2 (this code reads 1)"),
    (lambda r: r.update(status="failed", error=None), "a failed run without its 'error'"),
    (lambda r: r["data"].update(md5="abc"), "'data.md5' is not an object ('abc')"),
])
def test_a_damaged_record_says_why_in_one_line(finished, tmp_path, edit, reason):
    _, rec = finished
    rec = json.loads(json.dumps(rec))
    edit(rec)
    with pytest.raises(RecordError) as e:
        read_record(write(tmp_path / RESULT_FILE, rec))
    assert str(e.value) == reason


def test_a_damaged_indexed_record_is_retrained_not_reused(tiny_mnist, tmp_path, caplog):
    index = f"run_index={tmp_path}/index"
    first = job(tiny_mnist, tmp_path / "a", index)
    assert job(tiny_mnist, tmp_path / "b", index)["reused_from"]  # intact: reused
    damaged = dict(first, history="lost")
    write(tmp_path / "a" / RESULT_FILE, damaged)
    with caplog.at_level("WARNING"):
        again = job(tiny_mnist, tmp_path / "c", index)
    assert "reused_from" not in again and again["status"] == "completed"
    assert again["final"]["train_loss"] == first["final"]["train_loss"]  # trained again, deterministic
    assert "not reusable ('history' is not a list (str)): training again" in caplog.text
    # the retrained run is the one indexed now: the next job reuses it
    assert job(tiny_mnist, tmp_path / "d", index)["reused_from"] == str((tmp_path / "c" / RESULT_FILE).resolve())
    # the report lists the damaged record as unreadable and counts the others once each (b and d are copies)
    md = (build_report([tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "d"],
                       tmp_path / "report") / "report.md").read_text()
    assert f"{tmp_path / 'a' / RESULT_FILE}: 'history' is not a list (str)" in md
    assert "Unreadable records (skipped) (1)" in md and "Every run completed." not in md
