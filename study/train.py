"""The training loop: `train_runs` trains the runs of a pack together, each
with its own initialization, minibatch order and lr, so a run's numbers do
not depend on its pack; in-memory tensors, minibatches drawn by index."""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from study.data import MNISTSplits
from study.device import training_functions
from study.models import FAMILIES
from study.models.pack import evaluate
from study.probes import Probes
from study.spec import ModelSpec, OptimizerSpec, TrainSpec, batches_per_epoch

log = logging.getLogger(__name__)


# A non-finite loss is looked for on the host every this many steps (and at
# every epoch end); the exact step is tracked on the device in between, so
# the recorded step is exact while the loop avoids a host sync per step.
DIVERGENCE_CHECK_EVERY = 25


@dataclass
class RunOutcome:
    seed: int
    lr: Optional[float] = None
    status: str = "completed"  # completed | diverged | pruned
    diverged_at_step: Optional[int] = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # The run's probes (study/probes.py): kinds, every, seconds, series, final;
    # None when no probe is configured.
    probes: Optional[dict[str, Any]] = None

    @property
    def final(self) -> dict[str, Any]:
        # A pruned run's final metrics are those of the epoch it was stopped at.
        if self.status not in ("completed", "pruned") or not self.history:
            return {"train_loss": None, "val_acc": None, "test_acc": None, "val_loss": None,
                    "epoch": self.history[-1]["epoch"] if self.history else 0,
                    "step": self.diverged_at_step}
        last = self.history[-1]
        return {k: last[k] for k in ("train_loss", "val_acc", "test_acc", "val_loss", "epoch", "step")}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_member(model: ModelSpec, seed: int) -> nn.Module:
    """One run's reference network, initialized from its seed (its family's `build`: study/models/)."""
    seed_everything(seed)
    return FAMILIES[model.family].build(**model.options)


def build_optimizer(o: OptimizerSpec, lr: float, params) -> torch.optim.Optimizer:
    if o.name == "sgd":
        # foreach: one multi-tensor kernel per step instead of one per parameter
        # (plain SGD would otherwise take the single-tensor path).
        return torch.optim.SGD(params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov, foreach=True)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.name]
    return kind(params, lr=lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, foreach=True)


Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def warmup_lrs(lrs: list[float], warmup_lr: float, warmup_steps: int, step: int) -> list[float]:
    """Each run's lr at optimizer step `step` (0-based) of a linear warm-up
    from warmup_lr to its lr over `warmup_steps` steps (Goyal et al. 2017;
    after them, and for a run whose lr is not above warmup_lr, its lr)."""
    if step >= warmup_steps:
        return list(lrs)
    f = (step + 1) / warmup_steps  # reaches the lr at the warm-up's last step
    return [lr if lr <= warmup_lr else warmup_lr + (lr - warmup_lr) * f for lr in lrs]


def warmup_steps(spec: TrainSpec, steps_per_epoch: int) -> int:
    """The warm-up's optimizer steps: warmup_epochs of `steps_per_epoch` (0: none)."""
    return max(1, round(spec.warmup_epochs * steps_per_epoch)) if spec.warmup_epochs > 0 else 0


def training_step(spec: TrainSpec, model: nn.Module, lrs: list[float], device: torch.device,
                  dtype: torch.dtype, warmup: int = 0) -> Step:
    """`step(xb, yb)`: one optimizer step of every run on its minibatch
    (xb (R, b, in), yb (R * b,)); returns each run's loss (R,). With
    `warmup` > 0 steps, the lrs follow `warmup_lrs` (the step counts its calls)."""
    fused_step, forward = training_functions(model, spec.compile)
    calls = itertools.count()
    if spec.fused_step:
        lr = torch.tensor(lrs, dtype=dtype, device=device)  # each run's own
        if not warmup:
            return lambda xb, yb: fused_step(model, xb, yb, lr)

        def warm_fused_step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            i = next(calls)
            now = lr if i >= warmup else torch.tensor(warmup_lrs(lrs, spec.warmup_lr, warmup, i),
                                                      dtype=dtype, device=device)
            return fused_step(model, xb, yb, now)

        return warm_fused_step
    opt = build_optimizer(spec.optimizer, lrs[0], model.parameters())  # one lr: not lr_packable

    def autograd_step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if warmup:
            i = next(calls)
            if i <= warmup:  # the step after the warm-up sets the lr itself
                for group in opt.param_groups:
                    group["lr"] = warmup_lrs(lrs, spec.warmup_lr, warmup, i)[0]
        r, b = xb.shape[:2]
        logits = forward(xb)  # (R, b, classes)
        losses = F.cross_entropy(logits.view(r * b, -1), yb, reduction="none").view(r, b).mean(1)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # runs are independent: d(sum)/d(run's loss) = 1
        opt.step()
        return losses

    return autograd_step


