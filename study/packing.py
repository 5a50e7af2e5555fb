"""Which runs of a sweep can train together as one pack, and a run's identity.

Torch-free on purpose: the packed launcher's process groups a sweep's jobs
with `pack_key` and never trains, so it need not load torch (seconds).
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from study import fused_sgd
from study.records import LAUNCH_ONLY_KEYS


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain values, launch-only keys left out."""
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for k in LAUNCH_ONLY_KEYS:
        plain.pop(k, None)
    return plain


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


def pack_key(cfg: DictConfig) -> str:
    """Jobs with equal keys differ only in their seed (and learning rate,
    where the fused SGD step trains them: `lr_packable`) and can be packed.

    A job that reports to an Optuna trial (pruning) is never packed.
    """
    plain = identity(cfg)
    plain.pop("seed", None)
    if lr_packable(cfg):
        plain.pop("lr", None)
    trial = OmegaConf.select(cfg, "trial.number")
    if trial is not None:
        plain["trial"] = trial
    return json.dumps(plain, sort_keys=True)
