"""Scaling out: cores under taskset and SLURM, one GPU per worker, trial
batches that fit the launcher, and packs kept under the submitit launcher."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from helpers import REPO, run_cli, tiny_overrides
from hydra_plugins.bn_study_sweeper.plan import launcher_batch
from study.errors import ConfigError
from study.resources import usable_cores, worker_devices


@pytest.mark.skipif(shutil.which("taskset") is None or not hasattr(os, "sched_getaffinity"),
                    reason="needs taskset and sched_getaffinity")
def test_usable_cores_follow_taskset_not_the_machine():
    code = "import os; from study.resources import usable_cores; print(usable_cores(), os.cpu_count())"
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    usable, machine = map(int, out.stdout.split())
    assert usable == 1 and machine == os.cpu_count()


def test_usable_cores_take_slurms_cpu_count_when_set():
    mask = len(os.sched_getaffinity(0))
    assert usable_cores({}) == mask
    assert usable_cores({"SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "64"}) == 1
    assert usable_cores({"SLURM_CPUS_ON_NODE": "1"}) == 1
    assert usable_cores({"SLURM_CPUS_PER_TASK": str(mask + 8)}) == mask  # never above the affinity mask
    assert usable_cores({"SLURM_CPUS_PER_TASK": ""}) == mask


def test_each_worker_gets_its_own_gpu_only_with_several():
    assert worker_devices("cuda", 4, 2) == ["cuda:0", "cuda:1"]
    assert worker_devices("cuda", 2, 8) == ["cuda:0", "cuda:1"]  # at most one worker per GPU
    assert worker_devices("cuda", 1, 4) == [None] * 4
    assert worker_devices("cpu", 4, 3) == [None] * 3


def test_trial_batches_fit_the_launcher():
    def batch(**launcher):
        return launcher_batch(OmegaConf.create(launcher))

    assert batch(_target_="x.PackedLauncher", n_jobs=3) == 3
    assert batch(_target_="x.PackedLauncher", n_jobs=-1) == usable_cores()
    assert batch(_target_="hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                 array_parallelism=32) == 32
    assert batch(_target_="hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher") == usable_cores()
    assert batch(_target_="hydra._internal.core_plugins.basic_launcher.BasicLauncher") == 1


@pytest.mark.slow
def test_tf32_on_cpu_is_refused_in_one_line_as_the_fp32_it_computes(tmp_path, tiny_mnist):
    """On CPU torch computes a tf32 run exactly as fp32: one computation would be
    two cells. device=cpu is refused by the config check; device=auto, once it
    resolves to the CPU, before anything trains (here, where torch sees no CUDA)."""
    import torch

    from study.device import check_precision

    proc = run_cli([*tiny_overrides(tiny_mnist), "precision=tf32", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: precision=tf32 is not allowed: fp32 or bf16 with device=cpu (tf32 is CUDA tensor-core math; on "
        "CPU a tf32 run computes exactly what fp32 does: docs/scaling.md#precision)"]
    assert not (tmp_path / "run" / "result.json").exists()
    with pytest.raises(ConfigError, match=r"^precision=tf32 is not allowed: fp32 or bf16 here: the device is cpu"):
        check_precision("tf32", torch.device("cpu"))
    check_precision("tf32", torch.device("cuda"))  # a computation of its own there
    check_precision("bf16", torch.device("cpu"))
    if not torch.cuda.is_available():
        proc = run_cli([*tiny_overrides(tiny_mnist), "precision=tf32", "device=auto", "-m", "seed=0,1",
                        f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
            "error: precision=tf32 is not allowed: fp32 or bf16 here: the device is cpu (device=auto, no CUDA "
            "device); tf32 is CUDA tensor-core math; on CPU a tf32 run computes exactly what fp32 does "
            "(docs/scaling.md#precision)"]
        assert not list((tmp_path / "sweep").rglob("result.json"))


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="the slurm extra: uv sync --extra slurm (.ci/run installs it)")
def test_submitit_local_keeps_the_default_grids_packs_and_builds_the_report(tmp_path, tiny_mnist):
    """`hydra/launcher=submitit_local` with the default grid (norm none,batch x
    seeds 0,1,2): two submitit tasks of three runs each, every run in its own
    dir with its own record and Hydra job files, and the sweep's report."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *tiny_overrides(tiny_mnist), "epochs=1", "hydra/launcher=submitit_local",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/result.json"))]
    assert sorted((r["config"]["model"]["norm"], r["seed"]) for r in recs) == sorted(
        (n, s) for n in ("none", "batch") for s in (0, 1, 2))
    assert all(r["status"] == "completed" and r["pack"]["size"] == 3 and r["pack"]["seeds"] == [0, 1, 2]
               for r in recs)
    assert len({r["env"]["process"] for r in recs}) == 2  # one submitit task per pack
    assert len(list(sweep.glob("*/.hydra/config.yaml"))) == 6
    assert len([p for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]) == 2  # submitit job ids
    assert (sweep / "report" / "report.html").is_file()


