"""The study's submitit launchers (`hydra/launcher=submitit_local | submitit_slurm
| slurm`): hydra-submitit-launcher's, plus torch threads per task, logs under
the sweep dir, requeue keeping finished runs, and a dry run
(docs/scaling.md#the-submitit-launchers). Hydra's plugin discovery imports
this module on every start; without the slurm extra its launchers stop a
launch in one line that says how to install it.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import filter_overrides
from omegaconf import DictConfig

from study import claims
from study.errors import UserError, needs_slurm_extra
from study.records import CLAIM_FILE, RESULT_FILE
from study.resources import usable_cores

from .packs import job_dir, plan_packs

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as upstream
except ImportError:  # no slurm extra: hydra/launcher=submitit_* cannot compose (conf/hydra/launcher/)
    upstream = None

SUBMITIT_DIR = ".submitit/%j"  # under the sweep dir; %j: submitit's job id
GRID_SWEEPER = "hydra_plugins.bn_study_launcher.grid_sweeper.BnGridSweeper"
OWN_KEYS = ("dry_run",)  # this module's keys; the others go to submitit


class DryRun(SystemExit):
    """Ends a dry run with exit status 0 once the plan is printed (nothing was
    submitted); study.sweep.callbacks.SweepSummary says nothing more for it."""

    dry_run = True

    def __init__(self) -> None:
        super().__init__(0)


def pack_file(overrides: Iterable[str]) -> Optional[Path]:
    """The pack file a job was given (`+pack=<file>`: packed_launcher.PackingLauncher), if any."""
    for text in overrides:
        if text.lstrip("+~").startswith("pack="):
            value = OverridesParser.create().parse_overrides([text])[0].value()
            return Path(str(value)) if isinstance(value, str) else None
    return None


def job_run_dirs(overrides: Sequence[str]) -> list[Path]:
    """The run dirs of the job now running in this process: its own and,
    for a pack, every member's."""
    dirs = []
    if HydraConfig.initialized():
        dirs.append(Path(str(HydraConfig.get().runtime.output_dir)))
    path = pack_file(overrides)
    if path is not None and path.is_file():
        dirs += [Path(m["dir"]) for m in json.loads(path.read_text())["members"]]
    return list(dict.fromkeys(d.resolve() for d in dirs))


def release_claims(dirs: Iterable[Path]) -> list[Path]:
    """Remove the claim (study.records.CLAIM_FILE) of each dir that this
    process claimed and left without a record: its training stops here, and
    the requeued job, maybe on another host, trains it again (a claim of a
    live process elsewhere would be refused: study/claims.py). A dir with a
    record keeps its claim (its run is finished and is kept), and so does a
    dir claimed by another process."""
    released = []
    for d in dirs:
        claim = Path(d) / CLAIM_FILE
        held = claims.read_claim(claim)
        if held and claims.is_mine(held) and not (Path(d) / RESULT_FILE).exists():
            claims.release(claim)
            released.append(Path(d))
    return released


def missing_top(path: Path) -> Optional[Path]:
    """The highest of `path` and its parents that does not exist yet, if any."""
    top = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        top = p
    return top


def _describe(configs: Sequence[DictConfig]) -> str:
    c = configs[0]
    seeds = ",".join(str(s) for s in sorted({int(x.seed) for x in configs}))
    lrs = ",".join(f"{v:g}" for v in sorted({float(x.lr) for x in configs}))
    model = c.get("model", {})
    norm = model.get("norm")
    return f"bs={c.batch_size} norm={getattr(norm, 'value', norm)} lr={lrs} seeds={seeds}"


