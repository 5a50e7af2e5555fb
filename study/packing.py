"""Which runs of a sweep train together as one pack.

A pack is the runs of one config that differ only in their seed (and in
their learning rate, where `lr_packable`): they train as one vectorized
model, each run computed as if alone (tests/test_train.py compares them).
The packed launcher (hydra_plugins/bn_study_launcher) groups a sweep's jobs
by `pack_key` and runs each pack as one job (study.runner.run_pack).

Torch-free on purpose: the launching process groups jobs and never trains,
so it need not load torch (seconds).
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import OmegaConf

from study.models import fused_sgd


def lr_packable(cfg: Any) -> bool:
    """Whether runs of `cfg` that differ in learning rate can train as one pack.

    The fused SGD step takes a learning rate per run; autograd's optimizers
    (momentum, Adam, other norms) and the probes that take an SGD step of
    their own (ics, landscape) use one.
    """
    if not fused_sgd.trains(cfg):
        return False
    p = cfg.get("probes")
    return not {str(getattr(k, "value", k)) for k in (p.kinds if p is not None else [])} & {"ics", "landscape"}


def pack_key(cfg: Any) -> str:
    """Jobs with equal keys train as one pack: their resolved configs are
    equal but for `seed` (and `lr`, where `lr_packable`), launch-only keys
    included, so that each member's config is the pack's with its own seed
    and learning rate. A job of an Optuna trial (its own `trial.number`) is
    never packed.
    """
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    plain.pop("pack", None)
    plain.pop("seed", None)
    if lr_packable(cfg):
        plain.pop("lr", None)
    return json.dumps(plain, sort_keys=True)
