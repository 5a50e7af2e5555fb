"""One job: config -> data -> model and training -> one `result.json` per run.

A job trains a *pack*: the runs of one config that differ only in their
seed (and learning rate, where the fused SGD step trains them), as one
model (study/packing.py). A job launched alone, or by any Hydra launcher,
is a pack of one: its own run, in its own dir. The packed launcher
(hydra_plugins/bn_study_launcher) runs each pack as one Hydra job and puts
the pack on that job's config, a launch-only node
`pack: {threads, members: [{seed, lr, dir, overrides}, ...]}` whose first
member is the job's own run; the job writes every member's record into
that member's own dir, and the launcher reports each member to the
sweeper from its record.

`run_job(cfg, out_dir)` is the whole job, for the Hydra entry point
(study/run.py), tests and other callers; it takes a validated config
(study.config.validate). Finished identical runs are reused, not trained
again (study/reuse.py).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from study.data import MNISTSplits, load_mnist
from study.device import check_compile, configure_determinism, precision, resolve_device
from study.errors import ConfigError
from study.loggers import RunLoggers, open_loggers
from study.progress import PackProgressFile
from study.records import (CLAIM_FILE, RESULT_FILE, SCHEMA_VERSION, RecordError, environment, now_iso,
                           read_record, write_json_atomic)
from study.reuse import code_version, find_reusable, index_run, reused_record, run_hash
from study.spec import train_spec
from study.train import RunOutcome, train_runs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One run of a pack: its seed and learning rate, its run dir and the
    overrides it was launched with."""

    seed: int
    lr: float
    dir: Path
    overrides: tuple[str, ...] = ()


def run_job(cfg: DictConfig, out_dir: Path, overrides: list[str] = (),
            experiment: Optional[str] = None, sweep_dir: Optional[Path] = None) -> dict[str, Any]:
    """Train this job's pack (`cfg.pack`, else its own run alone in
    `out_dir`); return the record of the job's own run.

    `experiment` is the preset the job was launched with (conf/experiment/,
    Hydra's choice), recorded so that the analysis finds each claim's runs;
    `sweep_dir` the multirun's dir (None for a single run), which groups the
    runs in a logger (study/loggers.py).
    """
    pack = OmegaConf.select(cfg, "pack")
    if isinstance(pack, str):  # written by the sweeper for a launcher that does not pack (hydra_plugins/.../packs.py)
        pack = OmegaConf.create(json.loads(Path(pack).read_text()))
    if pack is None:
        return run_pack(cfg, [Member(int(cfg.seed), float(cfg.lr), Path(out_dir), tuple(overrides))], experiment,
                        sweep_dir=sweep_dir)[0]
    members = [Member(int(m.seed), float(m.lr), Path(m.dir), tuple(m.overrides)) for m in pack.members]
    if members[0].dir.resolve() != Path(out_dir).resolve():
        raise ValueError(f"a pack's job runs in its first member's dir ({members[0].dir}), not {out_dir}")
    return run_pack(cfg, members, experiment, pack.threads, pack.get("device"), sweep_dir)[0]


