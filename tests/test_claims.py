"""The verdict rule, the registry, the notebook's claims and the split by preset (analysis/claims/)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from analysis.claims import BY_ID, CLAIMS, REPLICATION_SEED, evaluate_claims
from analysis.claims.notebook_claims import NOTEBOOK_CLAIMS, notebook_verdicts
from analysis.claims.result import ClaimResult, claims_table
from analysis.claims.rule import (CONTRADICTED, ERROR, INCONCLUSIVE, MIXED, NO_EFFECT, NON_INFERIORITY, NOT_REPLICATED,
                                  NOT_RUN, PREMISE_NOT_MET, SUPPORTED, TRIVIAL, combine, directional)
from analysis.claims.runs import split_by_experiment, subset
from analysis.collect import collect
from helpers import REPO, c2_untested_records, write_runs


@pytest.mark.parametrize("low, high, positive, verdict", [
    (0.1, 0.5, True, SUPPORTED),
    (-0.5, -0.1, True, CONTRADICTED),
    (-0.1, 0.5, True, INCONCLUSIVE),
    (-0.5, -0.1, False, SUPPORTED),  # a claim that expects a negative statistic
    (0.1, 0.5, False, CONTRADICTED),
    (math.nan, math.nan, True, INCONCLUSIVE),  # one seed: no interval
    (0.3, 0.3, True, INCONCLUSIVE),  # every seed the same value: no spread to judge
])
def test_verdict_rule(low: float, high: float, positive: bool, verdict: str) -> None:
    assert directional(low, high, None, positive) == verdict


@pytest.mark.parametrize("low, high, verdict", [
    (-0.3, 0.4, NO_EFFECT),  # inside +-0.5 and containing 0: an answer, not a shrug
    (0.1, 0.4, TRIVIAL),  # clear of zero but inside the margin: real, smaller than any effect that matters
    (-0.4, -0.1, TRIVIAL),  # the same on the other side: trivially small is not "contradicted"
    (-0.3, 0.6, INCONCLUSIVE),  # reaches past the margin: a meaningful effect is still possible
    (0.6, 0.9, SUPPORTED),
    (0.1, 0.9, SUPPORTED),  # clear of 0 on the expected side and not inside the margin (Lakens 2017)
    (-0.9, -0.1, CONTRADICTED),  # clear of 0 on the other side, not inside the margin: never "inconclusive"
    (-0.5, 0.2, INCONCLUSIVE),  # touching the margin is not inside it
])
def test_the_rule_reads_the_interval_against_zero_and_the_margin(low: float, high: float, verdict: str) -> None:
    assert directional(low, high, 0.5) == verdict
    assert directional(-high, -low, 0.5, expect_positive=False) == verdict  # a claim that expects a negative sign
    assert directional(-0.3, 0.4, None) == INCONCLUSIVE  # without a margin nothing is inside it


@pytest.mark.parametrize("low, high, verdict", [
    (-0.3, 0.4, SUPPORTED),  # no worse by more than the margin: "as good as" holds
    (0.6, 0.9, SUPPORTED),  # better also holds
    (-0.9, -0.6, CONTRADICTED),  # worse by more than the margin throughout
    (-0.9, 0.2, INCONCLUSIVE),  # may be worse by more than the margin
    (0.2, 0.2, INCONCLUSIVE),  # zero width: no spread to judge
])
def test_non_inferiority_asks_only_whether_it_is_worse_by_more_than_the_margin(low: float, high: float,
                                                                              verdict: str) -> None:
    assert directional(low, high, 0.5, test=NON_INFERIORITY) == verdict


def test_every_claim_states_its_margin() -> None:
    assert all(c.margin > 0 for c in CLAIMS)


def test_combine_needs_every_setting_to_agree() -> None:
    assert combine([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert combine([CONTRADICTED, CONTRADICTED]) == CONTRADICTED
    assert combine([SUPPORTED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([SUPPORTED, CONTRADICTED]) == MIXED  # two clear answers that differ: neither is the row's
    assert combine([SUPPORTED, TRIVIAL]) == MIXED
    assert combine([SUPPORTED, PREMISE_NOT_MET]) == PREMISE_NOT_MET
    assert combine([SUPPORTED, ERROR]) == ERROR
    assert combine([NOT_RUN, SUPPORTED]) == SUPPORTED  # a row that did not run does not vote
    assert combine([NOT_RUN]) == NOT_RUN
    assert combine([NO_EFFECT, NO_EFFECT]) == NO_EFFECT
    assert combine([NO_EFFECT, INCONCLUSIVE]) == INCONCLUSIVE


def _result(claim: str, verdict: str) -> ClaimResult:
    return ClaimResult(claim=claim, title=BY_ID[claim].title, verdict=verdict, statistic="s", value=1.0,
                       low=0.5, high=1.5, unit="points", n="3 seeds", figure=f"claim_{claim.lower()}.png")


def test_notebook_claims_follow_their_rows() -> None:
    rows = {r["#"]: r for r in notebook_verdicts([
        _result("C8", SUPPORTED), _result("C9", CONTRADICTED), _result("C2", SUPPORTED),
        _result("C5", SUPPORTED), _result("C6", INCONCLUSIVE), _result("C1", CONTRADICTED)])}
    assert len(rows) == len(NOTEBOOK_CLAIMS)
    # C9 ("BN does not reduce ICS") not supported = evidence FOR the notebook's claim 1
    assert rows["1"]["verdict"] == SUPPORTED and "read in reverse" in rows["1"]["from"]
    assert rows["1"]["figures"] == "claim_c8.png, claim_c9.png"
    assert rows["2"]["verdict"] == SUPPORTED and "+1 points [+0.5, +1.5], n = 3 seeds" in rows["2"]["from"]
    assert rows["7"]["verdict"] == INCONCLUSIVE  # C5 supported, C6 inconclusive (C1 is no longer read)
    assert "C1" not in rows["7"]["from"] and "C11" not in rows["3"]["from"]  # claim 3 reads C4 (steps) only
    assert rows["4"]["verdict"] == NOT_RUN  # C12 absent
    assert rows["9"]["verdict"] == NOT_RUN  # C16..C16d absent
    rows = {r["#"]: r for r in notebook_verdicts([_result("C16", CONTRADICTED), _result("C16b", SUPPORTED),
                                                  _result("C16c", SUPPORTED), _result("C16d", SUPPORTED)])}
    # BN fits recurrent models poorly: no accuracy gain (C16 read in reverse), a costlier step,
    # a small-batch discrepancy and LayerNorm as good
    assert rows["9"]["verdict"] == SUPPORTED and "C16 contradicted (read as: the effect is absent)" in rows["9"]["from"]
    # no meaningful (or a trivially small) accuracy gain also says "poorly"
    rows = {r["#"]: r for r in notebook_verdicts([_result("C16", NO_EFFECT), _result("C16b", SUPPORTED),
                                                  _result("C16c", SUPPORTED), _result("C16d", SUPPORTED)])}
    assert rows["9"]["verdict"] == SUPPORTED
    rows = {r["#"]: r for r in notebook_verdicts([_result("C16", TRIVIAL), _result("C16b", SUPPORTED),
                                                  _result("C16c", SUPPORTED), _result("C16d", SUPPORTED)])}
    assert rows["9"]["verdict"] == SUPPORTED
    assert notebook_verdicts([_result("C16", SUPPORTED)])[8]["verdict"] == CONTRADICTED  # BN helps the LSTM


def _mixed_c16(rows: str, permuted: str) -> ClaimResult:
    r = _result("C16", MIXED)
    r.settings = (("rows", "-21 points [-28, -14.1]", rows), ("permuted pixels", "-0.11 points [-0.93, +0.71]",
                                                              permuted))
    return r


def test_a_mixed_row_is_read_per_setting_for_the_notebook_and_shows_every_setting() -> None:
    others = [_result("C16b", SUPPORTED), _result("C16c", SUPPORTED), _result("C16d", SUPPORTED)]
    # BN-LSTM worse on rows, no meaningful effect on permuted pixels: BN helps the LSTM in neither, which is
    # what "BN fits recurrent models poorly" claims; the row as a whole ("mixed") does not say it.
    row = notebook_verdicts([_mixed_c16(CONTRADICTED, NO_EFFECT), *others])[8]
    assert row["verdict"] == SUPPORTED
    assert "C16 mixed (read as: the effect is absent, per setting: supported)" in row["from"]
    # Helping in one pixel order and not in the other stays mixed for the notebook too.
    assert notebook_verdicts([_mixed_c16(SUPPORTED, NO_EFFECT), *others])[8]["verdict"] == MIXED
    # A replication whose settings read otherwise is not settled.
    first = _mixed_c16(CONTRADICTED, NO_EFFECT)
    first.replication = _mixed_c16(SUPPORTED, NO_EFFECT)
    assert notebook_verdicts([first, *others])[8]["verdict"] == NOT_REPLICATED
    cell = claims_table([_mixed_c16(CONTRADICTED, NO_EFFECT)])["measured [95% CI]"].iloc[0]
    assert cell == ("rows: -21 points [-28, -14.1] (contradicted); "
                    "permuted pixels: -0.11 points [-0.93, +0.71] (no meaningful effect)")
    assert claims_table([_result("C16", CONTRADICTED)])["measured [95% CI]"].iloc[0] == "+1 points [+0.5, +1.5]"


def test_a_disagreeing_replication_is_never_settled() -> None:
    first, rep = _result("C12", SUPPORTED), _result("C12", INCONCLUSIVE)
    first.replication = rep
    assert first.settled == NOT_REPLICATED and first.agreement == "no"
    c2 = _result("C2", SUPPORTED)
    c2.replication = _result("C2", SUPPORTED)
    assert c2.settled == SUPPORTED and c2.agreement == "yes"
    rows = {r["#"]: r for r in notebook_verdicts([first, c2])}
    assert rows["4"]["verdict"] == NOT_REPLICATED and rows["2"]["verdict"] == SUPPORTED
    table = claims_table([first, c2]).set_index("claim")
    assert list(table["agree"]) == ["no", "yes"] and list(table["verdict"]) == [NOT_REPLICATED, SUPPORTED]
    assert table["replication [95% CI]"].iloc[0].startswith("inconclusive: +1 points [+0.5, +1.5]")


def test_no_meaningful_effect_in_a_reversed_row_contradicts_the_notebook() -> None:
    rows = {r["#"]: r for r in notebook_verdicts([_result("C8", CONTRADICTED), _result("C9", NO_EFFECT)])}
    assert rows["1"]["verdict"] == CONTRADICTED  # C9: BN's shift no smaller -> claim 1 contradicted


def _record(experiment: str | None, seed: int, norm: str) -> dict:
    return {"schema_version": 1, "status": "completed", "experiment": experiment, "seed": seed,
            "config": {"batch_size": 64, "lr": 0.01, "seed": seed, "model": {"norm": norm}},
            "final": {"train_loss": 0.1, "val_acc": 0.9 + seed / 100, "test_acc": 0.9 + seed / 100,
                      "val_loss": 0.2, "epoch": 1, "step": 10},
            "history": [{"epoch": 1, "step": 10, "train_loss": 0.1, "val_acc": 0.9 + seed / 100,
                         "test_acc": 0.9 + seed / 100, "val_loss": 0.2}],
            "env": {"device_name": "cpu", "threads": 1}, "data": {}}


def test_a_preset_names_only_its_own_tuning_studies(tmp_path: Path) -> None:
    """A suite's collection knows the tune preset's Optuna studies; the other presets' sub-reports
    must not list them in their protocol (they did: every sub-report named the suite's storage)."""
    studies = {"run0": "tune-lr__a", "run1": "tune-lr__b", "run2": None}
    for k, experiment in enumerate(("tune", "tune", "ics")):
        d = tmp_path / f"run{k}"
        d.mkdir()
        (d / "result.json").write_text(json.dumps(_record(experiment, k, "batch")))
    col = collect([tmp_path])
    col.runs["study"] = [studies[Path(str(r)).name] for r in col.runs.run]  # as the tuning sweep's trials carry
    col.tuning_studies = {"sqlite:///s.db": ["tune-lr__a", "tune-lr__b", "tune-lr__c"]}
    tune = [e == "tune" for e in col.runs.experiment]
    ics = [not t for t in tune]
    assert subset(col, tune, []).tuning_studies == {"sqlite:///s.db": ["tune-lr__a", "tune-lr__b"]}
    assert subset(col, ics, []).tuning_studies == {}


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


def _write_runs(root: Path, seeds: dict[str, tuple[float, list[float]]], seed0: int) -> None:
    """Records of the regularization preset (C12): per norm, its test accuracy and one run per final
    train-minus-test gap in points (training accuracy saturated, as C12 needs)."""
    for norm, (test, gaps) in seeds.items():
        for i, gap in enumerate(gaps):
            seed = seed0 + i
            rec = _record("regularization", seed, norm)
            rec["final"].update(test_acc=test, train_acc=test + gap / 100)
            rec["history"] = [{"epoch": e, "step": 10 * e, "train_loss": 0.1, "val_acc": test, "test_acc": test,
                               "val_loss": 0.2, "train_acc": test + gap / 100} for e in (1, 2)]
            d = root / f"{norm}-{seed}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps(rec))


def test_the_replication_seed_set_is_evaluated_apart(tmp_path: Path) -> None:
    """Seeds 0.. and 1000.. of one preset are two seed sets: each gets its own verdict, and an interval inside
    the margin reads 'no meaningful effect' with its bound in the evidence."""
    # first set: no norm's gap clearly larger (supported); replication: the same gaps, within +-0.1 points
    _write_runs(tmp_path, {"none": (0.960, [3.9, 3.95, 3.85, 3.9]), "batch": (0.970, [2.9, 2.95, 2.85, 2.9])}, 0)
    _write_runs(tmp_path, {"none": (0.965, [3.4, 3.42, 3.38, 3.4]), "batch": (0.965, [3.4, 3.41, 3.39, 3.4])},
                REPLICATION_SEED)
    col = collect([tmp_path])
    first, rep = (split_by_experiment(col, replication=r) for r in (False, True))
    assert set(first["regularization"].runs.seed) == {0, 1, 2, 3}
    assert set(rep["regularization"].runs.seed) == {1000, 1001, 1002, 1003}
    c12 = next(r for r in evaluate_claims(first, tmp_path / "figs", rep) if r.claim == "C12")
    assert c12.verdict == SUPPORTED, c12.evidence  # no norm's gap 1 point larger
    assert c12.replication.verdict == NO_EFFECT, c12.replication.evidence
    assert "no meaningful effect" in c12.replication.evidence and "+-0.5 points" in c12.replication.evidence
    assert c12.settled == NOT_REPLICATED and c12.agreement == "no"
    assert (tmp_path / "figs" / "replication" / "claim_c12.png").is_file()


def test_registry_is_the_one_map_of_claims_to_presets_and_modules() -> None:
    import importlib

    from study.suite import SUITE

    assert [c.id for c in CLAIMS] == [f"C{i}" for i in range(1, 16)] + ["C16", "C16b", "C16c", "C16d", "C17",
                                                                         "C18", "C19"]
    for c in CLAIMS:  # every preset a claim reads exists, with its quick variant
        for p in c.presets:
            assert (REPO / "conf" / "experiment" / f"{p}.yaml").is_file(), (c.id, p)
            assert (REPO / "conf" / "experiment" / "quick" / f"{p}.yaml").is_file(), (c.id, p)
    for c in CLAIMS:
        module = importlib.import_module(f"analysis.claims.{c.module}")
        assert module.LITERATURE and callable(module.evaluate), c.id
        assert callable(getattr(module, "tests_plain_sweep", None)) == c.plain_sweep, c.id
    # the suite runs every preset a claim reads, once, in claim order, with the claims' grids
    order = list(dict.fromkeys(p for c in CLAIMS for p in c.presets))
    assert [name for name, _ in SUITE] == order
    assert dict(SUITE)["notebook"] == BY_ID["C1"].suite_grid
    assert BY_ID["C19"].presets == ("input_scaling",) and "input_scaling" in dict(SUITE)


def test_one_record_per_run_keeps_the_newest() -> None:
    import pandas as pd

    from analysis.collect import counted_as

    runs = pd.DataFrame({"norm": ["batch", "batch", "batch", "none", "none"], "seed": [0, 0, 0, 0, 0],
                         "finished_at": ["2026-01-02T00:00:00+00:00", None, "2026-01-01T00:00:00+00:00",
                                         "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"]})
    counted = counted_as(runs, ["norm", "seed"])
    # BN: the newest (row 0) counts for all three; no norm: a tie, the later row counts
    assert counted.tolist() == [0, 0, 0, 4, 4]


def test_sweep_report_findings_come_from_the_claim_modules(tmp_path: Path) -> None:
    """A sweep without a preset whose no-norm arm diverged at an lr no BN run tried (and a batch size with no
    BN run): its Findings give C2 from the claim module, never 'supported', and never an lr of nan."""
    import re

    from analysis import build_report

    md = (build_report([write_runs(tmp_path / "runs", c2_untested_records(None))]) / "report.md").read_text()
    findings = md.split("## Findings")[1].split("## Protocol")[0]
    assert "- inconclusive: C2: BN raises the largest stable learning rate." in findings
    assert not re.search(r"^- (not )?supported: C2", findings, re.M)
    assert "lr nan" not in md and "C1:" not in findings  # one batch size per arm pair: C1 not tested


def test_a_conv_net_sweep_answers_c17_not_the_mlp_claims(tmp_path: Path) -> None:
    """A plain sweep of model=cnn stands in for C17's preset, never for C1/C2/C14's (MLP claims)."""
    for i, (bs, norm, seed) in enumerate((b, n, s) for b in (8, 512) for n in ("none", "batch") for s in (0, 1, 2)):
        rec = _record(None, seed, norm)
        rec["config"].update(batch_size=bs, model={"norm": norm, "family": "cnn"})
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "result.json").write_text(json.dumps(rec))
    results = {r.claim: r for r in evaluate_claims(split_by_experiment(collect([tmp_path])), tmp_path / "figs")}
    assert results["C1"].verdict == NOT_RUN and results["C2"].verdict == NOT_RUN and results["C14"].verdict == NOT_RUN
    assert results["C17"].verdict != NOT_RUN
