"""The cnn family's pack (study.models.cnn.PackedCNN) against its members
trained alone: for every norm, each member's logits, gradients, weights and
running statistics after SGD and Adam steps, its eval-mode outputs and its
unpacked network match its network alone to float tolerance. In float64, so
that the comparison is tight whatever the thread count (the grouped
convolution sums in another order than a member's own)."""

import pytest
import torch
import torch.nn.functional as F

from study.models import FAMILIES
from study.models.cnn import PackedCNN, build_cnn

NORMS = ["none", "batch", "ghost", "layer", "group"]
R, B = 3, 6  # ghost_size 4: each member's batch of 6 is two virtual batches, 4 + 2
TIGHT = {"rtol": 1e-9, "atol": 1e-10}


def member(norm, seed, channels_last=False, activation="relu", bias_before_norm=True):
    torch.manual_seed(seed)
    return build_cnn(channels=[4, 8], hidden=[8], norm=norm, groups=2, ghost_size=4, activation=activation,
                     channels_last=channels_last, bias_before_norm=bias_before_norm).double()


def packed_grads(pack, r):
    """Member r's gradient under its own network's parameter names: the pack's
    gradients read through `member_state`, as its weights are."""
    with torch.no_grad():
        weights = [p.detach().clone() for p in pack.parameters()]
        for p in pack.parameters():
            p.copy_(p.grad)
        grads = {k: v.clone() for k, v in pack.member_state(r).items()}
        for p, w in zip(pack.parameters(), weights):
            p.copy_(w)
    return grads


def assert_member_matches(pack, r, net, grads=True):
    """Every parameter, buffer and (after a backward) gradient of member r equals `net`'s."""
    state, own = pack.member_state(r), net.state_dict()
    # the head's BatchNorm1d counts its batches; the MLP's pack keeps no count (momentum is fixed)
    assert set(own) - set(state) <= {k for k in own if k.startswith("head.") and k.endswith("num_batches_tracked")}
    for k, v in state.items():
        torch.testing.assert_close(v, own[k], **TIGHT, msg=k)
    if grads:
        g = packed_grads(pack, r)
        for k, p in net.named_parameters():
            torch.testing.assert_close(g[k], p.grad, **TIGHT, msg=f"grad {k}")


