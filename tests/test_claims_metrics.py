"""Claims C2, C3, C4, C5, C7, C11, C12, C13, C14 (read from metrics and history) on synthetic records.

Each claim gets runs built in code (written as result.json files and read
back through analysis.collect, as the report reads them) in three versions:
the claim holds ("supported"), the opposite holds ("not supported"), and
the arms overlap ("inconclusive"). The supported version's statistic is
checked against the same numbers computed by hand with analysis.stats; every
claim is also called without its preset (not run) and on runs that all
diverged (inconclusive, never an exception). C4, C12, C13 and C14's
interleaved cost measurement, as redesigned for issue 14, are tested in
test_claims_redesign.py; C14's fallback on per-epoch timings here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.claims import evaluate_claim
from analysis.claims.c07_ghost_batch import _figure as fig_c7
from analysis.claims.plots import curves_figure
from analysis.claims.rule import (CONTRADICTED, ERROR, INCONCLUSIVE, MIXED, NOT_RUN, PREMISE_NOT_MET, SUPPORTED,
                                  ZERO_WIDTH_NOTE, verdict_of)
from analysis.claims.runs import CHANCE_ACC
from analysis.stats import Difference, contrast, mean_interval, welch_difference
from helpers import BROKEN, PROCESS, VERDICTS, assert_png, c2_untested_records, load, record, run_claim


def pts(xs) -> list[float]:
    """Accuracies (fractions) as percentage points, as the claims report them."""
    return [100 * x for x in xs]


METRIC_CLAIMS = ["C2", "C3", "C4", "C5", "C7", "C11", "C12", "C13", "C14"]  # the claims read from metrics


# ------------------------------------------------------------------ C2
C2_LRS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
C2_CASES = {  # (BN's largest stable lr per seed, no norm's)
    1: ([1.0, 1.0, 1.0, 10.0], [0.1, 0.1, 0.1, 0.03]),
    -1: ([0.1, 0.1, 0.1, 0.03], [1.0, 1.0, 1.0, 3.0]),
    0: ([0.3, 1.0, 0.3, 1.0], [1.0, 0.3, 1.0, 0.3]),
}


def c2_records(direction: int) -> list[dict]:
    recs = []
    for norm, limits in zip(("batch", "none"), C2_CASES[direction]):
        for seed, limit in enumerate(limits):
            for lr in C2_LRS:
                if lr == 0.001:  # too slow to learn in the budget: near chance but not unstable
                    recs.append(record("max_lr", norm, seed, lr=lr, val=0.15 + 0.001 * seed))
                elif lr <= limit:
                    recs.append(record("max_lr", norm, seed, lr=lr, val=0.9 + 0.001 * seed + lr / 1000))
                elif lr == C2_LRS[C2_LRS.index(limit) + 1]:  # just past the limit: ends at chance
                    recs.append(record("max_lr", norm, seed, lr=lr, val=0.1 + 0.001 * seed))
                else:
                    recs.append(record("max_lr", norm, seed, lr=lr, status="diverged"))
    return recs


@pytest.mark.parametrize("direction", [1, -1, 0])
def test_c2_largest_stable_lr(tmp_path, direction):
    res = run_claim("C2", tmp_path, c2_records(direction))
    assert res.verdict == VERDICTS[direction], res
    bn, no = C2_CASES[direction]
    m = mean_interval([math.log10(b / n) for b, n in zip(bn, no)])
    assert (res.value, res.low, res.high) == pytest.approx((m.mean, m.low, m.high))
    assert res.unit == "log10" and res.n == "4 paired seeds" and "expected > 0" in res.statistic
    if direction == 1:  # BN stable at lr 10, the top of the grid, for seed 3
        assert "lower bound" in res.evidence and "x no norm's" in res.evidence
        assert_png(tmp_path, res)


@pytest.mark.parametrize("experiment", ["max_lr", None])  # the preset, and a sweep without one standing in
def test_c2_is_never_supported_without_both_arms_at_the_lr_that_failed(tmp_path, experiment):
    res = run_claim("C2", tmp_path, c2_untested_records(experiment))
    assert res.verdict == INCONCLUSIVE, res
    assert "nan" not in res.evidence + " ".join(res.details)
    assert any(d.startswith("batch_size=512: BN: no runs") for d in res.details), res.details


def test_c2_without_a_bn_arm_is_not_supported(tmp_path):
    no_bn = [r for r in c2_untested_records(None) if r["config"]["model"]["norm"] == "none"]
    assert run_claim("C2", tmp_path / "plain", no_bn).verdict == NOT_RUN  # a plain sweep does not test it
    for r in no_bn:
        r["experiment"] = "max_lr"
    assert run_claim("C2", tmp_path / "preset", no_bn).verdict == INCONCLUSIVE


# ------------------------------------------------------------------ C3
def c3_records(direction: int) -> list[dict]:
    fixed_bn, fixed_none = [0.970, 0.975, 0.980], [0.930, 0.935, 0.940]
    tuned_bn, tuned_none = [0.980, 0.982, 0.984], [0.979, 0.981, 0.983]
    if direction == -1:
        tuned_none = [0.900, 0.902, 0.904]
    if direction == 0:
        fixed_none = [0.960, 0.975, 0.990]
    recs = []
    for b in (64, 512):
        for s in range(3):
            recs.append(record("tune_reference", "batch", s, batch=b, test=fixed_bn[s], val=0.97))
            recs.append(record("tune_reference", "none", s, batch=b, test=fixed_none[s], val=0.93))
        for norm, tuned in (("batch", tuned_bn), ("none", tuned_none)):
            # tuning trials on seed 0: lr 0.05 wins on validation accuracy
            recs.append(record("quick/tune", norm, 0, batch=b, lr=0.05, val=0.97, test=0.5, trial=0))
            recs.append(record("quick/tune", norm, 0, batch=b, lr=0.5, val=0.90, test=0.5, trial=1))
            for s in (1, 2, 3):  # confirmation runs at the chosen lr
                recs.append(record("quick/tune", norm, s, batch=b, lr=0.05, val=0.96, test=tuned[s - 1], trial=None))
    return recs, (fixed_bn, fixed_none, tuned_bn, tuned_none)


@pytest.mark.parametrize("direction", [1, -1, 0])
def test_c3_tuned_gap_against_fixed_lr_gap(tmp_path, direction):
    recs, (fb, fn, tb, tn) = c3_records(direction)
    res = run_claim("C3", tmp_path, recs)
    # direction 0: the fixed-lr gap is not clear, so there is no gap to shrink
    assert res.verdict == (PREMISE_NOT_MET if direction == 0 else VERDICTS[direction]), res
    assert res.experiment == "quick/tune, tune_reference"
    if direction != 0:
        fixed, tuned = welch_difference(pts(fb), pts(fn)), welch_difference(pts(tb), pts(tn))
        assert fixed.diff > 0 and tuned.diff > 0  # |gap| = gap here
        c = contrast(fixed, tuned)
        assert (res.value, res.low, res.high) == pytest.approx((c.diff, c.low, c.high))
        assert res.unit == "points" and len([d for d in res.details if d.startswith("batch")]) == 2
    else:
        assert "no gap to shrink" in res.evidence and any("not counted" in d for d in res.details)
    assert_png(tmp_path, res)


# ------------------------------------------------------------------ C5
def c5_records(direction: int, linear_lr: bool = False) -> tuple[list[dict], dict]:
    flat = {4: [0.93, 0.935, 0.94], 16: [0.94, 0.945, 0.95], 64: [0.95, 0.955, 0.96]}
    hurt = {4: [0.78, 0.79, 0.80], 16: [0.90, 0.905, 0.91], 64: [0.95, 0.955, 0.96]}
    noisy = {4: [0.90, 0.95, 0.99], 16: [0.94, 0.945, 0.95], 64: [0.95, 0.955, 0.96]}
    acc = {1: {"batch": hurt, "none": flat, "layer": flat},
           -1: {"batch": flat, "none": flat, "layer": hurt},
           0: {"batch": noisy, "none": noisy, "layer": noisy}}[direction]
    recs = [record("small_batch", norm, s, batch=b, test=v[s], val=v[s] - 0.001,
                   lr=0.01 * b / 64 if linear_lr else 0.01)
            for norm, table in acc.items() for b, v in table.items() for s in range(3)]
    return recs, acc


@pytest.mark.parametrize("direction", [1, -1, 0])
def test_c5_small_batch(tmp_path, direction):
    recs, acc = c5_records(direction)
    res = evaluate_claim("C5", load(tmp_path, recs), tmp_path / "report")
    assert BROKEN not in res.evidence
    assert res.verdict == VERDICTS[direction], res
    err = lambda xs: [100 * (1 - x) for x in xs]  # noqa: E731
    rise = {n: welch_difference(err(t[4]), err(t[64])) for n, t in acc.items()}
    worst = max((n for n in rise if n != "batch"), key=lambda n: rise[n].diff)
    c = contrast(rise["batch"], rise[worst])
    assert (res.value, res.low, res.high) == pytest.approx((c.diff, c.low, c.high))
    if direction == 1:
        assert any("test error (%) by batch size" in d for d in res.details)
        assert_png(tmp_path, res)
    # Where the rise starts: the same contrast at every batch below the reference, batch 4's the headline's.
    (by_batch,) = [d for d in res.details if d.startswith("BN's rise minus the largest other rise")]
    assert f"{c.diff:+.2f}" in by_batch.split("at batch 4")[0] and "at batch 16" in by_batch
    assert "lr fixed at 0.01" in res.evidence and "step-count confound" in res.evidence


def test_c5_says_the_lr_was_scaled_with_the_batch(tmp_path):
    recs, _ = c5_records(1, linear_lr=True)
    res = evaluate_claim("C5", load(tmp_path, recs), tmp_path / "report")
    assert res.evidence.startswith("lr scaled with the batch size (lr = 0.01 x B/64: equal lr x steps at every")
    assert "lr: 0.000625 at batch 4; 0.0025 at batch 16; 0.01 at batch 64" in res.details
    for r in recs:
        r["config"]["steps"] = 2000  # a step budget (the quick preset's): lr x steps then differs by batch
    res = evaluate_claim("C5", load(tmp_path / "steps", recs), tmp_path / "report-steps")
    assert "at a budget of 2000 steps, so not equal lr x steps" in res.evidence


def test_c5_diverged_run_counts_at_chance(tmp_path):
    recs, acc = c5_records(1)
    recs.append(record("small_batch", "batch", 3, batch=4, status="diverged"))
    res = run_claim("C5", tmp_path, recs)
    err = lambda xs: [100 * (1 - x) for x in xs]  # noqa: E731
    bn = welch_difference(err([*acc["batch"][4], CHANCE_ACC]), err(acc["batch"][64]))
    assert any(d.startswith("BN:") and f"{bn.diff:+.2f}" in d and "1 diverged run counted at chance" in d
               for d in res.details)


def test_c5_reads_the_conv_net_variant_where_the_mlp_preset_did_not_run(tmp_path):
    """A report of experiment=cnn_small_batch gives C5's verdict on the conv net, said so; next to the MLP
    preset, the MLP's runs are read (the suite's C5 is the MLP's)."""
    recs, acc = c5_records(1)
    conv = [{**r, "experiment": "cnn_small_batch", "config": {**r["config"], "lr": 0.02,
                                                                 "model": {**r["config"]["model"], "family": "cnn"}}}
            for r in c5_records(-1)[0]]
    mlp = run_claim("C5", tmp_path / "mlp", recs)
    res = run_claim("C5", tmp_path / "conv", conv)
    assert res.verdict == CONTRADICTED and res.experiment == "cnn_small_batch"
    assert res.evidence.startswith("On the conv net (model=cnn): ") and not mlp.evidence.startswith("On the conv")
    err = lambda xs: [100 * (1 - x) for x in xs]  # noqa: E731
    flat = c5_records(-1)[1]
    rise = {n: welch_difference(err(t[4]), err(t[64])) for n, t in flat.items()}
    worst = max((n for n in rise if n != "batch"), key=lambda n: rise[n].diff)
    assert res.value == pytest.approx(contrast(rise["batch"], rise[worst]).diff)
    both = run_claim("C5", tmp_path / "both", recs + conv)
    assert (both.verdict, both.value, both.experiment) == (mlp.verdict, mlp.value, "small_batch")


