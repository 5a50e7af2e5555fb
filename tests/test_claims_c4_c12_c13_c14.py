"""Claims C4 (censored at the budget), C12 (saturation), C13 (shares of runs that hold) and C14 (interleaved timings) on hand-built records, and C14's measurement.

C4: a target and budget fixed before the data; a run that never reaches the
target is censored at the budget, never dropped, and a bound decides only in
its direction. C12: the gap counts only where training accuracy saturated.
C13: a bimodal no-norm arm, counted as shares of runs that hold (Newcombe's
interval). C14: interleaved timings of both arms in one process
(study/measure/cost.py), recorded by the run as `cost`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analysis.claims.c04_steps_to_target import TARGET_VAL_ACC
from analysis.claims.c12_regularization import SATURATED
from analysis.claims.c13_linear_scaling import HOLD_POINTS, share_difference, wilson
from analysis.claims.rule import INCONCLUSIVE, CONTRADICTED, SUPPORTED
from analysis.stats import mean_interval, welch_difference
from helpers import VERDICTS, assert_png, record, run_claim, tiny_overrides


# ------------------------------------------------------------------ C4
BUDGET = 2000


def c4_run(norm: str, seed: int, b: int, lr: float, reach: int | None, status: str = "completed") -> dict:
    """A run whose probed validation accuracy first reaches the target at step `reach` (None: never)."""
    series = [{"step": st, "val_acc": (TARGET_VAL_ACC + 0.01 if reach is not None and st >= reach
                                       else 0.5 + st / 100000)} for st in range(0, BUDGET + 1, 25)]
    return record("steps_to_target", norm, seed, batch=b, lr=lr, steps=BUDGET, status=status,
                  val=series[-1]["val_acc"],
                  probes={"kinds": ["val_acc"], "every": 25, "seconds": 1.0, "series": series, "final": {}})


C4_STEPS = {  # (norm, batch, lr) -> steps to target per seed (None: never reaches it)
    ("batch", 32, 0.1): [200, 225, 250], ("batch", 32, 0.3): [150, 175, 200],
    ("none", 32, 0.1): [800, 825, 850], ("none", 32, 0.3): [300, None, None],
    ("batch", 128, 0.1): [150, 150, 175], ("batch", 128, 0.3): [100, 100, 125],
    ("none", 128, 0.1): [400, 425, 450], ("none", 128, 0.3): [None, None, None],
}


def c4_records(steps: dict) -> list[dict]:
    return [c4_run(n, s, b, lr, reach) for (n, b, lr), per_seed in steps.items() for s, reach in enumerate(per_seed)]


def test_c4_target_is_fixed_and_supported_by_hand(tmp_path):
    assert TARGET_VAL_ACC == 0.94
    recs = c4_records(C4_STEPS)
    # a run that reached the target and then diverged is censored (counts at the budget), not dropped
    recs.append(c4_run("none", 3, 128, 0.1, 25, status="diverged"))
    res = run_claim("C4", tmp_path, recs)
    assert res.verdict == SUPPORTED, res
    # best lr: the fewest median steps, a censored run counted at the budget (lr 0.3 of no norm at batch 32:
    # median 2000 > 825)
    per_batch = {32: welch_difference(np.log10([800, 825, 850]), np.log10([150, 175, 200])),
                 128: welch_difference(np.log10([400, 425, 450, BUDGET]), np.log10([100, 100, 125]))}
    worst = min(per_batch.values(), key=lambda d: d.low)
    assert (res.value, res.low, res.high) == pytest.approx((worst.diff, worst.low, worst.high))
    line128 = next(d for d in res.details if d.startswith("batch 128"))
    assert "1 of 4 seed(s) censored" in line128 and "a lower bound (no norm censored)" in line128
    assert any(d.startswith("censored runs") and "no norm batch 128: 4 of 7" in d for d in res.details), res.details
    assert "counts at the budget" in res.evidence and "2000-step budget" in res.evidence
    assert_png(tmp_path, res)


def test_c4_other_directions(tmp_path):
    flipped = {(("none" if n == "batch" else "batch"), b, lr): v for (n, b, lr), v in C4_STEPS.items()}
    assert run_claim("C4", tmp_path / "rev", c4_records(flipped)).verdict == CONTRADICTED
    same = {k: ([200, 300, 250] if k[0] == "batch" else [250, 200, 300]) for k in C4_STEPS}
    assert run_claim("C4", tmp_path / "same", c4_records(same)).verdict == INCONCLUSIVE


def test_c4_an_arm_that_never_reaches_it_counts_at_the_budget(tmp_path):
    steps = dict(C4_STEPS)
    steps[("none", 32, 0.1)] = steps[("none", 32, 0.3)] = [None, None, None]
    res = run_claim("C4", tmp_path, c4_records(steps))
    line = next(d for d in res.details if d.startswith("batch 32"))
    assert "never reached" in line and "lower bound" in line
    d = welch_difference(np.log10([BUDGET] * 3), np.log10([150, 175, 200]))
    assert f"{d.diff:+.3f}" in line and line.endswith(SUPPORTED)  # a lower bound may support


def test_c4_a_censored_bn_run_cannot_support(tmp_path):
    steps = dict(C4_STEPS)
    steps[("batch", 32, 0.1)] = [150, 175, None]  # BN's best lr at batch 32 now has a censored seed
    steps[("batch", 32, 0.3)] = [160, 180, None]
    res = run_claim("C4", tmp_path, c4_records(steps))
    line = next(d for d in res.details if d.startswith("batch 32"))
    assert "an upper bound (BN censored)" in line and line.endswith(INCONCLUSIVE), line
    assert res.verdict == INCONCLUSIVE


def test_c4_runs_stopped_at_the_target_read_as_run_to_the_budget(tmp_path):
    """probes.stop_at: a pack stops once all its runs reached the target; C4 reads the same steps."""
    def stopped(r: dict, stop_at: float, at: int) -> dict:
        r["probes"].update(stop_at=stop_at, stopped_at_step=at,
                           series=[e for e in r["probes"]["series"] if e["step"] <= at])
        return r

    full = run_claim("C4", tmp_path / "full", c4_records(C4_STEPS))
    cut = [stopped(r, TARGET_VAL_ACC, 250) if r["config"]["model"]["norm"] == "batch" else r
           for r in c4_records(C4_STEPS)]
    res = run_claim("C4", tmp_path / "cut", cut)
    assert (res.verdict, res.value, res.low, res.high) == (full.verdict, full.value, full.low, full.high)
    # Stopped below the target before reaching it: no step count and not censored either; left out, and said.
    short = c4_records(C4_STEPS) + [stopped(c4_run("none", 9, 32, 0.1, None), 0.9, 500)]
    res = run_claim("C4", tmp_path / "short", short)
    assert (res.value, res.low, res.high) == (full.value, full.low, full.high)
    assert any(d.startswith("1 run(s) left out: stopped (probes.stop_at) below the 94% target") for d in res.details)


# ------------------------------------------------------------------ C12
def c12_records(arms: dict) -> list[dict]:
    recs = []
    for norm, per_seed in arms.items():
        for s, (tr, te) in enumerate(per_seed):
            hist = [{"epoch": e, "step": 100 * e, "val_acc": te, "test_acc": te - 0.01 * (3 - e),
                     "train_acc": tr - 0.02 * (3 - e), "train_loss": 0.1, "epoch_seconds": 1.0,
                     "samples_per_second": 6400.0, "eval_seconds": 0.1, "pack_size": 1} for e in (1, 2, 3)]
            recs.append(record("regularization", norm, s, test=te, val=te, history=hist))
    recs.append(record("regularization", "batch", 7, status="diverged"))
    return recs


WIDE = [(1.000, 0.970), (0.999, 0.972), (1.000, 0.971)]  # (final train, test accuracy) per seed
NARROW = [(1.000, 0.980), (0.999, 0.980), (0.998, 0.981)]


@pytest.mark.parametrize("direction", [1, -1, 0])
def test_c12_gap_when_saturated(tmp_path, direction):
    arms = {1: {"none": WIDE, "batch": NARROW}, -1: {"none": NARROW, "batch": WIDE},
            0: {"none": [(0.999, 0.975), (1.0, 0.980), (0.998, 0.972)],
                "batch": [(0.999, 0.976), (1.0, 0.977), (0.998, 0.979)]}}[direction]
    res = run_claim("C12", tmp_path, c12_records(arms))
    assert res.verdict == VERDICTS[direction], res
    gap = {n: [100 * (tr - te) for tr, te in v] for n, v in arms.items()}
    d = welch_difference(gap["none"], gap["batch"])
    assert (res.value, res.low, res.high) == pytest.approx((d.diff, d.low, d.high))
    assert "saturated in both arms" in res.evidence
    assert any("1 run(s) not completed" in line for line in res.details)
    if direction == 1:
        assert_png(tmp_path, res)


def test_c12_unsaturated_training_is_inconclusive(tmp_path):
    assert SATURATED == 0.995
    short = [(0.990, 0.960), (0.991, 0.961), (0.990, 0.962)]  # no norm still under-fits: a gap clear of BN's
    res = run_claim("C12", tmp_path, c12_records({"none": short, "batch": NARROW}))
    assert res.low > 0  # the interval alone would read 'supported'
    assert res.verdict == INCONCLUSIVE
    assert "Not saturated: no norm's mean final training accuracy is 99.03%" in res.evidence
    assert "it would read 'supported'" in res.evidence


def test_c12_without_train_acc_is_inconclusive(tmp_path):
    recs = [record("regularization", n, s) for n in ("none", "batch") for s in range(2)]
    res = run_claim("C12", tmp_path, recs)
    assert res.verdict == INCONCLUSIVE and "train_acc" in res.evidence


# ------------------------------------------------------------------ C13
def test_newcombe_interval_matches_the_paper():
    # Newcombe 1998 (Stat Med 17:873), method 10 on 56/70 vs 48/80: 0.0524 to 0.3339
    d = share_difference(56, 70, 48, 80)
    assert d.diff == pytest.approx(20.0)
    assert (d.low, d.high) == pytest.approx((5.24, 33.39), abs=0.01)
    lo, hi = wilson(0, 8)  # defined at 0%, where a Wald interval collapses to a point
    assert lo == 0.0 and hi == pytest.approx(0.3244, abs=1e-4)
    assert math.isnan(share_difference(1, 1, 0, 2).low)  # one run: no interval


def c13_records(arms: dict) -> list[dict]:
    recs = []
    for norm, table in arms.items():
        for b, per_seed in table.items():
            for s, v in enumerate(per_seed):
                if v is None:  # diverged: counts at chance, never holds
                    recs.append(record("linear_scaling", norm, s, batch=b, lr=0.01 * b / 64, status="diverged"))
                else:
                    recs.append(record("linear_scaling", norm, s, batch=b, lr=0.01 * b / 64, val=v))
    return recs


HOLDS = {64: [0.970, 0.972, 0.974, 0.971, 0.973, 0.970, 0.972, 0.974],
         1024: [0.969, 0.971, 0.975, 0.970, 0.972, 0.968, 0.973, 0.971],
         4096: [0.968, 0.965, 0.970, 0.969, 0.966, 0.972, 0.967, 0.971]}
# bimodal: at 4096 half the seeds train, half stall at chance or diverge (a Welch interval would be ~+-40 points)
BIMODAL = {64: [0.920, 0.918, 0.922, 0.921, 0.919, 0.920, 0.923, 0.917],
           1024: [0.915, 0.919, 0.880, 0.921, 0.918, 0.916, 0.920, 0.917],
           4096: [0.915, 0.113, 0.917, None, 0.914, 0.101, 0.916, 0.114]}


def test_c13_bimodal_no_norm_counted_as_shares(tmp_path):
    res = run_claim("C13", tmp_path, c13_records({"batch": HOLDS, "none": BIMODAL}))
    d = share_difference(8, 8, 4, 8)
    assert res.verdict == SUPPORTED, res
    assert (res.value, res.low, res.high) == pytest.approx((50.0, d.low, d.high))
    assert res.low > 0 and res.unit == "points" and res.n == "8 runs per arm at the largest batch"
    assert "At batch 4096, the largest of the preset" in res.evidence and "8 of 8 BN runs and 4 of 8" in res.evidence
    line = next(x for x in res.details if x.startswith("batch 1024"))
    assert "BN 8 of 8 runs hold, no norm 7 of 8" in line  # 0.880 is more than 1 point below 0.920
    assert any(x.startswith("no norm:") and "1 diverged run counted at chance" in x for x in res.details)
    assert HOLD_POINTS == 1.0
    assert_png(tmp_path, res)


def test_c13_says_the_budget_and_warm_up_it_read(tmp_path):
    """Goyal et al.'s rule includes a gradual warm-up: the row says whether the runs had one (record "epochs": 1)."""
    recs = c13_records({"batch": HOLDS, "none": BIMODAL})
    res = run_claim("C13", tmp_path / "cold", recs)
    assert res.evidence.startswith("Trained 1 epoch at lr = 0.01 x B/64, without warm-up.")
    for r in recs:
        r["config"].update(warmup_epochs=2.0, warmup_lr=0.01)
    res = run_claim("C13", tmp_path / "warm", recs)
    assert res.evidence.startswith("Trained 1 epoch at lr = 0.01 x B/64, with Goyal et al.'s gradual warm-up: the "
                                   "lr rises linearly from 0.01 over the first 2 epochs")
    assert res.verdict == SUPPORTED


