"""The `lstm` model family: MNIST read row by row by one LSTM layer.

`build_lstm` is one run's network: the flat (B, 784) image (pixel-permuted
first where `data.permute` is on) read as 28 steps of 28 pixels by one
LSTM layer of `hidden[0]` units; the last hidden state goes through a
Linear to the logits (Cooijmans et al. 2016, "Recurrent Batch
Normalization", sec. 5.1, with rows instead of single pixels). The arms,
by `model.norm`:

- none: PyTorch's `nn.LSTM`.
- batch: BN-LSTM (Cooijmans et al. 2016, eqs. 6-8):
      gates = BN(W_h h_{t-1}; g_h) + BN(W_x x_t; g_x) + b
      c_t   = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
      h_t   = sigmoid(o) * tanh(BN(c_t; g_c, b_c))
  with statistics per time step: each step's batch statistics in training
  and a running (population) estimate per time step at evaluation; the
  scales g are shared over time and start at `bn_scale_init` (0.1, their
  sec. 4), the shifts at 0 (the gate bias b stands in for the first two).
- batch_shared: the same cell and the same training computation (each
  step's batch statistics), but one running estimate for all time steps,
  updated at every step: what BN-LSTM looks like without per-step
  population statistics. Training is the same as `batch`'s at the same
  seed; only the evaluation (population statistics) differs.
- layer: LN-LSTM (Ba et al. 2016, "Layer Normalization", supp. A.4): LN in
  place of each BN above (statistics per example over the 4H gate
  pre-activations and over the H cell units; gains start at 1).

Every arm starts from the same weights at a seed: `nn.LSTM`'s
initialization (uniform in +-1/sqrt(H)), copied into the hand-written
cell (its single gate bias b = nn.LSTM's b_ih + b_hh), so the arms differ
only by their norm. The gate order is PyTorch's (i, f, g, o).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LSTM_NORMS = ("none", "batch", "batch_shared", "layer")
ROWS, PIXELS = 28, 28  # 28 time steps of 28 pixels


class StepBatchNorm(nn.Module):
    """BN of one of the cell's terms at time step t (a (B, F) input).

    Training: the batch statistics of this step's input. Evaluation: the
    running estimate of step t (`steps` rows of running statistics), or of
    the one row shared by all steps (`shared`). The running estimate of a
    row is updated as nn.BatchNorm1d updates its own (momentum, unbiased
    variance) every time a step that uses it runs in training.
    """

    def __init__(self, features: int, steps: int, shared: bool, scale_init: float, shift: bool,
                 eps: float, momentum: float) -> None:
        super().__init__()
        self.eps, self.momentum, self.shared = eps, momentum, shared
        rows = 1 if shared else steps
        self.weight = nn.Parameter(torch.full((features,), float(scale_init)))
        self.bias = nn.Parameter(torch.zeros(features)) if shift else None
        self.register_buffer("running_mean", torch.zeros(rows, features))
        self.register_buffer("running_var", torch.ones(rows, features))

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        row = 0 if self.shared else min(t, self.running_mean.shape[0] - 1)
        # Rows of the buffers are views: F.batch_norm updates them in place.
        return F.batch_norm(x, self.running_mean[row], self.running_var[row], self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class NormLSTM(nn.Module):
    """One LSTM layer written out, with `norm` in the cell (none, batch, batch_shared, layer).

    forward: (B, T, I) -> the last hidden state (B, H).
    """

    def __init__(self, input_size: int, hidden: int, norm: str, steps: int = ROWS, scale_init: float = 0.1,
                 eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        if norm not in LSTM_NORMS:
            raise ValueError(f"unknown norm {norm!r}; known: {LSTM_NORMS}")
        self.hidden, self.norm = hidden, norm
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden, hidden))
        self.bias = nn.Parameter(torch.empty(4 * hidden))
        self.norm_x = self.norm_h = self.norm_c = None
        if norm in ("batch", "batch_shared"):
            def bn(features: int, shift: bool) -> StepBatchNorm:
                return StepBatchNorm(features, steps, norm == "batch_shared", scale_init, shift, eps, momentum)

            self.norm_x, self.norm_h, self.norm_c = bn(4 * hidden, False), bn(4 * hidden, False), bn(hidden, True)
        elif norm == "layer":
            self.norm_x, self.norm_h = nn.LayerNorm(4 * hidden, eps=eps), nn.LayerNorm(4 * hidden, eps=eps)
            self.norm_c = nn.LayerNorm(hidden, eps=eps)

    def load_from(self, lstm: nn.LSTM) -> "NormLSTM":
        """Start from an nn.LSTM's weights (its two biases summed into the one gate bias)."""
        with torch.no_grad():
            self.weight_ih.copy_(lstm.weight_ih_l0)
            self.weight_hh.copy_(lstm.weight_hh_l0)
            self.bias.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
        return self

    def _n(self, which: Optional[nn.Module], x: torch.Tensor, t: int) -> torch.Tensor:
        if which is None:
            return x
        return which(x, t) if isinstance(which, StepBatchNorm) else which(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, steps, _ = x.shape
        wx = F.linear(x, self.weight_ih)  # (B, T, 4H): every step's input term at once
        h = x.new_zeros(b, self.hidden)
        c = x.new_zeros(b, self.hidden)
        for t in range(steps):
            gates = self._n(self.norm_x, wx[:, t], t) + self._n(self.norm_h, F.linear(h, self.weight_hh), t) + self.bias
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self._n(self.norm_c, c, t))
        return h


class PlainLSTM(nn.Module):
    """nn.LSTM, returning the last hidden state (B, H) of a (B, T, I) input."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        self.lstm = lstm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[1][0][0]


class RowLSTM(nn.Module):
    """(B, 784) -> (B, classes): 28 rows of 28 pixels through `rnn`, its last hidden state through `head`."""

    def __init__(self, rnn: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.rnn, self.head = rnn, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x.reshape(-1, ROWS, PIXELS)))


def build_lstm(
    hidden: Sequence[int] = (100,),
    out_features: int = 10,
    norm: str = "none",
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
    bn_scale_init: float = 0.1,
    **_other_families: Any,  # ModelConfig is every family's keys: the MLP's activation etc. are not read here
) -> RowLSTM:
    """One LSTM layer of hidden[0] units over 28 rows, then Linear -> logits."""
    if norm not in LSTM_NORMS:
        raise ValueError(f"unknown norm {norm!r}; known: {LSTM_NORMS}")
    if len(hidden) != 1:
        raise ValueError(f"hidden {list(hidden)}: the lstm family has one layer, hidden: [units]")
    lstm = nn.LSTM(PIXELS, hidden[0], batch_first=True)  # every arm's initial weights
    rnn: nn.Module = PlainLSTM(lstm) if norm == "none" else NormLSTM(
        PIXELS, hidden[0], norm, ROWS, bn_scale_init, bn_eps, bn_momentum).load_from(lstm)
    return RowLSTM(rnn, nn.Linear(hidden[0], out_features))