def test_c3_on_the_conv_net_names_the_conv_presets_it_needs(tmp_path):
    recs = [record("cnn_tune", n, 0, lr=lr, model={"family": "cnn"}) for n in ("none", "batch") for lr in (0.01, 0.1)]
    res = run_claim("C3", tmp_path, recs)
    assert res.verdict == NOT_RUN and res.experiment == "cnn_tune, cnn"
    assert "experiment=cnn_tune; python study/run.py -m experiment=cnn" in res.evidence


# ------------------------------------------------------------------ C7
def c7_records(direction: int) -> tuple[list[dict], dict]:
    plain512, bn64 = [0.950, 0.952, 0.954], [0.970, 0.972, 0.974]
    ghosts = {1: {32: [0.965, 0.967, 0.969], 64: [0.960, 0.962, 0.964]},
              -1: {32: [0.940, 0.942, 0.944], 64: [0.930, 0.932, 0.934]},
              0: {32: [0.965, 0.967, 0.969], 64: [0.930, 0.932, 0.934]}}[direction]
    recs = []
    for s in range(3):
        recs.append(record("ghost", "ghost", s, batch=512, lr=0.08, model={"ghost_size": 512}, test=plain512[s]))
        for g, v in ghosts.items():
            recs.append(record("ghost", "ghost", s, batch=512, lr=0.08, model={"ghost_size": g}, test=v[s]))
        # at batch 64 a ghost size of 64 or 512 is plain BN (the same model: counted once per seed)
        recs.append(record("ghost", "ghost", s, batch=64, model={"ghost_size": 64}, test=bn64[s]))
        recs.append(record("ghost", "ghost", s, batch=64, model={"ghost_size": 512}, test=bn64[s], val=0.9))
        recs.append(record("ghost", "ghost", s, batch=64, model={"ghost_size": 32}, test=0.5))
    return recs, {"plain": plain512, "bn64": bn64, **ghosts}


