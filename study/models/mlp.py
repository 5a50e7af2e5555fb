"""The `mlp` model family: the MLP as the notebook writes it, one run at a time.

`build_mlp` is the reference model: Linear -> [norm] -> activation for each
hidden layer, then a Linear to the logits. The norms are PyTorch's, plus
`GhostBatchNorm1d` (Hoffer et al. 2017). The trainer trains R such networks
at once as one `study.models.packed.PackedMLP`; tests check a pack against this
model, and packed runs against runs trained one by one.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
NORMS = ("none", "batch", "ghost", "layer", "group")


class GhostStatistics:
    """Training statistics from virtual ("ghost") batches, for a BatchNorm class (mixed in first).

    Hoffer et al. 2017: the batch is split into consecutive chunks of
    `ghost_size` examples; each chunk is normalized with its own mean and
    (biased) variance, and the running statistics are updated once per chunk,
    in order, as BatchNorm1d would for each chunk alone. A trailing chunk of
    one example joins the chunk before it (one example has no variance).
    Eval mode uses the running statistics, like BatchNorm1d.
    """

    def __init__(self, num_features: int, ghost_size: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.ghost_size = ghost_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        return torch.cat([F.batch_norm(c, self.running_mean, self.running_var, self.weight, self.bias,
                                       True, self.momentum, self.eps)
                          for c in ghost_chunks(x, self.ghost_size, dim=0)], dim=0)


class GhostBatchNorm1d(GhostStatistics, nn.BatchNorm1d):
    """BatchNorm1d over virtual batches of `ghost_size` examples (GhostStatistics)."""


def ghost_chunks(x: torch.Tensor, size: int, dim: int) -> list[torch.Tensor]:
    """Consecutive chunks of `size` along `dim`; a last chunk of one joins the one before."""
    chunks = list(torch.split(x, size, dim=dim))
    if len(chunks) > 1 and chunks[-1].shape[dim] == 1:
        chunks[-2:] = [torch.cat(chunks[-2:], dim=dim)]
    return chunks


def build_mlp(
    in_features: int = 784,
    hidden: Sequence[int] = (128, 64),
    out_features: int = 10,
    activation: str = "relu",
    norm: str = "none",
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    bias_before_norm: bool = True,
    ghost_size: int = 32,
    groups: int = 8,
    **_other_families: Any,  # ModelConfig is every family's keys: the cnn's channels etc. are not read here
) -> nn.Sequential:
    """Linear -> norm -> activation per hidden layer, then Linear -> logits.

    norm: none; batch (BatchNorm1d); ghost (BN over virtual batches of
    `ghost_size`); layer (LayerNorm over a layer's features); group
    (GroupNorm with `groups` groups of features; `groups` must divide every
    hidden width).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {NORMS}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        # Only batch statistics make the bias redundant (the batch mean removes
        # it); LayerNorm/GroupNorm remove just its mean over features.
        layers.append(nn.Linear(width, h, bias=bias_before_norm or norm not in ("batch", "ghost")))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(h, eps=bn_eps, momentum=bn_momentum))
        elif norm == "ghost":
            layers.append(GhostBatchNorm1d(h, ghost_size, eps=bn_eps, momentum=bn_momentum))
        elif norm == "layer":
            layers.append(nn.LayerNorm(h, eps=bn_eps))
        elif norm == "group":
            layers.append(nn.GroupNorm(groups, h, eps=bn_eps))
        layers.append(ACTIVATIONS[activation]())
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
