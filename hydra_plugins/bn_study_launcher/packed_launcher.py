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
default, -1, is one per usable core: study.resources) runs them on joblib workers (loky processes),
each with cores / workers torch threads when the config leaves `threads`
unset. A run's numbers do not depend on its pack or launcher at a given
thread count (tests/test_cli.py compares them); the thread count, recorded
in each record's env, can change the last bits of float sums.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from .packs import DEFAULT_MAX_PACK, Job, job_dir, member_return, pack_members, plan_packs

log = logging.getLogger(__name__)


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.bn_study_launcher.packed_launcher.PackedLauncher"
    # Worker processes; 1 = in this process, -1 = one per usable core (at most one
    # per pack). Workers cost a few seconds each to start (torch import).
    n_jobs: int = -1
    # Most runs trained as one model; larger groups are split into packs
    # of near-equal size.
    max_pack: int = DEFAULT_MAX_PACK
    # false: one run per job, as Hydra's basic launcher does.
    pack: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="packed", node=PackedLauncherConf,
                             provider="bn_study")


def _run_pack(jobs: list[Job], configs: list[DictConfig], hydra_context: HydraContext, task_function: TaskFunction,
              singleton_state: Any, threads: Optional[int], device: Optional[str] = None) -> list[JobReturn]:
    """Run a pack as the Hydra job of its first member; return every member's JobReturn.
    `configs`: each member's composed sweep config (plan_packs composed them);
    `device`: this worker's GPU (`cuda:N`), where the workers share several."""
    setup_globals()
    Singleton.set_state(singleton_state)
    dirs = [job_dir(c) for c in configs]
    first = configs[0]
    with open_dict(first):
        first.pack = {"threads": threads, "members": pack_members(configs, dirs, jobs)}
        if device is not None:
            first.pack.device = device
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
    return [ret] + [member_return(ret, c, d) for c, d in zip(configs[1:], dirs[1:])]


def _run_lane(lane: list[tuple[list[Job], list[DictConfig]]], hydra_context: HydraContext,
              task_function: TaskFunction, singleton_state: Any, threads: Optional[int],
              device: str) -> list[list[JobReturn]]:
    """One worker's packs (each with its members' configs), one after another, on its own GPU."""
    return [_run_pack(p, c, hydra_context, task_function, singleton_state, threads, device) for p, c in lane]


def _gpu_count() -> int:
    import torch  # loaded already by the cuda check (packs.check_torch)

    return torch.cuda.device_count()


class PackedLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, max_pack: int = DEFAULT_MAX_PACK, pack: bool = True) -> None:
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
        from study.resources import usable_cores, worker_devices

        setup_globals()
        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose,
                      execution_whitelist=self.hydra_context.execution_whitelist)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

        # Compose and check every job first: a bad value stops the sweep before any run. Each pack
        # comes with its members' composed configs: the workers do not compose them again.
        work = plan_packs(self.hydra_context, self.config, job_overrides, initial_job_idx, self.max_pack, self.pack)
        packs = [p for p, _ in work]
        cores = usable_cores()  # the affinity mask and SLURM's CPU count, not the machine's cores
        n_workers = cores if self.n_jobs == -1 else max(1, self.n_jobs)
        n_workers = min(n_workers, len(packs))
        cuda = any(str(configs[0].device) == "cuda" for _, configs in work)  # torch is loaded then (packs.check_torch)
        devices = worker_devices("cuda", _gpu_count(), n_workers) if cuda else [None]
        if devices[0] is not None:
            n_workers = len(devices)  # one worker per GPU
        log.info("Launching %d jobs as %d packs on %d worker%s", len(job_overrides), len(packs), n_workers,
                 "s" if n_workers > 1 else "")
        for pack in packs:
            for idx, overrides in pack:
                log.info("\t#%d : %s%s", idx, " ".join(filter_overrides(overrides)),
                         f"  [pack of {len(pack)}]" if len(pack) > 1 else "")

        singleton_state = Singleton.get_state()
        if n_workers == 1:
            runs = [_run_pack(p, c, self.hydra_context, self.task_function, singleton_state, None) for p, c in work]
        elif devices[0] is not None:
            # Several GPUs: worker w trains its lane, packs w, w + n, ..., on cuda:w (recorded in env.device).
            from joblib import Parallel, delayed

            threads = max(1, cores // n_workers)
            lanes = Parallel(n_jobs=n_workers, backend="loky")(
                delayed(_run_lane)(work[w::n_workers], self.hydra_context, self.task_function,
                                   singleton_state, threads, devices[w]) for w in range(n_workers))
            runs = [None] * len(packs)
            for w, lane in enumerate(lanes):
                runs[w::n_workers] = lane
        else:
            from joblib import Parallel, delayed

            threads = max(1, cores // n_workers)
            runs = Parallel(n_jobs=n_workers, backend="loky")(
                delayed(_run_pack)(p, c, self.hydra_context, self.task_function, singleton_state, threads)
                for p, c in work)
        by_idx = {idx: ret for pack, rets in zip(packs, runs) for (idx, _), ret in zip(pack, rets)}
        return [by_idx[initial_job_idx + i] for i in range(len(job_overrides))]
