"""The report's figures (seaborn on matplotlib's Agg canvas), each with its caption.

Figures are drawn on `matplotlib.figure.Figure` objects, never through
pyplot, so that building a report touches no global figure state and needs
no display. Means over seeds carry the same 95% t-interval as the tables
(`analysis.stats.interval_bounds`); a cell with one seed draws no interval.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import matplotlib

matplotlib.use("Agg")  # no display anywhere a report is built (sweeps, CI)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (FixedLocator, FuncFormatter, MaxNLocator, NullFormatter,  # noqa: E402
                               NullLocator)

from analysis.stats import interval_bounds  # noqa: E402
from analysis.summary import (BASELINE_NORM, BASIS_ALL, BASIS_TRIAL, BIASED_NOTE, NOT_COMPARABLE,  # noqa: E402
                              NOT_COMPARABLE_WHY, Analysis, best_lr_phrase, norm_name, setting_groups, timings)
from analysis.text import fmt_value  # noqa: E402

DPI = 110
PANEL = (3.4, 2.7)  # inches per facet
MAX_LR_FACETS = 4  # more distinct lrs than this (a tuning run): figure 1 shows each cell's best lr
INTERVAL_NOTE = "95% t-interval over seeds (none where a cell has one seed)"


@dataclass
class FigureOut:
    number: int
    name: str  # file stem
    title: str
    caption: str
    file: str | None = None  # set when drawn
    skipped: str | None = None  # why it was not drawn


def strip(**kw) -> None:
    """seaborn's stripplot with a fixed jitter: it draws the jitter from numpy's global generator, so two
    builds of the same report would differ in their pixels; seeded here, a report rebuilds byte-identical."""
    state = np.random.get_state()
    np.random.seed(0)
    try:
        sns.stripplot(**kw)
    finally:
        np.random.set_state(state)  # the caller's generator as it was

def palette(norms: Iterable[Any]) -> dict[Any, Any]:
    """One colour per norm, the same in every figure of the report and of the claims."""
    colors = sns.color_palette("colorblind", 10)
    fixed = {"batch": colors[0], "none": colors[1], "ghost": colors[2], "layer": colors[3], "group": colors[4]}
    spare = iter(colors[5:])
    return {n: fixed.get(str(n)) or next(spare, "gray") for n in dict.fromkeys(norms)}


def _n_phrase(counts: pd.Series, unit: str = "seed") -> str:
    counts = counts[counts > 0]
    if counts.empty:
        return f"n = 0 {unit}s"
    lo, hi = int(counts.min()), int(counts.max())
    s = "s" if hi != 1 else ""
    return f"n = {lo} {unit}{s} per cell" if lo == hi else f"n = {lo} to {hi} {unit}s per cell"


def _excluded_phrase(df: pd.DataFrame, lead: str = "; not in the means: ") -> str:
    counts = df.status[df.status != "completed"].value_counts()
    if counts.empty:
        return ""
    return lead + ", ".join(f"{n} {s}" for s, n in counts.items())


def grid(rows: int, cols: int, w: float = PANEL[0], h: float = PANEL[1], margin: tuple[float, float] = (0.6, 0.5),
         **kw: Any) -> tuple[Figure, np.ndarray]:
    """A figure of rows x cols panels of w x h inches (plus a margin for the titles), axes as a 2-d array."""
    fig = Figure(figsize=(w * cols + margin[0], h * rows + margin[1]), dpi=DPI, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def log2_batch_axis(ax, batch_sizes: Iterable[Any]) -> None:
    """A log2 x axis ticked at each batch size (missing or non-positive values skipped)."""
    sizes = sorted({int(b) for b in batch_sizes
                    if isinstance(b, (int, float, np.number)) and math.isfinite(b) and b > 0})
    ax.set_xscale("log", base=2)
    if not sizes:
        return
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(b) for b in sizes])
    if len(sizes) == 1:
        ax.set_xlim(sizes[0] / 2, sizes[0] * 2)


def _legend(fig: Figure, axes: np.ndarray, title: str = "norm", diverged: int = 0) -> None:
    """One legend for the figure, from the first axis that drew one (plus the diverged marker)."""
    handles, labels = [], []
    for ax in axes.flat:
        leg = ax.get_legend()
        if leg is not None and not handles:
            handles, labels = ax.get_legend_handles_labels()
        if leg is not None:
            leg.remove()
    if diverged:
        handles = [*handles, Line2D([], [], marker="x", linestyle="none", color="0.3", markersize=6)]
        labels = [*labels, "diverged"]
    if handles:
        fig.legend(handles, labels, loc="outside right upper", title=title, frameon=False)


def _mark_diverged(ax, df: pd.DataFrame, x: str, pal: dict[Any, Any]) -> int:
    """Diverged runs as crosses along the bottom edge at their x; returns how many."""
    bad = df[df.status == "diverged"]
    if bad.empty:
        return 0
    trans = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for norm, g in bad.groupby("norm"):
        ax.scatter(g[x], np.full(len(g), 0.03), transform=trans, marker="x", s=36,
                   color=pal.get(norm, "black"), linewidths=1.5, zorder=5, clip_on=False)
    return len(bad)


def _means_and_runs(ax, d: pd.DataFrame, x: str, y: str, norms: list[Any], pal: dict[Any, Any],
                    capsize: float) -> None:
    """Per norm: the mean over seeds at each x with its 95% t-interval (bars), and each run as a dot."""
    if d.empty:
        return
    sns.lineplot(data=d, x=x, y=y, hue="norm", hue_order=norms, palette=pal, estimator="mean",
                 errorbar=interval_bounds, err_style="bars", marker="o", err_kws={"capsize": capsize}, ax=ax)
    sns.scatterplot(data=d, x=x, y=y, hue="norm", hue_order=norms, palette=pal, alpha=0.35, s=14, legend=False,
                    ax=ax)


def _clamp_accuracy(axes: np.ndarray) -> None:
    """Keep an accuracy axis within 0..100%: a t-interval from few seeds can reach past either end."""
    for ax in axes.flat:
        y0, y1 = ax.get_ylim()
        ax.set_ylim(max(y0, -1.0), min(y1, 101.0))


def _log_steps_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _pct(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    df = df.copy()
    for c in cols:
        df[c] = df[c].astype(float) * 100
    return df


def _dodged(df: pd.DataFrame, a: Analysis, width: float = 0.05) -> pd.Series:
    """batch_size nudged per norm on the log2 axis so that error bars do not overlap."""
    k = len(a.norms)
    offsets = {n: (i - (k - 1) / 2) * width for i, n in enumerate(a.norms)}
    return df.batch_size.astype(float) * 2 ** df.norm.map(offsets).astype(float)


def _budget(a: Analysis) -> str:
    steps = a.fixed.get("steps")
    if steps not in (None, "null"):
        return f"{steps} steps"
    if "epochs" in a.fixed:
        return f"{a.fixed['epochs']} epochs"
    return "epochs as in the table"


def _lr_phrase(a: Analysis) -> str:
    if not a.lr_varies:
        return f"lr {fmt_value(a.fixed.get('lr'))} for every run"
    return "lr as labelled"


# ---------------------------------------------------------------- figure 1
def fig_accuracy_vs_batch(a: Analysis) -> tuple[Figure | None, str]:
    """Figure 1: final test accuracy vs batch size per norm (one panel per lr where a few lrs vary)."""
    pal = palette(a.norms)
    runs = a.runs[a.runs.batch_size.notna() & a.runs.norm.notna()]
    n_lr = runs.lr.nunique() if "lr" in runs else 1
    lr_facets = a.lr_varies and n_lr <= MAX_LR_FACETS
    if a.lr_varies and not lr_facets:
        runs = a.best_lr_runs()
        lr_note = f"each cell at its best lr, {best_lr_phrase(a)} (Figure 5 names it); "
    else:
        lr_note = "" if not lr_facets else "one panel per lr; "
    done = runs[runs.status == "completed"]
    if done.test_acc.notna().sum() == 0:
        return None, "no completed run with a test accuracy"
    cols = sorted(runs.lr.dropna().unique()) if lr_facets else [None]
    groups = setting_groups(a, runs)
    fig, axes = grid(len(groups), len(cols), sharey=True)
    bs = a.batch_sizes
    n_div = 0
    for i, (label, g) in enumerate(groups):
        for j, lr in enumerate(cols):
            ax = axes[i, j]
            sub = g if lr is None else g[g.lr == lr]
            d = _pct(sub[sub.status == "completed"], "test_acc")
            d["x"] = _dodged(d, a)
            _means_and_runs(ax, d, "x", "test_acc", a.norms, pal, capsize=3)
            sub = sub.assign(x=_dodged(sub, a))
            n_div += _mark_diverged(ax, sub, "x", pal)
            log2_batch_axis(ax, bs)
            ax.set_xlabel("batch size (log2)")
            ax.set_ylabel("final test accuracy (%)")
            title = " | ".join(t for t in (label, f"lr={lr:g}" if lr is not None else "") if t)
            if title:
                ax.set_title(title, fontsize=9)
    _clamp_accuracy(axes)
    _legend(fig, axes, diverged=n_div)
    n = done.groupby(a.cell_keys, dropna=False).size()
    marks = ", crosses at the bottom = diverged runs" if n_div else ""
    caption = (f"Final test accuracy vs batch size (log2 axis) per norm: mean over seeds (line, dots = "
               f"single runs{marks}) with its {INTERVAL_NOTE}. {lr_note}{_lr_phrase(a)}, {_budget(a)}. "
               f"{_n_phrase(n)} ({len(done)} completed runs{_excluded_phrase(runs)}).")
    return fig, caption


# ---------------------------------------------------------------- figures 2, 3
def _curves(a: Analysis, metric: str, ylabel: str, what: str) -> tuple[Figure | None, str]:
    pal = palette(a.norms)
    runs = a.best_lr_runs()
    done = runs[runs.status == "completed"]
    hist = a.col.history.merge(done[["run", *a.cell_keys, "seed"]], on="run", how="inner")
    hist = hist[hist[metric].notna()]
    if hist.empty:
        return None, "no completed run with a per-epoch history"
    if metric.endswith("_acc"):
        hist = _pct(hist, metric)
    style = None
    if a.setting_keys:
        hist["setting"] = hist.apply(a.setting_label, axis=1)
        style = "setting"
    bs = sorted(int(b) for b in hist.batch_size.unique())
    fig, axes = grid(2, len(bs), sharey=True, sharex="row")
    single = {x: float(hist[x].iloc[0]) for x in ("epoch", "step") if hist[x].nunique() == 1}
    for i, x in enumerate(("epoch", "step")):
        if x in single:  # one epoch: a row's shared x range would be a point (matplotlib warns, then widens it)
            v = single[x]
            axes[i, 0].set_xlim(*((v - 0.5, v + 0.5) if x == "epoch" or v <= 0 else (v / 2, v * 2)))
    for j, b in enumerate(bs):
        d = hist[hist.batch_size == b]
        for i, x in enumerate(("epoch", "step")):
            ax = axes[i, j]
            sns.lineplot(data=d, x=x, y=metric, hue="norm", hue_order=a.norms, palette=pal, style=style,
                         estimator="mean", errorbar=interval_bounds, marker="o", markersize=3, ax=ax)
            ax.set_xlabel("epoch" if x == "epoch" else "optimizer steps (log)")
            ax.set_ylabel(ylabel)
            if x == "step":
                _log_steps_axis(ax)
            else:
                ax.xaxis.set_major_locator(FixedLocator([single[x]]) if x in single else MaxNLocator(integer=True))
            ax.set_title(f"batch size {b}", fontsize=9)
    if metric == "train_loss":
        lo, hi = hist[metric].min(), hist[metric].max()
        if lo > 0 and hi / lo > 10:
            axes[0, 0].set_yscale("log")
    else:
        _clamp_accuracy(axes)
    _legend(fig, axes, "norm" if style is None else "")
    n = done.groupby(a.cell_keys, dropna=False).size()
    lr_note = (f"each cell at its best lr, {best_lr_phrase(a)}; " if a.lr_varies else "")
    caption = (f"{what} vs epoch (top) and vs optimizer steps (bottom, log axis: the same epochs cost "
               f"a large batch fewer updates), one panel per batch size: mean over seeds with its "
               f"{INTERVAL_NOTE}. {lr_note}{_lr_phrase(a)}. "
               f"{_n_phrase(n)} ({len(done)} completed runs; diverged and failed runs are not drawn"
               f"{_excluded_phrase(runs, ': ')}).")
    return fig, caption


def has_validation(a: Analysis) -> bool:
    """Some run recorded a validation accuracy per epoch (none has with data.val_size=0)."""
    return "val_acc" in a.col.history and bool(a.col.history.val_acc.notna().any())


def fig_val_curves(a: Analysis) -> tuple[Figure | None, str]:
    """Validation accuracy per epoch; test accuracy, labelled so, where no run has a validation split
    (data.val_size=0: the notebook's setup, where nothing is selected and test is the metric read)."""
    if has_validation(a):
        return _curves(a, "val_acc", "validation accuracy (%)", "Validation accuracy")
    fig, caption = _curves(a, "test_acc", "test accuracy (%)", "Test accuracy")
    note = ("Test accuracy, not validation: these runs have no validation split (data.val_size=0, trained on "
            "every training image, as the notebook does) and nothing is selected on this curve. ")
    return fig, (note + caption) if fig is not None else caption


def fig_loss_curves(a: Analysis) -> tuple[Figure | None, str]:
    return _curves(a, "train_loss", "training loss (epoch mean)", "Training loss (mean over the epoch's steps)")


# ---------------------------------------------------------------- figure 4
def fig_lr_sensitivity(a: Analysis) -> tuple[Figure | None, str]:
    """Figure 4: final validation accuracy vs lr per norm, one panel per batch size (an lr sweep only)."""
    if not a.lr_varies:
        return None, f"lr does not vary in these runs (fixed at {fmt_value(a.fixed.get('lr'))})"
    pal = palette(a.norms)
    runs = a.runs[a.runs.lr.notna()]
    groups = setting_groups(a, runs)
    bs = a.batch_sizes
    fig, axes = grid(len(groups), len(bs), sharey=True, sharex=True)
    n_div = 0
    for i, (label, g) in enumerate(groups):
        for j, b in enumerate(bs):
            ax = axes[i, j]
            sub = g[g.batch_size == b]
            d = _pct(sub[(sub.status == "completed") & sub.val_acc.notna()], "val_acc")
            _means_and_runs(ax, d, "lr", "val_acc", a.norms, pal, capsize=2)
            n_div += _mark_diverged(ax, sub, "lr", pal)
            ax.set_xscale("log")
            ax.set_xlabel("learning rate (log)")
            ax.set_ylabel("final validation accuracy (%)")
            ax.set_title(" | ".join(t for t in (f"batch size {b}", label) if t), fontsize=9)
    _clamp_accuracy(axes)
    _legend(fig, axes, diverged=n_div)
    n = runs.groupby(a.cell_keys, dropna=False).size()
    return fig, (f"Learning-rate sensitivity: final validation accuracy vs lr (log axis) per norm, one panel "
                 f"per batch size; mean over seeds with its {INTERVAL_NOTE}, dots = single runs, crosses at "
                 f"the bottom = diverged runs ({n_div}). {_budget(a)}. {_n_phrase(n, 'run')} "
                 f"({len(runs)} runs{_excluded_phrase(runs)}).")


# ---------------------------------------------------------------- figure 5
def fig_isolation(a: Analysis) -> tuple[Figure | None, str]:
    """Figure 5: each (norm, batch size) at its best lr, so that no arm is judged at an lr that suits
    another (an lr sweep only)."""
    if not a.lr_varies:
        return None, "lr does not vary: there is no per-cell lr to optimize away"
    if a.best.empty:
        return None, "no cell has a completed run at any lr"
    pal = palette(a.norms)
    runs = a.best_lr_runs()
    done = _pct(runs[(runs.status == "completed") & runs.test_acc.notna()], "test_acc")
    groups = setting_groups(a, done)
    fig, axes = grid(1, len(groups), sharey=True)
    bs = a.batch_sizes
    norms = [n for n in a.norms if n in set(done.norm)]
    width = 0.8 - 0.8 / max(len(norms), 1)
    offsets = dict(zip(norms, np.linspace(-width / 2, width / 2, len(norms))))
    for j, (label, d) in enumerate(groups):
        ax = axes[0, j]
        d = d.assign(batch=pd.Categorical(d.batch_size.astype(int), categories=bs))
        sns.pointplot(data=d, x="batch", y="test_acc", hue="norm", hue_order=norms, palette=pal,
                      estimator="mean", errorbar=interval_bounds, dodge=width, linestyle="none",
                      capsize=0.08, markers="o", ax=ax)
        strip(data=d, x="batch", y="test_acc", hue="norm", hue_order=norms, palette=pal, dodge=True,
              alpha=0.4, size=3, legend=False, ax=ax)
        for r in a.best.to_dict("records"):
            if r["norm"] not in offsets or r["n"] == 0 or (label and a.setting_label(r) != label):
                continue
            ax.annotate(f"lr {r['lr']:g}", (bs.index(int(r["batch_size"])) + offsets[r["norm"]],
                                            100 * r["test_acc_mean"]),
                        xytext=(7, 0), textcoords="offset points", ha="left", va="center", fontsize=7,
                        color="0.2", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                           "alpha": 0.8})
        ax.set_xlabel("batch size")
        ax.set_ylabel("test accuracy at the best lr (%)")
        _clamp_accuracy(axes)
        if label:
            ax.set_title(label, fontsize=9)
    _legend(fig, axes)
    n_tried = a.best.n_lr_tried
    basis = a.best.basis
    if (basis == BASIS_ALL).all():
        chosen = ("The lr was chosen on the same seeds it is shown with: rerun it with fresh seeds before "
                  "concluding.")
    else:
        biased = int((basis == BASIS_TRIAL).sum())
        chosen = ("The lr was chosen on the tuning trials; the runs shown are the confirmation runs at it "
                  "(fresh seeds, the trial that chose it left out)"
                  + (f", except at {biased} cell{'s' if biased != 1 else ''} without confirmation runs, shown "
                     f"with the trial that chose the lr ({BIASED_NOTE})." if biased else "."))
    lo, hi = int(n_tried.min()), int(n_tried.max())
    caption = (f"Isolation plot: for each norm and batch size, the test accuracy at its best lr (labelled; "
               f"{lo if lo == hi else f'{lo} to {hi}'} lrs tried per cell; diverged runs count as 0 in the "
               f"choice), {best_lr_phrase(a)}: mean with its {INTERVAL_NOTE}, dots = seeds. "
               f"{_n_phrase(a.best.set_index([*a.cell_keys[:2]]).n)} at the chosen lr. {chosen}")
    return fig, caption