@pytest.mark.parametrize("direction", [1, -1, 0])
def test_c7_ghost(tmp_path, direction):
    recs, acc = c7_records(direction)
    res = run_claim("C7", tmp_path, recs)
    assert res.verdict == {1: SUPPORTED, -1: CONTRADICTED, 0: MIXED}[direction], res  # 0: ghost 32 up, 64 down
    d = {g: welch_difference(pts(acc[g]), pts(acc["plain"])) for g in (32, 64)}
    head = min(d.values(), key=lambda x: x.low)
    assert (res.value, res.low, res.high) == pytest.approx((head.diff, head.low, head.high))
    assert res.n == "3 seeds per arm"  # BN@64 counted once per seed
    if direction == 1:
        # ghost 64 sits half way: (96.2 - 95.2) / (97.2 - 95.2)
        assert any(l.startswith("ghost size 64") and "recovers 50% of the gap" in l for l in res.details)
        assert any(l.startswith("BN at batch 64") and "(n=3)" in l for l in res.details)
        assert_png(tmp_path, res)


def test_c7_without_a_small_batch_gap_has_no_premise(tmp_path):
    """Plain BN at batch 64 no better than at 512 (within the margin): nothing for ghost BN to recover."""
    recs, _ = c7_records(1)
    for r in recs:
        if r["config"]["batch_size"] == 64:
            r["final"]["test_acc"] = 0.951 + r["seed"] / 1000
            r["history"][-1]["test_acc"] = r["final"]["test_acc"]
    res = run_claim("C7", tmp_path, recs)
    assert res.verdict == PREMISE_NOT_MET, res
    assert "No small-batch result to recover" in res.evidence and "ghost size 64 minus plain BN" in res.evidence
    assert res.value is not None  # the ghost difference is still shown, for the record


