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
    for each piece (native batch norm forward/backward, threshold/sigmoid/tanh
    backward), but each weight is updated in place from its gradient product
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
            f = layer.features
            flat = h.transpose(0, 1).reshape(b, r * f)
            out, mean, invstd = torch.native_batch_norm(
                flat, layer.weight, layer.bias, layer.running_mean, layer.running_var,
                True, layer.momentum, layer.eps)
            saved.append((layer, flat, mean, invstd))
            h = out.view(b, r, f).transpose(0, 1)
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
            # is rounding noise), so its update is skipped, not computed.
            if layer.bias is not None and not before_norm:
                layer.bias.sub_(g.sum(1, keepdim=True))
            g, before_norm = g_in, False
        elif kind is PackedBatchNorm:
            _, flat, mean, invstd = item
            f = layer.features
            g_flat = g.transpose(0, 1).reshape(b, r * f)
            g_in, g_w, g_b = torch.ops.aten.native_batch_norm_backward(
                g_flat, flat, layer.weight, layer.running_mean, layer.running_var, mean, invstd,
                True, layer.eps, [True, True, True])
            torch._foreach_sub_([layer.weight, layer.bias], [g_w, g_b])  # one op for both
            g = g_in.view(b, r, f).transpose(0, 1)
            before_norm = True
        else:
            g = _BACKWARD[kind](g, item[1])
    return losses


# The activations it handles (study.models.fused_sgd.ACTIVATIONS, by name): forward,
# and backward from the output.
_FORWARD = {nn.ReLU: torch.relu, nn.Sigmoid: torch.sigmoid, nn.Tanh: torch.tanh}
_BACKWARD = {
    nn.ReLU: lambda g, out: torch.ops.aten.threshold_backward(g, out, 0),
    nn.Sigmoid: torch.ops.aten.sigmoid_backward,
    nn.Tanh: torch.ops.aten.tanh_backward,
}
