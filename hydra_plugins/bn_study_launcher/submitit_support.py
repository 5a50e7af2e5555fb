"""The study's submitit launchers: `hydra/launcher=submitit_local | submitit_slurm | slurm`.

conf/hydra/launcher/submitit_local.yaml and submitit_slurm.yaml (the names
hydra-submitit-launcher registers; a config in conf/ comes first) select
these subclasses of hydra-submitit-launcher's launchers. Every key of the
upstream launchers applies; what they add:

- **Torch threads per task from the cores a task gets.** submitit_local
  starts every job of a launch at once, as processes on this machine, and
  ignores `cpus_per_task`; each task's torch took every core (2 tasks x 2
  threads on 2 cores). Each task now sets torch's threads (where the config
  leaves `threads` unset) to `cpus_per_task` when set, else to this
  machine's usable cores shared among the tasks started together
  (`threads_for`). Under SLURM a task counts its own cores
  (study.resources.usable_cores: SLURM_CPUS_PER_TASK, its affinity mask).
- **Logs under the sweep dir.** `submitit_folder: null` (the default) is
  `<sweep dir>/.submitit/%j`, joined in `launch` from the very sweep dir
  the launcher creates, never resolved a second time.

Imported by Hydra's plugin discovery on every start: without the slurm
extra (hydra-submitit-launcher) it defines nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as upstream
except ImportError:  # no slurm extra: hydra/launcher=submitit_* cannot compose (conf/hydra/launcher/)
    upstream = None

SUBMITIT_DIR = ".submitit/%j"  # under the sweep dir; %j: submitit's job id


class StudySubmititLauncher:
    """What the study adds to hydra-submitit-launcher's launchers (module
    docstring); mixed in before upstream's LocalLauncher or SlurmLauncher."""

    _EXECUTOR: str

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.folder_setting = self.params.get("submitit_folder")
        self.task_threads: Optional[int] = None  # set by `launch`, read by each task

    # ---------------------------------------------------------------- launching process
    def submitit_folder(self) -> str:
        """Where submitit writes its logs and pickles: `<sweep dir>/.submitit/%j`
        unless `submitit_folder` says otherwise."""
        if self.folder_setting:
            return str(self.folder_setting)
        return str(Path(str(self.config.hydra.sweep.dir)) / SUBMITIT_DIR)

    def tasks_at_once(self, n_jobs: int) -> int:
        return max(1, n_jobs) * max(1, int(self.params.get("tasks_per_node") or 1))

    def threads_for(self, n_jobs: int) -> Optional[int]:
        """Torch threads of each task when `n_jobs` jobs are launched together:
        submitit_local, `cpus_per_task` (at most the usable cores) or the usable
        cores shared among the tasks; SLURM, None (each task counts its own)."""
        from study.resources import usable_cores

        if self._EXECUTOR != "local":
            return None
        cores, cpus = usable_cores(), self.params.get("cpus_per_task")
        if cpus:
            return max(1, min(int(cpus), cores))
        return max(1, cores // self.tasks_at_once(n_jobs))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        self.params["submitit_folder"] = self.submitit_folder()
        self.task_threads = self.threads_for(len(job_overrides))
        log.info("torch threads per task: %s", self.task_threads or "the task's cores (SLURM_CPUS_PER_TASK)")
        return super().launch(job_overrides, initial_job_idx)

    # ---------------------------------------------------------------- the task's process
    def __call__(self, sweep_overrides: list[str], *args: Any) -> Any:
        """Run one job (a pack) in a submitit task, with the torch threads of its cores."""
        import torch

        from study.resources import usable_cores

        torch.set_num_threads(self.task_threads or usable_cores())  # the config's `threads` still wins
        return super().__call__(sweep_overrides, *args)


if upstream is not None:
    # Named as upstream's: the Optuna sweeper reads what the launcher runs at
    # once from the target's class name (bn_study_sweeper._impl.launcher_batch).
    class LocalLauncher(StudySubmititLauncher, upstream.LocalLauncher):
        _EXECUTOR = "local"

    class SlurmLauncher(StudySubmititLauncher, upstream.SlurmLauncher):
        _EXECUTOR = "slurm"

    @dataclass
    class StudyLocalConf(LocalQueueConf):
        _target_: str = "hydra_plugins.bn_study_launcher.submitit_support.LocalLauncher"
        submitit_folder: Optional[str] = None  # null: <sweep dir>/.submitit/%j

    @dataclass
    class StudySlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.bn_study_launcher.submitit_support.SlurmLauncher"
        submitit_folder: Optional[str] = None  # null: <sweep dir>/.submitit/%j

    # Outside hydra/launcher, so that they are not options of their own:
    # conf/hydra/launcher/submitit_local.yaml and submitit_slurm.yaml take them.
    ConfigStore.instance().store(group="bn_study/submitit", name="local", node=StudyLocalConf, provider="bn_study")
    ConfigStore.instance().store(group="bn_study/submitit", name="slurm", node=StudySlurmConf, provider="bn_study")
