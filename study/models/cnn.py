"""The `cnn` model family: a small conv net on the same MNIST tensors, 3x3
conv -> norm -> activation -> 2x2 max pool blocks, then the MLP as its head;
its pack is `PackedCNN` (below). Its norms: docs/configuration.md#model-families."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from study.models import check_norm
from study.models.mlp import ACTIVATIONS, GhostStatistics, PackedMLP, build_mlp, ghost_chunks

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


# ------------------------------------------------------------------ the pack


class PackedCNN(nn.Module):
    """R conv nets of one architecture as one model: (R, B, 784) -> (R, B, classes).

    The members' feature maps lie side by side on the channel axis, (B, R x C, H, W):
    each conv is one grouped convolution (groups=R, the members' kernels stacked), so
    member r's output channels see only its own input channels; each norm is the
    member's norm over R x C channels, so its statistics stay the member's own:
    BatchNorm2d's per-channel statistics over batch x height x width are per member
    and channel, GroupNorm(R x groups) keeps every group inside one member (layer =
    one group per member), and a ghost batch splits every member's batch alike.
    Pooling and activations act per channel; each max pool comes before its
    activation (monotone: the same numbers, a quarter of the activation's work).
    The head is the MLP's pack over the flattened per-member features.

    From `grouped_below` examples per member on, the conv blocks run member by
    member instead, on slices of the same stacked weights and statistics: on
    the 2-core development machine with one thread the grouped layers were
    1.2-2.4x faster than R networks one after another at batch 2 and 8, but
    0.7-0.9x at 64 and 0.7x at 512 (R x larger tensors fall out of the cache;
    docs/speed.md#the-packed-conv-net). Tests: each member equals its network
    alone either way (tests/test_cnn_pack.py).
    """

    grouped_below = 32  # examples per member; measured at 2, 8 (grouped faster) and 64, 512 (slower)

    def __init__(self, members: Sequence[ConvNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a pack needs at least one member")
        shapes = {(m.channels_last, *map(type, m.features), *((n, v.shape) for n, v in m.state_dict().items()))
                  for m in members}
        if len(shapes) != 1:
            raise ValueError("packed members must share one architecture")
        self.runs, self.channels_last = len(members), members[0].channels_last
        layers = [_pack_layer([m.features[i] for m in members]) for i in range(len(members[0].features))]
        for i in range(1, len(layers)):  # activation -> max pool as max pool -> activation: 1/4 of the work
            if isinstance(layers[i], nn.MaxPool2d):
                layers[i - 1], layers[i] = layers[i], layers[i - 1]
        self.features = nn.Sequential(*layers)
        self.head = PackedMLP([m.head for m in members])
        if self.channels_last:
            self.features.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, b = x.shape[:2]
        if b >= self.grouped_below:
            return self.head(torch.stack([self._member_features(k, x[k]) for k in range(r)]))
        h = x.transpose(0, 1).reshape(b, r * IMAGE[0], *IMAGE[1:])  # member r's image is channel r
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        h = self.features(h)
        return self.head(h.reshape(b, r, -1).transpose(0, 1))  # (R, B, C x H x W): each member's flatten

    def _member_features(self, r: int, x: torch.Tensor) -> torch.Tensor:
        """Member r's conv blocks alone, (B, 784) -> (B, C x H x W), on its slice of every layer."""
        h = x.reshape(-1, *IMAGE)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                bias = None if layer.bias is None else layer.bias.chunk(self.runs)[r]
                h = F.conv2d(h, layer.weight.chunk(self.runs)[r], bias, padding=layer.padding)
            elif isinstance(layer, nn.BatchNorm2d):
                own = [t.chunk(self.runs)[r] for t in (layer.running_mean, layer.running_var, layer.weight,
                                                        layer.bias)]
                ghost = isinstance(layer, GhostBatchNorm2d) and self.training
                parts = ghost_chunks(h, layer.ghost_size, 0) if ghost else [h]
                # a slice of the running statistics, updated in place
                outs = [F.batch_norm(c, *own, self.training, layer.momentum, layer.eps) for c in parts]
                h = outs[0] if len(outs) == 1 else torch.cat(outs)
                if self.training and r == 0 and not ghost:
                    layer.num_batches_tracked.add_(1)  # as the member's BatchNorm2d counts (GhostStatistics: none)
            elif isinstance(layer, nn.GroupNorm):
                h = F.group_norm(h, layer.num_groups // self.runs, layer.weight.chunk(self.runs)[r],
                                 layer.bias.chunk(self.runs)[r], layer.eps)
            else:
                h = layer(h)
        return h.flatten(1)

    def member_state(self, r: int) -> dict[str, torch.Tensor]:
        """Run r's parameters and statistics under its own network's names (ConvNet.state_dict)."""
        out = {}
        for name, v in self.features.state_dict().items():  # every tensor with a channel axis is R blocks
            out[f"features.{name}"] = v.chunk(self.runs)[r] if v.dim() else v
        for i, layer in enumerate(self.head.layers):
            if hasattr(layer, "unpack"):
                out.update({f"head.{i}.{k}": v for k, v in layer.unpack(r).items()})
        return {k: v.detach() for k, v in out.items()}

    def unpack(self, r: int, like: ConvNet) -> ConvNet:
        """Copy run r's parameters and statistics into a reference network."""
        missing, unexpected = like.load_state_dict(self.member_state(r), strict=False)
        missing = [k for k in missing if not (k.startswith("head.") and k.endswith("num_batches_tracked"))]
        if missing or unexpected:  # only the head's BN batch count is not kept (the MLP's pack keeps none)
            raise ValueError(f"run {r} does not fit {type(like).__name__}: missing {missing}, unexpected {unexpected}")
        return like


def _pack_layer(column: Sequence[nn.Module]) -> nn.Module:
    """One layer of every member as one layer over R x C channels, the members' tensors stacked."""
    first, r = column[0], len(column)
    if isinstance(first, nn.Conv2d):
        packed: nn.Module = nn.Conv2d(r * first.in_channels, r * first.out_channels, first.kernel_size,
                                      padding=first.padding, bias=first.bias is not None, groups=r)
    elif isinstance(first, GhostBatchNorm2d):
        packed = GhostBatchNorm2d(r * first.num_features, first.ghost_size, eps=first.eps, momentum=first.momentum)
    elif isinstance(first, nn.BatchNorm2d):
        packed = nn.BatchNorm2d(r * first.num_features, eps=first.eps, momentum=first.momentum)
    elif isinstance(first, nn.GroupNorm):
        packed = nn.GroupNorm(r * first.num_groups, r * first.num_channels, eps=first.eps)
    else:  # activations and pooling: stateless, per channel
        return first
    states = [m.state_dict() for m in column]
    packed.to(first.weight)  # the members' dtype and device
    packed.load_state_dict({k: torch.cat([s[k] for s in states]) if v.dim() else v
                            for k, v in states[0].items()})
    return packed
