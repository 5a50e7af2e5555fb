"""The command line as users run it: bad input, and a real Hydra multirun."""

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from helpers import REPO, tiny_overrides

RUN = [sys.executable, str(REPO / "study" / "run.py")]


def run_cli(args, cwd, timeout=300, **extra_env):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | extra_env
    return subprocess.run(RUN + list(args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize(
    "bad, key, allowed",
    [
        (["batch_size=0"], "batch_size", ">= 1"),
        (["batch_size=abc"], "batch_size", "Integer"),
        (["lr=-1"], "lr", "> 0"),
        (["epochs=0"], "epochs", ">= 1"),
        (["model.norm=bogus"], "model.norm", "none, batch"),
        (["foo=1"], "foo", "not in"),
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


def test_a_bad_job_stops_the_sweep_before_any_run(tmp_path, tiny_mnist):
    # batch_size=64 is valid and comes first; the launcher checks every job's
    # values before it starts the first one.
    proc = run_cli(["-m"] + tiny_overrides(tiny_mnist) + ["batch_size=64,1", "model.norm=batch", "epochs=1",
                   f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        "error: batch_size=1 is not allowed: an integer >= 2 with model.norm=batch (batch statistics need 2+ examples)"]
    assert not list(tmp_path.rglob("result.json"))


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
