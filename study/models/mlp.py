"""The `mlp` model family: the MLP as the notebook writes it, and R of them as one model.

`build_mlp` is one run's network (Linear -> [norm] -> activation per hidden
layer, then Linear -> logits); `PackedMLP` is the family's pack: R such
networks over a leading run axis, each Linear a batched matmul and each
BatchNorm1d one BatchNorm over R x features channels, so every run still
sees only its own batch statistics. Tests check a pack against its networks
run one by one.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from study.models import check_norm

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


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
    check_norm("mlp", norm)
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


# ------------------------------------------------------------------ the pack


class PackedLinear(nn.Module):
    """R Linear layers applied to (R, B, in) as one batched matmul."""

    def __init__(self, members: Sequence[nn.Linear]) -> None:
        super().__init__()
        # Stored as (R, in, out) so the forward is baddbmm without a transpose.
        self.weight = nn.Parameter(torch.stack([m.weight.detach().t() for m in members]).contiguous())
        has_bias = members[0].bias is not None
        self.bias = (
            nn.Parameter(torch.stack([m.bias.detach() for m in members]).unsqueeze(1).contiguous())
            if has_bias
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)

    def unpack(self, r: int) -> dict[str, torch.Tensor]:
        out = {"weight": self.weight[r].t()}
        if self.bias is not None:
            out["bias"] = self.bias[r, 0]
        return out


class PackedBatchNorm(nn.Module):
    """R BatchNorm1d layers as one BatchNorm over R * features channels.

    The input (R, B, F) is viewed as (B, R * F): per-channel statistics over
    the batch axis are then exactly each run's own per-feature statistics.
    F.batch_norm does the normalization and the running-stat update, with
    PyTorch's conventions (unbiased variance in the running estimate).
    """

    def __init__(self, members: Sequence[nn.BatchNorm1d]) -> None:
        super().__init__()
        self.runs, self.features = len(members), members[0].num_features
        self.eps, self.momentum = members[0].eps, members[0].momentum
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in members]))
        self.bias = nn.Parameter(torch.cat([m.bias.detach() for m in members]))
        self.register_buffer("running_mean", torch.cat([m.running_mean for m in members]))
        self.register_buffer("running_var", torch.cat([m.running_var for m in members]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, b, f = x.shape
        flat = x.transpose(0, 1).reshape(b, r * f)  # a view when R == 1
        out = F.batch_norm(
            flat, self.running_mean, self.running_var, self.weight, self.bias,
            training=self.training, momentum=self.momentum, eps=self.eps,
        )
        return out.view(b, r, f).transpose(0, 1)

    def unpack(self, r: int) -> dict[str, torch.Tensor]:
        s = slice(r * self.features, (r + 1) * self.features)
        return {
            "weight": self.weight[s], "bias": self.bias[s],
            "running_mean": self.running_mean[s], "running_var": self.running_var[s],
        }


class PackedGhostBatchNorm(PackedBatchNorm):
    """R GhostBatchNorm1d layers: each run's batch split into the same chunks."""

    def __init__(self, members: Sequence[GhostBatchNorm1d]) -> None:
        super().__init__(members)
        self.ghost_size = members[0].ghost_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        return torch.cat([super(PackedGhostBatchNorm, self).forward(c)
                          for c in ghost_chunks(x, self.ghost_size, dim=1)], dim=1)


class PackedPerSampleNorm(nn.Module):
    """R LayerNorm or GroupNorm layers: statistics per example, affine per run."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        first = members[0]
        self.groups = first.num_groups if isinstance(first, nn.GroupNorm) else None
        self.eps = first.eps
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members]).unsqueeze(1).contiguous())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in members]).unsqueeze(1).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, b, f = x.shape
        if self.groups is None:
            normed = F.layer_norm(x, (f,), eps=self.eps)
        else:
            normed = F.group_norm(x.reshape(r * b, f), self.groups, eps=self.eps).view(r, b, f)
        return torch.addcmul(self.bias, normed, self.weight)

    def unpack(self, r: int) -> dict[str, torch.Tensor]:
        return {"weight": self.weight[r, 0], "bias": self.bias[r, 0]}


class PackedMLP(nn.Module):
    """R MLPs of one architecture; forward maps (R, B, in) to (R, B, out)."""

    def __init__(self, members: Sequence[nn.Sequential]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a pack needs at least one member")
        shapes = {tuple((type(m), tuple(p.shape for p in m.parameters())) for m in net) for net in members}
        if len(shapes) != 1:
            raise ValueError("packed members must share one architecture")
        self.runs = len(members)
        layers: list[nn.Module] = []
        for i, layer in enumerate(members[0]):
            column = [net[i] for net in members]
            if isinstance(layer, nn.Linear):
                layers.append(PackedLinear(column))
            elif isinstance(layer, GhostBatchNorm1d):
                layers.append(PackedGhostBatchNorm(column))
            elif isinstance(layer, nn.BatchNorm1d):
                layers.append(PackedBatchNorm(column))
            elif isinstance(layer, (nn.LayerNorm, nn.GroupNorm)):
                layers.append(PackedPerSampleNorm(column))
            else:  # activations are stateless and elementwise
                layers.append(layer)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def unpack(self, r: int, like: nn.Sequential) -> nn.Sequential:
        """Copy run r's parameters and BN statistics into a reference model."""
        with torch.no_grad():
            for packed, plain in zip(self.layers, like):
                if hasattr(packed, "unpack"):
                    for name, value in packed.unpack(r).items():
                        getattr(plain, name).copy_(value)
        return like
