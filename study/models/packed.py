"""R networks of one architecture as one model: each run its own weights.

`PackedMLP` holds R `study.models.mlp.build_mlp` networks (e.g. different seeds)
as one model over a leading run axis, (R, B, in) -> (R, B, classes): each
Linear becomes a batched matmul and each BatchNorm1d one BatchNorm over
R x features channels, so every run still sees only its own batch
statistics. A single run is a pack of one. `evaluate` scores every run of a
pack at once.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from study.models.mlp import GhostBatchNorm1d, ghost_chunks


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


@torch.inference_mode()
def evaluate(model: PackedMLP, x: torch.Tensor, y: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean cross-entropy per run (eval mode: BN running stats)."""
    was_training = model.training
    model.eval()
    r = model.runs
    correct = torch.zeros(r, dtype=torch.long, device=x.device)
    loss = torch.zeros(r, dtype=torch.float64, device=x.device)
    for s in range(0, len(x), chunk):
        xb, yb = x[s:s + chunk], y[s:s + chunk]
        logits = model(xb.unsqueeze(0).expand(r, -1, -1))
        correct += (logits.argmax(-1) == yb).sum(1)
        loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.repeat(r),
                                reduction="none").view(r, -1).sum(1, dtype=torch.float64)
    model.train(was_training)
    n = len(x)
    return correct.double() / n, loss / n
