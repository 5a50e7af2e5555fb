"""The claims suite end to end: presets -> real multiruns -> the claims report."""

from __future__ import annotations

import json
from html import escape
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.claims import CLAIMS
from analysis.claims.notebook_claims import NOTEBOOK_CLAIMS
from analysis.report import CLAIMS_REPORT_TITLES, REPORT_HTML
from study.config import compose_config, validate
from study.suite import PRESETS, SUITE, commands, shown
from tests.helpers import REPO, tiny_overrides

CONF = REPO / "conf" / "experiment"


def test_every_preset_has_a_quick_variant_and_composes() -> None:
    """Each claim's preset and its quick/ variant compose against the schema and pass validation."""
    names = {p.stem for p in CONF.glob("*.yaml")}
    assert set(PRESETS) <= names
    for name in PRESETS:
        assert (CONF / "quick" / f"{name}.yaml").is_file(), f"no quick variant of {name}"
        for preset in (name, f"quick/{name}"):
            validate(compose_config([f"experiment={preset}"]))
    # the suite runs exactly the presets the claims read (analysis/claims/__init__.py is the one map)
    assert {p for c in CLAIMS for p in c.presets} == set(PRESETS)


def test_linear_scaling_resolves_the_lr_from_the_batch_size() -> None:
    cfg = compose_config(["experiment=linear_scaling", "batch_size=256"])
    assert cfg.lr == pytest.approx(0.04)
    assert compose_config(["experiment=ghost", "batch_size=512"]).lr == pytest.approx(0.08)


def test_quick_variants_are_smaller() -> None:
    for name in ("ioffe2015", "regularization", "small_batch"):
        # at one batch size (the grids live in the sweeper's params)
        full, quick = (compose_config([f"experiment={p}", "batch_size=4"]) for p in (name, f"quick/{name}"))
        budget = lambda c: c.steps if c.steps is not None else c.epochs * 55000 // c.batch_size  # noqa: E731
        assert budget(quick) < budget(full)


def test_commands_name_their_preset_and_sweep_dir(tmp_path: Path) -> None:
    todo = commands(tmp_path, quick=True, only=["ics", "tune"], extra=["threads=1"], stamp="S")
    assert [n for n, _ in todo] == ["tune", "ics"]  # suite order, not the --only order
    argv = dict(todo)
    assert "experiment=quick/ics" in argv["ics"] and argv["ics"][-1] == "threads=1"
    assert f"hydra.sweep.dir='{tmp_path.resolve() / 'ics' / 'S'}'" in argv["ics"]
    assert any(a.startswith("hydra.sweeper.storage='sqlite:///") for a in argv["tune"])
    full = dict(commands(tmp_path, quick=False, only=[], extra=[], stamp="S"))
    assert set(full) == {n for n, _ in SUITE} and "batch_size=8,64,512" in full["notebook"]
    assert "input_scaling" in full  # C19's preset, from the claims registry


def test_suite_json_records_paths_relative_to_the_repository() -> None:
    # A committed suite.json must name no folder of the machine that ran it.
    assert shown(f"{REPO}/study/run.py") == "study/run.py"
    assert shown(f"hydra.sweep.dir='{REPO}/outputs/claims/ics/S'") == "hydra.sweep.dir='outputs/claims/ics/S'"


def test_bad_preset_name_is_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "study.suite", "--only", "nope"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --only=nope is not allowed: presets are " + ", ".join(PRESETS)]


@pytest.mark.slow
def test_quick_suite_builds_the_claims_report(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "claims"
    only = ["notebook", "shift", "ics", "deep", "regularization", "input_scaling"]
    proc = subprocess.run(
        [sys.executable, "-m", "study.suite", "--quick", "--out", str(out), "--only", ",".join(only), "--",
         *tiny_overrides(tiny_mnist), "hydra.launcher.n_jobs=1"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((out / "suite.json").read_text())
    assert [p["preset"] for p in log["presets"]] == [n for n, _ in SUITE if n in only]
    assert all(p["exit_status"] == 0 for p in log["presets"])

    report = out / "report"
    html = (report / REPORT_HTML).read_text()
    for title in CLAIMS_REPORT_TITLES:
        assert f">{escape(title)}</h2>" in html
    claims = pd.read_csv(report / "claims.csv")
    assert len(claims) == len(CLAIMS)
    verdict = dict(zip(claims.claim.str.split(":").str[0], claims.verdict))
    # C10 (landscape) is answered by the ics runs, which carry its probe; C3/C11
    # need tune/ioffe2015 as well, so they are "not run".
    tested = {"C1", "C6", "C9", "C10", "C12", "C15", "C19"}
    for c in (c.id for c in CLAIMS):
        expected = ("supported", "not supported", "inconclusive") if c in tested else ("not run",)
        assert verdict[c] in expected, (c, verdict[c])
    for c in tested:
        row = claims[claims.claim.str.startswith(c + ":")].iloc[0]
        assert row["figure"].startswith("claim_") and (report / row["figure"]).is_file()
    nb = pd.read_csv(report / "notebook_claims.csv")
    assert len(nb) == len(NOTEBOOK_CLAIMS)
    assert nb.set_index("#").loc[9, "verdict"] == "out of scope"
    for name in only:
        assert (report / "experiments" / name / REPORT_HTML).is_file()
