"""Probes (study/probes.py): they never change a run, a run's values do not
depend on its pack, and each kind matches a hand computation."""

import copy
import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import study.probes as probes
from helpers import tiny_overrides
from study.config import compose_config
from study.data import load_mnist
from study.models.mlp import PackedMLP, build_mlp
from study.models.pack import evaluate
from study.records import RESULT_FILE
from study.runner import plain_config, run_job
from study.spec import train_spec
from study.train import train_runs

ALL = "probes.kinds=[activations,grad_norms,ics,landscape,val_acc,train_acc,modes,shift]"
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def spec_for(tiny_mnist, *overrides):
    return train_spec(plain_config(compose_config(tiny_overrides(tiny_mnist) + list(overrides))))


def metrics(outcome):
    return [(h["step"], h["train_loss"], h["val_acc"], h["test_acc"], h["val_loss"]) for h in outcome.history]


# ------------------------------------------------------- runs are unchanged


@pytest.mark.parametrize("fused", ["true", "false"])
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_probes_leave_the_run_bit_identical(tiny_mnist, tiny_data, norm, fused):
    common = ["steps=40", "batch_size=32", f"model.norm={norm}", f"fused={fused}", "probes.every=10"]
    off = train_runs(spec_for(tiny_mnist, *common), [0, 1], tiny_data, CPU)
    on = train_runs(spec_for(tiny_mnist, *common, ALL), [0, 1], tiny_data, CPU)
    for a, b in zip(off, on, strict=True):
        assert a.probes is None and b.probes is not None
        assert len(a.history) == 2  # 32 steps per epoch: an epoch probe mid-run, too
        assert metrics(a) == metrics(b)  # exact, not approximate
        assert [e["step"] for e in b.probes["series"]] == [0, 10, 20, 30]
        assert set(b.probes["final"]) == {"modes", "shift"}
        assert all("train_acc" in h and "train_eval_loss" in h for h in b.history)
        assert all("train_acc" not in h for h in a.history)


def test_probes_draw_no_random_numbers(tiny_mnist, tiny_data):
    spec = spec_for(tiny_mnist, "steps=5", "batch_size=16", "model.norm=batch", ALL)
    members = [build_mlp(hidden=[128, 64], norm="batch") for _ in range(2)]
    model = PackedMLP(members)
    p = probes.Probes(spec, tiny_data, 2, CPU)
    xb, yb = tiny_data.train_x[:32].view(2, 16, -1), tiny_data.train_y[:32]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    p.on_step(model, xb, yb, 0)
    p.on_epoch(model)
    p.final(model)
    assert torch.equal(state, torch.get_rng_state())


def test_probe_time_is_kept_out_of_epoch_seconds(tiny_mnist, tiny_data, monkeypatch):
    real = probes.grad_norms

    def slow(*a, **k):
        time.sleep(0.25)
        return real(*a, **k)

    monkeypatch.setattr(probes, "grad_norms", slow)
    spec = spec_for(tiny_mnist, "steps=40", "batch_size=32", "probes.kinds=[grad_norms]", "probes.every=20")
    t0 = time.perf_counter()
    (out,) = train_runs(spec, [0], tiny_data, CPU)
    wall = time.perf_counter() - t0
    assert [e["step"] for e in out.probes["series"]] == [0, 20]
    assert out.probes["seconds"] >= 0.5
    # Without the subtraction the two sleeps would count twice here.
    assert sum(h["epoch_seconds"] for h in out.history) + out.probes["seconds"] <= wall


# ------------------------------------------------------------ pack vs solo


def _close(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=2e-3, abs=2e-4), path
    else:
        assert a == b, path


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_probe_values_do_not_depend_on_the_pack(tiny_mnist, tiny_data, norm):
    spec = spec_for(tiny_mnist, "steps=30", "batch_size=16", f"model.norm={norm}", ALL, "probes.every=10")
    seeds = [0, 1, 2] if norm == "batch" else [3, 4]
    packed = train_runs(spec, seeds, tiny_data, CPU)
    for p in packed:
        (alone,) = train_runs(spec, [p.seed], tiny_data, CPU)
        _close(alone.probes["series"], p.probes["series"], f"seed {p.seed} series")
        _close(alone.probes["final"], p.probes["final"], f"seed {p.seed} final")
        assert [h["train_acc"] for h in p.history] == pytest.approx([h["train_acc"] for h in alone.history],
                                                                     abs=1 / 1000 + 1e-9)


