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


@torch.no_grad()
def fused_sgd_step(model: PackedMLP, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
    """One plain-SGD step (no momentum, no weight decay) without autograd.

    The same math as `loss.backward(); SGD.step()` with PyTorch's own kernels
    for each piece (native batch norm forward/backward, threshold/sigmoid/tanh
    backward), but each weight is updated in place from its gradient product
    (`W.baddbmm_(a^T, g, alpha=-lr)`) instead of writing a gradient tensor
    that an optimizer then reads: at small batches the per-step overhead of
    autograd and the optimizer, not arithmetic, is the limit. Returns each
    run's mean cross-entropy (R,). tests/test_train.py checks it against the
    autograd path.
    """
    r, b, _ = x.shape
    saved: list[tuple] = []
    h = x
    for layer in model.layers:
        if isinstance(layer, PackedLinear):
            saved.append((layer, h))
            h = layer(h)
        elif isinstance(layer, PackedBatchNorm):
            f = layer.features
            flat = h.transpose(0, 1).reshape(b, r * f)
            out, mean, invstd = torch.native_batch_norm(
                flat, layer.weight, layer.bias, layer.running_mean, layer.running_var,
                True, layer.momentum, layer.eps)
            saved.append((layer, flat, mean, invstd))
            h = out.view(b, r, f).transpose(0, 1)
        else:
            h = layer(h)
            saved.append((layer, h))
    logp = torch.log_softmax(h, dim=-1)  # (R, b, classes)
    target = y.view(r, b, 1)
    losses = -logp.gather(-1, target).mean((1, 2))
    g = logp.exp_()  # d(mean CE)/d(logits) = (softmax - onehot) / b, per run
    g.scatter_add_(-1, target, torch.full_like(target, -1.0, dtype=g.dtype))
    g.div_(b)
    first = model.layers[0]
    for item in reversed(saved):
        layer = item[0]
        if isinstance(layer, PackedLinear):
            a = item[1]
            g_in = torch.bmm(g, layer.weight.transpose(1, 2)) if layer is not first else None
            layer.weight.baddbmm_(a.transpose(1, 2), g, alpha=-lr)
            if layer.bias is not None:
                layer.bias.sub_(g.sum(1, keepdim=True), alpha=lr)
            g = g_in
        elif isinstance(layer, PackedBatchNorm):
            _, flat, mean, invstd = item
            f = layer.features
            g_flat = g.transpose(0, 1).reshape(b, r * f)
            g_in, g_w, g_b = torch.ops.aten.native_batch_norm_backward(
                g_flat, flat, layer.weight, layer.running_mean, layer.running_var, mean, invstd,
                True, layer.eps, [True, True, True])
            layer.weight.sub_(g_w, alpha=lr)
            layer.bias.sub_(g_b, alpha=lr)
            g = g_in.view(b, r, f).transpose(0, 1)
        else:
            out = item[1]
            if isinstance(layer, nn.ReLU):
                g = torch.ops.aten.threshold_backward(g, out, 0)
            elif isinstance(layer, nn.Sigmoid):
                g = torch.ops.aten.sigmoid_backward(g, out)
            elif isinstance(layer, nn.Tanh):
                g = torch.ops.aten.tanh_backward(g, out)
            else:
                raise TypeError(f"fused_sgd_step has no backward for {type(layer).__name__}")
    return losses


def fused_step_applies(optimizer: dict | object, activation: str) -> bool:
    """Plain SGD (no momentum, weight decay or nesterov) on a supported activation."""
    get = optimizer.get if isinstance(optimizer, dict) else lambda k: getattr(optimizer, k)
    return (str(get("name")) == "sgd" and get("momentum") == 0 and get("weight_decay") == 0
            and not get("nesterov") and activation in ACTIVATIONS)
