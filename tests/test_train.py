"""The trainer on tiny MNIST-format data: records, determinism, divergence."""

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import needs_cxx, tiny_overrides
from study.config import compose_config
from study.data import load_mnist
from study.errors import UserError
from study.records import RESULT_FILE, objective
from study.runner import Member, claim_dir, plain_config, run_job, run_pack
from study.spec import batches_per_epoch, train_spec
from study.train import train_runs

RECORD_KEYS = {"schema_version", "status", "seed", "config", "overrides", "started_at", "finished_at",
               "wall_seconds", "diverged_at_step", "final", "history", "data", "env", "error"}
HISTORY_KEYS = {"epoch", "step", "train_loss", "val_acc", "test_acc", "val_loss", "epoch_seconds",
                "samples_per_second", "eval_seconds", "pack_size"}
ENV_KEYS = {"torch", "device", "threads", "git_commit", "hostname", "python", "numpy"}


def cfg_for(tiny_mnist, *overrides):
    return compose_config(tiny_overrides(tiny_mnist) + list(overrides))


def spec_for(tiny_mnist, *overrides):
    return train_spec(plain_config(cfg_for(tiny_mnist, *overrides)))


def without_timings(history):
    return [{k: v for k, v in h.items() if "second" not in k} for h in history]


def python_ok(code):
    """Run `code` in a fresh interpreter (a clean sys.modules); it prints ok."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_record_schema_and_numbers(tiny_mnist, tmp_path):
    cfg = cfg_for(tiny_mnist, "epochs=2", "batch_size=32", "model.norm=batch", "seed=3")
    rec = run_job(cfg, tmp_path / "run", overrides=["batch_size=32"])
    on_disk = json.loads((tmp_path / "run" / RESULT_FILE).read_text())
    assert on_disk == rec
    assert RECORD_KEYS <= set(rec)
    assert rec["status"] == "completed" and rec["seed"] == 3 and rec["error"] is None
    assert rec["config"]["model"]["norm"] == "batch" and rec["config"]["batch_size"] == 32
    assert len(rec["history"]) == 2
    for h in rec["history"]:
        assert HISTORY_KEYS <= set(h)
        assert 0 <= h["val_acc"] <= 1 and 0 <= h["test_acc"] <= 1
        assert h["samples_per_second"] > 0 and h["epoch_seconds"] > 0
    n_train = rec["data"]["n_train"]
    assert n_train == 1000 and rec["data"]["verified"] is False
    assert [h["step"] for h in rec["history"]] == [32, 64]  # ceil(1000 / 32) = 32 per epoch
    assert rec["final"]["val_acc"] == rec["history"][-1]["val_acc"]
    assert rec["final"]["test_acc"] == rec["history"][-1]["test_acc"]
    assert ENV_KEYS <= set(rec["env"]) and rec["env"]["device"] == "cpu"
    assert rec["env"]["threads"] == 1  # as configured by tiny_overrides
    # The prototypes in the tiny data are learnable: well above chance.
    assert rec["final"]["val_acc"] > 0.5
    assert objective(rec, "val_acc") == rec["final"]["val_acc"]


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_mnist, tiny_data):
    spec = spec_for(tiny_mnist, "epochs=1", "batch_size=16", "model.norm=batch")
    a = train_runs(spec, [5], tiny_data, torch.device("cpu"))[0].history
    b = train_runs(spec, [5], tiny_data, torch.device("cpu"))[0].history
    c = train_runs(spec, [6], tiny_data, torch.device("cpu"))[0].history
    assert without_timings(a) == without_timings(b)
    assert a[0]["train_loss"] != c[0]["train_loss"]


def test_divergence_is_recorded_not_raised(tiny_mnist, tmp_path):
    cfg = cfg_for(tiny_mnist, "epochs=2", "batch_size=50", "lr=1e6")
    rec = run_job(cfg, tmp_path / "run")
    assert rec["status"] == "diverged"
    assert isinstance(rec["diverged_at_step"], int) and 1 <= rec["diverged_at_step"] <= 40
    assert rec["final"]["val_acc"] is None and rec["history"] == []
    assert math.isnan(objective(rec, "val_acc"))
    # strict JSON on disk (no NaN tokens)
    json.loads((tmp_path / "run" / RESULT_FILE).read_text(), parse_constant=pytest.fail)


def test_crash_during_training_is_recorded_as_failed(tiny_mnist, tmp_path, monkeypatch):
    import study.runner

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(study.runner, "train_runs", boom)
    rec = run_job(cfg_for(tiny_mnist, "epochs=1"), tmp_path / "run")
    assert rec["status"] == "failed" and rec["error"]["message"] == "simulated crash"
    assert math.isnan(objective(rec, "val_acc"))
    assert json.loads((tmp_path / "run" / RESULT_FILE).read_text())["status"] == "failed"


def test_trailing_batch_of_one_is_dropped_and_bn_does_not_crash(tiny_mnist, tiny_data):
    assert batches_per_epoch(1000, 999) == 1  # 1000 = 999 + 1: the lone example is dropped
    assert batches_per_epoch(1000, 998) == 2  # a trailing pair is kept
    assert batches_per_epoch(1000, 8) == 125
    spec = spec_for(tiny_mnist, "epochs=1", "batch_size=999", "model.norm=batch")
    (out,) = train_runs(spec, [0], tiny_data, torch.device("cpu"))
    assert out.status == "completed" and out.history[-1]["step"] == 1


def test_step_budget_replaces_epochs(tiny_mnist, tiny_data):
    spec = spec_for(tiny_mnist, "epochs=50", "steps=45", "batch_size=32")
    (out,) = train_runs(spec, [0], tiny_data, torch.device("cpu"))
    # 32 steps per epoch: one full epoch, then a partial one ending at step 45.
    assert [h["step"] for h in out.history] == [32, 45]
    assert out.final["step"] == 45


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_packed_runs_equal_runs_trained_one_by_one(tiny_mnist, tiny_data, norm):
    spec = spec_for(tiny_mnist, "epochs=2", "batch_size=8", f"model.norm={norm}")
    seeds = [0, 1, 2]
    packed = train_runs(spec, seeds, tiny_data, torch.device("cpu"))
    for s, p in zip(seeds, packed):
        (alone,) = train_runs(spec, [s], tiny_data, torch.device("cpu"))
        assert p.seed == s
        for hp, ha in zip(p.history, alone.history, strict=True):
            assert hp["step"] == ha["step"]
            assert hp["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4, abs=1e-5)
            assert hp["val_acc"] == pytest.approx(ha["val_acc"], abs=1 / 200 + 1e-9)
            assert hp["test_acc"] == pytest.approx(ha["test_acc"], abs=1 / 400 + 1e-9)
            assert hp["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_runs_with_their_own_learning_rates_pack_like_runs_trained_alone(tiny_mnist, tiny_data, norm):
    """Seeds and learning rates in one pack: each run matches the run of its
    own (seed, lr) trained alone, and records its lr."""
    spec = spec_for(tiny_mnist, "epochs=2", "batch_size=8", f"model.norm={norm}")
    members = [(0, 0.01), (0, 0.2), (1, 0.05), (2, 0.01)]
    packed = train_runs(spec, [s for s, _ in members], tiny_data, torch.device("cpu"),
                        lrs=[lr for _, lr in members])
    assert [(o.seed, o.lr) for o in packed] == members
    # The learning rate matters (else this test could not fail): seed 0 at 0.01 vs 0.2.
    assert packed[0].history[-1]["train_loss"] != pytest.approx(packed[1].history[-1]["train_loss"], rel=1e-2)
    for (s, lr), p in zip(members, packed):
        (alone,) = train_runs(spec_for(tiny_mnist, "epochs=2", "batch_size=8",
                                                   f"model.norm={norm}", f"lr={lr}"),
                              [s], tiny_data, torch.device("cpu"))
        assert alone.lr == lr
        for hp, ha in zip(p.history, alone.history, strict=True):
            assert hp["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4, abs=1e-5)
            assert hp["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-3, abs=1e-4)
            assert hp["val_acc"] == pytest.approx(ha["val_acc"], abs=1 / 200 + 1e-9)


@pytest.mark.parametrize("override", ["fused=false", "optimizer.momentum=0.9", "model.norm=layer",
                                      "optimizer=adam", "probes.kinds=[ics]"])
def test_learning_rates_pack_only_where_the_fused_step_trains(tiny_mnist, tiny_data, override):
    from hydra_plugins.bn_study_launcher.packs import pack_key
    from study.spec import lr_packable

    plain = cfg_for(tiny_mnist, "batch_size=8")
    assert lr_packable(plain) and lr_packable(plain_config(plain))
    assert pack_key(plain) == pack_key(cfg_for(tiny_mnist, "batch_size=8", "lr=0.5"))
    assert pack_key(plain) != pack_key(cfg_for(tiny_mnist, "batch_size=16"))
    other = cfg_for(tiny_mnist, "batch_size=8", override)
    assert not lr_packable(other) and not lr_packable(plain_config(other))
    assert pack_key(other) != pack_key(cfg_for(tiny_mnist, "batch_size=8", "lr=0.5", override))
    assert pack_key(other) == pack_key(cfg_for(tiny_mnist, "batch_size=8", "seed=3", override))
    with pytest.raises(ValueError, match="different learning rates"):
        train_runs(train_spec(other), [0, 1], tiny_data, torch.device("cpu"), lrs=[0.01, 0.02])


def test_a_diverging_run_does_not_disturb_its_pack(tiny_mnist, tiny_data, monkeypatch):
    """One run blows up (its weights are scaled to overflow); the others match solo runs."""
    spec = spec_for(tiny_mnist, "epochs=1", "batch_size=50", "model.norm=none")
    import study.train as tr

    real = tr.build_member

    def build(model, seed):
        net = real(model, seed)
        if seed == 1:
            with torch.no_grad():
                net[-1].weight.mul_(1e38)
        return net

    monkeypatch.setattr(tr, "build_member", build)
    packed = train_runs(spec, [0, 1, 2], tiny_data, torch.device("cpu"))
    assert [p.status for p in packed] == ["completed", "diverged", "completed"]
    assert packed[1].diverged_at_step == 1
    for k in (0, 2):
        (alone,) = train_runs(spec, [packed[k].seed], tiny_data, torch.device("cpu"))
        assert packed[k].history[-1]["train_loss"] == pytest.approx(alone.history[-1]["train_loss"], rel=1e-4)


def test_an_output_dir_is_never_written_by_two_live_processes(tmp_path):
    # This process holds its claim (a rerun in it may write again); a live other process's claim is
    # refused in one line; a dead one's is taken over (tests/test_reruns.py).
    claim_dir(tmp_path / "run")
    claim_dir(tmp_path / "run")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "run" / ".claimed").write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid,
                                                               "start": None}))
        with pytest.raises(UserError, match=f"is being written by pid {other.pid} on "):
            claim_dir(tmp_path / "run")
    finally:
        other.kill()
        other.wait()


def test_identical_rerun_reuses_the_finished_record_and_force_retrains(tiny_mnist, tmp_path):
    common = ["epochs=1", "batch_size=64", "seed=4", "force=false", f"run_index={tmp_path}/index"]
    first = run_job(cfg_for(tiny_mnist, *common), tmp_path / "a")
    assert "reused_from" not in first and first["run_hash"]
    again = run_job(cfg_for(tiny_mnist, *common), tmp_path / "b")
    assert again["reused_from"] == str((tmp_path / "a" / RESULT_FILE).resolve())
    assert again["history"] == first["history"] and again["run_hash"] == first["run_hash"]
    assert json.loads((tmp_path / "b" / RESULT_FILE).read_text())["reused_from"]
    # another seed, or force=true, trains
    other = run_job(cfg_for(tiny_mnist, *common[:2], "seed=5", *common[3:]), tmp_path / "c")
    assert "reused_from" not in other
    forced = run_job(cfg_for(tiny_mnist, *common[:3], "force=true", common[4]), tmp_path / "d")
    assert "reused_from" not in forced
    assert forced["final"]["train_loss"] == first["final"]["train_loss"]  # deterministic


def test_failed_runs_are_not_reused(tiny_mnist, tmp_path, monkeypatch):
    import study.runner

    common = ["epochs=1", "force=false", f"run_index={tmp_path}/index"]
    real = study.runner.train_runs
    monkeypatch.setattr(study.runner, "train_runs", lambda *a, **k: 1 / 0)
    assert run_job(cfg_for(tiny_mnist, *common), tmp_path / "a")["status"] == "failed"
    monkeypatch.setattr(study.runner, "train_runs", real)
    rec = run_job(cfg_for(tiny_mnist, *common), tmp_path / "b")
    assert rec["status"] == "completed" and "reused_from" not in rec


def test_on_epoch_true_stops_runs_as_pruned_keeping_history(tiny_mnist, tiny_data):
    spec = spec_for(tiny_mnist, "epochs=4", "batch_size=100")
    seen = []

    def prune_after_two(epoch, outcomes):
        seen.append(epoch)
        return epoch == 2

    (out,) = train_runs(spec, [0], tiny_data, torch.device("cpu"), on_epoch=prune_after_two)
    assert seen == [1, 2] and out.status == "pruned"
    assert [h["epoch"] for h in out.history] == [1, 2]
    assert out.final["val_acc"] == out.history[-1]["val_acc"]


@pytest.mark.parametrize("norm, activation", [("none", "relu"), ("batch", "relu"), ("batch", "sigmoid"),
                                              ("none", "tanh")])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_sgd_step_equals_autograd_and_torch_sgd(tiny_mnist, tiny_data, norm, activation, bias):
    """The fused path is the same math as loss.backward() + torch.optim.SGD.step()."""
    over = ["epochs=2", "batch_size=16", f"model.norm={norm}", f"model.activation={activation}",
            f"model.bias_before_norm={str(bias).lower()}", "lr=0.05"]
    fused = train_runs(spec_for(tiny_mnist, *over, "fused=true"), [0, 1], tiny_data,
                       torch.device("cpu"))
    plain = train_runs(spec_for(tiny_mnist, *over, "fused=false"), [0, 1], tiny_data,
                       torch.device("cpu"))
    for f, p in zip(fused, plain, strict=True):
        for hf, hp in zip(f.history, p.history, strict=True):
            assert hf["train_loss"] == pytest.approx(hp["train_loss"], rel=1e-5, abs=1e-6)
            assert hf["val_loss"] == pytest.approx(hp["val_loss"], rel=1e-4, abs=1e-5)
            assert hf["val_acc"] == pytest.approx(hp["val_acc"], abs=1 / 200 + 1e-9)


def test_fused_step_updates_parameters_and_bn_statistics_like_autograd():
    from study.models.fused_sgd.step import fused_sgd_step
    from study.models.mlp import PackedMLP, build_mlp

    def make():
        torch.manual_seed(0)
        return PackedMLP([build_mlp(20, [8, 6], 3, "relu", "batch") for _ in range(2)])

    a, b = make(), make()
    x, y = torch.randn(2, 10, 20), torch.randint(0, 3, (2, 10))
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(a(x).reshape(20, 3), y.reshape(-1), reduction="none")
        opt.zero_grad()
        loss.view(2, 10).mean(1).sum().backward()
        opt.step()
        fused_sgd_step(b, x, y.reshape(-1), 0.1)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("runs", [1, 3])
@pytest.mark.parametrize("batch", [2, 64])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_batch_norm_matches_autograd_in_packs_and_batches(runs, batch, bias):
    """The fused step's BN (its skipped bias update before BN included):
    parameters, running statistics after several steps and the eval-mode
    outputs equal autograd + plain SGD's, for a pack of 1 and of 3 (each run
    its own learning rate), at the smallest batch BN trains on and at the
    default one."""
    from study.models.fused_sgd.step import fused_sgd_step
    from study.models.mlp import PackedMLP, build_mlp

    def make():
        torch.manual_seed(1)
        return PackedMLP([build_mlp(20, [16, 8], 4, "relu", "batch", bn_momentum=0.2, bias_before_norm=bias)
                          for _ in range(runs)])

    a, b = make(), make()
    lrs = torch.tensor([0.05, 0.02, 0.01][:runs])
    for _ in range(5):
        x, y = torch.randn(runs, batch, 20) * 2 + 0.5, torch.randint(0, 4, (runs, batch))
        loss = torch.nn.functional.cross_entropy(a(x).reshape(runs * batch, 4), y.reshape(-1), reduction="none")
        a.zero_grad()
        loss.view(runs, batch).mean(1).sum().backward()
        with torch.no_grad():  # plain SGD, each run's parameters with its own lr
            for p in a.parameters():  # (R, ...) for Linear, (R * F,) for BN
                lr = lrs.repeat_interleave(len(p) // runs).view(-1, *[1] * (p.dim() - 1))
                p.sub_(lr * p.grad)
        losses = fused_sgd_step(b, x, y.reshape(-1), lrs)
        torch.testing.assert_close(losses, loss.view(runs, batch).mean(1).detach(), rtol=1e-5, atol=1e-6)
    # Two examples normalize to +-1 whatever their spread: rounding is amplified
    # (the step with torch's native BN kernels differed from autograd by up to
    # 1.5e-3 relative, 2e-5 absolute, here too).
    tol = dict(rtol=1e-3, atol=1e-4) if batch == 2 else dict(rtol=1e-4, atol=1e-5)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, **tol, msg=name)
    a.eval(), b.eval()
    x = torch.randn(runs, 7, 20)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), **tol)


def test_the_training_side_imports_no_config_framework():
    """The trainer, the models and the probes take a TrainSpec (study/spec.py)
    or plain values: none imports Hydra, OmegaConf or study.config."""
    import ast

    from helpers import REPO

    for name in ("train.py", "models/mlp.py", "models/pack.py", "probes.py", "models/fused_sgd/step.py", "device.py"):
        tree = ast.parse((REPO / "study" / name).read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in modules if m.split(".")[0] in ("hydra", "omegaconf") or m == "study.config"}, name


def test_the_fused_step_rule_names_the_activations_the_step_computes():
    from study.models import fused_sgd
    from study.models.fused_sgd import step
    from study.models.mlp import ACTIVATIONS

    assert set(step._FORWARD) == set(step._BACKWARD) == {ACTIVATIONS[a] for a in fused_sgd.ACTIVATIONS}


@pytest.mark.slow
@needs_cxx
@pytest.mark.parametrize("fused", ["true", "false"])
def test_compiled_training_matches_eager_within_rounding_and_is_deterministic(tiny_mnist, tiny_data, fused):
    """compile=true: the fused step (or, fused=false, the model under autograd)
    through torch.compile gives the eager numbers up to float rounding, every
    epoch's (its trailing batch is a second compiled shape), and the same
    numbers again in a second training (Inductor's kernels are deterministic)."""
    over = ["epochs=2", "batch_size=48", "model.norm=batch", "lr=0.05", f"fused={fused}"]
    assert batches_per_epoch(len(tiny_data.train_x), 48) * 48 != len(tiny_data.train_x)  # a trailing batch
    eager = train_runs(spec_for(tiny_mnist, *over), [0, 1], tiny_data, torch.device("cpu"))
    spec = spec_for(tiny_mnist, *over, "compile=true")
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    compiled = train_runs(spec, [0, 1], tiny_data, torch.device("cpu"))
    assert counters["stats"]["unique_graphs"] >= graphs + 2  # it did compile: a graph per batch shape
    again = train_runs(spec, [0, 1], tiny_data, torch.device("cpu"))
    for c, e, a in zip(compiled, eager, again, strict=True):
        assert c.status == e.status == "completed"
        assert without_timings(c.history) == without_timings(a.history)
        for hc, he in zip(c.history, e.history, strict=True):
            assert hc["train_loss"] == pytest.approx(he["train_loss"], rel=1e-4)
            assert hc["val_loss"] == pytest.approx(he["val_loss"], rel=1e-3)
            assert hc["val_acc"] == pytest.approx(he["val_acc"], abs=2 / 200 + 1e-9)
    assert compiled[0].history[-1]["train_loss"] != compiled[1].history[-1]["train_loss"]  # the seeds differ


def test_compile_without_a_compiler_is_a_config_error(no_cpp_compiler):
    from study.config import ConfigError
    from study.device import check_compile

    with pytest.raises(ConfigError, match=r"^compile=true is not allowed: false here: .*C\+\+ compiler"):
        check_compile(True, torch.device("cpu"))
    check_compile(False, torch.device("cpu"))  # nothing to check


def pack_node(tmp_path, members, threads=None):
    """The `pack` node the packed launcher puts on the config of a pack's job."""
    return {"threads": threads, "members": [{"seed": s, "lr": lr, "dir": str(tmp_path / f"s{s}-{lr}"),
                                             "overrides": [f"seed={s}", f"lr={lr}"]} for s, lr in members]}


def with_pack(cfg, node):
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.pack = node
    return cfg


def test_a_pack_job_writes_each_members_own_record(tiny_mnist, tmp_path, monkeypatch):
    """The job of a pack (its `pack` node, from the packed launcher) trains the
    members once, together, and writes each member's record in its own dir:
    its own config (seed, lr, no pack), overrides and numbers, which are those
    of the member's run trained alone. Members whose run finished are reused."""
    import study.runner as runner

    calls = []
    real = runner.train_runs
    monkeypatch.setattr(runner, "train_runs", lambda spec, seeds, *a, **k: calls.append(list(seeds)) or
                        real(spec, seeds, *a, **k))
    common = ["epochs=1", "batch_size=100", "force=false", f"run_index={tmp_path}/index"]
    alone = run_job(cfg_for(tiny_mnist, *common, "seed=2", "lr=0.05"), tmp_path / "alone")
    node = pack_node(tmp_path, [(0, 0.01), (1, 0.01), (2, 0.05)], threads=1)
    own = run_job(with_pack(cfg_for(tiny_mnist, *common), node), node["members"][0]["dir"])
    assert calls == [[2], [0, 1]]  # seed 2 at lr 0.05 had finished: reused, not retrained
    recs = [json.loads((Path(m["dir"]) / RESULT_FILE).read_text()) for m in node["members"]]
    assert recs[0] == own
    for rec, m in zip(recs, node["members"]):
        assert (rec["seed"], rec["config"]["seed"], rec["config"]["lr"]) == (m["seed"], m["seed"], m["lr"])
        assert rec["overrides"] == m["overrides"] and "pack" not in rec["config"]
    assert [r["pack"]["seeds"] for r in recs[:2]] == [[0, 1]] * 2 and recs[2]["reused_from"]
    assert recs[2]["history"] == alone["history"] and recs[2]["run_hash"] == alone["run_hash"]
    solo = run_job(cfg_for(tiny_mnist, *common, "seed=1", "force=true"), tmp_path / "solo")
    assert solo["run_hash"] == recs[1]["run_hash"]
    assert solo["final"]["train_loss"] == pytest.approx(recs[1]["final"]["train_loss"], rel=1e-4)


def test_a_pack_job_runs_in_its_first_members_dir(tiny_mnist, tmp_path):
    node = pack_node(tmp_path, [(0, 0.01), (1, 0.01)])
    with pytest.raises(ValueError, match="first member's dir"):
        run_job(with_pack(cfg_for(tiny_mnist, "epochs=1"), node), tmp_path / "elsewhere")


@pytest.mark.parametrize("norm", ["ghost", "layer", "group"])
def test_other_norms_train_with_autograd_and_pack(tiny_mnist, tiny_data, norm):
    spec = spec_for(tiny_mnist, "epochs=2", "batch_size=64", f"model.norm={norm}",
                    "model.ghost_size=16", "model.groups=8", "lr=0.05")
    packed = train_runs(spec, [0, 1], tiny_data, torch.device("cpu"))
    (alone,) = train_runs(spec, [1], tiny_data, torch.device("cpu"))
    assert all(o.status == "completed" for o in packed)
    assert packed[0].final["val_acc"] > 0.5
    assert packed[1].history[-1]["train_loss"] == pytest.approx(alone.history[-1]["train_loss"], rel=1e-4)


def test_group_count_must_divide_the_widths(tiny_mnist):
    from study.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"model.groups=5 is not allowed: .*divides every hidden width \[128, 64\]"):
        validate(cfg_for(tiny_mnist, "model.norm=group", "model.groups=5"))
    with pytest.raises(ConfigError, match="batch_size=1 .* model.norm=ghost"):
        validate(cfg_for(tiny_mnist, "model.norm=ghost", "batch_size=1"))


