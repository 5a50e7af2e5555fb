"""A pack, R runs as one model mapping (R, B, ...) to (R, B, classes):
`LoopedPack` runs R networks one after the other, each exactly as alone
(any network's pack; each family has its own now: mlp.py, cnn.py,
lstm.py); `evaluate` scores every run of any pack."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LoopedPack(nn.Module):
    """R networks of one architecture, run one after the other on their slices.

    The members are kept as they are: each computes exactly what it computes
    alone (the same modules, shapes and kernels; its gradient is that of its
    own loss, and torch.optim's foreach updates are elementwise;
    tests/test_families.py). It saves a process start and a data load per
    run, not compute. The baseline of the families' own packs: on the 2-core
    development machine, one thread, R grouped convolutions were slower than
    this loop at batch 64 and 512 and faster at 2 and 8, so `PackedCNN`
    (cnn.py) groups only below 32 examples per member
    (docs/speed.md#the-packed-conv-net).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a pack needs at least one member")
        shapes = {tuple((n, tuple(p.shape)) for n, p in m.named_parameters()) for m in members}
        if len(shapes) != 1 or len({type(m) for m in members}) != 1:
            raise ValueError("packed members must share one architecture")
        self.runs = len(members)
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x[r]) for r, m in enumerate(self.members)])

    def unpack(self, r: int, like: nn.Module) -> nn.Module:
        """Copy run r's parameters and statistics into a reference model."""
        like.load_state_dict(self.members[r].state_dict())
        return like


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean cross-entropy per run of a pack (`model.runs` of them; eval mode: BN running stats)."""
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
