"""Budget pilots: is a preset's training budget long enough for its claim?

    python -m analysis.budget outputs/pilot-c13 --by epochs
    python -m analysis.budget outputs/pilot-c13 --by epochs --where warmup_epochs=1 --claims C13
    python -m analysis.budget outputs/pilot-c5 --by epochs --json

A pilot trains a preset at its budget and at twice it (e.g. `python
study/run.py -m experiment=small_batch epochs=1,2 'seed=range(0,4)'
hydra.sweep.dir=outputs/pilot-c5`). The runs are split by the config key
`--by` (its values, in increasing order: the budgets), each claim is
evaluated on each budget's runs, and the table gives each claim's headline
statistic and interval per budget. The rule (issue 23, docs/claims.md#budgets):
a budget B is long enough when the headline at B and at the next budget
(2B) differ by less than half the claim's margin (the verdicts are shown;
at a pilot's few seeds they may differ for want of seeds, the power rule's
business);
a claim whose statement names its budget (a fixed-budget claim, e.g. C1's
"at a fixed lr and epoch budget") says so in docs/claims.md instead.
`--where KEY=VALUE` keeps only runs with that config value (repeatable).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from analysis.collect import flatten


@dataclass(frozen=True)
class Step:
    budget: Any  # the --by key's value
    verdict: str
    value: Optional[float]
    low: Optional[float]
    high: Optional[float]
    seeds: Optional[int]


@dataclass(frozen=True)
class Pair:
    budget: Any  # B
    next: Any  # the next budget (2B in a pilot)
    change: Optional[float]  # headline at `next` minus at `budget`
    long_enough: Optional[bool]  # |change| < margin / 2; None: not decidable
    why: str


@dataclass(frozen=True)
class BudgetCheck:
    claim: str
    unit: str
    margin: Optional[float]
    steps: list[Step]  # one per budget, in increasing order
    pairs: list[Pair]  # each budget against the next
    shortest: Any  # the smallest budget that is long enough against the next; None: none is


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b))
    except (TypeError, ValueError):
        return str(a) == str(b)


def _order(values: list[Any]) -> list[Any]:
    try:
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def _pair(a: Step, b: Step, margin: Optional[float]) -> Pair:
    if a.value is None or b.value is None:
        return Pair(a.budget, b.budget, None, None, "no headline at both budgets")
    change = round(b.value - a.value, 12)  # equal headlines print as 0, not as float noise (2.2e-16)
    if margin is None or not math.isfinite(change):
        return Pair(a.budget, b.budget, change, None, "no margin or no finite change")
    ok = abs(change) < margin / 2
    # The verdicts are shown, not required to agree: at a pilot's few seeds an interval is wide, and the
    # seeds that decide a verdict are the power rule's job (analysis.power), not the budget's.
    why = (f"absolute change {abs(change):.3g} {'<' if ok else '>='} half the margin {margin / 2:.3g}; verdict "
           + ("unchanged" if a.verdict == b.verdict else f"{a.verdict} -> {b.verdict} at the pilot's seeds"))
    return Pair(a.budget, b.budget, change, ok, why)


def check(results_by_budget: list[tuple[Any, list]]) -> list[BudgetCheck]:
    """One BudgetCheck per claim run at some budget (results: analysis.claims' ClaimResults per budget)."""
    out = []
    for claim in [r.claim for r in results_by_budget[0][1]]:
        rows = [(b, next(r for r in res if r.claim == claim)) for b, res in results_by_budget]
        if all(r.value is None for _, r in rows):
            continue  # not run at any budget
        steps = [Step(b, r.verdict, r.value, r.low, r.high, r.seeds) for b, r in rows]
        margin = rows[0][1].margin
        pairs = [_pair(a, b, margin) for a, b in zip(steps, steps[1:])]
        shortest = next((p.budget for p in pairs if p.long_enough), None)
        out.append(BudgetCheck(claim, rows[0][1].unit, margin, steps, pairs, shortest))
    return out


def markdown(checks: list[BudgetCheck], by: str) -> str:
    def f(x: Optional[float]) -> str:
        return "-" if x is None or not math.isfinite(x) else f"{x:+.3g}"

    budgets = [s.budget for s in checks[0].steps] if checks else []
    head = ("| claim | " + " | ".join(f"{by}={b}" for b in budgets) + " | margin/2 | each budget against the next |"
            " shortest long enough |\n|---|" + "---|" * len(budgets) + "---|---|---|")
    lines = []
    for c in checks:
        cells = [f"{s.verdict}: {f(s.value)} [{f(s.low)}, {f(s.high)}] (n={s.seeds or '-'})" for s in c.steps]
        half = "-" if c.margin is None else f"{c.margin / 2:.3g} {c.unit}"
        pairs = "; ".join(f"{p.budget} -> {p.next}: {f(p.change)}, {({True: 'yes', False: 'no', None: '-'})[p.long_enough]}"
                          f" ({p.why})" for p in c.pairs)
        lines.append(f"| {c.claim} | " + " | ".join(cells) + f" | {half} | {pairs} | "
                     f"{'-' if c.shortest is None else f'{by}={c.shortest}'} |")
    return "\n".join([head, *lines])


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.budget", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="folders with the pilot's runs")
    p.add_argument("--by", required=True, help="the config key that sets the budget (epochs, steps, ...)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep only runs with this config value (repeatable)")
    p.add_argument("--claims", default="", help="comma-separated claim ids to show (default: every claim run)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = p.parse_args(argv)
    from analysis.claims import CLAIMS, evaluate_claim
    from analysis.claims.runs import split_by_experiment, subset
    from analysis.collect import AnalysisError, collect

    where = []
    for w in args.where:
        key, sep, value = w.partition("=")
        if not sep:
            print(f"error: --where {w!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        where.append((key, value))
    try:
        col = collect([str(x) for x in args.paths])
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = [args.by, *(k for k, _ in where)]
    missing = [k for k in keys if k not in col.runs.columns]
    if missing:
        print(f"error: no config key {', '.join(missing)} in these runs; keys: {', '.join(col.config_columns)}",
              file=sys.stderr)
        return 2

    def wanted_run(cfg: dict[str, Any]) -> bool:
        return all(_same(cfg.get(k), v) for k, v in where)

    configs = col.runs[keys].to_dict("records")
    kept = col.runs[[wanted_run(c) for c in configs]]
    budgets = _order([v.item() if hasattr(v, "item") else v for v in kept[args.by].dropna().unique()])
    if len(budgets) < 2:
        print(f"error: --by {args.by}: the runs{' kept by --where' if where else ''} have {len(budgets)} "
              "value(s) of it; a pilot needs two budgets", file=sys.stderr)
        return 2
    def keep(cfg: dict[str, Any], budget: Any) -> bool:
        return _same(cfg.get(args.by), budget) and wanted_run(cfg)

    wanted = [c.strip() for c in args.claims.split(",") if c.strip()]
    known = [c.id for c in CLAIMS]
    if unknown := [c for c in wanted if c not in known]:
        print(f"error: --claims {','.join(unknown)}: no such claim; known: {', '.join(known)}", file=sys.stderr)
        return 2
    ids = wanted or known  # only the claims asked for are evaluated (each writes a figure)
    by_budget = []
    with tempfile.TemporaryDirectory() as figures:
        for b in budgets:
            mask = [keep(c, b) for c in configs]
            records = [r for r in col.records if keep(flatten(r.get("config", {})), b)]
            exps = split_by_experiment(subset(col, mask, records), replication=False)
            by_budget.append((b, [evaluate_claim(i, exps, Path(figures) / str(b)) for i in ids]))
    rows = check(by_budget)
    print(json.dumps([asdict(r) for r in rows], indent=2, default=str) if args.json else markdown(rows, args.by))
    return 0


if __name__ == "__main__":
    sys.exit(main())
