"""Where a multirun stands, printed as it goes (runs done of planned, failed,
diverged, elapsed, time left): `SweepProgress` in the launching process,
`PackProgressFile` written by a training pack (docs/viewing.md#progress)."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from study.records import RESULT_FILE, RecordError, read_record, write_json_atomic

log = logging.getLogger("study.progress")

PROGRESS_FILE = ".progress.json"  # a training pack's steps done of its total, in its first member's dir
TRAINED_STATUSES = ("completed", "diverged", "failed", "pruned")


@dataclass
class Tally:
    planned: int
    trained: int = 0  # records of runs trained by this sweep (any status)
    reused: int = 0  # records reused from finished runs, or already in the dir before the sweep
    failed: int = 0
    diverged: int = 0
    in_flight: float = 0.0  # runs' worth of training done in packs still training

    @property
    def done(self) -> int:
        return self.trained + self.reused


def clock_text(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def time_left(tally: Tally, elapsed: float) -> Optional[float]:
    """Seconds left at the pace so far; None until a run's worth is trained."""
    work = tally.trained + tally.in_flight
    if work < 1.0 or elapsed <= 0:
        return None
    left = max(0.0, tally.planned - tally.done - tally.in_flight)
    return left * elapsed / work


_PACE = object()  # describe's default: the time left at the pace of the runs so far (time_left)


def describe(tally: Tally, elapsed: float, what: str = "runs", left: Optional[float] | object = _PACE) -> str:
    """One plain line: done/planned, reused, failed, diverged, elapsed, time
    left (`left` seconds where the caller estimates it, None: not yet)."""
    parts = [f"{tally.done}/{tally.planned} {what} done"
             + (f" ({tally.reused} reused)" if tally.reused else ""),
             f"{tally.failed} failed", f"{tally.diverged} diverged", f"elapsed {clock_text(elapsed)}"]
    if tally.done >= tally.planned and tally.planned:
        parts.append("finished")
    else:
        if left is _PACE:
            left = time_left(tally, elapsed)
        parts.append("estimating time left" if left is None else f"about {clock_text(left)} left")
    return ", ".join(parts)


def count_records(root: Path, since: float) -> Tally:
    """The records below `root` as the sweep line counts them (`since`: the
    sweep's start, time.time(); records older than that count as reused)."""
    follower = SweepProgress()
    follower.started_wall = since
    follower.add_jobs(p.parent for p in Path(root).rglob(RESULT_FILE))
    return follower.poll()[0]


