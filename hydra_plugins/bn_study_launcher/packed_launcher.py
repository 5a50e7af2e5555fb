"""The launchers that train a sweep's packs (packs.py plans them): `packed`
(`hydra/launcher=packed`, the default), the joblib launcher that runs each
pack as one Hydra job, and `PackingLauncher`, which the sweepers put in
front of any other launcher (`packing`). docs/sweeps.md#packing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
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

from study.errors import ConfigError, UserError, UserExit
from study.records import write_json_atomic
from study.resources import usable_cores, worker_devices

from .packs import DEFAULT_MAX_PACK, Job, job_dir, job_subdir, member_return, pack_members, plan_packs

log = logging.getLogger(__name__)

PACKS_DIR = ".packs"  # under the sweep dir: one file per pack that PackingLauncher launches


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
                             provider="bn_study", replace=True)  # the same node again in a worker (submitit_support.py)


WATCH_THREAD = "watch-sweep"


def _exit_with_the_sweep() -> None:
    """In a loky worker: exit as soon as the sweep that started it is gone. loky keeps its workers
    for reuse, and a sweep killed with SIGKILL (the OOM killer, `kill -9`) left them training its
    packs and then idle, about 0.8 GB each, for as long as anyone let them (measured: 9 minutes and
    on). Its finished runs' records are written already; a rerun finds their claims dead."""
    if any(t.name == WATCH_THREAD for t in threading.enumerate()):  # started by an earlier pack here
        return
    sweep = os.getppid()

    def watch() -> None:
        while os.getppid() == sweep:
            time.sleep(1.0)
        log.warning("the sweep (pid %d) is gone: this worker (pid %d) stops", sweep, os.getpid())
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name=WATCH_THREAD).start()


def _run_pack(jobs: list[Job], configs: list[DictConfig], hydra_context: HydraContext, task_function: TaskFunction,
              singleton_state: Any, threads: Optional[int], device: Optional[str] = None) -> list[JobReturn]:
    """Run a pack as the Hydra job of its first member; return every member's JobReturn.
    `configs`: each member's composed sweep config (plan_packs composed them);
    `device`: this worker's GPU (`cuda:N`), where the workers share several;
    `threads`: set in a worker process (None: in the sweep's own)."""
    if threads is not None:
        _exit_with_the_sweep()
    setup_globals()
    Singleton.set_state(singleton_state)
    dirs = [job_dir(c) for c in configs]
    first = configs[0]
    with open_dict(first):
        first.pack = {"threads": threads, "members": pack_members(configs, dirs, jobs)}
        if device is not None:
            first.pack.device = device
    HydraConfig.instance().set_config(first)
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
            from joblib import Parallel, delayed  # ~1 s to import: only where workers start

            threads = max(1, cores // n_workers)
            lanes = Parallel(n_jobs=n_workers, backend="loky")(
                delayed(_run_lane)(work[w::n_workers], self.hydra_context, self.task_function,
                                   singleton_state, threads, devices[w]) for w in range(n_workers))
            runs = [None] * len(packs)
            for w, lane in enumerate(lanes):
                runs[w::n_workers] = lane
        else:
            from joblib import Parallel, delayed  # ~1 s to import: only where workers start

            threads = max(1, cores // n_workers)
            runs = Parallel(n_jobs=n_workers, backend="loky")(
                delayed(_run_pack)(p, c, self.hydra_context, self.task_function, singleton_state, threads)
                for p, c in work)
        by_idx = {idx: ret for pack, rets in zip(packs, runs) for (idx, _), ret in zip(pack, rets)}
        return [by_idx[initial_job_idx + i] for i in range(len(job_overrides))]


def _quote(value: str) -> str:
    """A value Hydra's override parser reads back verbatim (a path, a subdir with `=` and `,`)."""
    for q in ("'", '"'):
        if q not in value and "\\" not in value and "${" not in value:
            return f"{q}{value}{q}"
    raise UserError(f"cannot pass {value!r} to a pack's job as an override (quotes, a backslash or '${{')")


class PackingLauncher:
    """The sweeper's packing in front of a launcher that does not pack.

    `launch` has the launcher's signature and result (one JobReturn per
    job, in order); each pack is one job of the launcher underneath.
    """

    def __init__(self, launcher: Any, hydra_context: HydraContext, config: DictConfig,
                 max_pack: int = DEFAULT_MAX_PACK) -> None:
        self.launcher, self.hydra_context, self.config, self.max_pack = launcher, hydra_context, config, max_pack

    def __getattr__(self, name: str) -> Any:  # everything else is the launcher's
        return getattr(self.launcher, name)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        planned = plan_packs(self.hydra_context, self.config, job_overrides, initial_job_idx, self.max_pack, True)
        if getattr(self.launcher, "dry_run", False):  # submitit_support.py: print the plan, submit nothing
            self.launcher.show_plan(planned)
        if all(len(p) == 1 for p, _ in planned):  # nothing to pack: the jobs as they came
            return self.launcher.launch(job_overrides, initial_job_idx)
        pack_dir = Path(str(self.config.hydra.sweep.dir)) / PACKS_DIR
        pack_dir.mkdir(parents=True, exist_ok=True)
        launched, member_dirs = [], []
        for p, configs in planned:
            subdirs = [job_subdir(c) for c in configs]
            dirs = [job_dir(c) for c in configs]
            overrides = list(p[0][1]) + [f"hydra.sweep.subdir={_quote(subdirs[0])}"]
            if len(p) > 1:
                path = pack_dir / f"{p[0][0]}.json"
                write_json_atomic(path, {"threads": None, "members": pack_members(configs, dirs, p)})
                overrides.append(f"+pack={_quote(str(path.resolve()))}")
            launched.append(overrides)
            member_dirs.append(dirs)
            log.info("\t#%d : %s%s", p[0][0], " ".join(p[0][1]), f"  [pack of {len(p)}]" if len(p) > 1 else "")
        returns = self.launcher.launch(launched, initial_job_idx)
        by_idx: dict[int, JobReturn] = {}
        for (p, configs), ret, dirs in zip(planned, returns, member_dirs):
            by_idx[p[0][0]] = ret
            for (idx, _), c, d in zip(p[1:], configs[1:], dirs[1:]):
                by_idx[idx] = member_return(ret, c, d)
        return [by_idx[initial_job_idx + i] for i in range(len(job_overrides))]


def packing(launcher: Any, hydra_context: HydraContext, config: DictConfig) -> Any:
    """The launcher a sweeper launches through: the `packed` launcher packs
    itself; any other gets PackingLauncher in front of it."""
    if isinstance(launcher, (PackedLauncher, PackingLauncher)):
        return launcher
    return PackingLauncher(launcher, hydra_context, config)
