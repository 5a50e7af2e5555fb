"""Gradual lr warm-up (Goyal et al. 2017; `warmup_epochs`, `warmup_lr`):
the schedule each step sees, on the fused and the autograd path, and packs."""

import pytest
import torch

from helpers import tiny_overrides
from study.config import compose_config
from study.runner import plain_config
from study.spec import batches_per_epoch, train_spec
from study.train import train_runs, training_step, warmup_lrs, warmup_steps

CPU = torch.device("cpu")


def spec_for(root, *overrides):
    return train_spec(plain_config(compose_config(tiny_overrides(root) + list(overrides))))


def test_the_ramp_is_linear_from_warmup_lr_and_ends_at_each_runs_lr():
    lrs = [0.64, 0.16, 0.0025]  # the last is below warmup_lr: no ramp for it
    assert warmup_lrs(lrs, 0.01, 4, 0) == pytest.approx([0.01 + 0.63 / 4, 0.01 + 0.15 / 4, 0.0025])
    assert warmup_lrs(lrs, 0.01, 4, 1) == pytest.approx([0.01 + 0.63 / 2, 0.01 + 0.15 / 2, 0.0025])
    assert warmup_lrs(lrs, 0.01, 4, 3) == pytest.approx(lrs)  # the last warm-up step is at the lr
    assert warmup_lrs(lrs, 0.01, 4, 4) == lrs and warmup_lrs(lrs, 0.01, 4, 99) == lrs
    assert warmup_lrs(lrs, 0.0, 0, 0) == lrs  # no warm-up


def test_warmup_steps_are_epochs_of_the_split(tiny_mnist):
    per_epoch = batches_per_epoch(800, 16)
    assert warmup_steps(spec_for(tiny_mnist, "batch_size=16"), per_epoch) == 0
    assert warmup_steps(spec_for(tiny_mnist, "batch_size=16", "warmup_epochs=1"), per_epoch) == per_epoch
    assert warmup_steps(spec_for(tiny_mnist, "batch_size=16", "warmup_epochs=0.5"), per_epoch) == per_epoch // 2
    assert warmup_steps(spec_for(tiny_mnist, "warmup_epochs=0.0001"), per_epoch) == 1  # at least a step


@pytest.mark.parametrize("fused", [True, False])
def test_each_step_gets_the_scheduled_lr(tiny_mnist, monkeypatch, fused):
    """The lr each optimizer step applies: the fused step's lr argument, autograd's param group."""
    import study.train as tr

    spec = spec_for(tiny_mnist, "batch_size=16", "lr=0.4", "warmup_epochs=1", "warmup_lr=0.1",
                    f"fused={str(fused).lower()}")
    assert spec.fused_step is fused
    seen = []
    if fused:
        def fake_fused(model, xb, yb, lr):
            seen.append([float(v) for v in lr])
            return torch.zeros(xb.shape[0])

        monkeypatch.setattr(tr, "training_functions", lambda model, compile: (fake_fused, None))
    model = tr.FAMILIES["mlp"].pack([tr.build_member(spec.model, 0)])
    step = training_step(spec, model, [0.4], CPU, torch.float32, warmup=4)
    if not fused:
        opt_lrs = []
        real_step = torch.optim.SGD.step

        def spy(self, *a, **k):
            opt_lrs.append([g["lr"] for g in self.param_groups])
            return real_step(self, *a, **k)

        monkeypatch.setattr(torch.optim.SGD, "step", spy)
    xb, yb = torch.randn(1, 16, 784), torch.randint(0, 10, (16,))
    for _ in range(6):
        step(xb, yb)
    got = [v[0] for v in (seen if fused else opt_lrs)]
    assert got == pytest.approx([0.175, 0.25, 0.325, 0.4, 0.4, 0.4])


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_fused_and_autograd_warm_up_alike(tiny_mnist, tiny_data, norm):
    over = ["epochs=2", "batch_size=16", f"model.norm={norm}", "lr=0.3", "warmup_epochs=1", "warmup_lr=0.01"]
    fused = train_runs(spec_for(tiny_mnist, *over, "fused=true"), [0, 1], tiny_data, CPU)
    plain = train_runs(spec_for(tiny_mnist, *over, "fused=false"), [0, 1], tiny_data, CPU)
    for f, p in zip(fused, plain, strict=True):
        for hf, hp in zip(f.history, p.history, strict=True):
            assert hf["train_loss"] == pytest.approx(hp["train_loss"], rel=1e-5, abs=1e-6)
            assert hf["val_loss"] == pytest.approx(hp["val_loss"], rel=1e-4, abs=1e-5)


def test_warmup_changes_training_and_a_flat_one_does_not(tiny_mnist, tiny_data):
    over = ["epochs=2", "batch_size=16", "model.norm=batch", "lr=0.3"]
    (plain,) = train_runs(spec_for(tiny_mnist, *over), [0], tiny_data, CPU)
    (warm,) = train_runs(spec_for(tiny_mnist, *over, "warmup_epochs=1", "warmup_lr=0.01"), [0], tiny_data, CPU)
    (flat,) = train_runs(spec_for(tiny_mnist, *over, "warmup_epochs=1", "warmup_lr=0.3"), [0], tiny_data, CPU)
    assert warm.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"], rel=1e-3)
    assert [h["train_loss"] for h in flat.history] == [h["train_loss"] for h in plain.history]


def test_a_pack_of_lrs_warms_up_each_run_as_alone(tiny_mnist, tiny_data):
    over = ["epochs=2", "batch_size=16", "model.norm=batch", "warmup_epochs=1", "warmup_lr=0.02"]
    lrs = [0.01, 0.2, 0.5]  # the first is below warmup_lr: it trains at 0.01 throughout
    packed = train_runs(spec_for(tiny_mnist, *over), [0, 1, 2], tiny_data, CPU, lrs=lrs)
    for p, lr in zip(packed, lrs, strict=True):
        (alone,) = train_runs(spec_for(tiny_mnist, *over, f"lr={lr}"), [p.seed], tiny_data, CPU)
        for hp, ha in zip(p.history, alone.history, strict=True):
            assert hp["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4, abs=1e-5)
            assert hp["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-3, abs=1e-4)