# ------------------------------------------------- each kind by hand


def small_pack(norm, seeds=(0, 1), hidden=(16, 8), activation="relu"):
    members = []
    for s in seeds:
        torch.manual_seed(s)
        members.append(build_mlp(hidden=list(hidden), norm=norm, activation=activation))
    return members, PackedMLP(members)  # the pack copies the members' tensors


def batch(data, r, b=12):
    return data.train_x[:r * b].view(r, b, -1), data.train_y[:r * b]


def ref_grads(net, x, y):
    net = copy.deepcopy(net).train()
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    return net


def linear_positions(net):
    return [j for j, m in enumerate(net) if isinstance(m, nn.Linear)]


def packed_grads(model, xb, yb):
    net = copy.deepcopy(model).train()
    params = {n: p.detach() for n, p in net.named_parameters()}
    _, grads = probes.losses_and_grads(net, params, xb, yb, list(params))
    return net, params, grads


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_grad_norms_and_ics_by_hand(tiny_data, norm):
    lr = 0.1
    members, model = small_pack(norm)
    xb, yb = batch(tiny_data, 2)
    net, params, grads = packed_grads(model, xb, yb)
    norms = probes.grad_norms(net, grads)  # (L, R)
    dist, cos = probes.internal_covariate_shift(net, params, grads, xb, yb, lr)
    assert dist[0] is None and cos[0] is None and len(dist) == 3
    for k, member in enumerate(members):
        x, y = xb[k], yb.view(2, -1)[k]
        ref = ref_grads(member, x, y)
        lin = linear_positions(ref)
        want = [float(ref[j].weight.grad.norm()) for j in lin]
        assert norms[:, k].tolist() == pytest.approx(want, rel=1e-5)
        for i, j in enumerate(lin[1:], start=1):
            # Definition 2.1: plain SGD on every parameter before layer i, then its gradient again.
            moved = copy.deepcopy(ref)
            with torch.no_grad():
                for idx in range(j):
                    for p_moved, p_ref in zip(moved[idx].parameters(), ref[idx].parameters()):
                        p_moved -= lr * p_ref.grad
            moved.zero_grad()
            F.cross_entropy(moved(x), y).backward()
            g, g2 = ref[j].weight.grad, moved[j].weight.grad
            assert float(dist[i][k]) == pytest.approx(float((g - g2).norm()), rel=1e-4)
            assert float(cos[i][k]) == pytest.approx(float(F.cosine_similarity(g.flatten(), g2.flatten(), 0)),
                                                     rel=1e-5)
            assert float(dist[i][k]) > 0


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_landscape_by_hand(tiny_data, norm):
    lr, scales = 0.05, [0.5, 2.0]
    members, model = small_pack(norm)
    xb, yb = batch(tiny_data, 2)
    net, params, grads = packed_grads(model, xb, yb)
    got = probes.landscape(net, params, grads, xb, yb, lr, scales)
    for k, member in enumerate(members):
        x, y = xb[k], yb.view(2, -1)[k]
        ref = copy.deepcopy(member).train()
        w = dict(ref.named_parameters())
        g = dict(zip(w, torch.autograd.grad(F.cross_entropy(ref(x), y), list(w.values()))))
        g_norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
        losses, changes, betas = [], [], []
        for s in scales:
            eta = s * lr
            moved = {n: (w[n] - eta * g[n]).detach().requires_grad_(True) for n in w}
            loss = F.cross_entropy(functional_call(ref, moved, (x,)), y)
            g2 = torch.autograd.grad(loss, list(moved.values()))
            change = float(torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g.values(), g2))))
            losses.append(float(loss.detach()))
            changes.append(change)
            betas.append(change / float(eta * g_norm))
        assert got["losses"][:, k].tolist() == pytest.approx(losses, rel=1e-5)
        assert float(got["loss_range"][k]) == pytest.approx(max(losses) - min(losses), rel=1e-3, abs=1e-6)
        assert float(got["grad_change"][k]) == pytest.approx(max(changes), rel=1e-4)
        assert float(got["beta_smoothness"][k]) == pytest.approx(max(betas), rel=1e-4)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_activation_percentiles_by_hand(tiny_data, norm):
    members, model = small_pack(norm, hidden=(16, 8, 8), activation="sigmoid")
    x = tiny_data.val_x[:50]
    for layer, unit in [(0, 3), (2, 5)]:
        q = probes.activation_percentiles(copy.deepcopy(model), x, layer, unit)
        for k, member in enumerate(members):
            ref = copy.deepcopy(member).train()
            acts = [j for j, m in enumerate(ref) if isinstance(m, nn.Sigmoid)]
            with torch.no_grad():
                pre = ref[:acts[layer]](x)[:, unit].numpy()  # the sigmoid's input: after the norm
            assert q[:, k].tolist() == pytest.approx(np.percentile(pre, [15, 50, 85]).tolist(), rel=1e-4, abs=1e-5)