def train_runs(spec: TrainSpec, seeds: list[int], data: MNISTSplits, device: torch.device,
               lrs: Optional[list[float]] = None, tag: str = "",
               on_epoch: Optional[Callable[[int, list[RunOutcome]], bool]] = None,
               on_step: Optional[Callable[[int, int], None]] = None) -> list[RunOutcome]:
    """Train len(seeds) runs of `spec` together; one outcome each.

    `lrs` gives each run its own learning rate (default: `spec.lr` for all);
    different ones need `spec.lr_packable` (the fused SGD step).

    `on_epoch(epoch, outcomes)` is called after every evaluated epoch; when
    it returns True the runs still training stop there with status `pruned`
    (an Optuna pruner's decision), keeping the history so far.
    `on_step(steps_done, steps_total)` is called as the progress lines are
    (every few dozen steps, and at each epoch's end): the sweep's progress
    line reads it (study/sweep/progress.py).

    `spec.probes` (study/probes.py) adds measurements on copies of the model:
    they do not change the runs, and their time is kept out of
    `epoch_seconds` and `samples_per_second`.
    """
    lrs = [spec.lr] * len(seeds) if lrs is None else [float(v) for v in lrs]
    if len(lrs) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds but {len(lrs)} learning rates")
    if len(set(lrs)) > 1 and not spec.lr_packable:
        raise ValueError("runs with different learning rates train as one pack only with the fused SGD "
                         "step (plain SGD, norm none or batch, no ics/landscape probes)")
    model = FAMILIES[spec.model.family].pack([build_member(spec.model, s) for s in seeds]).to(device)
    model.train()
    per_epoch = batches_per_epoch(len(data.train_x), spec.batch_size)
    step = training_step(spec, model, lrs, device, data.train_x.dtype, warmup_steps(spec, per_epoch))
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    outcomes = [RunOutcome(seed=s, lr=lr) for s, lr in zip(seeds, lrs)]
    probes = Probes.create(spec, data, len(seeds), device)
    watch = DivergenceWatch(outcomes, tag)
    total_steps = spec.steps if spec.steps is not None else spec.epochs * per_epoch
    n_epochs = math.ceil(total_steps / per_epoch)
    progress = Progress(spec.progress_every, tag, n_epochs, total_steps, len(seeds), on_step)

    done = 0
    for epoch in range(1, n_epochs + 1):
        steps = min(per_epoch, total_steps - done)
        trained = train_epoch(model, step, data, gens, spec.batch_size, done, steps, probes, watch,
                              progress.within(epoch))
        if trained is None:  # every run diverged
            break
        if not len(trained.losses):  # stopped at the target before this epoch's first update
            break
        done += len(trained.losses)
        record_epoch(model, data, spec.eval_batch_size, epoch, done, trained, probes, watch)
        if not watch.any_alive or trained.stopped:
            break
        progress.epoch_end(epoch, done, trained, [o.history[-1] for o in watch.live()])
        if on_epoch is not None and epoch < n_epochs and on_epoch(epoch, outcomes):
            watch.prune(epoch)
            break
    if probes is not None:
        probes.finish(model, outcomes, watch.alive)
    return outcomes


class EpochTraining(NamedTuple):
    losses: torch.Tensor  # (steps, R): each step's loss per run, taken before its update
    samples: int  # training examples per run
    seconds: float  # training time (probes' time left out)
    stopped: bool  # stopped before `steps`: every live run reached `probes.stop_at`


