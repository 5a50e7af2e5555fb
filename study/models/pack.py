"""A pack of R networks computed one after the other: the `cnn` family's pack (the
`lstm` family's is `study.models.lstm.PackedLSTM`, which batches its members).

The MLP's pack (study/models/packed.py) fuses its runs into batched matmuls; a conv
or recurrent net gains little from that on a CPU (a grouped convolution is
no faster than R small ones) and would need its own packed layers. So these
families' packs hold the R reference networks as they are and run them in
a loop: (R, B, 784) -> (R, B, classes), member r on its own slice. Each
member computes exactly what it computes alone (the same modules, shapes
and kernels; its gradient is that of its own loss, and torch.optim's
foreach updates are elementwise), so a run's numbers do not depend on its
pack (tests/test_families.py). What a pack saves is a process start and a
data load per run, not compute.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class LoopedPack(nn.Module):
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
