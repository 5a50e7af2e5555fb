"""The `packed` launcher: the joblib launcher, plus packing and pre-validation.

Before anything runs it composes every job's config and checks its values
(study.config.validate), so a bad value anywhere in a sweep stops it before
the first run instead of after some. Then it groups the jobs whose resolved
configs differ only in `seed`, and in `lr` where the fused SGD step trains
them (study.packing.lr_packable: plain SGD, norm none or batch), and tells
study.runner about each group: the group's first job trains all of its runs
as one vectorized model (study.model.PackedMLP, a learning rate per run),
the others take their finished run from it. Every
job still goes through Hydra's `run_job`, so output dirs, saved configs,
logs, callbacks and return values are exactly those of any Hydra launcher.

`n_jobs: 1` runs the groups one after another in this process; more (the
default, -1, is one per core) runs them on joblib workers (loky processes),
each with cores / workers torch threads when the config leaves `threads`
unset. A run's numbers do not depend on its pack or launcher at a given
thread count (tests/test_cli.py compares them); the thread count, recorded
in each record's env, can change the last bits of float sums.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.bn_study_launcher.packed_launcher.PackedLauncher"
    # Worker processes; 1 = in this process, -1 = one per core (at most one
    # per pack). Workers cost a few seconds each to start (torch import).
    n_jobs: int = -1
    # Most runs trained as one model; larger groups are split into packs
    # of near-equal size.
    max_pack: int = 16
    # false: one run per job, as Hydra's basic launcher does.
    pack: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="packed", node=PackedLauncherConf,
                             provider="bn_study")


def _job_config(hydra_context: HydraContext, config: DictConfig, overrides: Sequence[str],
                idx: int) -> DictConfig:
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    return sweep_config


def _task_config(sweep_config: DictConfig) -> DictConfig:
    """The job's own config, without the `hydra` node."""
    return OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])


def _run_group(group: list[tuple[int, list[str]]], members: list[tuple[int, float]],
               hydra_context: HydraContext,
               config: DictConfig, task_function: TaskFunction, singleton_state: Any,
               threads: Optional[int]) -> list[JobReturn]:
    """Run one group's jobs in order; the first trains the pack (study.runner)."""
    from study import runner

    setup_globals()
    Singleton.set_state(singleton_state)
    if threads is not None:
        runner.set_default_threads(threads)
    results = []
    for idx, overrides in group:
        sweep_config = _job_config(hydra_context, config, overrides, idx)
        HydraConfig.instance().set_config(sweep_config)
        runner.plan_pack(_task_config(sweep_config), members)
        results.append(run_job(hydra_context=hydra_context, task_function=task_function,
                               config=sweep_config, job_dir_key="hydra.sweep.dir",
                               job_subdir_key="hydra.sweep.subdir"))
    return results


def _check_compile(cfgs: Iterable[DictConfig]) -> None:
    """`compile: true` where torch.compile cannot build is a config error
    before any run, like a bad value (this loads torch, so only then)."""
    compiled = {str(c.device): c for c in cfgs if c.compile}  # one check per device
    if compiled:
        from study.device import check_compile, resolve_device

        for cfg in compiled.values():
            check_compile(True, resolve_device(cfg.device))


def _steps(cfg: DictConfig) -> float:
    """Rough optimizer-step count of a job (60,000 MNIST training images)."""
    return cfg.steps if cfg.steps is not None else cfg.epochs * 60000 / cfg.batch_size


# A training step's fixed cost (kernel launches, Python) in training samples'
# worth of arithmetic: ~250 us a step vs ~6 us a sample on one thread here
# (study.bench). Only the order of the packs depends on it.
STEP_OVERHEAD_SAMPLES = 40


def _cost(cfg: DictConfig, runs: int) -> float:
    """Rough training cost of a pack of `runs` runs of `cfg`: steps x (per-step
    overhead + samples per step). Small batches cost in steps, large ones in
    samples; packs are started costliest first."""
    return _steps(cfg) * (STEP_OVERHEAD_SAMPLES + cfg.batch_size * runs)


class PackedLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, max_pack: int = 16, pack: bool = True) -> None:
        from study.config import ConfigError

        if max_pack < 1:
            raise ConfigError("hydra.launcher.max_pack", max_pack, "an integer >= 1")
        if n_jobs == 0 or n_jobs < -1:
            raise ConfigError("hydra.launcher.n_jobs", n_jobs, "-1 (one per core) or an integer >= 1")
        self.n_jobs, self.max_pack, self.pack = n_jobs, max_pack, pack
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from study.config import validate
        from study.packing import pack_key  # torch-free: this process never trains

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose,
                      execution_whitelist=self.hydra_context.execution_whitelist)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

        # Compose and check every job first: a bad value stops the sweep before any run.
        jobs, cfgs = [], {}
        for i, overrides in enumerate(job_overrides):
            task_cfg = _task_config(_job_config(self.hydra_context, self.config, overrides, initial_job_idx + i))
            validate(task_cfg)
            key = pack_key(task_cfg)
            member = (int(task_cfg.seed), float(task_cfg.lr))
            jobs.append((initial_job_idx + i, list(overrides), key, member))
            cfgs[key] = task_cfg
        _check_compile(cfgs.values())

        groups: dict[tuple[str, Optional[int]], list[tuple[int, list[str], tuple[int, float]]]] = {}
        for idx, overrides, key, member in jobs:
            groups.setdefault((key, None if self.pack else idx), []).append((idx, overrides, member))
        chunks, costs = [], []
        for (key, _), group in groups.items():
            n = -(-len(group) // self.max_pack)  # packs of near-equal size, none above max_pack
            for k in range(n):
                chunk = group[k * len(group) // n:(k + 1) * len(group) // n]
                chunks.append(([(i, o) for i, o, _ in chunk], [m for _, _, m in chunk]))
                costs.append(_cost(cfgs[key], len(chunk)))
        # Costliest packs first: the workers take the next pack as they free
        # up, so that they finish together.
        chunks = [c for _, c in sorted(zip(costs, chunks), key=lambda cc: -cc[0])]

        n_workers = (os.cpu_count() or 1) if self.n_jobs == -1 else max(1, self.n_jobs)
        n_workers = min(n_workers, len(chunks))
        log.info("Launching %d jobs as %d packs on %d worker%s", len(jobs), len(chunks), n_workers,
                 "s" if n_workers > 1 else "")
        for group, members in chunks:
            for idx, overrides in group:
                log.info("\t#%d : %s%s", idx, " ".join(filter_overrides(overrides)),
                         f"  [pack of {len(members)}]" if len(members) > 1 else "")

        singleton_state = Singleton.get_state()
        if n_workers == 1:
            runs = [_run_group(g, s, self.hydra_context, self.config, self.task_function,
                               singleton_state, None) for g, s in chunks]
        else:
            from joblib import Parallel, delayed

            threads = max(1, (os.cpu_count() or 1) // n_workers)
            runs = Parallel(n_jobs=n_workers, backend="loky")(
                delayed(_run_group)(g, s, self.hydra_context, self.config, self.task_function,
                                    singleton_state, threads)
                for g, s in chunks)
        by_idx = {idx: ret for (group, _), rets in zip(chunks, runs) for (idx, _), ret in zip(group, rets)}
        return [by_idx[idx] for idx, _, _, _ in jobs]
