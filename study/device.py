"""Where and how torch computes: the device, threads, deterministic kernels,
and the training step eager or through torch.compile."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from typing import Callable, Iterator, Optional

import torch
import torch.utils.deterministic

from study.errors import ConfigError
from study.models.fused_sgd.step import fused_sgd_step
from study.models.mlp import PackedMLP


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", name, "cpu or auto here: torch sees no CUDA device")
    return torch.device(name)


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


@contextlib.contextmanager
def precision(name: str, device: torch.device) -> Iterator[None]:
    """Train and evaluate in `name`: fp32 (float32 throughout); tf32 (float32
    matmuls may use TF32 tensor cores: CUDA Ampere and later; runs refuse it on
    CPU, where torch computes it as fp32: check_precision); bf16 (torch.autocast: matmuls in bfloat16, the
    weights, optimizer and losses in float32). The matmul setting is
    process-wide: restored on exit, so the next pack of a worker starts from fp32."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if name == "tf32" else "highest")
    try:
        if name == "bf16":
            # No cast cache: it keeps the bfloat16 copy of each weight for the whole context, so that
            # across optimizer steps every forward would use the first step's weights (measured: the
            # loss stayed at its initial value while the float32 weights trained).
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False):
                yield
        else:
            yield
    finally:
        torch.set_float32_matmul_precision(before)


def check_precision(name: str, device: torch.device) -> None:
    """Refuse `precision: tf32` where it is not a computation of its own: on CPU (device=auto without CUDA)
    torch computes it as fp32, and the run would count as another cell (study.config.validate refuses
    device=cpu)."""
    if name == "tf32" and device.type != "cuda":
        raise ConfigError("precision", name, f"fp32 or bf16 here: the device is {device.type} (device=auto, "
                                             "no CUDA device); tf32 is CUDA tensor-core math; on CPU a tf32 run "
                                             "computes exactly what fp32 does (docs/scaling.md#precision)")


def compile_unavailable(device: torch.device) -> Optional[str]:
    """Why torch.compile cannot build for `device` here, or None if it can.

    On CPU, Inductor writes C++ and needs a compiler (`CXX`, else g++).
    """
    if device.type != "cpu":
        return None
    from torch._inductor.cpp_builder import get_cpp_compiler  # loads Inductor (seconds): only where asked

    try:
        get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 - whatever the search raised, the answer is the same
        return " ".join(str(e).split())
    return None


def check_compile(enabled: bool, device: torch.device) -> None:
    """Refuse `compile: true` where torch.compile cannot build (a config error, one line)."""
    if enabled and (reason := compile_unavailable(device)) is not None:
        raise ConfigError("compile", "true", f"false here: torch.compile on CPU needs a C++ compiler ({reason})")


StepFn = Callable[[PackedMLP, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def training_functions(model: PackedMLP, compiled: bool) -> tuple[StepFn, Callable[[torch.Tensor], torch.Tensor]]:
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
    if not compiled:
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
