"""Optuna sweeps: the plugin path, per-cell tuning (`experiment=tune`), pruning,
divergence, kill-and-resume, two joblib workers on SQLite, and reuse of a
finished plain multirun. Tiny data, 1-3 epochs, a temp SQLite storage each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from helpers import RUN, multirun_args, ok, run_cli, storage_url, studies
from hydra_plugins.bn_study_sweeper.accounting import counts_toward_target, read_record
from hydra_plugins.bn_study_sweeper.liveness import sweep_is_gone, this_sweep
from hydra_plugins.bn_study_sweeper.plan import plan_sweep
from hydra_plugins.bn_study_sweeper.pruning import pruner_spec, stored_pruner
from study.config import compose_config
from study.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sweep_args(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    """An Optuna sweep (its sweeper chosen in `extra`): temp storage and sweep dir."""
    return multirun_args(tmp_path, root, f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
                         f"hydra.sweep.dir={tmp_path}/sweep", *extra)


def records(sweep: Path) -> list[dict]:
    return [dict(json.loads(p.read_text()), _path=str(p)) for p in sorted(sweep.glob("*/result.json"))]


def trained(recs: list[dict]) -> Counter:
    """Runs actually trained (not reused), by (norm, lr, seed)."""
    return Counter((r["config"]["model"]["norm"], r["config"]["lr"], r["seed"])
                   for r in recs if not r.get("reused_from"))


# ------------------------------------------------------------------ fast
def hydra_sweeper(overrides: list[str]):
    return compose_config(overrides, return_hydra_config=True).hydra.sweeper


def test_presets_pick_the_sweeper_and_drop_the_basic_grid():
    basic = hydra_sweeper([])
    assert dict(basic.params) == {"model.norm": "none,batch", "seed": "0,1,2"}

    tune = hydra_sweeper(["experiment=tune"])
    assert tune._target_.endswith("bn_study_sweeper.bn_optuna_sweeper.BnOptunaSweeper")
    assert dict(tune.params) == {"lr": "tag(log, interval(1e-3, 1.0))", "model.norm": "none,batch"}
    assert tune.cells and list(tune.confirm_seeds) == list(range(1, 9)) and tune.n_trials == 8  # 8 seeds per cell
    assert tune.sampler.seed == 0 and tune.direction.name == "maximize"
    assert tune.storage == "sqlite:///outputs/optuna/studies.db?timeout=60"
    assert tune.pruner._target_ == "optuna.pruners.MedianPruner"

    plugin = hydra_sweeper(["hydra/sweeper=optuna"])
    assert plugin._target_ == tune._target_ and not plugin.cells and list(plugin.confirm_seeds) == []
    assert dict(plugin.params) == {"lr": "tag(log, interval(1e-3, 1.0))"}  # no seed grid to "tune"

    random = hydra_sweeper(["experiment=tune", "hydra/sweeper/sampler=random"])
    assert random.sampler._target_ == "optuna.samplers.RandomSampler" and random.sampler.seed == 0


def test_comma_lists_are_cells_optuna_syntax_is_the_search_space():
    args = ["lr=tag(log, interval(1e-3, 1.0))", "model.norm=none,batch", "batch_size=8,64", "epochs=3",
            "optimizer.momentum=choice(0.0, 0.9)", "model.norm=batch,none"]
    plan = plan_sweep(args, cells=True)
    assert plan.grid == {"batch_size": ["8", "64"], "model.norm": ["batch", "none"]}  # the later list wins
    assert plan.search["lr"] == FloatDistribution(1e-3, 1.0, log=True)
    assert set(plan.search) == {"lr", "optimizer.momentum"} and plan.fixed == {"epochs": "3"}
    assert len(plan.cells()) == 4

    flat = plan_sweep(args, cells=False)  # the plugin's rule: every sweep is a search dimension
    assert not flat.grid and set(flat.search) == {"lr", "model.norm", "batch_size", "optimizer.momentum"}


def test_a_trial_of_a_dead_sweep_is_told_apart_from_a_live_one():
    assert not sweep_is_gone(this_sweep())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = dict(this_sweep(), pid=child.pid, start=None)
    child.wait()
    assert sweep_is_gone(owner)
    assert not sweep_is_gone(dict(owner, host="another-host"))  # cannot tell: left alone
    assert not sweep_is_gone(None)


def test_the_sweeps_pruner_is_what_a_job_rebuilds(tmp_path):
    study = optuna.create_study(storage=storage_url(tmp_path), study_name="s")
    spec = pruner_spec({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 7, "n_warmup_steps": 2})
    study.set_user_attr("pruner", spec)
    pruner = stored_pruner(optuna.load_study(study_name="s", storage=storage_url(tmp_path)))
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert (pruner._n_startup_trials, pruner._n_warmup_steps) == (7, 2)
    with pytest.raises(ValueError, match="optuna.pruners"):
        pruner_spec({"_target_": "os.system"})


# ------------------------------------------------------- end to end (slow)
@pytest.mark.slow
def test_plugin_path_one_study_with_records_as_trial_attributes(tmp_path, tiny_mnist):
    # The preset's search space (lr log-uniform in [1e-3, 1]), narrowed so that no trial diverges.
    out = ok(run_cli(sweep_args(tmp_path, tiny_mnist, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
                                "hydra.sweeper.params.lr='tag(log, interval(0.01, 0.1))'",
                                "batch_size=32", "epochs=1"), cwd=tmp_path))
    (name, study), = studies(tmp_path).items()
    assert name == "tune-lr__batch_size=32,data.val_size=200,epochs=1"
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t in trials:
        # Relative to the results root (the dir the sweep started in): another machine resolves it.
        assert not Path(t.user_attrs["record_path"]).is_absolute()
        rec = json.loads((tmp_path / t.user_attrs["record_path"]).read_text())
        assert rec["config"]["lr"] == t.params["lr"] and rec["final"]["val_acc"] == t.value
        assert t.user_attrs["status"] == "completed" and t.user_attrs["diverged_at_step"] is None
        assert f"trial.number={t.number}" in t.user_attrs["overrides"] and "batch_size=32" in t.user_attrs["overrides"]
        assert t.user_attrs["batch_size"] == "32"  # the plugin's fixed params as attributes
    results = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert f"best_value: {study.best_value}" in results
    assert f"optuna-dashboard '{storage_url(tmp_path)}'" in out


@pytest.mark.slow
def test_tune_one_study_per_cell_confirm_reruns_then_a_rerun_reuses_everything(tmp_path, tiny_mnist):
    args = sweep_args(tmp_path, tiny_mnist, "experiment=tune", "batch_size=32", "model.norm=none,batch",
                      "epochs=1", "tune.n_trials=2", "tune.confirm_seeds=[0,1]")
    out = ok(run_cli(args, cwd=tmp_path))
    found = studies(tmp_path)
    assert set(found) == {f"tune-lr__batch_size=32,data.val_size=200,epochs=1,model.norm={n}"
                          for n in ("none", "batch")}
    for name, study in found.items():
        norm = name.rsplit("=", 1)[1]
        trials = study.get_trials()
        assert len(trials) == 2 and all(counts_toward_target(t) for t in trials)
        assert all(json.loads((tmp_path / t.user_attrs["record_path"]).read_text())["config"]["model"]["norm"] == norm
                   for t in trials)
        confirm = study.user_attrs["confirm"]
        best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        assert confirm["params"] == best.params and [r["seed"] for r in confirm["runs"]] == [0, 1]
        assert [r["reused"] for r in confirm["runs"]] == [True, False]  # seed 0 is the best trial's own run
        assert all(r["status"] == "completed" and (tmp_path / r["record_path"]).is_file() for r in confirm["runs"])
        assert study.user_attrs["cell"] == {"model.norm": norm}
    assert "confirm test_acc" in out
    first = records(tmp_path / "sweep")
    assert len(first) == 2 * (2 + 2)
    # The report of a tuning sweep: lr varies per cell, so it has the lr
    # sensitivity and isolation figures and the best-lr comparison.
    from analysis import build_report

    report = build_report([tmp_path / "sweep"], out_dir=tmp_path / "report")
    assert (report / "fig4_lr_sensitivity.png").is_file() and (report / "fig5_isolation.png").is_file()
    assert "each (norm, batch size)'s best lr" in (report / "report.md").read_text()

    again = ok(run_cli(args, cwd=tmp_path))
    assert "2 of 2 trials done or running; asking 0" in again
    assert all(len(s.get_trials()) == 2 for s in studies(tmp_path).values())
    new = [r for r in records(tmp_path / "sweep") if r["_path"] not in {f["_path"] for f in first}]
    assert new == []  # each study's best was confirmed once: nothing launched again
    assert again.count("(confirmed before)") == 2


@pytest.mark.slow
def test_pruning_stops_a_hopeless_lr_and_records_it(tmp_path, tiny_mnist):
    # Two finished trials that reached 0.99 validation accuracy after epochs 1 and 2 (made up, over the
    # sweep's own search space: a study resumed over another is refused).
    study = optuna.create_study(study_name="prune-me", storage=storage_url(tmp_path), direction="maximize")
    for lr in (1.2e-7, 1.5e-7):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions={"lr": FloatDistribution(1e-7, 2e-7, log=True)},
            intermediate_values={1: 0.99, 2: 0.99}, value=0.99))
    ok(run_cli(sweep_args(tmp_path, tiny_mnist, "hydra/sweeper=optuna", "hydra.sweeper.study_name=prune-me",
                          "hydra.sweeper.n_trials=3", "lr=tag(log, interval(1e-7, 2e-7))", "epochs=3",
                          "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=0"),
               cwd=tmp_path))
    trial = optuna.load_study(study_name="prune-me", storage=storage_url(tmp_path)).get_trials()[-1]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["status"] == "pruned"
    assert list(trial.intermediate_values) == [1]  # stopped after its first epoch
    rec = json.loads((tmp_path / trial.user_attrs["record_path"]).read_text())
    assert rec["status"] == "pruned" and len(rec["history"]) == 1


@pytest.mark.slow
def test_a_diverging_lr_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_mnist):
    out = ok(run_cli(sweep_args(tmp_path, tiny_mnist, "experiment=tune", "hydra/sweeper/sampler=grid",
                                # 1e6: under the notebook's pixel scaling (data.normalize) lr=1000
                                # leaves huge but finite losses (dead ReLUs), not a divergence.
                                "lr=choice(0.05, 1e6)", "model.norm=none", "batch_size=32", "epochs=1",
                                "hydra.sweeper.confirm_seeds=[0]"), cwd=tmp_path))
    (study,) = studies(tmp_path).values()
    by_lr = {t.params["lr"]: t for t in study.get_trials()}
    bad, good = by_lr[1e6], by_lr[0.05]
    assert bad.state == TrialState.FAIL and bad.user_attrs["status"] == "diverged"
    assert isinstance(bad.user_attrs["diverged_at_step"], int) and counts_toward_target(bad)
    assert good.state == TrialState.COMPLETE and study.user_attrs["confirm"]["params"] == {"lr": 0.05}
    assert "1 complete, 1 failed (1 diverged)" in out


@pytest.mark.slow
def test_a_study_resumed_over_another_search_space_is_refused_in_one_line(tmp_path, tiny_mnist):
    """The study name says which keys are tuned, not over what: a sweep over another lr range must not
    pool its trials with the study's (nor answer with its old best) but say so, exit 2."""
    def sweep(dir_name: str, *extra: str):
        return run_cli(multirun_args(tmp_path, tiny_mnist, f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
                                     f"hydra.sweep.dir={tmp_path}/{dir_name}", "experiment=tune", "model.norm=none",
                                     "batch_size=64", "epochs=1", "hydra.sweeper.n_trials=1",
                                     "hydra.sweeper.confirm_seeds=[0]", *extra), cwd=tmp_path)

    ok(sweep("first"))
    proc = sweep("second", "lr=tag(log, interval(1e-5, 10))")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "was tuned over another search space (lr: FloatDistribution(high=1.0" in errors[0]
    assert "FloatDistribution(high=10.0, log=True, low=1e-05, step=None) here" in errors[0], errors
    assert "hydra.sweeper.study_name=NAME" in errors[0]
    (study,) = studies(tmp_path).values()
    assert len(study.get_trials()) == 1  # nothing asked over the other range
    ok(sweep("third"))  # the study's own space resumes it


