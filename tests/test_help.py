"""`python study/run.py --help`: what the program does, its groups, every preset, examples."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO
from study.help import EXPERIMENTS, preset_summary

RUN = [sys.executable, str(REPO / "study" / "run.py")]


def test_help_lists_every_preset_with_its_summary_and_the_groups() -> None:
    proc = subprocess.run(RUN + ["--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    page = proc.stdout
    assert page.startswith("bn-study: what Batch Normalization does")
    presets = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
    assert len(presets) >= 20
    for name in presets:  # one line each, from the preset file itself
        summary = preset_summary(EXPERIMENTS / f"{name}.yaml")
        assert any(ln.split() and ln.split()[0] == name and ln.rstrip().endswith(summary)
                   for ln in page.splitlines()), name
    for quick in EXPERIMENTS.glob("quick/*.yaml"):
        assert quick.stem in page.split("experiment/quick:", 1)[1].splitlines()[0]
    for group in ("data: mnist", "model: cnn, lstm, mlp", "optimizer: adam, adamw, sgd",
                  "logger: mlflow, none, tensorboard"):
        assert group in page
    examples = [ln for ln in page.split("== Examples ==", 1)[1].split("==", 1)[0].splitlines() if "python" in ln]
    assert len(examples) >= 5
    assert "report.html" in page and "result.json" in page  # where results land
    hydra = subprocess.run(RUN + ["--hydra-help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert hydra.returncode == 0 and hydra.stdout.startswith("Hydra (")  # Hydra's own, unchanged


def test_every_preset_opens_with_a_one_line_summary() -> None:
    for path in sorted(EXPERIMENTS.glob("*.yaml")) + sorted(EXPERIMENTS.glob("quick/*.yaml")):
        summary = preset_summary(path)
        assert summary and len(summary) <= 110, path
        assert path.read_text().splitlines()[1] == f"# {summary}", path
