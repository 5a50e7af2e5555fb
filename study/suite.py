"""`python -m study.suite`: every claim's preset (conf/experiment/), each as
one multirun, then one report whose claims section gives every verdict;
`--replicate` runs them again on a disjoint seed set (docs/claims.md#running-them)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from analysis import build_report
from analysis.claims import REPLICATION_SEED, suite_presets
from study import REPO_ROOT
from study.config import compose_config
from study.errors import Terminated, end_like_ctrl_c, stopped
from study.records import git_state, now_iso, write_json_atomic
from study.sweep.progress import Tally, count_records, describe

# (preset, extra overrides of the full suite), in the order they run: every
# preset a claim reads, from the claims' registry (analysis/claims/__init__.py),
# in claim order. The quick suite runs quick/<preset>, whose grids are set in
# the preset files.
SUITE: tuple[tuple[str, tuple[str, ...]], ...] = suite_presets()
PRESETS = tuple(name for name, _ in SUITE)


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
            todo.append((name + (" (replication)" if replication else ""), [*argv, *kept, *seeds]))
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


def planned_runs(overrides: Sequence[str]) -> int:
    """How many runs a preset's sweep launches (`overrides`: its command line
    after `-m`): its grid, or per cell its trials and confirmation seeds."""
    parser = OverridesParser.create()
    parsed = parser.parse_overrides([o for o in overrides if not o.startswith("hydra.")])
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    cfg = compose_config(fixed, return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    params += [o.input_line for o in parsed if o.is_sweep_override()]  # the command line's win (later)
    if "bn_optuna" in str(sweeper._target_):
        from hydra_plugins.bn_study_sweeper.plan import plan_sweep  # loads optuna: only for the tuning preset

        cells = len(plan_sweep(params, bool(sweeper.cells)).cells())
        return cells * (int(sweeper.n_trials) + len(sweeper.confirm_seeds or []))
    return sum(len(batch) for batch in BasicSweeper.split_arguments(parser.parse_overrides(params), None))


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
    the time left at the pace of the runs trained so far. Runs differ in cost
    from preset to preset, so it is a rough guide until late in the suite."""

    def __init__(self, planned: Sequence[int], every: float) -> None:
        self.planned, self.every = list(planned), every
        self.finished: list[Tally] = []  # each preset run so far, as its sweep dir's records count
        self.current: Optional[tuple[Path, float]] = None
        self.t0 = time.perf_counter()

    def run(self, i: int, argv: Sequence[str], sweep_dir: Path, **kwargs) -> int:
        """Run preset `i`'s command; print the suite's line every `every` seconds meanwhile."""
        self.current = (sweep_dir, time.time())
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
            self.current = None

    def tally_current(self) -> Tally:
        if self.current is None:
            return Tally(planned=0)
        return count_records(*self.current) if self.current[0].is_dir() else Tally(planned=0)

    def report(self) -> None:
        parts = [*self.finished, self.tally_current()]
        total = Tally(planned=sum(self.planned))
        for t in parts:
            total.trained += t.trained
            total.reused += t.reused
            total.failed += t.failed
            total.diverged += t.diverged
        line = describe(total, time.perf_counter() - self.t0)
        print(f"== suite: {len(self.finished)}/{len(self.planned)} presets, {line}", flush=True)


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
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    log_path = out / "suite.json"
    done: list[dict] = []
    failed = []
    t_suite = time.perf_counter()
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    try:
        todo = commands(out, args.quick, args.only, args.overrides, stamp, args.replicate)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        planned = [planned_runs(argv_[3:]) for _, argv_ in todo]  # after `run.py -m`
        suite = SuiteProgress(planned, args.progress_every)
        for i, (name, argv_) in enumerate(todo):
            print(f"== {name} ({i + 1}/{len(todo)} presets, {planned[i]} runs): {' '.join(argv_[1:])}", flush=True)
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