def test_a_range_optuna_refuses_is_one_line_exit_2_before_anything_is_written(tmp_path, tiny_mnist):
    proc = run_cli(sweep_args(tmp_path, tiny_mnist, "experiment=tune", "lr=tag(log, interval(-1, 1))"), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in out, out[-3000:]
    assert out.strip().splitlines() == ["error: lr=tag(log, interval(-1, 1)) is not allowed: `low > 0` must hold "
                                        "for `log=True`, but got (low=-1.0, high=1.0) (e.g. lr=tag(log, "
                                        "interval(1e-4, 1.0)); docs/tuning.md)"]
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "optuna.db").exists()
    with pytest.raises(UserError, match=r"lr=interval\(2, 1\) is not allowed: `low <= high` must hold"):
        plan_sweep(["lr=interval(2, 1)"], cells=True)


def test_a_study_from_before_its_space_was_stored_is_checked_against_its_trials(tmp_path):
    from hydra_plugins.bn_study_sweeper.storage import open_storage, open_study

    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", None, None)
    old = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = old.ask({"lr": FloatDistribution(1e-3, 1.0, log=True)})
    old.tell(trial, 0.5)
    with pytest.raises(UserError, match="another search space"):
        open_study(storage, "s", "maximize", {}, {}, "val_acc", {"lr": FloatDistribution(1e-5, 1.0, log=True)})
    study = open_study(storage, "s", "maximize", {}, {}, "val_acc", {"lr": FloatDistribution(1e-3, 1.0, log=True)})
    assert "search_space" in study.user_attrs  # stored now: later sweeps compare with it