def test_train_mode_accuracy_by_hand(tiny_data):
    members, model = small_pack("batch")
    x, y = tiny_data.test_x[:101], tiny_data.test_y[:101]  # chunks of 10: the last one (1 image) joins the one before
    got = probes.train_mode_accuracy(copy.deepcopy(model), x, y, 10)
    for k, member in enumerate(members):
        ref = copy.deepcopy(member).train()
        with torch.no_grad():
            preds = [ref(x[s:e]).argmax(1) for s, e in [(i, i + 10) for i in range(0, 90, 10)] + [(90, 101)]]
        assert float(got[k]) == pytest.approx(float((torch.cat(preds) == y).double().mean()))


def test_shifted_pixels_and_recomputed_statistics_by_hand(tiny_data):
    # The data's own scaling (the default, the notebook's) un-normalizes and re-normalizes.
    mean, std = tiny_data.info["normalization"]
    x, y = tiny_data.test_x, tiny_data.test_y
    shifted = probes.shift_pixels(x, 0.3, 0.5, mean, std)
    raw, raw_shifted = x * std + mean, shifted * std + mean
    assert torch.allclose(raw_shifted, 0.5 * raw + 0.3, atol=1e-5)
    assert float(raw_shifted.min()) >= 0.3 - 1e-5 and float(raw_shifted.max()) <= 0.8 + 1e-5

    members, model = small_pack("batch")
    net = copy.deepcopy(model)
    running_before = net.layers[1].running_mean.clone()
    assert probes.reestimate_running_stats(net, shifted, 150)  # chunks 150, 150, 100
    acc, _ = evaluate(net, shifted, y, 1000)
    for k, member in enumerate(members):
        ref = copy.deepcopy(member)
        torch.optim.swa_utils.update_bn(list(torch.split(shifted, 150)), ref)  # momentum=None, reset first
        model_k = PackedMLP([ref])
        for name in ("running_mean", "running_var"):
            got = getattr(net.layers[1], name)[k * 16:(k + 1) * 16]
            assert torch.allclose(got, getattr(ref[1], name), rtol=1e-4, atol=1e-5)
        ref_acc, _ = evaluate(model_k, shifted, y, 1000)
        assert float(acc[k]) == pytest.approx(float(ref_acc[0]))
    assert not torch.allclose(net.layers[1].running_mean, running_before)
    assert not probes.reestimate_running_stats(copy.deepcopy(small_pack("none")[1]), shifted, 150)