# The pack's two ways through its conv blocks: grouped layers (below `grouped_below` examples per
# member) and member by member on slices of the same weights.
PATHS = {"grouped": 10**9, "one_by_one": 0}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("norm", NORMS)
def test_packed_cnn_trains_each_member_as_alone(norm, optimizer, path):
    # A bias just before batch statistics has a zero gradient up to rounding, which Adam divides by its
    # own size: +-lr steps from noise. Without that bias under Adam (SGD keeps it: its steps stay ~1e-17).
    bias = optimizer == "sgd" or norm not in ("batch", "ghost")
    pack = PackedCNN([member(norm, s, bias_before_norm=bias) for s in range(R)])
    pack.grouped_below = PATHS[path]
    alone = [member(norm, s, bias_before_norm=bias) for s in range(R)]
    for r, m in enumerate(alone):  # the pack starts from its members' weights
        assert_member_matches(pack, r, m, grads=False)

    def opt(params):
        if optimizer == "sgd":
            return torch.optim.SGD(params, lr=0.05, momentum=0.9, foreach=True)
        return torch.optim.Adam(params, lr=1e-2, foreach=True)

    opt_pack, opts = opt(pack.parameters()), [opt(m.parameters()) for m in alone]
    torch.manual_seed(5)
    for _ in range(3):
        # every member its own batch (the trainer's (R, B, 784) and run-major labels)
        x, y = torch.randn(R, B, 784, dtype=torch.float64), torch.randint(0, 10, (R, B))
        logits = pack(x)
        losses = F.cross_entropy(logits.reshape(R * B, -1), y.reshape(-1), reduction="none").view(R, B).mean(1)
        opt_pack.zero_grad()
        losses.sum().backward()
        for r, (m, o) in enumerate(zip(alone, opts)):
            own = m(x[r])
            torch.testing.assert_close(logits[r].detach(), own.detach(), **TIGHT)
            o.zero_grad()
            F.cross_entropy(own, y[r]).backward()
            assert_member_matches(pack, r, m)  # before the step: the gradients, and the statistics just updated
        opt_pack.step()
        for o in opts:
            o.step()
    for r, m in enumerate(alone):
        assert_member_matches(pack, r, m, grads=False)  # the weights after the last step

    x = torch.randn(R, B, 784, dtype=torch.float64)
    pack.eval()
    out = pack(x)
    for r, m in enumerate(alone):
        m.eval()
        torch.testing.assert_close(out[r], m(x[r]), **TIGHT)  # population statistics where BN
        unpacked = pack.unpack(r, member(norm, 99, bias_before_norm=bias)).eval()
        torch.testing.assert_close(unpacked(x[r]), m(x[r]), **TIGHT)
        for k, v in pack.member_state(r).items():
            assert torch.equal(unpacked.state_dict()[k], v), k


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("norm", NORMS)
def test_a_packed_member_sees_only_its_own_batch(norm, path):
    """Changing one member's batch leaves the others' outputs and statistics untouched (training mode)."""
    pack = PackedCNN([member(norm, s) for s in range(R)])
    twin = PackedCNN([member(norm, s) for s in range(R)])
    pack.grouped_below = twin.grouped_below = PATHS[path]
    x = torch.randn(R, B, 784, dtype=torch.float64)
    other = x.clone()
    other[1] = torch.randn(B, 784, dtype=torch.float64) * 3 + 1
    a, b = pack(x), twin(other)
    assert not torch.allclose(a[1], b[1])
    for r in (0, 2):
        torch.testing.assert_close(a[r], b[r], **TIGHT)
        for k, v in pack.member_state(r).items():
            torch.testing.assert_close(v, twin.member_state(r)[k], **TIGHT, msg=k)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_packed_cnn_pools_before_its_activation_and_keeps_the_memory_format(activation, channels_last, path):
    """The pack max-pools before the (monotone) activation, a quarter of the
    activation's work: the same numbers as the member's activation -> pool,
    in either memory format."""
    nets = [member("batch", s, channels_last, activation) for s in range(R)]
    pack = PackedCNN([member("batch", s, channels_last, activation) for s in range(R)])
    pack.grouped_below = PATHS[path]
    kinds = [type(m).__name__ for m in pack.features]
    assert kinds[2] == "MaxPool2d" and kinds[3] != "MaxPool2d"
    assert pack.features[4].weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    x = torch.randn(R, B, 784, dtype=torch.float64)
    logits = pack(x)
    logits.square().sum().backward()
    for r, m in enumerate(nets):
        own = m(x[r])
        torch.testing.assert_close(logits[r], own, **TIGHT)
        own.square().sum().backward()
        assert_member_matches(pack, r, m)


def test_the_cnn_family_packs_with_packed_cnn():
    pack = FAMILIES["cnn"].pack([build_cnn(channels=[4]), build_cnn(channels=[4])])
    assert isinstance(pack, PackedCNN) and pack.runs == 2
    assert pack(torch.randn(2, 5, 784)).shape == (2, 5, 10)
    with pytest.raises(ValueError, match="one architecture"):
        PackedCNN([build_cnn(channels=[4]), build_cnn(channels=[8])])
    with pytest.raises(ValueError, match="one architecture"):
        PackedCNN([build_cnn(channels=[4], norm="batch"), build_cnn(channels=[4], norm="ghost")])
    with pytest.raises(ValueError, match="does not fit"):
        pack.unpack(0, build_cnn(channels=[4], bias_before_norm=False, norm="batch"))