# ------------------------------------------------------------------ C11
def c11_records(direction: int) -> tuple[list[dict], dict]:
    bn, none = {1: ([0.980, 0.981, 0.982], [0.976, 0.977, 0.978]),
                -1: ([0.970, 0.971, 0.972], [0.976, 0.977, 0.978]),
                0: ([0.970, 0.980, 0.990], [0.975, 0.980, 0.985])}[direction]
    recs = []
    for s in range(3):
        for norm, v in (("batch", bn), ("none", none)):
            series = [{"step": st, "val_acc": v[s] * st / 3000} for st in range(0, 3001, 250)]
            recs.append(record("quick/ioffe2015", norm, s, batch=60, steps=3000, test=v[s], val=v[s],
                               model={"activation": "sigmoid", "hidden": [100, 100, 100]},
                               probes={"kinds": ["val_acc"], "every": 250, "seconds": 1.0, "series": series,
                                       "final": {}}))
    relu = {"batch": [0.974, 0.975, 0.976], "none": [0.930, 0.931, 0.932]}
    for norm, v in relu.items():  # the same network and budget with ReLU, in the same preset
        recs += [record("quick/ioffe2015", norm, s, batch=60, steps=3000, test=v[s], val=v[s],
                        model={"activation": "relu", "hidden": [100, 100, 100]}) for s in range(3)]
    return recs, {"batch": bn, "none": none, "relu": relu}


