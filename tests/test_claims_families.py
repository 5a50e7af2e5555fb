"""Claims C16..C16d (the LSTM) and C17 (the conv net) on synthetic records,
read back through analysis.collect as the report reads them; each statistic
checked against analysis.stats on the same numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from analysis.claims.rule import CONTRADICTED, INCONCLUSIVE, MIXED, NOT_RUN, SUPPORTED
from analysis.stats import relative_difference, welch_difference
from helpers import run_claim


def record(exp: str | None, norm: str, seed: int, *, batch: int, test: float, family: str = "lstm", permute: bool = False,
           first: float = 0.5, seconds: float = 10.0, pack: int = 3, modes: tuple[float, float] | None = None,
           status: str = "completed") -> dict[str, Any]:
    done = status == "completed"
    cfg = {"model": {"family": family, "norm": norm}, "data": {"permute": permute}, "batch_size": batch,
           "lr": 0.001, "seed": seed, "steps": 200}
    hist = [{"epoch": 1, "step": 100, "test_acc": first, "val_acc": first, "train_loss": 1.0, "val_loss": 1.0,
             "epoch_seconds": seconds / 2, "samples_per_second": 1.0, "eval_seconds": 0.1, "pack_size": pack},
            {"epoch": 2, "step": 200, "test_acc": test, "val_acc": test, "train_loss": 0.5, "val_loss": 0.5,
             "epoch_seconds": seconds / 2, "samples_per_second": 1.0, "eval_seconds": 0.1, "pack_size": pack}]
    probes = None
    if modes is not None:
        probes = {"kinds": ["modes"], "every": 100, "seconds": 0.1, "series": [],
                  "final": {"modes": {"eval_mode_acc": modes[0], "train_mode_acc": modes[1], "batch_size": batch}}}
    return {"schema_version": 1, "experiment": exp, "status": status, "seed": seed, "config": cfg,
            "final": {"test_acc": test if done else None, "val_acc": test if done else None,
                      "train_loss": 0.5 if done else None, "val_loss": 0.5 if done else None, "epoch": 2,
                      "step": 200 if done else None},
            "history": hist if done else [], "probes": probes, "finished_at": "2026-01-01T00:00:00+00:00",
            "env": {"device_name": "test-cpu", "threads": 1, "hostname": "test", "process": "p"}}


# Test accuracy by (arm, batch): three seeds each, +0.1% per seed.
ACC = {("none", 128): 0.95, ("batch", 128): 0.97, ("batch_shared", 128): 0.90, ("layer", 128): 0.975,
       ("none", 8): 0.90, ("batch", 8): 0.88, ("batch_shared", 8): 0.80, ("layer", 8): 0.92}
SECONDS = {"none": 10.0, "batch": 40.0, "batch_shared": 40.0, "layer": 30.0}  # per run's 200 steps x pack of 3
GAP = {8: 0.05, 128: 0.01}  # BN-LSTM's |eval - train mode| accuracy gap by batch


def rnn_records(permuted_bn: float = 0.96) -> list[dict]:
    recs = []
    for (norm, b), acc in ACC.items():
        for s in range(3):
            gap = GAP[b] + s / 1000 if norm.startswith("batch") else 0.0
            recs.append(record("rnn", norm, s, batch=b, test=acc + s / 1000, seconds=SECONDS[norm] * (1 + s / 100),
                               modes=(acc + s / 1000, acc + s / 1000 - gap)))
    for norm, acc in (("none", 0.90), ("batch", permuted_bn)):
        recs += [record("rnn_permuted", norm, s, batch=128, permute=True, test=acc + s / 1000) for s in range(3)]
    return recs


def seeds(a: float) -> list[float]:
    return [100 * (a + s / 1000) for s in range(3)]


def test_c16_bn_lstm_accuracy_on_rows_and_permuted(tmp_path: Path) -> None:
    res = run_claim("C16", tmp_path, rnn_records())
    assert res.verdict == SUPPORTED and res.figure == "claim_c16.png"
    assert (tmp_path / "report" / "claim_c16.png").is_file()
    # the headline is the least favourable setting: rows (+2) rather than permuted (+6)
    d = welch_difference(seeds(0.97), seeds(0.95))
    assert res.value == pytest.approx(d.diff) and res.low == pytest.approx(d.low)
    assert any("permuted" in line for line in res.details) and "batch 128, rows" in res.evidence
    assert any("shared minus per-step" in line for line in res.details)
    # on permuted pixels BN-LSTM below LSTM: the settings give different clear answers -> mixed
    other = tmp_path / "b"
    assert run_claim("C16", other, rnn_records(permuted_bn=0.85)).verdict == MIXED


def test_c16_convergence_detail_only_with_an_earlier_evaluation(tmp_path: Path) -> None:
    res = run_claim("C16", tmp_path / "two", rnn_records())
    assert any("after the first epoch (step 100)" in line for line in res.details)
    one = rnn_records()
    for r in one:  # a budget shorter than an epoch: the only evaluation is the final one
        r["history"] = r["history"][-1:]
    res = run_claim("C16", tmp_path / "one", one)
    assert res.verdict == SUPPORTED and not any("first epoch" in line for line in res.details)


def test_c16b_cost_per_step_reads_the_pack_size(tmp_path: Path) -> None:
    res = run_claim("C16b", tmp_path, rnn_records())
    assert res.verdict == SUPPORTED and res.unit == "%"
    ms = {n: [1000 * SECONDS[n] * (1 + s / 100) / 200 / 3 for s in range(3)] for n in SECONDS}
    d = relative_difference(ms["batch"], ms["none"], 100)  # +300%: the same at both batch sizes
    assert res.value == pytest.approx(d.diff)
    assert any("ratio 4.0x" in line for line in res.details)


def test_c16c_discrepancy_larger_at_small_batch(tmp_path: Path) -> None:
    res = run_claim("C16c", tmp_path, rnn_records())
    assert res.verdict == SUPPORTED
    d = welch_difference([100 * (GAP[8] + s / 1000) for s in range(3)], [100 * (GAP[128] + s / 1000) for s in range(3)])
    assert res.value == pytest.approx(d.diff, abs=1e-9) and res.value == pytest.approx(4.0, abs=1e-6)


def test_c16d_layer_norm_against_bn(tmp_path: Path) -> None:
    res = run_claim("C16d", tmp_path, rnn_records())
    assert res.verdict == SUPPORTED  # LN above BN at both batch sizes
    assert res.value == pytest.approx(welch_difference(seeds(0.975), seeds(0.97)).diff)
    flipped = [r for r in rnn_records() if not (r["config"]["model"]["norm"] == "layer")]
    flipped += [record("rnn", "layer", s, batch=b, test=0.5 + s / 1000) for b in (8, 128) for s in range(3)]
    assert run_claim("C16d", tmp_path / "b", flipped).verdict == CONTRADICTED


def test_c16_rows_without_their_preset_are_not_run(tmp_path: Path) -> None:
    for claim in ("C16", "C16b", "C16c", "C16d"):
        res = run_claim(claim, tmp_path / claim, [record("cnn", "none", 0, batch=8, test=0.9, family="cnn")])
        assert res.verdict == NOT_RUN and "experiment=rnn" in res.evidence


def test_c16_diverged_runs_count_at_chance(tmp_path: Path) -> None:
    recs = [r for r in rnn_records() if not (r["config"]["model"]["norm"] == "batch" and r["config"]["batch_size"] == 128
                                             and r["experiment"] == "rnn")]
    recs += [record("rnn", "batch", s, batch=128, test=0.0, status="diverged") for s in range(3)]
    res = run_claim("C16", tmp_path, recs)
    assert res.verdict in (CONTRADICTED, INCONCLUSIVE, MIXED) and "counted at chance" in " ".join(res.details)


def test_c17_bn_advantage_in_the_conv_net(tmp_path: Path) -> None:
    acc = {("none", 8): 0.980, ("batch", 8): 0.985, ("none", 512): 0.90, ("batch", 512): 0.97}
    recs = [record("cnn", n, s, batch=b, test=a + s / 1000, family="cnn") for (n, b), a in acc.items()
            for s in range(3)]
    res = run_claim("C17", tmp_path, recs)
    assert res.verdict == SUPPORTED and res.figure == "claim_c17.png"
    # headline: the least favourable batch size, 8 (+0.5 points)
    assert res.value == pytest.approx(welch_difference(seeds(0.985), seeds(0.98)).diff)
    assert any("C1 on the conv net" in line for line in res.details)
    recs = [r for r in recs if not (r["config"]["model"]["norm"] == "batch" and r["config"]["batch_size"] == 8)]
    recs += [record("cnn", "batch", s, batch=8, test=0.95 + s / 1000, family="cnn") for s in range(3)]
    assert run_claim("C17", tmp_path / "b", recs).verdict == MIXED  # + at 512, - at 8: two clear answers


def test_c17_answered_by_a_plain_conv_net_sweep_but_not_by_an_mlp_one(tmp_path: Path) -> None:
    acc = {("none", 64): 0.97, ("batch", 64): 0.985}
    cnn = [record(None, n, s, batch=b, test=a + s / 1000, family="cnn") for (n, b), a in acc.items() for s in range(3)]
    assert run_claim("C17", tmp_path / "cnn", cnn).verdict == SUPPORTED
    mlp = [record(None, n, s, batch=b, test=a + s / 1000, family="mlp") for (n, b), a in acc.items() for s in range(3)]
    assert run_claim("C17", tmp_path / "mlp", mlp).verdict == NOT_RUN