def test_a_crashing_pack_fails_every_member_without_retraining(tiny_mnist, tmp_path, monkeypatch):
    import study.runner as runner

    calls = []

    def crash(spec, seeds, *a, **k):
        calls.append(list(seeds))
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(runner, "train_runs", crash)
    common = ["epochs=1", "force=false", f"run_index={tmp_path}/index"]
    members = [Member(s, 0.01, tmp_path / f"s{s}", (f"seed={s}",)) for s in (0, 1, 2)]
    recs = run_pack(cfg_for(tiny_mnist, *common), members)
    assert calls == [[0, 1, 2]]
    assert recs == [json.loads((m.dir / RESULT_FILE).read_text()) for m in members]
    assert [r["status"] for r in recs] == ["failed"] * 3
    assert all(r["error"]["message"] == "out of memory (simulated)" for r in recs)
    assert len({r["started_at"] for r in recs}) == 1  # the pack's times, shared


def test_weights_broken_by_the_last_update_are_a_divergence(tiny_mnist, tiny_data, monkeypatch):
    import study.train as tr

    real = tr.evaluate

    def nan_for_run_one(model, x, y, chunk):
        acc, loss = real(model, x, y, chunk)
        loss = loss.clone()  # an inference tensor cannot be edited in place
        loss[1] = float("nan")
        return acc, loss

    monkeypatch.setattr(tr, "evaluate", nan_for_run_one)
    spec = spec_for(tiny_mnist, "epochs=2", "batch_size=100")
    out = train_runs(spec, [0, 1], tiny_data, torch.device("cpu"))
    assert out[0].status == "completed" and len(out[0].history) == 2
    assert out[1].status == "diverged" and out[1].diverged_at_step == 10 and out[1].history == []