def train_epoch(model: nn.Module, step: Step, data: MNISTSplits, gens: list[torch.Generator], batch_size: int,
                first_step: int, steps: int, probes: Optional[Probes], watch: "DivergenceWatch",
                note: Callable[[int, int, float], None]) -> Optional[EpochTraining]:
    """`steps` optimizer steps from step `first_step`, each run on its own
    permutation of the training split (fewer where every live run reached
    `probes.stop_at` at a step probe); None when every run diverged."""
    x_train, y_train = data.train_x, data.train_y
    r, device = model.runs, x_train.device
    perms = torch.stack([torch.randperm(len(x_train), generator=g, device=device) for g in gens])
    labels = y_train[perms]  # (R, n): each step's labels are a slice (a view for one run)
    # Each step's per-run losses (R,) are kept on the device (no host sync);
    # divergence checks and the epoch's mean loss read them later.
    losses: list[torch.Tensor] = []
    checked, samples, probe_seconds = 0, 0, 0.0
    t0 = time.perf_counter()
    stopped = False
    for i in range(steps):
        idx = perms[:, i * batch_size:(i + 1) * batch_size].reshape(-1)  # run-major: R blocks of b
        b = idx.numel() // r
        # index_select on a flat index: 3-4x faster than x_train[idx] (measured).
        xb = x_train.index_select(0, idx).view(r, b, -1)
        yb = labels[:, i * batch_size:(i + 1) * batch_size].reshape(-1)
        if probes is not None and probes.step_due(first_step + i):
            probe_seconds += probes.on_step(model, xb, yb, first_step + i)
            if probes.target_reached(first_step + i, watch.alive):
                stopped = True
                break
        losses.append(step(xb, yb).detach())
        samples += b
        if (i + 1) % DIVERGENCE_CHECK_EVERY == 0 or i == steps - 1:
            watch.check_losses(torch.stack(losses[checked:i + 1]), first_step + checked)
            if not watch.any_alive:
                return None
            checked = i + 1
            note(first_step + i + 1, samples, time.perf_counter() - t0 - probe_seconds)
    if checked < len(losses):  # stopped between divergence checks
        watch.check_losses(torch.stack(losses[checked:]), first_step + checked)
        if not watch.any_alive:
            return None
    if device.type == "cuda":
        torch.cuda.synchronize()
    done = torch.stack(losses) if losses else torch.empty(0, r, device=device)
    return EpochTraining(done, samples, time.perf_counter() - t0 - probe_seconds, stopped)


def record_epoch(model: nn.Module, data: MNISTSplits, eval_batch_size: int, epoch: int, step: int,
                 trained: EpochTraining, probes: Optional[Probes], watch: "DivergenceWatch") -> None:
    """Evaluate every run after an epoch; append each live run's history entry.

    Without a validation split (`data.val_size=0`) `val_acc` and `val_loss`
    are null (not 0/0) and the test loss stands in for the validation loss
    as the divergence check below.
    """
    t1 = time.perf_counter()
    validated = len(data.val_x) > 0
    if validated:
        val_acc, val_loss = evaluate(model, data.val_x, data.val_y, eval_batch_size)
    test_acc, test_loss = evaluate(model, data.test_x, data.test_y, eval_batch_size)
    eval_seconds = time.perf_counter() - t1
    train_loss = trained.losses.mean(0).tolist()
    probe_extra = probes.on_epoch(model) if probes is not None else None
    # Losses are taken before each update: weights made non-finite by the
    # epoch's last update show up only here, in the evaluation.
    watch.check_eval_loss(val_loss if validated else test_loss, step, "validation" if validated else "test")
    for k, out in watch.live_items():
        out.history.append({
            "epoch": epoch, "step": step, "train_loss": train_loss[k],
            "val_acc": float(val_acc[k]) if validated else None, "test_acc": float(test_acc[k]),
            "val_loss": _finite_or_none(float(val_loss[k])) if validated else None,
            "epoch_seconds": trained.seconds, "samples_per_second": trained.samples / trained.seconds,
            "eval_seconds": eval_seconds, "pack_size": model.runs,
            **(probe_extra[k] if probe_extra else {}),
        })


