"""`python -m study.suite`: every claim's preset (conf/experiment/), each as
one multirun, then one report whose claims section gives every verdict;
`--replicate` runs them again on a disjoint seed set (docs/claims.md#running-them)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser

from analysis import build_report
from analysis.claims import REPLICATION_SEED, suite_presets
from study import REPO_ROOT
from study.config import compose_config
from study.errors import Terminated, describe_user_error, end_like_ctrl_c, stopped
from study.records import git_state, now_iso, write_json_atomic
from study.sweep.progress import Tally, count_records, describe
from study.sweep.workload import PresetPlan, Workload, fraction_done
from study.sweep.workload import time_left as workload_time_left

# (preset, extra overrides of the full suite), in the order they run: every
# preset a claim reads, from the claims' registry (analysis/claims/__init__.py),
# in claim order. The quick suite runs quick/<preset>, whose grids are set in
# the preset files.
SUITE: tuple[tuple[str, tuple[str, ...]], ...] = suite_presets()
PRESETS = tuple(name for name, _ in SUITE)
REPLICATION = " (replication)"  # the name suffix of a preset's rerun on the replication seeds


class SuiteError(Exception):
    """A bad command line; the message is one line."""


def commands(out: Path, quick: bool, only: Sequence[str], extra: Sequence[str],
             stamp: str, replicate: bool = False) -> list[tuple[str, list[str]]]:
    """(preset, argv) for each preset to run; with `replicate`, then each again on the replication seeds."""
    out_abs = out.resolve()
    todo = []
    for replication in (False, True) if replicate else (False,):
        for name, args in SUITE:
            if only and name not in only:
                continue
            preset = f"quick/{name}" if quick else name
            grid = [*(() if quick else args), *extra]
            seeds = replication_seeds(preset, grid) if replication else []
            sweep_dir = out_abs / name / (f"{stamp}-replication" if replication else stamp)
            argv = [sys.executable, str(REPO_ROOT / "study" / "run.py"), "-m", f"experiment={preset}",
                    *(() if quick else args),
                    f"hydra.sweep.dir='{sweep_dir}'",
                    "hydra.callbacks.summary.report=false"]  # one report at the end, over everything
            if name == "tune":
                # Quoted: Hydra's override grammar reads `?` and `=` inside a bare value.
                argv.append(f"hydra.sweeper.storage='sqlite:///{out_abs / 'optuna.db'}?timeout=60'")
            kept = [o for o in extra if not (replication and o.split("=", 1)[0].lstrip("+~") in SEED_KEYS)]
            todo.append((name + (REPLICATION if replication else ""), [*argv, *kept, *seeds]))
    return todo


SEED_KEYS = ("seed", "tune.confirm_seeds")  # replaced, not repeated, on a replication's command line


def preset_seeds(preset: str, overrides: Sequence[str]) -> tuple[list[int], list[int]]:
    """(the seeds a preset's sweep runs, its tuning confirmation seeds), from its composed config."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides(list(overrides))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]  # compose takes no sweeps
    cfg = compose_config([f"experiment={preset}", *fixed], return_hydra_config=True)
    sweep = (cfg.hydra.sweeper.get("params") or {}).get("seed")
    cli = [o for o in parsed if o.key_or_group == "seed"]
    if cli:
        sweep = cli[-1].input_line.split("=", 1)[1]
    if sweep is None:
        seeds = [int(cfg.seed)]
    else:
        o = parser.parse_override(f"seed={sweep}")
        seeds = [int(s) for s in (o.sweep_iterator() if o.is_sweep_override() else [o.value()])]
    confirm = [int(s) for s in (cfg.hydra.sweeper.get("confirm_seeds") or [])]  # tune: ${tune.confirm_seeds}
    return seeds, confirm


def replication_seeds(preset: str, overrides: Sequence[str]) -> list[str]:
    """The overrides that rerun `preset` on the replication seed set: every seed + REPLICATION_SEED."""
    seeds, confirm = preset_seeds(preset, overrides)
    if any(s >= REPLICATION_SEED for s in [*seeds, *confirm]):
        raise SuiteError(f"--replicate needs the first seed set below {REPLICATION_SEED}: {preset} has seeds "
                         f"{seeds + confirm}")
    shifted = ",".join(str(s + REPLICATION_SEED) for s in seeds)
    out = [f"seed={shifted}"]
    if confirm:
        out.append(f"tune.confirm_seeds=[{','.join(str(s + REPLICATION_SEED) for s in confirm)}]")
    return out


def sweep_dir_of(argv: Sequence[str]) -> Path:
    """The sweep dir a preset's command line sets (commands() quotes it)."""
    value = next(a for a in argv if a.startswith("hydra.sweep.dir=")).split("=", 1)[1]
    return Path(value.strip("'"))


class SuiteProgress:
    """The suite's own progress line: presets done, runs done of all presets'
    planned runs (each preset's sweep prints its own line too), elapsed and
    the time left. The time left weighs each preset by its work
    (study/sweep/workload.py: its runs' arithmetic, reused runs none), at the
    pace `pace_of` expects, or at the pace of all the work done so far."""

    def __init__(self, plans: Sequence[PresetPlan], twins: Sequence[Optional[int]], every: float) -> None:
        self.plans, self.twins, self.every = list(plans), list(twins), every
        self.planned = [p.runs for p in self.plans]
        self.finished: list[Tally] = []  # each preset run so far, as its sweep dir's records count
        self.seconds: list[float] = []  # and how long each took
        self.current: Optional[tuple[Path, float]] = None
        self.t0 = time.perf_counter()

    def run(self, i: int, argv: Sequence[str], sweep_dir: Path, **kwargs) -> int:
        """Run preset `i`'s command; print the suite's line every `every` seconds meanwhile."""
        self.current = (sweep_dir, time.time())
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, **kwargs)
        try:
            while True:
                try:
                    return proc.wait(timeout=self.every if self.every > 0 else None)
                except subprocess.TimeoutExpired:
                    self.report()
        except Terminated as e:
            # `kill PID` reaches this process only (Ctrl-C reaches the terminal's whole group): pass it on,
            # so that the sweep stops its workers and releases their claims instead of training on orphaned
            proc.send_signal(e.signum)
            raise
        finally:
            if proc.poll() is None:  # interrupted: the child got the same signal; let it finish its line
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            self.finished.append(self.tally_current())
            self.seconds.append(time.perf_counter() - t0)
            self.current = None

    def tally_current(self) -> Tally:
        if self.current is None:
            return Tally(planned=0)
        return count_records(*self.current) if self.current[0].is_dir() else Tally(planned=0)

    def time_left(self, current: Tally, elapsed: float,
                  paces: Optional[Sequence[Optional[float]]] = None) -> Optional[float]:
        """Seconds left: each preset's work not yet done at its pace (study.sweep.workload.time_left;
        `paces`: each preset's `pace_of`, computed here unless given)."""
        n = len(self.finished)
        fractions = [1.0] * n + [0.0] * (len(self.plans) - n)
        if n < len(self.plans):
            fractions[n] = fraction_done(current.trained, current.in_flight, current.reused, self.planned[n])
        works = [p.work for p in self.plans]
        done = sum(w * f for w, f in zip(works, fractions))
        if paces is None:
            paces = self.paces()
        return workload_time_left(works, fractions, paces, elapsed / done if done > 0 else None)

    def paces(self) -> list[Optional[float]]:
        return [self.pace_of(i) for i in range(len(self.plans))]

    def pace_of(self, i: int) -> Optional[float]:
        """Seconds per flop that preset i is expected to take, from the presets
        finished so far: its twin's (the same runs on other seeds), else that of
        the finished presets of its model family (a unit of an LSTM's work took
        about 2.5x an MLP's on the development machine), else None (the
        suite's pace so far)."""
        finished = range(len(self.finished))
        twin = self.twins[i]
        if twin is not None and twin in finished and self.plans[twin].work > 0:
            return self.seconds[twin] / self.plans[twin].work
        family = self.plans[i].family
        same = [k for k in finished if family is not None and self.plans[k].family == family]
        work = sum(self.plans[k].work for k in same)
        return sum(self.seconds[k] for k in same) / work if work > 0 else None

    def report(self) -> None:
        current = self.tally_current()
        total = Tally(planned=sum(self.planned))
        for t in [*self.finished, current]:
            total.trained += t.trained
            total.reused += t.reused
            total.failed += t.failed
            total.diverged += t.diverged
        elapsed = time.perf_counter() - self.t0
        paces = self.paces()
        left = self.time_left(current, elapsed, paces)
        line = describe(total, elapsed, left=left)
        untimed = self.untimed_families(paces)
        if left is not None and untimed and total.done < total.planned:
            # their work is read at the other families' pace: an LSTM's took about 2.5x an MLP's here
            line += f" ({', '.join(untimed)} presets not timed yet)"
        print(f"== suite: {len(self.finished)}/{len(self.planned)} presets, {line}", flush=True)

    def untimed_families(self, paces: Optional[Sequence[Optional[float]]] = None) -> list[str]:
        """The model families of presets still to run that no finished preset has given a pace."""
        if paces is None:
            paces = self.paces()
        return sorted({p.family for i, p in enumerate(self.plans[len(self.finished):], len(self.finished))
                       if p.family is not None and p.work > 0 and paces[i] is None})


