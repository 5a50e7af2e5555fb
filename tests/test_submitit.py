"""The study's submitit launchers (hydra_plugins/bn_study_launcher/submitit_support.py):
torch threads per task from the cores a task gets, submitit's logs under the
sweep dir, a timed-out or preempted pack requeued with its finished runs
kept,."""

from __future__ import annotations

import importlib.util
import json

import pytest
from omegaconf import OmegaConf

from helpers import tiny_overrides
from study.resources import usable_cores
from test_cli import run_cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                                reason="the slurm extra: uv sync --extra slurm (.ci/run installs it)")


def launcher(name: str, **params):
    """The launcher `hydra/launcher=<name>` instantiates, built here (no sweep)."""
    from hydra.utils import get_class

    from study.config import compose_config

    node = OmegaConf.to_container(compose_config([f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher)
    return get_class(node.pop("_target_"))(**(node | params))


def test_the_launchers_compose_with_requeue_and_the_trial_batches_they_had():
    from hydra_plugins.bn_study_sweeper._impl import launcher_batch
    from study.config import compose_config

    for name, cls in (("submitit_local", "LocalLauncher"), ("submitit_slurm", "SlurmLauncher"),
                      ("slurm", "SlurmLauncher")):
        node = compose_config([f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher
        assert node._target_ == f"hydra_plugins.bn_study_launcher.submitit_support.{cls}"
        assert node.submitit_folder is None
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
