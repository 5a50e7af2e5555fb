"""The suite's time-left estimate: each preset's work (study/sweep/workload.py) and the paces it is read at."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from study.config import compose_config
from study.reuse import identity
from study.spec import optimizer_steps
from study.suite import SuiteProgress, commands, plan
from study.sweep.progress import Tally, describe
from study.sweep.workload import PresetPlan, Workload, run_work, sweep_jobs, time_left


def _argv(tmp_path: Path, quick: bool, only: list[str], replicate: bool = False) -> list[list[str]]:
    # every run's index in tmp_path: what the developer's outputs/ hold does not count as reused
    todo = commands(tmp_path, quick=quick, only=only, extra=[f"run_index={tmp_path}/.run-index"], stamp="S",
                    replicate=replicate)
    return [argv[3:] for _, argv in todo]  # after `run.py -m`


@pytest.mark.parametrize("preset", ["linear_scaling", "rnn_eps", "cnn", "quick/small_batch", "quick/precise_bn"])
def test_a_jobs_config_set_on_its_presets_config_is_the_composed_one(preset: str) -> None:
    """Values set on the preset's composed config (the fast path) give what Hydra composes for the job:
    interpolations that read them (linear_scaling's lr from batch_size) included."""
    fixed, _, jobs = sweep_jobs([f"experiment={preset}"])
    assert len(jobs) > 2
    workload = Workload()
    first_seed = next(o for o in jobs[0][0] if o.startswith("seed="))
    for job, _ in [(j, n) for j, n in jobs if first_seed in j]:  # each cell once (~0.1 s a composition)
        fast = workload.job_config(fixed, job)
        assert identity(fast) == identity(compose_config([*fixed, *job])), job
    if preset == "linear_scaling":  # the lr follows each job's batch size
        assert len({workload.job_config(fixed, j).lr for j, _ in jobs}) > 1


def test_a_runs_work_follows_its_architecture_and_budget() -> None:
    mlp = compose_config([])
    lstm = compose_config(["model=lstm", "batch_size=128"])
    w = Workload()
    one = run_work(mlp, w._flops_per_sample(mlp))
    assert run_work(compose_config(["epochs=10"]), w._flops_per_sample(mlp)) == pytest.approx(2 * one, rel=0.01)
    # the LSTM's 28 steps of 4 x 100 x (28 + 100) products per sample: about 13x the MLP's arithmetic
    assert w._flops_per_sample(lstm) / w._flops_per_sample(mlp) == pytest.approx(13.1, rel=0.05)
    # a step's fixed cost: at batch 8 the same epochs cost more than the samples alone
    small = compose_config(["batch_size=8"])
    assert run_work(small, w._flops_per_sample(mlp)) > 1.5 * one


def test_a_jobs_steps_are_counted_as_the_trainer_counts_them() -> None:
    # 55,000 training images (5,000 validate) = 3 x 18,333 + 1: the lone example makes no step
    assert optimizer_steps(compose_config(["batch_size=18333", "epochs=2"])) == (6, 3)
    assert optimizer_steps(compose_config(["batch_size=18332", "epochs=2"])) == (8, 4)  # a trailing 4 does
    assert optimizer_steps(compose_config(["batch_size=64", "steps=300"])) == (300, 860)
    assert optimizer_steps(compose_config(["data.val_size=0", "batch_size=64"])) == (5 * 938, 938)


def test_runs_an_earlier_preset_trains_are_no_work(tmp_path: Path) -> None:
    """rnn_eps reruns rnn's BN-LSTM at eps 1e-5 (reused) beside eps 1e-3; landscape's runs are ics's."""
    argv = dict(zip(["rnn", "rnn_eps"], _argv(tmp_path, False, ["rnn", "rnn_eps"])))
    alone = Workload().presets([argv["rnn_eps"]])[0]
    after = Workload().presets([argv["rnn"], argv["rnn_eps"]])
    assert after[1].runs == alone.runs == 16
    assert after[1].work == pytest.approx(alone.work / 2)  # 8 of its 16 runs are rnn's
    assert after[0].family == after[1].family == "lstm"
    ics, landscape = Workload().presets(_argv(tmp_path, True, ["ics", "landscape"]))
    assert ics.work > 0 and landscape.work == 0 and landscape.runs == ics.runs


def test_finished_runs_are_no_work(tmp_path: Path) -> None:
    """A run already in the run index (a rerun of the suite into its dir) costs nothing."""
    argv = _argv(tmp_path, True, ["deep"])
    fresh = Workload().presets(argv)[0]
    fixed, _, jobs = sweep_jobs(argv[0])
    cfg = compose_config([*fixed, *jobs[0][0]])
    from study.reuse import index_run, run_hash
    from study.records import write_json_atomic

    record = tmp_path / "run" / "result.json"
    write_json_atomic(record, {"status": "completed", "run_hash": run_hash(cfg)})
    index_run(cfg, record)
    with pytest.MonkeyPatch.context() as mp:  # the record's schema check is not what is tested here
        mp.setattr("study.reuse.read_record", lambda p: json.loads(Path(p).read_text()))
        again = Workload().presets(argv)[0]
    assert again.runs == fresh.runs
    assert again.work == pytest.approx(fresh.work * (1 - 1 / fresh.runs))


def test_the_suite_reads_a_relative_run_index_where_its_jobs_run(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Its jobs run in the repository root (`plan`'s root), so a run indexed under a relative
    run_index there is reused by them, and the plan counts it as no work wherever the suite started."""
    todo = commands(tmp_path, quick=True, only=["deep"], extra=["run_index=index"], stamp="S", replicate=False)
    fresh = plan(todo, root=tmp_path)[0]
    fixed, _, jobs = sweep_jobs(todo[0][1][3:])
    cfg = compose_config([*fixed, *jobs[0][0]])
    from study.records import write_json_atomic
    from study.reuse import index_run, run_hash

    record = tmp_path / "run" / "result.json"
    write_json_atomic(record, {"status": "completed", "run_hash": run_hash(cfg)})
    monkeypatch.chdir(tmp_path)
    index_run(cfg, record)  # under tmp_path/index
    assert (tmp_path / "index").is_dir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setattr("study.reuse.read_record", lambda p: json.loads(Path(p).read_text()))
    again = plan(todo, root=tmp_path)[0]
    assert again.work == pytest.approx(fresh.work * (1 - 1 / fresh.runs))
    assert Path.cwd() == tmp_path / "elsewhere"


def test_a_tuning_preset_counts_each_cells_trials_and_confirmations(tmp_path: Path) -> None:
    """quick/tune: 2 norms x 2 batch sizes, each cell 3 trials and 2 confirmation seeds (sampled lrs: no reuse)."""
    plan = Workload().presets(_argv(tmp_path, True, ["tune"]))[0]
    w = Workload()
    cells = [compose_config(["experiment=quick/tune", f"model.norm={n}", f"batch_size={b}"])
             for n in ("none", "batch") for b in (64, 512)]
    assert plan.runs == 4 * (3 + 2)
    assert plan.work == pytest.approx(sum(5 * run_work(c, w._flops_per_sample(c)) for c in cells))


def test_time_left_reads_each_presets_work_at_its_pace() -> None:
    # two presets done of four: the third half done; paces in seconds per flop
    works, fractions = [10.0, 20.0, 40.0, 5.0], [1.0, 1.0, 0.5, 0.0]
    assert time_left(works, fractions, [None] * 4, pace=2.0) == pytest.approx(20 * 2 + 5 * 2)
    assert time_left(works, fractions, [None, None, 3.0, None], pace=2.0) == pytest.approx(20 * 3 + 5 * 2)
    assert time_left(works, fractions, [None] * 4, pace=None) is None
    assert time_left([1.0, 0.0], [1.0, 0.0], [None, None], pace=None) == 0.0  # nothing left to pace


def test_the_suites_line_paces_presets_by_twin_then_family_then_the_suite() -> None:
    plans = [PresetPlan(10, 100.0, "mlp"), PresetPlan(10, 300.0, "lstm"), PresetPlan(10, 100.0, "mlp"),
             PresetPlan(10, 300.0, "lstm"), PresetPlan(10, 50.0, "cnn")]
    progress = SuiteProgress(plans, twins=[None, None, 0, 1, None], every=0)
    progress.finished = [Tally(planned=10, trained=10), Tally(planned=10, trained=10)]
    progress.seconds = [100.0, 900.0]  # the LSTM's flop cost 3x the MLP's
    assert progress.pace_of(2) == pytest.approx(1.0)  # its twin's (preset 0)
    assert progress.pace_of(3) == pytest.approx(3.0)  # its twin's (preset 1)
    assert progress.pace_of(4) is None  # no conv net yet: the suite's pace
    # preset 2 half done; 1,050 s elapsed over 450 flops' worth of work: the suite's pace 7/3 s a flop
    left = progress.time_left(Tally(planned=10, trained=5), elapsed=1050.0)
    assert left == pytest.approx(50 * 1.0 + 300 * 3.0 + 50 * 1050 / 450)
    progress.twins = [None] * 5  # no twins: the family's finished presets set the pace
    assert progress.pace_of(2) == pytest.approx(1.0) and progress.pace_of(3) == pytest.approx(3.0)
    assert progress.untimed_families() == ["cnn"]


def test_the_suites_line_names_the_families_not_timed_yet(capsys: pytest.CaptureFixture[str]) -> None:
    plans = [PresetPlan(10, 100.0, "mlp"), PresetPlan(10, 300.0, "lstm"), PresetPlan(10, 50.0, "cnn")]
    progress = SuiteProgress(plans, twins=[None] * 3, every=0)
    progress.finished, progress.seconds = [Tally(planned=10, trained=10)], [100.0]
    progress.report()
    line = capsys.readouterr().out.strip()
    assert line.startswith("== suite: 1/3 presets, 10/30 runs done") and line.endswith(
        "left (cnn, lstm presets not timed yet)")
    progress.finished.append(Tally(planned=10, trained=10))
    progress.seconds.append(900.0)
    progress.report()
    assert capsys.readouterr().out.strip().endswith("left (cnn presets not timed yet)")


def test_the_line_says_the_estimate_it_is_given() -> None:
    tally = Tally(planned=100, trained=10)
    assert describe(tally, 60.0, left=3725.0).endswith("about 1:02:05 left")
    assert describe(tally, 60.0, left=None).endswith("estimating time left")
    assert describe(tally, 60.0).endswith("about 9:00 left")  # the sweep's own: its runs' pace
