"""One job: config -> data -> training -> `result.json` -> the objective.

Kept apart from the Hydra entry point (`study/run.py`) so that tests and
other launchers can call it with a composed config and an output dir.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from study.config import validate
from study.data import MNISTSplits, load_mnist
from study.records import RESULT_FILE, SCHEMA_VERSION, environment, now_iso, write_json_atomic
from study.train import RunOutcome, configure_determinism, resolve_device, train_runs

log = logging.getLogger(__name__)

# Jobs launched in one process (Hydra's basic launcher) share the loaded split.
_DATA_CACHE: dict[tuple, MNISTSplits] = {}


def plain_config(cfg: DictConfig) -> DictConfig:
    """The resolved config as plain values (enums as strings), schema-free."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def get_data(cfg: DictConfig, device: torch.device) -> MNISTSplits:
    d = cfg.data
    key = (str(Path(d.root).expanduser()), d.source, d.verify, d.val_size, d.split_seed, str(device))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one split in memory at a time
        _DATA_CACHE[key] = load_mnist(Path(d.root).expanduser(), val_size=d.val_size,
                                      split_seed=d.split_seed, source=d.source,
                                      verify=d.verify, device=device)
    return _DATA_CACHE[key]


def run_tag(cfg: DictConfig) -> str:
    return (f"[bs={cfg.batch_size} norm={cfg.model.norm} lr={cfg.lr:g} "
            f"seed={cfg.seed}] ")


def claim_dir(out_dir: Path) -> None:
    """Refuse a dir that already holds a run: never two runs in one dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out_dir / ".claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise RuntimeError(f"output dir {out_dir} already holds a run; refusing to overwrite it") from None
    os.write(fd, f"{os.getpid()} {now_iso()}\n".encode())
    os.close(fd)


def base_record(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": None,
        "seed": cfg.seed,
        "config": OmegaConf.to_container(cfg),
        "overrides": list(overrides),
        "started_at": now_iso(),
    }


def outcome_record(base: dict[str, Any], outcome: RunOutcome, data: MNISTSplits,
                   env: dict[str, Any], wall: float) -> dict[str, Any]:
    rec = dict(base)
    rec.update({
        "status": outcome.status,
        "seed": outcome.seed,
        "diverged_at_step": outcome.diverged_at_step,
        "final": outcome.final,
        "history": outcome.history,
        "data": data.info,
        "env": env,
        "finished_at": now_iso(),
        "wall_seconds": wall,
        "error": None,
    })
    return rec


def run_job(cfg: DictConfig, out_dir: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Validate, train, write `out_dir/result.json`; return the record.

    Config and data errors propagate (no record: nothing ran). A crash during
    training is recorded as status `failed` and does not propagate, so a
    sweep goes on.
    """
    validate(cfg)
    cfg = plain_config(cfg)
    out_dir = Path(out_dir)
    threads = configure_determinism(cfg.threads)
    device = resolve_device(cfg.device)
    data = get_data(cfg, device)
    claim_dir(out_dir)
    base = base_record(cfg, overrides)
    env = environment(device, threads)
    t0 = time.perf_counter()
    try:
        (outcome,) = train_runs(cfg, [cfg.seed], data, device, tag=run_tag(cfg))
        record = outcome_record(base, outcome, data, env, time.perf_counter() - t0)
    except Exception as e:  # a crash is a result to record, not a reason to stop a sweep
        log.error("%srun failed: %s", run_tag(cfg), e)
        record = dict(base, status="failed", final={}, history=[], data=data.info, env=env,
                      finished_at=now_iso(), wall_seconds=time.perf_counter() - t0,
                      diverged_at_step=None,
                      error={"type": type(e).__name__, "message": str(e),
                             "traceback": traceback.format_exc()})
    write_json_atomic(out_dir / RESULT_FILE, record)
    return record


def objective(record: dict[str, Any], name: str) -> float:
    """The number a sweeper optimizes; NaN for diverged or failed runs."""
    value = (record.get("final") or {}).get(name)
    if record["status"] != "completed" or value is None:
        return math.nan
    return float(value)