class StudySubmititLauncher:
    """What the study adds to hydra-submitit-launcher's launchers (module
    docstring); mixed in before upstream's LocalLauncher or SlurmLauncher."""

    _EXECUTOR: str

    def __init__(self, **params: Any) -> None:
        own = {k: params.pop(k) for k in OWN_KEYS if k in params}
        super().__init__(**params)
        self.dry_run = bool(own.get("dry_run", False))
        self.folder_setting = self.params.get("submitit_folder")
        self.task_threads: Optional[int] = None  # set by `launch`, read by each task

    # ---------------------------------------------------------------- launching process
    def setup(self, **kwargs: Any) -> None:
        super().setup(**kwargs)
        sweeper = str(self.config.hydra.sweeper.get("_target_", ""))
        if self.dry_run and sweeper != GRID_SWEEPER:
            raise UserError(f"hydra.launcher.dry_run=true plans the packs of a grid sweep (hydra/sweeper=basic); "
                            f"an Optuna sweep ({sweeper.rpartition('.')[2]}) asks its trials as it goes")
        # The sweeper makes the sweep dir (and its missing parents) before it launches: a dry run removes them.
        self.made_for_dry_run = missing_top(Path(str(self.config.hydra.sweep.dir))) if self.dry_run else None

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
        if self._EXECUTOR != "local":
            return None
        cores, cpus = usable_cores(), self.params.get("cpus_per_task")
        if cpus:
            return max(1, min(int(cpus), cores))
        return max(1, cores // self.tasks_at_once(n_jobs))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        if self.dry_run:  # reached without packed_launcher.PackingLauncher (which shows the plan first): the jobs as they are
            self.show_plan(plan_packs(self.hydra_context, self.config, job_overrides, initial_job_idx, 1, False))
        self.params["submitit_folder"] = self.submitit_folder()
        self.task_threads = self.threads_for(len(job_overrides))
        log.info("torch threads per task: %s", self.task_threads or "the task's cores (SLURM_CPUS_PER_TASK)")
        return super().launch(job_overrides, initial_job_idx)

    def show_plan(self, planned: Sequence[tuple[Sequence[tuple[int, Sequence[str]]], Sequence[DictConfig]]]) -> None:
        """Print the jobs that `launch` would submit (one per pack), then end the
        sweep (DryRun, exit status 0): nothing submitted, nothing trained."""
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        threads = self.threads_for(len(planned))
        params = {k: v for k, v in self.params.items() if v not in (None, [], {}) and k != "submitit_folder"}
        runs = sum(len(p) for p, _ in planned)
        out = [f"dry run: {len(planned)} submitit_{self._EXECUTOR} jobs, {runs} runs; nothing submitted",
               f"sweep dir: {sweep_dir}",
               f"submitit folder: {Path(self.submitit_folder()).resolve()}",
               "submitit: " + " ".join(f"{k}={v}" for k, v in sorted(params.items())),
               "torch threads per task: " + (str(threads) if threads is not None else
                                            "the task's cores (SLURM_CPUS_PER_TASK, its affinity mask)")
               + " (unless the config sets `threads`)"]
        for jobs, configs in planned:
            dirs = [job_dir(c) for c in configs]
            out.append(f"job #{jobs[0][0]}: {len(jobs)} run{'s' if len(jobs) > 1 else ''} [{_describe(configs)}]: "
                       + " ".join(filter_overrides(jobs[0][1])))
            out += [f"    {d}" for d in dirs]
        print("\n".join(out), flush=True)
        made = getattr(self, "made_for_dry_run", None)
        if made is not None and made.is_dir() and all(p.is_dir() or p == sweep_dir / "multirun.yaml"
                                                      for p in made.resolve().rglob("*")):
            shutil.rmtree(made, ignore_errors=True)  # what Hydra's sweeper made for this launch only
        raise DryRun()

    # ---------------------------------------------------------------- the task's process
    def __call__(self, sweep_overrides: list[str], *args: Any) -> Any:
        """Run one job (a pack) in a submitit task, with the torch threads of its cores."""
        import torch  # in the task only: Hydra's plugin discovery imports this module in every process

        torch.set_num_threads(self.task_threads or usable_cores())  # the config's `threads` still wins
        return super().__call__(sweep_overrides, *args)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit in the task's process when the task is timed out
        or preempted, before it requeues the job: release what this task
        claimed and did not finish; the job is submitted again as it was."""
        released = release_claims(job_run_dirs(args[0] if args else kwargs.get("sweep_overrides", [])))
        log.warning("stopped by a timeout or preemption: %d unfinished run dir(s) released; "
                    "the job is requeued, keeping its finished runs", len(released))
        return super().checkpoint(*args, **kwargs)


if upstream is not None:
    # Named as upstream's: the Optuna sweeper reads what the launcher runs at
    # once from the target's class name (bn_study_sweeper.plan.launcher_batch).
    class LocalLauncher(StudySubmititLauncher, upstream.LocalLauncher):
        _EXECUTOR = "local"

    class SlurmLauncher(StudySubmititLauncher, upstream.SlurmLauncher):
        _EXECUTOR = "slurm"

    @dataclass
    class StudyLocalConf(LocalQueueConf):
        _target_: str = "hydra_plugins.bn_study_launcher.submitit_support.LocalLauncher"
        submitit_folder: Optional[str] = None  # null: <sweep dir>/.submitit/%j
        max_num_timeout: int = 3  # requeues after a timeout (submitit_local's own default)
        dry_run: bool = False

    @dataclass
    class StudySlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.bn_study_launcher.submitit_support.SlurmLauncher"
        submitit_folder: Optional[str] = None  # null: <sweep dir>/.submitit/%j
        max_num_timeout: int = 3  # upstream's 0 lost a timed-out pack; its finished runs are kept (checkpoint)
        dry_run: bool = False

else:
    from hydra.plugins.launcher import Launcher

    class _NeedsSlurmExtra(Launcher):
        """hydra/launcher=submitit_* without hydra-submitit-launcher installed."""

        _EXECUTOR: str

        def __init__(self, **_params: Any) -> None:
            self.refuse()

        def refuse(self) -> None:
            raise UserError(needs_slurm_extra(f"submitit_{self._EXECUTOR}"))

        def setup(self, **_kwargs: Any) -> None:
            self.refuse()

        def launch(self, *_args: Any, **_kwargs: Any) -> Any:
            self.refuse()

    class LocalLauncher(_NeedsSlurmExtra):
        _EXECUTOR = "local"

    class SlurmLauncher(_NeedsSlurmExtra):
        _EXECUTOR = "slurm"

    StudyLocalConf = {"_target_": "hydra_plugins.bn_study_launcher.submitit_support.LocalLauncher"}
    StudySlurmConf = {"_target_": "hydra_plugins.bn_study_launcher.submitit_support.SlurmLauncher"}

# Outside hydra/launcher, so that they are not options of their own:
# conf/hydra/launcher/submitit_local.yaml and submitit_slurm.yaml take them. replace=True: a packed
# launcher's worker restores its parent's ConfigStore (Singleton.set_state), which holds these entries,
# before the plugin scan imports this module again; the default warns (Hydra15MigrationWarning) in
# every sweep's log about an entry that is the same node.
ConfigStore.instance().store(group="bn_study/submitit", name="local", node=StudyLocalConf, provider="bn_study",
                             replace=True)
ConfigStore.instance().store(group="bn_study/submitit", name="slurm", node=StudySlurmConf, provider="bn_study",
                             replace=True)
