"""The `bn_optuna` sweep: cells -> one study each -> trials -> confirmation reruns.

Per cell (one combination of the command line's comma lists):

1. compose and check the cell's config; open its study (created with
   `load_if_exists`); fail the trials that a dead sweep left RUNNING (its
   process gone on this host, or its heartbeat stopped on any host);
2. ask the trials still missing in batches of `n_jobs` (null: what the
   launcher runs at once), launch their jobs through the configured launcher
   with `trial.*` overrides while a thread beats for them (the job reports
   validation accuracy per epoch and stops when the study's pruner says so),
   and tell each trial its state from the job's run record; with nothing
   left to ask, wait while other sweeps' trials run: each ends, or its sweep
   is found dead (process, heartbeat) and its params are asked here;
3. once per study: rerun the global best trial's parameters with
   `confirm_seeds` (a plain batch of jobs, trained as one pack under any
   launcher; a finished run of the same config is reused by the runner, not
   retrained), by the sweep that claims it; the others wait for it and take
   the claim over if its sweep dies. docs/scaling.md: many sweeps on one
   study. A study left without its trials or its confirmation ends the sweep
   with StudyIncomplete (exit status 3).

A trial counts toward `n_trials` when it is COMPLETE or PRUNED, or FAIL with a
run record (the run diverged or crashed while training: a result). Trials
that failed without a record (a dead or interrupted sweep, a job that raised)
do not count and are asked again on the next run; RUNNING trials of a live
sweep count as in flight.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import re
import socket
import statistics
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import (OptunaSweeperImpl,
                                                      create_optuna_distribution_from_override)
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from study.sweep import progress
from study.records import METRIC_KEYS, RESULT_FILE

from .pruning import PRUNER_ATTR, pruner_spec

log = logging.getLogger("study.tune")

SAMPLER_WHITELIST = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
# The objective (study/config.py: OBJECTIVES) and which way is better.
OBJECTIVE_DIRECTIONS = {"val_acc": "maximize", "test_acc": "maximize", "train_loss": "minimize"}
# Keys that select a preset rather than say what a run computes; the fixed
# config stored in each study covers what such a preset sets.
NOT_IN_STUDY_NAME = ("experiment",)


def _user_error(message: str) -> Exception:
    from study.errors import UserError

    return UserError(message)


# ----------------------------------------------------------------- overrides
@dataclass
class SweepPlan:
    grid: dict[str, list[str]]  # cell key -> its values (command-line comma lists)
    search: dict[str, BaseDistribution]  # what Optuna tunes
    fixed: dict[str, str]  # key -> value, passed to every job
    passthrough: list[str]  # deletions (~key), passed as they are

    def cells(self) -> list[dict[str, str]]:
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]


def plan_sweep(arguments: Sequence[str], cells: bool) -> SweepPlan:
    """Split sweep params (config params first, then the command line: later wins).

    Simple comma lists (`batch_size=8,64`) are cells when `cells` is true;
    Optuna syntax (`choice(...)`, `interval(...)`, `range(...)`, tags) and,
    with `cells` false, comma lists too, are search dimensions (the plugin's
    rules); single values are fixed.
    """
    plan = SweepPlan({}, {}, {}, [])
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        if override.is_delete():
            assert override.input_line is not None
            plan.passthrough.append(override.input_line)
            continue
        key = override.get_key_element()
        for d in (plan.grid, plan.search, plan.fixed):
            d.pop(key, None)
        if cells and override.is_choice_sweep() and getattr(override.value(), "simple_form", False):
            plan.grid[key] = list(override.sweep_string_iterator())
            continue
        value = create_optuna_distribution_from_override(override)
        if isinstance(value, BaseDistribution):
            plan.search[key] = value
        else:
            plan.fixed[key] = value
    return plan


def hydra_quote(value: str) -> str:
    """A value that Hydra's override parser reads back verbatim (URLs, study names)."""
    for q in ("'", '"'):
        if q not in value and "\\" not in value:
            return f"{q}{value}{q}"
    raise _user_error(f"cannot pass {value!r} to a job as an override (it holds both quote characters)")


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


# ------------------------------------------------------------------- storage
def resolve_storage(url: Any) -> str:
    """An absolute SQLite path (its folder made) with a lock timeout; other URLs as given."""
    if not isinstance(url, str) or "://" not in url:
        raise _user_error(f"hydra.sweeper.storage={url} is not allowed: an SQLAlchemy URL, e.g. "
                          "sqlite:///outputs/optuna/studies.db (jobs report to it; a rerun resumes from it)")
    if not url.startswith("sqlite:///"):
        return url
    path_part, _, query = url[len("sqlite:///"):].partition("?")
    if not path_part or path_part == ":memory:":
        raise _user_error(f"hydra.sweeper.storage={url} is not allowed: a database file "
                          "(jobs run in other processes and report to it)")
    path = Path(path_part).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    path.parent.mkdir(parents=True, exist_ok=True)
    if not any(p.split("=", 1)[0] == "timeout" for p in query.split("&") if p):
        # Jobs report to the study while the sweeper writes: wait for the lock
        # instead of failing with "database is locked".
        query = "&".join(p for p in (query, "timeout=60") if p)
    return f"sqlite:///{path}?{query}"


