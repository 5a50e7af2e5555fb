"""Each normalization kind against a hand computation, and packed against plain."""

import pytest
import torch

from study.models.mlp import GhostBatchNorm1d, PackedMLP, build_mlp

EPS = 1e-5


def hand_bn(x, gamma, beta):
    mean = x.mean(0)
    var = x.var(0, unbiased=False)
    return (x - mean) / torch.sqrt(var + EPS) * gamma + beta


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(10, 6) * 3 + 1


def _affine(m):
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 1.5, m.weight.numel()))
        m.bias.copy_(torch.linspace(-1, 1, m.bias.numel()))
    return m.weight.detach(), m.bias.detach()


def test_batch_norm_train_and_eval_by_hand(x):
    bn = torch.nn.BatchNorm1d(6, eps=EPS, momentum=0.1)
    g, b = _affine(bn)
    torch.testing.assert_close(bn(x), hand_bn(x, g, b))
    # running stats: 0.9 * init + 0.1 * batch (unbiased variance)
    torch.testing.assert_close(bn.running_mean, 0.1 * x.mean(0))
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * x.var(0, unbiased=True))
    bn.eval()
    torch.testing.assert_close(bn(x), (x - bn.running_mean) / torch.sqrt(bn.running_var + EPS) * g + b)


def test_ghost_batch_norm_uses_virtual_batches(x):
    gbn = GhostBatchNorm1d(6, ghost_size=4, eps=EPS, momentum=0.1)
    g, b = _affine(gbn)
    out = gbn(x)
    # 10 = 4 + 4 + 2: three virtual batches, each normalized by itself
    expected = torch.cat([hand_bn(x[0:4], g, b), hand_bn(x[4:8], g, b), hand_bn(x[8:10], g, b)])
    torch.testing.assert_close(out, expected)
    # running stats updated once per chunk, in order
    rm, rv = torch.zeros(6), torch.ones(6)
    for c in (x[0:4], x[4:8], x[8:10]):
        rm = 0.9 * rm + 0.1 * c.mean(0)
        rv = 0.9 * rv + 0.1 * c.var(0, unbiased=True)
    torch.testing.assert_close(gbn.running_mean, rm)
    torch.testing.assert_close(gbn.running_var, rv)
    gbn.eval()
    torch.testing.assert_close(gbn(x), (x - rm) / torch.sqrt(rv + EPS) * g + b)


def test_ghost_chunk_of_one_joins_the_previous_chunk(x):
    gbn = GhostBatchNorm1d(6, ghost_size=3, eps=EPS)
    g, b = _affine(gbn)
    # 10 = 3 + 3 + 4 (the lone 10th example joins the third chunk)
    expected = torch.cat([hand_bn(x[0:3], g, b), hand_bn(x[3:6], g, b), hand_bn(x[6:10], g, b)])
    torch.testing.assert_close(gbn(x), expected)


@pytest.mark.parametrize("train", [True, False])
def test_layer_norm_by_hand_same_in_train_and_eval(x, train):
    ln = build_mlp(6, [6], 2, "relu", "layer", bn_eps=EPS)[1]
    g, b = _affine(ln)
    ln.train(train)
    mean, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(ln(x), (x - mean) / torch.sqrt(var + EPS) * g + b)


@pytest.mark.parametrize("train", [True, False])
def test_group_norm_by_hand_same_in_train_and_eval(x, train):
    gn = build_mlp(6, [6], 2, "relu", "group", bn_eps=EPS, groups=2)[1]
    g, b = _affine(gn)
    gn.train(train)
    parts = []
    for grp in (x[:, :3], x[:, 3:]):  # 2 groups of 3 features, statistics per example
        mean, var = grp.mean(1, keepdim=True), grp.var(1, unbiased=False, keepdim=True)
        parts.append((grp - mean) / torch.sqrt(var + EPS))
    torch.testing.assert_close(gn(x), torch.cat(parts, 1) * g + b)


@pytest.mark.parametrize("norm", ["ghost", "layer", "group"])
def test_packed_norms_equal_their_reference_models(norm):
    def members(seeds):
        out = []
        for s in seeds:
            torch.manual_seed(s)
            out.append(build_mlp(20, [8, 8], 3, "relu", norm, ghost_size=4, groups=4))
        return out

    refs, packed = members([0, 1, 2]), PackedMLP(members([0, 1, 2]))
    x = torch.randn(3, 10, 20)
    out = packed(x)
    for r, ref in enumerate(refs):
        torch.testing.assert_close(out[r], ref(x[r]))
    packed.eval()
    for ref in refs:
        ref.eval()
    out = packed(x)
    for r, ref in enumerate(refs):
        torch.testing.assert_close(out[r], ref(x[r]))
