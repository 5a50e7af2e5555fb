"""A user's mistake is one line naming the key and what is allowed, and every
user error survives the trip back from a worker process (pickling)."""

from __future__ import annotations

import pickle

import pytest

from study.config import compose_config
from study.errors import ConfigError, UserError, UserExit, describe_user_error


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_subclasses(sub)
    return found


# ------------------------------------------------------------------ pickling


def user_errors() -> list[BaseException]:
    """One instance of every user error class the study defines."""
    from hydra_plugins.bn_study_sweeper.pruning import PrunerError
    from study.data import DataError

    return [UserError("a plain one"), ConfigError("model.hidden", [128, 64], "a non-empty list"),
            DataError("data.root=/x cannot be written"), PrunerError("hydra.sweeper.pruner is not allowed: x")]


def test_every_user_error_class_pickles_with_its_message():
    errors = user_errors()
    # A new user error class must be added above (and so be checked).
    study_classes = {c for c in all_subclasses(UserError) if c.__module__.startswith(("study", "hydra_plugins"))}
    assert study_classes <= {type(e) for e in errors}
    for e in errors:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.__dict__ == e.__dict__
    config_error = pickle.loads(pickle.dumps(errors[1]))
    assert (config_error.key, config_error.value) == ("model.hidden", "[128,64]")
    exit_ = pickle.loads(pickle.dumps(UserExit("batch_size=0 is not allowed")))
    assert exit_.code == 2 and exit_.message == "batch_size=0 is not allowed"


class NeedsTwo(UserError):
    """A user error whose __init__ takes other arguments than its message."""

    def __init__(self, key: str, why: str) -> None:
        self.key = key
        super().__init__(f"{key}: {why}")


def test_a_subclass_with_its_own_init_pickles_too():
    back = pickle.loads(pickle.dumps(NeedsTwo("lr", "too big")))
    assert type(back) is NeedsTwo and str(back) == "lr: too big" and back.key == "lr"


def _raise_config_error() -> None:
    raise ConfigError("batch_size", 70000, "an integer in [1, 55000]")


def test_a_config_error_raised_in_a_loky_worker_reaches_the_parent():
    from joblib import Parallel, delayed

    with pytest.raises(ConfigError) as e:
        Parallel(n_jobs=2, backend="loky")(delayed(_raise_config_error)() for _ in range(2))
    assert str(e.value) == "batch_size=70000 is not allowed: an integer in [1, 55000]"


# ------------------------------------------------------- config group options


@pytest.mark.parametrize("override, line", [
    ("optimizer=rmsprop", "Could not find 'optimizer/rmsprop': optimizer is one of adam, adamw, sgd"),
    ("data=imagenet", "Could not find 'data/imagenet': data is one of mnist"),
    ("hydra/launcher=nope", "Could not find 'hydra/launcher/nope': hydra/launcher is one of basic, joblib, packed"),
])
def test_a_missing_group_option_lists_what_exists(override, line):
    with pytest.raises(Exception) as e:
        compose_config([override])
    assert describe_user_error(e.value) == line


def test_a_missing_experiment_lists_the_presets_and_their_quick_versions():
    with pytest.raises(Exception) as e:
        compose_config(["experiment=nope"])
    line = describe_user_error(e.value)
    assert line.startswith("Could not find 'experiment/nope': experiment is one of deep, ghost, ")
    assert "notebook" in line and line.endswith("; or quick/<name> for each")
    with pytest.raises(Exception) as e:
        compose_config(["experiment=quick/nope"])
    assert describe_user_error(e.value).startswith(
        "Could not find 'experiment/quick/nope': experiment/quick is one of deep, ghost, ")
