"""The study's submitit launchers (hydra_plugins/bn_study_launcher/submitit_support.py):
torch threads per task from the cores a task gets, submitit's logs under the
sweep dir, a timed-out or preempted pack requeued with its finished runs
kept, and a dry run that prints the plan and submits nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import subprocess
import time

import pytest
from omegaconf import OmegaConf

from helpers import RUN, run_cli, tiny_overrides
from study.resources import usable_cores

pytestmark = pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                                reason="the slurm extra: uv sync --extra slurm (.ci/run installs it)")


def launcher(name: str, **params):
    """The launcher `hydra/launcher=<name>` instantiates, built here (no sweep)."""
    from hydra.utils import get_class

    from study.config import compose_config

    node = OmegaConf.to_container(compose_config([f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher)
    return get_class(node.pop("_target_"))(**(node | params))


def reuse_overrides(root, tmp_path):
    """Tiny data with reuse on (no force=true) and the test's own run index."""
    return [o for o in tiny_overrides(root) if not o.startswith(("force=", "run_index="))] + [
        f"run_index={tmp_path}/.run-index"]


def test_the_launchers_compose_with_requeue_and_the_trial_batches_they_had():
    from hydra_plugins.bn_study_sweeper.plan import launcher_batch
    from study.config import compose_config

    for name, cls in (("submitit_local", "LocalLauncher"), ("submitit_slurm", "SlurmLauncher"),
                      ("slurm", "SlurmLauncher")):
        node = compose_config([f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher
        assert node._target_ == f"hydra_plugins.bn_study_launcher.submitit_support.{cls}"
        assert node.max_num_timeout == 3 and node.submitit_folder is None and node.dry_run is False
    local = compose_config(["hydra/launcher=submitit_local"], return_hydra_config=True).hydra.launcher
    assert launcher_batch(local) == usable_cores()


def test_each_local_task_gets_its_share_of_the_cores_and_a_slurm_task_its_own():
    local, cores = launcher("submitit_local"), usable_cores()
    assert local.threads_for(1) == cores
    assert local.threads_for(2) == max(1, cores // 2)
    assert local.threads_for(4 * cores) == 1
    assert launcher("submitit_local", tasks_per_node=2).threads_for(1) == max(1, cores // 2)
    assert launcher("submitit_local", cpus_per_task=1).threads_for(8) == 1
    assert launcher("submitit_local", cpus_per_task=cores + 8).threads_for(1) == cores  # never above the usable cores
    assert launcher("submitit_slurm").threads_for(8) is None  # the task counts its cores (SLURM_CPUS_PER_TASK)


def test_submitits_folder_is_joined_to_the_sweep_dir_the_launcher_makes(tmp_path):
    local = launcher("submitit_local")
    local.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    assert local.submitit_folder() == str(tmp_path / "sweep" / ".submitit" / "%j")
    mine = launcher("submitit_local", submitit_folder=str(tmp_path / "logs" / "%j"))
    assert mine.submitit_folder() == str(tmp_path / "logs" / "%j")


def test_release_claims_frees_only_this_process_unfinished_dirs(tmp_path):
    from hydra_plugins.bn_study_launcher.submitit_support import release_claims
    from study.records import CLAIM_FILE, RESULT_FILE

    from study import claims

    dirs = {name: tmp_path / name for name in ("mine", "finished", "other")}
    for name, d in dirs.items():
        d.mkdir()
        held = dict(claims.owner(), pid=1) if name == "other" else claims.owner()  # as claim_dir writes them
        (d / CLAIM_FILE).write_text(json.dumps(held))
    (dirs["finished"] / RESULT_FILE).write_text("{}")
    assert release_claims([*dirs.values(), tmp_path / "never-claimed"]) == [dirs["mine"]]
    assert [n for n, d in dirs.items() if (d / CLAIM_FILE).exists()] == ["finished", "other"]


def test_a_requeued_pack_keeps_its_finished_runs_and_trains_the_rest(tmp_path, tiny_mnist):
    """A pack stopped (timeout, preemption) after writing two of its three
    records, one of them a finished run reused from an earlier sweep:
    submitit calls the launcher's checkpoint in the task, which releases the
    unfinished run's dir and resubmits the same call; the requeued job keeps
    the two records as they are and trains the third. Before, the requeued
    job refused its own dirs ("already holds a run")."""
    from submitit.helpers import DelayedSubmission

    from study.config import compose_config, validate
    from study.records import CLAIM_FILE, RESULT_FILE
    from study.runner import Member, run_pack

    cfg = compose_config([*reuse_overrides(tiny_mnist, tmp_path), "epochs=1"])
    validate(cfg)
    members = [Member(s, float(cfg.lr), tmp_path / f"run{s}") for s in (0, 1, 2)]
    (earlier,) = run_pack(cfg, [Member(0, float(cfg.lr), tmp_path / "earlier")])
    first = run_pack(cfg, members)
    assert first[0]["reused_from"] == str((tmp_path / "earlier" / RESULT_FILE).resolve())
    (members[2].dir / RESULT_FILE).unlink()  # the first try was stopped before this record
    pack = tmp_path / "pack.json"
    pack.write_text(json.dumps({"threads": None, "members": [
        {"seed": m.seed, "lr": m.lr, "dir": str(m.dir), "overrides": []} for m in members]}))

    local = launcher("submitit_local")
    args = ([f"+pack='{pack}'"], "hydra.sweep.dir", 0, "job_id_for_0", {})
    delayed = local.checkpoint(*args)  # in the task's process, on submitit's signal
    assert isinstance(delayed, DelayedSubmission) and delayed.function is local and delayed.args == args
    assert [(m.dir / CLAIM_FILE).exists() for m in members] == [True, True, False]

    again = run_pack(cfg, members)  # the requeued job
    assert again[:2] == first[:2] and "reused_from" not in again[1]  # kept as they were, not retrained
    assert first[2]["pack"]["seeds"] == [1, 2] and again[2]["pack"]["seeds"] == [2]  # trained alone...
    assert again[2]["final"] == first[2]["final"] and "reused_from" not in again[2]  # ...to the same numbers
    assert json.loads((members[2].dir / RESULT_FILE).read_text()) == again[2]


@pytest.mark.slow
def test_submitit_local_gives_each_task_its_share_of_the_cores_and_logs_under_the_sweep_dir(tmp_path, tiny_mnist):
    """The default grid under submitit_local: two tasks started together, each
    with the usable cores / 2 torch threads (recorded in env.threads; before,
    each took every core); submitit's logs in the sweep dir (the default,
    timestamped one), nowhere else."""
    over = [o for o in tiny_overrides(tiny_mnist) if o != "threads=1"]  # the launcher sets the threads
    proc = run_cli(["-m", *over, "epochs=1", "hydra/launcher=submitit_local", "hydra.callbacks.summary.report=false"],
                   cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    recs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))]
    assert len(recs) == 6 and all(r["status"] == "completed" for r in recs)
    assert len({r["env"]["process"] for r in recs}) == 2
    assert {r["env"]["threads"] for r in recs} == {max(1, usable_cores() // 2)}
    assert list(tmp_path.rglob(".submitit")) == [sweep / ".submitit"]
    assert len([p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]) == 2


@pytest.mark.slow
def test_a_preempted_submitit_task_is_requeued_and_its_pack_finishes(tmp_path, tiny_mnist):
    """submitit's preemption signal (USR2, what SLURM sends before a timeout)
    reaches the training task: the launcher's checkpoint releases the pack's
    dirs, submitit_local starts the job again, the new task trains the pack
    and the sweep ends with every record, exit 0."""
    sweep = tmp_path / "sweep"
    args = ["-m", *reuse_overrides(tiny_mnist, tmp_path), "model.norm=batch", "epochs=100",
            "hydra/launcher=submitit_local", "hydra.callbacks.summary.report=false", f"hydra.sweep.dir={sweep}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(RUN + args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(sweep.glob("0_*/.progress.json")):  # the pack is training
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        (first_dir,) = sweep.glob("0_*")
        task = int(json.loads((first_dir / ".claimed").read_text())["pid"])  # the training process
        os.kill(task, signal.SIGUSR2)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    recs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))]
    assert [r["status"] for r in recs] == ["completed"] * 3
    assert all(r["env"]["pid"] != task for r in recs)  # trained by the requeued task
    log = (first_dir / "run.log").read_text()
    assert "3 unfinished run dir(s) released" in log and "Requeued job" in log


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["submitit_local", "slurm"])
def test_a_dry_run_prints_the_packs_and_submits_nothing(tmp_path, tiny_mnist, launch):
    """hydra.launcher.dry_run=true: the planned jobs (one per pack) and their
    runs' dirs, exit 0; no sweep dir (nor the parents made for it), no
    submitit folder, nothing trained; for SLURM too, on a machine without SLURM."""
    sweep = tmp_path / "new" / "sweep"
    proc = run_cli(["-m", *tiny_overrides(tiny_mnist), "batch_size=32,64", f"hydra/launcher={launch}",
                    "hydra.launcher.dry_run=true", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    executor = "local" if launch == "submitit_local" else "slurm"
    lines = proc.stdout.splitlines()
    assert lines[0] == f"dry run: 4 submitit_{executor} jobs, 12 runs; nothing submitted"
    assert f"submitit folder: {sweep / '.submitit' / '%j'}" in lines
    jobs = [ln for ln in lines if ln.startswith("job #")]
    assert len(jobs) == 4 and all(": 3 runs [bs=" in ln for ln in jobs)
    dirs = [ln.strip().rpartition("/") for ln in lines if ln.startswith("    ")]
    assert {head for head, _, _ in dirs} == {str(sweep)}
    assert sorted(int(name.partition("_")[0]) for _, _, name in dirs) == list(range(12))
    assert sorted(name.partition("_")[2] for _, _, name in dirs) == sorted(
        f"batch_size={bs},data.val_size=200,model.norm={n},seed={s}"
        for bs in (32, 64) for n in ("none", "batch") for s in (0, 1, 2))
    assert "error" not in proc.stderr.lower()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("extra, line", [
    (["batch_size=0"], "error: batch_size=0 is not allowed: an integer >= 1"),
    (["experiment=tune"], "error: hydra.launcher.dry_run=true plans the packs of a grid sweep (hydra/sweeper=basic); "
                          "an Optuna sweep (BnOptunaSweeper) asks its trials as it goes"),
])
def test_a_dry_run_of_a_bad_launch_is_one_line_exit_2(tmp_path, tiny_mnist, extra, line):
    proc = run_cli(["-m", *tiny_overrides(tiny_mnist), *extra, "hydra/launcher=submitit_local",
                    "hydra.launcher.dry_run=true", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [line]
    assert "dry run" not in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["submitit_local", "slurm"])
def test_without_the_slurm_extra_a_submitit_launch_is_one_line_exit_2(tmp_path, tiny_mnist, launch):
    """hydra-submitit-launcher hidden from the process (as without `--extra
    slurm`): the launch stops in one line naming the fix, nothing written."""
    hide = ("import sys, runpy\n"
            "for m in ('hydra_plugins.hydra_submitit_launcher', 'hydra_plugins.hydra_submitit_launcher.config',\n"
            "          'hydra_plugins.hydra_submitit_launcher.submitit_launcher'):\n"
            "    sys.modules[m] = None\n"
            f"sys.argv = {[str(RUN[1]), '-m', *tiny_overrides(tiny_mnist), f'hydra/launcher={launch}']!r}\n"
            f"runpy.run_path({str(RUN[1])!r}, run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", hide], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        f"error: hydra/launcher={launch} needs hydra-submitit-launcher: uv sync --extra slurm"]  # as typed
    assert list(tmp_path.iterdir()) == []


def test_the_plugins_import_quietly_where_the_config_store_already_holds_their_entries():
    """A packed launcher's worker restores its parent's ConfigStore, then Hydra's plugin scan imports the
    plugin modules again: storing the same entries must not warn (it printed a Hydra15MigrationWarning
    into every sweep's log)."""
    code = (
        "import importlib, sys, warnings\n"
        "mods = ['hydra_plugins.bn_study_launcher.submitit_support',"
        " 'hydra_plugins.bn_study_launcher.packed_launcher', 'hydra_plugins.bn_study_sweeper.bn_optuna_sweeper']\n"
        "for m in mods: importlib.import_module(m)\n"
        "warnings.simplefilter('error')\n"
        "for m in mods: del sys.modules[m]\n"
        "for m in mods: importlib.import_module(m)\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok" and "Warning" not in done.stderr
