"""`python -m study.bench`: samples per second of the notebook's pipeline
(a plain nn.Module loop) against the project's trainer (and its compiled,
packed and other-precision variants; for the lstm, the trainer on nn.LSTM's
fused kernel) and the machine's matmul ceiling, in one process, for any
model family (mlp, cnn, lstm) with the same columns; the rows and how each
is measured: docs/speed.md#the-benchmark."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from study.config import PRECISIONS, compose_config, validate
from study.device import compile_unavailable, configure_determinism, precision, resolve_device
from study.errors import UserError, describe_user_error
from study.measure.bench_report import format_table, targets
from study.measure.clock import cpu_wait, settle, sync
from study.measure.notebook import measure_notebook, notebook_dataset
from study.models import FAMILIES
from study.models.lstm import ROWS
from study.records import environment, now_iso, write_json_atomic
from study.runner import get_data, plain_config
from study.spec import batches_per_epoch, train_spec
from study.train import build_member, train_runs

log = logging.getLogger(__name__)

# 2: settings.pack is a list of pack sizes; rows and targets per size.
# 3: trainer-compiled rows (settings.compile_batches); a target names its pipeline.
# 4: every row's precision; trainer-<precision> rows (settings.precisions) with x_fp32.
# 5: model=lstm (trainer-nn-lstm rows); every row's x_sequential; targets per family, some "at most".
BENCH_SCHEMA_VERSION = 5

MATMUL_N = 2048  # the size the background number (~380 GFLOP/s here) was taken at


# ------------------------------------------------------------------ config


def bench_config(overrides: Sequence[str]) -> DictConfig:
    """The project's real config (conf/, schema-checked), as plain values."""
    cfg = compose_config(overrides)
    validate(cfg)
    return plain_config(cfg)


def cell_config(cfg: DictConfig, batch_size: int, norm: str, steps: Optional[int] = None) -> DictConfig:
    """`cfg` with one cell's batch size and norm (and a step budget)."""
    c = OmegaConf.create(OmegaConf.to_container(cfg))
    c.batch_size, c.model.norm, c.steps, c.progress_every = batch_size, norm, steps, 0
    return c


BENCH_FAMILIES = ("mlp", "cnn", "lstm")  # the families whose matmul/conv flops flops_per_sample counts


def architecture(cfg: DictConfig) -> str:
    m = cfg.model
    widths = "-".join(str(w) for w in [m.in_features, *m.hidden, m.out_features])
    if m.family == "cnn":  # conv blocks' channels, then the head
        return f"cnn conv {'-'.join(str(c) for c in m.channels)}, head {widths}"
    if m.family == "lstm":
        return f"lstm {ROWS} steps x {m.in_features // ROWS} pixels, {m.hidden[0]} units, head {m.hidden[0]}-{m.out_features}"
    return widths


def flops_per_sample(cfg: DictConfig) -> int:
    """Matmul and conv flops of one training sample: 3 x forward.

    Forward: 2 x in x out per Linear; 2 x (in channels x 3 x 3) per output
    value of a Conv2d (measured on one image through forward hooks); for the
    lstm, per time step its input (I -> 4H) and recurrent (H -> 4H) products,
    2 x 4H x (I + H), read off the cell's weights (every step computes both,
    the first on a zero state too), then its Linear head. The backward pass
    does two such products per layer (input and weight gradients), each as
    costly as the forward one. Biases, norms, pooling, activations and the
    cell's gate math are elementwise and left out.
    """
    model = build_member(train_spec(cfg).model, 0).eval()
    flops = []
    if cfg.model.family == "lstm":
        rnn = model.rnn.lstm if hasattr(model.rnn, "lstm") else model.rnn  # nn.LSTM (norm none) or NormLSTM
        w_ih = rnn.weight_ih_l0 if hasattr(model.rnn, "lstm") else rnn.weight_ih
        w_hh = rnn.weight_hh_l0 if hasattr(model.rnn, "lstm") else rnn.weight_hh
        steps = cfg.model.in_features // w_ih.shape[1]
        flops.append(steps * 2 * (w_ih.numel() + w_hh.numel()))

    def count(m: torch.nn.Module, _inputs: Any, out: torch.Tensor) -> None:
        flops.append(2 * m.weight[0].numel() * out[0].numel())  # (per output value) x output values

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.no_grad():
        model(torch.zeros(1, cfg.model.in_features))
    for h in hooks:
        h.remove()
    return 3 * sum(flops)


