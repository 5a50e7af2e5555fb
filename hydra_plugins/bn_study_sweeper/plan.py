"""The search plan: which overrides are cells, search space or fixed, each study's
name and fixed config, the seeded sampler, and each asked trial's overrides
(docs/tuning.md: How it works)."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from collections.abc import MutableSequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.config import Direction
# Private (the plugin's `_impl` module): its rules from Optuna syntax to a
# distribution, and from a distribution to grid choices. Not public, and
# reused rather than copied so that a search space means here what it means
# under the plugin.
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_optuna_distribution_from_override
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (BaseDistribution, CategoricalDistribution, FloatDistribution,
                                  IntDistribution)
from optuna.trial import Trial

from study.errors import UserError
from study.records import LAUNCH_ONLY_KEYS
from study.resources import usable_cores

SAMPLER_WHITELIST = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
# The objective (study/config.py: OBJECTIVES) and which way is better.
OBJECTIVE_DIRECTIONS = {"val_acc": "maximize", "test_acc": "maximize", "train_loss": "minimize"}
# Keys that select a preset rather than say what a run computes; the fixed
# config stored in each study covers what such a preset sets.
NOT_IN_STUDY_NAME = ("experiment",)

grid_choices = OptunaSweeperImpl._to_grid_sampler_choices


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
        try:
            value = create_optuna_distribution_from_override(override)
        except ValueError as e:  # Optuna's checks of a range: low > 0 for log, low <= high, ...
            raise UserError(f"{override.input_line} is not allowed: {e}".rstrip(".") +
                            " (e.g. lr=tag(log, interval(1e-4, 1.0)); docs/tuning.md)") from None
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
    raise UserError(f"cannot pass {value!r} to a job as an override (it holds both quote characters)")


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def check_direction(direction: Any, objective: str) -> str:
    """The study's one direction (the plugin's `direction` key), checked against the objective."""
    if isinstance(direction, MutableSequence):  # the plugin's forms: one direction, or a list
        directions = [d.name if isinstance(d, Direction) else d for d in direction]
    else:
        directions = [direction if isinstance(direction, str) else direction.name]
    if len(directions) != 1:
        raise UserError(f"hydra.sweeper.direction={directions} is not allowed: one direction "
                        f"(the objective, {objective}, is one number)")
    best = OBJECTIVE_DIRECTIONS.get(objective)
    if best is not None and directions[0] != best:
        raise UserError(f"hydra.sweeper.direction={directions[0]} does not fit objective={objective}: "
                        f"use hydra.sweeper.direction={best}")
    return directions[0]


def study_name(plan: SweepPlan, cell: dict[str, str], given: Optional[str], launch_only: set[str]) -> str:
    """`given__<cell>`, else `tune-<tuned keys>__<cell and fixed overrides>` (launch-only keys left out)."""
    if given:
        items = cell
        prefix = str(given)
    else:
        skip = launch_only | set(NOT_IN_STUDY_NAME)
        items = {k: v for k, v in plan.fixed.items() if override_key(k) not in skip}
        items.update(cell)
        prefix = "tune-" + "+".join(override_key(k) for k in plan.search)
    pairs = sorted((override_key(k), v) for k, v in items.items())
    suffix = ",".join(f"{k}={v}" for k, v in pairs)
    return f"{prefix}__{suffix}" if suffix else prefix


def fixed_config(task: DictConfig, plan: SweepPlan, launch_only: set[str]) -> dict[str, Any]:
    """What every trial of the study shares: the config minus tuned and launch-only keys."""
    skip = set(LAUNCH_ONLY_KEYS) | launch_only | {override_key(k) for k in plan.search}
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


def seeded_sampler(sampler_conf: DictConfig, study: str, salt: int, search: dict[str, BaseDistribution]):
    """The configured sampler, seeded from (seed, study, salt: a trial number or the trials so far)
    when seeded."""
    conf = OmegaConf.to_container(sampler_conf, resolve=True)
    seed = conf.get("seed")
    if seed is not None:
        digest = hashlib.sha256(f"{seed}|{study}|{salt}".encode()).hexdigest()
        conf["seed"] = int(digest[:8], 16)
    sampler = instantiate(conf, _execution_whitelist_=SAMPLER_WHITELIST)
    if isinstance(sampler, functools.partial) and sampler.func == optuna.samplers.GridSampler:
        sampler = sampler({k: grid_choices(d) for k, d in search.items()})
    return sampler


def trial_target(sampler: Any, n_trials: int, search: dict[str, BaseDistribution]) -> int:
    """Trials a study needs: `n_trials`, or fewer where a grid sampler's grid is smaller."""
    if not isinstance(sampler, optuna.samplers.GridSampler):
        return n_trials
    return min(n_trials, math.prod(len(grid_choices(d)) for d in search.values()))


def suggest(trial: Trial, name: str, d: BaseDistribution) -> Any:
    """`trial.suggest_*` for a distribution of the plan (what Optuna's private `_suggest` does)."""
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    assert isinstance(d, CategoricalDistribution), d
    return trial.suggest_categorical(name, d.choices)


def draw(study: optuna.Study, trials: Sequence[Trial], search: dict[str, BaseDistribution],
         sampler_conf: DictConfig) -> None:
    """Draw each asked trial's params with the sampler seeded from its own trial number.

    Seeded once per sweep, two sweeps that start on a study together drew
    the same points (same seed, same trials so far): the study trained
    each of them twice. Trial numbers are unique in the study, so
    concurrent sweeps draw different points, and one sweep alone is still
    reproducible. A grid sampler keeps its own bookkeeping (its grid
    point is chosen when the trial is asked)."""
    grid = isinstance(study.sampler, optuna.samplers.GridSampler)
    for t in trials:
        if not grid:
            study.sampler = seeded_sampler(sampler_conf, study.study_name, t.number, search)
        for param, distribution in search.items():
            suggest(t, param, distribution)


def trial_overrides(trials: Sequence[Trial], fixed: dict[str, str], passthrough: list[str],
                    extend: Optional[Callable[[DictConfig, Trial], None]], config: DictConfig) -> list[tuple[str, ...]]:
    """Each drawn trial's job overrides, the plugin's way: its params, then the fixed
    overrides (also stored as user attributes), the custom search space, the deletions."""
    overrides = []
    for trial in trials:
        for name, value in fixed.items():
            trial.set_user_attr(name, value)
        if extend is not None:
            extend(config, trial)
        overlap = trial.params.keys() & trial.user_attrs
        if overlap:
            raise ValueError("Overlapping fixed parameters and search space parameters found!"
                             f"Overlapping parameters: {list(overlap)}")
        params = {**trial.params, **fixed}
        overrides.append(tuple(f"{k}={v}" for k, v in params.items()) + tuple(passthrough))
    return overrides


def launcher_batch(launcher: DictConfig) -> int:
    """Trials asked per batch when `n_jobs` is null: what the launcher runs at
    once. Its `n_jobs` (packed, joblib; -1: the usable cores), submitit_slurm's
    `array_parallelism`, the usable cores for submitit_local (local processes),
    else 1 (Hydra's basic launcher runs one job at a time)."""
    if "n_jobs" in launcher:
        n = launcher.n_jobs
        return usable_cores() if n is None or n < 0 else max(1, int(n))
    if "array_parallelism" in launcher:
        return max(1, int(launcher.array_parallelism))
    if str(launcher.get("_target_", "")).endswith(".LocalLauncher"):
        return usable_cores()
    return 1
