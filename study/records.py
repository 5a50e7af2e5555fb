"""The run record (`result.json`): its schema, building it, writing it
atomically, reading it back checked.

The schema is documented in docs/records.md and written once here
(RECORD_SCHEMA); the analysis, the sweeps and the benchmarks read records
through `read_record`. This module does not import torch at
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
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study import REPO_ROOT
from study.resources import usable_cores

if TYPE_CHECKING:  # torch is imported where needed: the analysis reads records without it
    import torch

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
CLAIM_FILE = ".claimed"  # a job's marker that it started in its dir (study/runner.py: claim_dir)

# Top-level config keys that say how a run is launched or reported, not what
# it computes: left out of a run's identity (its hash) and never a reason to
# treat two runs as different cells. The one definition. (`pack` is set by
# the packed launcher on the job that trains a pack: study/runner.py.)
LAUNCH_ONLY_KEYS = ("trial", "tune", "force", "run_index", "progress_every", "objective", "hydra", "pack",
                    "logger")
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
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide a record from the rest of a team
        with os.fdopen(fd, "w") as f:
            json.dump(_clean(obj), f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process's umask (read by setting it, so once: it does not change under a run)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    try:
        return version(module)
    except PackageNotFoundError:
        return None


_PROCESS_IDS: dict[int, str] = {}


def process_id() -> str:
    """This process, unique over hosts and time: host, pid and when the process first asked (a pid is
    reused after its process ends). Runs timed in one process (one pack, one launcher worker, one
    sequential sweep) ran under the same conditions; runs of two processes (a resumed sweep, two
    workers) need not have."""
    pid = os.getpid()
    if pid not in _PROCESS_IDS:  # keyed by pid: a forked child asks again
        _PROCESS_IDS[pid] = f"{socket.gethostname()}:{pid}:{now_iso()}"
    return _PROCESS_IDS[pid]


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
        # The process that timed the run: throughputs are compared only within one (analysis/summary.py).
        "pid": os.getpid(),
        "process": process_id(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "threads": threads,
        "cpu_count": os.cpu_count(),  # the machine's cores
        "usable_cores": usable_cores(),  # the ones this process may use (affinity, SLURM's CPU count)
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    env.update(git_state())
    return env


def objective(record: dict[str, Any], name: str) -> float:
    """The number a sweeper optimizes; NaN for diverged, pruned or failed runs."""
    value = (record.get("final") or {}).get(name)
    if record["status"] != "completed" or value is None:
        return math.nan
    return float(value)


class RecordError(ValueError):
    """A file that holds no usable run record; `str(e)` says why in one line."""


# The record's schema (docs/records.md; written by study/runner.py run_record), once: key -> (allowed
# types, required). Required are the keys every record has had since the first schema_version 1 that
# say what ran and what it measured; the others (some added later: experiment, pack, probes, run_hash,
# code_version) are checked when present. None in the types: the key may be null.
NUMBER = (int, float)
STATUSES = ("completed", "diverged", "pruned", "failed")
RECORD_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema_version": ((int,), True),
    "status": ((str,), True),
    "seed": ((int,), True),
    "config": ((dict,), True),
    "final": ((dict,), True),
    "history": ((list,), True),
    "experiment": ((str, type(None)), False),
    "overrides": ((list,), False),
    "started_at": ((str,), False),
    "finished_at": ((str,), False),
    "wall_seconds": (NUMBER, False),
    "diverged_at_step": ((int, type(None)), False),
    "probes": ((dict, type(None)), False),
    "cost": ((dict, type(None)), False),  # study/measure/cost.py, runs with cost_repeats > 0
    "data": ((dict,), False),
    "env": ((dict,), False),
    "error": ((dict, type(None)), False),
    "pack": ((dict, type(None)), False),
    "run_hash": ((str,), False),
    "code_version": ((str,), False),
    "reused_from": ((str,), False),
    "reused_at": ((str,), False),
}
# `final` and each `history` entry: the metrics are numbers or null (a diverged run's, a validation
# split of 0 images); `epoch` and `step` are counts. A completed run measured every one of them except
# the validation metrics (null with data.val_size=0).
METRIC_KEYS = ("train_loss", "val_acc", "test_acc", "val_loss")
COUNT_KEYS = ("epoch", "step")
HISTORY_NUMBERS = ("epoch_seconds", "samples_per_second", "eval_seconds", "pack_size", "train_acc",
                   "train_eval_loss")
COMPLETED_NEEDS = ("train_loss", "test_acc", "epoch", "step")
# In `data` (study/data.py load_mnist), where present: records before data.normalize have none.
DATA_SCHEMA: dict[str, tuple[type, ...]] = {"md5": (dict,), "normalize": (str,), "val_size": (int,),
                                            "split_seed": (int,), "n_train": (int,), "n_val": (int,),
                                            "n_test": (int,), "verified": (bool,), "source": (str,)}


def _is(value: Any, types: tuple[type, ...]) -> bool:
    """isinstance, except that a bool is no number (JSON true is not 1)."""
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _type_names(types: tuple[type, ...]) -> str:
    names = {"NoneType": "null", "dict": "an object", "list": "a list", "str": "a string", "int": "an integer",
             "float": "a number", "bool": "true/false"}
    return " or ".join(dict.fromkeys(names.get(t.__name__, t.__name__) for t in types))


def _check_numbers(entry: dict[str, Any], where: str, needed: tuple[str, ...]) -> None:
    for key in (*METRIC_KEYS, *COUNT_KEYS, *HISTORY_NUMBERS):
        if key not in entry:
            if key in needed:
                raise RecordError(f"'{where}' has no '{key}'")
            continue
        v = entry[key]
        if v is None:
            if key in needed:
                raise RecordError(f"'{where}.{key}' is null in a completed run")
        elif key in COUNT_KEYS and not _is(v, (int,)):
            raise RecordError(f"'{where}.{key}' is not an integer ({v!r})")
        elif not _is(v, NUMBER) or (key in needed and not math.isfinite(v)):
            raise RecordError(f"'{where}.{key}' is not a number ({v!r})")


def check_record(rec: dict[str, Any]) -> None:
    """Raise RecordError (one line) where `rec` does not follow RECORD_SCHEMA: a key missing or of the
    wrong type, an unknown status, a metric that is not a number, a completed run without its metrics."""
    for key, (types, required) in RECORD_SCHEMA.items():
        if key not in rec:
            if required:
                raise RecordError(f"no '{key}'")
        elif not _is(rec[key], types):
            raise RecordError(f"'{key}' is not {_type_names(types)} ({type(rec[key]).__name__})")
    if rec["schema_version"] != SCHEMA_VERSION:
        raise RecordError(f"schema_version {rec['schema_version']} (this code reads {SCHEMA_VERSION})")
    status = rec["status"]
    if status not in STATUSES:
        raise RecordError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    _check_numbers(rec["final"], "final", COMPLETED_NEEDS if status == "completed" else ())
    for i, h in enumerate(rec["history"]):
        if not isinstance(h, dict):
            raise RecordError(f"'history[{i}]' is not an object")
        _check_numbers(h, f"history[{i}]", COUNT_KEYS)
    if status == "completed" and not rec["history"]:
        raise RecordError("a completed run with an empty 'history'")
    if status == "failed" and not isinstance(rec.get("error"), dict):
        raise RecordError("a failed run without its 'error'")
    for key, types in DATA_SCHEMA.items():
        data = rec.get("data") or {}
        if data.get(key) is not None and not _is(data[key], types):
            raise RecordError(f"'data.{key}' is not {_type_names(types)} ({data[key]!r})")


def read_record(path: Path) -> dict[str, Any]:
    """The run record in `path`. Raises RecordError when the file cannot be
    read, is not valid JSON, or is not a record of RECORD_SCHEMA (a damaged
    record is no run: it is neither counted nor reused). The one reader of
    result.json: the runner, the sweeper and the analysis all call it."""
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
    check_record(rec)
    return rec
