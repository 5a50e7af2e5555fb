"""The `lstm` model family: MNIST read row by row (28 steps of 28 pixels) by
one LSTM layer, its cell plain (`nn.LSTM`), with BN (BN-LSTM) or with LN
(LN-LSTM); `PackedLSTM` is its pack. The arms' equations:
docs/configuration.md#model-families."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from study.models import check_norm

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
        check_norm("lstm", norm)
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
    check_norm("lstm", norm)
    if len(hidden) != 1:
        raise ValueError(f"hidden {list(hidden)}: the lstm family has one layer, hidden: [units]")
    lstm = nn.LSTM(PIXELS, hidden[0], batch_first=True)  # every arm's initial weights
    rnn: nn.Module = PlainLSTM(lstm) if norm == "none" else NormLSTM(
        PIXELS, hidden[0], norm, ROWS, bn_scale_init, bn_eps, bn_momentum).load_from(lstm)
    return RowLSTM(rnn, nn.Linear(hidden[0], out_features))


class PackedLSTM(nn.Module):
    """R runs of one `build_lstm` network computed together: (R, B, 784) -> (R, B, classes).

    Every arm (none, batch, batch_shared, layer) runs the cell as NormLSTM
    writes it out, with each member's weights stacked on a leading run axis:
    per time step one batched matmul over the members for the recurrent term
    (the input terms of all 28 steps in one before the loop) and each
    member's own statistics (BN: its batch's per step, and its own running
    rows; LN: per example, with its own gains). Each member computes what it
    computes alone, to float tolerance (tests/test_families.py); the plain
    arm is nn.LSTM's cell, with its two gate biases kept as two parameters
    (each gets its own update, as in nn.LSTM), so all arms' costs come from
    one loop rather than a loop against a fused kernel.
    """

    def __init__(self, members: Sequence[RowLSTM]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a pack needs at least one member")
        first = members[0].rnn
        self.plain = isinstance(first, PlainLSTM)
        self.norm = "none" if self.plain else first.norm
        if any(isinstance(m.rnn, PlainLSTM) != self.plain or (not self.plain and m.rnn.norm != self.norm)
               for m in members):
            raise ValueError("packed members must share one architecture")
        cells = [m.rnn.lstm if self.plain else m.rnn for m in members]
        self.runs = len(members)

        def stack(get) -> nn.Parameter:
            return nn.Parameter(torch.stack([get(c).detach().clone() for c in cells]))

        if self.plain:
            self.weight_ih, self.weight_hh = stack(lambda c: c.weight_ih_l0), stack(lambda c: c.weight_hh_l0)
            self.bias_ih, self.bias_hh = stack(lambda c: c.bias_ih_l0), stack(lambda c: c.bias_hh_l0)
        else:
            self.weight_ih, self.weight_hh = stack(lambda c: c.weight_ih), stack(lambda c: c.weight_hh)
            self.bias_ih, self.bias_hh = stack(lambda c: c.bias), None
        self.hidden = self.weight_hh.shape[-1]
        self.norm_x = self.norm_h = self.norm_c = None
        if self.norm != "none":
            names = ("norm_x", "norm_h", "norm_c")
            for name in names:
                setattr(self, name, _PackedNorm([getattr(c, name) for c in cells]))
        self.head_weight = nn.Parameter(torch.stack([m.head.weight.detach().clone() for m in members]))
        self.head_bias = nn.Parameter(torch.stack([m.head.bias.detach().clone() for m in members]))

    # Examples per forward in evaluation: the input term of all steps is (R, B, 28, 4H) floats, 3.6 GB
    # for 8 runs of 100 units at the default eval_batch_size (10,000), allocated and faulted in anew
    # by every call; in chunks it is 1/10 of that.
    EVAL_CHUNK = 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, b = x.shape[:2]
        if not self.training and b > self.EVAL_CHUNK:  # evaluation is per example (population statistics)
            return torch.cat([self(x[:, s:s + self.EVAL_CHUNK]) for s in range(0, b, self.EVAL_CHUNK)], 1)
        # Every step's input term in one batched matmul, time-major within each member: the rows are put
        # in step order on x (28 pixels a row) rather than on the product (4H a row, 14x larger at 100
        # units), and the plain arm's biases are added by the matmul. Each step's (R, B, 4H) block is then
        # a view (split once), contiguous per member. Indexing wx[:, :, t] in the loop made each step's
        # backward write a zero-filled gradient of all of wx (28 full-size tensors a step); a copy of wx
        # in step order, then split, cost a copy each way and the bias addition another pass: about 1.2x
        # of the plain arm's step at batch 128 (docs/speed.md#the-packed-lstm-now-and-its-benchmark).
        seq = x.reshape(r, b, ROWS, PIXELS).transpose(1, 2).reshape(r, ROWS * b, PIXELS)
        w_ih = self.weight_ih.transpose(1, 2)
        if self.norm == "none":
            wx = torch.baddbmm((self.bias_ih + self.bias_hh)[:, None, :], seq, w_ih)
        else:
            wx = torch.bmm(seq, w_ih)
        steps = wx.view(r, ROWS, b, -1).unbind(1)
        w_hh = self.weight_hh.transpose(1, 2)  # (R, H, 4H)
        # The zero initial state is not computed with: at t = 0 the recurrent term is zero (no matmul; a
        # normalized arm still normalizes it, for its statistics) and c = i g. Same values, fewer kernels.
        h = c = None
        for t, wx_t in enumerate(steps):
            if self.norm == "none":
                gates = wx_t if h is None else torch.baddbmm(wx_t, h, w_hh)
            else:
                hh = torch.zeros_like(wx_t) if h is None else torch.bmm(h, w_hh)
                gates = self.norm_x(wx_t, t) + self.norm_h(hh, t) + self.bias_ih[:, None, :]
            # chunk, then each gate's own call: one sigmoid over the whole block with tanh on g's slice has
            # fewer forward kernels but a costlier backward (the slice's zero-filled gradient, then a sum),
            # and measured no faster; nor did these equations as custom autograd Functions (docs/speed.md).
            i, f, g, o = gates.chunk(4, 2)
            i, g = torch.sigmoid(i), torch.tanh(g)
            c = i * g if c is None else torch.addcmul(torch.sigmoid(f) * c, i, g)
            h = torch.sigmoid(o) * torch.tanh(c if self.norm_c is None else self.norm_c(c, t))
        return torch.baddbmm(self.head_bias[:, None, :], h, self.head_weight.transpose(1, 2))

    def member_state(self, r: int) -> dict[str, torch.Tensor]:
        """Run r's parameters and statistics under its own network's names (RowLSTM.state_dict)."""
        if self.plain:
            out = {"rnn.lstm.weight_ih_l0": self.weight_ih[r], "rnn.lstm.weight_hh_l0": self.weight_hh[r],
                   "rnn.lstm.bias_ih_l0": self.bias_ih[r], "rnn.lstm.bias_hh_l0": self.bias_hh[r]}
        else:
            out = {"rnn.weight_ih": self.weight_ih[r], "rnn.weight_hh": self.weight_hh[r], "rnn.bias": self.bias_ih[r]}
            for name in ("norm_x", "norm_h", "norm_c"):
                out.update({f"rnn.{name}.{k}": v for k, v in getattr(self, name).member_state(r).items()})
        out.update({"head.weight": self.head_weight[r], "head.bias": self.head_bias[r]})
        return {k: v.detach() for k, v in out.items()}

    def unpack(self, r: int, like: RowLSTM) -> RowLSTM:
        """Copy run r's parameters and statistics into a reference network."""
        like.load_state_dict(self.member_state(r))
        return like