def test_c13_other_directions(tmp_path):
    res = run_claim("C13", tmp_path / "rev", c13_records({"batch": BIMODAL, "none": HOLDS}))
    assert res.verdict == CONTRADICTED
    res = run_claim("C13", tmp_path / "both", c13_records({"batch": HOLDS, "none": HOLDS}))
    assert res.verdict == INCONCLUSIVE and res.value == pytest.approx(0.0)


# ------------------------------------------------------------------ C14
def cost_of(b: int, seed: int, train_pct: float, infer_pct: float, process: str = "p") -> dict:
    """A study.measure.cost measurement: no norm's medians and BN's at the given relative cost."""
    base = {"train": 1e-4 * b, "infer": 3e-5 * b}
    rel = {"train": train_pct / 100, "infer": infer_pct / 100}
    out = {"version": 1, "measured_at": f"2026-01-01T00:00:{seed:02d}+00:00", "process": process, "batch_size": b,
           "repeats": 60, "threads": 1, "device": "cpu", "cpu_wait": 0.0, "calls_per_block": {"train": 5, "infer": 9}}
    for k in ("train", "infer"):
        out[k] = {"none": {"median_seconds": base[k], "seconds": [base[k]] * 3},
                  "batch": {"median_seconds": base[k] * (1 + rel[k]), "seconds": [base[k] * (1 + rel[k])] * 3},
                  "relative": rel[k], "paired": rel[k]}
    return out


