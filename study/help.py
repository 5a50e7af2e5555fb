"""`python study/run.py --help`: what the program does, its config groups,
the presets and examples (conf/hydra/help/study.yaml is the page). The
presets are listed from conf/experiment/ itself, each with the first comment
line of its file, so the list cannot go stale."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from study import CONF_DIR

EXPERIMENTS = CONF_DIR / "experiment"


def preset_summary(path: Path) -> str:
    """A preset file's one-line summary: its first comment line after the `# @package` line."""
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#"):
            break
        if text and not text.startswith("@package"):
            return text
    return ""


def presets_text() -> str:
    names = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
    width = max(map(len, names))
    lines = [f"  {name:<{width}}  {preset_summary(EXPERIMENTS / f'{name}.yaml')}" for name in names]
    lines.append(f"  {'quick/NAME':<{width}}  the same at a smoke-test budget (minutes): experiment/quick above")
    # string.Template reads the page after OmegaConf: a `$` in a summary must stay a `$`.
    return "\n".join(lines).replace("$", "$$")


def register_help_resolver() -> None:
    OmegaConf.register_resolver("study_presets", presets_text, replace=True)
