"""The training loop: in-memory tensors, minibatches drawn by index.

`train_runs` trains one or more runs that differ only in their seed (and,
with the fused SGD step, their learning rate) as one `PackedMLP` (a single
run is a pack of one). Each run keeps its own initialization
(`torch.manual_seed(seed)` then `build_mlp`), its own minibatch order (a
`torch.Generator` seeded with `seed`) and its own learning rate, so a run's
numbers do not depend on what it was packed with.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.utils.deterministic
import torch.nn.functional as F
from torch import nn

from study.config import ConfigError
from study.data import MNISTSplits
from study.model import PackedMLP, build_mlp, fused_sgd_step
from study.packing import lr_packable, uses_fused_step
from study.probes import Probes

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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "cpu or auto here: torch sees no CUDA device")
    return torch.device(name)


def set_deterministic(flag: bool) -> None:
    """`torch.use_deterministic_algorithms(flag)`, without its Inductor import.

    The public call also sets torch.compile's (Inductor's) flag, and so
    imports torch._inductor: ~4 s in every process that trains (each sweep
    worker), for a compiler only `compile: true` uses. The kernels' flag is
    the one set here; where Inductor is loaded (`training_functions` loads
    it first when compiling), or torch lacks the call, the public one is used.
    """
    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(flag)
    else:
        set_flag(flag, warn_only=False)


def compile_unavailable(device: torch.device) -> Optional[str]:
    """Why torch.compile cannot build for `device` here, or None if it can.

    On CPU, Inductor writes C++ and needs a compiler (`CXX`, else g++).
    """
    if device.type != "cpu":
        return None
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 - whatever the search raised, the answer is the same
        return " ".join(str(e).split())
    return None


def check_compile(cfg: Any, device: torch.device) -> None:
    """Refuse `compile: true` where torch.compile cannot build (a config error, one line)."""
    if cfg.get("compile", False) and (reason := compile_unavailable(device)) is not None:
        raise ConfigError("compile", "true", f"false here: torch.compile on CPU needs a C++ compiler ({reason})")


StepFn = Callable[[PackedMLP, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def training_functions(cfg: Any, model: PackedMLP) -> tuple[StepFn, Callable[[torch.Tensor], torch.Tensor]]:
    """The fused SGD step and the model's forward, as configured: as they are,
    or compiled with torch.compile (`compile: true`).

    Compiled, every (runs, batch) shape and architecture gets its own graph
    (`dynamic=False`: the epoch's trailing batch is a second one), made once
    per process and cached on disk by Inductor. Nothing may run eagerly
    behind the config's back, or a run's numbers would depend on what its
    process trained before: `fullgraph=True` makes a graph break an error,
    and Dynamo's recompile limit is raised and hitting it is an error.
    Inductor's kernels round differently from the eager ones (float
    tolerance; tests/test_train.py compares them).
    """
    if not cfg.compile:
        return fused_sgd_step, model
    import torch._dynamo

    torch._dynamo.config.recompile_limit = 4096
    torch._dynamo.config.accumulated_recompile_limit = 4096
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    # Inductor's import looks for a CUDA toolkit and warns when there is none:
    # noise for a CPU compile.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # With Inductor loaded, the public call also sets its deterministic mode
    # (no benchmarking of kernels that could change numerics).
    import torch._inductor.config  # noqa: F401

    set_deterministic(torch.are_deterministic_algorithms_enabled())
    return _compiled_fused_step(), torch.compile(model, dynamic=False, fullgraph=True)


@functools.cache
def _compiled_fused_step() -> StepFn:
    # One wrapper per process: Dynamo keeps its graphs with the function, so
    # every pack of one shape reuses them (the model is an input, not a constant).
    return torch.compile(fused_sgd_step, dynamic=False, fullgraph=True)


def configure_determinism(threads: Optional[int]) -> int:
    """Deterministic kernels, a fixed thread count; returns the thread count."""
    # cuBLAS needs this set before its first use to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_deterministic(True)
    # With deterministic algorithms on, torch fills every new tensor with NaN
    # first (a guard for ops that read uninitialized memory, which none of
    # ours does): ~30 extra fills per training step. Off, results stay
    # deterministic (torch.utils.deterministic's documentation) and a step is
    # 1-6% faster (measured at batch 8-512).
    torch.utils.deterministic.fill_uninitialized_memory = False
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_member(cfg: Any, seed: int) -> nn.Sequential:
    """The reference MLP for one run, initialized from its seed."""
    seed_everything(seed)
    m = cfg.model
    return build_mlp(
        in_features=m.in_features, hidden=list(m.hidden), out_features=m.out_features,
        activation=str(m.activation), norm=str(m.norm), bn_momentum=m.bn_momentum,
        bn_eps=m.bn_eps, bias_before_norm=m.bias_before_norm, ghost_size=m.ghost_size, groups=m.groups,
    )


def build_optimizer(cfg: Any, params) -> torch.optim.Optimizer:
    o, name = cfg.optimizer, str(cfg.optimizer.name)
    if name == "sgd":
        # foreach: one multi-tensor kernel per step instead of one per parameter
        # (plain SGD would otherwise take the single-tensor path).
        return torch.optim.SGD(params, lr=cfg.lr, momentum=o.momentum,
                               weight_decay=o.weight_decay, nesterov=o.nesterov, foreach=True)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return kind(params, lr=cfg.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
                foreach=True)


def batches_per_epoch(n_train: int, batch_size: int) -> int:
    """Full batches, plus the trailing partial one unless it has one example.

    A trailing batch of a single example is dropped (for every norm, so both
    arms see the same data): BN cannot normalize one example.
    """
    full, rest = divmod(n_train, batch_size)
    return full + (1 if rest >= 2 else 0)


@torch.inference_mode()
def evaluate(model: PackedMLP, x: torch.Tensor, y: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean cross-entropy per run (eval mode: BN running stats)."""
    was_training = model.training
    model.eval()
    r = model.runs
    correct = torch.zeros(r, dtype=torch.long, device=x.device)
    loss = torch.zeros(r, dtype=torch.float64, device=x.device)
    for s in range(0, len(x), chunk):
        xb, yb = x[s:s + chunk], y[s:s + chunk]
        logits = model(xb.unsqueeze(0).expand(r, -1, -1))
        correct += (logits.argmax(-1) == yb).sum(1)
        loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.repeat(r),
                                reduction="none").view(r, -1).sum(1, dtype=torch.float64)
    model.train(was_training)
    n = len(x)
    return correct.double() / n, loss / n