class PackProgressFile:
    """A training pack's progress, written (atomically, at most every
    `every` seconds) into its first member's dir; the launching process reads
    it. Removed when the pack's records are written."""

    def __init__(self, dirs: list[Path], every: float = 2.0) -> None:
        self.path = Path(dirs[0]) / PROGRESS_FILE
        self.dirs = [str(Path(d).resolve()) for d in dirs]
        self.every, self.last = every, float("-inf")

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every and step < total:
            return
        self.last = now
        try:
            write_json_atomic(self.path, {"dirs": self.dirs, "step": int(step), "total": int(total)})
        except OSError:  # progress is a courtesy: never a reason to stop training
            pass

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class SweepProgress:
    """Counts a sweep's records as they appear and prints where it stands."""

    def __init__(self, every: float = 30.0, poll: float = 1.0, out: Callable[[str], None] = log.info,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.poll_seconds, self.out, self.clock = every, poll, out, clock
        self.started = clock()
        self.started_wall = time.time()
        self.status: dict[Path, Optional[str]] = {}  # run dir -> how its record counts (None: not yet)
        self.expected = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.last_printed = self.started
        self.last_counts: Optional[tuple[int, ...]] = None  # of the last line printed

    # -- what the launchers and sweepers say
    def add_jobs(self, dirs: Iterable[str | Path]) -> None:
        with self.lock:
            for d in dirs:
                self.status.setdefault(Path(d).resolve(), None)

    def expect(self, total: int) -> None:
        """The number of runs the sweep plans in all (a sweeper that launches in batches)."""
        with self.lock:
            self.expected = max(0, int(total))

    # -- reading the dirs
    def _count(self, d: Path) -> Optional[str]:
        path = d / RESULT_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        try:
            record = read_record(path)
        except RecordError:  # half-written or damaged: not a result (yet)
            return None
        status = record.get("status")
        if record.get("reused_from") or mtime < self.started_wall:
            return "reused"
        return status if status in TRAINED_STATUSES else "completed"

    def _in_flight(self, pending: set[Path]) -> float:
        """Runs' worth of training done in packs whose progress file names pending dirs."""
        total = 0.0
        for d in pending:
            path = d / PROGRESS_FILE
            try:
                if path.stat().st_mtime < self.started_wall:
                    continue  # left by a pack killed before this sweep started
                info = json.loads(path.read_text())
                members = [Path(p) for p in info["dirs"]]
                total += float(info["step"]) / max(1, int(info["total"])) * sum(m in pending for m in members)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or removed as the pack finished
        return total

    def poll(self) -> tuple[Tally, bool]:
        """Read the dirs; the tally and whether a run finished since the last poll."""
        with self.lock:
            dirs = list(self.status.items())
            expected = self.expected
        changed = False
        for d, counted in dirs:
            if counted is None:
                now = self._count(d)
                if now is not None:
                    changed = True
                    with self.lock:
                        self.status[d] = now
        with self.lock:
            statuses = list(self.status.values())
            pending = {d for d, s in self.status.items() if s is None}
        tally = Tally(planned=max(expected, len(statuses)))
        for s in statuses:
            if s == "reused":
                tally.reused += 1
            elif s is not None:
                tally.trained += 1
                tally.failed += s == "failed"
                tally.diverged += s == "diverged"
        tally.in_flight = min(self._in_flight(pending), float(len(pending)))
        return tally, changed

    def elapsed(self) -> float:
        return self.clock() - self.started

    def report(self, force: bool = False) -> None:
        """Print a line when a run finished, every `every` seconds, and (`force`) unless the last line said it all."""
        tally, changed = self.poll()
        if not tally.planned:
            return
        line = describe(tally, self.elapsed())
        counts = (tally.planned, tally.trained, tally.reused, tally.failed, tally.diverged)
        if (force and counts != self.last_counts) or changed or self.clock() - self.last_printed >= self.every:
            self.out(f"progress: {line}")
            self.last_printed, self.last_counts = self.clock(), counts

    # -- the thread
    def start(self) -> "SweepProgress":
        self.thread = threading.Thread(target=self._run, name="sweep-progress", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.wait(self.poll_seconds):
            try:
                self.report()
            except Exception as e:  # a courtesy: never a reason to stop a sweep
                log.debug("progress: %s", e)

    def stop(self) -> None:
        """Stop the thread and print the last line (every planned job launched by now)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        with self.lock:
            self.expected = 0  # the sweep is over: what it launched is what it planned
        self.report(force=True)


_current: Optional[SweepProgress] = None


def begin(every: float) -> Optional[SweepProgress]:
    """Start following this process's sweep (`every` <= 0: no progress lines)."""
    global _current
    _current = SweepProgress(every=every).start() if every > 0 else None
    return _current


def end() -> None:
    global _current
    if _current is not None:
        _current.stop()
    _current = None


def abandon() -> None:
    """Stop following without a last line (the sweep ends with an error of its own)."""
    global _current
    if _current is not None:
        _current.stopping.set()
    _current = None


def add_jobs(dirs: Iterable[str | Path]) -> None:
    """Called by the launchers with each job's run dir (no-op outside a followed sweep)."""
    if _current is not None:
        _current.add_jobs(dirs)


def expect(total: int) -> None:
    """Called by a sweeper that knows how many runs it plans in all."""
    if _current is not None:
        _current.expect(total)
