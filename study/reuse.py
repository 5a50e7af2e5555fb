"""Reuse of finished runs: a job whose run already finished copies its record.

A run is identified by `run_hash`: its resolved config (launch-only keys
aside), the code that computes it (`code_version`) and torch's version.
Finished runs (completed or diverged; never failed ones) are indexed by
that hash under `run_index`, one small JSON file each, so that any later
job of the same run finds the record instead of training again
(`force=true` retrains).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from study import REPO_ROOT
from study.errors import UserError
from study.records import (LAUNCH_ONLY_KEYS, OPERATIONAL_KEYS, RESULT_FILE, RecordError, now_iso, read_record,
                           write_json_atomic)

log = logging.getLogger(__name__)

CODE_DIRS = ("study", "hydra_plugins")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the code that computes a run (the .py files that train)."""
    h = hashlib.sha256()
    for d in CODE_DIRS:
        for path in sorted((REPO_ROOT / d).rglob("*.py")):
            h.update(str(path.relative_to(REPO_ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain values, launch-only keys left out."""
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for k in LAUNCH_ONLY_KEYS:
        plain.pop(k, None)
    return plain


def run_hash(cfg: DictConfig) -> str:
    """Same resolved config (launch-only keys aside), code and torch -> same hash.

    Not included: the data files' content. With data.verify=true they are the
    official MNIST (checked); with data.verify=false, replacing the files
    under the same root needs force=true to retrain.
    """
    import torch  # its version only; callers have loaded it

    ident = json.dumps({"config": identity(cfg), "code": code_version(), "torch": torch.__version__},
                       sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def find_reusable(cfg: DictConfig) -> Optional[tuple[Path, dict[str, Any]]]:
    """A finished run (completed or diverged) of exactly this config and code.

    None where there is none, and where the indexed record is gone or damaged
    (read_record's schema check): such a run is trained again, never reused.
    """
    want = run_hash(cfg)
    entry = Path(cfg.run_index) / f"{want}.json"
    try:
        # Relative to the index dir (or absolute, as older entries are).
        path = Path(os.path.normpath(Path(cfg.run_index) / json.loads(entry.read_text())["record"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("run index entry %s unreadable (%s): training again", entry, e)
        return None
    try:
        rec = read_record(path)
    except RecordError as e:
        log.warning("the indexed run %s is not reusable (%s): training again", path, e)
        return None
    if rec.get("run_hash") != want or rec["status"] not in ("completed", "diverged"):
        return None
    return path, rec


def index_run(cfg: DictConfig, record_path: Path) -> None:
    """Make the finished run at `record_path` findable by `find_reusable`.
    The entry holds the record's path relative to the index dir, so that the
    outputs folder (index and runs) can move or be mounted elsewhere."""
    index = Path(cfg.run_index)
    record = os.path.relpath(record_path.resolve(), index.resolve())
    write_json_atomic(index / f"{run_hash(cfg)}.json", {"record": record, "indexed_at": now_iso()})


def index_claim(cfg: DictConfig, hash_: Optional[str] = None) -> Path:
    """Where a run in training is claimed (study/claims.py): beside its index
    entry, so that every sweep that shares the run index sees it."""
    return Path(cfg.run_index) / f"{hash_ or run_hash(cfg)}.claim"


def _cell(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config as flat `key.sub` -> value, without the keys that do not
    change what it computes (OPERATIONAL_KEYS)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(config, "")
    return {k: v for k, v in flat.items()
            if not any(k == op or k.startswith(op + ".") for op in OPERATIONAL_KEYS)}


def record_in_dir(run_dir: Path, config: dict[str, Any], experiment: Optional[str]) -> Optional[dict[str, Any]]:
    """The readable record in `run_dir`, where it is a run of `config` (plain
    values; operational keys aside) launched with preset `experiment`.

    None where the dir holds no record, or a damaged one (the run is trained
    again). A dir that holds another config's run belongs to another sweep:
    a UserError (one line) names the dir and the first key that differs.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"output dir {run_dir} is a file, not a folder; give the run another dir "
                        "(hydra.sweep.dir or hydra.run.dir)")
    path = run_dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        rec = read_record(path)
    except RecordError as e:
        log.warning("%s is damaged (%s): training that run again", path, e)
        return None
    there, here = _cell(rec["config"]), _cell(config)
    if there != here or rec.get("experiment") != experiment:
        key = next((k for k in sorted(set(there) | set(here)) if there.get(k) != here.get(k)), None)
        what = (f"{key}={there.get(key, '(unset)')} there, {here.get(key, '(unset)')} here" if key
                else f"preset experiment={rec.get('experiment')} there, {experiment} here")
        raise UserError(f"output dir {run_dir} holds another sweep's run ({what}); give this sweep a new "
                        "hydra.sweep.dir (or hydra.run.dir), or leave it out for a new timestamped one")
    return rec


def reused_record(found: tuple[Path, dict[str, Any]], overrides: list[str],
                  experiment: Optional[str]) -> dict[str, Any]:
    """The record of a job that reuses the finished run `found`.

    The same run may serve two presets (e.g. the notebook grid and a claim's
    grid): the copy names the preset of this job, and where it came from.
    """
    path, old = found
    return dict(old, overrides=list(overrides), experiment=experiment, reused_from=str(path), reused_at=now_iso())