@pytest.mark.parametrize("normalize", ["notebook", "standard", "none"])
def test_a_shift_moves_the_same_pixels_whatever_the_scaling(tiny_mnist, normalize):
    """The shift is in pixel space: under every data.normalize, the shifted
    images are the shifted pixels scaled as that run's inputs are."""
    data = load_mnist(tiny_mnist, val_size=200, verify=False, normalize=normalize)
    mean, std = data.info["normalization"]
    pixels = load_mnist(tiny_mnist, val_size=200, verify=False, normalize="none").test_x  # p in [0, 1]
    shifted = probes.shift_pixels(data.test_x, 0.3, 0.5, mean, std)
    assert torch.allclose(shifted, ((0.5 * pixels + 0.3) - mean) / std, atol=1e-5)


def test_step_val_acc_is_the_evaluation_of_the_current_weights(tiny_mnist, tiny_data):
    spec = spec_for(tiny_mnist, "steps=32", "batch_size=32", "model.norm=batch", "probes.kinds=[val_acc]",
                  "probes.every=16")
    (out,) = train_runs(spec, [7], tiny_data, CPU)
    assert [e["step"] for e in out.probes["series"]] == [0, 16]
    assert set(out.probes["series"][0]) == {"step", "val_acc"}
    from study.train import build_member

    untrained = PackedMLP([build_member(spec.model, 7)])
    want, _ = evaluate(untrained, tiny_data.val_x, tiny_data.val_y, 10000)
    assert out.probes["series"][0]["val_acc"] == float(want[0])
    assert out.probes["final"] == {}


