"""What a preset's sweep will train, in arithmetic: `python -m study.suite`
weighs its presets by it in its time-left estimate (study/suite.py).

Counting runs made that estimate swing by hours: a run of `max_lr` (an MLP,
one epoch) costs about a hundredth of a run of `rnn` (an LSTM, 5 epochs at
batch 128). A run's work here is its matmul and conv arithmetic
(`study.bench.flops_per_sample`) over its training samples, each step
charged `STEP_OVERHEAD_SAMPLES` samples more for its fixed cost (as the
launcher orders packs), plus its evaluations' forward passes. Runs that
will be reused (already finished, or trained by an earlier preset of the
same suite) are no work. Per TFLOP of this work the first seed set's
presets took 0.04-0.18 min (MLP; `overhead`, which times one run at a
time, 0.46), 0.19-0.27 min (LSTM) and 0.10 min (conv net) on the 2-core
development machine (docs/speed.md#the-claims-suite), where per run they
took 0.008 min (`max_lr`) to 0.7 min (`rnn`): hence a pace per model family
(study.suite.SuiteProgress.pace_of).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from study.config import compose_config, composing, validate
from study.spec import optimizer_steps

# A training step's fixed cost (kernel launches, Python) in training samples'
# worth of arithmetic: ~250 us a step vs ~6 us a sample on one thread here
# (study.bench). The launcher orders its packs by it (packs.cost), the suite
# weighs its presets by it (run_work).
STEP_OVERHEAD_SAMPLES = 40

Compose = Callable[[Sequence[str], bool], DictConfig]  # study.config.composing's


@dataclass
class PresetPlan:
    runs: int  # the runs its sweep launches
    work: float  # the flops of those that will train (reused runs: none)
    family: Optional[str]  # the model family of all its runs (None: several)


def sweep_jobs(overrides: Sequence[str], compose: Compose = compose_config
               ) -> tuple[list[str], DictConfig, list[tuple[list[str], int]]]:
    """A preset's sweep (`overrides`: its command line after `-m`) as (the
    overrides every job shares, the config they compose to, [(a job's own
    overrides, how many runs)]): one entry per grid job, or per tuning cell
    its trials and confirmation seeds."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([o for o in overrides if not o.startswith("hydra.")])
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose(fixed, True)
    sweeper = cfg.hydra.sweeper
    shared = copy.deepcopy(cfg)
    with open_dict(shared):
        del shared["hydra"]  # the task's config, as a job gets it
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    params += [o.input_line for o in parsed if o.is_sweep_override()]  # the command line's win (later)
    if "bn_optuna" in str(sweeper._target_):
        from hydra_plugins.bn_study_sweeper.plan import plan_sweep  # loads optuna: only for the tuning preset

        plan = plan_sweep(params, bool(sweeper.cells))
        per_cell = int(sweeper.n_trials) + len(sweeper.confirm_seeds or [])
        fixed_values = [f"{k}={v}" for k, v in plan.fixed.items()]
        return fixed, shared, [([*fixed_values, *(f"{k}={v}" for k, v in cell.items())], per_cell)
                               for cell in plan.cells()]
    batches = BasicSweeper.split_arguments(parser.parse_overrides(params), None)
    return fixed, shared, [(list(job), 1) for batch in batches for job in batch]


def run_work(cfg: DictConfig, flops_per_sample: float) -> float:
    """One run's flops: its training steps (each `STEP_OVERHEAD_SAMPLES` samples
    more than its batch) and one evaluation of the validation and test images
    per epoch, a forward pass (a third of a training sample's flops) each."""
    steps, per_epoch = optimizer_steps(cfg)
    evaluated = math.ceil(steps / per_epoch) * (int(cfg.data.val_size) + 10_000)
    return flops_per_sample * (steps * (STEP_OVERHEAD_SAMPLES + int(cfg.batch_size)) + evaluated / 3)