def test_the_report_from_a_storage_alone_with_every_record_elsewhere(tmp_path, capsys, monkeypatch):
    """What a third machine sees: a study whose trials' and confirmation's
    records live on other machines (relative paths that resolve nowhere
    here). The report is built from the trial values and the study's
    attributes, includes the confirmation run, and the command warns once."""
    import optuna
    from optuna.distributions import FloatDistribution

    from analysis.__main__ import main as analysis_main
    from analysis.collect import collect

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    # What the bn_optuna sweeper stores (typed config; the cell and Hydra's fixed params as override strings).
    study.set_user_attr("fixed_config", {"batch_size": 32, "model.norm": "batch", "epochs": 1, "seed": 0,
                                         "model.hidden": [128, 64]})
    study.set_user_attr("cell", {"model.norm": "batch"})
    study.set_user_attr("objective", "val_acc")
    for n, (lr, val) in enumerate([(0.01, 0.80), (0.1, 0.90), (0.5, 0.85)]):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions={"lr": FloatDistribution(1e-3, 1.0, log=True)}, value=val,
            user_attrs={"record_path": f"sweep/{n}_lr={lr}/result.json", "status": "completed",
                        "batch_size": "32"}))
    study.set_user_attr("confirm", {"trial": 1, "params": {"lr": 0.1}, "seeds": [1], "n_completed": 1, "runs": [
        {"seed": 1, "record_path": "sweep/3_lr=0.1,seed=1/result.json", "status": "completed", "reused": False,
         "val_acc": 0.91, "test_acc": 0.89}]})
    monkeypatch.chdir(tmp_path)

    col = collect([url], "s")
    runs = col.runs.set_index("run")
    assert len(runs) == 4 and set(runs.status) == {"completed"}
    assert list(runs.val_acc) == [0.80, 0.90, 0.85, 0.91]
    confirm = runs.loc["s: confirm seed 1"]
    assert (confirm.lr, confirm.seed, confirm.test_acc, confirm.batch_size) == (0.1, 1, 0.89, 32)
    assert [p.kind for p in col.problems] == ["missing"] * 4

    assert analysis_main([url, "--study", "s", "--out", str(tmp_path / "report")]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("warning: 4 run records could not be read here (4 missing; first: ")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "3 Optuna trials have no run record" in md and "1 confirmation runs have no run record here" in md
    # With the records' root given, the same relative paths resolve (no record here: still missing, named there).
    assert analysis_main([url, "--study", "s", "--root", str(tmp_path / "copy"), "--out", str(tmp_path / "r2")]) == 0
    assert str(tmp_path / "copy" / "sweep" / "0_lr=0.01" / "result.json") in capsys.readouterr().err


def test_bf16_on_cpu_trains_under_autocast_and_is_recorded(tmp_path, tiny_mnist):
    """precision=bf16 on CPU: torch.autocast to bfloat16, with autograd (the
    fused step computes float32 only). Its numbers are its own (rounding),
    close to float32's; the record says which precision ran."""
    from study.config import compose_config, validate
    from study.spec import lr_packable
    from study.runner import run_job

    def run(name, *over):
        cfg = compose_config([*tiny_overrides(tiny_mnist), "epochs=2", "model.norm=batch", "batch_size=32", *over])
        validate(cfg)
        return cfg, run_job(cfg, tmp_path / name)

    bf16_cfg, bf16 = run("bf16", "precision=bf16")
    _, fp32 = run("fp32", "fused=false")  # the same autograd step, float32
    assert not lr_packable(bf16_cfg)  # bf16 never takes the fused step
    assert bf16["status"] == fp32["status"] == "completed"
    assert bf16["config"]["precision"] == "bf16" and fp32["config"]["precision"] == "fp32"
    a, b = bf16["final"]["train_loss"], fp32["final"]["train_loss"]
    assert a != b and abs(a - b) < 0.1 * b  # rounded differently, trained alike
    assert bf16["final"]["test_acc"] > 0.5
    import torch

    assert torch.get_float32_matmul_precision() == "highest"  # the process-wide setting restored


def test_a_bad_precision_is_one_line_exit_2(tmp_path, tiny_mnist):
    proc = run_cli([*tiny_overrides(tiny_mnist), "precision=fp16", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: precision=fp16 is not allowed: one of fp32, tf32, bf16"]


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="the slurm extra: uv sync --extra slurm (.ci/run installs it)")
def test_the_example_slurm_launcher_composes_with_submitit():
    from study.config import compose_config

    launcher = compose_config(["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("submitit_support.SlurmLauncher")  # hydra-submitit-launcher's, extended
    assert launcher.cpus_per_task == 4 and launcher_batch(launcher) == launcher.array_parallelism == 32


def test_a_stopped_heartbeat_fails_the_trial_and_asks_its_params_again(tmp_path):
    """The sweeper beats for its running trials (Heartbeat); when the beats
    stop for grace_period, the next sweep fails the trial, on any host, and
    Optuna's retry callback queues its params."""
    import time

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from hydra_plugins.bn_study_sweeper.beats import Heartbeat
    from hydra_plugins.bn_study_sweeper.liveness import fail_dead_trials
    from hydra_plugins.bn_study_sweeper.storage import ask, open_storage

    # A grace of 6 beats: a beat delayed by a loaded machine (CI runs beside other jobs) is not a death.
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=6)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = ask(study, {"lr": FloatDistribution(1e-3, 1.0, log=True)})
    with Heartbeat(storage, [trial]):
        time.sleep(7)  # beyond the grace period, but beating
        assert fail_dead_trials(storage, study) == 0
    time.sleep(9)  # the beats stopped: dead
    assert fail_dead_trials(storage, study) == 1
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[1].state == TrialState.WAITING and trials[1].system_attrs["failed_trial"] == 0
    assert trials[1].params == trials[0].params


def test_an_asked_trial_beats_before_its_owner_promises_beats(tmp_path):
    """A sweep killed right after asking a trial: the trial's owner (a sweep on another host, whose
    process cannot be looked up from here) promises heartbeats, so other hosts wait for it; it has
    had its first beat, so once that is grace_period old the next sweep fails it instead of waiting
    for ever (Optuna's stale-trial check skips a trial that never beat)."""
    import time
    from types import SimpleNamespace

    import optuna

    from hydra_plugins.bn_study_sweeper._impl import BnOptunaSweeperImpl
    from hydra_plugins.bn_study_sweeper.beats import BeatSettings
    from hydra_plugins.bn_study_sweeper.liveness import can_wait_for, fail_dead_trials
    from hydra_plugins.bn_study_sweeper.storage import open_storage, trial_id

    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    sweep = SimpleNamespace(storage=storage, beat=BeatSettings(interval=1, grace_period=2))
    trial = BnOptunaSweeperImpl._ask(sweep, study)  # the sweep's own ask, and then it died
    owner = study.get_trials()[0].user_attrs["sweep"]
    assert owner["heartbeat"] == 1
    storage.set_trial_user_attr(trial_id(storage, study, trial.number), "sweep", dict(owner, host="other-host"))
    assert can_wait_for(study.get_trials()[0], 1)  # another host's sweep waits for it...
    time.sleep(3)
    assert fail_dead_trials(storage, study) == 1  # ...until its beat is stale
    assert study.get_trials()[0].user_attrs["status"] == "stale"


def test_one_sweep_claims_the_confirmation_of_a_best_trial(tmp_path):
    import optuna

    from hydra_plugins.bn_study_sweeper.lock import claim_confirmation
    from hydra_plugins.bn_study_sweeper.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=None, grace_period=None)
    study = optuna.create_study(study_name="s", storage=storage)
    assert claim_confirmation(storage, study, 3, [1, 2]) is True
    assert claim_confirmation(storage, study, 3, [1, 2]) is False  # this sweep lives: its claim holds
    assert claim_confirmation(storage, study, 5, [1, 2]) is True  # a new best is confirmed once more
    # A claim of a dead sweep on this host is taken over.
    study.set_user_attr("confirm_claim:7:1", {"sweep": {"host": os.uname().nodename, "pid": 2 ** 22 + 1,
                                                         "start": "0"}})
    assert claim_confirmation(storage, study, 7, [1]) is True


def test_a_dead_sweeps_confirmation_claim_is_taken_over_by_exactly_one_sweep(tmp_path):
    """Sweeps waiting for a confirmation whose claim stopped beating take it
    over with a compare-and-set: the first wins, the others see it changed."""
    import json

    import optuna

    from hydra_plugins.bn_study_sweeper.lock import claim_confirmation, claim_key, claim_raw, compare_and_set
    from hydra_plugins.bn_study_sweeper.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=None, grace_period=None)
    study = optuna.create_study(study_name="s", storage=storage)
    assert claim_raw(storage, study, claim_key(3, [1, 2])) is None
    assert claim_confirmation(storage, study, 3, [1, 2], heartbeat_interval=5) is True
    seen = claim_raw(storage, study, claim_key(3, [1, 2]))
    assert json.loads(seen)["heartbeat"] == 5 and json.loads(seen)["beat"] == 0
    first, second = json.dumps({"sweep": "first"}), json.dumps({"sweep": "second"})
    assert compare_and_set(storage, study, claim_key(3, [1, 2]), seen, first) is True
    assert compare_and_set(storage, study, claim_key(3, [1, 2]), seen, second) is False
    assert study.user_attrs[claim_key(3, [1, 2])] == {"sweep": "first"}


def test_the_run_index_survives_moving_the_outputs_folder(tmp_path, tiny_mnist):
    """Index entries hold the record's path relative to the index: copied or
    mounted elsewhere, outputs/ (index and runs together) still reuses."""
    from study.config import compose_config
    from study.reuse import find_reusable
    from study.runner import Member, member_config, plain_config, run_job

    def cfg(outputs):
        base = [o for o in tiny_overrides(tiny_mnist) if not o.startswith(("force=", "run_index="))]
        return compose_config([*base, "epochs=1", f"run_index={outputs}/.run-index"])

    run_job(cfg(tmp_path / "outputs"), tmp_path / "outputs" / "runs" / "a")
    (entry,) = (tmp_path / "outputs" / ".run-index").glob("*.json")
    assert json.loads(entry.read_text())["record"] == "../runs/a/result.json"
    shutil.move(tmp_path / "outputs", tmp_path / "moved")
    moved = cfg(tmp_path / "moved")
    found = find_reusable(member_config(plain_config(moved), Member(0, float(moved.lr), tmp_path / "x")))
    assert found is not None and found[0] == tmp_path / "moved" / "runs" / "a" / "result.json"