def plan(todo: Sequence[tuple[str, Sequence[str]]], root: Path = REPO_ROOT) -> list[PresetPlan]:
    """Each preset's plan (study.sweep.workload), read in `root`, where its jobs run (`run`'s cwd): a
    relative run_index is theirs, found wherever the suite was started."""
    with contextlib.chdir(root):
        return Workload().presets([argv[3:] for _, argv in todo])  # after `run.py -m`


def shown(arg: str) -> str:
    """An argument as suite.json records it: paths relative to the repository,
    so that a committed suite.json names no machine's folders."""
    return arg.replace(f"{REPO_ROOT}/", "")


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m study.suite", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="run the quick/ variants (smoke test)")
    p.add_argument("--out", type=Path, default=None,
                   help="where the sweeps and the report go (default outputs/claims[-quick])")
    p.add_argument("--only", default="", help=f"comma list of presets to run, from: {','.join(PRESETS)}")
    p.add_argument("--no-report", action="store_true", help="run the presets, skip the report")
    p.add_argument("--replicate", action="store_true",
                   help=f"then run every preset again on a disjoint seed set (each seed + {REPLICATION_SEED})")
    p.add_argument("--progress-every", type=float, default=60.0,
                   help="seconds between the suite's progress lines (0: only after each preset)")
    p.add_argument("overrides", nargs="*", help="after --: config overrides for every run (e.g. threads=1)")
    args = p.parse_args(argv)
    args.only = [s for s in args.only.split(",") if s]
    unknown = [s for s in args.only if s not in PRESETS]
    if unknown:
        raise SuiteError(f"--only={','.join(unknown)} is not allowed: presets are {', '.join(PRESETS)}")
    if args.out is None:
        args.out = Path("outputs") / ("claims-quick" if args.quick else "claims")
    return args


