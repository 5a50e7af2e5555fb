"""Seeds by power: how many seeds per cell each claim needs, computed from a pilot.

    python -m analysis.power outputs/pilot             # a table per claim, Markdown
    python -m analysis.power outputs/pilot --json      # the same as JSON

A pilot is any folder of runs of the claims' presets (e.g. `python -m
study.suite --out outputs/pilot -- 'seed=0,1,2'`, or a suite run at its
preset seeds). Each claim is evaluated on the pilot's first seed set; its
headline 95% interval, of half-width h0 at n0 seeds per arm, is projected to
n seeds as

    h(n) = h0 * t(0.975, n - 1) / t(0.975, n0 - 1) * sqrt(n0 / n)

(the seed spread taken as the pilot's). The rule: a claim needs the smallest
n >= MIN_SEEDS at which that projected interval decides the verdict with a
safety factor of SAFETY on the pilot's estimate d (itself uncertain): it
clears zero even if the true effect were |d| / SAFETY (h(n) <= |d| / SAFETY),
or it fits inside the claim's margin even if the true effect were |d|
pushed SAFETY times as far from the margin's middle (|d| + SAFETY * h(n) <=
margin, 'no meaningful effect'). An effect near half the margin is the
hardest to tell apart and needs the most seeds. Where no n up to MAX_SEEDS
decides it, the table says so and the preset's seeds are a budget choice
(docs/claims.md). The rule is an estimate from a small pilot, not a
guarantee; the replication seed set is the check.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

MIN_SEEDS = 8  # issue 14: at least 8 seeds per cell for every claim
MAX_SEEDS = 64  # beyond this the table says "not decidable by seeds alone"
SAFETY = 2.0  # the pilot's estimate is itself uncertain: decide even at half of it (or twice as near the margin)


@dataclass(frozen=True)
class Need:
    claim: str
    unit: str
    margin: Optional[float]
    pilot_n: Optional[int]
    pilot_estimate: Optional[float]
    pilot_half_width: Optional[float]
    seeds: Optional[int]  # the rule's n (>= MIN_SEEDS); None: not decidable by MAX_SEEDS or no pilot interval
    why: str


def projected_half_width(h0: float, n0: int, n: int) -> float:
    """The pilot's half-width h0 at n0 seeds, projected to n seeds (same spread)."""
    from analysis.stats import t_quantile

    return h0 * t_quantile(0.975, n - 1) / t_quantile(0.975, n0 - 1) * math.sqrt(n0 / n)


def seeds_needed(estimate: float, h0: float, n0: int, margin: float) -> Optional[int]:
    """The smallest n >= MIN_SEEDS whose projected interval decides (clears zero or fits in +-margin)."""
    d = abs(estimate)
    for n in range(MIN_SEEDS, MAX_SEEDS + 1):
        h = projected_half_width(h0, n0, n)
        if h <= d / SAFETY or d + SAFETY * h <= margin:
            return n
    return None


def needs(results) -> list[Need]:
    """One Need per claim result of a pilot."""
    out = []
    for r in results:
        ok = (r.value is not None and r.low is not None and r.high is not None and r.seeds is not None
              and r.seeds >= 2 and r.high > r.low and r.margin is not None)
        if not ok:
            why = ("no pilot interval (not run, fewer than two seeds, or a zero-width interval): "
                   f"{MIN_SEEDS} seeds, the floor")
            out.append(Need(r.claim, r.unit, r.margin, r.seeds, r.value, None, MIN_SEEDS, why))
            continue
        h0 = (r.high - r.low) / 2
        n = seeds_needed(r.value, h0, r.seeds, r.margin)
        if n is None:
            why = f"no n up to {MAX_SEEDS} decides it at the pilot's spread"
        elif n == MIN_SEEDS:
            why = "the floor already decides it"
        else:
            h = projected_half_width(h0, r.seeds, n)
            why = (f"at n={n} the projected half-width {h:.3g} "
                   + ("clears zero at half the estimate" if h <= abs(r.value) / SAFETY
                      else "fits inside the margin with room"))
        out.append(Need(r.claim, r.unit, r.margin, r.seeds, r.value, h0, n, why))
    return out


def markdown(rows: list[Need]) -> str:
    head = ("| claim | margin | pilot n | pilot estimate | pilot half-width | seeds needed | why |\n"
            "|---|---|---|---|---|---|---|")

    def f(x: Optional[float]) -> str:
        return "-" if x is None else f"{x:.3g}"

    lines = [f"| {n.claim} | +-{f(n.margin)} {n.unit} | {n.pilot_n or '-'} | {f(n.pilot_estimate)} | "
             f"{f(n.pilot_half_width)} | {n.seeds if n.seeds is not None else f'> {MAX_SEEDS}'} | {n.why} |"
             for n in rows]
    return "\n".join([head, *lines])


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.power", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="folders with the pilot's runs")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = p.parse_args(argv)
    from analysis.claims import evaluate_claims
    from analysis.claims.runs import split_by_experiment
    from analysis.collect import AnalysisError, collect

    try:
        col = collect([str(x) for x in args.paths])
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as figures:
        results = evaluate_claims(split_by_experiment(col, replication=False), Path(figures))
    rows = needs(results)
    print(json.dumps([asdict(n) for n in rows], indent=2) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
