"""Pruning: the study's pruner, shared by the sweeper and the jobs that report to it.

Optuna does not store a study's pruner: a job that loads the study gets
Optuna's default `MedianPruner()`, not the one the sweep was configured with.
The sweeper therefore stores the pruner's settings in the study
(user attribute `pruner`) and each job rebuilds it from there
(`trial_reporter`, called by study/runner.py). Only classes of
`optuna.pruners` can be named.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from study.errors import UserError

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
    import optuna

    spec = dict(spec)
    target = str(spec.pop("_target_", ""))
    name = target[len(PRUNERS_MODULE):] if target.startswith(PRUNERS_MODULE) else ""
    cls = getattr(optuna.pruners, name, None) if name and "." not in name else None
    if not isinstance(cls, type) or not issubclass(cls, optuna.pruners.BasePruner):
        raise PrunerError(f"hydra.sweeper.pruner._target_={target} is not allowed: "
                         f"a pruner class of optuna.pruners, e.g. optuna.pruners.MedianPruner")
    return cls(**spec)


def stored_pruner(study):
    """The pruner the sweep stored in `study`; Optuna's default for other studies."""
    import optuna

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
    import optuna

    study = optuna.load_study(study_name=trial.study, storage=trial.storage)
    study.pruner = stored_pruner(study)  # the sweep's pruner (Optuna does not store pruners)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
    live = optuna.trial.Trial(study, trial_id)

    def report(epoch: int, outcomes: Sequence[Any]) -> bool:
        (outcome,) = outcomes
        if outcome.status != "completed" or not outcome.history:
            return False
        live.report(outcome.history[-1]["val_acc"], epoch)
        return live.should_prune()

    return report
