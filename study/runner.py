"""One job, in a straight line: reuse or claim each run, prepare device and
data, train the job's pack (its runs of one config that differ only in
seed and lr; a job alone is a pack of one), write one `result.json` per run
into that run's dir (docs/architecture.md, docs/sweeps.md#packing)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.bn_study_sweeper.pruning import trial_reporter
from study.data import MNISTSplits, load_mnist
from study import claims
from study.device import check_compile, check_precision, configure_determinism, precision, resolve_device
from study.errors import ConfigError, OutputError, UserError
from study.loggers import RunLoggers, open_loggers
from study.measure.cost import measure_or_error
from study.sweep.progress import PackProgressFile
from study.records import CLAIM_FILE, RESULT_FILE, SCHEMA_VERSION, environment, now_iso, write_json_atomic
from study.reuse import code_version, find_reusable, index_claim, index_run, record_in_dir, reused_record, run_hash
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

    A member whose dir already holds its finished run (a rerun into the same
    sweep dir) keeps it; a member whose run finished elsewhere (same config
    and code) reuses it; the others train together as one pack (`force`
    retrains all). A run another process is training (its claim in the run
    index: study/claims.py) is waited for and then reused, so sweeps of the
    same runs started together train each run once; a dead process's claim
    is taken over. A dir that holds another config's run is refused
    (study.reuse.record_in_dir). `threads` is the torch thread count when the
    config leaves `threads` unset (the packed launcher's share of the cores
    per worker); `device_name` the launcher worker's own GPU (`cuda:N`)
    where several workers share a machine's GPUs.

    Config and data errors propagate (no record: nothing ran); so does an
    output that cannot be written (OutputError, one line: a full disk). A
    crash during training is recorded as status `failed` for every member it
    trained and does not propagate, so a sweep goes on. However the job
    ends, no member's dir is left claimed without a record.
    """
    cfg = plain_config(cfg)
    configs = [member_config(cfg, m) for m in members]
    records: list[Optional[dict[str, Any]]] = [None] * len(members)
    for i, m in enumerate(members):
        here = record_in_dir(m.dir, OmegaConf.to_container(configs[i]), experiment)
        if (here is not None and not cfg.force and here["status"] in ("completed", "diverged")
                and here.get("run_hash") == run_hash(configs[i])):
            log.info("%sfinished already in %s: kept", run_tag(configs[i]), m.dir)
            records[i] = here
        elif here is not None and not cfg.force:
            log.info("%s%s holds this run %s: training it again", run_tag(configs[i]), m.dir,
                     f"with status {here['status']}" if here["status"] not in ("completed", "diverged")
                     else "from other code, torch or threads (another run hash)")
    prepared: Optional[tuple[Any, ...]] = None
    logger = plain_logger(cfg)
    pending = [i for i, r in enumerate(records) if r is None]
    while pending:
        waiting: dict[int, dict[str, Any]] = {}
        found: dict[int, tuple[Path, dict[str, Any]]] = {}
        claimed: list[Path] = []
        try:
            for i in pending:
                f = None if cfg.force else find_reusable(configs[i])
                if f is not None:
                    found[i] = f
                    continue
                claim = index_claim(configs[i])
                with output_errors(claim):
                    held = None if cfg.force else claims.take(claim, run_dir=str(members[i].dir))
                if held is not None:
                    waiting[i] = held
                elif not cfg.force:
                    claimed.append(claim)
                    # Finished by another process between the look and the claim: reuse it after all.
                    if (f := find_reusable(configs[i])) is not None:
                        found[i] = f
            to_train = [i for i in pending if i not in found and i not in waiting]
            if to_train and prepared is None:  # the steps that can refuse a config come before any record is written
                threads = configure_determinism(cfg.threads if cfg.threads is not None else threads)
                device = resolve_device(device_name or cfg.device)
                check_compile(cfg.compile, device)
                check_precision(cfg.precision, device)
                data = get_data(cfg, device)
                check_batch_fits(cfg, data)
                prepared = (threads, device, data)
            for i, f in found.items():
                records[i] = _reuse(f, members[i], experiment, configs[i])
            if found and (viewers := open_loggers(logger, [members[i].dir for i in found], sweep_dir)):
                for k, i in enumerate(found):
                    viewers.finish(k, records[i])
            if to_train:
                _train_and_write(cfg, [members[i] for i in to_train], [configs[i] for i in to_train],
                                 experiment, *prepared, records, to_train, claimed, logger, sweep_dir)
        finally:
            for c in claimed:
                claims.release(c)
        pending = _wait_for(waiting, configs)
    return records