def open_storage(url: str, heartbeat_interval: Optional[int], grace_period: Optional[int],
                 attempts: int = 5) -> optuna.storages.RDBStorage:
    """The study storage, with Optuna's heartbeat: a trial whose sweep stops
    beating for `grace_period` seconds (dead, on any host) is failed by the
    next sweep on the study and its params asked again (RetryHeartbeatStaleTrialCallback).

    Sweeps started together on an empty PostgreSQL database race to create
    Optuna's schema (`CREATE TYPE studydirection`: one gets IntegrityError or
    DuplicateObject); the loser finds the schema made on a retry.
    """
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5 (docs/scaling.md)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                kwargs: dict[str, Any] = {}
                if heartbeat_interval:
                    kwargs = dict(heartbeat_interval=int(heartbeat_interval), grace_period=grace_period,
                                  heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                                      max_retry=3))
                return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                optuna.exceptions.StorageInternalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_user_storage(storage: Any, heartbeat_interval: Optional[int],
                      grace_period: Optional[int]) -> tuple[str, optuna.storages.RDBStorage]:
    """The storage's URL and the storage (resolve_storage, open_storage). One
    that cannot be opened is a user error, one line naming
    hydra.sweeper.storage and the fix: a missing driver (the postgres extra),
    a database server that refuses connections, a path that cannot be made."""
    from study.errors import UserError

    try:
        url = resolve_storage(storage)
        return url, open_storage(url, heartbeat_interval, grace_period)
    except UserError:
        raise
    except Exception as e:
        import sqlalchemy.engine
        import sqlalchemy.exc

        try:
            shown = sqlalchemy.engine.make_url(str(storage)).render_as_string(hide_password=True)
        except Exception:
            shown = str(storage)
        key = f"hydra.sweeper.storage={shown}"
        chain = [e]
        while chain[-1].__cause__ or chain[-1].__context__:
            chain.append(chain[-1].__cause__ or chain[-1].__context__)
        missing = next((str(c.name) for c in chain if isinstance(c, ImportError) and c.name), None)
        if missing:
            extra = ("uv sync --extra postgres" if missing.startswith(("psycopg", "pg8000", "asyncpg"))
                     else f"install the Python package {missing.split('.')[0]}")
            raise _user_error(f"{key} needs the database driver {missing}, which is not installed: {extra}") from None
        if isinstance(e, OSError):
            raise _user_error(f"{key}: cannot make {e.filename or 'its folder'} ({e.strerror or e}); give a "
                              "database file in a folder that can be written") from None
        why = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
        if isinstance(e, sqlalchemy.exc.ArgumentError):
            raise _user_error(f"{key} is not allowed: an SQLAlchemy URL, e.g. sqlite:///outputs/optuna/studies.db "
                              f"({why})") from None
        raise _user_error(f"{key} cannot be opened ({type(e).__name__}: {why}); start the database server "
                          "or fix the URL") from None


def fail_dead_trials(study: optuna.Study) -> int:
    """Fail the RUNNING trials whose heartbeat stopped (a sweep dead on any
    host): Optuna's fail_stale_trials, with the storage's
    RetryHeartbeatStaleTrialCallback, which queues their params to be asked
    again. Each gets `status: stale` first. Returns how many."""
    rdb = getattr(study._storage, "_backend", study._storage)
    if not (isinstance(rdb, optuna.storages.RDBStorage) and rdb.get_heartbeat_interval()):
        return 0
    before = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    # Private (RDBStorage._get_stale_trial_ids): the stale trials fail_stale_trials is about to fail, so
    # that they carry the sweeper's word for why (a finished trial's attributes cannot be set, and Optuna has
    # no public listing of stale trials).
    for trial_id in rdb._get_stale_trial_ids(study._study_id):
        try:
            study._storage.set_trial_user_attr(trial_id, "status", "stale")
        except optuna.exceptions.UpdateFinishedTrialError:  # another sweep failed it meanwhile
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    after = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return len(before - after)


