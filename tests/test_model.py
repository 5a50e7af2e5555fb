"""Model shapes, norm placement, and the packed model against the reference."""

import pytest
import torch
from torch import nn

from study.models.mlp import PackedMLP, build_mlp


def test_notebook_architecture_and_norm_placement():
    net = build_mlp(784, [128, 64], 10, "relu", "batch")
    kinds = [type(m) for m in net]
    # Linear -> BN -> ReLU per hidden layer, then the logits Linear.
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [128, 64, 10]
    assert net(torch.randn(5, 784)).shape == (5, 10)
    assert sum(p.numel() for p in net.parameters()) == (
        784 * 128 + 128 + 2 * 128 + 128 * 64 + 64 + 2 * 64 + 64 * 10 + 10)


def test_no_norm_has_no_bn_and_other_activations():
    net = build_mlp(784, [32], 10, "sigmoid", "none")
    assert [type(m) for m in net] == [nn.Linear, nn.Sigmoid, nn.Linear]
    assert isinstance(build_mlp(784, [32], 10, "tanh", "none")[1], nn.Tanh)


def test_bias_before_norm_option():
    with_bias = build_mlp(784, [16], 10, "relu", "batch", bias_before_norm=True)
    without = build_mlp(784, [16], 10, "relu", "batch", bias_before_norm=False)
    assert with_bias[0].bias is not None and without[0].bias is None
    assert without[-1].bias is not None  # the logits layer keeps its bias
    # Without a norm there is nothing to make the bias redundant: kept.
    assert build_mlp(784, [16], 10, "relu", "none", bias_before_norm=False)[0].bias is not None


def _members(norm, seeds, bias=True):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(build_mlp(20, [8, 6], 3, "relu", norm, bias_before_norm=bias))
    return out


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("bias", [True, False])
def test_pack_of_one_equals_reference_forward_backward_and_running_stats(norm, bias):
    torch.manual_seed(0)
    (ref,) = _members(norm, [3], bias)
    (copy,) = _members(norm, [3], bias)
    packed = PackedMLP([copy])
    x = torch.randn(16, 20)
    y = torch.randint(0, 3, (16,))
    ref_loss = nn.functional.cross_entropy(ref(x), y)
    packed_loss = nn.functional.cross_entropy(packed(x.unsqueeze(0))[0], y)
    torch.testing.assert_close(packed_loss, ref_loss)
    ref_loss.backward()
    packed_loss.backward()
    torch.testing.assert_close(packed.layers[0].weight.grad[0].t(), ref[0].weight.grad)
    # Running statistics were updated identically; eval mode uses them.
    unpacked = packed.unpack(0, _members(norm, [99], bias)[0])
    for a, b in zip(unpacked.state_dict().items(), ref.state_dict().items()):
        if a[0].endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(a[1], b[1], msg=a[0])
    ref.eval()
    packed.eval()
    torch.testing.assert_close(packed(x.unsqueeze(0))[0], ref(x))


def test_pack_keeps_runs_independent_including_batch_statistics():
    seeds = [0, 1, 2]
    refs = _members("batch", seeds)
    packed = PackedMLP(_members("batch", seeds))
    x = torch.randn(3, 10, 20)  # each run its own minibatch
    out = packed(x)
    for r, ref in enumerate(refs):
        torch.testing.assert_close(out[r], ref(x[r]))
    # Changing run 1's inputs changes nothing in runs 0 and 2 (BN statistics
    # are per run, not pooled over the pack).
    x2 = x.clone()
    x2[1] *= 5
    out2 = packed(x2)
    torch.testing.assert_close(out2[0], out[0])
    torch.testing.assert_close(out2[2], out[2])
    assert not torch.allclose(out2[1], out[1])


def test_pack_rejects_mixed_architectures():
    torch.manual_seed(0)
    a = build_mlp(20, [8], 3, "relu", "none")
    b = build_mlp(20, [9], 3, "relu", "none")
    with pytest.raises(ValueError, match="one architecture"):
        PackedMLP([a, b])


def test_every_model_family_has_its_config_group_and_its_row():
    """`model=<family>`: conf/model/<family>.yaml names the family, and its
    record in study.models.FAMILIES builds it (the schema's ModelFamily and
    Norm are read from the records)."""
    from omegaconf import OmegaConf

    from helpers import REPO
    from study.config import ModelFamily, Norm
    from study.models import FAMILIES

    assert {p.stem for p in (REPO / "conf" / "model").glob("*.yaml")} == set(FAMILIES)
    assert {f.value for f in ModelFamily} == set(FAMILIES)
    assert {n.value for n in Norm} == {n for f in FAMILIES.values() for n in f.norms}
    for family in FAMILIES:
        assert OmegaConf.load(REPO / "conf" / "model" / f"{family}.yaml").family == family

def test_a_builder_refuses_a_norm_its_family_does_not_build():
    """The builders' guard reads the family's record, as validate does."""
    from study.models.cnn import build_cnn
    from study.models.lstm import build_lstm

    with pytest.raises(ValueError, match="'batch_shared' for model=mlp"):
        build_mlp(784, [8], 10, "relu", "batch_shared")
    with pytest.raises(ValueError, match="'batch_shared' for model=cnn"):
        build_cnn(norm="batch_shared")
    with pytest.raises(ValueError, match="'group' for model=lstm"):
        build_lstm(norm="group")
