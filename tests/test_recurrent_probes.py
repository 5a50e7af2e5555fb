"""The `precise_bn` probe on the lstm family (C16's mechanism, study/probes.py):
a short BN-LSTM run through the trainer, its recorded numbers checked against
its own network unpacked and measured by hand."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

import study.probes as probes
from helpers import tiny_overrides
from study.config import ConfigError, compose_config, validate
from study.models.lstm import ROWS, PackedLSTM, StepBatchNorm, build_lstm
from study.runner import plain_config
from study.spec import train_spec
from study.train import train_runs

CPU = torch.device("cpu")
HIDDEN = 12
BATCH = 64  # 1,000 training images: 15 chunks of 64 and one of 40

pytestmark = pytest.mark.usefixtures("one_thread")


def spec_for(tiny_mnist, norm, *extra):
    cfg = plain_config(compose_config([*tiny_overrides(tiny_mnist), "model=lstm", f"model.norm={norm}",
                                       f"model.hidden=[{HIDDEN}]", "optimizer=adam", "lr=0.01",
                                       f"batch_size={BATCH}", "steps=30", *extra]))
    validate(cfg)
    return train_spec(cfg)


def trained(tiny_mnist, tiny_data, norm, monkeypatch, *extra):
    """Train a pack of two; return the outcomes and a copy of the model the final probes saw."""
    seen = []
    final = probes.Probes.final

    def keep(self, model):
        seen.append(copy.deepcopy(model))
        return final(self, model)

    monkeypatch.setattr(probes.Probes, "final", keep)
    outcomes = train_runs(spec_for(tiny_mnist, norm, "probes.kinds=[precise_bn]", *extra), [0, 1], tiny_data, CPU)
    return outcomes, seen[0]


def member(pack: PackedLSTM, r: int, norm: str, eps: float = 1e-5):
    return pack.unpack(r, build_lstm(hidden=[HIDDEN], norm=norm, bn_eps=eps))


def summary(var: torch.Tensor, eps: float) -> dict[str, list[float]]:
    """min, median, fraction below eps of running_var (rows, F) per row, by numpy."""
    v = var.double().numpy()
    return {"min": v.min(1).tolist(), "median": np.median(v, axis=1).tolist(), "below_eps": (v < eps).mean(1).tolist()}


def hand_step_statistics(net, x: torch.Tensor, chunk: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each StepBatchNorm's per-row mean and unbiased variance of its inputs, per chunk, averaged over chunks
    (batch_shared: over every step of every chunk): precise BN by hand on one run's network."""
    got: dict[str, dict[int, list[tuple[torch.Tensor, torch.Tensor]]]] = {}
    hooks = []
    for name in probes.STEP_NORMS:
        m = getattr(net.rnn, name)
        got[name] = {}

        def record(mod, args, name=name):
            v, t = args
            row = 0 if mod.shared else t
            got[name].setdefault(row, []).append((v.mean(0), v.var(0, unbiased=True)))
        hooks.append(m.register_forward_pre_hook(record))
    net.train()
    with torch.no_grad():
        for xc in torch.split(x, chunk):
            net(xc)
    for h in hooks:
        h.remove()
    return {name: (torch.stack([torch.stack([a for a, _ in rows[t]]).mean(0) for t in sorted(rows)]),
                   torch.stack([torch.stack([b for _, b in rows[t]]).mean(0) for t in sorted(rows)]))
            for name, rows in got.items()}