def test_a_pack_stops_at_the_first_probe_where_every_run_reached_stop_at(tiny_mnist, tiny_data):
    common = ["steps=96", "batch_size=32", "model.norm=batch", "probes.kinds=[val_acc]", "probes.every=8",
              "lr=0.05"]
    full = train_runs(spec_for(tiny_mnist, *common), [0, 1], tiny_data, CPU)
    series = [[e["val_acc"] for e in out.probes["series"]] for out in full]
    steps = [e["step"] for e in full[0].probes["series"]]
    # A target both runs reach mid-run, first at different probes: the pack waits for the later one.
    target = min(max(s[: len(s) // 2]) for s in series)
    first = [next(i for i, v in enumerate(s) if v >= target) for s in series]
    stop = steps[max(first)]
    assert 0 < stop < 96
    stopped = train_runs(spec_for(tiny_mnist, *common, f"probes.stop_at={target}"), [0, 1], tiny_data, CPU)
    for a, b in zip(full, stopped, strict=True):
        assert b.probes["stop_at"] == target and b.probes["stopped_at_step"] == stop
        assert b.probes["series"] == a.probes["series"][: max(first) + 1]  # the same run, cut at the stop
        assert b.history[-1]["step"] == stop and b.final["step"] == stop
        assert b.final["val_acc"] == b.probes["series"][-1]["val_acc"]  # evaluated at the stop's weights
        assert [h for h in b.history[:-1]] == [h for h in a.history if h["step"] < stop][: len(b.history) - 1]
    assert full[0].probes["stopped_at_step"] is None and full[0].final["step"] == 96
    # A target one run never reaches: the pack trains to its budget, as without stop_at.
    slow = ["lr=0.0001", f"probes.stop_at={target}"]
    never = train_runs(spec_for(tiny_mnist, *common, *slow), [0, 1], tiny_data, CPU)
    assert max(e["val_acc"] for e in never[0].probes["series"]) < target
    assert [o.probes["stopped_at_step"] for o in never] == [None, None] and never[0].final["step"] == 96
    plain = train_runs(spec_for(tiny_mnist, *common, "lr=0.0001"), [0, 1], tiny_data, CPU)
    assert [metrics(o) for o in never] == [metrics(o) for o in plain]


# ------------------------------------------------------------------ records


def test_record_carries_the_probes_as_strict_json(tiny_mnist, tmp_path):
    over = tiny_overrides(tiny_mnist) + ["steps=20", "batch_size=64", "model.norm=batch", ALL, "probes.every=7",
                                         "probes.train_subset=300", "probes.sample=64",
                                         "probes.shift_brightness=0.8", "probes.shift_contrast=0.1"]
    rec = run_job(compose_config(over), tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / RESULT_FILE).read_text(), parse_constant=pytest.fail)
    assert on_disk == rec
    pr = rec["probes"]
    assert set(pr) == {"kinds", "every", "stop_at", "stopped_at_step", "seconds", "series", "final"}
    assert pr["stop_at"] is None and pr["stopped_at_step"] is None
    assert pr["kinds"] == ["activations", "grad_norms", "ics", "landscape", "val_acc", "train_acc", "modes", "shift"]
    assert pr["every"] == 7 and pr["seconds"] > 0
    assert [e["step"] for e in pr["series"]] == [0, 7, 14]
    e = pr["series"][1]
    assert set(e) == {"step", "activations", "grad_norms", "ics", "landscape", "val_acc"}
    assert set(e["activations"]) == {"layer", "unit", "p15", "p50", "p85"}
    assert e["activations"]["layer"] == 1 and e["activations"]["unit"] == 0  # layer=-1 resolved
    assert e["activations"]["p15"] <= e["activations"]["p50"] <= e["activations"]["p85"]
    assert len(e["grad_norms"]) == 3 and all(v > 0 for v in e["grad_norms"])
    assert e["ics"]["distance"][0] is None and e["ics"]["cosine"][0] is None
    assert all(v is not None for v in e["ics"]["distance"][1:] + e["ics"]["cosine"][1:])
    assert set(e["landscape"]) == {"scales", "losses", "loss_range", "grad_change", "beta_smoothness"}
    assert e["landscape"]["scales"] == [0.5, 1.0, 2.0, 4.0] and len(e["landscape"]["losses"]) == 4
    assert all(set(h) >= {"train_acc", "train_eval_loss"} for h in rec["history"])
    modes, shift = pr["final"]["modes"], pr["final"]["shift"]
    assert set(modes) == {"eval_mode_acc", "train_mode_acc", "batch_size"} and modes["batch_size"] == 64
    assert modes["eval_mode_acc"] == rec["final"]["test_acc"]
    assert set(shift) == {"brightness", "contrast", "clean_acc", "running_acc", "recomputed_acc"}
    assert shift["clean_acc"] == rec["final"]["test_acc"]
    # A strong shift: BN's training statistics no longer fit; re-estimating them on the shifted set helps.
    assert shift["recomputed_acc"] != shift["running_acc"]
    assert shift["recomputed_acc"] > shift["running_acc"]


def test_without_batch_statistics_modes_agree_and_nothing_is_recomputed(tiny_mnist, tiny_data):
    spec = spec_for(tiny_mnist, "steps=20", "batch_size=16", "model.norm=none", "probes.kinds=[modes,shift]")
    (out,) = train_runs(spec, [0], tiny_data, CPU)
    assert out.probes["series"] == []
    modes, shift = out.probes["final"]["modes"], out.probes["final"]["shift"]
    assert modes["train_mode_acc"] == modes["eval_mode_acc"] == out.history[-1]["test_acc"]
    assert shift["recomputed_acc"] is None and shift["running_acc"] is not None


def test_no_probes_is_null_in_the_record(tiny_mnist, tmp_path):
    rec = run_job(compose_config(tiny_overrides(tiny_mnist) + ["steps=5"]), tmp_path / "run")
    assert "probes" in rec and rec["probes"] is None


def test_a_diverged_run_keeps_its_series_up_to_divergence(tiny_mnist, tmp_path):
    over = tiny_overrides(tiny_mnist) + ["epochs=2", "batch_size=50", "lr=1e6", ALL, "probes.every=1"]
    rec = run_job(compose_config(over), tmp_path / "run")
    json.loads((tmp_path / "run" / RESULT_FILE).read_text(), parse_constant=pytest.fail)
    assert rec["status"] == "diverged"
    d = rec["diverged_at_step"]
    steps = [e["step"] for e in rec["probes"]["series"]]
    assert steps == list(range(d)) and rec["probes"]["final"] == {}
