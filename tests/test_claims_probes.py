"""The probe claims (C6, C8, C9, C10, C15) on synthetic records.

Records are written as result.json files and read back through
analysis.collect and split_by_experiment, as the report does. Each claim is
checked against a hand computation of its statistic, in a supported, a not
supported and an inconclusive case, when its preset is absent, and on
degenerate input (no probes, every run diverged, one arm missing, NaNs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import analysis.claims.plots as plots
from analysis.claims import evaluate_claim
from analysis.claims.probe_tables import probe_finals, probe_series
from analysis.claims.rule import CONTRADICTED, INCONCLUSIVE, MIXED, NO_EFFECT, NOT_RUN, SUPPORTED, ZERO_WIDTH_NOTE
from analysis.claims.runs import ExperimentRuns, split_by_experiment
from analysis.collect import collect
from analysis.stats import mean_interval, welch_difference
from helpers import write_runs

SEEDS = (0, 1, 2)
PNG = b"\x89PNG\r\n\x1a\n"


def record(experiment: str, norm: str, seed: int, probes: dict | None, status: str = "completed",
           batch_size: int = 64, lr: float = 0.01, activation: str = "relu", **config) -> dict:
    return {"schema_version": 1, "status": status, "experiment": experiment, "seed": seed,
            "finished_at": "2024-01-01T00:00:00+00:00",
            "config": {"model": {"norm": norm, "activation": activation}, "batch_size": batch_size, "lr": lr,
                       "seed": seed, **config},
            "final": {"train_loss": 0.1, "val_acc": 0.9, "test_acc": 0.9, "val_loss": 0.2, "epoch": 1, "step": 100}
            if status == "completed" else {"train_loss": None, "val_acc": None, "test_acc": None, "val_loss": None,
                                           "epoch": 1, "step": 50},  # as study/train.py
            "history": [{"epoch": 1, "step": 100, "train_loss": 0.1, "val_acc": 0.9, "test_acc": 0.9,
                         "val_loss": 0.2, "epoch_seconds": 1.0, "samples_per_second": 1000.0,
                         "eval_seconds": 0.1, "pack_size": 1}],
            "probes": probes, "env": {"device_name": "cpu", "hostname": "test", "threads": 1, "git_commit": "abc",
                                      "git_dirty": False},
            "data": {"verified": True, "source": "cache", "n_train": 55000, "n_val": 5000, "n_test": 10000},
            "started_at": "2024-01-01T00:00:00+00:00", "wall_seconds": 1.0, "code_version": "test"}


def exps_of(tmp_path: Path, records: list[dict]) -> dict:
    col = collect([write_runs(tmp_path / "runs", records)])
    if (col.runs.status != "completed").all():
        # split_by_experiment's analyze() needs a final metric that some run has; the claims read
        # only the records, so a preset whose runs all diverged is built by hand here.
        name = col.records[0]["experiment"]
        return {name: ExperimentRuns(name=name, quick=False, records=col.records, analysis=None)}
    return split_by_experiment(col)


def assert_png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == PNG


def assert_interval(res, d) -> None:
    assert res.value == pytest.approx(d.diff) and res.low == pytest.approx(d.low)
    assert res.high == pytest.approx(d.high)


def degenerate_records(experiment: str) -> list[list[dict]]:
    """Inputs that must give an inconclusive claim, never an exception."""
    nan_series = {"kinds": [], "every": 10, "series": [{"step": 0}, {"step": 10, "activations": None,
                                                          "grad_norms": [None, None],
                                                          "ics": {"distance": [None, None], "cosine": [None]},
                                                          "landscape": {"beta_smoothness": None}}],
                  "final": {"modes": {"eval_mode_acc": None}, "shift": "odd"}}
    return [
        [record(experiment, "batch", s, None) for s in SEEDS] + [record(experiment, "none", 0, None)],
        [record(experiment, n, s, {"series": [{"step": 0}], "final": {}}, status="diverged")
         for n in ("none", "batch") for s in SEEDS],
        [record(experiment, "none", s, nan_series) for s in SEEDS],
        [record(experiment, "batch", s, nan_series) for s in SEEDS],
    ]


@pytest.mark.parametrize("claim,experiment", [("C6", "shift"), ("C8", "ioffe2015"), ("C9", "ics"),
                                              ("C10", "landscape"), ("C15", "deep")])
def test_degenerate_input_is_inconclusive_and_absent_preset_not_run(tmp_path, claim, experiment):
    def fn(exps, out):
        return evaluate_claim(claim, exps, out)

    assert fn({}, tmp_path).verdict == NOT_RUN
    other = exps_of(tmp_path / "other", [record("notebook", "none", 0, None)])
    assert fn(other, tmp_path).verdict == NOT_RUN
    for i, recs in enumerate(degenerate_records(experiment)):
        res = fn(exps_of(tmp_path / str(i), recs), tmp_path / str(i))
        assert res.verdict == INCONCLUSIVE, (i, res)
        assert res.evidence and "could not be computed" not in res.evidence, (i, res.evidence)
        assert res.claim == claim and res.literature


def test_tidy_tables_flatten_the_probes():
    series = [{"step": 0, "activations": {"layer": 2, "unit": 0, "p15": -1.0, "p50": 0.0, "p85": 1.0},
               "grad_norms": [0.1, 0.2, 0.3], "ics": {"distance": [None, 0.5, 0.6], "cosine": [None, 0.9, 0.8]},
               "landscape": {"scales": [0.5], "losses": [1.0], "loss_range": 0.2, "grad_change": 0.3,
                             "beta_smoothness": 4.0}, "val_acc": 0.5},
              {"step": 50, "activations": {"p15": -2.0, "p50": None, "p85": 2.0}}]
    fin = {"modes": {"eval_mode_acc": 0.9, "train_mode_acc": 0.8, "batch_size": 8},
           "shift": {"brightness": 0.3, "contrast": 0.5, "clean_acc": 0.9, "running_acc": 0.6,
                     "recomputed_acc": None}}
    recs = [record("ics", "batch", 1, {"kinds": ["ics"], "every": 50, "seconds": 2.0, "series": series,
                                       "final": fin}),
            record("ics", "none", 0, None)]
    s = probe_series(recs)
    assert len(s) == 2 and list(s.run) == [0, 0] and list(s.step) == [0, 50]
    row = s.iloc[0]
    assert (row.norm, row.seed, row.batch_size, row.lr) == ("batch", 1, 64, 0.01)
    assert (row.act_p15, row.act_p50, row.act_p85) == (-1.0, 0.0, 1.0)
    assert (row.grad_norm_0, row.grad_norm_2, row.ics_distance_1, row.ics_cosine_2) == (0.1, 0.3, 0.5, 0.8)
    assert "ics_distance_0" not in s and "ics_cosine_0" not in s
    assert (row.loss_range, row.grad_change, row.beta_smoothness, row.val_acc) == (0.2, 0.3, 4.0, 0.5)
    assert math.isnan(s.iloc[1].act_p50) and math.isnan(s.iloc[1].beta_smoothness)
    f = probe_finals(recs)
    assert len(f) == 2
    assert (f.iloc[0].eval_mode_acc, f.iloc[0].train_mode_acc, f.iloc[0].modes_batch_size) == (0.9, 0.8, 8)
    assert (f.iloc[0].clean_acc, f.iloc[0].running_acc) == (0.9, 0.6) and math.isnan(f.iloc[0].recomputed_acc)
    assert f.iloc[0].n_probes == 2 and math.isnan(f.iloc[1].eval_mode_acc)
    assert probe_series([]).empty and "act_p50" in probe_series([])


# ------------------------------------------------------------------ C6
def shift_probes(eval_acc, train_acc, running, recomputed, clean=0.95):
    return {"kinds": ["modes", "shift"], "every": 100, "series": [],
            "final": {"modes": {"eval_mode_acc": eval_acc, "train_mode_acc": train_acc, "batch_size": 64},
                      "shift": {"brightness": 0.3, "contrast": 0.5, "clean_acc": clean, "running_acc": running,
                                "recomputed_acc": recomputed}}}


def c6_records(direction: str) -> tuple[list[dict], dict]:
    """BN: train-mode accuracy below eval mode by `gaps[b][seed]` points; recomputed - running by `gains`."""
    gaps = {2: [10.0, 8.0, 6.0], 512: [1.0, 0.5, 0.0]}
    gains = {2: [3.0, 4.0, 5.0], 512: [1.0, 1.5, 2.0]}
    if direction == "not":
        gaps = {2: gaps[512], 512: gaps[2]}
        gains = {b: [-g for g in v] for b, v in gains.items()}
    if direction == "mixed":  # (a) supported, (b) not: the combined verdict is inconclusive
        gains = {b: [-g for g in v] for b, v in gains.items()}
    recs = []
    for b in (2, 512):
        for s in SEEDS:
            recs.append(record("shift", "batch", s, shift_probes(0.9, 0.9 - gaps[b][s] / 100, 0.6,
                                                                 0.6 + gains[b][s] / 100), batch_size=b, epochs=8))
            recs.append(record("shift", "none", s, shift_probes(0.9, 0.9, 0.7, None), batch_size=b, epochs=8))
    recs.append(record("shift", "none", 3, None, status="diverged", batch_size=512, epochs=8))
    return recs, {"gaps": gaps, "gains": gains}


@pytest.mark.parametrize("direction,verdict", [("up", SUPPORTED), ("not", CONTRADICTED), ("mixed", MIXED)])
def test_c6(tmp_path, direction, verdict):
    recs, truth = c6_records(direction)
    res = evaluate_claim("C6", exps_of(tmp_path, recs), tmp_path)
    assert res.verdict == verdict, res
    assert_interval(res, welch_difference(truth["gaps"][2], truth["gaps"][512]))
    assert res.unit == "points" and "expected > 0" in res.statistic
    gain2 = mean_interval(truth["gains"][2])
    line = next(d for d in res.details if d.startswith("(b) batch 2:"))
    assert f"{gain2.mean:+.2f} [{gain2.low:+.2f}, {gain2.high:+.2f}]" in line
    # accuracy lost to the shift: BN 95 - 60 = 35 points, no norm 95 - 70 = 25
    assert "BN +35.00" in line and "no norm +25.00" in line
    assert "1 diverged (no norm)" in res.evidence
    assert "Read after 8 epochs: the gap's size falls with training" in res.evidence  # its size is the budget's
    assert res.figure == "claim_c6.png"
    assert_png(tmp_path / res.figure)


# ------------------------------------------------------------------ C8
STEPS = list(range(0, 1001, 100))


def act_probes(p50s, half_spread=1.0):
    return {"kinds": ["activations"], "every": 100, "final": {},
            "series": [{"step": st, "activations": {"layer": 2, "unit": 0, "p15": p - half_spread, "p50": p,
                                                    "p85": p + half_spread}} for st, p in zip(STEPS, p50s)]}


def c8_records(direction: str) -> list[dict]:
    drifting = lambda s: [2.0 * st / 1000 + 0.05 * s for st in STEPS]  # noqa: E731
    stable = lambda s: [0.01 * s * (st > 500) for st in STEPS]  # noqa: E731
    arms = {"up": (drifting, stable), "not": (stable, drifting), "mixed": (drifting, drifting)}[direction]
    recs = []
    for s in SEEDS:
        none_p = arms[0](s)
        bn_p = arms[1](s) if direction != "mixed" else [p * (1 + 0.3 * (s - 1)) for p in arms[1](s)]
        recs.append(record("ioffe2015", "none", s, act_probes(none_p), activation="sigmoid"))
        recs.append(record("ioffe2015", "batch", s, act_probes(bn_p), activation="sigmoid"))
    return recs


def hand_drift(p50s, ref=0):
    # reference = the first probe (index 0; the details' late window: index 1, step 100 of 1000); spread
    # p85 - p15 = 2 at the last probe; all three percentiles move by the same amount
    return abs(p50s[-1] - p50s[ref]) / 2.0


@pytest.mark.parametrize("direction,verdict", [("up", SUPPORTED), ("not", CONTRADICTED), ("mixed", INCONCLUSIVE)])
def test_c8(tmp_path, direction, verdict):
    recs = c8_records(direction)
    res = evaluate_claim("C8", exps_of(tmp_path, recs), tmp_path)
    assert res.verdict == verdict, res
    drifts = {n: [hand_drift([a["activations"]["p50"] for a in r["probes"]["series"]])
                  for r in recs if r["config"]["model"]["norm"] == n] for n in ("none", "batch")}
    assert_interval(res, welch_difference(drifts["none"], drifts["batch"]))
    assert res.n == "3 seeds per arm" and "expected > 0" in res.statistic
    late = {n: [hand_drift([a["activations"]["p50"] for a in r["probes"]["series"]], ref=1)
                for r in recs if r["config"]["model"]["norm"] == n] for n in ("none", "batch")}
    line = next(d for d in res.details if d.startswith("from 10% of training on"))
    assert f"{welch_difference(late['none'], late['batch']).diff:+.3f}" in line, line
    assert_png(tmp_path / res.figure)


def test_c8_reads_the_sigmoid_network_only(tmp_path):
    """ioffe2015 also trains a ReLU arm (for C11): C8's drift is the sigmoid network's."""
    recs = c8_records("up")
    relu = [json.loads(json.dumps(r)) for r in c8_records("not")]
    for r in relu:
        r["config"]["model"]["activation"] = "relu"
    res = evaluate_claim("C8", exps_of(tmp_path, recs + relu), tmp_path)
    assert res.verdict == SUPPORTED and res.n == "3 seeds per arm", res


# ------------------------------------------------------------------ C9 / C10 (the same runs)
def ics_probes(cos_last, dist, beta, early_beta=None):
    series = []
    for st in range(0, 201, 50):
        b = early_beta if (early_beta is not None and st <= 50) else beta
        series.append({"step": st, "ics": {"distance": [None, dist, 2 * dist], "cosine": [None, 0.9, cos_last]},
                       "landscape": {"scales": [0.5, 1, 2, 4], "losses": [1, 1, 1, 1], "loss_range": b / 10,
                                     "grad_change": b / 2, "beta_smoothness": b}})
    return {"kinds": ["ics", "landscape"], "every": 50, "series": series, "final": {}}


C9_COS = {"supported": ([0.5, 0.55, 0.6], [0.8, 0.82, 0.84]),  # (BN, no norm) per seed
          "not": ([0.8, 0.82, 0.84], [0.5, 0.55, 0.6]),
          "similar": ([0.5, 0.7, 0.6], [0.6, 0.5, 0.7])}


def ics_records(case: str, experiment: str = "ics") -> list[dict]:
    bn_cos, none_cos = C9_COS[case]
    recs = []
    for s in SEEDS:
        recs.append(record(experiment, "batch", s, ics_probes(bn_cos[s], 0.1 + s, beta=1.0 + s, early_beta=2.0 + s),
                           lr=0.1))
        recs.append(record(experiment, "none", s, ics_probes(none_cos[s], 0.2, beta=10.0 ** (s - 1),
                                                             early_beta=100.0 * (1 + s)), lr=0.1))
    return recs


@pytest.mark.parametrize("case,verdict", [("supported", SUPPORTED), ("not", CONTRADICTED),
                                          ("similar", INCONCLUSIVE)])
def test_c9(tmp_path, case, verdict):
    res = evaluate_claim("C9", exps_of(tmp_path, ics_records(case)), tmp_path)
    assert res.verdict == verdict, res
    bn_cos, none_cos = C9_COS[case]
    assert_interval(res, welch_difference(bn_cos, none_cos))  # one value per run (constant over probes)
    assert {"supported": "more shift with BN", "not": "less shift with BN",
            "similar": "undecided (the interval contains 0"}[case] in res.evidence
    assert any(d.startswith("layer 2 distance") and "not scale-free" in d for d in res.details)
    assert any(d.startswith("layer 1 cosine") for d in res.details)
    assert_png(tmp_path / res.figure)


def test_c10_from_landscape_or_from_ics_runs(tmp_path):
    res = evaluate_claim("C10", exps_of(tmp_path / "a", ics_records("similar", "landscape")), tmp_path / "a")
    # early = steps <= 25% of 200 = steps 0 and 50, where beta is early_beta
    none_early = [math.log10(100.0 * (1 + s)) for s in SEEDS]
    bn_early = [math.log10(2.0 + s) for s in SEEDS]
    assert_interval(res, welch_difference(none_early, bn_early))
    assert res.verdict == SUPPORTED and res.unit == "log10" and res.experiment == "landscape"
    # late = steps >= 150: beta 10^(s-1) without BN vs 1 + s with BN
    late = welch_difference([s - 1.0 for s in SEEDS], [math.log10(1.0 + s) for s in SEEDS])
    assert any(d.startswith("effective beta-smoothness, late") and f"{late.diff:+.2f}" in d for d in res.details)
    assert_png(tmp_path / "a" / res.figure)
    # the landscape preset's runs are the ics preset's: with only those, C10 reads them
    res = evaluate_claim("C10", exps_of(tmp_path / "b", ics_records("similar", "ics")), tmp_path / "b")
    assert res.verdict == SUPPORTED and res.experiment.startswith("ics")


def test_c10_not_supported_and_inconclusive(tmp_path):
    recs = ics_records("similar", "landscape")
    for r in recs:  # swap the arms' landscapes
        r["config"]["model"]["norm"] = {"batch": "none", "none": "batch"}[r["config"]["model"]["norm"]]
    assert evaluate_claim("C10", exps_of(tmp_path / "not", recs), tmp_path / "not").verdict == CONTRADICTED
    recs = ics_records("similar", "landscape")
    for r in recs:  # the same early smoothness in both arms, up to seed noise
        for i, e in enumerate(r["probes"]["series"]):
            arm = r["config"]["model"]["norm"] == "none"
            e["landscape"]["beta_smoothness"] = 1.0 + 0.5 * ((r["seed"] + i + arm) % 3)
    assert evaluate_claim("C10", exps_of(tmp_path / "inc", recs), tmp_path / "inc").verdict == INCONCLUSIVE


# ------------------------------------------------------------------ C15
def grad_probes(decay_per_layer, layers=16):
    series = [{"step": st, "grad_norms": [10.0 ** (-decay_per_layer * j * (1 + st / 1000)) for j in range(layers)]}
              for st in range(0, 501, 50)]
    return {"kinds": ["grad_norms"], "every": 50, "series": series, "final": {}}


def c15_records(decays: dict) -> list[dict]:
    """decays[(activation, norm)] -> per-seed decades lost per layer."""
    return [record("deep", norm, s, grad_probes(decays[(act, norm)][s]), activation=act)
            for (act, norm) in decays for s in SEEDS]


def hand_spread(decay, layers=16):
    # first 10% of 500 steps: steps 0 and 50; spread = 15 layers x decay x (1 + step / 1000)
    return np.mean([(layers - 1) * decay * (1 + st / 1000) for st in (0, 50)])


def test_c15(tmp_path):
    decays = {("sigmoid", "none"): [0.5, 0.6, 0.7], ("sigmoid", "batch"): [0.01, 0.02, 0.03],
              ("relu", "none"): [0.2, 0.25, 0.3], ("relu", "batch"): [0.0, 0.01, 0.02]}
    res = evaluate_claim("C15", exps_of(tmp_path / "a", c15_records(decays)), tmp_path / "a")
    assert res.verdict == SUPPORTED, res
    assert_interval(res, welch_difference([hand_spread(x) for x in decays[("sigmoid", "none")]],
                                          [hand_spread(x) for x in decays[("sigmoid", "batch")]]))
    assert "value shown: sigmoid" in res.statistic and res.unit == "decades"
    assert any(d.startswith("relu:") and "supported" in d for d in res.details)
    assert_png(tmp_path / "a" / res.figure)
    flipped = {(a, n): decays[(a, {"none": "batch", "batch": "none"}[n])] for a, n in decays}
    assert evaluate_claim("C15", exps_of(tmp_path / "b", c15_records(flipped)), tmp_path / "b").verdict == CONTRADICTED
    mixed = {**decays, ("relu", "none"): decays[("relu", "batch")], ("relu", "batch"): decays[("relu", "none")]}
    res = evaluate_claim("C15", exps_of(tmp_path / "c", c15_records(mixed)), tmp_path / "c")
    assert res.verdict == MIXED and "relu contradicted" in res.details[-1]


# ------------------------------------------------------------------ review fixes
def test_identical_seeds_never_make_a_probe_claim_supported(tmp_path):
    # every seed of an arm gives the same spread: Welch's interval has zero width, which is no evidence
    decays = {("sigmoid", "none"): [0.5] * 3, ("sigmoid", "batch"): [0.01] * 3}
    res = evaluate_claim("C15", exps_of(tmp_path, c15_records(decays)), tmp_path)
    assert res.low == pytest.approx(res.high)
    assert res.verdict == INCONCLUSIVE and ZERO_WIDTH_NOTE in res.evidence


def test_c6_accuracy_axes_are_clamped_and_say_what_the_bars_are(tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, claim: figs.append(fig) or "claim_c6.png")
    recs, _ = c6_records("up")
    for r in recs:  # two seeds far apart on the shifted set: a t interval far outside 0-100%
        shift = (r["probes"] or {}).get("final", {}).get("shift")
        if shift and r["seed"] < 2:
            shift["running_acc"] = [0.05, 0.95][r["seed"]]
    recs = [r for r in recs if r["seed"] < 2]
    evaluate_claim("C6", exps_of(tmp_path, recs), tmp_path)
    (fig,) = figs
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        assert -5 <= lo and hi <= 105, (ax.get_title(), lo, hi)
    assert "95% t interval over seeds" in fig._suptitle.get_text()
