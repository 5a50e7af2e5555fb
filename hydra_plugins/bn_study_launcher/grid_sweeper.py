"""The study's grid sweeper (`hydra/sweeper=basic`, conf/hydra/sweeper/basic.yaml):
Hydra's basic sweeper, launching through packs.

Under the `packed` launcher nothing changes (it packs). Under any other
launcher (basic, joblib, submitit_local, submitit_slurm) the sweeper packs
before launching (packed_launcher.PackingLauncher): each pack is one job of that
launcher, so `hydra/launcher=submitit_slurm` trains the default grid as two
SLURM tasks of three runs each, and every run still gets its own dir and record.
"""

from __future__ import annotations

from typing import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .packed_launcher import packing


class BnGridSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.launcher = packing(self.launcher, hydra_context, config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Nothing to do here: every batch goes to `packing`'s launcher, which
        composes and checks each job of it in this process before any run
        (packs.plan_packs). Hydra's own check would compose every job once
        more: about 0.1 s a job, a quarter of a 144-job sweep's one-step
        runs (measured: docs/speed.md#start-up)."""