@pytest.mark.parametrize("norm", ["batch", "batch_shared"])
def test_recomputed_step_statistics_are_a_direct_re_estimation(tiny_data, norm):
    torch.manual_seed(0)
    pack = PackedLSTM([build_lstm(hidden=[HIDDEN], norm=norm) for _ in range(2)])
    x = tiny_data.train_x[:300]
    params = {k: v.clone() for k, v in pack.named_parameters()}
    assert probes.reestimate_running_stats(pack, x, BATCH)
    assert all(torch.equal(v, params[k]) for k, v in pack.named_parameters())  # frozen weights
    for r in range(2):
        ref = hand_step_statistics(member(pack, r, norm), x, BATCH)
        state = pack.member_state(r)
        for name, (mean, var) in ref.items():
            assert state[f"rnn.{name}.running_mean"].shape[0] == (1 if norm == "batch_shared" else ROWS)
            torch.testing.assert_close(state[f"rnn.{name}.running_mean"], mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(state[f"rnn.{name}.running_var"], var, rtol=1e-5, atol=1e-6)


def test_the_probe_on_a_trained_bn_lstm_matches_its_network_measured_by_hand(tiny_mnist, tiny_data, monkeypatch):
    outcomes, model = trained(tiny_mnist, tiny_data, "batch", monkeypatch)
    n = len(tiny_data.train_x)
    idx = probes.precise_indices(n, max(probes.PRECISE_SAMPLES))
    for r, out in enumerate(outcomes):
        assert out.status == "completed"
        p = out.probes["final"]["precise_bn"]
        json.dumps(p, allow_nan=False)  # strict JSON
        assert p["samples"] == [min(s, n) for s in probes.PRECISE_SAMPLES] and p["batch_size"] == BATCH
        ema_net = member(model, r, "batch").eval()
        # The EMA: the recorded accuracy and per-step summaries are those of the trained network's running_var.
        with torch.no_grad():
            ema_acc = (ema_net(tiny_data.test_x).argmax(1) == tiny_data.test_y).double().mean().item()
        assert p["ema_acc"] == pytest.approx(ema_acc, abs=1.5 / len(tiny_data.test_x))
        sv, zr = p["step_variances"], p["step_z_rms"]
        assert sv["ema"]["eps"] == 1e-5
        for name in probes.STEP_NORMS:
            var = getattr(ema_net.rnn, name).running_var
            for key, values in summary(var, 1e-5).items():
                np.testing.assert_allclose(sv["ema"][name][key], values, rtol=1e-6, atol=1e-12, err_msg=name)
            assert len(zr["ema"][name]) == ROWS
        np.testing.assert_allclose(
            [zr["ema"][k] for k in probes.STEP_NORMS], [hand_z_rms(ema_net, tiny_data.test_x)[k] for k in
                                                        probes.STEP_NORMS], rtol=1e-4)
        # Precise: the trained weights, statistics re-estimated by hand on the largest sample.
        precise_net = member(model, r, "batch")
        ref = hand_step_statistics(copy.deepcopy(precise_net), tiny_data.train_x.index_select(0, idx), BATCH)
        with torch.no_grad():
            for name, (mean, var) in ref.items():
                getattr(precise_net.rnn, name).running_mean.copy_(mean)
                getattr(precise_net.rnn, name).running_var.copy_(var)
                for key, values in summary(var, 1e-5).items():
                    np.testing.assert_allclose(sv["precise"][name][key], values, rtol=1e-4, atol=1e-9,
                                               err_msg=f"{name} {key}")
            precise_net.eval()
            acc = (precise_net(tiny_data.test_x).argmax(1) == tiny_data.test_y).double().mean().item()
        assert p["precise_acc"][-1] == pytest.approx(acc, abs=1.5 / len(tiny_data.test_x))
        np.testing.assert_allclose([zr["precise"][k] for k in probes.STEP_NORMS],
                                   [hand_z_rms(precise_net, tiny_data.test_x)[k] for k in probes.STEP_NORMS],
                                   rtol=1e-3)


def hand_z_rms(net, x: torch.Tensor) -> dict[str, list[float]]:
    """RMS over images and features of each norm's input normalized with its running row, per step (eval mode)."""
    sq: dict[str, list[float]] = {name: [0.0] * ROWS for name in probes.STEP_NORMS}
    hooks = []
    for name in probes.STEP_NORMS:
        def record(mod: StepBatchNorm, args, name=name):
            v, t = args
            row = 0 if mod.shared else t
            z = (v - mod.running_mean[row]) / torch.sqrt(mod.running_var[row] + mod.eps)
            sq[name][t] = z.double().pow(2).mean().item()
        hooks.append(getattr(net.rnn, name).register_forward_pre_hook(record))
    net.eval()
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return {name: [v ** 0.5 for v in values] for name, values in sq.items()}


def test_the_probe_leaves_the_lstm_run_unchanged_and_records_eps(tiny_mnist, tiny_data, monkeypatch):
    plain = train_runs(spec_for(tiny_mnist, "batch", "model.bn_eps=0.001"), [0, 1], tiny_data, CPU)
    probed, _ = trained(tiny_mnist, tiny_data, "batch", monkeypatch, "model.bn_eps=0.001")
    for a, b in zip(plain, probed, strict=True):
        assert a.history == [{**h, **{k: a.history[i][k] for k in ("epoch_seconds", "samples_per_second",
                                                                      "eval_seconds")}}
                             for i, h in enumerate(b.history)]  # every metric bit for bit; timings apart
        v = b.probes["final"]["precise_bn"]["step_variances"]
        assert v["ema"]["eps"] == v["precise"]["eps"] == 0.001


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_without_batch_statistics_the_lstm_probe_recomputes_nothing(tiny_mnist, tiny_data, monkeypatch, norm):
    outcomes, _ = trained(tiny_mnist, tiny_data, norm, monkeypatch)
    for out in outcomes:
        p = out.probes["final"]["precise_bn"]
        assert p["precise_acc"] is None and "step_variances" not in p
        assert p["ema_acc"] == pytest.approx(p["train_mode_acc"], abs=1e-12)  # no batch statistics: one network


def test_precise_bn_is_a_probe_of_the_lstm_not_of_the_conv_net():
    validate(compose_config(["model=lstm", "model.norm=batch", "probes.kinds=[modes,precise_bn]"]))
    with pytest.raises(ConfigError) as e:
        validate(compose_config(["model=cnn", "probes.kinds=[precise_bn]"]))
    assert str(e.value).startswith("probes.kinds")