# -------------------------------------------------------------- measuring


def matmul_ceiling(device: torch.device, n: int = MATMUL_N, reps: int = 10) -> dict[str, Any]:
    """Best-of-`reps` fp32 n x n `torch.mm`, in GFLOP/s."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    out = torch.empty(n, n, device=device)
    torch.mm(a, b, out=out)  # warm-up
    sync(device)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "reps": reps, "best_seconds": best, "gflops": 2 * n**3 / best / 1e9}


@contextmanager
def looped_members(family: str) -> Iterator[None]:
    """Train `family`'s runs as its networks are, each on its own (LoopedPack), not as its pack: the lstm's
    network at norm none is nn.LSTM, its fused kernel, which the trainer's PackedLSTM replaces by a loop."""
    before = FAMILIES[family]
    FAMILIES[family] = replace(before, packed="study.models.pack.LoopedPack")
    try:
        yield
    finally:
        FAMILIES[family] = before


def run_trainer(cfg: DictConfig, seeds: list[int], data, device: torch.device,
                looped: bool = False) -> dict[str, Any]:
    """`train_runs` once; samples/s of one run from its own history (training time only).
    `looped`: with the family's own networks (looped_members), as the trainer-nn-lstm row."""
    out: dict[str, Any] = {}
    with cpu_wait(out):
        t0 = time.perf_counter()
        with precision(str(cfg.get("precision", "fp32")), device), \
                (looped_members(cfg.model.family) if looped else _nothing()):  # as study.runner trains a run
            outcomes = train_runs(train_spec(cfg), seeds, data, device)
        wall = time.perf_counter() - t0
    history = max((o.history for o in outcomes), key=len)
    if not history:
        raise RuntimeError(f"train_runs left no history (status {[o.status for o in outcomes]})")
    seconds = sum(h["epoch_seconds"] for h in history)
    per_run = sum(h["samples_per_second"] * h["epoch_seconds"] for h in history)  # one run's samples
    return {"samples": round(per_run * len(seeds)), "seconds": seconds, "wall_seconds": wall,
            "steps": history[-1]["step"], "per_run_samples_per_second": per_run / seconds,
            "samples_per_second": per_run * len(seeds) / seconds, **out}


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def nn_lstm_row(cfg: DictConfig) -> bool:
    """The cell has a trainer-nn-lstm row: the lstm's plain arm, whose own network is nn.LSTM."""
    return cfg.model.family == "lstm" and cfg.model.norm == "none"


class Budget:
    """How much each measurement runs: a sample count, or seconds after a warm-up."""

    def __init__(self, seconds: float, samples: Optional[int], warmup: int, matmul_n: int,
                 matmul_reps: int, settle_seconds: float) -> None:
        self.seconds, self.samples, self.warmup, self.matmul_n = seconds, samples, warmup, matmul_n
        self.matmul_reps = min(3, matmul_reps)  # the ceiling's samples between cells
        self.settle_seconds = settle_seconds

    def settle(self) -> float:
        return settle(self.settle_seconds)

    def warm_up(self, cfg: DictConfig, seeds: list[int], data, device: torch.device, looped: bool = False) -> float:
        """A short `train_runs` of this cell; its samples/s per run (sizes the first budget)."""
        self.settle()
        steps = max(2, math.ceil(self.warmup / cfg.batch_size))
        return run_trainer(cell_config(cfg, cfg.batch_size, cfg.model.norm, steps),
                           seeds, data, device, looped)["per_run_samples_per_second"]

    def compile_pass(self, cfg: DictConfig, seeds: list[int], data, device: torch.device) -> None:
        """Train one epoch and a step with `cfg` (compile=true), untimed: every
        batch shape's graph is compiled before anything is measured."""
        steps = batches_per_epoch(len(data.train_x), cfg.batch_size) + 1
        train_runs(train_spec(cell_config(cfg, cfg.batch_size, cfg.model.norm, steps)), seeds, data, device)

    def trainer_steps(self, batch_size: int, per_run_rate: float) -> int:
        """Steps that take `seconds` at this rate, or cover `samples`."""
        if self.samples is not None:
            return max(1, math.ceil(self.samples / batch_size))
        # Never fewer samples than the warm-up: a rate sized in a loaded moment
        # would otherwise give a measurement too short to mean anything.
        return max(2, math.ceil(max(self.seconds * per_run_rate, self.warmup) / batch_size))


