"""The analysis of a sweep: every run record below a path -> one report folder.

`build_report([sweep_dir])` (or `python -m analysis PATH...`) collects the
runs' `result.json` records into tidy tables and writes `report/` with
`results.csv`, `history.csv`, the figures, `report.md` and a self-contained
`report.html`. Heavy imports (pandas, seaborn, matplotlib) happen on the
first call, so importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

__all__ = ["build_report", "AnalysisError"]


def build_report(paths: list[str | Path], out_dir: Path | None = None, *,
                 study_name: str | Sequence[str] | None = None) -> Path:
    """Collect the run records under `paths` (dirs, result.json files or an
    Optuna storage URL with `study_name`, one study or several) and write
    the report; return the
    report dir (it holds `report.html`). Raises `AnalysisError` with a
    one-line message for unusable input (no such path, no records, ...).
    """
    from analysis.report import build_report as _build

    return _build(paths, out_dir, study_name=study_name)


def __getattr__(name: str):
    if name == "AnalysisError":
        from analysis.collect import AnalysisError

        return AnalysisError
    raise AttributeError(name)