@pytest.mark.parametrize("direction", [1, -1, 0])
def test_c11_sigmoid_network(tmp_path, direction):
    recs, acc = c11_records(direction)
    res = run_claim("C11", tmp_path, recs)
    assert res.verdict == VERDICTS[direction], res
    d = welch_difference(pts(acc["batch"]), pts(acc["none"]))
    assert (res.value, res.low, res.high) == pytest.approx((d.diff, d.low, d.high))
    relu = welch_difference(pts(acc["relu"]["batch"]), pts(acc["relu"]["none"]))
    line = next(l for l in res.details if l.startswith("ReLU"))
    assert f"{relu.diff:+.2f}" in line and "smaller with sigmoid" in line
    assert any("0.980 with BN vs 0.977" in l for l in res.details)
    assert "val_acc probe" in res.evidence
    if direction == 1:
        assert res.experiment == "quick/ioffe2015"
        assert_png(tmp_path, res)


def test_c11_without_relu_runs_still_answers(tmp_path):
    recs, _ = c11_records(1)
    res = run_claim("C11", tmp_path, [r for r in recs if r["config"]["model"]["activation"] != "relu"])
    assert res.verdict == SUPPORTED and any("no ReLU comparison" in l for l in res.details)


# ------------------------------------------------------------------ C14 (records without a cost measurement)
def c14_records(direction: int) -> tuple[list[dict], dict]:
    steps = {64: 100, 512: 20}
    # seconds per epoch after the warm-up epoch, per seed (two timed epochs each)
    base = {64: [1.00, 1.02, 0.98], 512: [0.50, 0.51, 0.49]}
    factor = {1: 1.2, -1: 0.8, 0: 1.0}[direction]
    jitter = {1: [0, 0, 0], -1: [0, 0, 0], 0: [0.1, -0.1, 0.0]}[direction]
    secs = {"none": base, "batch": {b: [v * factor + j for v, j in zip(vs, jitter)] for b, vs in base.items()}}
    recs = []
    for norm, table in secs.items():
        for b, per_seed in table.items():
            for s, sec in enumerate(per_seed):
                hist = [{"epoch": e, "step": steps[b] * e, "val_acc": 0.9, "test_acc": 0.9, "train_loss": 0.1,
                         "epoch_seconds": (5.0 if e == 1 else sec), "samples_per_second": 1.0,
                         "eval_seconds": (1.0 if e == 1 else 0.1 * sec), "pack_size": 1} for e in (1, 2, 3)]
                recs.append(record("overhead", norm, s, batch=b, val=0.9 + 0.001 * s, history=hist))
    # a packed run's epochs are timed together with its pack: left out
    hist = [{"epoch": e, "step": 100 * e, "val_acc": 0.9, "test_acc": 0.9, "epoch_seconds": 50.0,
             "samples_per_second": 1.0, "eval_seconds": 5.0, "pack_size": 3} for e in (1, 2)]
    recs.append(record("overhead", "batch", 9, batch=64, history=hist))
    return recs, {n: {b: [v / steps[b] for v in vs] for b, vs in t.items()} for n, t in secs.items()}


@pytest.mark.parametrize("direction", [1, -1, 0])
def test_c14_time_per_step(tmp_path, direction):
    recs, per_step = c14_records(direction)
    res = run_claim("C14", tmp_path, recs)
    assert res.verdict == VERDICTS[direction], res
    rel = {}
    for b in (64, 512):
        d = welch_difference(per_step["batch"][b], per_step["none"][b])
        ref = float(np.mean(per_step["none"][b]))
        rel[b] = (100 * d.diff / ref, 100 * d.low / ref, 100 * d.high / ref)
    head = min(rel.values(), key=lambda r: r[1])
    assert (res.value, res.low, res.high) == pytest.approx(head)
    assert res.unit == "%" and any("1 packed run" in l for l in res.details)
    if direction == 1:
        assert res.value == pytest.approx(20.0)
        assert any(l.startswith("batch 64") and "inference" in l and "+20.0%" in l.split("inference")[1]
                   for l in res.details)
        assert_png(tmp_path, res)