NO_VALIDATION = ("data.val_size=0", "objective=train_loss")


def test_without_a_validation_split_every_image_trains_and_val_metrics_are_null(tiny_mnist, tmp_path):
    from study.config import validate

    cfg = cfg_for(tiny_mnist, *NO_VALIDATION, "epochs=2", "batch_size=100", "model.norm=batch")
    validate(cfg)
    rec = run_job(cfg, tmp_path / "run")
    assert rec["status"] == "completed" and rec["diverged_at_step"] is None
    assert (rec["data"]["n_train"], rec["data"]["n_val"]) == (1200, 0)
    assert [h["step"] for h in rec["history"]] == [12, 24]  # 1,200 images, batch 100
    for h in rec["history"]:
        assert h["val_acc"] is None and h["val_loss"] is None  # null, not 0/0
        assert 0 <= h["test_acc"] <= 1 and math.isfinite(h["train_loss"])
    assert rec["final"]["val_acc"] is None and rec["final"]["val_loss"] is None
    assert rec["final"]["test_acc"] > 0.5
    assert objective(rec, "train_loss") == rec["final"]["train_loss"]
    json.loads((tmp_path / "run" / RESULT_FILE).read_text(), parse_constant=pytest.fail)


def test_without_a_validation_split_the_test_loss_judges_divergence(tiny_mnist, monkeypatch):
    import study.train as tr

    real, sizes = tr.evaluate, []

    def nan_for_run_one(model, x, y, chunk):
        sizes.append(len(x))
        acc, loss = real(model, x, y, chunk)
        loss = loss.clone()
        loss[1] = float("nan")
        return acc, loss

    monkeypatch.setattr(tr, "evaluate", nan_for_run_one)
    data = load_mnist(tiny_mnist, val_size=0, verify=False)
    out = train_runs(spec_for(tiny_mnist, *NO_VALIDATION, "epochs=2", "batch_size=100"), [0, 1], data,
                     torch.device("cpu"))
    assert set(sizes) == {400}  # the test split only: the empty validation split is not evaluated
    assert out[0].status == "completed" and [h["val_acc"] for h in out[0].history] == [None, None]
    assert out[1].status == "diverged" and out[1].diverged_at_step == 12 and out[1].history == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_a_config_error(tiny_mnist, tmp_path):
    from study.config import ConfigError

    with pytest.raises(ConfigError, match="device=cuda is not allowed"):
        run_job(cfg_for(tiny_mnist, "device=cuda"), tmp_path / "run")


