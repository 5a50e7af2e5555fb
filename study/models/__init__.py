"""The model families, one record each: the table that config validation, the
trainer and the fused step read (`model=<family>`, conf/model/<family>.yaml).

Torch-free, so that `study.config.validate` reads it before torch loads: a
record names its network code by dotted path, imported when a run builds it.
How to add a family: docs/architecture.md#how-to-add-a-model-family.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

Need = Callable[[bool, str, Any, str], None]  # study.config.validate's check: need(ok, key, value, allowed)


def _no_checks(cfg: Any, norm: str, need: Need) -> None:
    pass


@dataclass(frozen=True)
class Family:
    network: str  # dotted path of build(**options): one run's network from the family's config values
    packed: str  # dotted path of Pack(networks): R of them as one model, (R, B, ...) -> (R, B, classes), `runs` = R
    norms: tuple[str, ...]  # the `model.norm` values it builds
    probes: Optional[tuple[str, ...]]  # the `probes.kinds` it supports; None: every probe
    fused_norms: tuple[str, ...] = ()  # norms the fused SGD step computes for it (models/fused_sgd/); (): autograd
    check: Callable[[Any, str, Need], None] = _no_checks  # its own value checks: check(cfg, norm, need)

    def build(self, **options: Any) -> Any:
        return _code(self.network)(**options)

    def pack(self, networks: Sequence[Any]) -> Any:
        return _code(self.packed)(networks)


def _code(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _groups_divide(widths: list[int], what: str, cfg: Any, norm: str, need: Need) -> None:
    if norm == "group":
        m = cfg.model
        need(m.groups >= 1 and all(h % m.groups == 0 for h in widths), "model.groups", m.groups,
             f"an integer >= 1 that divides every {what} {widths}")


def _pytorch_bn_scale(family: str, cfg: Any, need: Need) -> None:
    need(cfg.model.bn_scale_init == 1.0, "model.bn_scale_init", cfg.model.bn_scale_init,
         f"1.0 with model={family} (PyTorch's BN scale init; only model=lstm sets it)")


def _check_mlp(cfg: Any, norm: str, need: Need) -> None:
    _groups_divide(list(cfg.model.hidden), "hidden width", cfg, norm, need)
    _pytorch_bn_scale("mlp", cfg, need)


def _check_cnn(cfg: Any, norm: str, need: Need) -> None:
    m = cfg.model
    _groups_divide([*m.channels, *m.hidden], "channel count and hidden width", cfg, norm, need)
    need(1 <= len(m.channels) <= 4 and all(c >= 1 for c in m.channels), "model.channels", list(m.channels),
         "a list of 1 to 4 integers >= 1 (each conv block halves the 28x28 image)")
    _pytorch_bn_scale("cnn", cfg, need)


def _check_lstm(cfg: Any, norm: str, need: Need) -> None:
    m = cfg.model
    need(len(m.hidden) == 1, "model.hidden", list(m.hidden), "[units]: model=lstm has one LSTM layer")
    need(math.isfinite(m.bn_scale_init) and m.bn_scale_init > 0, "model.bn_scale_init", m.bn_scale_init,
         "a number > 0")


# none; batch: BatchNorm (Ioffe & Szegedy 2015); ghost: BN over virtual batches of model.ghost_size
# (Hoffer et al. 2017); layer: LayerNorm over a layer's features (Ba et al. 2016); group: GroupNorm,
# model.groups groups of features (Wu & He 2018).
MLP_NORMS = ("none", "batch", "ghost", "layer", "group")
# The probes that only evaluate a pack (study/probes.py); the others read the MLP's layers.
EVALUATION_PROBES = ("val_acc", "train_acc", "modes")

FAMILIES = {
    # Linear -> norm -> activation layers, then Linear -> logits: the notebook's MLP.
    "mlp": Family(network="study.models.mlp.build_mlp", packed="study.models.mlp.PackedMLP", norms=MLP_NORMS,
                  probes=None, fused_norms=("none", "batch"), check=_check_mlp),
    # conv -> norm -> activation -> pool blocks, then the MLP as its head (and so the MLP's norms); its
    # pack: the members side by side on the channel axis, grouped convolutions, the MLP's pack as the head.
    "cnn": Family(network="study.models.cnn.build_cnn", packed="study.models.cnn.PackedCNN", norms=MLP_NORMS,
                  probes=EVALUATION_PROBES, check=_check_cnn),
    # One LSTM layer reading 28 rows of 28 pixels. batch: BN-LSTM, statistics per time step (Cooijmans et
    # al. 2016); batch_shared: the same with one set of population statistics for all steps; layer: LN-LSTM.
    # precise_bn has PackedLSTM code of its own: statistics re-estimated per time step (study/probes.py).
    "lstm": Family(network="study.models.lstm.build_lstm", packed="study.models.lstm.PackedLSTM",
                   norms=("none", "batch", "batch_shared", "layer"), probes=(*EVALUATION_PROBES, "precise_bn"),
                   check=_check_lstm),
}


def check_norm(family: str, norm: str) -> None:
    """A builder's guard (the config's check, `validate`, says it first, in one line)."""
    if norm not in FAMILIES[family].norms:
        raise ValueError(f"unknown norm {norm!r} for model={family}; known: {', '.join(FAMILIES[family].norms)}")