def _train_and_write(cfg: DictConfig, trained: list[Member], configs: list[DictConfig], experiment: Optional[str],
                     threads: int, device: torch.device, data: MNISTSplits, records: list[Optional[dict[str, Any]]],
                     where: list[int], claimed: list[Path], logger: dict[str, Any],
                     sweep_dir: Optional[Path]) -> None:
    """Train `trained` as one pack; write each one's record into its dir
    (`records[where[k]]`), then give it to the viewers (`logger`). A member
    left without a record (an interrupt, a write that failed) leaves no claim on its dir."""
    dirs = []
    try:
        for m, c in zip(trained, configs):
            claim_dir(m.dir, run_hash(c))
            dirs.append(m.dir)
        env = environment(device, threads)
        viewers = open_loggers(logger, [m.dir for m in trained], sweep_dir)
        with claims.Heartbeat([d / CLAIM_FILE for d in dirs] + claimed):
            pack = train_pack(configs[0], trained, data, device, viewers)
        cost = None
        if cfg.get("cost_repeats", 0):  # C14's interleaved timing of both arms, in this process (study/measure/cost.py)
            cost = measure_or_error(configs[0], data, device, int(cfg.cost_repeats))
        for k, (m, c, outcome) in enumerate(zip(trained, configs, pack.outcomes)):
            record = run_record(c, m, experiment, pack, outcome, data, env)
            if cost is not None:
                record["cost"] = cost
            with output_errors(m.dir / RESULT_FILE):
                write_json_atomic(m.dir / RESULT_FILE, record)
            records[where[k]] = record
            if record["status"] in ("completed", "diverged"):
                with output_errors(Path(c.run_index)):
                    index_run(c, m.dir / RESULT_FILE)
        if viewers is not None:  # after the records: a viewer never holds a result back
            for k in range(len(trained)):
                viewers.finish(k, records[where[k]])
    finally:
        for k, d in enumerate(dirs):
            if records[where[k]] is None:
                release_dir(d)


@contextlib.contextmanager
def output_errors(path: Optional[Path] = None) -> Iterator[None]:
    """A write the file system refuses (a full disk, a read-only mount) is an
    OutputError: one line naming the file (`path` where the error names none), no traceback."""
    try:
        yield
    except OSError as e:
        raise OutputError(e, path) from None


def _wait_for(waiting: dict[int, dict[str, Any]], configs: list[DictConfig], poll: float = 1.0) -> list[int]:
    """Wait until the runs that other processes are training are released
    (finished, failed or dead); return their indices, to look again."""
    if not waiting:
        return []
    for i, held in waiting.items():
        log.info("%sanother process is training this run (%s): waiting for its record",
                 run_tag(configs[i]), claims.describe(held))
    while True:
        still = []
        for i in waiting:
            claim = index_claim(configs[i])
            held = claims.read_claim(claim)
            if held is not None and not claims.is_mine(held) and claims.is_live(held, claim):
                still.append(i)
        if not still:
            return sorted(waiting)
        time.sleep(poll)


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


def claim_dir(out_dir: Path, hash_: Optional[str] = None) -> None:
    """Claim `out_dir` for this process (study/claims.py): never two live
    processes writing one dir. A claim whose process died is taken over (its
    run is trained again); one held by a live process is a UserError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        held = claims.take(out_dir / CLAIM_FILE, run_hash=hash_)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"output dir {out_dir} is a file, not a folder; give the run another dir "
                        "(hydra.sweep.dir or hydra.run.dir)") from None
    except OSError as e:
        raise OutputError(e, out_dir / CLAIM_FILE) from None
    if held is not None:
        raise UserError(f"output dir {out_dir} is being written by {claims.describe(held)}; "
                        "wait for it, or give this run another dir (hydra.sweep.dir or hydra.run.dir)")


def release_dir(out_dir: Path) -> None:
    """Give up this process's claim on a dir it wrote no record into; remove the dir if it is then empty."""
    claims.release(out_dir / CLAIM_FILE)
    with contextlib.suppress(OSError):
        out_dir.rmdir()  # only where empty: Hydra's job files stay


def _reuse(found: tuple[Path, dict[str, Any]], m: Member, experiment: Optional[str],
           config: DictConfig) -> dict[str, Any]:
    """Record a finished identical run in the member's dir instead of retraining."""
    claim_dir(m.dir, run_hash(config))
    record = reused_record(found, list(m.overrides), experiment)
    try:
        with output_errors(m.dir / RESULT_FILE):
            write_json_atomic(m.dir / RESULT_FILE, record)
    except BaseException:
        release_dir(m.dir)
        raise
    log.info("%sreusing the finished run %s (same config and code; force=true retrains)",
             run_tag(config), found[0])
    return record


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
    # Pruning: a job of an Optuna trial reports each epoch (packs are never trials: packs.pack_key).
    on_epoch = None
    if len(members) == 1 and cfg.trial.prune:
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

