"""What a job trains, as plain values: `train_spec(cfg)` reads the config once.

The trainer (study/train.py), the models and the probes take a `TrainSpec`
(or plain arguments) and know nothing of Hydra or OmegaConf: every config
key they use is a field below. The run's seed and learning rate are not in
it: a pack trains several (seed, lr) members of one spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from study.models import fused_sgd


@dataclass(frozen=True)
class ModelSpec:
    family: str  # `model=<family>`: a key of study.models.FAMILIES
    options: dict[str, Any]  # the family's other config values: its build function's keyword arguments


@dataclass(frozen=True)
class OptimizerSpec:
    name: str  # sgd | adam | adamw
    momentum: float  # sgd
    nesterov: bool  # sgd
    weight_decay: float
    betas: tuple[float, float]  # adam, adamw
    eps: float  # adam, adamw


@dataclass(frozen=True)
class ProbeSpec:
    """The measurements of study/probes.py (config `probes`, documented there)."""

    kinds: tuple[str, ...]
    every: int  # optimizer steps between step probes
    stop_at: Optional[float]  # val_acc at which a pack stops training (every live run reached it); None: never
    layer: int  # hidden layer of the `activations` probe, resolved (0 = the first)
    unit: int
    sample: int  # validation images of the `activations` probe
    landscape_scales: tuple[float, ...]  # step sizes along the gradient, in multiples of lr
    train_subset: int  # training images of the `train_acc` probe
    shift_brightness: float
    shift_contrast: float


@dataclass(frozen=True)
class TrainSpec:
    model: ModelSpec
    optimizer: OptimizerSpec
    lr: float  # every run's, unless train_runs is given each run's own
    batch_size: int  # examples per optimizer step
    epochs: int
    steps: Optional[int]  # optimizer-step budget; replaces epochs when set
    warmup_epochs: float  # lr rises linearly from warmup_lr to each run's lr over these epochs (0: none)
    warmup_lr: float
    eval_batch_size: int  # examples per evaluation forward pass (same numbers, less memory)
    fused_step: bool  # train with study.models.fused_sgd's step (config `fused`, where it applies), else autograd
    lr_packable: bool  # runs with their own learning rates may train as one pack
    compile: bool  # torch.compile the training step
    progress_every: float  # seconds between progress lines within an epoch (0: per epoch only)
    probes: Optional[ProbeSpec]  # None: no probes


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True) if isinstance(node, DictConfig) else dict(node)


MNIST_TRAIN_IMAGES = 60_000  # the official training set: data.val_size of them validate, the rest train


def batches_per_epoch(n_train: int, batch_size: int) -> int:
    """Full batches, plus the trailing partial one unless it has one example.

    A trailing batch of a single example is dropped (for every norm, so both
    arms see the same data): BN cannot normalize one example.
    """
    full, rest = divmod(n_train, batch_size)
    return full + (1 if rest >= 2 else 0)


def optimizer_steps(cfg: Any) -> tuple[int, int]:
    """(steps, steps per epoch) of a job on MNIST's training split: `steps`,
    else `epochs` epochs, as the trainer counts them (study.train.train_runs)
    on the official files. The launcher orders its packs by it and the suite
    weighs its presets by it, neither loading the data."""
    per_epoch = max(1, batches_per_epoch(MNIST_TRAIN_IMAGES - int(cfg.data.val_size), int(cfg.batch_size)))
    return (int(cfg.steps) if cfg.steps is not None else int(cfg.epochs) * per_epoch), per_epoch


def lr_packable(cfg: Any) -> bool:
    """Whether runs of `cfg` that differ in learning rate can train as one pack.

    The fused SGD step takes a learning rate per run; autograd's optimizers
    (momentum, Adam, other norms) and the probes that take an SGD step of
    their own (ics, landscape) use one.
    """
    if not fused_sgd.trains(cfg):
        return False
    p = cfg.get("probes")
    return not {str(getattr(k, "value", k)) for k in (p.kinds if p is not None else [])} & {"ics", "landscape"}


def train_spec(cfg: Any) -> TrainSpec:
    """The spec of a (validated) config, composed or plain."""
    model, opt = _plain(cfg.model), _plain(cfg.optimizer)
    family = str(model.pop("family", "mlp"))
    p = cfg.get("probes")
    probes = None
    if p is not None and len(p.kinds):
        probes = ProbeSpec(kinds=tuple(dict.fromkeys(str(getattr(k, "value", k)) for k in p.kinds)),
                           every=int(p.every), stop_at=None if p.stop_at is None else float(p.stop_at),
                           layer=int(p.layer) % len(model["hidden"]), unit=int(p.unit),
                           sample=int(p.sample), landscape_scales=tuple(float(s) for s in p.landscape_scales),
                           train_subset=int(p.train_subset), shift_brightness=float(p.shift_brightness),
                           shift_contrast=float(p.shift_contrast))
    return TrainSpec(
        model=ModelSpec(family=family, options=model),
        optimizer=OptimizerSpec(name=str(opt["name"]), momentum=float(opt["momentum"]),
                                nesterov=bool(opt["nesterov"]), weight_decay=float(opt["weight_decay"]),
                                betas=tuple(float(b) for b in opt["betas"]), eps=float(opt["eps"])),
        lr=float(cfg.lr), batch_size=int(cfg.batch_size), epochs=int(cfg.epochs),
        steps=None if cfg.steps is None else int(cfg.steps),
        warmup_epochs=float(cfg.get("warmup_epochs", 0.0)), warmup_lr=float(cfg.get("warmup_lr", 0.0)),
        eval_batch_size=int(cfg.eval_batch_size),
        fused_step=fused_sgd.trains(cfg), lr_packable=lr_packable(cfg), compile=bool(cfg.compile),
        progress_every=float(cfg.progress_every), probes=probes,
    )