def test_launcher_rejects_bad_pack_and_worker_counts():
    from hydra_plugins.bn_study_launcher.packed_launcher import PackedLauncher
    from study.config import ConfigError

    with pytest.raises(ConfigError, match="hydra.launcher.max_pack=0"):
        PackedLauncher(max_pack=0)
    with pytest.raises(ConfigError, match="hydra.launcher.n_jobs=0"):
        PackedLauncher(n_jobs=0)


def test_determinism_is_on_without_loading_the_compiler():
    """configure_determinism turns torch's deterministic kernels on (not warn-only)
    without importing torch._inductor (seconds per sweep worker); set_deterministic
    turns them off and on again."""
    python_ok(
        "import sys, torch\n"
        "import torch.utils.deterministic as D\n"
        "from study.device import configure_determinism, set_deterministic\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "assert configure_determinism(1) == 1\n"
        "assert torch.are_deterministic_algorithms_enabled()\n"
        "assert not torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "assert not D.fill_uninitialized_memory\n"
        "set_deterministic(False); assert not torch.are_deterministic_algorithms_enabled()\n"
        "set_deterministic(True); assert torch.are_deterministic_algorithms_enabled()\n"
        "assert 'torch._inductor' not in sys.modules, 'torch._inductor was imported'\n"
        "print('ok')\n"
    )