def _finite_or_none(v: float) -> Optional[float]:
    return v if math.isfinite(v) else None


def train_runs(
    cfg: Any,
    seeds: list[int],
    data: MNISTSplits,
    device: torch.device,
    tag: str = "",
    on_epoch: Optional[Callable[[int, list[RunOutcome]], bool]] = None,
    lrs: Optional[list[float]] = None,
) -> list[RunOutcome]:
    """Train len(seeds) runs of `cfg` (seed aside) together; one outcome each.

    `lrs` gives each run its own learning rate (default: `cfg.lr` for all);
    different ones need the fused SGD step (`lr_packable`).

    `on_epoch(epoch, outcomes)` is called after every evaluated epoch; when
    it returns True the runs still training stop there with status `pruned`
    (an Optuna pruner's decision), keeping the history so far.

    `cfg.probes` (study/probes.py) adds measurements on copies of the model:
    they do not change the runs, and their time is kept out of
    `epoch_seconds` and `samples_per_second`.
    """
    lrs = [float(cfg.lr)] * len(seeds) if lrs is None else [float(v) for v in lrs]
    if len(lrs) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds but {len(lrs)} learning rates")
    if len(set(lrs)) > 1 and not lr_packable(cfg):
        raise ValueError("runs with different learning rates train as one pack only with the fused SGD "
                         "step (plain SGD, norm none or batch, no ics/landscape probes)")
    members = [build_member(cfg, s) for s in seeds]
    model = PackedMLP(members).to(device)
    model.train()
    fused = uses_fused_step(cfg)
    opt = None if fused else build_optimizer(cfg, model.parameters())
    fused_step, forward = training_functions(cfg, model)
    lr_t = torch.tensor(lrs, dtype=data.train_x.dtype, device=device)  # each run's, for the fused step
    gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    outcomes = [RunOutcome(seed=s, lr=lr) for s, lr in zip(seeds, lrs)]
    r = len(seeds)
    probes = Probes.create(cfg, data, r, device)

    def done() -> list[RunOutcome]:
        if probes is not None:
            probes.finish(model, outcomes, alive)
        return outcomes

    x_train, y_train = data.train_x, data.train_y
    n_train, bs = len(x_train), cfg.batch_size
    per_epoch = batches_per_epoch(n_train, bs)
    total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * per_epoch
    n_epochs = math.ceil(total_steps / per_epoch)

    step = 0
    alive = [True] * r
    for epoch in range(1, n_epochs + 1):
        perms = torch.stack([torch.randperm(n_train, generator=g, device=device) for g in gens])
        labels = y_train[perms]  # (R, n): each step's labels are a slice (a view for one run)
        epoch_steps = min(per_epoch, total_steps - step)
        # Each step's per-run losses (R,) are kept (no host sync); divergence
        # checks and the epoch's mean loss read them later.
        losses_seen: list[torch.Tensor] = []
        checked = 0
        t0 = last_note = time.perf_counter()
        samples = 0
        probe_seconds = 0.0  # step probes' time in this epoch, not training time
        for i in range(epoch_steps):
            idx = perms[:, i * bs:(i + 1) * bs].reshape(-1)  # run-major: R blocks of b
            b = idx.numel() // r
            # index_select on a flat index: 3-4x faster than x_train[idx] (measured).
            xb = x_train.index_select(0, idx).view(r, b, -1)
            yb = labels[:, i * bs:(i + 1) * bs].reshape(-1)
            if probes is not None and probes.step_due(step + i):
                probe_seconds += probes.on_step(model, xb, yb, step + i)
            if fused:
                losses = fused_step(model, xb, yb, lr_t)
            else:
                logits = forward(xb)  # (R, b, classes)
                losses = F.cross_entropy(logits.view(r * b, -1), yb, reduction="none").view(r, b).mean(1)
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()  # runs are independent: d(sum)/d(run's loss) = 1
                opt.step()
            losses_seen.append(losses.detach())
            samples += b
            if (i + 1) % DIVERGENCE_CHECK_EVERY == 0 or i == epoch_steps - 1:
                window = torch.stack(losses_seen[checked:i + 1])
                if _mark_diverged(window, step + checked, outcomes, alive, tag) and not any(alive):
                    return done()
                checked = i + 1
                now = time.perf_counter()
                if cfg.progress_every and now - last_note >= cfg.progress_every:
                    last_note = now
                    log.info("%sepoch %d/%d step %d/%d | %.0f samples/s", tag, epoch, n_epochs,
                             step + i + 1, total_steps, samples / (now - t0 - probe_seconds))
        step += epoch_steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0 - probe_seconds
        t1 = time.perf_counter()
        val_acc, val_loss = evaluate(model, data.val_x, data.val_y, cfg.eval_batch_size)
        test_acc, _ = evaluate(model, data.test_x, data.test_y, cfg.eval_batch_size)
        eval_seconds = time.perf_counter() - t1
        train_loss = torch.stack(losses_seen).mean(0).tolist()
        probe_extra = probes.on_epoch(model) if probes is not None else None
        for k, out in enumerate(outcomes):
            # Losses are taken before each update: weights made non-finite by
            # the epoch's last update show up only here, in the evaluation.
            if alive[k] and not math.isfinite(float(val_loss[k])):
                alive[k] = False
                out.status, out.diverged_at_step = "diverged", step
                log.warning("%sseed %d diverged: non-finite validation loss after step %d", tag, out.seed, step)
            if not alive[k]:
                continue
            out.history.append({
                "epoch": epoch, "step": step, "train_loss": train_loss[k],
                "val_acc": float(val_acc[k]), "test_acc": float(test_acc[k]),
                "val_loss": _finite_or_none(float(val_loss[k])),
                "epoch_seconds": seconds, "samples_per_second": samples / seconds,
                "eval_seconds": eval_seconds, "pack_size": r,
                **(probe_extra[k] if probe_extra else {}),
            })
        if not any(alive):
            return done()
        live = [o.history[-1] for k, o in enumerate(outcomes) if alive[k]]
        log.info("%sepoch %d/%d step %d | %.0f samples/s%s | loss %.4f val %.4f test %.4f",
                 tag, epoch, n_epochs, step, samples / seconds * r,
                 f" ({r} runs)" if r > 1 else "",
                 float(np.mean([h["train_loss"] for h in live])),
                 float(np.mean([h["val_acc"] for h in live])),
                 float(np.mean([h["test_acc"] for h in live])))
        if on_epoch is not None and epoch < n_epochs and on_epoch(epoch, outcomes):
            for k, out in enumerate(outcomes):
                if alive[k]:
                    out.status = "pruned"
            log.info("%spruned after epoch %d", tag, epoch)
            return done()
    return done()


def _mark_diverged(window: torch.Tensor, first_step: int, outcomes: list[RunOutcome],
                   alive: list[bool], tag: str) -> bool:
    """Mark runs whose loss went non-finite in `window` (steps first_step+1...).

    Returns True if any run diverged now. The recorded step is exact: the
    1-based optimizer step whose loss was the first non-finite one.
    """
    bad = ~torch.isfinite(window)  # (steps, R)
    if not bool(bad.any()):
        return False
    changed = False
    for k in range(len(outcomes)):
        if alive[k] and bool(bad[:, k].any()):
            alive[k] = False
            at = first_step + int(bad[:, k].nonzero()[0, 0]) + 1
            outcomes[k].status, outcomes[k].diverged_at_step = "diverged", at
            log.warning("%sseed %d diverged: non-finite loss at step %d", tag, outcomes[k].seed, at)
            changed = True
    return changed
