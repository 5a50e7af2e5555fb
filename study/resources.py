"""How many cores this process may use, and which GPU a launcher worker takes.

`os.cpu_count()` counts the machine's cores, not the ones this process may
run on: under `taskset`, a cgroup cpuset or a SLURM allocation it starts too
many workers and threads. `usable_cores` asks the scheduler's affinity mask
and, inside a SLURM job, the allocation's CPU count (SLURM_CPUS_PER_TASK,
else SLURM_CPUS_ON_NODE), whichever is smaller. Torch-free: the launching
process counts cores and never trains.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional

SLURM_CPU_VARIABLES = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")  # the first one set counts


def usable_cores(environ: Optional[Mapping[str, str]] = None) -> int:
    """Cores this process may run on: its affinity mask, capped by SLURM's CPU count when set."""
    environ = os.environ if environ is None else environ
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    for name in SLURM_CPU_VARIABLES:
        value = environ.get(name, "")
        if value.strip().isdigit() and int(value) >= 1:
            return max(1, min(cores, int(value)))
    return max(1, cores)


def worker_devices(device: str, n_gpus: int, n_workers: int) -> list[Optional[str]]:
    """The device of each launcher worker: with `device=cuda` and several
    GPUs, worker w trains on `cuda:w` (no two workers share one, so at most
    one worker per GPU); otherwise None (the config's device)."""
    if device != "cuda" or n_gpus < 2:
        return [None] * n_workers
    return [f"cuda:{w}" for w in range(min(n_workers, n_gpus))]
