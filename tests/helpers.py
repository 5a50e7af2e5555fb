"""Shared test helpers: the real Hydra config, shrunk to tiny data; hand-built run records for the claims."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from analysis.claims import evaluate_claim
from analysis.claims.rule import INCONCLUSIVE, CONTRADICTED, SUPPORTED
from analysis.claims.runs import split_by_experiment
from analysis.collect import collect
from study.config import compose_config
from study.runner import run_job

REPO = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(REPO / "study" / "run.py")]  # the command line as users run it


def run_cli(args, cwd, timeout=300, **extra_env) -> subprocess.CompletedProcess:
    """`python study/run.py ARGS` in a subprocess (HYDRA_FULL_ERROR unset, as a user's shell has it)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | extra_env
    return subprocess.run(RUN + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)



def group_processes(pgid: int) -> list[bytes]:
    """The command lines of the live (not zombie) processes in process group `pgid`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append((stat.parent / "cmdline").read_bytes())
        except (OSError, IndexError, ValueError):
            continue
    return found

def ok(proc: subprocess.CompletedProcess) -> str:
    """A finished command's output, asserting it exited 0."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out

# torch.compile on CPU needs a C++ compiler (Inductor looks for $CXX, else
# g++); .ci/run installs one, elsewhere the compiled paths' tests skip.
HAS_CXX = shutil.which(os.environ.get("CXX", "g++")) is not None
needs_cxx = pytest.mark.skipif(not HAS_CXX, reason="torch.compile needs a C++ compiler ($CXX or g++)")


def tiny_overrides(root: Path) -> list[str]:
    """Point the real config at the test's tiny MNIST-format files.

    force=true: every test trains (tests of reuse turn it off explicitly).
    threads=1: two OpenMP threads on a busy 2-core machine can be 20x slower.
    """
    return [f"data.root={root}", "data.verify=false", "data.val_size=200", "progress_every=0",
            "force=true", f"run_index={root}/.run-index", "threads=1"]


EPOCHS = 2  # make_runs: epochs per run
NORMS = ["model.norm=none", "model.norm=batch"]


def make_runs(root: Path, out: Path, grid: list[list[str]], extra: tuple[str, ...] = ()) -> list[tuple[Path, dict]]:
    """Train one real run per combination of the grid's overrides; return (run dir, record) pairs."""
    made = []
    for i, combo in enumerate(itertools.product(*grid)):
        # One thread: the runs are tiny, and on a busy 2-core machine two OpenMP
        # threads per run wait on each other far longer than they compute.
        overrides = [f"epochs={EPOCHS}", "threads=1", *extra, *combo]
        run_dir = out / f"{i}_{','.join(combo)}"
        made.append((run_dir, run_job(compose_config(tiny_overrides(root) + overrides), run_dir, overrides)))
    return made


# ------------------------------------------------------------------ run records for the claims
BROKEN = "could not be computed"  # the guard's words: a claim that raised
PROCESS = "test:100:2026-01-01T00:00:00+00:00"  # study.records.process_id of the sweep that timed the runs


def record(exp: str, norm: str, seed: int, *, batch: int = 64, lr: float = 0.01, status: str = "completed",
           val: float = 0.95, test: float | None = None, history: list[dict] | None = None,
           probes: dict | None = None, model: dict | None = None, steps: int | None = None,
           trial: Any = "absent") -> dict:
    test = val if test is None else test
    cfg: dict[str, Any] = {"model": {"norm": norm, **(model or {})}, "batch_size": batch, "lr": lr, "seed": seed,
                           "epochs": 1, "steps": steps}
    if trial != "absent":
        cfg["trial"] = {"number": trial}
    done = status == "completed"
    final = {"val_acc": val if done else None, "test_acc": test if done else None, "train_loss": 0.1 if done else None,
             "val_loss": 0.1 if done else None, "epoch": 1, "step": 100}
    if history is None:
        history = [{"epoch": 1, "step": 100, "val_acc": val, "test_acc": test, "train_loss": 0.1, "val_loss": 0.1,
                    "epoch_seconds": 1.0, "samples_per_second": 6400.0, "eval_seconds": 0.1,
                    "pack_size": 1}] if done else []
    return {"schema_version": 1, "experiment": exp, "status": status, "seed": seed, "config": cfg, "final": final,
            "history": history,
            "probes": probes, "finished_at": "2026-01-01T00:00:00+00:00",
            # summary's cost finding reads env.device_name (a column that is dropped when all null)
            # process: the one that timed the run (C14 compares timings within one process only)
            "env": {"device_name": "test-cpu", "threads": 1, "hostname": "test", "process": PROCESS}}


def write_runs(root: Path, recs: list[dict]) -> Path:
    """Each record as `root/<i>/result.json`, as a sweep leaves them; returns `root`."""
    for i, r in enumerate(recs):
        (root / str(i)).mkdir(parents=True)
        (root / str(i) / "result.json").write_text(json.dumps(r))
    return root


def load(tmp: Path, recs: list[dict]) -> dict:
    """The records' runs per preset, read back as the report reads them."""
    return split_by_experiment(collect([write_runs(tmp / "runs", recs)]))


VERDICTS = {1: SUPPORTED, -1: CONTRADICTED, 0: INCONCLUSIVE}  # a case's direction -> the verdict it must get


def run_claim(claim: str, tmp: Path, recs: list[dict]):
    exps = load(tmp, recs)
    res = evaluate_claim(claim, exps, tmp / "report")
    assert BROKEN not in res.evidence, res.evidence
    return res


def assert_png(tmp: Path, res) -> None:
    assert res.figure == f"claim_{res.claim.lower()}.png"
    data = (tmp / "report" / res.figure).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def c2_untested_records(experiment: str | None) -> list[dict]:
    """No norm diverges at lr 1, which no BN run tried; BN's grid differs per seed; at batch 512 no BN run at all.

    Compared on each arm's own grid, BN's largest stable lr (0.03 to 0.3) beats no norm's (0.01) for every
    seed, and the ratio's interval is clear of zero; but no BN run tested an lr where no norm failed.
    """
    bn_top = [0.1, 0.03, 0.3, 0.1, 0.3]
    recs = []
    for s, top in enumerate(bn_top):
        recs += [record(experiment, "batch", s, lr=lr, val=0.9 + 0.001 * s) for lr in (0.01, top)]
        for batch in (64, 512):
            recs += [record(experiment, "none", s, batch=batch, lr=0.01, val=0.9 + 0.001 * s),
                     record(experiment, "none", s, batch=batch, lr=1.0, status="diverged")]
    return recs


# ------------------------------------------------------------------ Optuna sweeps on the tiny data
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/optuna.db?timeout=60"


def multirun_args(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    """A multirun on the tiny data that reuses finished runs (no force), with
    its own run index, in-process jobs on one thread and no report."""
    base = [o for o in tiny_overrides(root) if not o.startswith(("force=", "run_index="))]
    return ["-m", *base, f"run_index={tmp_path}/.run-index", "threads=1", "hydra.launcher.n_jobs=1",
            "hydra.callbacks.summary.report=false", *extra]


def studies(tmp_path: Path) -> dict[str, optuna.Study]:
    url = storage_url(tmp_path)
    return {name: optuna.load_study(study_name=name, storage=url)
            for name in optuna.get_all_study_names(url)}