def run_pack(cfg: DictConfig, members: list[Member], experiment: Optional[str] = None,
             threads: Optional[int] = None, device_name: Optional[str] = None,
             sweep_dir: Optional[Path] = None) -> list[dict[str, Any]]:
    """Write each member's `result.json` (in its dir); return the records.

    Members whose run already finished (same config and code) reuse it,
    unless `force`; the others train together as one pack. `threads` is the
    torch thread count when the config leaves `threads` unset (the packed
    launcher's share of the cores per worker); `device_name` the launcher
    worker's own GPU (`cuda:N`) where several workers share a machine's GPUs.

    Config and data errors propagate (no record: nothing ran). A crash during
    training is recorded as status `failed` for every member it trained and
    does not propagate, so a sweep goes on.
    """
    cfg = plain_config(cfg)
    configs = [member_config(cfg, m) for m in members]
    found = [None if cfg.force else find_reusable(c) for c in configs]
    to_train = [i for i, f in enumerate(found) if f is None]
    if to_train:  # the steps that can refuse a config come before any record is written
        threads = configure_determinism(cfg.threads if cfg.threads is not None else threads)
        device = resolve_device(device_name or cfg.device)
        check_compile(cfg.compile, device)
        data = get_data(cfg, device)
        check_batch_fits(cfg, data)
    records: list[Optional[dict[str, Any]]] = [None] * len(members)
    logger = plain_logger(cfg)
    reused = [i for i, f in enumerate(found) if f is not None]
    for i in reused:
        records[i] = _reuse(found[i], members[i], experiment, configs[i])
    if reused and (viewers := open_loggers(logger, [members[i].dir for i in reused], sweep_dir)):
        for k, i in enumerate(reused):
            viewers.finish(k, records[i])
    if to_train:
        trained = [members[i] for i in to_train]
        for m in trained:
            claim_dir(m.dir)
        env = environment(device, threads)
        viewers = open_loggers(logger, [m.dir for m in trained], sweep_dir)
        pack = train_pack(configs[to_train[0]], trained, data, device, viewers)
        cost = None
        if cfg.get("cost_repeats", 0):  # C14's interleaved timing of both arms, in this process (study/cost.py)
            from study.cost import measure_or_error

            cost = measure_or_error(configs[to_train[0]], data, device, int(cfg.cost_repeats))
        for i, outcome in zip(to_train, pack.outcomes):
            records[i] = run_record(configs[i], members[i], experiment, pack, outcome, data, env)
            if cost is not None:
                records[i]["cost"] = cost
            write_json_atomic(members[i].dir / RESULT_FILE, records[i])
            if records[i]["status"] in ("completed", "diverged"):
                index_run(configs[i], members[i].dir / RESULT_FILE)
        if viewers is not None:  # after the records: a viewer never holds a result back
            for k, i in enumerate(to_train):
                viewers.finish(k, records[i])
    return records


def plain_logger(cfg: DictConfig) -> dict[str, Any]:
    """The `logger` node as plain values (configs made before it existed: none)."""
    node = OmegaConf.select(cfg, "logger")
    return OmegaConf.to_container(node) if node is not None else {"kind": "none"}


def plain_config(cfg: DictConfig) -> DictConfig:
    """The resolved config as plain values (enums as strings), schema-free."""
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def member_config(cfg: DictConfig, m: Member) -> DictConfig:
    """The config of one member's run: the pack's, with its seed and lr, without the pack."""
    own = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "pack"})
    own.seed, own.lr = m.seed, m.lr
    return own


@functools.lru_cache(maxsize=1)  # one split in memory; the jobs of one process share it
def _load(root: str, source: str, verify: bool, val_size: int, split_seed: int, normalize: str,
          device: torch.device, permute_seed: Optional[int] = None) -> MNISTSplits:
    return load_mnist(Path(root), val_size=val_size, split_seed=split_seed, normalize=normalize,
                      source=source, verify=verify, device=device, permute_seed=permute_seed)


def get_data(cfg: DictConfig, device: torch.device) -> MNISTSplits:
    d = cfg.data
    permute = int(d.permute_seed) if d.get("permute", False) else None
    return _load(str(Path(d.root).expanduser()), str(d.source), bool(d.verify), int(d.val_size),
                 int(d.split_seed), str(d.normalize), device, permute)


def check_batch_fits(cfg: DictConfig, data: MNISTSplits) -> None:
    """The training split must hold one batch. `validate` assumes the official
    60,000 images; smaller files (data.verify=false: tiny or the user's own)
    are checked here, once they are read, or a run would train full-batch."""
    n_train = len(data.train_x)
    if cfg.batch_size > n_train:
        raise ConfigError("batch_size", cfg.batch_size,
                          f"at most the training split's {n_train} images ({data.info['n_train'] + data.info['n_val']} "
                          f"in {data.info['root']}, data.val_size={cfg.data.val_size} of them held out)")


def claim_dir(out_dir: Path) -> None:
    """Refuse a dir that already holds a run: never two runs in one dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out_dir / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise RuntimeError(f"output dir {out_dir} already holds a run; refusing to overwrite it") from None
    os.write(fd, f"{os.getpid()} {now_iso()}\n".encode())
    os.close(fd)


def _reuse(found: tuple[Path, dict[str, Any]], m: Member, experiment: Optional[str],
           config: DictConfig) -> dict[str, Any]:
    """Record a finished identical run in the member's dir instead of retraining."""
    own = _own_record(m.dir, found[1]["run_hash"])
    if own is not None:  # written by an earlier try of this job (a requeued pack: submitit_support.py)
        log.info("%skeeping the finished run in %s (same config and code)", run_tag(config), m.dir)
        return own
    claim_dir(m.dir)
    record = reused_record(found, list(m.overrides), experiment)
    write_json_atomic(m.dir / RESULT_FILE, record)
    log.info("%sreusing the finished run %s (same config and code; force=true retrains)",
             run_tag(config), found[0])
    return record


