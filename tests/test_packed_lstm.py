"""The packed LSTM's step (study/models/lstm.py), which skips the zero
initial state's terms: a pack's gradients and running statistics after one
backward, not only its trajectory under Adam (tests/test_families.py), are
each member's alone (float64)."""

import pytest
import torch
import torch.nn.functional as F

from study.models.lstm import PackedLSTM, build_lstm


@pytest.mark.parametrize("runs", [1, 3])
@pytest.mark.parametrize("norm", ["none", "batch", "batch_shared", "layer"])
def test_a_pack_has_each_members_gradients(norm, runs):
    """One backward of a pack's summed losses: every parameter's gradient, and
    every running statistic, is its member's alone."""
    def member(seed):
        torch.manual_seed(seed)
        return build_lstm(hidden=[6], norm=norm).double()

    alone = [member(s) for s in range(runs)]
    pack = PackedLSTM([member(s) for s in range(runs)])
    x, y = torch.randn(runs, 5, 784, dtype=torch.float64), torch.randint(0, 10, (runs, 5))
    losses = F.cross_entropy(pack(x).reshape(runs * 5, -1), y.reshape(-1), reduction="none").view(runs, 5).mean(1)
    losses.sum().backward()
    params = dict(pack.named_parameters())
    assert all(p.grad is not None for p in params.values())
    for r, m in enumerate(alone):
        F.cross_entropy(m(x[r]), y[r]).backward()
        state = pack.member_state(r)  # views of the pack's tensors under the member's names
        for name, p in m.named_parameters():
            packed = next(q for q in params.values() if q[r].data_ptr() == state[name].data_ptr())
            torch.testing.assert_close(packed.grad[r], p.grad, rtol=1e-9, atol=1e-12, msg=f"{norm} {name}")
        for name, v in m.state_dict().items():
            torch.testing.assert_close(state[name], v, rtol=1e-9, atol=1e-12, msg=f"{norm} {name}")


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_evaluation_in_chunks_is_evaluation_at_once(norm, monkeypatch):
    """In eval mode a large batch runs in chunks (memory): each example's logits are as at once."""
    torch.manual_seed(0)
    pack = PackedLSTM([build_lstm(hidden=[6], norm=norm).double() for _ in range(2)])
    pack(torch.randn(2, 4, 784, dtype=torch.float64))  # a training step's statistics
    pack.eval()
    x = torch.randn(2, 7, 784, dtype=torch.float64)
    whole = pack(x)
    monkeypatch.setattr(PackedLSTM, "EVAL_CHUNK", 3)
    torch.testing.assert_close(pack(x), whole, rtol=1e-12, atol=1e-12)
