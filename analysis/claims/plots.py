"""The claim figures' parts: one panel, its labels and axes, means with their 95% bands, saving.

A claim module draws its figure from these (`panel`, `mean_band`, ...) and
saves it through `draw`, which writes `claim_<id>.png` and never fails the claim.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

import matplotlib

matplotlib.use("Agg")  # no display where a report is built

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from analysis.figures import DPI, grid, palette  # noqa: E402
from analysis.stats import MeanInterval, interval_bounds  # noqa: E402
from analysis.summary import norm_name, norm_order  # noqa: E402


def save_figure(fig: Figure, out: Path, claim: str) -> str:
    """Write a claim's figure as `claim_<id>.png` in `out`; returns the file name."""
    out.mkdir(parents=True, exist_ok=True)
    name = f"claim_{claim.lower()}.png"
    fig.savefig(out / name, dpi=DPI)
    fig.clear()
    return name


def draw(claim: str, out: Path, make: Callable[[], Optional[Figure]], details: list[str]) -> Optional[str]:
    """Draw and save one claim figure (None: nothing to draw); a drawing error costs the figure, not the
    claim (noted in details)."""
    try:
        fig = make()
        return save_figure(fig, out, claim) if fig is not None else None
    except Exception as e:
        details.append(f"figure not drawn: {type(e).__name__}: {e}")
        return None


def panel() -> tuple[Figure, Any]:
    """One figure with one panel (the single-panel claim figures)."""
    fig, axes = grid(1, 1, w=5.2, h=3.6, margin=(0.0, 0.0))
    return fig, axes[0, 0]


def legend(ax, fontsize: int = 8) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, frameon=False)


def label_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """A single-panel claim figure's axis labels, its title (small: it says what the bars are) and legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    legend(ax)


def log_y(ax) -> None:
    """A log y axis with ticks at 1, 2, 3, 5, 7 per decade (data within one decade still get labelled ticks)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def clamp_axis(ax, low: float = 0.0, high: float = 100.0) -> None:
    """Keep an axis within the range its quantity can take (accuracy: 0-100%; a difference of two: +-100 points).

    The 95% t interval of 2 seeds has a t quantile of 12.7 and can reach far
    past the possible range; left alone it sets the axis (-200..300%) and
    flattens the data to a line. Bars that run past the edge are cut there.
    """
    y0, y1 = ax.get_ylim()
    pad = 0.03 * (high - low)
    ax.set_ylim(max(y0, low - pad), min(y1, high + pad))


def mean_band(ax, xs: list[float], groups: list[list[float]], color: Any, label: str,
              bars: bool = False, marker: str = "o") -> None:
    """Mean over seeds at each x with its 95% t-interval (bars or band; none for one seed)."""
    pts = [(x, float(np.mean(v)), *interval_bounds(v)) for x, v in zip(xs, groups) if len(v)]
    if not pts:
        return
    x, m, lo, hi = (np.array(c, dtype=float) for c in zip(*pts))
    if bars:
        ax.errorbar(x, m, yerr=[m - lo, hi - m], color=color, marker=marker, capsize=3, label=label)
    else:
        ax.plot(x, m, color=color, label=label)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)


def errorbar(ax, xs: list[float], ms: list[MeanInterval], **kw: Any) -> None:
    """Means with their 95% t-intervals (none where n < 2)."""
    y = np.array([m.mean for m in ms], dtype=float)
    lo = np.array([m.mean - m.low if math.isfinite(m.low) else 0.0 for m in ms])
    hi = np.array([m.high - m.mean if math.isfinite(m.high) else 0.0 for m in ms])
    ax.errorbar(xs, y, yerr=[lo, hi], capsize=3, **kw)


def trace(ax, g: pd.DataFrame, ycol: str, color: Any, label: Optional[str], log: bool = False,
          style: str = "-") -> None:
    """Per-seed faint lines and the mean over seeds (geometric on a log axis) per step."""
    g = g[np.isfinite(g[ycol].astype(float))]
    if log:
        g = g[g[ycol] > 0]
    if g.empty:
        return
    for _, r in g.groupby("run"):
        r = r.sort_values("step")
        ax.plot(r.step, r[ycol], color=color, alpha=0.25, lw=0.8, ls=style)
    vals = np.log10(g[ycol].astype(float)) if log else g[ycol].astype(float)
    mean = vals.groupby(g.step).mean()
    ax.plot(mean.index, 10 ** mean.values if log else mean.values, color=color, lw=1.8, ls=style, label=label)


def curves_figure(curves: list[tuple[Any, list[tuple[float, float]]]], xlabel: str, ylabel: str, title: str,
                  scale: float = 1.0, clamp: tuple[float, float] = (0.0, 100.0)) -> Figure:
    """Mean and 95% band over seeds per norm; each run's (x, y) points, pooled at equal x; y kept within `clamp`."""
    fig, ax = panel()
    pal = palette(n for n, _ in curves)
    for norm in norm_order(n for n, _ in curves):
        by_x: dict[float, list[float]] = {}
        for n, pts in curves:
            if n == norm:
                for x, y in pts:
                    by_x.setdefault(x, []).append(scale * y)
        xs = sorted(by_x)
        mean_band(ax, xs, [by_x[x] for x in xs], pal[norm], norm_name(norm))
    clamp_axis(ax, *clamp)
    label_axes(ax, xlabel, ylabel, f"{title}\n(line: mean over seeds; band: 95% t interval over seeds)")
    return fig
