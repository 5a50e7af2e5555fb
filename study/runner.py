"""One job: config -> data -> training -> `result.json` -> the objective.

Kept apart from the Hydra entry point (`study/run.py`) so that tests and
other launchers can call it with a composed config and an output dir.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from study.config import validate
from study.data import MNISTSplits, load_mnist
from study.device import check_compile, configure_determinism, resolve_device
from study.records import (CLAIM_FILE, REPO_ROOT, RESULT_FILE, SCHEMA_VERSION, environment, now_iso,
                           read_record, write_json_atomic)
from study.packing import identity, pack_key
from study.spec import train_spec
from study.train import RunOutcome, train_runs

log = logging.getLogger(__name__)

# Jobs launched in one process (Hydra's basic launcher) share the loaded split.
_DATA_CACHE: dict[tuple, MNISTSplits] = {}

# Packing (set by the `packed` launcher, hydra_plugins/bn_study_launcher):
# the (seed, lr) members planned together for a config, and the finished
# runs of a pack waiting for their own jobs to record them.
_PACK_PLAN: dict[str, list[tuple[int, float]]] = {}
_PACK_DONE: dict[tuple[str, int, float], "_Trained"] = {}
_DEFAULT_THREADS: Optional[int] = None


CODE_DIRS = ("study", "hydra_plugins")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the code that computes a run (the .py files that train)."""
    h = hashlib.sha256()
    for d in CODE_DIRS:
        for path in sorted((REPO_ROOT / d).rglob("*.py")):
            h.update(str(path.relative_to(REPO_ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def run_hash(cfg: DictConfig) -> str:
    """Same resolved config (launch-only keys aside), code and torch -> same hash.

    Not included: the data files' content. With data.verify=true they are the
    official MNIST (checked); with data.verify=false, replacing the files
    under the same root needs force=true to retrain.
    """
    ident = json.dumps({"config": identity(cfg), "code": code_version(), "torch": torch.__version__},
                       sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def find_reusable(cfg: DictConfig) -> Optional[tuple[Path, dict[str, Any]]]:
    """A finished run (completed or diverged) of exactly this config and code."""
    want = run_hash(cfg)
    try:
        path = Path(json.loads((Path(cfg.run_index) / f"{want}.json").read_text())["record"])
        rec = read_record(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if rec.get("run_hash") != want or rec.get("status") not in ("completed", "diverged"):
        return None
    return path, rec


def _index(cfg: DictConfig, record_path: Path) -> None:
    write_json_atomic(Path(cfg.run_index) / f"{run_hash(cfg)}.json",
                      {"record": str(record_path.resolve()), "indexed_at": now_iso()})


def plan_pack(cfg: DictConfig, members: list[tuple[int, float]]) -> None:
    """Announce that the jobs of `cfg` with these (seed, lr) run next, as one pack."""
    _PACK_PLAN[pack_key(cfg)] = sorted(set((int(s), float(lr)) for s, lr in members))


def set_default_threads(threads: int) -> None:
    """Thread count for runs whose config leaves `threads` unset (launcher workers)."""
    global _DEFAULT_THREADS
    _DEFAULT_THREADS = threads


def plain_config(cfg: DictConfig) -> DictConfig:
    """The resolved config as plain values (enums as strings), schema-free."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def get_data(cfg: DictConfig, device: torch.device) -> MNISTSplits:
    d = cfg.data
    key = (str(Path(d.root).expanduser()), d.source, d.verify, d.val_size, d.split_seed, d.normalize, str(device))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one split in memory at a time
        _DATA_CACHE[key] = load_mnist(Path(d.root).expanduser(), val_size=d.val_size,
                                      split_seed=d.split_seed, normalize=d.normalize, source=d.source,
                                      verify=d.verify, device=device)
    return _DATA_CACHE[key]


def run_tag(cfg: DictConfig) -> str:
    return (f"[bs={cfg.batch_size} norm={cfg.model.norm} lr={cfg.lr:g} "
            f"seed={cfg.seed}] ")


def claim_dir(out_dir: Path) -> None:
    """Refuse a dir that already holds a run: never two runs in one dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out_dir / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise RuntimeError(f"output dir {out_dir} already holds a run; refusing to overwrite it") from None
    os.write(fd, f"{os.getpid()} {now_iso()}\n".encode())
    os.close(fd)


def base_record(cfg: DictConfig, overrides: list[str], experiment: Optional[str]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": None,
        "experiment": experiment,
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
        # null without probes; else kinds, every, seconds, series, final (study/probes.py)
        "probes": outcome.probes,
        "data": data.info,
        "env": env,
        "finished_at": now_iso(),
        "wall_seconds": wall,
        "error": None,
    })
    return rec


def run_job(cfg: DictConfig, out_dir: Path, overrides: list[str] = (),
            experiment: Optional[str] = None) -> dict[str, Any]:
    """Validate, train, write `out_dir/result.json`; return the record.

    `experiment` is the preset the job was launched with (conf/experiment/,
    Hydra's choice), recorded so that the analysis finds each claim's runs.

    Config and data errors propagate (no record: nothing ran). A crash during
    training is recorded as status `failed` and does not propagate, so a
    sweep goes on.
    """
    validate(cfg)
    cfg = plain_config(cfg)
    out_dir = Path(out_dir)
    if not cfg.force:
        found = find_reusable(cfg)
        if found is not None:
            return _reuse(found, out_dir, overrides, experiment)
    threads = configure_determinism(cfg.threads if cfg.threads is not None else _DEFAULT_THREADS)
    device = resolve_device(cfg.device)
    check_compile(cfg.compile, device)
    data = get_data(cfg, device)
    claim_dir(out_dir)
    base = base_record(cfg, overrides, experiment)
    env = environment(device, threads)
    trained = _train_or_take_from_pack(cfg, data, device)
    if trained.error is None:
        record = outcome_record(base, trained.outcome, data, env, trained.wall_seconds)
    else:  # a crash is a result to record, not a reason to stop a sweep
        record = dict(base, status="failed", final={}, history=[], data=data.info, env=env,
                      wall_seconds=trained.wall_seconds, diverged_at_step=None, error=trained.error,
                      probes=None)
    # A packed run's times are its pack's: its runs trained together.
    record.update(started_at=trained.started_at, finished_at=trained.finished_at, pack=trained.pack)
    record["run_hash"], record["code_version"] = run_hash(cfg), code_version()
    write_json_atomic(out_dir / RESULT_FILE, record)
    if record["status"] in ("completed", "diverged"):
        _index(cfg, out_dir / RESULT_FILE)
    return record


def _reuse(found: tuple[Path, dict[str, Any]], out_dir: Path, overrides: list[str],
           experiment: Optional[str]) -> dict[str, Any]:
    """Record a finished identical run in this job's dir instead of retraining.

    The same run may serve two presets (e.g. the notebook grid and a claim's
    grid): the copy names the preset of this job.
    """
    path, old = found
    claim_dir(out_dir)
    record = dict(old, overrides=list(overrides), experiment=experiment, reused_from=str(path),
                  reused_at=now_iso())
    write_json_atomic(out_dir / RESULT_FILE, record)
    log.info("%sreusing the finished run %s (same config and code; force=true retrains)",
             run_tag(OmegaConf.create(old["config"])), path)
    return record


@dataclass
class _Trained:
    """One run's training, alone or in a pack (shared times, shared crash)."""

    outcome: Optional[RunOutcome]
    error: Optional[dict[str, Any]]
    pack: dict[str, Any]
    started_at: str
    finished_at: str
    wall_seconds: float


def _train(cfg: DictConfig, members: list[tuple[int, float]], data: MNISTSplits, device: torch.device,
           tag: str) -> dict[tuple[int, float], _Trained]:
    started, t0 = now_iso(), time.perf_counter()
    outcomes, error = None, None
    seeds, lrs = [s for s, _ in members], [lr for _, lr in members]
    try:
        outcomes = train_runs(train_spec(cfg), seeds, data, device, tag=tag, lrs=lrs,
                              on_epoch=_trial_reporter(cfg) if len(members) == 1 else None)
    except Exception as e:
        log.error("%srun failed: %s", tag, e)
        error = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
    wall, finished = time.perf_counter() - t0, now_iso()
    pack = {"size": len(members), "seeds": seeds, "lrs": lrs}
    return {m: _Trained(outcomes[i] if outcomes else None, error, pack, started, finished, wall)
            for i, m in enumerate(members)}


def _train_or_take_from_pack(cfg: DictConfig, data: MNISTSplits, device: torch.device) -> _Trained:
    """This job's run: trained alone, or as part of the pack planned for it.

    The first job of a planned pack trains every seed of it together (or
    fails for all of them); each later job takes its own result. A run's
    numbers do not depend on its pack (tests/test_train.py checks packed
    against solo runs).
    """
    key, me = pack_key(cfg), (int(cfg.seed), float(cfg.lr))
    if (key, *me) in _PACK_DONE:  # trained with an earlier job of its pack
        return _PACK_DONE.pop((key, *me))
    members = [m for m in _PACK_PLAN.get(key, [])
               if m == me or cfg.force or find_reusable(_member(cfg, *m)) is None]
    if len(members) < 2 or me not in members:
        return _train(cfg, [me], data, device, run_tag(cfg))[me]
    for m, trained in _train(cfg, members, data, device, pack_tag(cfg, members)).items():
        _PACK_DONE[(key, *m)] = trained
    return _PACK_DONE.pop((key, *me))


def _member(cfg: DictConfig, seed: int, lr: float) -> DictConfig:
    """`cfg` for another member of its pack."""
    other = cfg.copy()
    other.seed, other.lr = seed, lr
    return other


def pack_tag(cfg: DictConfig, members: list[tuple[int, float]]) -> str:
    seeds = ",".join(map(str, sorted({s for s, _ in members})))
    lrs = ",".join(f"{v:g}" for v in sorted({lr for _, lr in members}))
    return f"[bs={cfg.batch_size} norm={cfg.model.norm} lr={lrs} seeds={seeds}, {len(members)} runs] "


def _trial_reporter(cfg: DictConfig):
    """Per-epoch report of val_acc to the job's Optuna trial, for pruning.

    Returns a callback for train_runs that answers True (stop: pruned) when
    the study's pruner says so; None when the job has no trial to report to.
    """
    t = cfg.trial
    if not t.prune or t.number is None or not t.storage:
        return None
    import optuna

    from hydra_plugins.bn_study_sweeper.pruning import stored_pruner

    study = optuna.load_study(study_name=t.study, storage=t.storage)
    study.pruner = stored_pruner(study)  # the sweep's pruner (Optuna does not store pruners)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, t.number)
    trial = optuna.trial.Trial(study, trial_id)

    def report(epoch: int, outcomes: list[RunOutcome]) -> bool:
        (outcome,) = outcomes
        if outcome.status != "completed" or not outcome.history:
            return False
        trial.report(outcome.history[-1]["val_acc"], epoch)
        return trial.should_prune()

    return report


def objective(record: dict[str, Any], name: str) -> float:
    """The number a sweeper optimizes; NaN for diverged, pruned or failed runs."""
    value = (record.get("final") or {}).get(name)
    if record["status"] != "completed" or value is None:
        return math.nan
    return float(value)
