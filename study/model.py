"""The MLP, and the same MLP for R runs at once.

`build_mlp` is the reference model, written as in the notebook:
Linear -> [BatchNorm1d] -> activation for each hidden layer, then a Linear to
the logits. `PackedMLP` holds R such networks (same architecture, their own
weights, e.g. different seeds) as one model: each Linear becomes a batched
matmul over a leading run axis and each BatchNorm1d becomes one BatchNorm over
R x features channels, so every run still sees only its own batch statistics.
A single run is a pack of one; tests check a pack against the reference model
and packed runs against runs trained one by one.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
NORMS = ("none", "batch")


def build_mlp(
    in_features: int = 784,
    hidden: Sequence[int] = (128, 64),
    out_features: int = 10,
    activation: str = "relu",
    norm: str = "none",
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    bias_before_norm: bool = True,
) -> nn.Sequential:
    """Linear -> norm -> activation per hidden layer, then Linear -> logits."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {NORMS}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=bias_before_norm or norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(h, eps=bn_eps, momentum=bn_momentum))
        layers.append(ACTIVATIONS[activation]())
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


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
            elif isinstance(layer, nn.BatchNorm1d):
                layers.append(PackedBatchNorm(column))
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
