"""The pruner of a study, shared by the sweeper and the jobs that report to it.

Optuna does not store a study's pruner: a job that loads the study gets
Optuna's default `MedianPruner()`, not the one the sweep was configured with.
The sweeper therefore stores the pruner's settings in the study
(user attribute `pruner`) and each job rebuilds it from there
(study/runner.py). Only classes of `optuna.pruners` can be named.
"""

from __future__ import annotations

from typing import Any, Mapping

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
