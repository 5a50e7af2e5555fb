"""One plain-SGD step of a `PackedMLP` without autograd; `study.models.fused_sgd`
(this package) says when it trains a run."""

from __future__ import annotations

import torch
from torch import nn

from study.models.mlp import PackedBatchNorm, PackedLinear, PackedMLP


@torch.no_grad()
def fused_sgd_step(model: PackedMLP, x: torch.Tensor, y: torch.Tensor,
                   lr: float | torch.Tensor) -> torch.Tensor:
    """One plain-SGD step (no momentum, no weight decay) without autograd.

    The same math as `loss.backward(); SGD.step()` with PyTorch's own kernels
    for each piece (threshold/sigmoid/tanh backward; batch norm's forward and
    backward written out in sums and elementwise ops, `_batch_norm_forward`), but each weight is updated in place from its gradient product
    (`W.baddbmm_(a^T, g, alpha=-1)`) instead of writing a gradient tensor
    that an optimizer then reads: at small batches the per-step overhead of
    autograd and the optimizer, not arithmetic, is the limit.

    The backward pass is linear in the loss gradient, so the step scales
    that gradient once, by lr / b per run, and every layer's update is then
    its gradient product as it comes. `lr` is one learning rate for every
    run, or a tensor (R,) with each run's own: runs that differ only in seed
    and learning rate train as one pack, each computed the same way whatever
    its pack. Returns each run's mean cross-entropy (R,). tests/test_train.py
    checks it against the autograd path and torch.optim.SGD.
    """
    r, b, _ = x.shape
    scale = torch.as_tensor(lr, dtype=x.dtype, device=x.device).expand(r).reshape(r, 1, 1) / b
    saved: list[tuple] = []
    h = x
    for layer in model.layers:
        kind = type(layer)
        if kind is PackedLinear:  # (module calls avoided: per-step overhead is the limit)
            saved.append((layer, h))
            h = torch.bmm(h, layer.weight) if layer.bias is None else torch.baddbmm(layer.bias, h, layer.weight)
        elif kind is PackedBatchNorm:  # not ghost BN: its statistics differ
            xhat, gain = _batch_norm_forward(layer, h)
            saved.append((layer, xhat, gain))
            h = torch.addcmul(layer.bias.view(r, 1, -1), xhat, layer.weight.view(r, 1, -1))
        elif kind in _FORWARD:
            h = _FORWARD[kind](h)
            saved.append((layer, h))
        else:
            raise TypeError(f"fused_sgd_step does not handle {kind.__name__}")
    logp = torch.log_softmax(h, dim=-1)  # (R, b, classes)
    target = y.view(r, b, 1)
    losses = -logp.gather(-1, target).mean((1, 2))
    g = logp.exp_()  # d(mean CE)/d(logits) = (softmax - onehot) / b, per run; times lr
    g.scatter_add_(-1, target, torch.full_like(target, -1.0, dtype=g.dtype))
    g.mul_(scale)
    first = model.layers[0]
    before_norm = False  # whether the layer being walked back feeds a BatchNorm
    for item in reversed(saved):
        layer = item[0]
        kind = type(layer)
        if kind is PackedLinear:
            a = item[1]
            g_in = torch.bmm(g, layer.weight.transpose(1, 2)) if layer is not first else None
            layer.weight.baddbmm_(a.transpose(1, 2), g, alpha=-1)
            # A bias that feeds BN gets no gradient: the batch mean removes it, and
            # BN's input gradient sums to zero over the batch (autograd's sum of it
            # is rounding noise, ~1e-9), so its update is skipped, not computed.
            if layer.bias is not None and not before_norm:
                layer.bias.sub_(g.sum(1, keepdim=True))
            g, before_norm = g_in, False
        elif kind is PackedBatchNorm:
            g = _batch_norm_backward(layer, g, item[1], item[2])
            before_norm = True
        else:
            g = _BACKWARD[kind](g, item[1])
    return losses


def _batch_norm_forward(layer: PackedBatchNorm, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-mode BatchNorm1d of every run's (B, F) slice of `h` (R, B, F):
    returns the normalized input (R, B, F) and gamma / std (R, 1, F), and
    updates the running statistics as nn.BatchNorm1d does (momentum is the
    new batch's weight; the running variance is the unbiased one).

    Plain sums and elementwise ops on (R, B, F) as it lies, not
    torch.native_batch_norm: at batch 64 (a 64 x 128 slice) the native
    forward and backward kernels split their channels over OpenMP threads,
    and waking the second thread costs more than the arithmetic (process
    CPU time 2.4x and 3.8x their thread's own with 2 threads, and up to 9x
    the wall time under load: docs/speed.md), while ops on tensors below
    PyTorch's grain size (32,768 elements) run on the calling thread.
    """
    r, b, _ = h.shape
    if b < 2:
        raise ValueError("BatchNorm needs more than one example per batch to train")
    # Two passes of plain sums (torch.var_mean's Welford kernel takes ~6x as long here).
    total = h.sum(1, keepdim=True)  # (R, 1, F)
    centered = torch.sub(h, total, alpha=1 / b)
    squares = (centered * centered).sum(1, keepdim=True)  # b x the biased variance BN normalizes with
    m = layer.momentum
    torch._foreach_mul_([layer.running_mean, layer.running_var], 1 - m)
    layer.running_mean.add_(total.view(-1), alpha=m / b)
    layer.running_var.add_(squares.view(-1), alpha=m / (b - 1))  # unbiased, as BatchNorm1d's
    invstd = squares.mul_(1 / b).add_(layer.eps).rsqrt_()
    return centered.mul_(invstd), invstd.mul_(layer.weight.view(r, 1, -1))


def _batch_norm_backward(layer: PackedBatchNorm, g: torch.Tensor, xhat: torch.Tensor,
                         gain: torch.Tensor) -> torch.Tensor:
    """BN's backward from the gradient `g` of its output (R, B, F, already
    times lr / b): updates gamma and beta in place and returns the input's
    gradient, gamma / std * (g - mean(g) - xhat * mean(g * xhat)) with the
    means over each run's batch (Ioffe & Szegedy 2015, section 3)."""
    b = g.shape[1]
    g_bias = g.sum(1, keepdim=True)  # (R, 1, F)
    g_weight = (g * xhat).sum(1, keepdim=True)
    g_in = torch.addcmul(g, xhat, g_weight, value=-1 / b).sub_(g_bias, alpha=1 / b).mul_(gain)
    torch._foreach_sub_([layer.weight, layer.bias], [g_weight.view(-1), g_bias.view(-1)])  # one op for both
    return g_in


# The activations it handles (study.models.fused_sgd.ACTIVATIONS, by name): forward,
# and backward from the output.
_FORWARD = {nn.ReLU: torch.relu, nn.Sigmoid: torch.sigmoid, nn.Tanh: torch.tanh}
_BACKWARD = {
    nn.ReLU: lambda g, out: torch.ops.aten.threshold_backward(g, out, 0),
    nn.Sigmoid: torch.ops.aten.sigmoid_backward,
    nn.Tanh: torch.ops.aten.tanh_backward,
}
