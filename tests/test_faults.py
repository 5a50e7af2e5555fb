"""Issue 25, end to end: `study/run.py` as users run it, through faults. A
sweep killed mid-pack and rerun into its fixed dir finishes; a full disk is
one line with no claimed dir left without a record; Ctrl-C is one line and
exit 130; two identical sweeps started together train each run once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, RUN, group_processes, run_cli, tiny_overrides
from study.records import CLAIM_FILE, RESULT_FILE


def sweep_args(root, tmp_path, sweep, *extra):
    return (["-m"] + tiny_overrides(root) + ["force=false", f"run_index={tmp_path}/index", "batch_size=16",
                                             f"hydra.sweep.dir={sweep}", "hydra.callbacks.summary.report=false",
                                             *extra])


def records(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob(f"*/{RESULT_FILE}")}


def claimed_without_record(sweep: Path) -> list[Path]:
    return [c.parent for c in sweep.rglob(CLAIM_FILE) if not (c.parent / RESULT_FILE).exists()]


def as_in_a_terminal() -> None:
    """Ctrl-C's default action, as a terminal's foreground job has it: a test run started in the background
    (`bash .ci/run &`) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args, cwd, **extra_env):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | extra_env
    return subprocess.Popen(RUN + list(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True, preexec_fn=as_in_a_terminal)


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_workers_stop_when_their_sweep_is_killed_alone(tmp_path, tiny_mnist):
    """SIGKILL to the sweep's process only (the OOM killer's way): its loky workers, which loky keeps
    for reuse, stop within seconds instead of training on and then idling."""
    sweep = tmp_path / "sweep"
    proc = start(sweep_args(tiny_mnist, tmp_path, sweep, "steps=5000", "model.norm=none,batch",
                            "hydra.launcher.n_jobs=2"), tmp_path)
    try:
        def workers() -> list[bytes]:
            return [c for c in group_processes(proc.pid) if b"popen_loky_posix" in c]

        wait_for(lambda: len(workers()) == 2 and (sweep / "multirun.yaml").exists())
        time.sleep(2)  # both training their packs
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()  # not communicate(): live workers hold its pipes open
        wait_for(lambda: not workers(), timeout=20)
        proc.communicate()
        assert not records(sweep)  # killed mid-pack: nothing that looks finished
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone already
            pass


@pytest.mark.slow
def test_a_sweep_killed_mid_pack_finishes_when_rerun_into_its_dir(tmp_path, tiny_mnist):
    sweep = tmp_path / "sweep"
    args = sweep_args(tiny_mnist, tmp_path, sweep, "steps=600", "hydra.launcher.n_jobs=1")
    proc = start(args, tmp_path)
    wait_for(lambda: len(records(sweep)) >= 3)  # the first pack wrote its records; the second is training
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    finished = records(sweep)
    assert 3 <= len(finished) < 6
    # And one finished record damaged (a disk fault): it is trained again, not reused.
    damaged = sorted(finished)[0]
    (sweep / damaged / RESULT_FILE).write_text('{"schema_version": 1, "stat')
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    after = records(sweep)
    assert len(after) == 6 and all(r["status"] == "completed" for r in after.values())
    for name, rec in finished.items():
        if name != damaged:
            assert after[name] == rec  # kept as it was
    assert after[damaged]["final"]["test_acc"] is not None and "reused_from" not in after[damaged]
    assert not claimed_without_record(sweep)
    assert f"results: {sweep.resolve()} (6 completed)" in again.stdout + again.stderr
    # A third run of the same command trains nothing.
    third = run_cli(args, cwd=tmp_path)
    assert third.returncode == 0 and records(sweep) == after
    assert "finished already" in third.stdout + third.stderr
    # Another sweep into that dir is refused in one line; nothing is written.
    other = run_cli(sweep_args(tiny_mnist, tmp_path, sweep, "steps=300", "hydra.launcher.n_jobs=1"), cwd=tmp_path)
    assert other.returncode == 2
    lines = [ln for ln in other.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: hydra.sweep.dir={sweep} holds another sweep's runs ")
    assert records(sweep) == after


@pytest.mark.slow
def test_a_rerun_with_changed_defaults_into_a_run_dir_of_another_config_is_refused(tmp_path, tiny_mnist):
    """Same command line, another config (a preset, which the dir name does not show)."""
    sweep = tmp_path / "sweep"
    first = run_cli(sweep_args(tiny_mnist, tmp_path, sweep, "steps=5", "seed=0", "model.norm=none"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (sweep / "multirun.yaml").unlink()  # as if an older version had not written it: the run dirs still say
    before = records(sweep)
    proc = run_cli(sweep_args(tiny_mnist, tmp_path, sweep, "steps=5", "seed=0", "model.norm=none",
                              "experiment=notebook"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "holds another sweep's run (preset experiment=None there, notebook here)" in lines[0], proc.stderr
    assert records(sweep) == before


# A full disk: the second record written fails with ENOSPC, as a full file system does.
FULL_DISK_AFTER_ONE_RECORD = f"""
import errno, os, runpy, sys
import study.records

real = study.records.write_json_atomic
written = []

def write_json_atomic(path, obj):
    if path.name == "result.json" and written:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if path.name == "result.json":
        written.append(path)
    return real(path, obj)

study.records.write_json_atomic = write_json_atomic  # study.runner, imported later, takes this one
sys.argv[0] = {str(REPO / "study" / "run.py")!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_full_disk_mid_sweep_is_one_line_and_leaves_no_claimed_dir_without_a_record(tmp_path, tiny_mnist):
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_AFTER_ONE_RECORD,
                           *sweep_args(tiny_mnist, tmp_path, sweep, "steps=5", "hydra.launcher.n_jobs=1")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert lines[0].startswith("error: cannot write ") and "result.json: No space left on device; " in lines[0]
    assert len(records(sweep)) == 1
    assert not claimed_without_record(sweep)
    assert not list((tmp_path / "index").glob("*.claim"))


def _loky_worker_started(pgid: int) -> bool:
    return any(b"loky" in cmdline for cmdline in group_processes(pgid))


@pytest.mark.slow
@pytest.mark.parametrize("when", ["workers starting", "mid-sweep"])
def test_ctrl_c_is_one_line_exit_130_and_keeps_finished_runs(tmp_path, tiny_mnist, when):
    """Ctrl-C signals the terminal's whole process group: the workers too."""
    sweep = tmp_path / "sweep"
    args = sweep_args(tiny_mnist, tmp_path, sweep, "steps=400", "batch_size=16,32", "hydra.launcher.n_jobs=2")
    proc = start(args, tmp_path)
    if when == "workers starting":
        wait_for(lambda: _loky_worker_started(proc.pid))
        time.sleep(0.3)  # importing joblib and torch
    else:
        wait_for(lambda: len(records(sweep)) >= 1)
    finished = records(sweep)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "interrupted: finished runs are kept; run the same command again to go on"], err[-3000:]
    assert "Traceback" not in out + err
    for name, rec in finished.items():
        assert records(sweep)[name] == rec
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(records(sweep)) == 12


@pytest.mark.slow
def test_sigterm_ends_as_ctrl_c_does_and_leaves_no_worker_behind(tmp_path, tiny_mnist):
    """`kill PID` (SIGTERM, to the sweep's process only, as a scheduler sends it): exit 143 with one line,
    the workers stop with it (no orphan holding a run's claim), and the same command goes on."""
    sweep = tmp_path / "sweep"
    args = sweep_args(tiny_mnist, tmp_path, sweep, "steps=400", "batch_size=16,32", "hydra.launcher.n_jobs=2")
    proc = start(args, tmp_path)
    wait_for(lambda: len(records(sweep)) >= 1)
    finished = records(sweep)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "terminated: finished runs are kept; run the same command again to go on"], err[-3000:]
    assert "Traceback" not in out + err
    wait_for(lambda: not _loky_worker_started(proc.pid))  # no worker left running in the sweep's group
    for name, rec in finished.items():
        assert records(sweep)[name] == rec
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(records(sweep)) == 12


@pytest.mark.slow
def test_two_identical_sweeps_started_together_train_each_run_once(tmp_path, tiny_mnist):
    """Default (timestamped) sweep dirs, one run index: a run in flight is claimed there."""
    common = ["-m"] + tiny_overrides(tiny_mnist) + ["force=false", f"run_index={tmp_path}/index", "batch_size=16",
                                                    "steps=800", "seed=0,1", "hydra.launcher.n_jobs=1",
                                                    "hydra.callbacks.summary.report=false"]
    procs = [start(common, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "outputs" / "multirun").rglob(RESULT_FILE)]
    assert len(recs) == 8  # 4 runs, in each sweep's dir
    trained = [r for r in recs if "reused_from" not in r]
    assert len(trained) == 4 and len({r["run_hash"] for r in trained}) == 4
    assert not list((tmp_path / "index").glob("*.claim"))