def c14_records(rel: dict) -> list[dict]:
    """rel: batch -> [(train %, infer %) per run]; each run of the preset carries its own measurement."""
    recs = []
    for b, per_run in rel.items():
        for s, (tr, inf) in enumerate(per_run):
            r = record("overhead", ("none", "batch")[s % 2], s, batch=b)
            r["cost"] = cost_of(b, s, tr, inf)
            recs.append(r)
    return recs


C14_SLOWER = {8: [(40, 10), (42, 11), (41, 9), (43, 10)], 512: [(12, 8), (13, 7.5), (11, 8.5), (12.5, 8)]}


def test_c14_interleaved_measurements(tmp_path):
    recs = c14_records(C14_SLOWER)
    recs.append(dict(recs[0], seed=9))  # a pack's members share one measurement: it counts once
    res = run_claim("C14", tmp_path, recs)
    assert res.verdict == SUPPORTED, res
    head = mean_interval([8, 7.5, 8.5, 8])  # batch 512's inference pass: the least favourable setting
    assert (res.value, res.low, res.high) == pytest.approx((head.mean, head.low, head.high))
    assert res.unit == "%" and res.n == "4 measurements per batch size"
    assert "batch 512, inference pass (least favourable of 4 settings" in res.evidence
    assert "interleaved" in res.evidence and "No interleaved" not in res.evidence
    line = next(x for x in res.details if x.startswith("batch 8, training step"))
    assert "+41.5%" in line and line.endswith(SUPPORTED)
    assert_png(tmp_path, res)


