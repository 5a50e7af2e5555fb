"""Which runs of a sweep can train together as one pack, and a run's identity.

Torch-free on purpose: the packed launcher's process groups a sweep's jobs
with `pack_key` and never trains, so it need not load torch (seconds).
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from study.config import Activation
from study.records import LAUNCH_ONLY_KEYS



def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain values, launch-only keys left out."""
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for k in LAUNCH_ONLY_KEYS:
        plain.pop(k, None)
    return plain


def _name(v: Any) -> str:
    """A schema enum (a composed config) or its string (a plain config) as a string."""
    return str(getattr(v, "value", v))


def fused_step_applies(optimizer: Any, activation: Any, norm: Any) -> bool:
    """Whether study.model.fused_sgd_step trains this setup: plain SGD (no
    momentum, weight decay or nesterov), any activation of the schema, and
    no norm or plain BN (other norms train with autograd)."""
    get = optimizer.get if isinstance(optimizer, dict) else lambda k: getattr(optimizer, k)
    return (_name(get("name")) == "sgd" and get("momentum") == 0 and get("weight_decay") == 0
            and not get("nesterov") and _name(activation) in {a.value for a in Activation}
            and _name(norm) in ("none", "batch"))


def uses_fused_step(cfg: Any) -> bool:
    """Whether runs of `cfg` train with study.model.fused_sgd_step (`fused`
    on, and a setup it handles) rather than autograd."""
    return bool(cfg.fused) and fused_step_applies(cfg.optimizer, cfg.model.activation, cfg.model.norm)


def lr_packable(cfg: Any) -> bool:
    """Whether runs of `cfg` that differ in learning rate can train as one pack.

    The fused SGD step takes a learning rate per run; autograd's optimizers
    (momentum, Adam, other norms) and the probes that take an SGD step of
    their own (ics, landscape) use one.
    """
    if not uses_fused_step(cfg):
        return False
    p = cfg.get("probes") if hasattr(cfg, "get") else getattr(cfg, "probes", None)
    return not {_name(k) for k in (p.kinds if p is not None else [])} & {"ics", "landscape"}


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
