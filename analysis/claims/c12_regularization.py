"""C12: BN regularizes once both arms fit the training set (a smaller generalization gap after long training).

The protocol's title, "the regularizing effect needs long training", names a
time dependence this statistic does not test; the row says what it does test,
and the details give the same difference at EARLY_EPOCH for the reader to set
beside it.

Runs: the regularization preset (batch 64, lr 0.1, 40 epochs, training
accuracy measured after every epoch: probes.kinds=[train_acc]). The pilot,
the old report (lr 0.01, 50 epochs), left no norm at 99.2% training accuracy
(BN 100%): its gap then mixed under-fitting with generalization. The preset
(fixed before the data) trains both arms until they fit the training set.
Statistic: no norm's final-epoch generalization gap (train minus test
accuracy) minus BN's (Welch). Saturation check: the claim is about training
long enough, so each arm's mean final training accuracy must reach
SATURATED (99.5%); where one does not, the verdict is inconclusive and the
row says which arm fell short. Figure: the gap per epoch per arm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.claims.plots import curves_figure, draw
from analysis.claims.result import ClaimResult
from analysis.claims.rule import INCONCLUSIVE, verdict_of
from analysis.claims.runs import ClaimRuns, runs_table
from analysis.stats import welch_difference
from analysis.summary import norm_name
from analysis.text import n_text, with_interval

LITERATURE = "Ioffe & Szegedy 2015: BN regularizes (dropout could be reduced); no MNIST figure"
EARLY_EPOCH = 5  # the details' early look: the notebook's budget
SATURATED = 0.995  # the mean final training accuracy each arm must reach for the gap to read as regularization
STATISTIC = ("no norm's final-epoch generalization gap (train minus test accuracy, points) minus BN's "
             f"(Welch), with both arms' mean final training accuracy at least {SATURATED:.1%}, expected > 0")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    exp = runs.need("regularization")
    table, hist = runs_table(exp), exp.analysis.col.history
    if hist is None or hist.empty or "train_acc" not in hist or hist.train_acc.isna().all():
        return runs.inconclusive(STATISTIC, "no per-epoch train_acc in the history (probes.kinds lacks train_acc)")
    done = _gaps(hist, table)
    last = done.groupby("run").tail(1)
    gaps = {n: list(last[last.norm == n].gap) for n in ("none", "batch")}
    details = [f"{norm_name(n)}: final gap {np.mean(g):.2f} points (n={len(g)}; train {100 * arm.train_acc.mean():.2f}"
               f"%, test {100 * arm.test_acc.mean():.2f}%) at epoch {int(arm.epoch.max())}"
               for n, g in gaps.items() if g for arm in [last[last.norm == n]]]
    early = done[done.epoch == EARLY_EPOCH]
    early_gaps = {n: list(early[early.norm == n].gap) for n in ("none", "batch")}
    if early_gaps["none"] and early_gaps["batch"] and int(done.epoch.max()) > EARLY_EPOCH:
        details.append(f"at epoch {EARLY_EPOCH} (the notebook's budget): no norm's gap minus BN's "
                       f"{with_interval(welch_difference(early_gaps['none'], early_gaps['batch']))}, for comparison "
                       "with the final epoch's (not a test of the time dependence: at epoch 5 the arms fit the "
                       "training set to different degrees)")
    n_out = int((table.status != "completed").sum())
    if n_out:
        details.append(f"{n_out} run(s) not completed (diverged, failed or pruned): left out, they have no final gap")
    figure = draw("C12", out, lambda: curves_figure(
        [(n, list(zip(g.epoch.astype(float), g.gap / 100))) for (n, _), g in done.groupby(["norm", "run"])],
        "epoch", "train minus test accuracy (points)", "C12: generalization gap per epoch", scale=100,
        clamp=(-100.0, 100.0)), details)
    if not gaps["none"] or not gaps["batch"]:
        return runs.inconclusive(STATISTIC, "needs completed runs with train_acc of both BN and no norm",
                                 figure=figure, details=details)
    d = welch_difference(gaps["none"], gaps["batch"])
    train = {n: last[last.norm == n].train_acc.astype(float) for n in ("none", "batch")}
    short = [n for n in ("none", "batch") if not train[n].mean() >= SATURATED]
    saturation = ("Training accuracy saturated in both arms (mean final " + ", ".join(
        f"{norm_name(n)} {100 * train[n].mean():.2f}% (lowest run {100 * train[n].min():.2f}%)" for n in train)
        + f"; needed: {SATURATED:.1%})")
    verdict = verdict_of(d, runs.claim.margin)
    if short:
        saturation = ("Not saturated: " + ", ".join(f"{norm_name(n)}'s mean final training accuracy is "
                                                    f"{100 * train[n].mean():.2f}%" for n in short)
                      + f", below the {SATURATED:.1%} the claim needs (training too short for the gap to read as "
                      "regularization rather than under-fitting), so the verdict is inconclusive whatever the "
                      f"interval (it would read '{verdict}')")
        verdict = INCONCLUSIVE
    evidence = (f"No norm's gap minus BN's: {with_interval(d)}; 'contradicted' here means BN's gap is the larger. "
                f"{saturation}. Training accuracy is measured in eval mode on a fixed subset of the training split. "
                "Figure: the gap per epoch, mean and 95% t-band over seeds.")
    return runs.result(verdict, STATISTIC, interval=d, unit="points", n=n_text([d.n_a, d.n_b]),
                       evidence=evidence, figure=figure, details=details)


def _gaps(hist: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per completed run and epoch: train minus test accuracy in points, epochs in order."""
    h = hist.merge(table[["run", "norm", "status"]], on="run", how="inner")
    h = h[h.train_acc.notna() & h.test_acc.notna()].copy()
    h["gap"] = 100 * (h.train_acc.astype(float) - h.test_acc.astype(float))
    return h[h.status == "completed"].sort_values("epoch")
