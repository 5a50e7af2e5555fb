"""C16: does BN fit a recurrent net? Four rows, one per question, on the LSTM.

Runs (docs/claims.md#c16-the-lstm-measured): one LSTM layer of 100 units
reads MNIST as 28 rows of 28 pixels; every arm's cell is written out in the
same loop (PackedLSTM), Adam lr 1e-3, batch 128, the pilot's budget in
epochs. Presets: rnn (LSTM, BN-LSTM with per-step statistics, LN-LSTM, rows),
rnn_permuted (the same on permuted pixels), rnn_eps (BN-LSTM at bn_eps 1e-5
and 1e-3), rnn_small_batch (BN-LSTM at batch 32 and 128). BN-LSTM is read
three ways, each per run: population statistics (its running averages, eval
mode: the network as it is evaluated, the final `test_acc`), batch
statistics of the test set in chunks of the batch size (probe `modes`), and
statistics re-estimated per time step on the frozen weights from 10^4
training images (probe `precise_bn`, Wu & Johnson 2021, as C18).

- C16: BN-LSTM (population statistics) minus LSTM test accuracy at batch
  128, rows and permuted pixels, expected > 0; the two orders combined
  (`rule.combine`: different clear answers make it mixed). Details: the same
  with batch and with re-estimated statistics; what the population
  statistics cost BN-LSTM (paired within runs); the mechanism from the
  precise_bn probe (per-step running variances against bn_eps, the RMS of
  the normalized test inputs); rnn_eps's accuracies at eps 1e-3 vs 1e-5.
- C16b: BN-LSTM's training step relative to the LSTM's (no norm) on the
  same loop, in percent, expected > 0: the interleaved timing of
  study/measure/cost.py (one per pack), t interval over measurements.
  Details: against LN-LSTM, and the inference pass.
- C16c: BN-LSTM's |batch - population statistics| test-accuracy gap at the
  small batch minus at the large one, at equal epochs (rnn_small_batch),
  expected > 0.
- C16d: LN-LSTM minus BN-LSTM (population statistics) at batch 128, rows and
  permuted, a non-inferiority test ("as well as"); details against batch and
  re-estimated statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.claims.plots import clamp_axis, draw, errorbar, legend
from analysis.claims.result import ClaimResult
from analysis.claims.rule import INCONCLUSIVE, NON_INFERIORITY, headline, verdict_of
from analysis.claims.runs import DIVERGED_NOTE, ClaimRuns, ExperimentRuns, acc_values, config_of, counts_note, \
    norm_of, seed_of
from analysis.collect import finite, num
from analysis.figures import grid
from analysis.stats import Difference, MeanInterval, mean_interval, welch_difference
from analysis.text import bracketed, n_text, short, signed, with_interval

LITERATURE = ("Cooijmans et al. 2016: pixel MNIST LSTM 98.9% / BN-LSTM 99.0%, permuted 90.2% / 95.4%, BN-LSTM "
              "converging faster, per-step statistics (population statistics of steps past the training length "
              "reuse the last step's); Laurent et al. 2016: faster training, no generalization gain; Wu & Johnson "
              "2021: statistics re-estimated on frozen weights (precise BN) fix inaccurate moving averages")
ARM_NAMES = {"none": "LSTM", "batch": "BN-LSTM", "batch_shared": "BN-LSTM (shared statistics)", "layer": "LN-LSTM"}
BIG = 128  # the batch size C16, C16b and C16d compare at
STEP_NORMS = {"norm_x": "W_x x_t", "norm_h": "W_h h_(t-1)", "norm_c": "c_t"}  # BN-LSTM's three norms
# BN-LSTM's test accuracy three ways (table columns): its running averages, batch statistics, re-estimated.
READINGS = {"test_acc": "population statistics", "batch_acc": "batch statistics",
            "precise_acc": "re-estimated (precise) statistics"}

STATISTICS = {
    "C16": "BN-LSTM minus LSTM test accuracy at batch 128, BN-LSTM with its population statistics (eval mode, as "
           "evaluated), rows and permuted pixels, in points, expected > 0",
    "C16b": "BN-LSTM's training step relative to the LSTM's on the same written-out loop, minus 1, in percent, "
            "expected > 0",
    "C16c": "BN-LSTM's |batch - population statistics| test-accuracy gap at the small batch minus at the large "
            "one, equal epochs, in points, expected > 0",
    "C16d": "LN-LSTM minus BN-LSTM (population statistics) test accuracy at batch 128, rows and permuted pixels, "
            "in points; 'as well as' is a non-inferiority claim: supported when the interval lies above minus "
            "the margin",
}


def arm(norm: Any) -> str:
    return ARM_NAMES.get(str(norm), f"norm={norm}")


def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
    return PARTS[runs.claim.id](runs, out)


def table(exp: Optional[ExperimentRuns]) -> pd.DataFrame:
    """One row per run of a recurrent preset: arm, batch size, pixel order, eps, budget and its accuracies
    (fractions) with population, batch and re-estimated statistics; `probe` holds the precise_bn entry."""
    out = []
    for rec in (exp.records if exp is not None else []):
        cfg = config_of(rec)
        data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
        model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
        final = rec.get("final") or {}
        fin = (rec.get("probes") or {}).get("final") or {}
        modes, pb = fin.get("modes") or {}, fin.get("precise_bn") or {}
        precise = pb.get("precise_acc") if isinstance(pb.get("precise_acc"), list) else []
        batch_acc = num(modes.get("train_mode_acc")) if modes else num(pb.get("train_mode_acc"))
        out.append({
            "status": rec.get("status"), "norm": str(norm_of(rec)), "seed": seed_of(rec),
            "batch_size": num(cfg.get("batch_size")), "permuted": bool(data.get("permute", False)),
            "eps": num(model.get("bn_eps")), "epoch": num(final.get("epoch")), "steps": num(final.get("step")),
            "test_acc": num(final.get("test_acc")), "batch_acc": batch_acc,
            "precise_acc": num(precise[-1]) if precise else np.nan, "probe": pb if pb else None})
    cols = ["status", "norm", "seed", "batch_size", "permuted", "eps", "epoch", "steps", "test_acc", "batch_acc",
            "precise_acc", "probe"]
    df = pd.DataFrame(out, columns=cols)
    return df[df.batch_size.notna()]


def _cell(df: pd.DataFrame, norm: str, batch: float = BIG, permuted: bool = False) -> pd.DataFrame:
    return df[(df.norm == norm) & (df.batch_size == batch) & (df.permuted == permuted)]


def _diff(a: pd.DataFrame, a_metric: str, b: pd.DataFrame, b_metric: str) -> Optional[tuple[Difference, str]]:
    """Runs a's metric minus runs b's (points, Welch; diverged runs at chance), and its counts note."""
    va, d1, l1 = acc_values(a, a_metric)
    vb, d2, l2 = acc_values(b, b_metric)
    if not va or not vb:
        return None
    return welch_difference(va, vb), counts_note(d1 + d2, l1 + l2)


def _mean(g: pd.DataFrame, metric: str) -> MeanInterval:
    return mean_interval(acc_values(g, metric)[0])


def _order(permuted: bool) -> str:
    return "permuted pixels" if permuted else "rows"


def _both_orders(runs: ClaimRuns) -> pd.DataFrame:
    """rnn's runs (rows) and, where it ran, rnn_permuted's."""
    return pd.concat([table(runs.need("rnn")), table(runs.get("rnn_permuted"))], ignore_index=True)


def _budget(df: pd.DataFrame) -> str:
    ok = df[df.status == "completed"]
    epochs = sorted({int(e) for e in ok.epoch.dropna()})
    steps = sorted({int(s) for s in ok.steps.dropna()})
    return (f"Budget: {' or '.join(map(str, epochs))} epoch(s) ({' or '.join(f'{s:,}' for s in steps)} steps)"
            if epochs else "")


# ------------------------------------------------------------------ C16: accuracy, and why
def _accuracy(runs: ClaimRuns, out: Path) -> ClaimResult:
    stat, margin = STATISTICS["C16"], runs.claim.margin
    df = _both_orders(runs)
    settings, details, other, cost = [], [], {}, {}
    for permuted in (False, True):
        bn, plain = _cell(df, "batch", permuted=permuted), _cell(df, "none", permuted=permuted)
        got = _diff(bn, "test_acc", plain, "test_acc")
        if got is None:
            continue
        where = f"batch {BIG}, {_order(permuted)}"
        d, note = got
        v = verdict_of(d, margin)
        settings.append((_order(permuted), d, v))
        details.append(f"{where}: BN-LSTM (population statistics) minus LSTM {with_interval(d)}: {v}{note}")
        for metric in ("batch_acc", "precise_acc"):
            g = _diff(bn, metric, plain, "test_acc")
            if g is not None:
                other[(permuted, metric)] = (g[0], verdict_of(g[0], margin))
                details.append(f"{where}: BN-LSTM with {READINGS[metric]} minus LSTM {with_interval(g[0])}: "
                               f"{other[(permuted, metric)][1]}")
        ok = bn[bn.status == "completed"]
        cost[permuted] = mean_interval(100 * (ok.batch_acc - ok.test_acc).dropna())
        details.append(
            f"{where}: test accuracy (%) LSTM {short(_mean(plain, 'test_acc').mean)}, LN-LSTM "
            f"{short(_mean(_cell(df, 'layer', permuted=permuted), 'test_acc').mean)}, BN-LSTM with population "
            f"statistics {short(_mean(bn, 'test_acc').mean)}, batch statistics {short(_mean(bn, 'batch_acc').mean)}, "
            f"re-estimated {short(_mean(bn, 'precise_acc').mean)}; batch minus population statistics within each "
            f"BN-LSTM run {bracketed(cost[permuted])} points")
    if not settings:
        return runs.inconclusive(stat, f"needs BN-LSTM and LSTM runs at batch {BIG}", unit="points")
    mech = {p: mechanism(_cell(df, "batch", permuted=p)) for p in (False, True)}
    for p, m in mech.items():
        details += [f"{_order(p)}, mechanism: {line}" for line in m["lines"]]
    eps_lines, eps_summary = _eps(runs)
    details += eps_lines
    label, c = headline(settings)
    others = "; ".join(f"{_order(p)}, {READINGS[m]} {with_interval(other[(p, m)][0])} ({other[(p, m)][1]})"
                       for p in (False, True) for m in ("batch_acc", "precise_acc") if (p, m) in other)
    paid = "; ".join(f"{signed(cost[p].mean)} points on {_order(p)}" for p in cost if cost[p].n)
    evidence = ("BN-LSTM with its population statistics (as evaluated) minus LSTM: "
                + "; ".join(f"{w} {with_interval(d)} ({v})" for w, d, v in settings)
                + (f"; the verdict combines the {len(settings)} pixel orders" if len(settings) > 1 else "")
                + f" (margin {margin:g} point)."
                + (f" The same weights with other statistics, minus LSTM: {others}." if others else "")
                + (f" BN-LSTM's batch minus population statistics, within each run: {paid}." if paid else "")
                + " " + " ".join(m["summary"] for m in mech.values() if m["summary"]) + eps_summary
                + f" {_budget(df)}. {DIVERGED_NOTE}. Figure: test accuracy per arm and statistics; per-step RMS "
                  "of BN-LSTM's normalized test inputs (rows).")
    figure = draw("C16", out, lambda: _accuracy_figure(df), details)
    n = n_text([x for _, d, _ in settings for x in (d.n_a, d.n_b)])
    return runs.combined(stat, settings, interval=c, unit="points", n=n, evidence=evidence,
                       figure=figure, details=details)


def _per_step(probes: list[dict], key: str, which: str, norm: str, field: Optional[str]) -> np.ndarray:
    """Runs x steps of one per-step quantity of the precise_bn probe (NaN where absent)."""
    rows = []
    for p in probes:
        entry = ((p.get(key) or {}).get(which) or {}).get(norm)
        vals = entry.get(field) if field is not None and isinstance(entry, dict) else entry
        if isinstance(vals, list):
            rows.append([num(v) for v in vals])
    if not rows:
        return np.empty((0, 0))
    width = max(len(r) for r in rows)
    return np.array([r + [np.nan] * (width - len(r)) for r in rows], dtype=float)


def mechanism(bn: pd.DataFrame) -> dict[str, Any]:
    """BN-LSTM's per-step statistics from the precise_bn probe: per norm, the steps whose running variances
    are below eps for most features (median over runs), the smallest per-step variance there, and the
    largest RMS of the normalized test inputs with the running (EMA) and re-estimated statistics (mean over
    runs). `lines`: one per norm; `summary`: one sentence; `rms`: norm -> (EMA, precise) per-step means."""
    probes = [p for p, s in zip(bn.probe, bn.status) if s == "completed" and isinstance(p, dict)
              and isinstance(p.get("step_variances"), dict)]
    out: dict[str, Any] = {"lines": [], "summary": "", "rms": {}}
    if not probes:
        return out
    eps = num(((probes[0].get("step_variances") or {}).get("ema") or {}).get("eps"))
    worst: list[tuple[float, str, int, float, float]] = []  # (EMA rms, norm, step, precise rms, min var)
    border_min: list[float] = []
    border_steps: set[int] = set()
    for norm, what in STEP_NORMS.items():
        below = _per_step(probes, "step_variances", "ema", norm, "below_eps")
        low = _per_step(probes, "step_variances", "ema", norm, "min")
        z_ema = _per_step(probes, "step_z_rms", "ema", norm, None)
        z_pre = _per_step(probes, "step_z_rms", "precise", norm, None)
        if not below.size or not z_ema.size:
            continue
        # norm_h's input at step 0 is W_h h_(-1) = 0 for every image: no variance by construction, not the data's
        first = 1 if norm == "norm_h" else 0
        steps = [t for t, f in enumerate(np.nanmedian(below, 0)) if f > 0.5 and t >= first]
        ema_rms, pre_rms = np.nanmean(z_ema, 0), np.nanmean(z_pre, 0) if z_pre.size else np.full(z_ema.shape[1], np.nan)
        out["rms"][norm] = (ema_rms, pre_rms)
        t = int(np.nanargmax(ema_rms))
        smallest = float(np.nanmin(np.nanmedian(low[:, steps], 0))) if steps else np.nan
        if steps:
            border_min.append(smallest)
            border_steps.update(steps)
        worst.append((float(ema_rms[t]), norm, t, float(pre_rms[t]), smallest))
        out["lines"].append(
            f"{norm} ({what}): " + (f"running variance below eps {eps:g} for most features at time step(s) "
                                    f"{', '.join(map(str, steps))} (smallest per-step minimum {smallest:.1e}, "
                                    "median over runs)" if steps else f"no step with most variances below eps {eps:g}")
            + f"; RMS of the normalized test input up to {short(ema_rms[t])} (step {t}) with the running "
              f"statistics, {short(pre_rms[t])} there with re-estimated ones (in training at most 1)")
    if worst:
        rms, norm, t, pre, _ = max(worst)
        out["summary"] = (
            (f"On {_order(bool(bn.permuted.iloc[0]))}, the running variances at time step(s) "
             f"{', '.join(map(str, sorted(border_steps)))} are mostly below bn_eps {eps:g} (down to "
             f"{min(border_min):.1e}), " if border_min else
             f"On {_order(bool(bn.permuted.iloc[0]))}, no step's variances are mostly below bn_eps {eps:g}, ")
            + f"and BN-LSTM's normalized test inputs reach an RMS of {short(rms)} ({norm}, step {t}) with its "
              f"running statistics, {short(pre)} with re-estimated ones (precise_bn probe, {len(probes)} runs).")
    return out


def _eps(runs: ClaimRuns) -> tuple[list[str], str]:
    """rnn_eps: BN-LSTM's accuracies with each statistic per bn_eps, and the largest eps minus the smallest."""
    df = table(runs.get("rnn_eps"))
    bn = df[(df.norm == "batch") & ~df.permuted]
    values = sorted(bn.eps.dropna().unique())
    if len(values) < 2:
        return [], ""
    lo, hi = values[0], values[-1]
    lines, parts = [], []
    for e in values:
        g = bn[bn.eps == e]
        lines.append(f"rnn_eps, bn_eps {e:g}: BN-LSTM test accuracy (%) "
                     + ", ".join(f"{READINGS[m]} {_accuracy_text(_mean(g, m))}" for m in READINGS))
    for m in READINGS:
        got = _diff(bn[bn.eps == hi], m, bn[bn.eps == lo], m)
        if got is not None:
            parts.append(f"{READINGS[m]} {with_interval(got[0])}")
    lines.append(f"rnn_eps, bn_eps {hi:g} minus {lo:g}: " + "; ".join(parts))
    return lines, f" bn_eps {hi:g} instead of {lo:g} changes BN-LSTM's accuracy (rows) by " + "; ".join(parts) + "."


