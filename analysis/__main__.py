"""`python -m analysis PATH... [--out DIR] [--study NAME]`: build a sweep's report.

PATH is a sweep dir, any folder of runs (e.g. outputs/), a result.json, or
an Optuna storage URL (e.g. sqlite:///outputs/optuna.db) with --study (once
per study). A tuning sweep's dir brings every trial of its studies, from the
storage its optimization_results.yaml names, wherever the trials ran.
Prints the path of report.html. Unusable input (no such path, no run records,
an unknown study) ends with one line on stderr and exit status 1.
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
    args = parser.parse_args(argv)

    from analysis.collect import AnalysisError
    from analysis.report import REPORT_HTML, build_report

    try:
        out = build_report(args.paths, args.out, study_name=args.study)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out / REPORT_HTML)
    return 0


if __name__ == "__main__":
    sys.exit(main())
