"""Timing on a shared machine: wait for the device, measure how much other
processes competed for the CPUs (Linux pressure stall information), and
wait for a quiet moment before measuring. Used by the benchmark
(study/bench.py) and by C14's cost measurement (cost.py)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA clock reads nothing before it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


PSI_CPU = Path("/proc/pressure/cpu")


def cpu_wait_us() -> Optional[int]:
    """Linux pressure stall info: total microseconds in which some runnable task
    waited for a CPU (None where the kernel does not expose it)."""
    try:
        for line in PSI_CPU.read_text().splitlines():
            if line.startswith("some "):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextmanager
def cpu_wait(into: dict[str, Any]) -> Iterator[None]:
    """Put into `into["cpu_wait"]` the share of the block's wall time in which
    some task waited for a CPU: ~0 on a quiet machine; high when other
    processes competed with this one (such a measurement reads low)."""
    w0, t0 = cpu_wait_us(), time.perf_counter()
    yield
    w1, t1 = cpu_wait_us(), time.perf_counter()
    # (clamped: the kernel's counter and this clock are read at slightly different instants)
    into["cpu_wait"] = None if w0 is None or w1 is None else min(1.0, (w1 - w0) / 1e6 / max(t1 - t0, 1e-9))


def settle(max_seconds: float, window: float = 0.5, threshold: float = 0.02) -> float:
    """Wait (up to `max_seconds`) for a `window` in which tasks waited for a CPU
    less than `threshold` of the time; return the seconds waited.

    On a shared machine other jobs come and go; measuring in their gaps
    keeps their load out of the numbers (best-of-repeats does the rest).
    """
    if max_seconds <= 0 or cpu_wait_us() is None:
        return 0.0
    t0 = time.perf_counter()
    while True:
        probe: dict[str, Any] = {}
        with cpu_wait(probe):
            time.sleep(window)
        waited = time.perf_counter() - t0
        if probe["cpu_wait"] < threshold or waited >= max_seconds:
            return waited
