"""The cnn and lstm families: each norm and cell against a hand computation,
the looped pack against its members alone, and their config checks (the
cnn's own pack: tests/test_cnn_pack.py)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import tiny_overrides
from study.config import ConfigError, compose_config, validate
from study.models.cnn import GhostBatchNorm2d, build_cnn
from study.models.pack import LoopedPack
from study.models.lstm import NormLSTM, PackedLSTM, StepBatchNorm, build_lstm

EPS = 1e-5


def _affine(m):
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 1.5, m.weight.numel()))
        if m.bias is not None:
            m.bias.copy_(torch.linspace(-1, 1, m.bias.numel()))
    return m.weight.detach(), None if m.bias is None else m.bias.detach()


def per_channel(v):
    return v.view(1, -1, 1, 1)


def hand_bn2d(x, g, b):
    # statistics per channel over batch x height x width, biased variance
    mean = x.mean((0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * per_channel(g) + per_channel(b)


@pytest.fixture
def fmap():
    torch.manual_seed(0)
    return torch.randn(6, 4, 5, 5) * 2 + 0.5


def _first_norm(norm, **kw):
    net = build_cnn(channels=[4], hidden=[8], norm=norm, groups=2, ghost_size=4, **kw)
    return net, net.features[1]


def test_cnn_batch_norm_2d_by_hand_and_its_running_statistics(fmap):
    _, bn = _first_norm("batch")
    assert isinstance(bn, nn.BatchNorm2d)
    g, b = _affine(bn)
    torch.testing.assert_close(bn(fmap), hand_bn2d(fmap, g, b))
    n = fmap.numel() / fmap.shape[1]
    mean = fmap.mean((0, 2, 3))
    unbiased = ((fmap - per_channel(mean)) ** 2).sum((0, 2, 3)) / (n - 1)
    torch.testing.assert_close(bn.running_mean, 0.1 * mean)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * unbiased)
    bn.eval()
    expect = (fmap - per_channel(bn.running_mean)) / torch.sqrt(per_channel(bn.running_var) + EPS)
    torch.testing.assert_close(bn(fmap), expect * per_channel(g) + per_channel(b))


def test_cnn_ghost_batch_norm_2d_uses_virtual_batches(fmap):
    _, gbn = _first_norm("ghost")
    assert isinstance(gbn, GhostBatchNorm2d)
    g, b = _affine(gbn)
    # 6 = 4 + 2: two virtual batches, each normalized by its own statistics
    torch.testing.assert_close(gbn(fmap), torch.cat([hand_bn2d(fmap[:4], g, b), hand_bn2d(fmap[4:], g, b)]))


@pytest.mark.parametrize("train", [True, False])
def test_cnn_layer_and_group_norm_by_hand(fmap, train):
    for norm, groups in (("layer", 1), ("group", 2)):
        _, m = _first_norm(norm)
        g, b = _affine(m)
        m.train(train)
        parts = []
        for grp in fmap.chunk(groups, 1):  # per example over the group's channels and every position
            mean = grp.mean((1, 2, 3), keepdim=True)
            var = ((grp - mean) ** 2).mean((1, 2, 3), keepdim=True)
            parts.append((grp - mean) / torch.sqrt(var + EPS))
        torch.testing.assert_close(m(fmap), torch.cat(parts, 1) * per_channel(g) + per_channel(b))


@pytest.mark.parametrize("norm", ["none", "batch", "ghost", "layer", "group"])
def test_cnn_architecture_shapes_and_channels_last_gives_the_same_numbers(norm):
    torch.manual_seed(0)
    net = build_cnn(channels=[8, 16], hidden=[32], norm=norm)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds[0] == "Conv2d" and kinds[-1] == "MaxPool2d" and len(kinds) == (8 if norm != "none" else 6)
    assert net.head[0].in_features == 16 * 7 * 7
    torch.manual_seed(0)
    nhwc = build_cnn(channels=[8, 16], hidden=[32], norm=norm, channels_last=True)
    x = torch.randn(10, 784)
    out = net(x)
    assert out.shape == (10, 10)
    torch.testing.assert_close(nhwc(x), out, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ the LSTM cells by hand
def hand_bn(x, g, b=None):
    mean, var = x.mean(0), x.var(0, unbiased=False)
    out = (x - mean) / torch.sqrt(var + EPS) * g
    return out if b is None else out + b


def hand_ln(x, g, b):
    mean, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * g + b


def hand_lstm(cell, x, norm_x, norm_h, norm_c):
    """The LSTM equations written out (gate order i, f, g, o), one step at a time."""
    b, steps, _ = x.shape
    hid = cell.hidden
    h, c = torch.zeros(b, hid), torch.zeros(b, hid)
    wi, wh, bias = cell.weight_ih.detach(), cell.weight_hh.detach(), cell.bias.detach()
    for t in range(steps):
        z = norm_x(x[:, t] @ wi.T, t) + norm_h(h @ wh.T, t) + bias
        i, f, g, o = z[:, :hid], z[:, hid:2 * hid], z[:, 2 * hid:3 * hid], z[:, 3 * hid:]
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(norm_c(c, t))
    return h


@pytest.fixture
def seq():
    torch.manual_seed(1)
    return torch.randn(7, 3, 5)  # batch 7, 3 time steps, 5 inputs


def test_hand_written_lstm_without_norm_is_nn_lstm(seq):
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 4, batch_first=True)
    cell = NormLSTM(5, 4, "none", steps=3).load_from(lstm)
    same = lambda v, t: v  # noqa: E731
    torch.testing.assert_close(cell(seq), lstm(seq)[1][0][0])
    torch.testing.assert_close(cell(seq), hand_lstm(cell, seq, same, same, same))


def test_bn_lstm_per_step_statistics_by_hand(seq):
    torch.manual_seed(0)
    cell = NormLSTM(5, 4, "batch", steps=3, scale_init=0.1).load_from(nn.LSTM(5, 4, batch_first=True))
    # Cooijmans et al.: the input and recurrent terms' BN scales start at 0.1, without shifts.
    assert torch.all(cell.norm_x.weight == 0.1) and cell.norm_x.bias is None and cell.norm_c.bias is not None
    gx, gh = cell.norm_x.weight.detach(), cell.norm_h.weight.detach()
    gc, bc = _affine(cell.norm_c)
    out = cell(seq)
    torch.testing.assert_close(out, hand_lstm(cell, seq, lambda v, t: hand_bn(v, gx), lambda v, t: hand_bn(v, gh),
                                             lambda v, t: hand_bn(v, gc, bc)))
    # One running estimate per time step: step 0's recurrent term is W_h h_0 = 0.
    assert cell.norm_h.running_mean.shape == (3, 16)
    torch.testing.assert_close(cell.norm_h.running_mean[0], torch.zeros(16))
    torch.testing.assert_close(cell.norm_x.running_mean[1], 0.1 * (seq[:, 1] @ cell.weight_ih.detach().T).mean(0))
    # Evaluation: each step normalized with its own population statistics.
    cell.eval()

    def pop(m, b=None):
        return lambda v, t: ((v - m.running_mean[t]) / torch.sqrt(m.running_var[t] + EPS) * m.weight.detach()
                             + (0 if b is None else b))

    torch.testing.assert_close(cell(seq), hand_lstm(cell, seq, pop(cell.norm_x), pop(cell.norm_h),
                                                    pop(cell.norm_c, bc)))


def test_bn_lstm_with_shared_statistics_trains_alike_and_keeps_one_estimate(seq):
    torch.manual_seed(0)
    per_step = NormLSTM(5, 4, "batch", steps=3).load_from(nn.LSTM(5, 4, batch_first=True))
    shared = NormLSTM(5, 4, "batch_shared", steps=3)
    shared.load_state_dict({k: v for k, v in per_step.state_dict().items() if "running" not in k}, strict=False)
    torch.testing.assert_close(shared(seq), per_step(seq))  # training: each step's batch statistics
    assert shared.norm_x.running_mean.shape == (1, 16)
    # the one estimate took every step's batch mean in turn
    rm = torch.zeros(16)
    for t in range(3):
        rm = 0.9 * rm + 0.1 * (seq[:, t] @ shared.weight_ih.detach().T).mean(0)
    torch.testing.assert_close(shared.norm_x.running_mean[0], rm)


def test_step_batch_norm_updates_only_its_own_step():
    bn = StepBatchNorm(3, steps=4, shared=False, scale_init=1.0, shift=True, eps=EPS, momentum=0.1)
    x = torch.randn(5, 3)
    bn(x, 2)
    assert torch.count_nonzero(bn.running_mean[[0, 1, 3]]) == 0 and torch.count_nonzero(bn.running_mean[2]) == 3


def test_ln_lstm_by_hand(seq):
    torch.manual_seed(0)
    cell = NormLSTM(5, 4, "layer", steps=3).load_from(nn.LSTM(5, 4, batch_first=True))
    (gx, bx), (gh, bh), (gc, bc) = (_affine(m) for m in (cell.norm_x, cell.norm_h, cell.norm_c))
    expect = hand_lstm(cell, seq, lambda v, t: hand_ln(v, gx, bx), lambda v, t: hand_ln(v, gh, bh),
                       lambda v, t: hand_ln(v, gc, bc))
    torch.testing.assert_close(cell(seq), expect)
    cell.eval()
    torch.testing.assert_close(cell(seq), expect)  # statistics per example: no train/eval difference


def test_every_lstm_arm_starts_from_the_same_weights():
    nets = {}
    for norm in ("none", "batch", "batch_shared", "layer"):
        torch.manual_seed(3)
        nets[norm] = build_lstm(hidden=[6], norm=norm)
    w = nets["none"].rnn.lstm
    for norm in ("batch", "batch_shared", "layer"):
        torch.testing.assert_close(nets[norm].rnn.weight_hh, w.weight_hh_l0)
        torch.testing.assert_close(nets[norm].rnn.bias, w.bias_ih_l0 + w.bias_hh_l0)
        torch.testing.assert_close(nets[norm].head.weight, nets["none"].head.weight)
    x = torch.randn(4, 784)
    assert nets["batch"](x).shape == (4, 10)


# ------------------------------------------------------------------ the looped pack
def train_side_by_side(pack, alone, steps, batch=8, dtype=torch.float32):
    """Adam steps of a pack and of its members alone on the same random
    minibatches; per step, the pack's logits and the members' (stacked)."""
    r = len(alone)
    opt_pack = torch.optim.Adam(pack.parameters(), lr=1e-2, foreach=True)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2, foreach=True) for m in alone]
    torch.manual_seed(5)
    out = []
    for _ in range(steps):
        x, y = torch.randn(r, batch, 784, dtype=dtype), torch.randint(0, 10, (r, batch))
        logits = pack(x)
        losses = F.cross_entropy(logits.reshape(r * batch, -1), y.reshape(-1), reduction="none").view(r, batch)
        opt_pack.zero_grad()
        losses.mean(1).sum().backward()
        opt_pack.step()
        each = []
        for k, (m, o) in enumerate(zip(alone, opts)):
            each.append(m(x[k]))  # once: a BN member's forward in training updates its running statistics
            o.zero_grad()
            F.cross_entropy(each[-1], y[k]).backward()
            o.step()
        out.append((logits.detach(), torch.stack(each).detach()))
    return out


@pytest.mark.parametrize("norm", ["none", "batch", "batch_shared", "layer"])
def test_packed_lstm_trains_each_member_as_alone(norm):
    """The lstm pack batches its members' matmuls and keeps each one's own
    statistics: every member's weights, running statistics and outputs (train
    and eval mode) match its network trained alone, to rounding. In float64,
    so that the comparison is tight whatever the thread count (in float32 a
    few Adam steps amplify the reductions' different order to ~1e-3 relative
    on small logits)."""
    def member(seed):
        torch.manual_seed(seed)
        return build_lstm(hidden=[6], norm=norm).double()

    pack = PackedLSTM([member(0), member(1), member(2)])
    alone = [member(0), member(1), member(2)]
    for r, m in enumerate(alone):  # the pack starts from its members' weights
        for k, v in m.state_dict().items():
            assert torch.equal(pack.member_state(r)[k], v), k
    for packed, each in train_side_by_side(pack, alone, steps=4, dtype=torch.float64):
        torch.testing.assert_close(packed, each, rtol=1e-9, atol=1e-10)
    x = torch.randn(3, 5, 784, dtype=torch.float64)
    pack.eval()
    for r, m in enumerate(alone):
        state = m.state_dict()
        assert set(pack.member_state(r)) == set(state)
        for k, v in pack.member_state(r).items():
            torch.testing.assert_close(v, state[k], rtol=1e-9, atol=1e-10, msg=k)
        m.eval()
        torch.testing.assert_close(pack(x)[r], m(x[r]), rtol=1e-9, atol=1e-10)  # population statistics
        unpacked = pack.unpack(r, member(9)).eval()
        torch.testing.assert_close(unpacked(x[r]), pack(x)[r], rtol=1e-9, atol=1e-10)
    with pytest.raises(ValueError, match="one architecture"):
        PackedLSTM([build_lstm(hidden=[6], norm="none"), build_lstm(hidden=[6], norm="layer")])


@pytest.mark.parametrize("family, norm", [("cnn", "batch"), ("cnn", "layer"), ("lstm", "batch")])
def test_looped_pack_trains_each_member_as_alone(family, norm):
    build = build_cnn if family == "cnn" else build_lstm
    kw = {"channels": [4], "hidden": [8]} if family == "cnn" else {"hidden": [6]}

    def member(seed):
        torch.manual_seed(seed)
        return build(norm=norm, **kw)

    pack = LoopedPack([member(0), member(1)])
    alone = [member(0), member(1)]
    for packed, each in train_side_by_side(pack, alone, steps=3):
        assert torch.equal(packed, each)
    for r, m in enumerate(alone):
        for (n, a), b in zip(pack.members[r].state_dict().items(), m.state_dict().values()):
            assert torch.equal(a, b), n  # bit-identical: the pack changes nothing
    with pytest.raises(ValueError, match="one architecture"):
        LoopedPack([build_cnn(channels=[4]), build_cnn(channels=[8])])


# ------------------------------------------------------------------ config checks
@pytest.mark.parametrize("overrides, key", [
    (["model=lstm", "model.norm=ghost"], "model.norm"),
    (["model=mlp", "model.norm=batch_shared"], "model.norm"),
    (["model=lstm", "model.hidden=[10,10]"], "model.hidden"),
    (["model=cnn", "model.channels=[8,8,8,8,8]"], "model.channels"),
    (["model=cnn", "model.norm=group", "model.groups=3"], "model.groups"),
    (["model=cnn", "probes.kinds=[grad_norms]"], "probes.kinds"),
    (["model=mlp", "model.bn_scale_init=0.1"], "model.bn_scale_init"),
    (["model=lstm", "model.norm=batch_shared", "batch_size=1"], "batch_size"),
    (["data.permute=true", "data.permute_seed=-1"], "data.permute_seed"),
])
def test_family_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        validate(compose_config(overrides))
    assert str(e.value).startswith(key) and "\n" not in str(e.value)


def test_family_presets_compose_and_validate():
    for overrides in (["model=cnn"], ["model=lstm"], ["model=lstm", "model.norm=batch_shared",
                                                      "probes.kinds=[modes,val_acc,train_acc]", "data.permute=true"]):
        validate(compose_config(overrides))
    # Every LSTM arm compiles: the trainer packs (PackedLSTM's loop), even the plain arm; nn.LSTM, which
    # Dynamo does not trace, is only the bench's reference loop.
    for norm in ("none", "batch", "layer"):
        validate(compose_config(["model=lstm", f"model.norm={norm}", "compile=true"]))
    cfg = compose_config(["model=lstm"])
    assert cfg.model.bn_scale_init == 0.1 and list(cfg.model.hidden) == [100]


def test_permuted_pixels_are_one_fixed_permutation(tiny_mnist):
    from study.data import load_mnist, pixel_permutation

    plain = load_mnist(tiny_mnist, val_size=200, verify=False)
    perm = load_mnist(tiny_mnist, val_size=200, verify=False, permute_seed=0)
    p = pixel_permutation(0)
    assert sorted(p.tolist()) == list(range(784)) and not torch.equal(p, torch.arange(784))
    assert torch.equal(perm.train_x, plain.train_x[:, p]) and torch.equal(perm.test_x, plain.test_x[:, p])
    assert torch.equal(perm.train_y, plain.train_y) and perm.info["permute_seed"] == 0
    assert torch.equal(pixel_permutation(0), p) and not torch.equal(pixel_permutation(1), p)


@pytest.mark.parametrize("family, norm", [("cnn", "batch"), ("lstm", "batch")])
def test_training_a_family_end_to_end_is_deterministic(tiny_mnist, tmp_path, family, norm):
    """A pack of two trains (via the real config) to the same numbers as each run alone, twice."""
    from study.data import load_mnist
    from study.runner import plain_config
    from study.spec import train_spec
    from study.train import train_runs

    cfg = plain_config(compose_config([*tiny_overrides(tiny_mnist), f"model={family}", f"model.norm={norm}",
                                       "optimizer=adam", "lr=0.01", "batch_size=100", "epochs=1",
                                       "model.hidden=[12]" if family == "lstm" else "model.channels=[4,8]",
                                       "probes.kinds=[modes,train_acc]", "probes.train_subset=100"]))
    validate(cfg)
    data = load_mnist(tiny_mnist, val_size=200, verify=False)
    spec = train_spec(cfg)
    assert not spec.fused_step and not spec.lr_packable
    pack = train_runs(spec, [0, 1], data, torch.device("cpu"))
    alone = train_runs(spec, [1], data, torch.device("cpu"))
    again = train_runs(spec, [1], data, torch.device("cpu"))
    assert [o.status for o in pack] == ["completed", "completed"]
    h = pack[1].history[-1]
    assert math.isfinite(h["train_loss"]) and 0 <= h["train_acc"] <= 1
    if family == "cnn":  # learns the tiny set in an epoch (the BN-LSTM, scales at 0.1, needs more steps)
        assert h["test_acc"] > 0.5
    for k in ("val_acc", "test_acc", "train_acc", "train_eval_loss"):
        assert alone[0].history[-1][k] == again[0].history[-1][k], k  # deterministic
        if k == "train_eval_loss":  # both packs batch their members' matmuls and norms: float tolerance
            assert h[k] == pytest.approx(alone[0].history[-1][k], rel=1e-5), k
        elif family == "lstm":  # the same predictions
            assert alone[0].history[-1][k] == h[k], k
        else:  # after an epoch of Adam, float tolerance may flip a borderline example (1 in 400 seen)
            assert h[k] == pytest.approx(alone[0].history[-1][k], abs=0.006), k
    # the epoch's mean of the step losses is reduced over a (steps, R) tensor: the sum's order may differ
    assert alone[0].history[-1]["train_loss"] == again[0].history[-1]["train_loss"]
    assert h["train_loss"] == pytest.approx(alone[0].history[-1]["train_loss"], rel=1e-6)
    for k, v in alone[0].probes["final"]["modes"].items():
        assert pack[1].probes["final"]["modes"][k] == pytest.approx(v, rel=1e-5), k
    assert pack[0].history[-1]["test_acc"] != h["test_acc"] or pack[0].history[-1]["train_loss"] != h["train_loss"]


@pytest.mark.slow
def test_the_rnn_preset_runs_end_to_end_with_its_claims_in_the_report(tmp_path, tiny_mnist):
    """experiment=quick/rnn through the real CLI on tiny data: every arm at batch 128 as a pack of
    seeds, the records with the final probes and C16b's interleaved cost timing, and a report whose
    Findings carry the C16 rows."""
    import json
    import subprocess
    import sys

    from helpers import REPO

    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(REPO / "study" / "run.py"), "-m", "experiment=quick/rnn",
                           *tiny_overrides(tiny_mnist), "steps=4", "model.hidden=[8]", "seed=0,1",
                           f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    assert {(r["config"]["model"]["norm"], r["config"]["batch_size"]) for r in recs} == {
        (n, 128) for n in ("none", "batch", "layer")}  # batch_shared: on demand only
    assert len(recs) == 6 and all(r["status"] == "completed" and r["experiment"] == "quick/rnn" for r in recs)
    assert all(r["pack"]["size"] == 2 and {"modes", "precise_bn"} <= set(r["probes"]["final"]) for r in recs)
    bn = [r["probes"]["final"]["precise_bn"] for r in recs if r["config"]["model"]["norm"] == "batch"]
    assert all(len(p["step_variances"]["ema"]["norm_x"]["min"]) == 28 for p in bn)
    # C16b: one interleaved measurement of BN-LSTM against the LSTM per pack, in the pack's process
    assert all("error" not in r["cost"] and r["cost"]["repeats"] == 4 and r["cost"]["batch_size"] == 128
               for r in recs)
    assert len({(r["cost"]["process"], r["cost"]["measured_at"]) for r in recs}) == 3
    report = (sweep / "report" / "report.md").read_text()
    for row in ("C16:", "C16b:", "C16d:"):
        assert row in report
    assert "C16c:" not in report  # C16c reads experiment=rnn_small_batch (equal epochs at batch 32 and 128)
