"""The `bn_optuna` sweep: per cell, one study; its trials asked, launched and
told in batches; then its best trial confirmed once (docs/tuning.md: How it
works, The sweep step by step)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial

from hydra_plugins.bn_study_launcher.packed_launcher import packing
from study.config import validate
from study.errors import StudyIncomplete, UserError
from study.sweep import progress

from .accounting import (CellResult, best_trial, confirmation, counts_toward_target, done_or_in_flight,
                         job_outcome, report, state_counts)
from .beats import BeatSettings, Heartbeat
from .liveness import OtherSweeps, fail_dead_trials, this_sweep
from .lock import confirm_once
from .plan import (SweepPlan, check_direction, draw, fixed_config, hydra_quote, launcher_batch, override_key,
                   plan_sweep, seeded_sampler, study_name, trial_overrides, trial_target)
from .pruning import pruner_spec, store_pruner
from .storage import ask, fail_interrupted, open_study, open_user_storage, tell, trial_id

log = logging.getLogger("study.tune")


class BnOptunaSweeperImpl(Sweeper):
    def __init__(self, *, sampler_conf: DictConfig, direction: Any, storage: Any, study_name: Optional[str],
                 n_trials: int, n_jobs: Optional[int], max_failure_rate: float,
                 custom_search_space: Optional[str], params: Optional[DictConfig], pruner: Any,
                 cells: bool, confirm_seeds: list[int], heartbeat_interval: Optional[int] = None,
                 grace_period: Optional[int] = None, results_root: Optional[str] = None) -> None:
        # The sampler is made per study (seeded per study), from its config.
        self.sampler_conf, self.direction, self.storage_conf = sampler_conf, direction, storage
        self.study_name, self.n_trials, self.batch = study_name, n_trials, n_jobs
        self.max_failure_rate, self.params, self.cells = max_failure_rate, params, cells
        # The plugin's custom search space: a function (config, trial) that suggests more.
        self.extend = (instantiate({"_target_": custom_search_space, "_partial_": True})
                       if custom_search_space else None)
        self.pruner = pruner_spec(OmegaConf.to_container(pruner, resolve=True)
                                  if isinstance(pruner, DictConfig) else pruner) if pruner else None
        self.confirm_seeds = [int(s) for s in confirm_seeds]
        self.results_root = Path(results_root or os.getcwd()).expanduser().resolve()
        self.beat = BeatSettings(heartbeat_interval, grace_period)
        if n_trials < 1:
            raise UserError(f"hydra.sweeper.n_trials={n_trials} is not allowed: an integer >= 1")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                           task_function=task_function)
        # Confirmation reruns are packed under any launcher (trials never are: packed_launcher.packing).
        self.launcher = packing(launcher, hydra_context, config)

    # ------------------------------------------------------------------ sweep
    def sweep(self, arguments: list[str]) -> None:
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        plan = plan_sweep(params + list(arguments), self.cells)
        if not plan.search:
            raise UserError("nothing to tune: give a search space, e.g. 'lr=tag(log, interval(1e-3, 1.0))' "
                            "or hydra.sweeper.params.lr=...")
        direction = check_direction(self.direction, str(self.config.objective))
        self.url, self.storage = open_user_storage(self.storage_conf, self.beat.interval, self.beat.grace_period)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        self.job_idx = next_job_index(sweep_dir)
        cells = plan.cells()
        self.planned = 0
        self._expect(len(cells) * (self.n_trials + len(self.confirm_seeds)))
        grid = " x ".join(f"{override_key(k)}={','.join(v)}" for k, v in plan.grid.items())
        log.info("storage: %s; %d stud%s (%s); search space: %s", self.url, len(cells),
                 "y" if len(cells) == 1 else "ies", grid or "one cell",
                 ", ".join(f"{override_key(k)} {d}" for k, d in plan.search.items()))
        # Every cell's config is composed and checked before the first trial runs.
        tasks = [self._cell_config([f"{k}={v}" for k, v in {**plan.fixed, **cell}.items()] + plan.passthrough)
                 for cell in cells]
        results = [self._tune_cell(plan, cell, task, direction) for cell, task in zip(cells, tasks)]
        report(results, self.url, sweep_dir, str(self.results_root))
        incomplete = [r for r in results if r.incomplete]
        if incomplete:
            first = incomplete[0]
            more = f" (and {len(incomplete) - 1} more studies)" if len(incomplete) > 1 else ""
            raise StudyIncomplete(f"study {first.study} is not complete: {first.incomplete}{more}; "
                                  "run the same command again to finish it")

    def _open_cell(self, plan: SweepPlan, cell: dict[str, str], task: DictConfig,
                   direction: str) -> tuple[optuna.Study, int]:
        """The cell's study, its dead sweeps' trials failed and its sampler seeded; and its target."""
        name = study_name(plan, cell, self.study_name, self._launch_only_keys())
        study = open_study(self.storage, name, direction, fixed_config(task, plan, self._launch_only_keys()),
                           cell, str(task.objective), plan.search)
        if self.pruner is not None:
            store_pruner(study, self.pruner)
        stale = fail_dead_trials(self.storage, study)
        if stale:
            log.info("%s: %d trial%s left RUNNING by a dead sweep marked failed (not counted)",
                     name, stale, "s" if stale > 1 else "")
        study.sampler = seeded_sampler(self.sampler_conf, name, len(study.get_trials(deepcopy=False)), plan.search)
        return study, trial_target(study.sampler, self.n_trials, plan.search)

    def _tune_cell(self, plan: SweepPlan, cell: dict[str, str], task: DictConfig, direction: str) -> CellResult:
        """Top the cell's study up to its target, ask -> launch -> tell, a batch at a time; then confirm."""
        study, target = self._open_cell(plan, cell, task, direction)
        name, objective = study.study_name, str(task.objective)
        done = done_or_in_flight(study)
        budget = max(0, target - done)
        log.info("%s: %d of %d trials done or running; asking %d", name, done, target, budget)
        self._expect(budget - self.n_trials)  # trials done before, or fewer in the grid, are not run now

        batch = max(1, int(self.batch)) if self.batch is not None else launcher_batch(self.config.hydra.launcher)
        others = OtherSweeps(name, self.beat)
        errors: list[str] = []
        asked = 0
        while True:
            dead = fail_dead_trials(self.storage, study)  # a sweep elsewhere died meanwhile: asked again here
            if dead:
                log.info("%s: %d trial%s of a dead sweep marked failed (asked again)",
                         name, dead, "s" if dead > 1 else "")
                budget += dead
                self._expect(dead)
            k = min(batch, budget, target - done_or_in_flight(study))
            if k <= 0:  # nothing more to ask here: wait while other sweeps' trials run
                if others.wait(study, target):
                    continue
                break
            trials = [self._ask(study) for _ in range(k)]
            returns = self._launch(study, trials, plan, cell)
            raised = sum(self._tell(study, t, ret, objective, errors) for t, ret in zip(trials, returns))
            asked += k
            budget -= k
            if raised / len(returns) > self.max_failure_rate:
                log.error("%d of %d jobs raised (max_failure_rate=%s)", raised, len(returns),
                          self.max_failure_rate)
                for ret in returns:
                    ret.return_value  # re-raises the job's exception, with its traceback

        trials = study.get_trials(deepcopy=False)
        result = CellResult(study=name, cell=cell, objective=objective, counts=state_counts(trials),
                            asked=asked, best=best_trial(study), errors=errors)
        if result.best is not None and self.confirm_seeds and not others.blind:
            best = result.best
            result.confirm, result.confirm_note = confirm_once(
                self.storage, study, best, self.confirm_seeds, self.beat,
                lambda: self._confirm(study, plan, cell, best))
        result.incomplete = result.why_incomplete(sum(counts_toward_target(t) for t in trials), target,
                                                  others.blind, bool(self.confirm_seeds))
        if not (result.confirm and result.confirm_note is None):  # no confirmation runs launched now
            self._expect(-len(self.confirm_seeds))
        return result

    def _launch(self, study: optuna.Study, trials: list[Trial], plan: SweepPlan,
                cell: dict[str, str]) -> Sequence[JobReturn]:
        """Draw the trials' params and run their jobs, beating for them; an interrupted batch's trials fail."""
        to_trial = (f"trial.storage={hydra_quote(self.url)}", f"trial.study={hydra_quote(study.study_name)}",
                    f"trial.prune={'true' if self.pruner is not None else 'false'}")
        try:
            with Heartbeat(self.storage, trials):  # beating on from the first beat each got when asked (_ask)
                draw(study, trials, plan.search, self.sampler_conf)
                overrides = trial_overrides(trials, {**plan.fixed, **cell}, plan.passthrough, self.extend,
                                            self.config)
                overrides = [o + to_trial + (f"trial.number={t.number}",) for o, t in zip(overrides, trials)]
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        except BaseException:
            fail_interrupted(self.storage, study, trials, "interrupted")
            raise
        self.job_idx += len(returns)
        return returns

    def _ask(self, study: optuna.Study) -> Trial:
        """A new RUNNING trial, its first heartbeat and its owner recorded at once: who runs it, and
        whether it beats for it (a sweep on another host waits for it only if it can tell it dead by
        its heartbeat). The beat comes first: an owner that promises beats must never stand on a
        trial without one, which Optuna's stale-trial check skips, so another host would wait for it
        for ever. A sweep killed before the owner is written leaves a trial without one, which the
        next sweep fails once its beats are grace_period old or the trial OWNERLESS_STALE_AFTER
        old, so nothing else comes between these writes (the batch's Heartbeat beats on from them)."""
        owner = dict(this_sweep(), heartbeat=self.beat.interval)
        trial = ask(study)
        if self.storage.get_heartbeat_interval():
            self.storage.record_heartbeat(trial_id(self.storage, study, trial.number))
        trial.set_user_attr("sweep", owner)
        return trial

    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn, objective: str, errors: list[str]) -> bool:
        """Tell the trial what its job's run record says; True if the job raised."""
        attrs, state, value = job_outcome(ret, objective, self._stored_path)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if attrs["status"] == "error":
            errors.append(attrs["error"])
        tell(study, trial, state, value)
        return ret.status == JobStatus.FAILED

    def _confirm(self, study: optuna.Study, plan: SweepPlan, cell: dict[str, str],
                 best: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """Rerun the best trial's parameters with each confirm seed (reused when finished)."""
        params = {k: v for k, v in {**plan.fixed, **cell}.items() if override_key(k) != "seed"}
        params.update(best.params)
        base = tuple(f"{k}={v}" for k, v in params.items()) + tuple(plan.passthrough)
        returns = self.launcher.launch([base + (f"seed={s}",) for s in self.confirm_seeds],
                                       initial_job_idx=self.job_idx)
        self.job_idx += len(returns)
        confirm = confirmation(best, self.confirm_seeds, returns, self._stored_path)
        study.set_user_attr("confirm", confirm)
        return confirm

    # ---------------------------------------------------------------- helpers
    def _cell_config(self, overrides: list[str]) -> DictConfig:
        """The cell's composed, checked job config (search keys at their defaults)."""
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        validate(task)
        return task

    def _launch_only_keys(self) -> set[str]:
        """Keys that say how a job runs, not what it computes (the dir-name exclusions)."""
        keys = OmegaConf.select(self.config, "hydra.job.config.override_dirname.exclude_keys", default=[])
        return set(keys or [])

    def _stored_path(self, path: Path) -> str:
        """A record's path as stored in the study: relative to `results_root`
        when under it (another machine resolves it against its own copy), else absolute."""
        real = path.resolve()
        try:
            return str(real.relative_to(self.results_root))
        except ValueError:
            return str(real)

    def _expect(self, change: int) -> None:
        """Tell the sweep's progress line how many runs it plans now (study/sweep/progress.py)."""
        self.planned += change
        progress.expect(self.planned)


def next_job_index(sweep_dir: Path) -> int:
    """Past the job numbers already in `sweep_dir`: a rerun into the same dir adds, never reuses."""
    nums = [int(m.group(1)) for p in sweep_dir.iterdir() if (m := re.match(r"(\d+)(?:_|$)", p.name))]
    return max(nums, default=-1) + 1
