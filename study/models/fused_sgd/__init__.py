"""The fused SGD step: plain SGD without autograd (`step.py`), and when it trains a run (here).

The rule lives here, torch-free, because two places ask it: the trainer
(through `study.spec.TrainSpec.fused_step`) and the packed launcher, which
packs runs that differ in learning rate only where this step trains them
(`study.spec.lr_packable`) and never loads torch. The norms it computes are
in each family's record (`fused_norms`, study/models/__init__.py). Whoever
teaches the step a new layer or optimizer setting widens the rule in the
same change.
"""

from __future__ import annotations

from typing import Any, Mapping

from study.models import FAMILIES

# What `step.fused_sgd_step` computes besides its families' norms, by config value.
ACTIVATIONS = ("relu", "sigmoid", "tanh")
PRECISIONS = ("fp32", "tf32")  # the step computes in the parameters' float32; bf16 (autocast) trains with autograd


def _name(v: Any) -> str:
    """A schema enum (a composed config) or its string (a plain config) as a string."""
    return str(getattr(v, "value", v))


def applies(optimizer: Mapping[str, Any], model: Mapping[str, Any]) -> bool:
    """Whether the fused step computes what `optimizer` would on `model`
    (config nodes, composed or plain): plain SGD (no momentum, weight decay
    or nesterov) on a family, activation and norm it handles."""
    family = FAMILIES.get(_name(model.get("family", "mlp")))
    return (_name(optimizer["name"]) == "sgd" and optimizer["momentum"] == 0
            and optimizer["weight_decay"] == 0 and not optimizer["nesterov"]
            and family is not None and _name(model["norm"]) in family.fused_norms
            and _name(model["activation"]) in ACTIVATIONS)


def trains(cfg: Any) -> bool:
    """Whether runs of `cfg` train with the fused step: `fused` on, and a
    setup it computes (else autograd and torch.optim train them)."""
    return (bool(cfg.fused) and applies(cfg.optimizer, cfg.model)
            and str(cfg.get("precision", "fp32")) in PRECISIONS)
