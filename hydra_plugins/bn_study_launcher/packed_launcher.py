"""The `packed` launcher: the joblib launcher, plus packing and pre-validation.

Before anything runs it composes every job's config and checks its values
(study.config.validate; `device: cuda` and `compile: true` against this
machine), so a bad value anywhere in a sweep stops it before the first run
instead of after some. Then it groups the jobs whose resolved
configs differ only in `seed`, and in `lr` where the fused SGD step trains
them (study.packing.pack_key), into packs of at most `max_pack` runs.

A pack is one Hydra job, the job of its first member: the launcher puts
the pack on that job's config (a launch-only node, listed in
study.records.LAUNCH_ONLY_KEYS):

    pack:
      threads: 4      # torch threads where the config leaves `threads` unset
      members:        # the first is the job's own run
        - {seed: 0, lr: 0.01, dir: <its job dir>, overrides: [...]}

and the job trains the members as one vectorized model and writes each
member's record into that member's own job dir (study.runner.run_pack).
The other members' jobs are not run: the launcher gives each the Hydra job
dir files (.hydra/config.yaml, hydra.yaml, overrides.yaml) and the
`JobReturn` that Hydra's run_job would have (the objective read from its
record), so sweepers and callbacks see one job per run, as with any
launcher. Why one job per pack rather than per run: a pack's job depends
on no other job (no results handed from job to job, no order to keep, no
state shared in a process), so a pack could run wherever a Hydra job runs,
under another launcher too, while every run keeps its own dir and record.

`n_jobs: 1` runs the packs one after another in this process; more (the
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
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

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


def _job_dir(sweep_config: DictConfig) -> str:
    """The dir Hydra's run_job gives this job (hydra.sweep.dir / hydra.sweep.subdir)."""
    HydraConfig.instance().set_config(sweep_config)
    return os.path.abspath(os.path.join(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir)))


Job = tuple[int, list[str]]  # a job's number and overrides