def ask(study: optuna.Study, distributions: Optional[dict[str, BaseDistribution]] = None) -> Trial:
    """`study.ask`, without Optuna's warning that a heartbeat storage is meant
    for `optimize`: this sweeper beats for its asked trials itself (Heartbeat)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return study.ask(distributions)


class _Beating:
    """A daemon thread that runs `_beat` while the `with` block runs (and
    only where `interval` is set); it dies with the sweep, and so do the beats."""

    name = "beat"

    def __init__(self, interval: Optional[int]) -> None:
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=self.name)

    def _beat(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        if self.interval:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


class Heartbeat(_Beating):
    """Records a heartbeat for each trial of a batch while its jobs run.

    Optuna beats only inside `study.optimize`; an ask/tell sweep must do it
    itself, or every trial would look dead to the other sweeps after
    `grace_period`.
    """

    name = "optuna-heartbeat"

    def __init__(self, storage: optuna.storages.BaseStorage, trials: Sequence[Trial]) -> None:
        self.storage, self.ids = storage, [t._trial_id for t in trials]
        super().__init__(storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.RDBStorage)
                         else None)

    def _beat(self) -> None:
        while True:
            for trial_id in self.ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as e:  # a lost connection: the next beat tries again
                    log.warning("heartbeat of trial id %d not recorded: %s", trial_id, e)
            if self.stop.wait(self.interval):
                return


def claim_key(trial: int, seeds: Sequence[int]) -> str:
    return f"confirm_claim:{trial}:{','.join(map(str, seeds))}"


def _rdb(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage:
    rdb = getattr(storage, "_backend", storage)
    if not isinstance(rdb, optuna.storages.RDBStorage):
        raise _user_error("hydra.sweeper.storage must be an SQLAlchemy URL (an RDB storage)")
    return rdb


def _claim_value(heartbeat_interval: Optional[int], beat: int = 0) -> str:
    return json.dumps({"sweep": this_sweep(), "at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                       "heartbeat": heartbeat_interval, "beat": beat})


def claim_raw(storage: optuna.storages.BaseStorage, study: optuna.Study, key: str) -> Optional[str]:
    """The stored JSON text of a study attribute (None when unset): what compare_and_set compares."""
    from optuna.storages._rdb import models  # private: Optuna has no public compare-and-set
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(_rdb(storage).scoped_session) as session:
        row = (session.query(models.StudyUserAttributeModel)
               .filter(models.StudyUserAttributeModel.study_id == study._study_id,
                       models.StudyUserAttributeModel.key == key).one_or_none())
        return None if row is None else row.value_json


def compare_and_set(storage: optuna.storages.BaseStorage, study: optuna.Study, key: str, old: str,
                    new: str) -> bool:
    """Set a study attribute to `new` only if it still holds `old` (one UPDATE ... WHERE, atomic in the
    database): of several sweeps that take over one claim at once, exactly one gets it."""
    from optuna.storages._rdb import models  # private: Optuna has no public compare-and-set
    from optuna.storages._rdb.storage import _create_scoped_session

    attr = models.StudyUserAttributeModel
    with _create_scoped_session(_rdb(storage).scoped_session) as session:
        n = (session.query(attr)
             .filter(attr.study_id == study._study_id, attr.key == key, attr.value_json == old)
             .update({attr.value_json: new}, synchronize_session=False))
    return n == 1


def claim_confirmation(storage: optuna.storages.BaseStorage, study: optuna.Study, trial: int,
                       seeds: list[int], heartbeat_interval: Optional[int] = None) -> bool:
    """True for exactly one of the sweeps that ask at once: an INSERT of the study attribute
    `confirm_claim:<trial>:<seeds>` under the storage's unique (study, key)
    constraint, in one transaction (Optuna's own set_user_attr updates an
    existing key instead, so two sweeps would both win). A claim left by a
    dead sweep on this host is taken over (compare_and_set)."""
    import sqlalchemy.exc
    from optuna.storages._rdb import models  # private: an INSERT that fails on an existing key
    from optuna.storages._rdb.storage import _create_scoped_session

    key = claim_key(trial, seeds)
    value = _claim_value(heartbeat_interval)
    try:
        with _create_scoped_session(_rdb(storage).scoped_session) as session:
            session.add(models.StudyUserAttributeModel(study_id=study._study_id, key=key, value_json=value))
        return True
    except sqlalchemy.exc.IntegrityError:
        raw = claim_raw(storage, study, key)
        owner = (json.loads(raw) if raw else {}).get("sweep")
        if raw is not None and owner is not None and sweep_is_gone(owner) \
                and compare_and_set(storage, study, key, raw, value):
            return True
        return False


class ClaimBeat(_Beating):
    """While a sweep confirms, it counts the `beat` of its claim up every
    heartbeat interval: a sweep waiting for that confirmation on another
    host sees the count stop when the confirming sweep dies, and takes the
    claim over after the grace period."""

    name = "confirm-claim-beat"

    def __init__(self, storage: optuna.storages.BaseStorage, study: optuna.Study, key: str, value: str,
                 interval: Optional[int]) -> None:
        self.storage, self.study, self.key, self.value = storage, study, key, value
        super().__init__(interval)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            doc = json.loads(self.value)
            new = json.dumps(dict(doc, beat=int(doc.get("beat", 0)) + 1))
            try:
                if not compare_and_set(self.storage, self.study, self.key, self.value, new):
                    log.warning("%s: another sweep took over this confirmation's claim (it saw no beat "
                                "for the grace period)", self.study.study_name)
                    return
                self.value = new
            except Exception as e:  # a lost connection: the next beat tries again
                log.warning("beat of %s not recorded: %s", self.key, e)


# ------------------------------------------------------------ sweep process
def _proc_stat(pid: int) -> Optional[tuple[str, str]]:
    """(state, start time in clock ticks) of a Linux process; None if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def this_sweep() -> dict[str, Any]:
    """Who runs a trial: stored on it so a later sweep can tell a dead owner."""
    stat = _proc_stat(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": stat[1] if stat else None}


# A RUNNING trial without an owner older than this is from a sweep that died
# between asking it and recording itself on it.
OWNERLESS_STALE_AFTER = datetime.timedelta(minutes=10)


def _ask_again(study: optuna.Study, trial: Any) -> None:
    """Queue a failed trial's params so the next ask retries them (and the
    runner reuses the run if its job had finished)."""
    if trial.params:
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})


