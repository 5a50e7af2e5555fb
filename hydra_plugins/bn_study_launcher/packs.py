"""The plan of a sweep's packs: which jobs train together (`pack_key`), every
job's config composed and checked before any runs (`plan_packs`), and what a
member that its pack's job trained returns (`member_return`). The launchers
that run a plan are in packed_launcher.py (docs/sweeps.md#packing).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from study.config import validate
from study.records import RESULT_FILE, objective, read_record
from study.reuse import record_in_dir
from study.spec import lr_packable, optimizer_steps
from study.sweep import progress
from study.sweep.workload import STEP_OVERHEAD_SAMPLES

log = logging.getLogger(__name__)

Job = tuple[int, list[str]]  # a job's number and overrides
DEFAULT_MAX_PACK = 16  # the packed launcher's default (PackedLauncherConf.max_pack), used by PackingLauncher too


def job_config(hydra_context: HydraContext, config: DictConfig, overrides: Sequence[str],
               idx: int) -> DictConfig:
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    return sweep_config


def task_config(sweep_config: DictConfig) -> DictConfig:
    """The job's own config, without the `hydra` node."""
    return OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])


def job_subdir(sweep_config: DictConfig) -> str:
    """hydra.sweep.subdir of this job, resolved (Hydra's run_job resolves it the same way)."""
    HydraConfig.instance().set_config(sweep_config)
    return str(sweep_config.hydra.sweep.subdir)


def job_dir(sweep_config: DictConfig) -> str:
    """The dir Hydra's run_job gives this job (hydra.sweep.dir / hydra.sweep.subdir)."""
    return os.path.abspath(os.path.join(str(sweep_config.hydra.sweep.dir), job_subdir(sweep_config)))


def pack_members(configs: Sequence[DictConfig], dirs: Sequence[str], jobs: Sequence[Job]) -> list[dict[str, Any]]:
    """The `pack.members` node: the first is the job's own run."""
    return [{"seed": int(c.seed), "lr": float(c.lr), "dir": d, "overrides": list(overrides)}
            for c, d, (_, overrides) in zip(configs, dirs, jobs)]


def check_torch(cfgs: Iterable[DictConfig]) -> None:
    """`device: cuda` where torch sees no CUDA device, `compile: true`
    where torch.compile cannot build, and `precision: tf32` where device=auto
    is the CPU, are config errors before any run, like a bad value. This
    loads torch (seconds), so only when some job asks for cuda, compile or
    tf32: the launching process never trains."""
    asks: dict[str, tuple[bool, bool]] = {}  # device -> whether a job on it compiles, uses tf32: one check each
    for c in cfgs:
        tf32 = str(c.get("precision", "fp32")) == "tf32"
        if str(c.device) == "cuda" or c.compile or tf32:
            compiled, any_tf32 = asks.get(str(c.device), (False, False))
            asks[str(c.device)] = (compiled or bool(c.compile), any_tf32 or tf32)
    if asks:
        from study.device import check_compile, check_precision, resolve_device  # loads torch: only here

        for device, (compiled, tf32) in sorted(asks.items()):
            resolved = resolve_device(device)
            check_compile(compiled, resolved)
            if tf32:
                check_precision("tf32", resolved)


def cost(cfg: DictConfig, runs: int) -> float:
    """Rough training cost of a pack of `runs` runs of `cfg`: steps x (per-step
    overhead + samples per step). Small batches cost in steps, large ones in
    samples; packs are started costliest first."""
    return optimizer_steps(cfg)[0] * (STEP_OVERHEAD_SAMPLES + cfg.batch_size * runs)


def pack_key(cfg: Any) -> str:
    """Jobs with equal keys train as one pack: their resolved configs are
    equal but for `seed` (and `lr`, where `lr_packable`), launch-only keys
    included, so that each member's config is the pack's with its own seed
    and learning rate. A job of an Optuna trial (its own `trial.number`) is
    never packed.
    """
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    plain.pop("pack", None)
    plain.pop("seed", None)
    if lr_packable(cfg):
        plain.pop("lr", None)
    return json.dumps(plain, sort_keys=True)


def plan_packs(hydra_context: HydraContext, config: DictConfig, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int, max_pack: int, pack: bool) -> list[tuple[list[Job], list[DictConfig]]]:
    """Compose and check every job (its values, and that its dir holds no other config's run: a rerun
    into a sweep dir), then group them into packs, costliest first: each pack's jobs and their composed
    sweep configs (a Hydra composition is ~0.1 s: the launchers hand these on rather than composing
    every job again)."""
    groups: dict[Any, list[Job]] = {}
    cfgs: dict[Any, DictConfig] = {}
    composed: dict[int, DictConfig] = {}
    for i, overrides in enumerate(job_overrides):
        sweep_config = composed[initial_job_idx + i] = job_config(hydra_context, config, overrides,
                                                                  initial_job_idx + i)
        task_cfg = task_config(sweep_config)
        validate(task_cfg)
        # A rerun into a sweep dir: a job dir holding another config's run is refused before anything is written.
        record_in_dir(Path(job_dir(sweep_config)), OmegaConf.to_container(task_cfg, resolve=True, enum_to_str=True),
                      sweep_config.hydra.runtime.choices.get("experiment"))
        # The preset is recorded with each run: a pack's members share it.
        key = ((pack_key(task_cfg), sweep_config.hydra.runtime.choices.get("experiment"))
               if pack else initial_job_idx + i)
        groups.setdefault(key, []).append((initial_job_idx + i, list(overrides)))
        cfgs[key] = task_cfg
    check_torch(cfgs.values())
    progress.add_jobs(job_dir(c) for c in composed.values())  # the sweep's progress line counts their records

    packs, costs = [], []
    for key, group in groups.items():
        n = -(-len(group) // max_pack)  # packs of near-equal size, none above max_pack
        for k in range(n):
            members = group[k * len(group) // n:(k + 1) * len(group) // n]
            packs.append((members, [composed[idx] for idx, _ in members]))
            costs.append(cost(cfgs[key], len(members)))
    # Costliest packs first: workers take the next pack as they free up, so that they finish together.
    return [p for _, p in sorted(zip(costs, packs), key=lambda cp: -cp[0])]


def member_return(pack: JobReturn, sweep_config: DictConfig, out_dir: str) -> JobReturn:
    """What Hydra's run_job would return for a member that its pack's job
    trained: the pack's status, and the member's objective from its record.
    Its dir gets Hydra's job files, as a job dir does."""
    with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
        sweep_config.hydra.runtime.output_dir = out_dir
    task_cfg, hydra_cfg = task_config(sweep_config), OmegaConf.masked_copy(sweep_config, ["hydra"])
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
