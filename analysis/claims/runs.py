"""The runs a claim reads: each preset's runs, analyzed on their own, and the guard around a claim.

`split_by_experiment` groups a collection's runs by preset (and seed set);
`ClaimRuns` is what a claim module's `evaluate(runs, out)` receives: its
presets' runs (`runs.need`), its margin (`runs.claim.margin`) and its result's
frame (`runs.result`). `guarded` runs a claim so that it never raises into the
report. Below: reading records, and accuracies with diverged runs at chance.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import pandas as pd

from analysis.claims import Claim, in_replication
from analysis.claims.result import ClaimResult, bound_note, flag_zero_width, value_text
from analysis.claims.rule import ERROR, INCONCLUSIVE, NOT_RUN, PREMISE_NOT_MET, combine
from analysis.collect import Collection, finite
from analysis.stats import Difference, MeanInterval
from analysis.summary import Analysis, analyze
from analysis.text import estimate

QUICK_PREFIX = "quick/"
NO_PRESET = "(no preset)"  # runs launched without experiment=...


@dataclass
class ExperimentRuns:
    """The runs of one preset (`experiment` in their records), analyzed on their own."""

    name: str  # the preset, without a `quick/` prefix
    quick: bool  # the runs came from the quick/ variant
    records: list[dict[str, Any]]  # deduplicated result.json records
    analysis: Analysis  # summary.analyze over just these runs

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run (analysis.runs: config columns flattened, final metrics, status)."""
        return self.analysis.runs

    @property
    def label(self) -> str:
        return f"{QUICK_PREFIX if self.quick else ''}{self.name}"


def preset_of(experiment: Any) -> tuple[str, bool]:
    """(preset name, quick variant?) of a record's `experiment` value."""
    raw = experiment if isinstance(experiment, str) and experiment else NO_PRESET
    quick = raw.startswith(QUICK_PREFIX)
    return (raw[len(QUICK_PREFIX):] if quick else raw), quick


def split_by_experiment(col: Collection, replication: Optional[bool] = None) -> dict[str, ExperimentRuns]:
    """The runs of each preset, each analyzed on its own.

    Runs of `quick/<name>` count as `<name>`, but only where the full preset
    has no runs here (the two budgets are not pooled). Runs launched without
    a preset are grouped under NO_PRESET. `replication`: only the runs of
    the replication seed set (True: seeds >= REPLICATION_SEED), only the
    first set's (False), or all (None).
    """
    keys = [preset_of(e) for e in (col.runs["experiment"] if "experiment" in col.runs else [None] * len(col.runs))]
    if replication is not None:
        seeds = col.runs["seed"] if "seed" in col.runs else [None] * len(col.runs)
        keep = [in_replication(s) == replication for s in seeds]
        keys = [k if ok else None for k, ok in zip(keys, keep)]
    present = set(k for k in keys if k is not None)
    out: dict[str, ExperimentRuns] = {}
    for name, quick in sorted(present):
        if quick and (name, False) in present:
            continue
        mask = [k == (name, quick) for k in keys]
        records = [r for r in col.records if preset_of(r.get("experiment")) == (name, quick)
                   and (replication is None or in_replication(seed_of(r)) == replication)]
        out[name] = ExperimentRuns(name=name, quick=quick, records=records,
                                   analysis=analyze(subset(col, mask, records)))
    return out


def subset(col: Collection, mask: list[bool], records: list[dict[str, Any]]) -> Collection:
    """A Collection of the runs selected by `mask` (and their records)."""
    runs = col.runs[mask].reset_index(drop=True).copy()
    # Config keys that only other presets' records have are not this preset's keys.
    config = [c for c in col.config_columns if c in runs.columns and runs[c].notna().any()]
    # The tuning studies these runs belong to (a preset without a tuning sweep names none).
    here = set(runs["study"].dropna().astype(str)) if "study" in runs else set()
    tuning = {url: [n for n in names if n in here] for url, names in col.tuning_studies.items()}
    return Collection(runs=runs, history=col.history[col.history.run.isin(set(runs["run"]))].reset_index(drop=True),
                      records=records, config_columns=config, problems=[], sources=col.sources,
                      studies=col.studies, duplicates=[], tuning_studies={u: n for u, n in tuning.items() if n})


