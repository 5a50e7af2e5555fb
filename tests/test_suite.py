"""The claims suite end to end: presets -> real multiruns -> the claims report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from html import escape
from pathlib import Path

import pandas as pd
import pytest

from analysis.claims import CLAIMS, REPLICATION_SEED
from analysis.claims.notebook_claims import NOTEBOOK_CLAIMS
from analysis.report import CLAIMS_REPORT_TITLES, REPORT_HTML
from study.config import compose_config, validate
from study.records import RESULT_FILE
from study.suite import PRESETS, SUITE, commands, preset_seeds, shown
from tests.helpers import REPO, group_processes, tiny_overrides

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


def test_replicate_reruns_each_preset_on_disjoint_seeds(tmp_path: Path) -> None:
    todo = commands(tmp_path, quick=False, only=["notebook", "tune"], extra=["threads=1"], stamp="S", replicate=True)
    assert [n for n, _ in todo] == ["notebook", "tune", "notebook (replication)", "tune (replication)"]
    argv = dict(todo)
    first = preset_seeds("notebook", ["batch_size=8,64,512"])[0]
    assert len(first) >= 8 and max(first) < REPLICATION_SEED  # issue 14: at least 8 seeds per cell
    assert f"seed={','.join(str(s + REPLICATION_SEED) for s in first)}" in argv["notebook (replication)"]
    assert f"hydra.sweep.dir='{tmp_path.resolve() / 'notebook' / 'S-replication'}'" in argv["notebook (replication)"]
    # tuning: the tuning seed and the confirmation seeds both move to the replication set
    seed, confirm = preset_seeds("tune", [])
    rep = argv["tune (replication)"]
    assert f"seed={seed[0] + REPLICATION_SEED}" in rep
    assert f"tune.confirm_seeds=[{','.join(str(s + REPLICATION_SEED) for s in confirm)}]" in rep
    # a seed given on the suite's command line is replaced in the replication, not repeated
    todo = dict(commands(tmp_path, quick=True, only=["ics"], extra=["seed=3,4"], stamp="S", replicate=True))
    assert [a for a in todo["ics (replication)"] if a.startswith("seed=")] == ["seed=1003,1004"]


def test_replicate_refuses_seeds_inside_the_replication_set() -> None:
    proc = subprocess.run([sys.executable, "-m", "study.suite", "--quick", "--replicate", "--only", "ics", "--",
                           "seed=999,1000"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --replicate needs the first seed set below {REPLICATION_SEED}: quick/ics has seeds [999, 1000]"]


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


@pytest.mark.parametrize("override, says", [
    ("model.norm=foo", "Error merging override model.norm=foo: Invalid value 'foo', expected one of [none, batch"),
    ("batch_size=0", "batch_size=0"),
])
def test_a_bad_override_is_one_line_before_anything_is_written(tmp_path: Path, override: str, says: str) -> None:
    """Every preset's jobs are composed and checked first: no traceback, no out dir, no preset started."""
    out = tmp_path / "claims"
    proc = subprocess.run([sys.executable, "-m", "study.suite", "--quick", "--only", "ics,deep", "--out", str(out),
                           "--", override], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert "==" not in proc.stdout and not out.exists()


@pytest.mark.slow
def test_quick_suite_builds_the_claims_report(tiny_mnist: Path, tmp_path: Path) -> None:
    out = tmp_path / "claims"
    only = ["notebook", "shift", "ics", "deep", "regularization", "input_scaling"]
    proc = subprocess.run(
        [sys.executable, "-m", "study.suite", "--quick", "--replicate", "--out", str(out), "--only", ",".join(only),
         "--",
         *tiny_overrides(tiny_mnist), "hydra.launcher.n_jobs=1"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((out / "suite.json").read_text())
    first = [n for n, _ in SUITE if n in only]
    assert [p["preset"] for p in log["presets"]] == first + [f"{n} (replication)" for n in first]
    assert all(p["exit_status"] == 0 for p in log["presets"]) and log["replicate"]
    # the replication reran every preset on seeds 1000 and up, disjoint from the first set (0, 1)
    assert all(a.startswith("seed=100") for p in log["presets"][len(first):] for a in p["argv"] if a.startswith("seed="))

    report = out / "report"
    html = (report / REPORT_HTML).read_text()
    for title in CLAIMS_REPORT_TITLES:
        assert f">{escape(title)}</h2>" in html
    claims = pd.read_csv(report / "claims.csv")
    assert len(claims) == len(CLAIMS)
    verdict = dict(zip(claims.claim.str.split(":").str[0], claims.verdict))
    agree = dict(zip(claims.claim.str.split(":").str[0], claims.agree))
    replication = dict(zip(claims.claim.str.split(":").str[0], claims["replication [95% CI]"]))
    # C10 (landscape) is answered by the ics runs, which carry its probe; C3/C11
    # need tune/ioffe2015 as well, so they are "not run".
    tested = {"C1", "C6", "C9", "C10", "C12", "C15", "C19"}
    for c in (c.id for c in CLAIMS):
        expected = (("supported", "contradicted", "trivially small", "no meaningful effect", "inconclusive", "mixed",
                     "premise not met", "not replicated") if c in tested else ("not run",))
        assert verdict[c] in expected, (c, verdict[c])
        if c in tested:  # both seed sets answered, and the settled verdict follows their agreement
            assert agree[c] in ("yes", "no") and replication[c] != "not run", (c, agree[c], replication[c])
            assert (verdict[c] == "not replicated") == (agree[c] == "no"), c
    for c in tested:
        row = claims[claims.claim.str.startswith(c + ":")].iloc[0]
        assert row["figure"].startswith("claim_") and (report / row["figure"]).is_file()
    nb = pd.read_csv(report / "notebook_claims.csv")
    assert len(nb) == len(NOTEBOOK_CLAIMS)
    assert nb.set_index("#").loc[9, "verdict"] == "not run"  # the recurrent presets are not in --only
    for name in only:
        assert (report / "experiments" / name / REPORT_HTML).is_file()
        assert (report / "experiments" / f"{name}-replication" / REPORT_HTML).is_file()


@pytest.mark.slow
def test_sigterm_stops_the_suite_and_its_running_sweep(tiny_mnist: Path, tmp_path: Path) -> None:
    """`kill PID` on the suite (a scheduler's time limit) reaches the suite only: it passes the signal to
    the sweep it is running, which stops its workers, and ends with one line and exit 143. Before, the
    suite died at once and its sweep went on training as an orphan."""
    out = tmp_path / "claims"
    cmd = [sys.executable, "-m", "study.suite", "--quick", "--out", str(out), "--only", "ics", "--no-report",
           "--progress-every", "0", "--", *tiny_overrides(tiny_mnist), "force=false", "epochs=3",
           "hydra.launcher.n_jobs=1"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: the sweep and its workers join it

    def records() -> dict[str, str]:
        return {str(p.relative_to(out)): p.read_text() for p in out.rglob(RESULT_FILE)}

    deadline = time.time() + 300
    while not records():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    finished = records()
    assert len(finished) < 4, "the sweep ended before the signal: give its runs more epochs"
    proc.send_signal(signal.SIGTERM)  # to the suite's process only
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "terminated: finished runs are kept; run the same command again to go on"
    deadline = time.time() + 30  # the sweep and its workers stop with the suite, none left training
    while group_processes(proc.pid):
        assert time.time() < deadline, group_processes(proc.pid)
        time.sleep(0.2)
    kept = records()
    assert all(kept[k] == v for k, v in finished.items())
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    reused = [json.loads(v) for k, v in records().items() if k not in kept]
    assert len(reused) == 4 and sum("reused_from" in r for r in reused) == len(kept)