STOPPED = {128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGHUP}  # a sweep's exits on those signals


def main(argv: Optional[Sequence[str]] = None) -> int:
    end_like_ctrl_c()
    try:
        return _main(argv)
    except KeyboardInterrupt as e:  # while composing the presets or building the report
        return stopped(e)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = parse(argv)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out: Path = args.out
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    try:  # every preset's jobs composed before anything is written: a bad override is one line
        todo = commands(out, args.quick, args.only, args.overrides, stamp, args.replicate)
        plans = plan(todo)
    except Exception as e:
        line = str(e) if isinstance(e, SuiteError) else describe_user_error(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "suite.json"
    done: list[dict] = []
    failed = []
    t_suite = time.perf_counter()
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    names = [name for name, _ in todo]
    twins = [names.index(n[:-len(REPLICATION)]) if n.endswith(REPLICATION) else None for n in names]
    try:
        suite = SuiteProgress(plans, twins, args.progress_every)
        for i, (name, argv_) in enumerate(todo):
            print(f"== {name} ({i + 1}/{len(todo)} presets, {plans[i].runs} runs): {' '.join(argv_[1:])}", flush=True)
            t0 = time.perf_counter()
            rc = suite.run(i, argv_, sweep_dir_of(argv_), cwd=REPO_ROOT, env=env)
            seconds = time.perf_counter() - t0
            done.append({"preset": name, "argv": [shown(a) for a in argv_[1:]], "exit_status": rc,
                         "seconds": round(seconds, 1)})
            print(f"== {name}: exit {rc} in {seconds / 60:.1f} min", flush=True)
            suite.report()
            if rc != 0:
                failed.append(name)
                if rc in STOPPED:  # the sweep was stopped by a signal (Ctrl-C, kill): stop the suite too
                    raise Terminated(rc - 128)
            write_json_atomic(log_path, {"quick": args.quick, "replicate": args.replicate, "presets": done, "git": git_state(), "updated_at": now_iso(),
                                         "seconds": round(time.perf_counter() - t_suite, 1)})
    except KeyboardInterrupt as e:
        return stopped(e)
    total = time.perf_counter() - t_suite
    print(f"== suite: {len(done)} presets in {total / 60:.1f} min"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    if not args.no_report:
        from analysis.collect import AnalysisError  # loads pandas: once the presets have run

        try:
            report = build_report([out], out_dir=out / "report")
        except AnalysisError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"report: {report / 'report.html'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
