"""The runs' probes (study/probes.py) as two tidy tables, for the probe claims (C6, C8, C9, C10, C15).

`probe_series`: one row per run x probed step; `probe_finals`: one row per
run (the after-training probes). The statistics count completed runs only,
one record per run (`counted`); the others are named in the claim's evidence
(`left_out`): a diverged run's probe series stops early and would be compared
with full ones.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from analysis.claims.runs import config_of, norm_of, seed_of
from analysis.collect import counted_as, num
from analysis.summary import norm_name

PERCENTILES = ("p15", "p50", "p85")
LANDSCAPE = ("loss_range", "grad_change", "beta_smoothness")
META = ("run", "experiment", "status", "seed", "norm", "activation", "batch_size", "lr", "epochs", "finished_at")
SERIES_FIXED = ("step", "act_p15", "act_p50", "act_p85", *LANDSCAPE, "val_acc")
FINAL_FIELDS = ("eval_mode_acc", "train_mode_acc", "modes_batch_size", "shift_brightness", "shift_contrast",
                "clean_acc", "running_acc", "recomputed_acc")
# What identifies a replicate (seed aside) in the probe claims.
REPLICATE_KEYS = ("experiment", "norm", "activation", "batch_size", "lr")


def _meta(i: int, rec: dict[str, Any]) -> dict[str, Any]:
    model = config_of(rec).get("model") if isinstance(config_of(rec).get("model"), dict) else {}
    return {"run": i, "experiment": rec.get("experiment"), "status": rec.get("status"), "seed": seed_of(rec),
            "norm": norm_of(rec), "activation": model.get("activation"),
            "batch_size": config_of(rec).get("batch_size"), "lr": config_of(rec).get("lr"),
            "epochs": config_of(rec).get("epochs"), "finished_at": rec.get("finished_at")}


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _per_layer(values: Any, prefix: str, first: int = 0) -> dict[str, float]:
    if not isinstance(values, list):
        return {}
    return {f"{prefix}{j}": num(v) for j, v in enumerate(values) if j >= first}


def probe_series(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run x probed step: the run's config, then every step probe flattened.

    `run` is the record's position in `records`. Columns: act_p15/p50/p85
    (activations), grad_norm_<layer> (one per Linear layer, input first),
    ics_distance_<layer> and ics_cosine_<layer> (layers >= 1), loss_range,
    grad_change, beta_smoothness (landscape) and val_acc; NaN where a probe
    did not run or its value was not finite.
    """
    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            continue
        series = _dict(rec.get("probes")).get("series")
        for entry in series if isinstance(series, list) else []:
            if not isinstance(entry, dict):
                continue
            row: dict[str, Any] = {**_meta(i, rec), "step": num(entry.get("step"))}
            row.update({f"act_{p}": num(_dict(entry.get("activations")).get(p)) for p in PERCENTILES})
            row.update(_per_layer(entry.get("grad_norms"), "grad_norm_"))
            row.update(_per_layer(_dict(entry.get("ics")).get("distance"), "ics_distance_", first=1))
            row.update(_per_layer(_dict(entry.get("ics")).get("cosine"), "ics_cosine_", first=1))
            row.update({k: num(_dict(entry.get("landscape")).get(k)) for k in LANDSCAPE})
            row["val_acc"] = num(entry.get("val_acc"))
            rows.append(row)
    df = pd.DataFrame(rows)
    for c in (*META, *SERIES_FIXED):
        if c not in df:
            df[c] = pd.Series(dtype=float)
    layered = sorted((c for c in df.columns if c not in META and c not in SERIES_FIXED),
                     key=lambda c: (c.rsplit("_", 1)[0], int(c.rsplit("_", 1)[1])))
    return df[[*META, *SERIES_FIXED, *layered]]


def probe_finals(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: its config, status, and the after-training probes (modes, shift).

    eval_mode_acc / train_mode_acc: test accuracy with running vs batch
    statistics (modes_batch_size: the batch used in train mode); clean_acc,
    running_acc, recomputed_acc: the clean test set, and the shifted one with
    running statistics or statistics recomputed on it (NaN without running
    statistics). Accuracies are fractions, as in the records.
    """
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            continue
        p = _dict(rec.get("probes"))
        modes, shift = _dict(_dict(p.get("final")).get("modes")), _dict(_dict(p.get("final")).get("shift"))
        series = p.get("series") if isinstance(p.get("series"), list) else []
        rows.append({**_meta(i, rec),
                     "eval_mode_acc": num(modes.get("eval_mode_acc")),
                     "train_mode_acc": num(modes.get("train_mode_acc")),
                     "modes_batch_size": num(modes.get("batch_size")),
                     "shift_brightness": num(shift.get("brightness")),
                     "shift_contrast": num(shift.get("contrast")),
                     "clean_acc": num(shift.get("clean_acc")),
                     "running_acc": num(shift.get("running_acc")),
                     "recomputed_acc": num(shift.get("recomputed_acc")),
                     "probe_every": num(p.get("every")), "probe_seconds": num(p.get("seconds")),
                     "n_probes": len(series)})
    df = pd.DataFrame(rows)
    for c in (*META, *FINAL_FIELDS, "probe_every", "probe_seconds", "n_probes"):
        if c not in df:
            df[c] = pd.Series(dtype=float)
    return df


def counted(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the completed runs, one record per run (collect.counted_as over the replicate keys)."""
    ok = df[df.status == "completed"]
    if ok.empty:
        return ok
    runs = ok.drop_duplicates("run")
    keep = runs.run[counted_as(runs, [*REPLICATE_KEYS, "seed"]) == runs.index]
    return ok[ok.run.isin(set(keep))]


def left_out(finals: pd.DataFrame) -> str:
    """'; left out: 1 diverged (no norm), ...' for runs that did not complete, '' if none."""
    bad = finals[finals.status != "completed"]
    if bad.empty:
        return ""
    parts = [f"{len(g)} {status} ({norm_name(norm)})" for (status, norm), g in
             bad.groupby([bad.status.astype(str), bad.norm.astype(str)], sort=True)]
    return "; left out of the statistics (a run that did not complete has a partial or no probe record): " \
        + ", ".join(parts)


def completed_series(records: list[dict[str, Any]]) -> tuple[pd.DataFrame, str]:
    """The step-probe series of the runs the statistics count, and the note naming the runs left out."""
    return counted(probe_series(records)), left_out(probe_finals(records))


def arms(df: pd.DataFrame) -> list[str]:
    """The arms present, no norm first."""
    present = set(df.norm.dropna().astype(str))
    return [a for a in ("none", "batch") if a in present]


def run_total(series: pd.DataFrame) -> pd.Series:
    """Each run's last probed step (its training length, for a completed run)."""
    return series.groupby("run").step.transform("max")


def seed_order(df: pd.DataFrame) -> list[Any]:
    return sorted(df.seed.dropna().unique(), key=lambda s: (str(type(s)), s))


def layer_columns(df: pd.DataFrame, prefix: str) -> list[tuple[int, str]]:
    """(layer, column) of the per-layer columns `<prefix><layer>` that hold a value."""
    cols = [(int(c[len(prefix):]), c) for c in df.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    return sorted((j, c) for j, c in cols if df[c].notna().any())
