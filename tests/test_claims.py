"""The verdict rule, the notebook's claims and the split by preset (analysis/claims.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from analysis.claims import (CLAIMS, INCONCLUSIVE, NOT_RUN, NOT_SUPPORTED, NOTEBOOK_CLAIMS, OUT_OF_SCOPE,
                             SUPPORTED, ClaimResult, combine, directional, notebook_verdicts, split_by_experiment)
from analysis.collect import collect


@pytest.mark.parametrize("low, high, positive, verdict", [
    (0.1, 0.5, True, SUPPORTED),
    (-0.5, -0.1, True, NOT_SUPPORTED),
    (-0.1, 0.5, True, INCONCLUSIVE),
    (-0.5, -0.1, False, SUPPORTED),  # a claim that expects a negative statistic
    (0.1, 0.5, False, NOT_SUPPORTED),
    (math.nan, math.nan, True, INCONCLUSIVE),  # one seed: no interval
    (0.3, 0.3, True, INCONCLUSIVE),  # every seed the same value: no spread to judge
])
def test_verdict_rule(low: float, high: float, positive: bool, verdict: str) -> None:
    assert directional(low, high, positive) == verdict


def test_combine_needs_every_setting_to_agree() -> None:
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([NOT_SUPPORTED, NOT_SUPPORTED]) == NOT_SUPPORTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, NOT_SUPPORTED]) == INCONCLUSIVE
    assert combine([NOT_RUN, SUPPORTED]) == SUPPORTED  # a row that did not run does not vote
    assert combine([NOT_RUN]) == NOT_RUN


def _result(claim: str, verdict: str) -> ClaimResult:
    return ClaimResult(claim=claim, title=CLAIMS[claim][0], verdict=verdict, statistic="s", value=1.0,
                       low=0.5, high=1.5, unit="points", n="3 seeds", figure=f"claim_{claim.lower()}.png")


def test_notebook_claims_follow_their_rows() -> None:
    rows = {r["#"]: r for r in notebook_verdicts([
        _result("C8", SUPPORTED), _result("C9", NOT_SUPPORTED), _result("C2", SUPPORTED),
        _result("C5", SUPPORTED), _result("C1", INCONCLUSIVE)])}
    assert len(rows) == len(NOTEBOOK_CLAIMS)
    # C9 ("BN does not reduce ICS") not supported = evidence FOR the notebook's claim 1
    assert rows["1"]["verdict"] == SUPPORTED and "read in reverse" in rows["1"]["from"]
    assert rows["1"]["figures"] == "claim_c8.png, claim_c9.png"
    assert rows["2"]["verdict"] == SUPPORTED and "+1 points [+0.5, +1.5], n = 3 seeds" in rows["2"]["from"]
    assert rows["7"]["verdict"] == INCONCLUSIVE  # C5 supported, C1 inconclusive
    assert rows["4"]["verdict"] == NOT_RUN  # C12 absent
    assert rows["9"]["verdict"] == OUT_OF_SCOPE


def _record(experiment: str | None, seed: int, norm: str) -> dict:
    return {"schema_version": 1, "status": "completed", "experiment": experiment, "seed": seed,
            "config": {"batch_size": 64, "lr": 0.01, "seed": seed, "model": {"norm": norm}},
            "final": {"train_loss": 0.1, "val_acc": 0.9 + seed / 100, "test_acc": 0.9 + seed / 100,
                      "val_loss": 0.2, "epoch": 1, "step": 10},
            "history": [], "env": {"device_name": "cpu", "threads": 1}, "data": {}}


def test_split_by_experiment_keeps_presets_apart(tmp_path: Path) -> None:
    n = 0
    for experiment in ("ics", "landscape", "quick/ics", "quick/shift", None):
        for seed in (0, 1):
            for norm in ("none", "batch"):
                d = tmp_path / f"run{n}"
                d.mkdir()
                (d / "result.json").write_text(json.dumps(_record(experiment, seed, norm)))
                n += 1
    exps = split_by_experiment(collect([tmp_path]))
    assert set(exps) == {"ics", "landscape", "shift", "(no preset)"}
    # the full preset's runs, never pooled with its quick variant's
    assert not exps["ics"].quick and len(exps["ics"].runs) == 4
    assert exps["shift"].quick and len(exps["shift"].runs) == 4
    # one run reused by two presets counts once for each (identical records otherwise)
    assert len(exps["landscape"].runs) == 4 and len(exps["landscape"].records) == 4
    assert set(exps["ics"].runs.experiment) == {"ics"}