def test_c14_compares_only_timings_of_one_process(tmp_path):
    """A resumed sweep: BN at batch 64 timed by the stopped sweep, no norm by the rerun (another process): not
    comparable, never a number; at batch 512 the rerun timed both arms: compared, and only on its runs."""
    recs, per_step = c14_records(1)
    rerun = "test:200:2026-01-02T00:00:00+00:00"
    for r in recs:
        b, norm, seed = r["config"]["batch_size"], r["config"]["model"]["norm"], r["seed"]
        if (b == 64 and norm == "none") or (b == 512 and seed > 0):
            r["env"]["process"] = rerun
    recs.append(dict(recs[0], seed=7, env=dict(recs[0]["env"], process=None)))  # an older record: no process
    res = run_claim("C14", tmp_path, recs)
    d = welch_difference(per_step["batch"][512][1:], per_step["none"][512][1:])
    ref = float(np.mean(per_step["none"][512][1:]))
    assert (res.value, res.low, res.high) == pytest.approx((100 * d.diff / ref, 100 * d.low / ref, 100 * d.high / ref))
    assert res.n == "2 seeds per arm"
    assert any(l.startswith("batch 64: not comparable") for l in res.details), res.details
    assert any(l.startswith("batch 512") and "2 run(s) timed in other processes left out" in l for l in res.details)
    assert "not comparable, left out: batch 64" in res.evidence
    # no process timed both arms anywhere: inconclusive, and says why, with no number
    for r in recs:
        r["env"]["process"] = rerun if r["config"]["model"]["norm"] == "none" else PROCESS
    res = run_claim("C14", tmp_path / "apart", recs)
    assert res.verdict == INCONCLUSIVE and res.value is None
    assert res.evidence.startswith("not comparable at every batch size (batch 64, batch 512)")


# ------------------------------------------------------------------ C19
C19_CASES = {  # test accuracy per seed: (none standard, none notebook, BN standard, BN notebook)
    1: ([0.950, 0.952, 0.954], [0.900, 0.905, 0.910], [0.970, 0.972, 0.974], [0.968, 0.970, 0.973]),
    -1: ([0.950, 0.952, 0.954], [0.949, 0.951, 0.954], [0.970, 0.972, 0.974], [0.920, 0.925, 0.930]),
    0: ([0.950, 0.952, 0.954], [0.930, 0.935, 0.940], [0.970, 0.972, 0.974], [0.950, 0.954, 0.959]),
}


def scaled_record(norm: str, seed: int, scaling: str | None, test: float) -> dict:
    """An input_scaling run (the notebook's setup, no validation split); scaling None: a record from before
    data.normalize existed (it trained with standard scaling)."""
    r = record("input_scaling", norm, seed, val=None, test=test)
    r["final"].update(val_acc=None, val_loss=None, test_acc=test)
    r["history"][0].update(val_acc=None, val_loss=None)
    r["data"] = {"n_train": 60000, "n_val": 0, "n_test": 10000, "val_size": 0}
    if scaling is not None:
        r["config"]["data"] = {"normalize": scaling, "val_size": 0}
        r["data"]["normalize"] = scaling
    return r


def c19_records(direction: int, old_standard: bool = False) -> list[dict]:
    none_std, none_nb, bn_std, bn_nb = C19_CASES[direction]
    return [scaled_record(norm, s, None if old_standard and scaling == "standard" else scaling, v[s])
            for norm, pair in (("none", (none_std, none_nb)), ("batch", (bn_std, bn_nb)))
            for scaling, v in zip(("standard", "notebook"), pair) for s in range(3)]


@pytest.mark.parametrize("direction", [1, -1, 0])
def test_c19_input_scaling(tmp_path, direction):
    res = run_claim("C19", tmp_path, c19_records(direction))
    assert res.verdict == VERDICTS[direction], res
    none_std, none_nb, bn_std, bn_nb = C19_CASES[direction]
    moves_none, moves_bn = welch_difference(pts(none_std), pts(none_nb)), welch_difference(pts(bn_std), pts(bn_nb))
    c = contrast(moves_none, moves_bn)
    assert (res.value, res.low, res.high) == pytest.approx((c.diff, c.low, c.high))
    # the same number as the BN gap under the notebook's scaling minus the gap under standard scaling
    assert c.diff == pytest.approx(welch_difference(pts(bn_nb), pts(none_nb)).diff
                                   - welch_difference(pts(bn_std), pts(none_std)).diff)
    assert res.evidence.startswith(f"No norm moves by {moves_none.diff:+.2f} points")
    assert f"BN by {moves_bn.diff:+.2f} points" in res.evidence
    assert res.unit == "points" and res.n == "3 seeds per arm and scaling (smallest)"
    assert "expected > 0" in res.statistic
    if direction == 1:
        assert_png(tmp_path, res)