def runs_table(e: ExperimentRuns) -> pd.DataFrame:
    """A preset's run table with the columns every claim reads (NaN where absent), batch size and lr numeric."""
    df = e.runs.copy()
    for c in ("norm", "batch_size", "lr", "seed", "status", "val_acc", "test_acc"):
        if c not in df.columns:
            df[c] = np.nan
    df["batch_size"] = pd.to_numeric(df["batch_size"], errors="coerce")
    df["lr"] = pd.to_numeric(df["lr"], errors="coerce")
    return df


def families(exp: ExperimentRuns) -> set[str]:
    """The model families (`model.family`) of a preset's runs; records older than the key are MLPs."""
    df = exp.runs
    if "model.family" not in df:
        return {"mlp"}
    return {str(f) if isinstance(f, str) else "mlp" for f in df["model.family"]}


def column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series(np.nan, index=df.index, dtype=float)


class NotRun(Exception):
    """A preset the claim needs has no runs here (raised by `ClaimRuns.need`)."""


@dataclass
class ClaimRuns:
    """The runs one claim reads, and the frame of its result (claim, title, presets, literature)."""

    claim: Claim
    exps: Mapping[str, ExperimentRuns]  # every preset's runs in the report
    literature: str
    stand_in: Optional[ExperimentRuns] = None  # a sweep without a preset that tests the claim (Claim.plain_sweep)
    aliases: Mapping[str, str] = field(default_factory=dict)  # preset -> the conv-net preset read instead (Claim.conv)

    def get(self, preset: str) -> Optional[ExperimentRuns]:
        """The runs of `preset` (of its conv-net variant where `aliases` says so), or None; a plain sweep
        stands in for the claim's first preset."""
        e = self.exps.get(self.aliases.get(preset, preset))
        if e is None and preset == self.claim.presets[0]:
            return self.stand_in
        return e

    def need(self, preset: str) -> ExperimentRuns:
        """The runs of `preset`; without them the claim is 'not run'."""
        e = self.get(preset)
        if e is None:
            raise NotRun(preset)
        return e

    @property
    def experiment(self) -> str:
        """The presets it reads, as the table names them (quick/<name> where the runs came from the quick variant)."""
        return ", ".join(e.label if (e := self.get(p)) is not None else p for p in self.claim.presets)

    def result(self, verdict: str, statistic: str, *, interval: Difference | MeanInterval | None = None,
               **fields: Any) -> ClaimResult:
        """The claim's row; `interval` fills value, low and high (None where not finite)."""
        if interval is not None:
            fields["value"], fields["low"], fields["high"] = _bounds(interval)
            fields.setdefault("seeds", _replicates(interval))
        if "settings" in fields:  # (label, interval, verdict) per setting, as rule.combine got them
            fields["settings"] = tuple((str(label), value_text(*_bounds(x), fields.get("unit", "")), v)
                                       for label, x, v in fields["settings"])
        if self.aliases and fields.get("evidence"):
            fields["evidence"] = f"On the conv net (model=cnn): {fields['evidence']}"
        fields.setdefault("experiment", self.experiment)
        fields.setdefault("margin", self.claim.margin)
        return ClaimResult(claim=self.claim.id, title=self.claim.title, verdict=verdict, statistic=statistic,
                           literature=self.literature, **fields)

    def combined(self, statistic: str, settings: list[tuple[str, Any, str]], **fields: Any) -> ClaimResult:
        """The row of a claim checked per setting: its verdict combines the settings' (rule.combine), and the
        row keeps each setting's (label, interval, verdict)."""
        return self.result(combine(v for *_, v in settings), statistic, settings=settings, **fields)

    def inconclusive(self, statistic: str, why: str, **fields: Any) -> ClaimResult:
        return self.result(INCONCLUSIVE, statistic, evidence=why, **fields)

    def premise_not_met(self, statistic: str, why: str, **fields: Any) -> ClaimResult:
        """The difference the claim is about is absent from the data (`why` gives the numbers)."""
        return self.result(PREMISE_NOT_MET, statistic, evidence=why, **fields)

    def not_run(self, why: str = "") -> ClaimResult:
        presets = [self.aliases.get(p, p) for p in self.claim.presets]
        cmd = "; ".join(f"python study/run.py -m experiment={p}" for p in presets)
        return self.result(NOT_RUN, "", experiment=", ".join(presets),
                           evidence=(why or "no runs of its preset here") + f" (run: {cmd}, or python -m study.suite)")


