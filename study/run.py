"""Hydra entry point: `python study/run.py -m batch_size=8,64,512`. Composes
conf/config.yaml, checks the values before torch loads, runs the job
(study/runner.py) and returns its objective to the sweeper; errors and exit
status: docs/configuration.md#exit-status."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from study.config import register_configs, validate
from study.errors import (ExitWithLine, RunFailed, UserError, UserExit, describe_user_error, end_like_ctrl_c,
                          stopped)
from study.help import register_help_resolver
from study.records import CLAIM_FILE, RESULT_FILE, objective

log = logging.getLogger("study.run")
register_configs()
register_help_resolver()


# The only targets a config may instantiate (Hydra 1.4 asks for this list).
TRUSTED_TARGETS = [
    "study.sweep.callbacks.Preflight",
    "study.sweep.callbacks.SweepSummary",
    "hydra_plugins.bn_study_launcher.packed_launcher.PackedLauncher",
]


@hydra.main(config_path="../conf", config_name="config", execution_whitelist=TRUSTED_TARGETS)
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    try:
        validate(cfg)  # the job's one check, before torch loads: a bad value is reported at once
        # Imported here, after the check: the runner loads torch (seconds per process), and a bad
        # value must not wait for it (tests/test_train.py::test_validate_runs_before_torch_loads).
        from study.runner import run_job

        record = run_job(cfg, out_dir, overrides=list(hc.overrides.task),
                         experiment=hc.runtime.choices.get("experiment"),
                         sweep_dir=Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None)
    except UserError as e:
        discard_unused_dir(out_dir)
        raise UserExit(str(e)) from None
    log.info("%s: %s -> %s", record["status"], out_dir, "result.json")
    if record["status"] == "failed" and hc.mode != RunMode.MULTIRUN:  # a sweep goes on (study/sweep/callbacks.py)
        error = record.get("error") or {}
        why = " ".join(str(error.get("message", "")).split())
        raise RunFailed(f"the run failed ({error.get('type', 'error')}: {why[:300]}); "
                        f"its record, with the traceback: {out_dir / RESULT_FILE}")
    return objective(record, cfg.objective)


def discard_unused_dir(out_dir: Path) -> None:
    """Remove a job dir that Hydra made for a job that never started training.

    It holds only Hydra's own files (the composed config, the log): left in
    place it would look like a run in `outputs/`.
    """
    if out_dir.is_dir() and not (out_dir / RESULT_FILE).exists() and not (out_dir / CLAIM_FILE).exists():
        shutil.rmtree(out_dir, ignore_errors=True)


def workers_ignore_ctrl_c() -> None:
    """Start joblib's (loky's) worker processes with SIGINT blocked.

    Ctrl-C in a terminal signals the whole foreground process group: each
    worker, caught importing or training, printed its own KeyboardInterrupt
    traceback (29-91 lines) before this process's one line. Only this process
    should answer Ctrl-C; it stops the workers as it ends (joblib terminates
    them). loky's resource tracker is started the same way (its own code
    blocks the signal around the spawn); the mask is inherited across exec.
    """
    try:  # a private module of joblib's: where it moved, there is nothing to patch
        from joblib.externals.loky.backend import fork_exec as loky_fork_exec
    except ImportError:
        return
    real = loky_fork_exec.fork_exec
    if getattr(real, "blocks_sigint", False):
        return

    def fork_exec(*args, **kwargs):
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return real(*args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    fork_exec.blocks_sigint = True
    loky_fork_exec.fork_exec = fork_exec


def cli() -> None:
    # Let Hydra raise instead of printing its multi-line report; the errors
    # that are the user's are reported below in one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    workers_ignore_ctrl_c()
    end_like_ctrl_c()
    try:
        main()
    except ExitWithLine as e:
        print(f"error: {e.message}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt as e:
        sys.exit(stopped(e))
    except Exception as e:
        message = describe_user_error(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