def _run_pack(jobs: list[Job], hydra_context: HydraContext, config: DictConfig, task_function: TaskFunction,
              singleton_state: Any, threads: Optional[int]) -> list[JobReturn]:
    """Run a pack as the Hydra job of its first member; return every member's JobReturn."""
    setup_globals()
    Singleton.set_state(singleton_state)
    configs = [_job_config(hydra_context, config, overrides, idx) for idx, overrides in jobs]
    dirs = [_job_dir(c) for c in configs]
    first = configs[0]
    with open_dict(first):
        first.pack = {"threads": threads, "members": [
            {"seed": int(c.seed), "lr": float(c.lr), "dir": d, "overrides": list(overrides)}
            for c, d, (_, overrides) in zip(configs, dirs, jobs)]}
    HydraConfig.instance().set_config(first)
    from study.errors import UserExit

    try:
        ret = run_job(hydra_context=hydra_context, task_function=task_function, config=first,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    except UserExit as e:
        # Hydra's run_job hangs the failed JobReturn, which holds this very
        # exception, on an exception it lets through: sent back from a loky
        # worker, that cycle was pickled recursively for ~100 s before the
        # one-line error came out (measured). A fresh one carries the line only.
        raise UserExit(e.message) from None
    return [ret] + [_member_return(ret, c, d) for c, d in zip(configs[1:], dirs[1:])]


def _member_return(pack: JobReturn, sweep_config: DictConfig, out_dir: str) -> JobReturn:
    """What Hydra's run_job would return for a member that its pack's job
    trained: the pack's status, and the member's objective from its record.
    Its dir gets Hydra's job files, as a job dir does."""
    from study.records import RESULT_FILE, read_record
    from study.runner import objective  # loaded already: this process ran the pack

    with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
        sweep_config.hydra.runtime.output_dir = out_dir
    task_cfg, hydra_cfg = _task_config(sweep_config), OmegaConf.masked_copy(sweep_config, ["hydra"])
    ret = JobReturn(overrides=list(sweep_config.hydra.overrides.task), cfg=task_cfg, hydra_cfg=hydra_cfg,
                    working_dir=out_dir if sweep_config.hydra.job.chdir else pack.working_dir,
                    task_name=pack.task_name, status=pack.status)
    if pack.status is not JobStatus.COMPLETED:
        ret.return_value = pack._return_value  # the pack's error is every member's
        return ret
    ret.return_value = objective(read_record(Path(out_dir) / RESULT_FILE), task_cfg.objective)
    if sweep_config.hydra.output_subdir is not None:
        saved = Path(out_dir) / str(sweep_config.hydra.output_subdir)
        saved.mkdir(parents=True, exist_ok=True)
        for name, node in (("config.yaml", task_cfg), ("hydra.yaml", hydra_cfg),
                           ("overrides.yaml", sweep_config.hydra.overrides.task)):
            (saved / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
    return ret


def _check_torch(cfgs: Iterable[DictConfig]) -> None:
    """`device: cuda` where torch sees no CUDA device, and `compile: true`
    where torch.compile cannot build, are config errors before any run, like
    a bad value. This loads torch (seconds), so only when some job asks for
    cuda or compile: the launching process never trains."""
    asks = {}  # device -> whether a job on it compiles: one check per device
    for c in cfgs:
        if str(c.device) == "cuda" or c.compile:
            asks[str(c.device)] = asks.get(str(c.device), False) or bool(c.compile)
    if asks:
        from study.device import check_compile, resolve_device

        for device, compiled in sorted(asks.items()):
            check_compile(compiled, resolve_device(device))


def _steps(cfg: DictConfig) -> float:
    """Rough optimizer-step count of a job (as if it trained on all MNIST training images)."""
    from study.config import MNIST_TRAIN_IMAGES

    return cfg.steps if cfg.steps is not None else cfg.epochs * MNIST_TRAIN_IMAGES / cfg.batch_size


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
        from study.errors import ConfigError

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
        groups: dict[Any, list[Job]] = {}
        cfgs: dict[Any, DictConfig] = {}
        for i, overrides in enumerate(job_overrides):
            sweep_config = _job_config(self.hydra_context, self.config, overrides, initial_job_idx + i)
            task_cfg = _task_config(sweep_config)
            validate(task_cfg)
            # The preset is recorded with each run: a pack's members share it.
            key = ((pack_key(task_cfg), sweep_config.hydra.runtime.choices.get("experiment"))
                   if self.pack else initial_job_idx + i)
            groups.setdefault(key, []).append((initial_job_idx + i, list(overrides)))
            cfgs[key] = task_cfg
        _check_torch(cfgs.values())

        packs, costs = [], []
        for key, group in groups.items():
            n = -(-len(group) // self.max_pack)  # packs of near-equal size, none above max_pack
            for k in range(n):
                packs.append(group[k * len(group) // n:(k + 1) * len(group) // n])
                costs.append(_cost(cfgs[key], len(packs[-1])))
        # Costliest packs first: the workers take the next pack as they free
        # up, so that they finish together.
        packs = [p for _, p in sorted(zip(costs, packs), key=lambda cp: -cp[0])]

        n_workers = (os.cpu_count() or 1) if self.n_jobs == -1 else max(1, self.n_jobs)
        n_workers = min(n_workers, len(packs))
        log.info("Launching %d jobs as %d packs on %d worker%s", len(job_overrides), len(packs), n_workers,
                 "s" if n_workers > 1 else "")
        for pack in packs:
            for idx, overrides in pack:
                log.info("\t#%d : %s%s", idx, " ".join(filter_overrides(overrides)),
                         f"  [pack of {len(pack)}]" if len(pack) > 1 else "")

        singleton_state = Singleton.get_state()
        if n_workers == 1:
            runs = [_run_pack(p, self.hydra_context, self.config, self.task_function, singleton_state, None)
                    for p in packs]
        else:
            from joblib import Parallel, delayed

            threads = max(1, (os.cpu_count() or 1) // n_workers)
            runs = Parallel(n_jobs=n_workers, backend="loky")(
                delayed(_run_pack)(p, self.hydra_context, self.config, self.task_function, singleton_state, threads)
                for p in packs)
        by_idx = {idx: ret for pack, rets in zip(packs, runs) for (idx, _), ret in zip(pack, rets)}
        return [by_idx[initial_job_idx + i] for i in range(len(job_overrides))]