class Workload:
    """Plans presets in suite order, remembering the runs planned so far: a run
    an earlier preset trains (the same config and code) is reused, not trained again."""

    def __init__(self) -> None:
        self.planned: set[str] = set()  # run hashes of the runs earlier presets train
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        self.flops: dict[str, float] = {}

    def presets(self, commands: Sequence[Sequence[str]]) -> list[PresetPlan]:
        """Each preset's plan, in the order given (the suite's)."""
        with composing() as compose:
            return [self.preset(c, compose) for c in commands]

    def preset(self, overrides: Sequence[str], compose: Compose = compose_config) -> PresetPlan:
        fixed, shared, jobs = sweep_jobs(overrides, compose)
        self.composed.setdefault(tuple(fixed), shared)
        runs, work, families = 0, 0.0, set()
        for job, count in jobs:
            runs += count
            cfg = self.job_config(fixed, [o for o in job if o.split("=", 1)[0] != "seed"], compose)
            validate(cfg)  # a bad value is the suite's one line before any preset starts (ConfigError)
            families.add(str(getattr(cfg.model.family, "value", cfg.model.family)))
            w = run_work(cfg, self._flops_per_sample(cfg))
            seeds = [o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == "seed"]
            if count > 1 or not seeds:  # a tuning cell's trials (sampled lrs), or no seed of its own: not reused
                work += count * w
                continue
            work += 0.0 if self._reused(cfg, int(seeds[-1])) else w
        return PresetPlan(runs, work, families.pop() if len(families) == 1 else None)

    def job_config(self, fixed: Sequence[str], job: Sequence[str], compose: Compose = compose_config) -> DictConfig:
        """A job's config as its sweep composes it (`fixed`: the preset's shared
        overrides, `job`: its own). Where the job only sets values (`lr=0.1`,
        `model.norm=batch`), they are set on the preset's config, composed once:
        a Hydra composition takes about 0.1 s, and a suite has hundreds of jobs
        (tests/test_workload.py checks that both give the same config)."""
        key = (*fixed, *job)
        if key not in self.composed:
            base = self.composed.get(tuple(fixed))
            if base is None:
                base = self.composed[tuple(fixed)] = compose(fixed, False)
            values = _plain_values(base, job)
            if values is None:
                self.composed[key] = compose(key, False)
            else:
                cfg = copy.deepcopy(base)
                for k, v in values.items():
                    OmegaConf.update(cfg, k, v, merge=False)
                self.composed[key] = cfg
        return self.composed[key]

    def _flops_per_sample(self, cfg: DictConfig) -> float:
        key = json.dumps(OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True), sort_keys=True)
        if key not in self.flops:
            from study.bench import flops_per_sample  # loads torch: it builds the network once per architecture

            self.flops[key] = float(flops_per_sample(cfg))
        return self.flops[key]

    def _reused(self, cfg: DictConfig, seed: int) -> bool:
        """Whether the run of `cfg` at `seed` is reused: finished already, or planned by an earlier preset."""
        from study.reuse import find_reusable, run_hash

        if cfg.force:
            return False
        composed_seed = cfg.seed
        cfg.seed = seed  # the cached config, set back below: a copy per seed cost seconds per suite
        try:
            h = run_hash(cfg)
            if h in self.planned:
                return True
            self.planned.add(h)
            return find_reusable(cfg) is not None
        finally:
            cfg.seed = composed_seed


def _plain_values(base: DictConfig, job: Sequence[str]) -> Optional[dict[str, object]]:
    """The job's overrides as {key: value} where each sets a value that `base`
    has (no config group, addition or deletion, a scalar value), else None."""
    out: dict[str, object] = {}
    for o in OverridesParser.create().parse_overrides(list(job)):
        if o.is_sweep_override() or o.is_add() or o.is_delete() or o.is_force_add() or o.package is not None:
            return None
        key, value = o.key_or_group, o.value()
        if not isinstance(value, (bool, int, float, str)) or OmegaConf.select(base, key, default=_MISSING) is _MISSING:
            return None
        if OmegaConf.is_config(OmegaConf.select(base, key)):
            return None
        out[key] = value
    return out


_MISSING = object()


def time_left(works: Sequence[float], fractions: Sequence[float], paces: Sequence[Optional[float]],
              pace: Optional[float]) -> Optional[float]:
    """Seconds left: each preset's work not yet done (`fractions`: the part
    done) times its pace in seconds per flop (`paces`: its own expected one,
    or None for `pace`, the suite's so far). None while a pace is needed and
    there is none."""
    left = 0.0
    for work, done, own in zip(works, fractions, paces):
        rest = work * (1.0 - done)
        if rest <= 0:
            continue
        p = own if own is not None else pace
        if p is None:
            return None
        left += rest * p
    return left


def fraction_done(trained: int, in_flight: float, reused: int, planned: int) -> float:
    """How much of a preset's work is done, from its sweep's record counts."""
    to_train = planned - reused
    return 1.0 if to_train <= 0 else min(1.0, (trained + in_flight) / to_train)