# ---------------------------------------------------------------- figure 6
def fig_cost(a: Analysis) -> tuple[Figure | None, str]:
    """Figure 6: training throughput and epoch time per norm and batch size, norms compared at equal pack size."""
    timed = timings(a)
    if timed.empty:
        return None, "no run recorded its timing"
    pal = palette(a.norms)
    bs = a.batch_sizes
    d = timed.assign(batch=pd.Categorical(timed.batch_size.astype(int), categories=bs))
    norms = [n for n in a.norms if n in set(d.norm)]
    # Per-run throughput depends on how many models a pack steps together: one row of panels per pack size.
    packs = sorted(d.pack_size.dropna().unique())
    groups = [(label, g, None) for label, g in setting_groups(a, d)]
    if len(packs) > 1:
        groups = [(label, g[g.pack_size == p], p) for label, g, _ in groups for p in packs
                  if (g.pack_size == p).any()]
    fig, axes = grid(len(groups), 2)
    for i, (label, g, pack_size) in enumerate(groups):
        title = ", ".join(t for t in (label, f"pack size {int(pack_size)}" if pack_size is not None else "") if t)
        for ax, y, ylabel in ((axes[i, 0], "samples_per_second", "training samples per second"),
                              (axes[i, 1], "epoch_seconds", "seconds per training epoch")):
            sns.barplot(data=g, x="batch", y=y, hue="norm", hue_order=norms, palette=pal, estimator="mean",
                        errorbar=interval_bounds, capsize=0.15, err_kws={"linewidth": 1}, alpha=0.85, ax=ax)
            strip(data=g, x="batch", y=y, hue="norm", hue_order=norms, palette=["0.2"] * len(norms),
                  dodge=True, size=2.5, alpha=0.6, legend=False, ax=ax)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 100 else f"{v:g}"))
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.margins(y=0.12)
            if title:
                ax.set_title(title, fontsize=9)
        if "comparable" in a.cost:
            _label_overhead(axes[i, 0], a, label, pack_size, norms, bs)
    _legend(fig, axes)
    machines = ", ".join(sorted(a.runs.device_name.dropna().astype(str).unique())) or "unknown machine"
    threads = "/".join(sorted(a.runs.threads.dropna().astype(str).unique())) or "?"
    n = timed.groupby(a.cell_keys, dropna=False).size()
    packed = a.runs.pack_size.dropna()
    pack = (f" Runs trained together in a pack (up to {int(packed.max())}) share one timing per epoch, "
            "counted once." if len(packed) and packed.max() > 1 else "")
    if len(packs) > 1:
        pack += (" A pack's per-run throughput is not comparable with a lone run's: one row per pack size, "
                 "and norms are compared only at equal pack sizes.")
    compared = a.cost[a.cost.comparable.notna()] if "comparable" in a.cost else a.cost.iloc[:0]
    if len(compared):
        pack += (" The change labels compare epochs timed in one process only (the one that timed most of both "
                 "arms)" + (f"; '{NOT_COMPARABLE}': {NOT_COMPARABLE_WHY}." if (~compared.comparable.astype(bool)).any()
                            else ".") + " The bars show every timed epoch.")
    caption = (f"Cost of training per norm and batch size: throughput (samples per second, left; labels: "
               f"change relative to {norm_name(BASELINE_NORM)}) and seconds per training epoch (evaluation "
               f"excluded, right). Bars: mean over timed epochs (the first, warm-up, excluded) with its 95% "
               f"t-interval; dots: single epochs. {machines}, threads {threads}. "
               f"{_n_phrase(n, 'timed epoch')}.{pack}")
    return fig, caption