def _accuracy_text(m: MeanInterval) -> str:
    """'85.15 [83.2, 87.1] (n=4)': an accuracy in percent, unsigned."""
    iv = f" [{m.low:.2f}, {m.high:.2f}]" if finite(m.low) and finite(m.high) else ""
    return f"{short(m.mean)}{iv} (n={m.n})"


def _accuracy_figure(df: pd.DataFrame) -> Figure:
    """Left: test accuracy per arm at batch 128, rows and permuted, BN-LSTM with each statistic. Right: the
    per-step RMS of BN-LSTM's normalized test inputs on rows, running (solid) vs re-estimated (dashed)."""
    fig, axes = grid(1, 2, w=4.4, h=3.2)
    ax = axes[0, 0]
    bars = [("none", "test_acc", "LSTM"), ("layer", "test_acc", "LN-LSTM"), ("batch", "test_acc", "BN pop."),
            ("batch", "batch_acc", "BN batch"), ("batch", "precise_acc", "BN precise")]
    for permuted, marker, dx, color in ((False, "o", -0.12, "C0"), (True, "s", 0.12, "C1")):
        for i, (norm, metric, _) in enumerate(bars):
            g = _cell(df, norm, permuted=permuted)
            if not g.empty:
                errorbar(ax, [i + dx], [_mean(g, metric)], color=color, marker=marker, linestyle="none",
                         label=_order(permuted) if i == 0 else None)
    ax.set_xticks(range(len(bars)), [b[2] for b in bars], fontsize=7)
    clamp_axis(ax)
    ax.set(ylabel="test accuracy (%)", title=f"batch {BIG} (mean, 95% t interval)")
    legend(ax, 7)
    ax = axes[0, 1]
    rms = mechanism(_cell(df, "batch"))["rms"]
    for i, (norm, (ema, pre)) in enumerate(rms.items()):
        # floored at 0.01: norm_h's step 0 is exactly 0 (h_(-1) = 0), and the question is amplification
        ax.plot(range(len(ema)), np.maximum(ema, 1e-2), color=f"C{i}", label=f"{norm}, running")
        ax.plot(range(len(pre)), np.maximum(pre, 1e-2), color=f"C{i}", ls="--", label=f"{norm}, re-estimated")
    if rms:
        ax.set_yscale("log")
        ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set(xlabel="time step (image row)", ylabel="RMS of normalized test input (floor 0.01)",
           title="BN-LSTM on rows (mean over runs)")
    legend(ax, 6)
    return fig


