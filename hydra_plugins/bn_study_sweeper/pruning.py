"""Pruning: the study's pruner, stored in the study by the sweeper and rebuilt by
each job that reports to it (Optuna does not store pruners; docs/tuning.md: Pruning)."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import optuna

from study.errors import UserError

from .storage import trial_id

PRUNER_ATTR = "pruner"
PRUNERS_MODULE = "optuna.pruners."


class PrunerError(UserError, ValueError):
    """A pruner config that names no Optuna pruner or passes it bad arguments."""


def pruner_spec(conf: Mapping[str, Any]) -> dict[str, Any]:
    """`{_target_: optuna.pruners.X, **kwargs}` as a plain dict, checked by building it."""
    spec = {str(k): v for k, v in dict(conf).items()}
    try:
        make_pruner(spec)  # a bad class or argument fails before any trial
    except TypeError as e:
        raise PrunerError(f"hydra.sweeper.pruner is not allowed: {e}") from None
    return spec


def make_pruner(spec: Mapping[str, Any]):
    """The pruner a spec names; only classes of `optuna.pruners` are allowed."""
    spec = dict(spec)
    target = str(spec.pop("_target_", ""))
    name = target[len(PRUNERS_MODULE):] if target.startswith(PRUNERS_MODULE) else ""
    cls = getattr(optuna.pruners, name, None) if name and "." not in name else None
    if not isinstance(cls, type) or not issubclass(cls, optuna.pruners.BasePruner):
        raise PrunerError(f"hydra.sweeper.pruner._target_={target} is not allowed: "
                         f"a pruner class of optuna.pruners, e.g. optuna.pruners.MedianPruner")
    return cls(**spec)


def store_pruner(study: optuna.Study, spec: dict[str, Any]) -> None:
    """Keep the sweep's pruner in the study, where each job finds it (stored_pruner)."""
    study.set_user_attr(PRUNER_ATTR, spec)


def stored_pruner(study: optuna.Study) -> optuna.pruners.BasePruner:
    """The pruner the sweep stored in `study`; Optuna's default for other studies."""
    spec = study.user_attrs.get(PRUNER_ATTR)
    return make_pruner(spec) if spec else optuna.pruners.MedianPruner()


def trial_reporter(trial: Any) -> Optional[Callable[[int, Sequence[Any]], bool]]:
    """Per-epoch report of val_acc to a job's Optuna trial (config `trial`).

    Returns the `on_epoch` callback of study.train.train_runs, which answers
    True (stop: pruned) when the study's pruner says so; None when the job
    has no trial to report to.
    """
    if not trial.prune or trial.number is None or not trial.storage:
        return None
    storage = optuna.storages.RDBStorage(trial.storage)
    study = optuna.load_study(study_name=trial.study, storage=storage)
    study.pruner = stored_pruner(study)  # the sweep's pruner (Optuna does not store pruners)
    # Optuna's Trial constructor, "not recommended" to call directly: the only way to report to a trial
    # that another process asked (ask/tell hands Trial objects only to the process that asks).
    live = optuna.trial.Trial(study, trial_id(storage, study, trial.number))

    def report(epoch: int, outcomes: Sequence[Any]) -> bool:
        (outcome,) = outcomes
        if outcome.status != "completed" or not outcome.history:
            return False
        live.report(outcome.history[-1]["val_acc"], epoch)
        return live.should_prune()

    return report