def measure_sequential(cfg: DictConfig, seeds: list[int], data, device: torch.device,
                       budget: "Budget") -> dict[str, Any]:
    """The same seeds trained one after another, `cfg.steps` each; aggregate samples/s."""
    parts = []
    for s in seeds:
        budget.settle()
        parts.append(run_trainer(cfg, [s], data, device))
    samples, seconds = sum(p["samples"] for p in parts), sum(p["seconds"] for p in parts)
    wall = sum(p["wall_seconds"] for p in parts)
    waits = [p["cpu_wait"] for p in parts]
    return {"samples": samples, "seconds": seconds, "wall_seconds": wall,
            "steps": cfg.steps, "per_run_samples_per_second": samples / seconds,
            "samples_per_second": samples / seconds,
            "cpu_wait": None if None in waits else sum(w * p["wall_seconds"] for w, p in zip(waits, parts)) / wall}


def best(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated measurements (noise only ever slows a run down)."""
    top = max(results, key=lambda r: r["samples_per_second"])
    return dict(top, repeats=[r["samples_per_second"] for r in results])


def precision_configs(cfg: DictConfig, precisions: Sequence[str]) -> dict[str, DictConfig]:
    """Pipeline -> the cell's config in each precision other than fp32 (`trainer-<precision>`), and with
    bf16 the fp32 trainer on autograd (`trainer-fp32-autograd`: bf16 trains with autograd, not the fused step)."""
    out = {}
    for p in precisions:
        if p != "fp32":
            out[f"trainer-{p}"] = cell_config(cfg, cfg.batch_size, cfg.model.norm)
            out[f"trainer-{p}"].precision = p
    if "bf16" in precisions:
        out["trainer-fp32-autograd"] = cell_config(cfg, cfg.batch_size, cfg.model.norm)
        out["trainer-fp32-autograd"].fused = False
    return out


def measure_cell(cfg: DictConfig, seeds: list[int], packs: list[int], compiled: bool, data, dataset,
                 device: torch.device, budget: Budget, repeats: int,
                 ceilings: list[dict[str, Any]], precisions: Sequence[str] = ("fp32",)) -> dict[str, dict[str, Any]]:
    """Every pipeline of one (batch size, norm) cell, best of `repeats`.

    The pipelines take turns within each repeat, so that a burst of load on
    the machine hits them alike rather than one pipeline's every repeat. The
    matmul ceiling is sampled in every repeat too (appended to `ceilings`):
    the best sample over the whole run is the ceiling, so a loaded moment
    cannot lower it and flatter the trainer.

    `packs`: the pack sizes to measure (the first K of `seeds` each); their
    results are keyed "trainer-pack/K" and "trainer-sequential/K".
    `compiled`: also measure the trainer with compile=true ("trainer-compiled").
    `precisions`: also measure the trainer in each other precision (precision_configs).
    The lstm's plain arm also gets the trainer on nn.LSTM ("trainer-nn-lstm", nn_lstm_row).
    """
    bs, norm = cfg.batch_size, cfg.model.norm
    # Per-run samples/s: from a warm-up first, then the best measured so far,
    # so that a step budget sized in a loaded moment is corrected next time.
    rate = {"trainer": budget.warm_up(cfg, seeds[:1], data, device)}
    fused_kernel = nn_lstm_row(cfg)
    if fused_kernel:
        rate["trainer-nn-lstm"] = budget.warm_up(cfg, seeds[:1], data, device, looped=True)
    if compiled:
        comp = cell_config(cfg, bs, norm)
        comp.compile = True
        budget.compile_pass(comp, seeds[:1], data, device)
        rate["trainer-compiled"] = budget.warm_up(comp, seeds[:1], data, device)
    for k in packs:
        rate[f"trainer-pack/{k}"] = budget.warm_up(cfg, seeds[:k], data, device)
    other = precision_configs(cfg, precisions)
    for name, c in other.items():
        rate[name] = budget.warm_up(c, seeds[:1], data, device)
    runs: dict[str, list[dict[str, Any]]] = {"notebook": [], "trainer": [], "trainer-nn-lstm": [],
                                             "trainer-compiled": [], **{name: [] for name in other}}
    for k in packs:
        runs[f"trainer-pack/{k}"], runs[f"trainer-sequential/{k}"] = [], []

    def take(pipeline: str, measure) -> dict[str, Any]:
        waited = budget.settle()
        runs[pipeline].append(dict(measure(), settled_seconds=waited))
        if pipeline in rate:
            rate[pipeline] = max(rate[pipeline], runs[pipeline][-1]["per_run_samples_per_second"])
        return runs[pipeline][-1]

    for _ in range(repeats):
        budget.settle()
        ceilings.append(matmul_ceiling(device, budget.matmul_n, reps=budget.matmul_reps))
        take("notebook", lambda: measure_notebook(cfg, dataset, device, budget.warmup, budget.samples, budget.seconds))
        single = cell_config(cfg, bs, norm, budget.trainer_steps(bs, rate["trainer"]))
        take("trainer", lambda: run_trainer(single, seeds[:1], data, device))
        if fused_kernel:  # right after the trainer: their ratio is read within the repeat
            lstm = cell_config(cfg, bs, norm, budget.trainer_steps(bs, rate["trainer-nn-lstm"]))
            take("trainer-nn-lstm", lambda: run_trainer(lstm, seeds[:1], data, device, looped=True))
        if compiled:
            fast = cell_config(comp, bs, norm, budget.trainer_steps(bs, rate["trainer-compiled"]))
            take("trainer-compiled", lambda: run_trainer(fast, seeds[:1], data, device))
        for name, c in other.items():  # right after the fp32 trainer: their ratio is read within the repeat
            sized = cell_config(c, bs, norm, budget.trainer_steps(bs, rate[name]))
            take(name, lambda: run_trainer(sized, seeds[:1], data, device))
        for k in packs:
            packed = cell_config(cfg, bs, norm, budget.trainer_steps(bs, rate[f"trainer-pack/{k}"]))
            take(f"trainer-pack/{k}", lambda: run_trainer(packed, seeds[:k], data, device))
            # The same runs, the same steps each, one after another.
            take(f"trainer-sequential/{k}", lambda: measure_sequential(packed, seeds[:k], data, device, budget))
    return {p: best(r) for p, r in runs.items() if r}


# ---------------------------------------------------------------- the run


def bench(args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(args.overrides)
    if args.data_root is not None:
        overrides.append(f"data.root={args.data_root}")
    if args.no_verify:
        overrides.append("data.verify=false")
    cfg = bench_config(overrides)
    if cfg.model.family not in BENCH_FAMILIES:
        raise UserError(f"model={cfg.model.family} is not benchmarked here: study.bench measures model="
                        f"{' or model='.join(BENCH_FAMILIES)}")
    if cfg.compile:
        raise UserError("compile=true is not allowed here: the trainer rows measure the default trainer; "
                        "--compile-batches adds the compiled one (default: at every batch size)")
    if args.compile_batches is None:
        # The lstm's 28-step unroll, forward and backward, costs about a minute of compiling per batch
        # shape on a small CPU: measured only where asked.
        args.compile_batches = [] if cfg.model.family == "lstm" else list(args.batch_sizes)
    for bs in args.batch_sizes:  # every cell's values are checked before anything runs
        for norm in args.norms:
            validate(cell_config(cfg, bs, norm))
            if bs in args.compile_batches:
                comp = cell_config(cfg, bs, norm)
                comp.compile = True
                validate(comp)
    threads = configure_determinism(args.threads)
    device = resolve_device(args.device)
    if args.compile_batches:  # (among --batch-sizes: parse_args checks)
        reason = compile_unavailable(device)
        if reason is not None:
            raise UserError(f"--compile-batches: the compiled trainer cannot run here ({reason}); "
                            "pass --compile-batches '' to measure without it")
    cfg.device, cfg.threads = str(device), threads
    data = get_data(cfg, device)
    dataset = notebook_dataset(Path(data.info["root"]))
    budget = Budget(args.seconds, args.samples, args.warmup, args.matmul_n, args.matmul_reps, args.settle)
    seeds = list(range(cfg.seed, cfg.seed + max(args.pack)))
    fps = flops_per_sample(cfg)
    arch = architecture(cfg)

    started, t_start = now_iso(), time.perf_counter()
    # The ceiling is sampled before, between (measure_cell) and after the
    # cells; the best sample counts (see measure_cell).
    ceilings = [matmul_ceiling(device, args.matmul_n, reps=args.matmul_reps)]

    rows: list[dict[str, Any]] = []
    packs: list[dict[str, Any]] = []

    def row(pipeline: str, bs: int, norm: str, runs: int, m: dict[str, Any], base: float,
            deterministic_on: bool, precision_name: str = "fp32", fp32: Optional[float] = None,
            sequential: Optional[float] = None) -> dict[str, Any]:
        sps = m["samples_per_second"]
        r = {"pipeline": pipeline, "batch_size": bs, "norm": norm, "runs": runs,
             "samples_per_second": sps, "precision": precision_name,
             "x_notebook": sps / base,
             "x_fp32": None if fp32 is None else sps / fp32,  # over the fp32 trainer's (precision rows)
             # a pack's over the same runs' one after another (trainer-pack rows)
             "x_sequential": None if sequential is None else sps / sequential,
             "fraction_of_ceiling": None,  # set once the last ceiling sample is in
             "deterministic": deterministic_on, **{k: v for k, v in m.items() if k != "samples_per_second"}}
        rows.append(r)
        log.info("%-18s batch %4d %-5s runs %d: %.0f samples/s", pipeline, bs, norm, runs, sps)

    for bs in args.batch_sizes:
        for norm in args.norms:
            c = cell_config(cfg, bs, norm)
            sizes = args.pack if bs in args.pack_batches else []
            m = measure_cell(c, seeds, sizes, bs in args.compile_batches, data, dataset, device, budget,
                             args.repeats, ceilings, args.precisions)
            base = m["notebook"]["samples_per_second"]
            row("notebook", bs, norm, 1, m["notebook"], base, False)
            row("trainer", bs, norm, 1, m["trainer"], base, True)
            if "trainer-nn-lstm" in m:
                row("trainer-nn-lstm", bs, norm, 1, m["trainer-nn-lstm"], base, True)
            if "trainer-compiled" in m:
                row("trainer-compiled", bs, norm, 1, m["trainer-compiled"], base, True)
            for name, pc in precision_configs(c, args.precisions).items():
                row(name, bs, norm, 1, m[name], base, True, str(pc.precision), m["trainer"]["samples_per_second"])
            for k in sizes:
                pk, sq = m[f"trainer-pack/{k}"], m[f"trainer-sequential/{k}"]
                row("trainer-pack", bs, norm, k, pk, base, True, sequential=sq["samples_per_second"])
                row("trainer-sequential", bs, norm, k, sq, base, True)
                packs.append({"batch_size": bs, "norm": norm, "runs": k, "steps_per_run": pk["steps"],
                              "pack_samples_per_second": pk["samples_per_second"],
                              "sequential_samples_per_second": sq["samples_per_second"],
                              "ratio": pk["samples_per_second"] / sq["samples_per_second"]})

    ceilings.append(matmul_ceiling(device, args.matmul_n, reps=args.matmul_reps))
    ceiling = dict(max(ceilings, key=lambda c: c["gflops"]), measurements=len(ceilings),
                   reps=sum(c["reps"] for c in ceilings), flops_per_sample=fps)
    ceiling["samples_per_second"] = ceiling["gflops"] * 1e9 / fps
    ceiling["gflops_median"] = sorted(c["gflops"] for c in ceilings)[len(ceilings) // 2]
    for r in rows:
        r["fraction_of_ceiling"] = r["samples_per_second"] / ceiling["samples_per_second"]

    return {
        "schema_version": BENCH_SCHEMA_VERSION,
        "kind": "bench",
        "started_at": started,
        "finished_at": now_iso(),
        "wall_seconds": time.perf_counter() - t_start,
        "command": ["python", "-m", "study.bench", *args.argv],
        "settings": {"batch_sizes": args.batch_sizes, "norms": args.norms, "pack": args.pack,
                     "pack_batches": args.pack_batches, "compile_batches": args.compile_batches,
                     "precisions": args.precisions,
                     "seconds": args.seconds, "samples": args.samples,
                     "warmup_samples": args.warmup, "repeats": args.repeats, "settle_seconds": args.settle,
                     "threads": threads,
                     "device": str(device), "overrides": overrides},
        "model": {"architecture": arch, "activation": cfg.model.activation, "lr": cfg.lr,
                  "optimizer": cfg.optimizer.name, "flops_per_sample": fps},
        "data": data.info,
        "env": environment(device, threads),
        "ceiling": ceiling,
        "rows": rows,
        "packs": packs,
        "targets": targets(cfg.model.family, rows, packs),
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(v) for v in text.split(",") if v]

    p = argparse.ArgumentParser(
        prog="python -m study.bench",
        description="Samples/s of the notebook's pipeline vs the project's trainer, and the fp32 matmul ceiling.")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml (e.g. model.hidden=[256,128])")
    p.add_argument("--batch-sizes", type=ints, default=[8, 64, 512], help="comma-separated (default 8,64,512)")
    p.add_argument("--norms", type=lambda t: t.split(","), default=["none", "batch"],
                   help="comma-separated, the family's model.norm values (default none,batch)")
    p.add_argument("--seconds", type=float, default=0.75, help="time budget per measurement (default 0.75)")
    p.add_argument("--samples", type=int, default=None,
                   help="sample budget per measurement (per run), instead of --seconds")
    p.add_argument("--warmup", type=int, default=2048,
                   help="warm-up samples before each measurement, and the fewest a trainer "
                        "measurement covers (default 2048)")
    p.add_argument("--repeats", type=int, default=2,
                   help="measure each cell this many times, pipelines taking turns; keep the fastest (default 2)")
    p.add_argument("--settle", type=float, default=10.0,
                   help="before each measurement wait up to this many seconds for the CPUs to be free of "
                        "other processes' load (Linux PSI; 0 = don't wait; default 10)")
    p.add_argument("--pack", type=ints, default=[6, 16],
                   help="comma-separated pack sizes: runs (seeds) in each packed measurement (default 6,16; "
                        "16 is the launcher's largest pack)")
    p.add_argument("--pack-batches", type=ints, default=None,
                   help="batch sizes at which to measure the pack, among --batch-sizes "
                        "(default 8 where it is one; '' = none)")
    p.add_argument("--compile-batches", type=ints, default=None,
                   help="batch sizes at which to also measure the trainer with compile=true "
                        "(torch.compile; default: every batch size, none with model=lstm; '' = none)")
    p.add_argument("--precisions", type=lambda t: t.split(","), default=["fp32"],
                   help="comma-separated precisions to measure the trainer in, besides fp32 (default fp32; "
                        "e.g. fp32,tf32,bf16; bf16 adds the fp32 trainer on autograd)")
    p.add_argument("--matmul-n", type=int, default=MATMUL_N, help="matmul size for the ceiling (default 2048)")
    p.add_argument("--matmul-reps", type=int, default=10,
                   help="timed matmuls before and after the cells (default 10 each; up to 3 in every cell)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for everything (default: torch's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default cpu")
    p.add_argument("--data-root", default=None, help="MNIST root (default: the config's data.root)")
    p.add_argument("--no-verify", action="store_true", help="use the IDX files under the root unchecked")
    p.add_argument("--json", type=Path, default=None, help="also write the results here (JSON)")
    args = p.parse_args(list(argv))
    if not args.pack or min(args.pack) < 2:
        p.error("--pack must be integers >= 2")
    args.pack = sorted(set(args.pack))
    if args.compile_batches is not None and not set(args.compile_batches) <= set(args.batch_sizes):
        p.error("--compile-batches must be among --batch-sizes")
    if args.pack_batches is None:
        args.pack_batches = [b for b in args.batch_sizes if b == 8]
    elif not set(args.pack_batches) <= set(args.batch_sizes):
        p.error("--pack-batches must be among --batch-sizes")
    for name in ("seconds", "warmup", "repeats", "matmul_n", "matmul_reps"):
        if getattr(args, name) <= 0 and not (name == "warmup" and args.warmup == 0):
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.settle < 0:
        p.error("--settle must be >= 0")
    if args.samples is not None and args.samples <= 0:
        p.error("--samples must be > 0")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--batch-sizes must be integers >= 1")
    bad = [n for n in args.precisions if n not in PRECISIONS]
    if bad:
        p.error(f"--precisions: unknown {bad}; known: {', '.join(PRECISIONS)}")
    args.precisions = ["fp32", *dict.fromkeys(n for n in args.precisions if n != "fp32")]
    if not all(args.norms):
        p.error("--norms must be model.norm values")
    args.argv = list(argv)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="[%(name)s][%(levelname)s] - %(message)s")
    try:
        result = bench(args)
    except Exception as e:
        line = describe_user_error(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_table(result))
    if args.json is not None:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