def _label_overhead(ax, a: Analysis, label: str, pack_size: float | None, norms: list[Any],
                    bs: list[int]) -> None:
    """Write each norm's throughput change vs no norm (at the same pack size) above its bar."""
    width = 0.8 / len(norms)
    rel = a.cost[a.cost.comparable.notna()] if "comparable" in a.cost else a.cost.iloc[:0]
    for r in rel.to_dict("records"):
        if label and a.setting_label(r) != label:
            continue
        if pack_size is not None and r["pack_size"] != pack_size:
            continue
        x = bs.index(int(r["batch_size"])) - 0.4 + width * (norms.index(r["norm"]) + 0.5)
        top = r["samples_per_second_high"]
        text = f"{100 * r['vs_baseline']:+.0f}%" if r["comparable"] else NOT_COMPARABLE
        ax.annotate(text, (x, top if math.isfinite(top) else r["samples_per_second"]),
                    xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=7,
                    color="0.2")


# (file stem, title (or the title for these runs), draw)
FIGURES: list[tuple[str, str | Callable[[Analysis], str], Callable[[Analysis], tuple[Figure | None, str]]]] = [
    ("fig1_test_acc_vs_batch_size", "Final test accuracy vs batch size", fig_accuracy_vs_batch),
    ("fig2_val_acc_curves", lambda a: f"{'Validation' if has_validation(a) else 'Test'} accuracy vs epoch and vs "
                                      "optimizer steps", fig_val_curves),
    ("fig3_train_loss_curves", "Training loss curves", fig_loss_curves),
    ("fig4_lr_sensitivity", "Learning-rate sensitivity", fig_lr_sensitivity),
    ("fig5_isolation", "Isolation plot: each cell at its best lr", fig_isolation),
    ("fig6_cost", "Cost: training throughput and epoch time", fig_cost),
]


def draw_figures(a: Analysis, out_dir: Path) -> list[FigureOut]:
    """Draw every figure the data allows into `out_dir`; say why for the others."""
    out = []
    # Seaborn's categorical plots hand matplotlib batch sizes as strings ("64"),
    # which makes matplotlib log an INFO line per axis; a sweep's log needs none.
    category_log = logging.getLogger("matplotlib.category")
    level = category_log.level
    category_log.setLevel(logging.WARNING)
    try:
        _draw_all(a, out_dir, out)
    finally:
        category_log.setLevel(level)
    return out


def _draw_all(a: Analysis, out_dir: Path, out: list[FigureOut]) -> None:
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        for number, (name, title, draw) in enumerate(FIGURES, start=1):
            fig, text = draw(a)
            item = FigureOut(number, name, title(a) if callable(title) else title, caption="" if fig is None else text)
            if fig is None:
                item.skipped = text
            else:
                fig.savefig(out_dir / f"{name}.png", dpi=DPI)
                item.file = f"{name}.png"
            out.append(item)