def test_c19_reads_records_without_data_normalize_as_standard(tmp_path):
    res = run_claim("C19", tmp_path, c19_records(1, old_standard=True))
    assert res.verdict == SUPPORTED
    standard_only = [r for r in c19_records(1) if r["config"]["data"]["normalize"] == "standard"]
    res = run_claim("C19", tmp_path / "one", standard_only)
    assert res.verdict == INCONCLUSIVE and "no runs of no norm with data.normalize=notebook" in res.evidence
    assert evaluate_claim("C19", {}, tmp_path).verdict == NOT_RUN


def test_notebook_runs_without_a_validation_split_answer_c1(tmp_path):
    """data.val_size=0 (experiment=notebook trains on all 60,000 images): val_acc is null in final and history.
    C1, which reads the notebook runs, reads test accuracy and neither crashes nor drops those runs."""
    def no_val(r):
        r["final"].update(val_acc=None, val_loss=None)
        for h in r["history"]:
            h.update(val_acc=None, val_loss=None)
        return r

    c1 = [no_val(record("notebook", norm, s, batch=b, test=acc + 0.001 * s))
          for b, gap in ((64, 0.01), (512, 0.05)) for norm, acc in (("none", 0.90), ("batch", 0.90 + gap))
          for s in range(3)]
    res = run_claim("C1", tmp_path / "c1", c1)
    assert res.verdict == SUPPORTED and res.value == pytest.approx(4.0) and "n=" not in res.n


# ------------------------------------------------------------------ not run, degenerate input
@pytest.mark.parametrize("claim", METRIC_CLAIMS)
def test_not_run_without_its_preset(tmp_path, claim):
    recs = [record("deep", n, s) for n in ("none", "batch") for s in range(2)]
    res = evaluate_claim(claim, load(tmp_path, recs), tmp_path / "report")
    assert res.verdict == NOT_RUN and res.claim == claim


PRESETS_ALL = ["max_lr", "tune", "tune_reference", "notebook", "steps_to_target", "small_batch", "ghost", "ioffe2015",
               "regularization", "linear_scaling", "overhead"]
PRESETS = {"C2": ["max_lr"], "C3": ["tune", "tune_reference"], "C4": ["steps_to_target"], "C5": ["small_batch"],
           "C7": ["ghost"], "C11": ["ioffe2015"], "C12": ["regularization"], "C13": ["linear_scaling"],
           "C14": ["overhead"]}


def anchor(preset: str) -> dict:
    """One completed GroupNorm run: summary.analyze needs some final metric in a preset (it raises when
    every run lacks val_acc: the column is dropped as all-null), and no claim here reads GroupNorm."""
    return record(preset, "group", 5, batch=64, val=0.9)


def distinct(recs: list[dict]) -> list[dict]:
    """Records of two presets that are otherwise equal are one run to collect (run_identity): tell them apart."""
    for r in recs:
        r["config"]["epochs"] = sorted(PRESETS_ALL).index(r["experiment"]) + 1
    return recs


@pytest.mark.parametrize("claim", METRIC_CLAIMS)
def test_every_run_diverged_is_inconclusive(tmp_path, claim):
    recs = [record(p, n, s, batch=b, lr=lr, status="diverged", model={"ghost_size": 512})
            for p in PRESETS[claim] for n in ("none", "batch") for s in range(2) for b in (64, 512)
            for lr in (0.01, 0.1)]
    recs = distinct(recs + [anchor(p) for p in PRESETS[claim]])
    res = evaluate_claim(claim, load(tmp_path, recs), tmp_path / "report")
    assert res.verdict == INCONCLUSIVE and res.evidence and BROKEN not in res.evidence, res


@pytest.mark.parametrize("claim", METRIC_CLAIMS)
def test_one_arm_with_missing_metrics_is_inconclusive(tmp_path, claim):
    recs = [record(p, "batch", s, batch=64, val=None, history=[], model={"ghost_size": 32})
            for p in PRESETS[claim] for s in range(2)]
    for r in recs:
        r["final"] = {}
    recs = distinct(recs + [anchor(p) for p in PRESETS[claim]])
    res = evaluate_claim(claim, load(tmp_path, recs), tmp_path / "report")
    assert res.verdict == INCONCLUSIVE and BROKEN not in res.evidence, res