class _PackedNorm(nn.Module):
    """One of the cell's norms for R members: StepBatchNorm (per-step batch
    statistics, running rows per member) or LayerNorm (per example), with
    each member's own scale and shift. Input (R, B, F)."""

    def __init__(self, norms: Sequence[nn.Module]) -> None:
        super().__init__()
        first = norms[0]
        self.batch = isinstance(first, StepBatchNorm)
        self.eps = first.eps
        self.weight = nn.Parameter(torch.stack([n.weight.detach().clone() for n in norms]))
        has_bias = first.bias is not None
        self.bias = nn.Parameter(torch.stack([n.bias.detach().clone() for n in norms])) if has_bias else None
        if self.batch:
            self.momentum, self.shared = first.momentum, first.shared
            # (rows, R, F): a row's (R, F) block is contiguous, so its flat view is updated in place.
            self.register_buffer("running_mean", torch.stack([n.running_mean for n in norms], 1).clone())
            self.register_buffer("running_var", torch.stack([n.running_var for n in norms], 1).clone())

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        r, b, f = x.shape
        if not self.batch:
            y = F.layer_norm(x, (f,), eps=self.eps)
            return y * self.weight[:, None, :] + (self.bias[:, None, :] if self.bias is not None else 0)
        row = 0 if self.shared else min(t, self.running_mean.shape[0] - 1)
        # One batch norm over (B, R x F): each (member, feature) column its own statistics, as each member's alone.
        flat = x.transpose(0, 1).reshape(b, r * f)
        y = F.batch_norm(flat, self.running_mean[row].view(-1), self.running_var[row].view(-1),
                         self.weight.reshape(-1), self.bias.reshape(-1) if self.bias is not None else None,
                         self.training, self.momentum, self.eps)
        return y.view(b, r, f).transpose(0, 1)

    def member_state(self, r: int) -> dict[str, torch.Tensor]:
        out = {"weight": self.weight[r]}
        if self.bias is not None:
            out["bias"] = self.bias[r]
        if self.batch:
            out.update(running_mean=self.running_mean[:, r], running_var=self.running_var[:, r])
        return out
