"""C18, precise BN: the `precise_bn` probe (study/probes.py) against
torch.optim.swa_utils.update_bn on the reference model, and the claim module
(analysis/claims/c18_precise_bn.py) on hand-built records."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

import analysis.claims.c18_precise_bn as c18
import study.probes as probes
from analysis.claims import BY_ID
from analysis.claims.rule import INCONCLUSIVE, NOT_RUN, CONTRADICTED, SUPPORTED
from analysis.claims.runs import ClaimRuns, guarded, split_by_experiment
from analysis.collect import collect
from analysis.stats import mean_interval
from helpers import tiny_overrides, write_runs
from study.config import compose_config
from study.models.mlp import PackedMLP, build_mlp
from study.models.pack import evaluate
from study.runner import plain_config
from study.spec import train_spec
from study.train import train_runs

CPU = torch.device("cpu")
MARGIN = BY_ID["C18"].margin  # points of test accuracy


pytestmark = pytest.mark.usefixtures("one_thread")


def members(seeds=(0, 1)) -> list[torch.nn.Sequential]:
    """Reference BN MLPs with trained-looking state: random affine parameters and EMA statistics."""
    out = []
    for s in seeds:
        torch.manual_seed(s)
        net = build_mlp(hidden=[32, 16], norm="batch")
        for m in net:
            if isinstance(m, torch.nn.BatchNorm1d):
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
                    m.running_mean.normal_()
                    m.running_var.uniform_(0.5, 2.0)
        out.append(net)
    return out


def bn_state(net: torch.nn.Module) -> list[torch.Tensor]:
    return [t for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d) for t in (m.running_mean, m.running_var)]


# ------------------------------------------------------------------ the probe


@pytest.mark.parametrize("n,batch", [(100, 8), (300, 64), (100, 1024)])
def test_recomputed_statistics_equal_update_bn_on_the_reference_model(tiny_data, n, batch):
    refs = members()
    packed = PackedMLP(refs)
    params = {k: v.clone() for k, v in packed.named_parameters()}
    x = tiny_data.train_x.index_select(0, probes.precise_indices(len(tiny_data.train_x), n))
    assert probes.reestimate_running_stats(packed, x, batch)
    # Frozen weights: recomputing the statistics changes no parameter.
    assert all(torch.equal(v, params[k]) for k, v in packed.named_parameters())
    for r, ref in enumerate(refs):
        update_bn(DataLoader(TensorDataset(x), batch_size=batch), ref)
        mine = packed.unpack(r, copy.deepcopy(ref))
        for a, b in zip(bn_state(mine), bn_state(ref), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # The same statistics give the same test accuracy as the reference model.
    acc, _ = evaluate(packed, tiny_data.test_x, tiny_data.test_y, 10_000)
    for r, ref in enumerate(refs):
        ref.eval()
        with torch.no_grad():
            ref_acc = (ref(tiny_data.test_x).argmax(1) == tiny_data.test_y).double().mean()
        assert float(acc[r]) == pytest.approx(float(ref_acc), abs=1e-12)


def test_precise_samples_are_fixed_nested_and_leave_the_rngs_alone():
    torch.manual_seed(7)
    state = torch.get_rng_state()
    a, b = probes.precise_indices(1000, 300), probes.precise_indices(1000, 100)
    assert torch.equal(a[:100], b) and len(set(a.tolist())) == 300
    assert torch.equal(probes.precise_indices(1000, 2000), probes.precise_indices(1000, 1000))
    assert torch.equal(torch.get_rng_state(), state)


def spec_for(tiny_mnist, *overrides):
    return train_spec(plain_config(compose_config(tiny_overrides(tiny_mnist) + list(overrides))))


def test_the_probe_changes_no_run_and_records_each_sample_count(tiny_mnist, tiny_data):
    common = ["steps=30", "batch_size=16", "model.norm=batch"]
    off = train_runs(spec_for(tiny_mnist, *common), [0, 1], tiny_data, CPU)
    on = train_runs(spec_for(tiny_mnist, *common, "probes.kinds=[precise_bn]"), [0, 1], tiny_data, CPU)
    for a, b in zip(off, on, strict=True):
        assert [h["test_acc"] for h in a.history] == [h["test_acc"] for h in b.history]
        assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
        p = b.probes["final"]["precise_bn"]
        assert set(p) == {"batch_size", "samples", "sample_seed", "ema_acc", "train_mode_acc", "precise_acc"}
        # The tiny training split has 1,000 images: 10^4 is capped there.
        assert p["batch_size"] == 16 and p["samples"] == [100, 1000, 1000] and p["sample_seed"] == 0
        assert p["ema_acc"] == b.history[-1]["test_acc"]
        assert len(p["precise_acc"]) == 3 and p["precise_acc"][1] == p["precise_acc"][2]
        assert all(0.0 <= v <= 1.0 for v in [p["train_mode_acc"], *p["precise_acc"]])
        json.dumps(p, allow_nan=False)


def test_the_probe_matches_update_bn_end_to_end(tiny_mnist, tiny_data):
    spec = spec_for(tiny_mnist, "steps=1", "batch_size=8", "model.norm=batch", "probes.kinds=[precise_bn]")
    refs = members((3, 4))
    packed = PackedMLP(refs)
    before = copy.deepcopy(packed.state_dict())
    finals = probes.Probes(spec, tiny_data, 2, CPU).final(packed)
    after = packed.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the probe works on a copy
    x = tiny_data.train_x.index_select(0, probes.precise_indices(len(tiny_data.train_x), 100))
    for r, ref in enumerate(refs):
        update_bn(DataLoader(TensorDataset(x), batch_size=8), ref)
        ref.eval()
        with torch.no_grad():
            acc = (ref(tiny_data.test_x).argmax(1) == tiny_data.test_y).double().mean().item()
        assert finals[r]["precise_bn"]["precise_acc"][0] == pytest.approx(acc, abs=1e-12)


def test_without_running_statistics_nothing_is_recomputed(tiny_mnist, tiny_data):
    spec = spec_for(tiny_mnist, "steps=10", "batch_size=16", "model.norm=layer", "probes.kinds=[precise_bn]")
    (out,) = train_runs(spec, [0], tiny_data, CPU)
    p = out.probes["final"]["precise_bn"]
    assert p["precise_acc"] is None and p["ema_acc"] == p["train_mode_acc"] == out.history[-1]["test_acc"]


# ------------------------------------------------------------------ the claim

SEEDS = (0, 1, 2, 3)


def record(seed: int, batch: int, ema: float | None, precise: list | None, train_mode: float = 0.5,
           norm: str = "batch", status: str = "completed") -> dict:
    probe = None if precise is None and ema is None else {
        "kinds": ["precise_bn"], "every": 100, "seconds": 1.0, "series": [],
        "final": {"precise_bn": {"batch_size": batch, "samples": [100, 1000, 10000], "sample_seed": 0,
                                 "ema_acc": ema, "train_mode_acc": train_mode, "precise_acc": precise}}}
    done = status == "completed"
    return {"schema_version": 1, "status": status, "experiment": "precise_bn", "seed": seed,
            "finished_at": "2024-01-01T00:00:00+00:00",
            "config": {"model": {"norm": norm, "activation": "relu"}, "batch_size": batch, "lr": 0.01, "seed": seed},
            "final": {"train_loss": 0.1 if done else None, "val_acc": 0.9 if done else None,
                      "test_acc": (0.9 if ema is None else ema) if done else None,
                      "val_loss": 0.2 if done else None, "epoch": 1, "step": 100},
            "history": [{"epoch": 1, "step": 100, "train_loss": 0.1, "val_acc": 0.9, "test_acc": ema or 0.9,
                         "val_loss": 0.2, "epoch_seconds": 1.0, "samples_per_second": 1000.0,
                         "eval_seconds": 0.1, "pack_size": 4}],
            "probes": probe if done else None,
            "env": {"device_name": "cpu", "hostname": "test", "threads": 1, "git_commit": "abc", "git_dirty": False},
            "data": {"verified": True, "source": "cache", "n_train": 55000, "n_val": 5000, "n_test": 10000},
            "started_at": "2024-01-01T00:00:00+00:00", "wall_seconds": 1.0, "code_version": "test"}


def claim_runs(exps: dict) -> ClaimRuns:
    """C18's ClaimRuns: the registry's row where it has one, else the row it should have."""
    claim = BY_ID["C18"]
    return ClaimRuns(claim, exps, c18.LITERATURE)


def run_claim(tmp_path: Path, records: list[dict]):
    exps = split_by_experiment(collect([write_runs(tmp_path / "runs", records)])) if records else {}
    return guarded(c18.evaluate, claim_runs(exps), tmp_path / "out")


def test_the_registry_row_points_here():
    if "C18" in BY_ID:
        assert BY_ID["C18"].module == "c18_precise_bn" and BY_ID["C18"].presets == ("precise_bn",)


# Per seed at batch 2: EMA and precise(10^2, 10^3, 10^4) test accuracies (fractions).
GAINS = {"supported": [0.020, 0.025, 0.030, 0.022], "not supported": [-0.020, -0.025, -0.030, -0.022],
         "inconclusive": [0.030, -0.030, 0.020, -0.010]}


@pytest.mark.parametrize("case,expected", [("supported", SUPPORTED), ("not supported", CONTRADICTED),
                                           ("inconclusive", INCONCLUSIVE)])
def test_the_verdict_is_the_one_the_numbers_imply(tmp_path, case, expected):
    recs = []
    for s, gain in zip(SEEDS, GAINS[case]):
        ema = 0.60 + 0.01 * s
        recs.append(record(s, 2, ema, [ema + gain - 0.01, ema + gain + 0.0005 * (s - 1.5), ema + gain], 0.40))
        e64 = 0.95 + 0.001 * s  # EMA fine at batch 64: not the headline
        recs.append(record(s, 64, e64, [e64 - 0.01, e64 + 0.0002 * s, e64 + 0.0001 * (s % 2)]))
    recs.append(record(9, 2, None, None, status="diverged"))
    res = run_claim(tmp_path, recs)
    m = mean_interval([100 * g for g in GAINS[case]])
    assert res.verdict == expected, res
    assert res.claim == "C18" and res.unit == "points" and res.literature == c18.LITERATURE
    assert res.value == pytest.approx(m.mean) and res.low == pytest.approx(m.low) and res.high == pytest.approx(m.high)
    assert res.n == "4 BN seeds at batch 2"
    assert "10^3 samples suffice" in res.evidence and "at 2 of 2 batch sizes" in res.evidence
    assert "1 diverged" in res.evidence
    assert len([d for d in res.details if d.startswith("batch ")]) == 2
    assert res.figure == "claim_c18.png" and (tmp_path / "out" / "claim_c18.png").read_bytes()[:4] == b"\x89PNG"


def test_the_10_3_samples_check():
    def check(values):
        return c18.suffices(mean_interval(values), MARGIN)

    assert check([0.0, 0.05, -0.05, 0.02]) == c18.SUFFICE
    assert check([-1.0, -1.1, -0.9, -1.05]) == c18.NOT_SUFFICE
    assert check([0.0, 0.5, -0.5, 0.3]) == c18.UNDECIDED
    assert check([0.0]) == c18.UNDECIDED
    assert check([0.125, 0.125, 0.125]) == c18.UNDECIDED  # a zero-width interval says nothing


def test_not_run_without_runs_and_inconclusive_without_the_probe(tmp_path):
    assert run_claim(tmp_path / "a", []).verdict == NOT_RUN
    res = run_claim(tmp_path / "b", [record(s, 8, None, None) for s in SEEDS])
    assert res.verdict == INCONCLUSIVE and "could not be computed" not in res.evidence
    res = run_claim(tmp_path / "c", [record(s, 8, 0.9, None, norm="none") for s in SEEDS])
    assert res.verdict == INCONCLUSIVE and "could not be computed" not in res.evidence
