"""The study's grid sweeper (`hydra/sweeper=basic`, conf/hydra/sweeper/basic.yaml):
Hydra's basic sweeper, launching through packs.

Under the `packed` launcher nothing changes (it packs). Under any other
launcher (basic, joblib, submitit_local, submitit_slurm) the sweeper packs
before launching (packs.PackingLauncher): each pack is one job of that
launcher, so `hydra/launcher=submitit_slurm` trains the default grid as two
SLURM tasks of three runs each, and every run still gets its own dir and record.
"""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .packs import packing


class BnGridSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = packing(self.launcher, hydra_context, config)