def _finished(tmp_path: Path) -> tuple[int, int]:
    # A short busy timeout: a read that meets the lock of a sweep frozen mid-write gives up at once.
    url = f"sqlite:///{tmp_path}/optuna.db?timeout=1"
    try:
        trials = [t for name in optuna.get_all_study_names(url)
                  for t in optuna.load_study(study_name=name, storage=url).get_trials()]
    except Exception:  # not created yet, or locked by the frozen sweep
        return 0, 0
    # RUNNING and owned: a sweep killed between asking a trial and recording itself on it leaves one
    # that the next sweep fails only once its beat is grace_period old (or, with no beat, after
    # OWNERLESS_STALE_AFTER), not at once by its process, which is what this test checks.
    return (sum(t.state.is_finished() for t in trials),
            sum(t.state == TrialState.RUNNING and "sweep" in t.user_attrs for t in trials))


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_requested_counts_without_retraining(tmp_path, tiny_mnist):
    args = sweep_args(tmp_path, tiny_mnist, "experiment=tune", "model.norm=none", "batch_size=8", "epochs=15",
                      "hydra.sweeper.n_trials=3", "hydra.sweeper.confirm_seeds=[0]", "hydra.sweeper.pruner=null")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(RUN + args, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:  # kill it with a trial told and the next one training
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
            if min(_finished(tmp_path)) >= 1:
                # Read again with the sweep frozen, so that what is read is what the
                # kill leaves: a trial that ended between a read and the kill would
                # leave nothing RUNNING (a race CI once lost).
                os.killpg(proc.pid, signal.SIGSTOP)
                if min(_finished(tmp_path)) >= 1:
                    break
                os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    out = ok(run_cli(args, cwd=tmp_path))  # the same command, the same sweep dir
    assert "1 trial left RUNNING by a dead sweep marked failed (not counted)" in out
    (study,) = studies(tmp_path).values()
    trials = study.get_trials()
    assert sum(counts_toward_target(t) for t in trials) == 3
    stale = [t for t in trials if t.user_attrs.get("status") == "stale"]
    assert len(stale) == 1 and stale[0].state == TrialState.FAIL and "record_path" not in stale[0].user_attrs
    recs = records(tmp_path / "sweep")
    assert max(trained(recs).values()) == 1  # no (norm, lr, seed) trained twice
    # The rerun numbered its jobs after the killed sweep's: no dir was reused.
    # The killed job's dir, if it got one, keeps its claim and has no record.
    dirs = [d for d in (tmp_path / "sweep").iterdir() if d.is_dir()]
    assert len({d.name.split("_", 1)[0] for d in dirs}) == len(dirs)
    assert sum(not (d / "result.json").exists() for d in dirs) <= 1


@pytest.mark.slow
def test_two_joblib_workers_share_one_sqlite_study(tmp_path, tiny_mnist):
    # Two trials at a time, both reporting each epoch (pruning after 1 trial).
    out = ok(run_cli(sweep_args(tmp_path, tiny_mnist, "experiment=tune", "hydra/launcher=joblib",
                                "hydra.launcher.n_jobs=2", "model.norm=batch", "batch_size=16", "epochs=3",
                                "hydra.sweeper.n_trials=4", "hydra.sweeper.confirm_seeds=[0,1]",
                                "hydra.sweeper.pruner.n_startup_trials=1",
                                "hydra.sweeper.pruner.n_warmup_steps=0"), cwd=tmp_path))
    assert "database is locked" not in out
    (study,) = studies(tmp_path).values()
    trials = study.get_trials()
    assert len(trials) == 4 and all(counts_toward_target(t) for t in trials)
    assert all(t.intermediate_values or t.user_attrs.get("reused_from") for t in trials)
    assert len(study.user_attrs["confirm"]["runs"]) == 2


@pytest.mark.slow
def test_rerun_of_a_plain_multirun_reuses_finished_runs_and_force_retrains(tmp_path, tiny_mnist):
    args = multirun_args(tmp_path, tiny_mnist, "batch_size=32", "epochs=1", "model.norm=none", "seed=0,1")
    ok(run_cli(args + [f"hydra.sweep.dir={tmp_path}/a"], cwd=tmp_path))
    again = ok(run_cli(args + [f"hydra.sweep.dir={tmp_path}/b"], cwd=tmp_path))
    forced = ok(run_cli(args + [f"hydra.sweep.dir={tmp_path}/c", "force=true"], cwd=tmp_path))
    first, second, third = (records(tmp_path / d) for d in "abc")
    assert len(first) == len(second) == len(third) == 2
    assert not any(r.get("reused_from") for r in first + third)
    assert sorted(r["reused_from"] for r in second) == sorted(r["_path"] for r in first)
    assert "reusing the finished run" in again and "reusing" not in forced


def test_the_sweeper_tells_a_missing_record_from_a_damaged_one(tmp_path):
    assert read_record(None) == (None, "missing", None)
    assert read_record(tmp_path / "result.json") == (None, "missing", None)
    (tmp_path / "result.json").write_text('{"schema_version": 1, "status": "completed"}')
    rec, problem, reason = read_record(tmp_path / "result.json")
    assert rec is None and problem == "unreadable" and reason


def _answers(a) -> dict[str, list[dict]]:
    """What a report says about a tuning sweep: its cells, each cell's chosen lr, BN vs no-BN there."""
    import pandas as pd

    def rows(df: pd.DataFrame, cols: list[str]) -> list[dict]:
        out = df[cols].astype(object).where(df[cols].notna(), None).to_dict("records")
        return sorted(({k: (round(float(v), 10) if isinstance(v, float) else v) for k, v in r.items()} for r in out),
                      key=repr)

    return {"cells": rows(a.cells, ["norm", "batch_size", "lr", "n_runs", "n_completed", "seeds", "val_acc_mean",
                                    "test_acc_mean", "train_loss_mean"]),
            "best": rows(a.best, ["norm", "batch_size", "lr", "basis", "n", "val_acc_mean", "test_acc_mean"]),
            "differences": rows(a.best_differences, ["batch_size", "norm", "baseline", "test_acc_diff", "low", "high",
                                                     "n", "n_baseline"])}


@pytest.mark.slow
def test_the_report_from_the_storage_alone_answers_as_the_sweep_dirs(tmp_path, tiny_mnist, monkeypatch):
    """A finished tuning sweep: `python -m analysis STORAGE --study ...` on a
    machine without its records, and the sweep dir's report where some
    trials' records are elsewhere (another machine's sweep), give the same
    cells, lrs and BN vs no-BN differences as the dir with every record."""
    import shutil

    from analysis.collect import collect
    from analysis.summary import analyze

    ok(run_cli(sweep_args(tmp_path, tiny_mnist, "experiment=tune", "batch_size=32", "model.norm=none,batch",
                          "epochs=1", "tune.n_trials=2", "tune.confirm_seeds=[1,2]", "hydra.sweeper.pruner=null"),
               cwd=tmp_path))
    full = analyze(collect([tmp_path / "sweep"]))
    assert full.tuned and set(full.best.basis) == {"confirmation runs"}
    expected = _answers(full)
    assert len(expected["cells"]) >= 2 and len(expected["differences"]) == 1

    # Another machine: a copy of the storage, no record anywhere it can look.
    far = tmp_path / "far"
    far.mkdir()
    shutil.copy(tmp_path / "optuna.db", far / "optuna.db")
    monkeypatch.chdir(far)
    names = sorted(studies(tmp_path))
    col = collect([f"sqlite:///{far}/optuna.db"], names)
    assert col.problems and all(p.kind == "missing" for p in col.problems)  # nothing read from a record
    assert _answers(analyze(col)) == expected

    # The sweep dir, with the no-BN study's trials run elsewhere (their records not here).
    monkeypatch.chdir(tmp_path)
    none = optuna.load_study(study_name=next(n for n in names if n.endswith("model.norm=none")),
                             storage=storage_url(tmp_path))
    for t in none.get_trials():
        shutil.rmtree((tmp_path / t.user_attrs["record_path"]).parent)
    assert _answers(analyze(collect([tmp_path / "sweep"]))) == expected


@pytest.mark.slow
def test_a_sweep_that_cannot_finish_its_study_says_so_in_its_exit_status(tmp_path, tiny_mnist):
    """A trial of a sweep on another host runs in the study and no heartbeat
    can tell whether that sweep lives: this sweep runs what it can, then
    ends with one line saying the study is not complete, and exit status 3."""
    study = optuna.create_study(study_name="shared", storage=storage_url(tmp_path), direction="maximize")
    foreign = study.ask({"lr": FloatDistribution(1e-3, 1.0, log=True)})
    foreign.set_user_attr("sweep", {"host": "other-host", "pid": 1, "start": "0", "heartbeat": None})
    proc = run_cli(sweep_args(tmp_path, tiny_mnist, "hydra/sweeper=optuna", "hydra.sweeper.study_name=shared",
                              "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=null",
                              "batch_size=32", "epochs=1"), cwd=tmp_path)
    assert proc.returncode == 3, (proc.stdout + proc.stderr)[-3000:]
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("error:")]
    assert errors == ["error: study shared is not complete: 1 trial of a sweep on other-host still running, "
                      "which this sweep cannot tell alive or dead without heartbeats "
                      "(hydra.sweeper.heartbeat_interval=null here or there); run the same command again to "
                      "finish it"], errors
    trials = studies(tmp_path)["shared"].get_trials()
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.COMPLETE]  # it ran what it could
    assert "Traceback" not in proc.stderr