def test_c14_interleaved_other_directions(tmp_path):
    faster = {b: [(-tr, -inf) for tr, inf in v] for b, v in C14_SLOWER.items()}
    assert run_claim("C14", tmp_path / "f", c14_records(faster)).verdict == CONTRADICTED
    mixed = {8: [(40, 10), (42, 11), (41, 9), (43, 10)], 512: [(9, 1), (-9, -1), (7, 2), (-7, -2)]}
    res = run_claim("C14", tmp_path / "m", c14_records(mixed))
    assert res.verdict == INCONCLUSIVE
    failed = c14_records(C14_SLOWER)
    for r in failed:  # a measurement that failed is no measurement: the epoch timings stand in
        r["cost"] = {"version": 1, "error": "RuntimeError: boom"}
    assert "No interleaved cost measurement" in run_claim("C14", tmp_path / "e", failed).evidence


def test_cost_measurement_is_recorded_by_the_run(tiny_mnist, tmp_path, monkeypatch):
    import study.measure.cost as cost
    from study.config import compose_config
    from study.runner import run_job

    monkeypatch.setattr(cost, "SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(cost, "WARMUP_SECONDS", 0.01)
    monkeypatch.setattr(cost, "BLOCK_SECONDS", 0.001)
    cfg = compose_config(tiny_overrides(tiny_mnist) + ["experiment=overhead", "batch_size=16", "epochs=1",
                                                      "cost_repeats=4", "model.norm=none"])
    rec = run_job(cfg, tmp_path / "run")
    c = json.loads((tmp_path / "run" / "result.json").read_text())["cost"]
    assert rec["status"] == "completed" and c == json.loads(json.dumps(rec["cost"]))
    assert c["batch_size"] == 16 and c["repeats"] == 4 and c["threads"] == 1 and "error" not in c
    for k in ("train", "infer"):
        assert len(c[k]["none"]["seconds"]) == len(c[k]["batch"]["seconds"]) == 4
        assert c[k]["relative"] == pytest.approx(c[k]["batch"]["median_seconds"] / c[k]["none"]["median_seconds"] - 1)
    # without cost_repeats a run has no `cost`
    rec = run_job(compose_config(tiny_overrides(tiny_mnist) + ["epochs=1"]), tmp_path / "plain")
    assert "cost" not in rec
