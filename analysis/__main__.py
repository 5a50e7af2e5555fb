"""`python -m analysis PATH... [--out DIR] [--study NAME] [--root DIR]`: build a sweep's report.

PATH is a sweep dir, any folder of runs (e.g. outputs/), a result.json, or
an Optuna storage URL (e.g. sqlite:///outputs/optuna.db) with --study (once
per study). A tuning sweep's dir brings every trial of its studies, from the
storage its optimization_results.yaml names, wherever the trials ran. From
a storage alone (another machine, record files elsewhere) the report takes
each trial's value and each confirmation run's metrics from the study, and
one warning line on stderr says how many records could not be read.
Prints the path of report.html. Unusable input (no such path, no run records,
an unknown study) or a report folder that cannot be made (a read-only results
dir: give --out) ends with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="sweep dir, folder of runs, result.json, or Optuna storage URL")
    parser.add_argument("--out", type=Path, default=None,
                        help="report dir (default: PATH/report; for a storage URL outputs/reports/STUDY)")
    parser.add_argument("--study", action="append", default=None,
                        help="Optuna study name (needed when the storage holds several; repeat for several)")
    parser.add_argument("--root", type=Path, default=None,
                        help="results root: where the record paths a storage holds (relative to the sweep's "
                             "hydra.sweeper.results_root) are looked up first (default: the current dir)")
    args = parser.parse_args(argv)

    from analysis.collect import AnalysisError
    from analysis.report import REPORT_HTML, build_report

    problems: list = []
    try:
        out = build_report(args.paths, args.out, study_name=args.study, results_root=args.root,
                           problems=problems)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if problems:
        print(f"warning: {unreadable_line(problems)}", file=sys.stderr)
    print(out / REPORT_HTML)
    return 0


def unreadable_line(problems: list) -> str:
    """The records that could not be read, in one line: how many, of which kind, the first one."""
    kinds = {k: sum(p.kind == k for p in problems) for k in ("missing", "unreadable")}
    what = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
    return (f"{len(problems)} run record{'s' if len(problems) != 1 else ''} could not be read here ({what}; "
            f"first: {problems[0].path}); the report uses what the storage holds for them and lists them "
            "under Protocol")


if __name__ == "__main__":
    sys.exit(main())
