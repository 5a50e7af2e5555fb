"""`hydra/sweeper=bn_optuna`: the config schema, hydra-optuna-sweeper's with the
study's defaults and keys (docs/tuning.md: The sweeper's keys), and the plugin class."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import Direction, OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig


@dataclass
class MedianPrunerConf:
    """optuna.pruners.MedianPruner; steps are epochs (the runner reports after each)."""

    _target_: str = "optuna.pruners.MedianPruner"
    # No pruning in a study until this many of its trials have completed.
    n_startup_trials: int = 3
    # No pruning before epoch 2: at a high lr the first epoch says little.
    n_warmup_steps: int = 2
    interval_steps: int = 1


@dataclass
class BnOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.bn_study_sweeper.bn_optuna_sweeper.BnOptunaSweeper"
    # The plugin's sampler group (tpe by default), then this config: seed 0 on
    # whichever sampler is picked. Each study's sampler is seeded from this
    # seed, the study name and its trial count, so that a resumed study does
    # not repeat the suggestions it got before the interruption.
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, "_self_"])
    sampler: Any = field(default_factory=lambda: {"seed": 0})
    # The objective is validation accuracy (study/run.py): higher is better.
    direction: Any = Direction.maximize
    # Any SQLAlchemy URL; a relative SQLite path is under the current dir and
    # its folder is made. `timeout`: seconds a writer waits for SQLite's lock
    # (parallel jobs report at the same time); added to SQLite URLs without it.
    storage: Any = "sqlite:///outputs/optuna/studies.db?timeout=60"
    # null: `tune-<tuned keys>__<cell and fixed overrides>`, stable across
    # reruns; a given name is used as is, plus `__<cell>` per cell.
    study_name: Optional[str] = None
    n_trials: int = 20  # per study (cell); counted trials, so a rerun tops up
    # Trials per ask/tell batch; null: what the launcher runs at once (its n_jobs,
    # submitit_slurm's array_parallelism, the usable cores for submitit_local).
    n_jobs: Optional[int] = None
    max_failure_rate: float = 1.0
    params: Optional[dict[str, str]] = field(
        default_factory=lambda: {"lr": "tag(log, interval(1e-3, 1.0))"})
    # null: no pruning (jobs then report nothing to their trial).
    pruner: Any = field(default_factory=MedianPrunerConf)
    # true: simple comma lists (`batch_size=8,64`) are cells, one study each;
    # false: they are categorical search dimensions of one study (the plugin's way).
    cells: bool = True
    # Seeds the best trial of each study is rerun with (empty: no reruns).
    # Fresh seeds: the tuning seed (`seed`, default 0) picked the best lr, so
    # its own run is biased upward (the winner's curse).
    confirm_seeds: List[int] = field(default_factory=lambda: [1, 2, 3])
    # Optuna's heartbeat (seconds): while a batch runs the sweep beats for its
    # trials; a trial whose sweep stopped beating for `grace_period` (null:
    # twice the interval) died, on any host: the next sweep on the study fails
    # it and asks its params again; a sweep with nothing left to ask waits for
    # that. null: no heartbeat (dead sweeps are then found on their own host
    # only, and a sweep does not wait for another host's trials: it exits 3).
    heartbeat_interval: Optional[int] = 60
    grace_period: Optional[int] = None
    # Record paths stored in the study are relative to this dir (null: the
    # dir the sweep starts in), so that another machine with its own copy of
    # the results reads them (`python -m analysis URL --study NAME --root DIR`).
    results_root: Optional[str] = None


ConfigStore.instance().store(group="hydra/sweeper", name="bn_optuna", node=BnOptunaSweeperConf,
                             provider="bn_study", replace=True)  # the same node again in a worker (submitit_support.py)


class BnOptunaSweeper(OptunaSweeper):
    """The plugin's `OptunaSweeper` with the study's extensions (see `_impl`)."""

    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: Optional[str],
                 n_trials: int, n_jobs: Optional[int], max_failure_rate: float,
                 custom_search_space: Optional[str], params: Optional[DictConfig], pruner: Any,
                 cells: bool, confirm_seeds: List[int], heartbeat_interval: Optional[int] = 60,
                 grace_period: Optional[int] = None, results_root: Optional[str] = None) -> None:
        # The plugin checks its arguments and instantiates the sampler; the
        # study's sweep logic then takes the place of the plugin's.
        super().__init__(sampler, direction, storage, study_name, n_trials, n_jobs or 1,
                         max_failure_rate, custom_search_space, params)
        # Imported here, as the plugin does: Hydra imports every plugin module at start-up, and _impl
        # (optuna, SQLAlchemy, the study's modules) took 0.9-1.3 s more to import on the 2-core
        # development machine (4.7-5.5 s at a load average of 15), which every plain run would pay.
        from ._impl import BnOptunaSweeperImpl

        self.sweeper = BnOptunaSweeperImpl(
            sampler_conf=sampler, direction=direction, storage=storage, study_name=study_name,
            n_trials=n_trials, n_jobs=n_jobs, max_failure_rate=max_failure_rate,
            custom_search_space=custom_search_space, params=params, pruner=pruner, cells=cells,
            confirm_seeds=list(confirm_seeds), heartbeat_interval=heartbeat_interval,
            grace_period=grace_period, results_root=results_root)
