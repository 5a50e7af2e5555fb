"""Claim C17 (the conv net) on synthetic records, read back through
analysis.collect as the report reads them; each statistic checked against
analysis.stats on the same numbers. C16..C16d (the LSTM): test_claims_c16.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from analysis.claims.rule import MIXED, NOT_RUN, SUPPORTED
from analysis.stats import welch_difference
from helpers import run_claim


def record(exp: str | None, norm: str, seed: int, *, batch: int, test: float, family: str = "cnn", permute: bool = False,
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


def seeds(a: float) -> list[float]:
    return [100 * (a + s / 1000) for s in range(3)]


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