def test_the_launcher_groups_jobs_without_loading_torch(tiny_mnist):
    """The packed launcher's grouping (packs.pack_key) is torch-free: the
    launching process never trains, so it should not pay torch's import."""
    python_ok("import sys\n"
              "from study.config import compose_config\n"
              "from hydra_plugins.bn_study_launcher.packs import pack_key\n"
              f"cfg = compose_config(['data.root={tiny_mnist}', 'batch_size=8'])\n"
              "assert pack_key(cfg)\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n"
              "print('ok')\n")


def test_validate_runs_before_torch_loads(tiny_mnist, tmp_path):
    """study/run.py checks a job's values before it imports the runner,
    which loads torch: a bad value is refused without that import."""
    from helpers import REPO

    run = str(REPO / "study" / "run.py")
    python_ok("import runpy, sys\n"
              f"sys.argv = [{run!r}, 'lr=-1', 'data.root={tiny_mnist}', 'hydra.run.dir={tmp_path / 'run'}']\n"
              "try:\n"
              "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
              "except SystemExit as e:\n"
              "    assert e.code == 2, e.code\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n"
              "print('ok')\n")


def test_the_launcher_asks_torch_only_for_cuda_or_compile(tiny_mnist):
    """The launcher's device check loads torch only where a job asks for
    device=cuda or compile=true (then it must ask torch)."""
    python_ok("import sys\n"
              "from study.config import compose_config\n"
              "from hydra_plugins.bn_study_launcher.packs import check_torch\n"
              f"check_torch([compose_config(['data.root={tiny_mnist}', f'device={{d}}']) for d in ('cpu', 'auto')])\n"
              "assert 'torch' not in sys.modules, 'torch was imported'\n"
              "print('ok')\n")


def test_packs_start_costliest_first_by_steps_and_samples(tiny_mnist):
    """The launcher's cost of a pack: many small steps (batch 8, 5 epochs) outweigh
    few large ones (batch 512), yet at an equal step budget the larger batch and
    the larger pack cost more."""
    from hydra_plugins.bn_study_launcher.packs import cost as pack_cost

    def cost(runs, *over):
        return pack_cost(cfg_for(tiny_mnist, *over), runs)

    assert cost(3, "batch_size=8", "epochs=5") > cost(3, "batch_size=512", "epochs=5")
    assert cost(10, "batch_size=512", "steps=3000") > cost(10, "batch_size=8", "steps=3000")
    assert cost(10, "batch_size=64", "steps=3000") > cost(3, "batch_size=64", "steps=3000")
