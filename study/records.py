"""The run record (`result.json`): building it, writing it atomically.

The schema is documented in the README ("The result record"); the analysis,
the sweeps and the benchmarks read it. This module does not import torch at
load time, so that readers of records stay light. Non-finite numbers are written as
null so that every record is strict JSON.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import platform
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where needed: the analysis reads records without it
    import torch

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
CLAIM_FILE = ".claimed"  # a job's marker that it started in its dir (study/runner.py: claim_dir)
REPO_ROOT = Path(__file__).resolve().parents[1]

# Top-level config keys that say how a run is launched or reported, not what
# it computes: left out of a run's identity (its hash) and never a reason to
# treat two runs as different cells. The one definition. (`pack` is set by
# the packed launcher on the job that trains a pack: study/runner.py.)
LAUNCH_ONLY_KEYS = ("trial", "tune", "force", "run_index", "progress_every", "objective", "hydra", "pack")
# Config keys that do not change what a run computes: the launch-only ones, and
# where it runs (threads, device), how it evaluates in chunks (eval_batch_size:
# the same numbers) and where its data comes from (the data are checked by
# md5). Two runs that differ only in these are replicates of one cell for the
# analysis (analysis/summary.py); each covers the keys under it too. The run
# hash keeps threads and device, so a run on other hardware is trained again.
OPERATIONAL_KEYS = (*LAUNCH_ONLY_KEYS, "threads", "device", "eval_batch_size", "data.root", "data.source",
                    "data.verify")


def _clean(obj: Any) -> Any:
    """Recursively replace non-finite floats by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temp file in the same dir, fsync, then rename over `path`.

    A reader (or an interrupted run) sees either the old file or the whole new
    one, never a half-written record.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_clean(obj), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit of the code that ran, and whether tracked files had local edits."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if dirty is None else bool(dirty)}


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def environment(device: "torch.device", threads: int) -> dict[str, Any]:
    """What a reader needs to reproduce or compare a number."""
    import torch  # here, not at the top: the analysis and the sweeper read records without torch

    env = {
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "numpy": _version("numpy"),
        "hydra": _version("hydra-core"),
        "optuna": _version("optuna"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    env.update(git_state())
    return env


class RecordError(ValueError):
    """A file that holds no run record; `str(e)` says why in one line."""


def read_record(path: Path) -> dict[str, Any]:
    """The run record (a JSON object) in `path`. Raises RecordError when the
    file cannot be read, is not valid JSON, or holds something else than an
    object. The one reader of result.json: the runner, the sweeper and the
    analysis all call it."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        rec = json.loads(text)
    except ValueError as e:
        raise RecordError(f"not valid JSON: {e}") from None
    if not isinstance(rec, dict):
        raise RecordError(f"not a JSON object ({type(rec).__name__})")
    return rec
