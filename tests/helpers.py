"""Shared test helpers: the real Hydra config, shrunk to tiny data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# torch.compile on CPU needs a C++ compiler (Inductor looks for $CXX, else
# g++); .ci/run installs one, elsewhere the compiled paths' tests skip.
HAS_CXX = shutil.which(os.environ.get("CXX", "g++")) is not None
needs_cxx = pytest.mark.skipif(not HAS_CXX, reason="torch.compile needs a C++ compiler ($CXX or g++)")


def tiny_overrides(root: Path) -> list[str]:
    """Point the real config at the test's tiny MNIST-format files.

    force=true: every test trains (tests of reuse turn it off explicitly).
    threads=1: two OpenMP threads on a busy 2-core machine can be 20x slower.
    """
    return [f"data.root={root}", "data.verify=false", "data.val_size=200", "progress_every=0",
            "force=true", f"run_index={root}/.run-index", "threads=1"]
