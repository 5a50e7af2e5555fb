"""The `cnn` model family: a small conv net on the same MNIST tensors, 3x3
conv -> norm -> activation -> 2x2 max pool blocks, then the MLP as its head;
its pack is `LoopedPack` (pack.py). Its norms: docs/configuration.md#model-families."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from study.models import check_norm
from study.models.mlp import ACTIVATIONS, GhostStatistics, build_mlp

IMAGE = (1, 28, 28)


class GhostBatchNorm2d(GhostStatistics, nn.BatchNorm2d):
    """BatchNorm2d over virtual batches of `ghost_size` examples (GhostStatistics, as GhostBatchNorm1d)."""


def conv_norm(norm: str, channels: int, eps: float, momentum: float, ghost_size: int, groups: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
    if norm == "ghost":
        return GhostBatchNorm2d(channels, ghost_size, eps=eps, momentum=momentum)
    if norm == "layer":
        return nn.GroupNorm(1, channels, eps=eps)
    if norm == "group":
        return nn.GroupNorm(groups, channels, eps=eps)
    raise ValueError(f"no conv norm {norm!r}")


class ConvNet(nn.Module):
    """(B, 784) -> (B, classes): `features` (the conv blocks), then `head`."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential, channels_last: bool) -> None:
        super().__init__()
        self.features, self.head, self.channels_last = features, head, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(-1, *IMAGE)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(h).flatten(1))


def build_cnn(
    channels: Sequence[int] = (16, 32),
    hidden: Sequence[int] = (64,),
    out_features: int = 10,
    activation: str = "relu",
    norm: str = "none",
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    bias_before_norm: bool = True,
    ghost_size: int = 32,
    groups: int = 8,
    channels_last: bool = False,
    **_other_families: Any,  # ModelConfig is every family's keys: the MLP's in_features etc. are not read here
) -> ConvNet:
    """Conv3x3 -> norm -> activation -> max pool 2 per `channels`, flatten,
    then the MLP head: `build_mlp` over the flattened features (Linear ->
    norm -> activation per `hidden`, Linear -> logits)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
    check_norm("cnn", norm)
    if not 1 <= len(channels) <= 4:
        raise ValueError(f"channels {list(channels)}: 1 to 4 conv blocks (28 -> 14 -> 7 -> 3 -> 1 pixels)")
    bias = bias_before_norm or norm not in ("batch", "ghost")
    blocks: list[nn.Module] = []
    c_in, side = IMAGE[0], IMAGE[1]
    for c in channels:
        blocks.append(nn.Conv2d(c_in, c, 3, padding=1, bias=bias))
        if norm != "none":
            blocks.append(conv_norm(norm, c, bn_eps, bn_momentum, ghost_size, groups))
        blocks += [ACTIVATIONS[activation](), nn.MaxPool2d(2)]
        c_in, side = c, side // 2
    head = build_mlp(c_in * side * side, hidden, out_features, activation, norm, bn_momentum, bn_eps,
                     bias_before_norm, ghost_size, groups)
    net = ConvNet(nn.Sequential(*blocks), head, channels_last)
    return net.to(memory_format=torch.channels_last) if channels_last else net
