"""Where a sweep stands: the progress line's counts and estimate, the packs'
progress files, and a real multirun's output written to a file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, tiny_overrides
from study.config import compose_config
from study.sweep.progress import (PROGRESS_FILE, PackProgressFile, SweepProgress, Tally, clock_text, count_records,
                            describe, time_left)
from study.runner import run_job


def test_the_estimate_is_the_work_left_at_the_pace_so_far() -> None:
    # 3 trained in 60 s, 2 reused (free): 5 of 10 left at 20 s a run
    tally = Tally(planned=10, trained=3, reused=2)
    assert time_left(tally, 60.0) == pytest.approx(100.0)
    # a pack half through 4 runs counts as 2 runs trained, and 2 of the 5 left
    tally.in_flight = 2.0
    assert time_left(tally, 60.0) == pytest.approx(3 * 60 / 5)
    line = describe(Tally(planned=10, trained=3, reused=2, failed=1, diverged=1), 60.0)
    assert line == "5/10 runs done (2 reused), 1 failed, 1 diverged, elapsed 1:00, about 1:40 left"


def test_no_estimate_before_a_run_worth_of_training() -> None:
    assert time_left(Tally(planned=10, reused=4), 30.0) is None  # reused runs say nothing of the pace
    assert time_left(Tally(planned=10, in_flight=0.5), 30.0) is None
    assert "estimating time left" in describe(Tally(planned=10, reused=4), 30.0)
    assert describe(Tally(planned=4, trained=4), 3725.0).endswith("elapsed 1:02:05, finished")
    assert clock_text(59.6) == "1:00"


def test_packs_in_flight_count_their_trained_part(tmp_path: Path) -> None:
    dirs = [tmp_path / f"{i}_seed={i}" for i in range(4)]
    for d in dirs:
        d.mkdir()
    follower = SweepProgress(every=1e9)
    follower.add_jobs(dirs)
    write = PackProgressFile(dirs[:2], every=0.0)  # a pack of two, a quarter through
    write(25, 100)
    tally, changed = follower.poll()
    assert (tally.planned, tally.done, changed) == (4, 0, False)
    assert tally.in_flight == pytest.approx(0.5)
    info = json.loads((dirs[0] / PROGRESS_FILE).read_text())
    assert info["dirs"] == [str(d.resolve()) for d in dirs[:2]]
    write.remove()
    assert not (dirs[0] / PROGRESS_FILE).exists()
    assert follower.poll()[0].in_flight == 0.0


def test_a_stale_progress_file_is_not_counted(tmp_path: Path) -> None:
    """A pack killed before this sweep started left its file: not work done now."""
    d = tmp_path / "0_seed=0"
    d.mkdir()
    PackProgressFile([d], every=0.0)(50, 100)
    old = time.time() - 3600
    os.utime(d / PROGRESS_FILE, (old, old))
    follower = SweepProgress(every=1e9)
    follower.add_jobs([d])
    assert follower.poll()[0].in_flight == 0.0


def test_records_count_as_trained_reused_or_failed(tmp_path: Path, tiny_mnist: Path) -> None:
    """Real records: one trained now, one found finished before the sweep, one damaged."""
    over = tiny_overrides(tiny_mnist) + ["steps=5"]
    before = tmp_path / "0_seed=0"
    run_job(compose_config(over), before)
    follower = SweepProgress(every=1e9)  # the sweep starts after that record was written
    trained, damaged = tmp_path / "1_seed=1", tmp_path / "2_seed=2"
    follower.add_jobs([before, trained, damaged])
    tally, changed = follower.poll()
    assert (tally.reused, tally.trained, changed) == (1, 0, True)
    time.sleep(0.01)
    run_job(compose_config(over + ["seed=1"]), trained)
    damaged.mkdir()
    (damaged / "result.json").write_text('{"status": "compl')  # half-written: not a result
    tally, changed = follower.poll()
    assert (tally.planned, tally.reused, tally.trained, tally.failed, changed) == (3, 1, 1, 0, True)
    assert follower.poll()[1] is False  # nothing new
    assert count_records(tmp_path, since=follower.started_wall).done == 2


def test_the_line_is_printed_per_finished_run_and_at_a_steady_pace(tmp_path: Path) -> None:
    now = [0.0]
    lines: list[str] = []
    follower = SweepProgress(every=30.0, out=lines.append, clock=lambda: now[0])
    follower.add_jobs([tmp_path / "a", tmp_path / "b"])
    now[0] = 10.0
    follower.report()
    assert lines == []  # nothing finished, not yet 30 s
    now[0] = 31.0
    follower.report()
    assert lines == ["progress: 0/2 runs done, 0 failed, 0 diverged, elapsed 0:31, estimating time left"]
    follower.report(force=True)  # the same counts: no second line
    assert len(lines) == 1


def _read_lines(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


@pytest.mark.slow
def test_a_multirun_into_a_file_prints_plain_progress_lines(tmp_path: Path, tiny_mnist: Path) -> None:
    """Output to a file (as in CI): progress lines with done/total and an
    estimate, no control characters; a second sweep of the same runs counts
    them as reused."""
    log = tmp_path / "sweep.log"
    args = [sys.executable, str(REPO / "study" / "run.py"), "-m", *tiny_overrides(tiny_mnist), "force=false",
            "batch_size=16,64", "epochs=4", "hydra.callbacks.summary.report=false",
            "hydra.callbacks.summary.progress_every=1", "hydra.launcher.max_pack=2", "hydra.launcher.n_jobs=1"]
    with log.open("w") as out:
        proc = subprocess.run(args + [f"hydra.sweep.dir={tmp_path}/a"], cwd=tmp_path, stdout=out,
                              stderr=subprocess.STDOUT, timeout=300)
    text = _read_lines(log)
    assert proc.returncode == 0, text
    assert not re.search(r"[\r\x1b]", text)  # plain lines into a file
    lines = [ln.split("progress: ", 1)[1] for ln in text.splitlines() if "progress: " in ln]
    assert lines[0].startswith("0/12 runs done") or re.match(r"\d+/12 runs done", lines[0])
    assert any(re.search(r"about \d+:\d\d left", ln) for ln in lines), lines
    assert re.fullmatch(r"12/12 runs done, 0 failed, 0 diverged, elapsed \d+:\d\d, finished", lines[-1]), lines
    done = [int(ln.split("/", 1)[0]) for ln in lines]
    assert done == sorted(done)  # never counts backwards

    with log.open("w") as out:  # the same runs again, in another dir: reused from the run index
        proc = subprocess.run(args + [f"hydra.sweep.dir={tmp_path}/b"], cwd=tmp_path, stdout=out,
                              stderr=subprocess.STDOUT, timeout=300)
    lines = [ln.split("progress: ", 1)[1] for ln in _read_lines(log).splitlines() if "progress: " in ln]
    assert proc.returncode == 0
    assert lines[-1].startswith("12/12 runs done (12 reused), 0 failed")
