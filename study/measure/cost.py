"""C14's measure of BN's compute cost: after a run with `cost_repeats` > 0
trains, BN's and no norm's network of its shape (for the LSTM also LN's:
C16b) are timed in its process, a training step and an inference pass each,
arms interleaved; the record's `cost` (docs/claims.md, C14 and C16b;
docs/records.md)."""

from __future__ import annotations

import math
import time
from statistics import median
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from study.measure.clock import cpu_wait, settle, sync
from study.models import FAMILIES
from study.records import now_iso, process_id
from study.spec import train_spec
from study.train import build_member, training_step

COST_VERSION = 1
ARMS = ("none", "batch")  # the baseline first
# Arms timed beside them for a family (C16b: BN-LSTM against LN-LSTM too, every arm in PackedLSTM's one loop).
EXTRA_ARMS = {"lstm": ("layer",)}
KINDS = ("train", "infer")
BLOCK_SECONDS = 0.01  # about this long per timed block (calls of one kind and arm)
WARMUP_SECONDS = 0.25  # per kind and arm, before anything is timed
SETTLE_SECONDS = 2.0  # the most it waits for a quiet CPU before measuring


def arm_config(cfg: DictConfig, norm: str) -> DictConfig:
    """The run's config with `model.norm=norm`, without probes and without a pack."""
    c = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "pack"})
    c.model.norm = norm
    if "probes" in c:
        c.probes.kinds = []
    return c


class Arm:
    """One arm's network (a pack of one) with its training step and inference pass on a fixed minibatch."""

    def __init__(self, cfg: DictConfig, norm: str, xb: torch.Tensor, yb: torch.Tensor,
                 device: torch.device) -> None:
        spec = train_spec(arm_config(cfg, norm))
        self.model = FAMILIES[spec.model.family].pack([build_member(spec.model, int(cfg.seed))]).to(device)
        self.model.train()
        self.step = training_step(spec, self.model, [float(cfg.lr)], device, xb.dtype)
        self.xb, self.yb = xb, yb

    def calls(self, kind: str) -> Callable[[int], None]:
        """`run(k)`: k calls of `kind` (the mode set once around them)."""
        model, xb, yb, step = self.model, self.xb, self.yb, self.step

        def train(k: int) -> None:
            for _ in range(k):
                step(xb, yb)

        def infer(k: int) -> None:
            model.eval()
            with torch.inference_mode():
                for _ in range(k):
                    model(xb)
            model.train()

        return train if kind == "train" else infer


def _per_call(run: Callable[[int], None], k: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    run(k)
    sync(device)
    return (time.perf_counter() - t0) / k


def _calls_per_block(runs: dict[str, Callable[[int], None]], device: torch.device) -> int:
    """Warm both arms up (WARMUP_SECONDS each); calls per block so the slower arm's block takes BLOCK_SECONDS."""
    slowest = 0.0
    for run in runs.values():
        t0, k, per = time.perf_counter(), 1, math.inf
        while time.perf_counter() - t0 < WARMUP_SECONDS:
            per = min(per, _per_call(run, k, device))
            k = min(2 * k, 1024)
        slowest = max(slowest, per)
    return max(1, math.ceil(BLOCK_SECONDS / max(slowest, 1e-9)))


def measure(cfg: DictConfig, data: Any, device: torch.device, repeats: int) -> dict[str, Any]:
    """The cost measurement of `cfg`'s architecture at its batch size (module docstring)."""
    b = int(cfg.batch_size)
    g = torch.Generator().manual_seed(int(cfg.seed))
    idx = torch.randperm(len(data.train_x), generator=g)[:b].to(data.train_x.device)
    xb = data.train_x.index_select(0, idx).view(1, b, -1)
    yb = data.train_y.index_select(0, idx)
    names = ARMS + EXTRA_ARMS.get(str(cfg.model.family), ())
    arms = {norm: Arm(cfg, norm, xb, yb, device) for norm in names}
    runs = {kind: {norm: arms[norm].calls(kind) for norm in names} for kind in KINDS}
    calls = {kind: _calls_per_block(runs[kind], device) for kind in KINDS}
    waited = settle(SETTLE_SECONDS)
    times: dict[str, dict[str, list[float]]] = {kind: {norm: [] for norm in names} for kind in KINDS}
    load: dict[str, Any] = {}
    t0 = time.perf_counter()
    with cpu_wait(load):
        for rep in range(repeats):
            order = names if rep % 2 == 0 else names[::-1]
            for kind in KINDS:
                for norm in order:
                    times[kind][norm].append(_per_call(runs[kind][norm], calls[kind], device))
    out: dict[str, Any] = {
        "version": COST_VERSION, "measured_at": now_iso(), "process": process_id(), "batch_size": b,
        "architecture": "-".join(str(w) for w in [cfg.model.in_features, *cfg.model.hidden, cfg.model.out_features]),
        "activation": str(cfg.model.activation), "device": str(device), "threads": torch.get_num_threads(),
        "repeats": repeats, "calls_per_block": calls, "settled_seconds": waited,
        "seconds": time.perf_counter() - t0, "cpu_wait": load.get("cpu_wait"),
    }
    for kind in KINDS:
        t = times[kind]
        med = {norm: median(t[norm]) for norm in names}
        out[kind] = {**{norm: {"median_seconds": med[norm], "seconds": t[norm]} for norm in names},
                     "relative": med["batch"] / med["none"] - 1.0,
                     "paired": median(bn / no for bn, no in zip(t["batch"], t["none"])) - 1.0}
    return out


def measure_or_error(cfg: DictConfig, data: Any, device: torch.device, repeats: int) -> dict[str, Any]:
    """`measure`, or {"error": ...}: a failed measurement costs the run's cost entry, never its record."""
    try:
        return measure(cfg, data, device, repeats)
    except Exception as e:  # recorded, not raised: the run itself trained
        return {"version": COST_VERSION, "error": f"{type(e).__name__}: {e}"}