def _bounds(x: Difference | MeanInterval) -> tuple[Optional[float], ...]:
    return tuple(float(b) if b is not None and math.isfinite(b) else None for b in (estimate(x), x.low, x.high))


def _replicates(x: Difference | MeanInterval) -> int:
    """The replicates behind an interval: n of a mean, the smaller arm's n of a difference."""
    return int(min(x.n_a, x.n_b)) if isinstance(x, Difference) else int(x.n)


def guarded(fn: Callable[[ClaimRuns, Path], ClaimResult], runs: ClaimRuns, out: Path) -> ClaimResult:
    """`fn(runs, out)`, never raising: a missing preset gives a 'not run' row; a claim whose code raises gives
    an 'error' row naming the exception (a bug is never a verdict), not a crashed report. Also flags a
    zero-width headline interval and states the bound of an undecided one in the evidence."""
    try:
        res = flag_zero_width(fn(runs, Path(out)))
    except NotRun as e:
        return runs.not_run(f"no runs of preset {e} here")
    except Exception as e:  # the report must still build; the row names the error and the log has the traceback
        logging.getLogger(__name__).exception("claim %s could not be computed", runs.claim.id)
        return runs.result(ERROR, "", evidence=f"the claim's code raised {type(e).__name__}: {e} (a bug or data it "
                                               "does not handle, not a verdict; the log has the traceback)")
    note = bound_note(res)
    if note and note not in res.evidence:
        res.evidence = f"{res.evidence.rstrip('. ')}. {note}."
    return res


# ------------------------------------------------------------------ reading records
def config_of(r: dict[str, Any]) -> dict[str, Any]:
    c = r.get("config")
    return c if isinstance(c, dict) else {}


def norm_of(r: dict[str, Any]) -> Any:
    m = config_of(r).get("model")
    return m.get("norm") if isinstance(m, dict) else None


def activation_of(r: dict[str, Any], default: str) -> str:
    """A record's hidden activation (`model.activation`), `default` where the record has none."""
    m = config_of(r).get("model")
    return str(m.get("activation") or default) if isinstance(m, dict) else default


def seed_of(r: dict[str, Any]) -> Any:
    return r.get("seed", config_of(r).get("seed"))


def val_series(r: dict[str, Any]) -> tuple[list[tuple[float, float]], str]:
    """(step, val_acc) pairs from the val_acc probe, else from the per-epoch history; and which."""
    probes = r.get("probes")
    series = probes.get("series") if isinstance(probes, dict) else None
    pts = [(float(s["step"]), float(s["val_acc"])) for s in (series if isinstance(series, list) else [])
           if isinstance(s, dict) and finite(s.get("step")) and finite(s.get("val_acc"))]
    if pts:
        return sorted(pts), "probe"
    hist = r.get("history") if isinstance(r.get("history"), list) else []
    pts = [(float(h["step"]), float(h["val_acc"])) for h in hist
           if isinstance(h, dict) and finite(h.get("step")) and finite(h.get("val_acc"))]
    return sorted(pts), ("history" if pts else "none")


# ------------------------------------------------------------------ accuracies, diverged runs at chance
CHANCE_ACC = 0.1  # accuracy a diverged run counts at where accuracies are compared (ten classes)
DIVERGED_NOTE = f"A diverged run counts at chance accuracy ({CHANCE_ACC:.0%}); failed and pruned runs are left out"


def acc_values(g: pd.DataFrame, metric: str, scale: float = 100.0) -> tuple[list[float], int, int]:
    """Per-run accuracies in points (completed: the metric; diverged: chance); (values, n diverged, n left out)."""
    vals: list[float] = []
    diverged = left_out = 0
    for status, v in zip(g["status"], column(g, metric)):
        if status == "completed" and finite(v):
            vals.append(scale * float(v))
        elif status == "diverged":
            vals.append(scale * CHANCE_ACC)
            diverged += 1
        else:
            left_out += 1
    return vals, diverged, left_out


def counts_note(diverged: int, left_out: int) -> str:
    parts = []
    if diverged:
        parts.append(f"{diverged} diverged run{'s' if diverged != 1 else ''} counted at chance")
    if left_out:
        parts.append(f"{left_out} failed/pruned/incomplete run{'s' if left_out != 1 else ''} left out")
    return f" ({'; '.join(parts)})" if parts else ""