def _finite_or_none(v: float) -> Optional[float]:
    return v if math.isfinite(v) else None


class DivergenceWatch:
    """Which runs of a pack are still recorded. A run whose loss turned
    non-finite is `diverged` from that exact step on; it goes on computing
    inside the pack (the runs are independent) but records nothing more."""

    def __init__(self, outcomes: list[RunOutcome], tag: str) -> None:
        self.outcomes, self.tag = outcomes, tag

    @property
    def alive(self) -> list[bool]:
        """Per run: still recorded (a pruned run too: it stops with the loop)."""
        return [o.status != "diverged" for o in self.outcomes]

    @property
    def any_alive(self) -> bool:
        return any(self.alive)

    def live_items(self) -> list[tuple[int, RunOutcome]]:
        return [(k, o) for k, o in enumerate(self.outcomes) if o.status != "diverged"]

    def live(self) -> list[RunOutcome]:
        return [o for _, o in self.live_items()]

    def check_losses(self, window: torch.Tensor, first_step: int) -> None:
        """Mark runs whose loss went non-finite in `window` (steps, R), the
        losses of steps first_step+1...; the recorded step is the 1-based
        optimizer step whose loss was the first non-finite one."""
        bad = ~torch.isfinite(window)
        if not bool(bad.any()):
            return
        for k, out in self.live_items():
            if bool(bad[:, k].any()):
                self._diverged(k, first_step + int(bad[:, k].nonzero()[0, 0]) + 1, "non-finite loss at step")

    def check_eval_loss(self, loss: torch.Tensor, step: int, split: str) -> None:
        """Mark runs whose evaluation loss (R,) on `split` after `step` steps is non-finite."""
        for k, _ in self.live_items():
            if not math.isfinite(float(loss[k])):
                self._diverged(k, step, f"non-finite {split} loss after step")

    def _diverged(self, k: int, step: int, why: str) -> None:
        self.outcomes[k].status, self.outcomes[k].diverged_at_step = "diverged", step
        log.warning("%sseed %d diverged: %s %d", self.tag, self.outcomes[k].seed, why, step)

    def prune(self, epoch: int) -> None:
        """Stop the live runs as `pruned` (an Optuna pruner's decision)."""
        for _, out in self.live_items():
            out.status = "pruned"
        log.info("%spruned after epoch %d", self.tag, epoch)


class Progress:
    """A training's log lines: one every `every` seconds within an epoch
    (0: none), and one after each epoch."""

    def __init__(self, every: float, tag: str, n_epochs: int, total_steps: int, runs: int,
                 on_step: Optional[Callable[[int, int], None]] = None) -> None:
        self.every, self.tag, self.n_epochs, self.total_steps, self.runs = every, tag, n_epochs, total_steps, runs
        self.on_step = on_step

    def within(self, epoch: int) -> Callable[[int, int, float], None]:
        """`note(step, samples, seconds)` for this epoch's steps (samples and seconds so far)."""
        last = time.perf_counter()

        def note(step: int, samples: int, seconds: float) -> None:
            nonlocal last
            if self.on_step is not None:
                self.on_step(step, self.total_steps)
            now = time.perf_counter()
            if self.every and now - last >= self.every:
                last = now
                log.info("%sepoch %d/%d step %d/%d | %.0f samples/s", self.tag, epoch, self.n_epochs,
                         step, self.total_steps, samples / seconds)

        return note

    def epoch_end(self, epoch: int, step: int, trained: EpochTraining, live: list[dict[str, Any]]) -> None:
        def mean(key: str) -> str:
            values = [h[key] for h in live if h[key] is not None]
            return f"{np.mean(values):.4f}" if values else "-"  # val: none without a validation split

        log.info("%sepoch %d/%d step %d | %.0f samples/s%s | loss %s val %s test %s",
                 self.tag, epoch, self.n_epochs, step, trained.samples / trained.seconds * self.runs,
                 f" ({self.runs} runs)" if self.runs > 1 else "",
                 mean("train_loss"), mean("val_acc"), mean("test_acc"))
