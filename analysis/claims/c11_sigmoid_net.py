"""C11: the BN paper's sigmoid network replicates (Ioffe & Szegedy 2015, sec. 4.1).

Runs: the ioffe2015 preset (3x100 MLP, batch 60, lr 0.1, 50,000 steps),
sigmoid and, for the protocol's "larger benefit than with ReLU", the same
network and budget with ReLU. Statistic: BN minus no-norm test accuracy of
the sigmoid network (Welch). Figure: validation accuracy vs steps per arm.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.claims.plots import curves_figure, draw
from analysis.claims.result import ClaimResult
from analysis.claims.rule import CONTRADICTED, SUPPORTED, verdict_of
from analysis.claims.runs import (DIVERGED_NOTE, ClaimRuns, ExperimentRuns, acc_values, activation_of,
                                  column, counts_note, norm_of, runs_table, seed_of, val_series)
from analysis.collect import counted_as
from analysis.stats import Difference, contrast, mean_interval, welch_difference
from analysis.summary import norm_name
from analysis.text import n_text, with_interval

LITERATURE = ("Ioffe & Szegedy 2015 sec. 4.1 (3x100 sigmoid, batch 60, 50,000 steps): a public re-run "
              "reported 0.980 with BN vs 0.977 without")
DEFAULT_ACTIVATION = "sigmoid"  # the preset's; a record without model.activation is the sigmoid net
STATISTIC = "BN minus no norm test accuracy in the 3x100 sigmoid network, in points (Welch), expected > 0"


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    exp = runs.need("ioffe2015")
    table = runs_table(exp)
    # object first: a column with no value at all is float64 (NaN), which pandas will not fill with a str
    act = column(table, "model.activation").astype(object).fillna(DEFAULT_ACTIVATION).astype(str)
    df, relu = table[act == "sigmoid"], table[act == "relu"]
    if not {"none", "batch"} <= set(df.norm.dropna()):
        return runs.inconclusive(STATISTIC, "needs runs of both BN and no norm")
    d, note = _gap(df)
    details = []
    for norm in ("batch", "none"):
        m = mean_interval([v / 100 for v in acc_values(df[df.norm == norm], "test_acc")[0]])
        details.append(f"{norm_name(norm)}: test accuracy {m.mean:.4f}"
                       + (f" ({m.low:.4f} to {m.high:.4f})" if math.isfinite(m.low) else "") + f", n={m.n}")
    details.append("literature (a public re-run of Ioffe & Szegedy 2015 sec. 4.1): 0.980 with BN vs 0.977 without")
    details.append(_relu_line(relu, d, runs.claim.margin))
    curves = _curves(exp)
    figure = draw("C11", out, lambda: curves_figure(
        [(n, pts) for n, pts, _ in curves], "optimizer steps", "validation accuracy (%)",
        "C11: 3x100 sigmoid MLP, validation accuracy", scale=100), details)
    source = ("val_acc probe" if {s for _, _, s in curves} == {"probe"}
              else "per-epoch history where a run has no probe")
    evidence = (f"BN minus no norm test accuracy: {with_interval(d)}{note}. {DIVERGED_NOTE}. Figure: validation "
                f"accuracy vs steps per arm ({source}), mean and 95% t-band over seeds.")
    return runs.result(verdict_of(d, runs.claim.margin), STATISTIC, interval=d, unit="points", n=n_text([d.n_a, d.n_b]),
                       evidence=evidence, figure=figure, details=details)


def _gap(df: pd.DataFrame) -> tuple[Difference, str]:
    """BN minus no norm test accuracy in points (diverged runs at chance), and the note of runs counted so."""
    bn, dv1, lo1 = acc_values(df[df.norm == "batch"], "test_acc")
    no, dv2, lo2 = acc_values(df[df.norm == "none"], "test_acc")
    return welch_difference(bn, no), counts_note(dv1 + dv2, lo1 + lo2)


def _relu_line(relu_runs: pd.DataFrame, sigmoid: Difference, margin: float) -> str:
    """The same gap in the same network and budget with ReLU, and the sigmoid gap minus it."""
    if not {"none", "batch"} <= set(relu_runs.norm.dropna()):
        return ("no ReLU runs of both arms in this preset (model.activation=relu): no ReLU comparison at the "
                "same budget")
    relu, note = _gap(relu_runs)
    c = contrast(sigmoid, relu)
    v = verdict_of(c, margin)
    reading = {SUPPORTED: "larger with sigmoid", CONTRADICTED: "smaller with sigmoid"}.get(v, v)
    return (f"ReLU, the same network and budget: BN minus no norm {with_interval(relu)}{note}; sigmoid gap minus "
            f"ReLU gap {with_interval(c)}: {reading}")


def _curves(exp: ExperimentRuns) -> list[tuple[str, list[tuple[float, float]], str]]:
    """(norm, (step, val_acc) points, source) per completed or diverged run, one record per (norm, seed)."""
    recs = [r for r in exp.records if r.get("status") in ("completed", "diverged") and activation_of(r, DEFAULT_ACTIVATION) == "sigmoid"]
    keys = pd.DataFrame({"norm": [norm_of(r) for r in recs], "seed": [seed_of(r) for r in recs],
                         "finished_at": [r.get("finished_at") for r in recs]})
    kept = keys.index[counted_as(keys, ["norm", "seed"]) == keys.index] if recs else []
    return [(norm_of(recs[i]), *val_series(recs[i])) for i in kept]