def _own_record(out_dir: Path, want_hash: str) -> Optional[dict[str, Any]]:
    """The finished record of this run already in its dir, trained or reused there, if any."""
    try:
        rec = read_record(out_dir / RESULT_FILE)
    except RecordError:
        return None
    return rec if rec.get("run_hash") == want_hash and rec["status"] in ("completed", "diverged") else None


@dataclass
class PackTraining:
    """A pack's training: an outcome per run, or the crash they share; its times."""

    outcomes: list[Optional[RunOutcome]]
    error: Optional[dict[str, Any]]
    started_at: str
    finished_at: str
    wall_seconds: float
    pack: dict[str, Any]  # size, seeds, lrs: recorded with each run


def train_pack(cfg: DictConfig, members: list[Member], data: MNISTSplits, device: torch.device,
               viewers: Optional[RunLoggers] = None) -> PackTraining:
    """Train the members (`cfg`: the first one's config) as one pack; a
    crash is a result to record, not a reason to stop a sweep. `viewers`
    get each epoch's entries as they come (study/loggers.py)."""
    seeds, lrs = [m.seed for m in members], [m.lr for m in members]
    tag = run_tag(cfg) if len(members) == 1 else pack_tag(cfg, members)
    # Pruning: a job of an Optuna trial reports each epoch (packs are never trials: study.packing).
    on_epoch = None
    if len(members) == 1 and cfg.trial.prune:
        from hydra_plugins.bn_study_sweeper.pruning import trial_reporter

        on_epoch = trial_reporter(cfg.trial)
    if viewers is not None:
        on_epoch = both_on_epoch(viewers.on_epoch, on_epoch)
    steps_file = PackProgressFile([m.dir for m in members])  # read by the sweep's progress line
    started, t0 = now_iso(), time.perf_counter()
    outcomes, error = [None] * len(members), None
    try:
        with precision(cfg.precision, device):  # fp32 | tf32 | bf16 (autocast)
            outcomes = train_runs(train_spec(cfg), seeds, data, device, lrs=lrs, tag=tag, on_epoch=on_epoch,
                                  on_step=steps_file)
    except Exception as e:
        log.error("%srun failed: %s", tag, e)
        error = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
    finally:
        steps_file.remove()
    return PackTraining(outcomes, error, started, now_iso(), time.perf_counter() - t0,
                        {"size": len(members), "seeds": seeds, "lrs": lrs})


def both_on_epoch(log_epoch, prune):
    """train_runs' on_epoch: log the epoch, then ask the pruner (if any)."""
    def on_epoch(epoch: int, outcomes: list[RunOutcome]) -> bool:
        log_epoch(epoch, outcomes)
        return prune(epoch, outcomes) if prune is not None else False

    return on_epoch


def run_record(config: DictConfig, m: Member, experiment: Optional[str], pack: PackTraining,
               outcome: Optional[RunOutcome], data: MNISTSplits, env: dict[str, Any]) -> dict[str, Any]:
    """A member's `result.json`. A packed run's times are its pack's: its runs trained together."""
    record = {"schema_version": SCHEMA_VERSION, "status": "failed", "experiment": experiment, "seed": m.seed,
              "config": OmegaConf.to_container(config), "overrides": list(m.overrides),
              "started_at": pack.started_at, "diverged_at_step": None, "final": {}, "history": [],
              "probes": None}  # null without probes; else kinds, every, seconds, series, final (study/probes.py)
    if outcome is not None:
        record.update(status=outcome.status, seed=outcome.seed, diverged_at_step=outcome.diverged_at_step,
                      final=outcome.final, history=outcome.history, probes=outcome.probes)
    record.update(data=data.info, env=env, finished_at=pack.finished_at, wall_seconds=pack.wall_seconds,
                  error=pack.error, pack=pack.pack, run_hash=run_hash(config), code_version=code_version())
    return record


def run_tag(cfg: DictConfig) -> str:
    return f"[bs={cfg.batch_size} norm={cfg.model.norm} lr={cfg.lr:g} seed={cfg.seed}] "


def pack_tag(cfg: DictConfig, members: list[Member]) -> str:
    seeds = ",".join(map(str, sorted({m.seed for m in members})))
    lrs = ",".join(f"{v:g}" for v in sorted({m.lr for m in members}))
    return f"[bs={cfg.batch_size} norm={cfg.model.norm} lr={lrs} seeds={seeds}, {len(members)} runs] "