def sweep_is_gone(owner: Any) -> bool:
    """True when the sweep process that owns a RUNNING trial is dead (this host only)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False  # another host (or no owner recorded): cannot tell, leave it
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        return state in ("Z", "X") or (owner.get("start") is not None and start != owner["start"])
    if Path("/proc/self/stat").exists():
        return True  # /proc works here and has no such process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def launcher_batch(launcher: DictConfig) -> int:
    """Trials asked per batch when `n_jobs` is null: what the launcher runs at
    once. Its `n_jobs` (packed, joblib; -1: the usable cores), submitit_slurm's
    `array_parallelism`, the usable cores for submitit_local (local processes),
    else 1 (Hydra's basic launcher runs one job at a time)."""
    from study.resources import usable_cores

    if "n_jobs" in launcher:
        n = launcher.n_jobs
        return usable_cores() if n is None or n < 0 else max(1, int(n))
    if "array_parallelism" in launcher:
        return max(1, int(launcher.array_parallelism))
    if str(launcher.get("_target_", "")).endswith(".LocalLauncher"):
        return usable_cores()
    return 1


# -------------------------------------------------------------- trial states
def counts_toward_target(t: FrozenTrial) -> bool:
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and bool(t.user_attrs.get("record_path"))


def state_counts(trials: Sequence[FrozenTrial]) -> dict[str, Any]:
    """Trials by state, failures by cause (the `status` attribute), for the summary."""
    counts: dict[str, Any] = {"complete": 0, "pruned": 0, "failed": {}}
    for t in trials:
        if t.state == TrialState.FAIL:
            why = str(t.user_attrs.get("status") or "unknown")
            counts["failed"][why] = counts["failed"].get(why, 0) + 1
        else:
            key = t.state.name.lower()
            counts[key] = counts.get(key, 0) + 1
    return counts


def add_counts(total: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    for k, v in counts.items():
        if isinstance(v, dict):
            add_counts(total.setdefault(k, {}), v)
        else:
            total[k] = total.get(k, 0) + v
    return total


def describe_counts(counts: dict[str, Any]) -> str:
    parts = [f"{counts[k]} {k}" for k in ("complete", "pruned", "running", "waiting") if counts.get(k)]
    failed = counts.get("failed") or {}
    if failed:
        parts.append(f"{sum(failed.values())} failed ("
                     + ", ".join(f"{n} {why}" for why, n in sorted(failed.items())) + ")")
    return ", ".join(parts) or "no trials"


def read_record(path: Optional[Path]) -> tuple[Optional[dict[str, Any]], Optional[str], Optional[str]]:
    """The job's run record (study.records.read_record), or None with the
    trial status that says why ("missing": no file; "unreadable") and the
    reason for an unreadable one."""
    from study.records import RecordError
    from study.records import read_record as read

    if path is None or not path.exists():
        return None, "missing", None
    try:
        return read(path), None, None
    except RecordError as e:
        return None, "unreadable", str(e)


def record_path_of(ret: JobReturn) -> Optional[Path]:
    out_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
    return Path(str(out_dir)) / RESULT_FILE if out_dir else None


def _finite(x: Any) -> Optional[float]:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def tell(study: optuna.Study, trial: Trial | int, state: TrialState, value: Optional[float] = None) -> None:
    """`study.tell`, outside `optimize`: GridSampler's "grid exhausted" stop is
    only possible inside `optimize` and is ignored here, as the plugin does
    (the trial's state is stored before it is raised)."""
    try:
        study.tell(trial, values=None if value is None else [value], state=state)
    except RuntimeError as e:
        if "`Study.stop` is supposed to be invoked" not in str(e):
            raise


# -------------------------------------------------------------------- sweeper
@dataclass
class CellResult:
    study: str
    cell: dict[str, str]
    objective: str
    counts: dict[str, Any]
    asked: int
    best: Optional[FrozenTrial]
    confirm: Optional[dict[str, Any]] = None
    confirm_note: Optional[str] = None  # why this sweep did not run the confirmation
    errors: list[str] = field(default_factory=list)
    incomplete: Optional[str] = None  # why the study lacks trials or its confirmation at the sweep's end


class BnOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(self, *, sampler_conf: DictConfig, direction: Any, storage: Any, study_name: Optional[str],
                 n_trials: int, n_jobs: Optional[int], max_failure_rate: float,
                 custom_search_space: Optional[str], params: Optional[DictConfig], pruner: Any,
                 cells: bool, confirm_seeds: list[int], heartbeat_interval: Optional[int] = None,
                 grace_period: Optional[int] = None, results_root: Optional[str] = None) -> None:
        # The sampler is made per study (seeded per study), from its config.
        super().__init__(None, direction, storage, study_name, n_trials, n_jobs or 1, max_failure_rate,
                         custom_search_space, params)
        self.sampler_conf = sampler_conf
        self.batch = n_jobs
        self.pruner = pruner_spec(OmegaConf.to_container(pruner, resolve=True)
                                  if isinstance(pruner, DictConfig) else pruner) if pruner else None
        self.cells = cells
        self.confirm_seeds = [int(s) for s in confirm_seeds]
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.results_root = Path(results_root or os.getcwd()).expanduser().resolve()
        if heartbeat_interval is not None and heartbeat_interval < 1:
            raise _user_error(f"hydra.sweeper.heartbeat_interval={heartbeat_interval} is not allowed: "
                              "null (no heartbeat) or an integer >= 1 (seconds)")
        if grace_period is not None and (heartbeat_interval is None or grace_period < heartbeat_interval):
            raise _user_error(f"hydra.sweeper.grace_period={grace_period} is not allowed: null (twice "
                              "heartbeat_interval) or an integer >= heartbeat_interval (seconds)")
        if n_trials < 1:
            raise _user_error(f"hydra.sweeper.n_trials={n_trials} is not allowed: an integer >= 1")

    # ------------------------------------------------------------- helpers
    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra_plugins.bn_study_launcher.packed_launcher import packing

        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # Confirmation reruns are packed under any launcher (trials never are: study.packing).
        self.launcher = packing(self.launcher, hydra_context, config)

    def _batch_size(self) -> int:
        if self.batch is not None:
            return max(1, int(self.batch))
        return launcher_batch(self.config.hydra.launcher)

    def _stored_path(self, path: Path) -> str:
        """A record's path as stored in the study: relative to `results_root`
        when under it (another machine resolves it against its own copy), else absolute."""
        real = path.resolve()
        try:
            return str(real.relative_to(self.results_root))
        except ValueError:
            return str(real)

    def _direction(self) -> str:
        directions = self._get_directions()
        objective = str(self.config.objective)
        if len(directions) != 1:
            raise _user_error(f"hydra.sweeper.direction={directions} is not allowed: one direction "
                              f"(the objective, {objective}, is one number)")
        direction = directions[0]
        best = OBJECTIVE_DIRECTIONS.get(objective)
        if best is not None and direction != best:
            raise _user_error(f"hydra.sweeper.direction={direction} does not fit objective={objective}: "
                              f"use hydra.sweeper.direction={best}")
        return direction

    def _launch_only_keys(self) -> set[str]:
        """Keys that say how a job runs, not what it computes (the dir-name exclusions)."""
        keys = OmegaConf.select(self.config, "hydra.job.config.override_dirname.exclude_keys", default=[])
        return set(keys or [])

    def _study_name(self, plan: SweepPlan, cell: dict[str, str]) -> str:
        if self.study_name:
            items = cell
            prefix = str(self.study_name)
        else:
            skip = self._launch_only_keys() | set(NOT_IN_STUDY_NAME)
            items = {k: v for k, v in plan.fixed.items() if override_key(k) not in skip}
            items.update(cell)
            prefix = "tune-" + "+".join(override_key(k) for k in plan.search)
        pairs = sorted((override_key(k), v) for k, v in items.items())
        suffix = ",".join(f"{k}={v}" for k, v in pairs)
        return f"{prefix}__{suffix}" if suffix else prefix

    def _cell_config(self, overrides: list[str]) -> DictConfig:
        """The cell's composed, checked job config (search keys at their defaults)."""
        from study.config import validate

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        validate(task)
        return task

    def _fixed_config(self, task: DictConfig, plan: SweepPlan) -> dict[str, Any]:
        """What every trial of the study shares: the config minus tuned and launch-only keys."""
        from study.records import LAUNCH_ONLY_KEYS

        skip = set(LAUNCH_ONLY_KEYS) | self._launch_only_keys() | {override_key(k) for k in plan.search}
        flat: dict[str, Any] = {}

        def walk(node: Any, prefix: str) -> None:
            for k, v in node.items():
                key = f"{prefix}{k}"
                if any(key == s or key.startswith(s + ".") for s in skip):
                    continue
                if isinstance(v, dict):
                    walk(v, key + ".")
                else:
                    flat[key] = v

        walk(OmegaConf.to_container(task, resolve=True, enum_to_str=True), "")
        return flat

    def _sample(self, study: optuna.Study, name: str, trials: list[Trial], search: dict[str, BaseDistribution]) -> None:
        """Draw each asked trial's params with the sampler seeded from its own trial number.

        Seeded once per sweep, two sweeps that start on a study together drew
        the same points (same seed, same trials so far): the study trained
        each of them twice. Trial numbers are unique in the study, so
        concurrent sweeps draw different points, and one sweep alone is still
        reproducible. A grid sampler keeps its own bookkeeping (its grid
        point is chosen when the trial is asked)."""
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            return
        for t in trials:
            study.sampler = self._sampler(name, t.number, search)
            for param, distribution in search.items():
                t._suggest(param, distribution)  # _configure_trials then reads the stored value

    def _sampler(self, study_name: str, salt: int, search: dict[str, BaseDistribution]):
        """The configured sampler, seeded from (seed, study, salt: a trial number or the trials so far)
        when seeded."""
        conf = OmegaConf.to_container(self.sampler_conf, resolve=True)
        seed = conf.get("seed")
        if seed is not None:
            digest = hashlib.sha256(f"{seed}|{study_name}|{salt}".encode()).hexdigest()
            conf["seed"] = int(digest[:8], 16)
        sampler = instantiate(conf, _execution_whitelist_=SAMPLER_WHITELIST)
        if isinstance(sampler, functools.partial) and sampler.func == optuna.samplers.GridSampler:
            sampler = sampler({k: self._to_grid_sampler_choices(d) for k, d in search.items()})
        return sampler

    def _open_study(self, storage: optuna.storages.BaseStorage, name: str, direction: str,
                    fixed_config: dict[str, Any], cell: dict[str, str]) -> optuna.Study:
        study = optuna.create_study(study_name=name, storage=storage, direction=direction,
                                    load_if_exists=True)
        if study.direction.name.lower() != direction:
            raise _user_error(f"study {name} exists with direction {study.direction.name.lower()}, "
                              f"this sweep has {direction}: give another hydra.sweeper.study_name")
        stored = study.user_attrs.get("fixed_config")
        if stored is None:
            study.set_user_attr("fixed_config", fixed_config)
            study.set_user_attr("cell", {override_key(k): v for k, v in cell.items()})
        elif stored != fixed_config:
            diff = sorted(k for k in set(stored) | set(fixed_config) if stored.get(k) != fixed_config.get(k))
            shown = "; ".join(f"{k}: {stored.get(k)!r} there, {fixed_config.get(k)!r} here" for k in diff[:4])
            raise _user_error(f"study {name} was tuned with another config ({shown}"
                              f"{'; ...' if len(diff) > 4 else ''}): give hydra.sweeper.study_name=NAME "
                              f"for a new study, or delete it (optuna delete-study)")
        if self.pruner is not None:
            # Jobs rebuild the pruner from here (Optuna does not store pruners).
            study.set_user_attr(PRUNER_ATTR, self.pruner)
        return study

    def _fail_stale(self, study: optuna.Study) -> int:
        """Fail RUNNING trials of dead sweeps; their params are asked again first.

        A stale trial's job may have finished and indexed its run before the
        sweep died: asking the same params again lets the runner reuse that
        run instead of losing it. A RUNNING trial with no owner (a sweep
        killed between ask and recording itself) counts as stale once it is
        older than OWNERLESS_STALE_AFTER.
        """
        n = 0
        now = datetime.datetime.now()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get("sweep")
            ownerless_old = (owner is None and t.datetime_start is not None
                             and now - t.datetime_start > OWNERLESS_STALE_AFTER)
            if sweep_is_gone(owner) or ownerless_old:
                study._storage.set_trial_user_attr(t._trial_id, "status", "stale")
                tell(study, t.number, TrialState.FAIL)
                _ask_again(study, t)
                n += 1
        return n

    @staticmethod
    def _done_or_in_flight(study: optuna.Study) -> int:
        return sum(counts_toward_target(t) or t.state == TrialState.RUNNING
                   for t in study.get_trials(deepcopy=False))

    # ---------------------------------------------------------------- tell
    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn, objective: str,
              errors: list[str]) -> None:
        path = record_path_of(ret)
        rec, problem, reason = read_record(path)
        attrs: dict[str, Any] = {"overrides": list(ret.overrides or [])}
        if rec is not None:
            attrs.update(record_path=self._stored_path(path), status=rec.get("status"),
                         diverged_at_step=rec.get("diverged_at_step"),
                         # The run's final metrics: a report from the storage alone shows what its record does.
                         final={k: _finite((rec.get("final") or {}).get(k)) for k in METRIC_KEYS})
            if rec.get("reused_from"):
                attrs["reused_from"] = rec["reused_from"]
        elif ret.status == JobStatus.FAILED:
            attrs["status"] = "error"
            attrs["error"] = f"{type(ret._return_value).__name__}: {ret._return_value}"[:500]
            errors.append(attrs["error"])
        else:  # no record, or a damaged one (never counted: study.records' schema)
            attrs["status"] = problem
            if reason is not None:
                attrs["error"] = f"unreadable: {reason}"[:500]
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        status = attrs["status"]
        value = _finite((rec or {}).get("final", {}).get(objective)) if rec else None
        if status == "completed" and value is not None:
            tell(study, trial, TrialState.COMPLETE, value)
        elif status == "pruned":
            tell(study, trial, TrialState.PRUNED)
        else:
            tell(study, trial, TrialState.FAIL)

    def _fail(self, study: optuna.Study, trials: Sequence[Trial], why: str) -> None:
        for t in trials:
            try:
                if study._storage.get_trial(t._trial_id).state == TrialState.RUNNING:
                    t.set_user_attr("status", why)
                    tell(study, t, TrialState.FAIL)
                    _ask_again(study, study._storage.get_trial(t._trial_id))
            except Exception as e:  # the original error matters more; the next run fails it as stale
                log.warning("could not mark trial %d failed: %s", t.number, e)

    # --------------------------------------------------------------- cells
    def _tune_cell(self, storage: optuna.storages.BaseStorage, url: str, plan: SweepPlan,
                   cell: dict[str, str], task: DictConfig, direction: str) -> CellResult:
        name = self._study_name(plan, cell)
        fixed = {**plan.fixed, **cell}
        objective = str(task.objective)
        study = self._open_study(storage, name, direction, self._fixed_config(task, plan), cell)
        if study.user_attrs.get("objective") != objective:  # what a trial's value is, for a report without records
            study.set_user_attr("objective", objective)
        stale = self._fail_dead(study)
        if stale:
            log.info("%s: %d trial%s left RUNNING by a dead sweep marked failed (not counted)",
                     name, stale, "s" if stale > 1 else "")
        study.sampler = self._sampler(name, len(study.get_trials(deepcopy=False)), plan.search)
        target = self.n_trials
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            grid = [self._to_grid_sampler_choices(d) for d in plan.search.values()]
            target = min(target, math.prod(len(g) for g in grid))
        done = self._done_or_in_flight(study)
        budget = max(0, target - done)
        log.info("%s: %d of %d trials done or running; asking %d", name, done, target, budget)
        self._expect(budget - self.n_trials)  # trials done before, or fewer in the grid, are not run now

        # Who runs these trials, and whether it beats for them: a sweep on another host waits for them only
        # if it can tell them dead by their heartbeat.
        owner = dict(this_sweep(), heartbeat=self.heartbeat_interval)
        batch = self._batch_size()
        trial_overrides = (f"trial.storage={hydra_quote(url)}", f"trial.study={hydra_quote(name)}",
                           f"trial.prune={'true' if self.pruner is not None else 'false'}")
        errors: list[str] = []
        asked = 0
        blind: list[FrozenTrial] = []  # other sweeps' running trials this sweep cannot tell alive or dead
        waiting_since: Optional[float] = None
        trials_seen = -1
        while True:
            dead = self._fail_dead(study)  # a sweep elsewhere died meanwhile: its trials are asked again
            if dead:
                log.info("%s: %d trial%s of a dead sweep marked failed (asked again)",
                         name, dead, "s" if dead > 1 else "")
                budget += dead
                self._expect(dead)
            k = min(batch, budget, target - self._done_or_in_flight(study))
            if k <= 0:
                # Nothing more to ask: the study is full, counting other sweeps' running trials, or this sweep
                # asked its share. Wait while those trials run: they end, or their sweep died and they are
                # failed (its heartbeat stopped for grace_period, or its process is gone on this host) and
                # asked again here. A study with no trial running and no new trial over one poll is settled.
                trials = study.get_trials(deepcopy=False)
                running = [t for t in trials if t.state == TrialState.RUNNING]
                counted = sum(counts_toward_target(t) for t in trials)
                if not running and (counted >= target or len(trials) == trials_seen):
                    break
                blind = [t for t in running if not self._can_wait_for(t)]
                if blind:
                    break
                if running and waiting_since is None:
                    waiting_since = time.monotonic()
                    log.info("%s: waiting for %d trial%s of another sweep (a trial whose sweep stops beating "
                             "for %ss is failed and asked again here)", name, len(running),
                             "s" if len(running) > 1 else "", self._grace())
                trials_seen = len(trials)
                time.sleep(self._poll())
                continue
            trials = [ask(study) for _ in range(k)]
            try:
                with Heartbeat(storage, trials):  # other sweeps see these trials alive from their first moment
                    self._sample(study, name, trials, plan.search)
                    for t in trials:
                        t.set_user_attr("sweep", owner)
                    overrides = self._configure_trials(trials, plan.search, fixed, plan.passthrough)
                    overrides = [tuple(o) + trial_overrides + (f"trial.number={t.number}",)
                                 for o, t in zip(overrides, trials)]
                    returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException:
                self._fail(study, trials, "interrupted")
                raise
            self.job_idx += len(returns)
            raised = 0
            for t, ret in zip(trials, returns):
                self._tell(study, t, ret, objective, errors)
                raised += ret.status == JobStatus.FAILED
            asked += k
            budget -= k
            if raised / len(returns) > self.max_failure_rate:
                log.error("%d of %d jobs raised (max_failure_rate=%s)", raised, len(returns),
                          self.max_failure_rate)
                for ret in returns:
                    ret.return_value  # re-raises the job's exception, with its traceback
        trials = study.get_trials(deepcopy=False)
        result = CellResult(study=name, cell=cell, objective=objective, counts=state_counts(trials),
                            asked=asked, best=self._best(study), errors=errors)
        if result.best is not None and self.confirm_seeds and not blind:
            result.confirm, result.confirm_note = self._confirm_once(storage, study, plan, fixed, result.best)
        counted = sum(counts_toward_target(t) for t in trials)
        if blind:
            hosts = sorted({str((t.user_attrs.get("sweep") or {}).get("host")) for t in blind})
            result.incomplete = (f"{len(blind)} trial{'s' if len(blind) > 1 else ''} of a sweep on "
                                 f"{', '.join(hosts)} still running, which this sweep cannot tell alive or dead "
                                 "without heartbeats (hydra.sweeper.heartbeat_interval=null here or there)")
        elif counted < target:
            result.incomplete = (f"{counted} of {target} trials counted (the others failed without a run "
                                 "record: see the counts above)")
        elif result.best is not None and self.confirm_seeds and result.confirm is None:
            result.incomplete = f"its best trial is not confirmed ({result.confirm_note})"
        if not (result.confirm and result.confirm_note is None):  # no confirmation runs launched now
            self._expect(-len(self.confirm_seeds))
        return result

    def _expect(self, change: int) -> None:
        """Tell the sweep's progress line how many runs it plans now (study/progress.py)."""
        self.planned += change
        progress.expect(self.planned)

    def _fail_dead(self, study: optuna.Study) -> int:
        """Fail the RUNNING trials of dead sweeps: by process on this host, by heartbeat on any host."""
        return self._fail_stale(study) + fail_dead_trials(study)

    def _grace(self) -> Optional[int]:
        if not self.heartbeat_interval:
            return None
        return self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval

    def _poll(self) -> float:
        """Seconds between looks at a study while waiting for other sweeps."""
        return float(min(self.heartbeat_interval or 5, 5))

    def _can_wait_for(self, t: FrozenTrial) -> bool:
        """Whether this sweep can tell when another sweep's running trial is dead, and so wait for it:
        on this host by its process; elsewhere by its heartbeat, if both sweeps beat (an owner from before
        the owner recorded its heartbeat beat by default); a trial without an owner by its age."""
        owner = t.user_attrs.get("sweep")
        if not isinstance(owner, dict) or owner.get("host") == socket.gethostname():
            return True
        return bool(self.heartbeat_interval) and owner.get("heartbeat", "unrecorded") is not None

    def _confirm_once(self, storage: optuna.storages.BaseStorage, study: optuna.Study, plan: SweepPlan,
                      fixed: dict[str, str], best: FrozenTrial) -> tuple[Optional[dict[str, Any]], Optional[str]]:
        """The study's one confirmation of its global best, once per best trial and seeds, whichever of
        several sweeps claims it first. The others wait for it: it is done, or its sweep died (on this host:
        its process is gone; elsewhere: its claim's beat stopped for the grace period) and one of them takes
        the claim over and confirms."""
        # Queued (WAITING) trials do not count: in a full study nobody may ever ask them.
        busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if busy:
            return None, (f"{len(busy)} trial{'s' if len(busy) > 1 else ''} of another sweep still running: "
                          "a sweep that can wait for them confirms the best")
        key = claim_key(best.number, self.confirm_seeds)
        seen: Optional[str] = None
        seen_at = time.monotonic()
        logged = False
        while True:
            done = study.user_attrs.get("confirm")
            if isinstance(done, dict) and done.get("trial") == best.number and done.get("seeds") == self.confirm_seeds:
                return done, "confirmed before" if not logged else "confirmed by another sweep"
            took_over = False
            if not claim_confirmation(storage, study, best.number, self.confirm_seeds, self.heartbeat_interval):
                raw = claim_raw(storage, study, key)
                claim = json.loads(raw) if raw else {}
                owner = claim.get("sweep") if isinstance(claim.get("sweep"), dict) else {}
                here = owner.get("host") == socket.gethostname()
                if not here and not (self.heartbeat_interval and claim.get("heartbeat")):
                    return None, (f"another sweep (on {owner.get('host')}) is confirming trial {best.number}; "
                                  "without heartbeats this sweep cannot wait for it")
                if raw != seen:
                    seen, seen_at = raw, time.monotonic()
                elif (not here and raw is not None and time.monotonic() - seen_at > (self._grace() or 0)
                      and compare_and_set(storage, study, key, raw, _claim_value(self.heartbeat_interval))):
                    took_over = True
                    log.info("%s: the sweep confirming trial %d stopped beating; confirming it here",
                             study.study_name, best.number)
                if not took_over:
                    if not logged:
                        logged = True
                        log.info("%s: another sweep (on %s) is confirming trial %d; waiting for it",
                                 study.study_name, owner.get("host"), best.number)
                    time.sleep(self._poll())
                    continue
            with ClaimBeat(storage, study, key, claim_raw(storage, study, key) or "", self.heartbeat_interval):
                return self._confirm(study, plan, fixed, best), None

    def _best(self, study: optuna.Study) -> Optional[FrozenTrial]:
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
        if not done:
            return None
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        return pick(done, key=lambda t: t.value)

    def _confirm(self, study: optuna.Study, plan: SweepPlan, fixed: dict[str, str],
                 best: FrozenTrial) -> dict[str, Any]:
        """Rerun the best trial's parameters with each confirm seed (reused when finished)."""
        params = {k: v for k, v in fixed.items() if override_key(k) != "seed"}
        params.update({k: v for k, v in best.params.items()})
        base = tuple(f"{k}={v}" for k, v in params.items()) + tuple(plan.passthrough)
        jobs = [base + (f"seed={s}",) for s in self.confirm_seeds]
        returns = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
        self.job_idx += len(returns)
        runs = []
        for seed, ret in zip(self.confirm_seeds, returns):
            path = record_path_of(ret)
            rec, problem, _ = read_record(path)
            final = (rec or {}).get("final") or {}
            runs.append({"seed": seed, "record_path": self._stored_path(path) if rec else None,
                         "status": rec.get("status") if rec else problem,
                         "reused": bool(rec and rec.get("reused_from")),
                         **{k: _finite(final.get(k)) for k in METRIC_KEYS}})
        tests = [r["test_acc"] for r in runs if r["status"] == "completed" and r["test_acc"] is not None]
        confirm = {"trial": best.number, "params": dict(best.params), "seeds": self.confirm_seeds,
                   "runs": runs, "n_completed": len(tests),
                   "test_acc_mean": statistics.fmean(tests) if tests else None,
                   "test_acc_sd": statistics.stdev(tests) if len(tests) > 1 else None}
        study.set_user_attr("confirm", confirm)
        return confirm

    # --------------------------------------------------------------- sweep
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        self._process_searchspace_config()
        plan = plan_sweep(self._parse_sweeper_params_config() + list(arguments), self.cells)
        if not plan.search:
            raise _user_error("nothing to tune: give a search space, e.g. 'lr=tag(log, interval(1e-3, 1.0))' "
                              "or hydra.sweeper.params.lr=...")
        direction = self._direction()
        url, storage = open_user_storage(self.storage, self.heartbeat_interval, self.grace_period)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.job_idx = next_job_index(sweep_dir)
        cells = plan.cells()
        self.planned = 0
        self._expect(len(cells) * (self.n_trials + len(self.confirm_seeds)))
        grid = " x ".join(f"{override_key(k)}={','.join(v)}" for k, v in plan.grid.items())
        log.info("storage: %s; %d stud%s (%s); search space: %s", url, len(cells),
                 "y" if len(cells) == 1 else "ies", grid or "one cell",
                 ", ".join(f"{override_key(k)} {d}" for k, d in plan.search.items()))
        # Every cell's config is composed and checked before the first trial runs.
        tasks = [self._cell_config([f"{k}={v}" for k, v in {**plan.fixed, **cell}.items()]
                                   + plan.passthrough) for cell in cells]
        results = [self._tune_cell(storage, url, plan, cell, task, direction)
                   for cell, task in zip(cells, tasks)]
        self._report(results, url, sweep_dir)
        incomplete = [r for r in results if r.incomplete]
        if incomplete:
            from study.errors import StudyIncomplete

            first = incomplete[0]
            more = f" (and {len(incomplete) - 1} more studies)" if len(incomplete) > 1 else ""
            raise StudyIncomplete(f"study {first.study} is not complete: {first.incomplete}{more}; "
                                  "run the same command again to finish it")

    def _report(self, results: list[CellResult], url: str, sweep_dir: Path) -> None:
        totals: dict[str, Any] = {}
        for r in results:
            add_counts(totals, r.counts)
            line = f"{r.study}: {describe_counts(r.counts)} ({r.asked} run now)"
            if r.best is None:
                line += "; no completed trial, so no best and no confirmation"
            else:
                params = ", ".join(f"{override_key(k)}={v:.4g}" if isinstance(v, float)
                                   else f"{override_key(k)}={v}" for k, v in r.best.params.items())
                line += f"; best {params} ({r.objective} {r.best.value:.4f}, trial {r.best.number})"
            if r.confirm:
                c = r.confirm
                reused = sum(run["reused"] for run in c["runs"])
                acc = "n/a" if c["test_acc_mean"] is None else f"{c['test_acc_mean']:.4f}"
                if c["test_acc_sd"] is not None:
                    acc += f" +- {c['test_acc_sd']:.4f} sd"
                line += (f"; confirm test_acc {acc} ({c['n_completed']}/{len(c['runs'])} seeds completed, "
                         f"{reused} reused finished runs)")
            if r.confirm_note:
                line += f" ({r.confirm_note})" if r.confirm else f"; not confirmed here: {r.confirm_note}"
            log.info(line)
            for e in r.errors[:3]:
                log.warning("%s: a job raised: %s", r.study, e)
        log.info("all studies: %s", describe_counts(totals))
        log.info("storage: %s", url)
        log.info("dashboard: optuna-dashboard '%s'  (serves on 127.0.0.1:8080; no authentication)", url)
        OmegaConf.save(OmegaConf.create(results_yaml(results, url, str(self.results_root))),
                       sweep_dir / "optimization_results.yaml")


def results_yaml(results: list[CellResult], url: str, results_root: str) -> dict[str, Any]:
    """The plugin's optimization_results.yaml, one entry per study (and the plugin's
    top-level best_params/best_value when there is one study)."""
    studies = []
    for r in results:
        studies.append({
            "study": r.study,
            "cell": {override_key(k): v for k, v in r.cell.items()},
            "best_params": dict(r.best.params) if r.best else None,
            "best_value": r.best.value if r.best else None,
            "best_trial": r.best.number if r.best else None,
            "trials": r.counts,
            "confirm": r.confirm,
        })
    out: dict[str, Any] = {"name": "optuna", "storage": url, "results_root": results_root}
    if len(studies) == 1:
        out.update(best_params=studies[0]["best_params"], best_value=studies[0]["best_value"])
    out["studies"] = studies
    return out


def next_job_index(sweep_dir: Path) -> int:
    """Past the job numbers already in `sweep_dir`: a rerun into the same dir adds, never reuses."""
    nums = [int(m.group(1)) for p in sweep_dir.iterdir() if (m := re.match(r"(\d+)(?:_|$)", p.name))]
    return max(nums, default=-1) + 1
