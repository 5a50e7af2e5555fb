"""The command line as users run it: bad input, and a real Hydra multirun."""

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from helpers import REPO, run_cli, tiny_overrides


@pytest.mark.parametrize(
    "bad, key, allowed",
    [
        (["batch_size=0"], "batch_size", ">= 1"),
        (["batch_size=abc"], "batch_size", "Integer"),
        (["lr=-1"], "lr", "> 0"),
        (["lr=1e39"], "lr", "at most 3.403e+38 (float32's largest"),  # diverged on one path, crashed on others
        (["lr=nan"], "lr", "> 0"),
        (["epochs=0"], "epochs", ">= 1"),
        (["warmup_epochs=-1"], "warmup_epochs", "from 0 (no warm-up) to epochs (5)"),
        (["epochs=2", "warmup_epochs=3"], "warmup_epochs", "to epochs (2)"),
        (["warmup_lr=nan"], "warmup_lr", ">= 0"),
        (["model.norm=bogus"], "model.norm", "none, batch"),
        (["foo=1"], "foo", "not in"),
        (["+lr_typo=0.5"], "lr_typo=0.5", "the config has no such key (a '+' added it"),  # trained at lr 0.01
        (["+model.widht=3"], "model.widht=3", "no such key"),
        (["batch_size=1", "model.norm=batch"], "batch_size", ">= 2 with model.norm=batch"),
        (["experiment=nope"], "experiment/nope", "Could not find"),
    ],
)
def test_bad_input_one_line_no_traceback_no_record(tmp_path, tiny_mnist, bad, key, allowed):
    proc = run_cli(tiny_overrides(tiny_mnist) + bad + [f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and key in lines[0] and allowed in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not list(tmp_path.rglob("result.json"))
    assert not (tmp_path / "run").exists()  # no half-made run dir either


def test_an_empty_data_root_is_refused_not_read_as_the_current_folder(tmp_path):
    proc = run_cli(["epochs=1", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, BN_STUDY_DATA="")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: data.root='' is not allowed: a folder (an empty one means the current folder: BN_STUDY_DATA set "
        "but empty? unset it for the default ~/.cache/bn-study)"]
    assert list(tmp_path.iterdir()) == []  # no MNIST fetched here, no run dir


def test_a_bad_job_stops_the_sweep_before_any_run(tmp_path, tiny_mnist):
    # batch_size=64 is valid and comes first; the launcher checks every job's
    # values before it starts the first one.
    proc = run_cli(["-m"] + tiny_overrides(tiny_mnist) + ["batch_size=64,1", "model.norm=batch", "epochs=1",
                   f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: batch_size=1 is not allowed: an integer >= 2 with model.norm=batch (batch statistics need 2+ examples)"]
    assert not list(tmp_path.rglob("result.json"))
    assert "results:" not in proc.stdout + proc.stderr  # nothing that reads as a sweep's results...
    assert not (tmp_path / "sweep").exists()  # ...nor a dir holding only its config dump


@pytest.mark.parametrize("multirun", [False, True])
def test_compile_without_a_cpp_compiler_stops_before_any_run(tmp_path, tiny_mnist, multirun):
    """compile=true needs Inductor's C++ compiler on CPU (CXX names it); without
    one, a run or a whole sweep stops at once with one line."""
    args = (["-m", "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep"] if multirun
            else [f"hydra.run.dir={tmp_path}/run"])
    proc = run_cli(tiny_overrides(tiny_mnist) + ["compile=true", "epochs=1"] + args, cwd=tmp_path,
                   CXX=str(tmp_path / "no-such-compiler"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "error: compile=true is not allowed: false here: torch.compile on CPU needs a C++ compiler"), proc.stderr
    assert "no-such-compiler" in lines[0]
    assert not list(tmp_path.rglob("result.json"))


def no_cuda():
    import torch

    return not torch.cuda.is_available()


@pytest.mark.skipif(not no_cuda(), reason="needs a machine without CUDA")
def test_a_cuda_sweep_without_cuda_stops_before_any_job_in_seconds(tmp_path, tiny_mnist):
    """The launcher asks torch (only then loaded) before any job runs; the
    subprocess timeout bounds the wait (a job-time refusal took 100+ s)."""
    proc = run_cli(["-m"] + tiny_overrides(tiny_mnist) + ["device=cuda", "batch_size=8,64", "epochs=1",
                   f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: device=cuda is not allowed: cpu or auto here: torch sees no CUDA device"]
    assert not list(tmp_path.rglob("result.json"))


def test_a_user_error_raised_in_a_sweep_worker_comes_back_in_seconds(tmp_path, tiny_mnist):
    """A batch larger than the files' training split (1,000 images here) is
    found once a job reads the data, on a loky worker; its one line must not
    wait on Hydra pickling its failed job (100+ s before the fix)."""
    proc = run_cli(["-m"] + tiny_overrides(tiny_mnist) + ["batch_size=2000", "model.norm=none", "seed=0,1",
                   "hydra.launcher.n_jobs=2", "hydra.launcher.max_pack=1", f"hydra.sweep.dir={tmp_path}/sweep"],
                   cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        f"error: batch_size=2000 is not allowed: at most the training split's 1000 images "
        f"(1200 in {tiny_mnist}, data.val_size=200 of them held out)"]
    assert not list(tmp_path.rglob("result.json"))


# study/run.py as users run it, with one change: training crashes at batch
# size 16 (a bug, an out-of-memory). Nothing in the study may offer a switch
# for that, so the crash is put in before the entry point runs.
CRASH_AT_BATCH_16 = f"""
import runpy, sys
import study.train

real = study.train.train_runs

def train_runs(spec, *args, **kwargs):
    if spec.batch_size == 16:
        raise RuntimeError("simulated crash in training")
    return real(spec, *args, **kwargs)

study.train.train_runs = train_runs  # study.runner, imported later, takes this one
sys.argv[0] = {str(REPO / "study" / "run.py")!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_crashing_cli(args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-c", CRASH_AT_BATCH_16, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def error_lines(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


def test_a_run_that_crashes_in_training_exits_1_and_says_where_its_record_is(tmp_path, tiny_mnist):
    run = tmp_path / "run"
    proc = run_crashing_cli(tiny_overrides(tiny_mnist) + ["batch_size=16", "epochs=1", f"hydra.run.dir={run}"],
                            cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    record = run / "result.json"
    assert error_lines(proc) == [f"error: the run failed (RuntimeError: simulated crash in training); "
                                 f"its record, with the traceback: {record}"], proc.stderr[-3000:]
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()][-1] == error_lines(proc)[0]
    rec = json.loads(record.read_text())
    assert rec["status"] == "failed" and "simulated crash in training" in rec["error"]["traceback"]


@pytest.mark.slow
def test_a_sweep_goes_on_past_a_crashed_run_and_exits_1_at_its_end(tmp_path, tiny_mnist):
    sweep = tmp_path / "sweep"
    proc = run_crashing_cli(["-m"] + tiny_overrides(tiny_mnist) + [
        "batch_size=16,32", "model.norm=none", "seed=0", "epochs=1", "hydra.launcher.n_jobs=1",
        f"hydra.sweep.dir={sweep}", "hydra.callbacks.summary.report=false"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    statuses = {json.loads(p.read_text())["config"]["batch_size"]: json.loads(p.read_text())["status"]
                for p in sweep.glob("*/result.json")}
    assert statuses == {16: "failed", 32: "completed"}  # batch 16 ran first (the costlier pack)
    assert f"results: {sweep.resolve()} (1 completed, 1 failed)" in proc.stdout + proc.stderr
    assert error_lines(proc) == [f"error: 1 of 2 runs failed; their records (status failed, with the traceback) "
                                 f"are under {sweep.resolve()}"], proc.stderr[-3000:]


@pytest.mark.slow
def test_real_multirun_bn_vs_no_bn_grid(tmp_path, tiny_mnist):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m"] + tiny_overrides(tiny_mnist) + ["epochs=1", "batch_size=16,64",
                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = sorted(sweep.glob("*/result.json"))
    # The primary config's sweep adds model.norm=none,batch x seed=0,1,2.
    assert len(records) == 12
    cells = set()
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["status"] == "completed"
        cfg = rec["config"]
        cells.add((cfg["batch_size"], cfg["model"]["norm"], cfg["seed"]))
        # the dir name says which run it is
        name = path.parent.name
        assert f"batch_size={cfg['batch_size']}" in name and f"model.norm={cfg['model']['norm']}" in name
        assert f"seed={cfg['seed']}" in name
    assert cells == {(b, n, s) for b in (16, 64) for n in ("none", "batch") for s in (0, 1, 2)}
    assert f"results: {sweep.resolve()} (12 completed)" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_user_override_replaces_the_default_sweep(tmp_path, tiny_mnist):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m"] + tiny_overrides(tiny_mnist) + ["epochs=1", "batch_size=32", "model.norm=batch",
                   "seed=7", f"hydra.sweep.dir={sweep}", "hydra.callbacks.summary.report=false"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(p.read_text()) for p in sweep.glob("*/result.json")]
    assert [(r["config"]["model"]["norm"], r["seed"]) for r in recs] == [("batch", 7)]


def _finals(sweep):
    out = {}
    for path in sweep.glob("*/result.json"):
        rec = json.loads(path.read_text())
        out[(rec["config"]["model"]["norm"], rec["config"]["lr"], rec["seed"])] = rec
    return out


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["hydra/launcher=packed hydra.launcher.n_jobs=2",
                                      "hydra/launcher=basic"])
def test_packed_sweep_matches_other_launchers(tmp_path, tiny_mnist, launcher):
    """The default (packed, in-process) sweep gives the numbers of a basic-launcher
    sweep and of the packed launcher on 2 joblib workers (one thread each).
    The seeds and learning rates of a norm train as one pack (plain SGD)."""
    common = ["-m"] + tiny_overrides(tiny_mnist) + ["epochs=1", "batch_size=16", "threads=1", "lr=0.01,0.05",
                                                    "hydra.callbacks.summary.report=false"]
    packed = run_cli(common + [f"hydra.sweep.dir={tmp_path}/packed"], cwd=tmp_path)
    other = run_cli(common + launcher.split() + [f"hydra.sweep.dir={tmp_path}/other"], cwd=tmp_path)
    assert packed.returncode == 0 and other.returncode == 0, packed.stderr[-2000:] + other.stderr[-2000:]
    a, b = _finals(tmp_path / "packed"), _finals(tmp_path / "other")
    assert set(a) == set(b) == {(n, lr, s) for n in ("none", "batch") for lr in (0.01, 0.05) for s in (0, 1, 2)}
    for (norm, lr, seed), rec in a.items():
        assert rec["pack"]["size"] == 6
        assert sorted(zip(rec["pack"]["seeds"], rec["pack"]["lrs"])) == sorted(
            (s, v) for v in (0.01, 0.05) for s in (0, 1, 2))
    assert a[("none", 0.01, 0)]["final"]["train_loss"] != pytest.approx(a[("none", 0.05, 0)]["final"]["train_loss"])
    # Each run's dir is a Hydra job dir with its own config; the job of each pack's
    # first member carries the pack (study.runner).
    saved = [OmegaConf.load(p) for p in sorted((tmp_path / "packed").glob("*/.hydra/config.yaml"))]
    assert sorted((c.model.norm, c.lr, c.seed) for c in saved) == sorted(a)
    assert sorted(len(c.pack.members) for c in saved if "pack" in c) == [6, 6]
    for key in a:
        assert a[key]["final"]["train_loss"] == pytest.approx(b[key]["final"]["train_loss"], rel=1e-4)
        assert a[key]["final"]["val_acc"] == pytest.approx(b[key]["final"]["val_acc"], abs=1 / 200 + 1e-9)
