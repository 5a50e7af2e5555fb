"""The storage and each cell's study in it: open them (one line for a storage that
cannot be opened), ask, tell, and fail a trial so that its params are asked
again (docs/tuning.md: Storage; docs/scaling.md: PostgreSQL)."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import optuna
import sqlalchemy.engine
import sqlalchemy.exc
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.trial import FrozenTrial, Trial, TrialState

from study.errors import UserError

from .plan import override_key

log = logging.getLogger("study.tune")


def resolve_storage(url: Any) -> str:
    """An absolute SQLite path (its folder made) with a lock timeout; other URLs as given."""
    if not isinstance(url, str) or "://" not in url:
        raise UserError(f"hydra.sweeper.storage={url} is not allowed: an SQLAlchemy URL, e.g. "
                        "sqlite:///outputs/optuna/studies.db (jobs report to it; a rerun resumes from it)")
    if not url.startswith("sqlite:///"):
        return url
    path_part, _, query = url[len("sqlite:///"):].partition("?")
    if not path_part or path_part == ":memory:":
        raise UserError(f"hydra.sweeper.storage={url} is not allowed: a database file "
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


def _check_search_space(study: optuna.Study, search: dict[str, BaseDistribution]) -> None:
    """Store the study's search space, or refuse another: the study name says which keys are tuned,
    not over what, and trials drawn from another range would be pooled with its own."""
    want = {k: distribution_to_json(d) for k, d in search.items()}
    stored = study.user_attrs.get("search_space")
    if stored is None:  # a new study, or one from before the space was stored: its trials say
        stored = {}  # (params a custom_search_space function suggests are not the sweep's to check)
        for t in study.get_trials(deepcopy=False):
            stored.update({k: distribution_to_json(d) for k, d in t.distributions.items()
                           if k in want and k not in stored})
        if not stored or stored == want:
            study.set_user_attr("search_space", want)
            return
    if stored != want:
        diff = sorted(k for k in set(stored) | set(want) if stored.get(k) != want.get(k))
        shown = "; ".join(f"{k}: {_shown(stored.get(k))} there, {_shown(want.get(k))} here" for k in diff)
        raise UserError(f"study {study.study_name} was tuned over another search space ({shown}): give "
                        "hydra.sweeper.study_name=NAME for a new study, or delete it (optuna delete-study)")


def _shown(distribution_json: Optional[str]) -> str:
    return "none" if distribution_json is None else repr(json_to_distribution(distribution_json))


def open_user_storage(storage: Any, heartbeat_interval: Optional[int],
                      grace_period: Optional[int]) -> tuple[str, optuna.storages.RDBStorage]:
    """The storage's URL and the storage (resolve_storage, open_storage). One
    that cannot be opened is a user error, one line naming
    hydra.sweeper.storage and the fix: a missing driver (the postgres extra),
    a database server that refuses connections, a path that cannot be made."""
    try:
        url = resolve_storage(storage)
        return url, open_storage(url, heartbeat_interval, grace_period)
    except UserError:
        raise
    except Exception as e:
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
            raise UserError(f"{key} needs the database driver {missing}, which is not installed: {extra}") from None
        if isinstance(e, OSError):
            raise UserError(f"{key}: cannot make {e.filename or 'its folder'} ({e.strerror or e}); give a "
                            "database file in a folder that can be written") from None
        why = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
        if isinstance(e, sqlalchemy.exc.ArgumentError):
            raise UserError(f"{key} is not allowed: an SQLAlchemy URL, e.g. sqlite:///outputs/optuna/studies.db "
                            f"({why})") from None
        raise UserError(f"{key} cannot be opened ({type(e).__name__}: {why}); start the database server "
                        "or fix the URL") from None


def open_study(storage: optuna.storages.RDBStorage, name: str, direction: str, fixed_config: dict[str, Any],
               cell: dict[str, str], objective: str, search: dict[str, BaseDistribution]) -> optuna.Study:
    """The cell's study, created or resumed; one tuned with another config, search space or
    direction is refused. It holds what reports read: the fixed config, the cell and the objective."""
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise UserError(f"study {name} exists with direction {study.direction.name.lower()}, "
                        f"this sweep has {direction}: give another hydra.sweeper.study_name")
    stored = study.user_attrs.get("fixed_config")
    if stored is None:
        study.set_user_attr("fixed_config", fixed_config)
        study.set_user_attr("cell", {override_key(k): v for k, v in cell.items()})
    elif stored != fixed_config:
        diff = sorted(k for k in set(stored) | set(fixed_config) if stored.get(k) != fixed_config.get(k))
        shown = "; ".join(f"{k}: {stored.get(k)!r} there, {fixed_config.get(k)!r} here" for k in diff[:4])
        raise UserError(f"study {name} was tuned with another config ({shown}"
                        f"{'; ...' if len(diff) > 4 else ''}): give hydra.sweeper.study_name=NAME "
                        f"for a new study, or delete it (optuna delete-study)")
    _check_search_space(study, search)
    if study.user_attrs.get("objective") != objective:  # what a trial's value is, for a report without records
        study.set_user_attr("objective", objective)
    return study


def trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """A trial's id in the storage, by the storage's public lookups (Optuna keeps it in `_trial_id`)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                           number)


def ask(study: optuna.Study, distributions: Optional[dict[str, BaseDistribution]] = None) -> Trial:
    """`study.ask`, without Optuna's warning that a heartbeat storage is meant
    for `optimize`: this sweeper beats for its asked trials itself (beats.Heartbeat)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return study.ask(distributions)


def tell(study: optuna.Study, trial: Trial | int, state: TrialState, value: Optional[float] = None) -> None:
    """`study.tell`, outside `optimize`: GridSampler's "grid exhausted" stop is
    only possible inside `optimize` and is ignored here, as the plugin does
    (the trial's state is stored before it is raised)."""
    try:
        study.tell(trial, values=None if value is None else [value], state=state)
    except RuntimeError as e:
        if "`Study.stop` is supposed to be invoked" not in str(e):
            raise


def fail_and_ask_again(storage: optuna.storages.BaseStorage, study: optuna.Study, trial: FrozenTrial,
                       why: str) -> None:
    """Fail a RUNNING trial with `status: why` and queue its params, so that the
    next ask retries them (and the runner reuses the run if its job had finished)."""
    storage.set_trial_user_attr(trial_id(storage, study, trial.number), "status", why)
    tell(study, trial.number, TrialState.FAIL)
    if trial.params:
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})


def fail_interrupted(storage: optuna.storages.BaseStorage, study: optuna.Study, trials: Sequence[Trial],
                     why: str) -> None:
    """Fail the trials of a batch that stopped (Ctrl-C, a launcher that raised) and are still RUNNING."""
    for t in trials:
        try:
            frozen = storage.get_trial(trial_id(storage, study, t.number))
            if frozen.state == TrialState.RUNNING:
                fail_and_ask_again(storage, study, frozen, why)
        except Exception as e:  # the original error matters more; the next run fails it as stale
            log.warning("could not mark trial %d failed: %s", t.number, e)