def test_a_claim_that_raises_says_so(tmp_path, monkeypatch):
    import analysis.claims.c02_stable_lr as c2

    exps = load(tmp_path, c2_records(1))
    monkeypatch.setattr(c2, "_largest_stable", lambda states: 1 / 0)
    res = evaluate_claim("C2", exps, tmp_path / "report")
    assert res.verdict == ERROR and "ZeroDivisionError" in res.evidence and "not a verdict" in res.evidence


# ------------------------------------------------------------------ review fixes
def test_identical_seeds_give_a_zero_width_interval_that_is_never_supported(tmp_path):
    # As in a real quick run: both BN seeds at 0.9181 test accuracy, both no-norm seeds at 0.1135 (one class
    # predicted). Welch's interval has zero width; it must not read as 'supported'.
    recs = [record("ioffe2015", norm, s, batch=60, test=v, val=v + 0.001 * s,
                   model={"activation": "sigmoid", "hidden": [100, 100, 100]})
            for norm, v in (("batch", 0.9181), ("none", 0.1135)) for s in range(2)]
    res = run_claim("C11", tmp_path, recs)
    assert res.low == pytest.approx(res.high) == pytest.approx(80.46)
    assert res.verdict == INCONCLUSIVE and ZERO_WIDTH_NOTE in res.evidence


def test_c2_same_grid_ratio_for_every_seed_is_inconclusive(tmp_path):
    # on a discrete lr grid every seed can land on the same ratio: a zero-width interval, not certainty
    recs = [r for r in c2_records(1) if r["seed"] < 3]
    res = run_claim("C2", tmp_path, recs)
    assert res.value == pytest.approx(1.0) and res.low == pytest.approx(res.high)
    assert res.verdict == INCONCLUSIVE and ZERO_WIDTH_NOTE in res.evidence


def test_verdict_of_reads_the_rule_except_zero_width():
    assert verdict_of(Difference(1.0, 0.5, 1.5, 3, 3), None) == SUPPORTED
    assert verdict_of(Difference(-1.0, -1.5, -0.5, 3, 3), None) == CONTRADICTED
    assert verdict_of(Difference(-1.0, -1.5, -0.5, 3, 3), None, expect_positive=False) == SUPPORTED
    assert verdict_of(Difference(1.0, 1.0, 1.0, 2, 2), None) == INCONCLUSIVE
    assert verdict_of(Difference(1.0, math.nan, math.nan, 1, 1), None) == INCONCLUSIVE


def test_accuracy_axes_stay_within_0_to_100(tmp_path):
    # two seeds far apart: the t interval (t = 12.7) reaches far below 0% and above 100%
    fig = fig_c7({"BN@512": [30.0, 95.0], "ghost 32@512": [20.0, 90.0]})
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert -5 <= lo and hi <= 105
    assert "95% t interval over seeds" in ax.get_title() and ax.get_ylabel() == "test accuracy (%)"
    fig = curves_figure([("batch", [(0.0, 0.1), (100.0, 0.3)]), ("batch", [(0.0, 0.1), (100.0, 0.99)])],
                      "optimizer steps", "validation accuracy (%)", "t", scale=100)
    lo, hi = fig.axes[0].get_ylim()
    assert -5 <= lo and hi <= 105 and "band: 95% t interval" in fig.axes[0].get_title()


def test_c7_no_recovered_share_of_a_gap_within_noise(tmp_path):
    recs, _ = c7_records(1)
    for r in recs:  # BN@64 now indistinguishable from plain BN@512
        if r["config"]["batch_size"] == 64:
            r["final"]["test_acc"] = r["history"][0]["test_acc"] = [0.950, 0.953, 0.953][r["seed"]]
    res = run_claim("C7", tmp_path, recs)
    assert not any("recovers" in d for d in res.details)
    assert any(d.startswith("BN at batch 64 minus plain BN") and "no share" in d for d in res.details)


def test_c14_evidence_says_slower_or_faster_by_sign(tmp_path):
    recs, _ = c14_records(-1)
    res = run_claim("C14", tmp_path, recs)
    assert res.value < 0 and "longer" not in res.evidence and "positive: BN slower" in res.evidence