# ------------------------------------------------------------------ C16b: cost per step
def cost_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per interleaved cost measurement (a pack's members share one): BN-LSTM's median time over the
    LSTM's and over LN-LSTM's, minus 1, in percent, for the training step and the inference pass."""
    rows, seen = [], set()
    for r in records:
        c = r.get("cost")
        if not isinstance(c, dict) or c.get("error"):
            continue
        key = (c.get("process"), c.get("measured_at"), c.get("batch_size"))
        if key in seen:
            continue
        seen.add(key)
        row: dict[str, Any] = {"batch_size": num(c.get("batch_size")), "cpu_wait": num(c.get("cpu_wait"))}
        for kind in ("train", "infer"):
            k = c.get(kind) if isinstance(c.get(kind), dict) else {}
            ms = {a: 1e3 * num((k.get(a) or {}).get("median_seconds")) for a in ("none", "batch", "layer")}
            row.update({f"{kind}_{a}_ms": v for a, v in ms.items()})
            for a in ("none", "layer"):
                row[f"{kind}_vs_{a}"] = 100 * (ms["batch"] / ms[a] - 1) if finite(ms[a]) and ms[a] > 0 else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["batch_size", "cpu_wait", *(f"{k}_{a}_ms" for k in ("train", "infer")
                                                                     for a in ("none", "batch", "layer")),
                                       *(f"{k}_vs_{a}" for k in ("train", "infer") for a in ("none", "layer"))])


def _cost(runs: ClaimRuns, out: Path) -> ClaimResult:
    stat, margin = STATISTICS["C16b"], runs.claim.margin
    m = cost_table(runs.need("rnn").records)
    m = m[np.isfinite(m.train_vs_none.astype(float))]
    if m.empty:
        return runs.inconclusive(stat, "no interleaved cost measurement in the rnn runs (cost_repeats > 0 times "
                                       "BN-LSTM against the LSTM in one process)", unit="%")
    found, details = {}, []
    for kind, what in (("train", "training step"), ("infer", "inference pass")):
        for a in ("none", "layer"):
            mi = mean_interval(m[f"{kind}_vs_{a}"].dropna())
            if mi.n:
                found[(kind, a)] = (mi, verdict_of(mi, margin))
                details.append(f"{what}: BN-LSTM relative to {arm(a)} {with_interval(mi, ' %', 1)} (n={mi.n} "
                               f"measurements): {found[(kind, a)][1]}; medians BN-LSTM "
                               f"{m[f'{kind}_batch_ms'].median():.3g} ms, {arm(a)} {m[f'{kind}_{a}_ms'].median():.3g} ms")
    head, verdict = found[("train", "none")]
    loaded = int((m.cpu_wait > 0.10).sum())
    details.append(f"{len(m)} measurement(s) at batch {', '.join(str(int(b)) for b in sorted(m.batch_size.unique()))}"
                   f", one per pack, in the process that trained it, arms interleaved (study/measure/cost.py)"
                   + (f"; {loaded} while other processes competed for the CPU (cpu wait > 10%)" if loaded else ""))
    vs_ln = found.get(("train", "layer"))
    evidence = (f"BN-LSTM's training step costs {with_interval(head, ' %', 1)} against the LSTM's ({verdict}; "
                f"margin {margin:g}%), both cells written out in the same loop, so the difference is BN's, not a "
                "Python loop against nn.LSTM's fused kernel"
                + (f"; against LN-LSTM on the same loop {with_interval(vs_ln[0], ' %', 1)} ({vs_ln[1]})" if vs_ln
                   else "; LN-LSTM was not timed (records older than its arm in the cost measurement)")
                + ". Per measurement: BN-LSTM's median time over the other arm's, minus 1; mean and 95% t interval "
                  "over measurements. Figure: each comparison per measurement.")
    figure = draw("C16b", out, lambda: _cost_figure(m), details)
    return runs.result(verdict, stat, interval=head, unit="%", n=f"{head.n} measurements", evidence=evidence,
                       figure=figure, details=details)


def _cost_figure(m: pd.DataFrame) -> Figure:
    fig, axes = grid(1, 1, w=5.2, h=3.4)
    ax = axes[0, 0]
    cols = [("train_vs_none", "train vs LSTM"), ("train_vs_layer", "train vs LN-LSTM"),
            ("infer_vs_none", "infer vs LSTM"), ("infer_vs_layer", "infer vs LN-LSTM")]
    for i, (col, _) in enumerate(cols):
        v = m[col].dropna()
        ax.plot([i] * len(v), v, "o", color="0.6", ms=3)
        if len(v):
            errorbar(ax, [i + 0.15], [mean_interval(v)], color="C0", marker="s")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(range(len(cols)), [c[1] for c in cols], fontsize=7)
    ax.set(ylabel="BN-LSTM's time relative (%)", title="C16b: BN-LSTM's cost on the same loop (per measurement)")
    return fig


# ------------------------------------------------------------------ C16c: train/eval discrepancy
def _discrepancy(runs: ClaimRuns, out: Path) -> ClaimResult:
    stat, margin = STATISTICS["C16c"], runs.claim.margin
    df = table(runs.need("rnn_small_batch"))
    bn = df[(df.norm == "batch") & ~df.permuted & (df.status == "completed")]
    bn = bn.assign(gap=100 * (bn.batch_acc - bn.test_acc).abs(), precise_gap=100 * (bn.batch_acc - bn.precise_acc).abs())
    bn = bn[np.isfinite(bn.gap.astype(float))]
    sizes = sorted(bn.batch_size.unique())
    details = []
    for b in sizes:
        g = bn[bn.batch_size == b]
        gap = mean_interval(g.gap)
        details.append(f"batch {int(b)}: |batch - population statistics| {bracketed(gap)} points (beyond the "
                       f"{margin:g}-point margin: {verdict_of(gap, margin)}); |batch - re-estimated| "
                       f"{bracketed(mean_interval(g.precise_gap.dropna()))}; accuracy (%) population "
                       f"{short(100 * g.test_acc.mean())}, batch {short(100 * g.batch_acc.mean())}, re-estimated "
                       f"{short(100 * g.precise_acc.mean())}")
    if len(sizes) < 2:
        return runs.inconclusive(stat, "needs BN-LSTM runs with the modes probe at two batch sizes", unit="points",
                                 details=details)
    small, big = sizes[0], sizes[-1]
    gs, gb = bn[bn.batch_size == small], bn[bn.batch_size == big]
    d = welch_difference(gs.gap, gb.gap)
    epochs = {int(b): sorted({int(e) for e in bn[bn.batch_size == b].epoch.dropna()}) for b in (small, big)}
    equal = epochs[int(small)] == epochs[int(big)]
    # at unequal epochs the small batch's net saw fewer images: its gap mixes batch size with training
    v = verdict_of(d, margin) if equal else INCONCLUSIVE
    evidence = (f"BN-LSTM's test accuracy with batch statistics and with population statistics differ by "
                f"{bracketed(mean_interval(gs.gap))} points at batch {int(small)} and {bracketed(mean_interval(gb.gap))}"
                f" at batch {int(big)}: difference {with_interval(d)} ({v}; margin {margin:g} point), "
                + ("at equal epochs" if equal else f"at unequal budgets (epochs by batch size {epochs}: "
                   "inconclusive whatever the interval, as the claim is about batch size at equal training)")
                + f" ({_budget(bn)}). Each gap against the margin: "
                + "; ".join(f"batch {int(b)} {verdict_of(mean_interval(bn[bn.batch_size == b].gap), margin)}"
                            for b in (small, big))
                + " (supported: a gap beyond it). Figure: the gap per batch size.")
    figure = draw("C16c", out, lambda: _gap_figure(bn, sizes), details)
    return runs.result(v, stat, interval=d, unit="points", n=n_text([d.n_a, d.n_b], "seeds per batch size"),
                       evidence=evidence, figure=figure, details=details)


def _gap_figure(bn: pd.DataFrame, sizes: list[float]) -> Figure:
    fig, axes = grid(1, 1, w=5.2, h=3.4)
    ax = axes[0, 0]
    for col, label, color in (("gap", "|batch - population|", "C3"), ("precise_gap", "|batch - re-estimated|", "C0")):
        errorbar(ax, list(range(len(sizes))), [mean_interval(bn[bn.batch_size == b][col].dropna()) for b in sizes],
                 color=color, marker="o", label=label)
    ax.set_xticks(range(len(sizes)), [str(int(b)) for b in sizes])
    ax.set(xlabel="batch size", ylabel="test-accuracy gap (points)",
           title="C16c: BN-LSTM's train/eval gap (mean, 95% t interval)")
    legend(ax)
    return fig


# ------------------------------------------------------------------ C16d: LayerNorm instead
def _layer_norm(runs: ClaimRuns, out: Path) -> ClaimResult:
    stat, margin = STATISTICS["C16d"], runs.claim.margin
    df = _both_orders(runs)
    settings, details, found = [], [], {}
    for permuted in (False, True):
        ln, bn = _cell(df, "layer", permuted=permuted), _cell(df, "batch", permuted=permuted)
        for metric in READINGS:
            got = _diff(ln, "test_acc", bn, metric)
            if got is None:
                continue
            d, note = got
            v = verdict_of(d, margin, test=NON_INFERIORITY)
            found[(permuted, metric)] = (d, v)
            if metric == "test_acc":
                settings.append((_order(permuted), d, v))
            details.append(f"batch {BIG}, {_order(permuted)}: LN-LSTM minus BN-LSTM with {READINGS[metric]} "
                           f"{with_interval(d)}: {v} (non-inferiority, margin {margin:g}){note}")
        plain = _diff(ln, "test_acc", _cell(df, "none", permuted=permuted), "test_acc")
        if plain is not None:
            details.append(f"batch {BIG}, {_order(permuted)}: LN-LSTM minus LSTM {with_interval(plain[0])}")
    if not settings:
        return runs.inconclusive(stat, f"needs LN-LSTM and BN-LSTM runs at batch {BIG}", unit="points")
    label, c = headline(settings)
    evidence = ("LN-LSTM minus BN-LSTM with its population statistics: "
                + "; ".join(f"{w} {with_interval(d)} ({v})" for w, d, v in settings)
                + f"; non-inferiority with margin {margin:g} point: supported when the interval lies above "
                  f"-{margin:g}, contradicted below it. Against BN-LSTM's other statistics: "
                + "; ".join(f"{_order(p)}, {READINGS[m]} {with_interval(found[(p, m)][0])} ({found[(p, m)][1]})"
                            for p in (False, True) for m in ("batch_acc", "precise_acc") if (p, m) in found)
                + f". {DIVERGED_NOTE}. Figure: the differences with their intervals and -margin.")
    figure = draw("C16d", out, lambda: _ln_figure(found, margin), details)
    return runs.combined(stat, settings, interval=c, unit="points",
                       n=n_text([x for _, d, _ in settings for x in (d.n_a, d.n_b)]), evidence=evidence,
                       figure=figure, details=details)


def _ln_figure(found: dict[tuple[bool, str], tuple[Difference, str]], margin: float) -> Figure:
    fig, axes = grid(1, 1, w=5.2, h=3.4)
    ax = axes[0, 0]
    keys = sorted(found, key=lambda k: (k[0], list(READINGS).index(k[1])))
    for i, k in enumerate(keys):
        d = found[k][0]
        ax.errorbar([i], [d.diff], yerr=[[d.diff - d.low], [d.high - d.diff]], fmt="o", capsize=3,
                    color="C1" if k[0] else "C0")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.axhline(-margin, color="C3", lw=0.8, ls="--", label=f"-margin ({margin:g})")
    ax.set_xticks(range(len(keys)), [f"{'perm.' if p else 'rows'}\n{READINGS[m].split()[0]}" for p, m in keys],
                  fontsize=7)
    clamp_axis(ax, -100, 100)
    ax.set(ylabel="LN-LSTM minus BN-LSTM (points)", title="C16d: LN-LSTM vs BN-LSTM (95% Welch interval)")
    legend(ax)
    return fig


PARTS: dict[str, Callable[[ClaimRuns, Path], ClaimResult]] = {
    "C16": _accuracy, "C16b": _cost, "C16c": _discrepancy, "C16d": _layer_norm}
