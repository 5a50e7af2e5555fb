"""Shared test helpers: the real Hydra config, shrunk to tiny data."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_overrides(root: Path) -> list[str]:
    """Point the real config at the test's tiny MNIST-format files.

    force=true: every test trains (tests of reuse turn it off explicitly).
    threads=1: two OpenMP threads on a busy 2-core machine can be 20x slower.
    """
    return [f"data.root={root}", "data.verify=false", "data.val_size=200", "progress_every=0",
            "force=true", f"run_index={root}/.run-index", "threads=1"]
