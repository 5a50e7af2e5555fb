"""The study's code: a run's core here (run.py is the entry point), the model
families in models/, timing tools in measure/, a multirun's callbacks and
progress in sweep/ (docs/architecture.md)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"  # the Hydra configs: conf/config.yaml and its groups
