"""Pilot: the suite's time-left estimate replayed against measured preset
times. After each preset of the first seed set, what the suite's line would
have said (`study.suite.SuiteProgress.time_left`: each preset's work at its
pace) and what counting runs said (`study.sweep.progress.time_left`), over
the time that was actually left. The minutes are the first seed set's wall
times at the current budgets on the 2-core development machine, 2026-12-07
(docs/speed.md#the-claims-suite: the recurrent presets at 56d6d60, `rnn`
rerun at 55659fd, `cnn`, the eleven MLP presets, the last six at e1636f3).

    uv run python docs/pilots/suite_estimate.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from study.suite import SuiteProgress, commands
from study.sweep.progress import Tally
from study.sweep.progress import time_left as by_runs
from study.sweep.workload import Workload

MINUTES = dict(notebook=1.5, max_lr=1.4, tune=4.1, tune_reference=1.5, steps_to_target=5.1, small_batch=3.3,
               shift=5.3, ghost=2.8, ioffe2015=11.2, ics=0.3, landscape=0.1, regularization=6.2,
               linear_scaling=16.3, overhead=5.3, deep=0.7, rnn=16.7, rnn_permuted=18.4, rnn_eps=7.1,
               rnn_small_batch=8.5, cnn=29.7, precise_bn=2.5, input_scaling=0.9)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # an empty run index: nothing reused from earlier suites
        todo = commands(Path(tmp), quick=False, only=[], extra=[f"run_index={tmp}/.run-index"], stamp="S")
        plans = Workload().presets([argv[3:] for _, argv in todo])
    names = [name for name, _ in todo]
    seconds = [MINUTES[n] * 60 for n in names]
    progress = SuiteProgress(plans, [None] * len(plans), every=0)
    print(f"{'after':18s} {'left (min)':>10s} {'by work':>8s} {'by runs':>8s}")
    for k in range(1, len(names)):
        progress.finished = [Tally(planned=p.runs, trained=p.runs) for p in plans[:k]]
        progress.seconds = seconds[:k]
        elapsed, actual = sum(seconds[:k]), sum(seconds[k:])
        work = progress.time_left(Tally(planned=plans[k].runs), elapsed)
        runs = by_runs(Tally(planned=sum(p.runs for p in plans), trained=sum(p.runs for p in plans[:k])), elapsed)
        print(f"{names[k - 1]:18s} {actual / 60:10.1f} {work / actual:7.2f}x {runs / actual:7.2f}x")


if __name__ == "__main__":
    main()
