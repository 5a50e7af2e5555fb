"""MNIST as the trainer reads it: the four verified files (mnist_files.py)
as normalized float32 tensors in memory, split into train, validation and
test (`load_mnist`; docs/data.md)."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from study.mnist_files import DataError, prepare

log = logging.getLogger(__name__)

# data.normalize: a pixel p in [0, 1] (byte / 255) becomes (p - mean) / std.
NORMALIZE: dict[str, tuple[float, float]] = {
    # The notebook's transforms.Normalize((0.5,), (0.5,)): pixels to [-1, 1].
    "notebook": (0.5, 0.5),
    # The training images' own mean and std (torchvision's MNIST example):
    # inputs of mean 0 and std 1.
    "standard": (0.1307, 0.3081),
    # Raw pixels in [0, 1].
    "none": (0.0, 1.0),
}


@dataclass
class MNISTSplits:
    """MNIST as tensors: images float32 (N, 784) normalized, labels int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    info: dict[str, Any]


def _idx_bytes_md5(array: torch.Tensor) -> str:
    """MD5 of the IDX file that holds ``array`` (uint8): header + raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    h = hashlib.md5(header)
    h.update(array.contiguous().numpy().tobytes())
    return h.hexdigest()


def _read_with_torchvision(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision  # imported where used: it adds ~4 s to a process start

    which = "training" if train else "test"
    try:
        ds = torchvision.datasets.MNIST(root, train=train, download=False)
    except (RuntimeError, ValueError, AssertionError, OSError) as e:
        raise DataError(f"cannot read the MNIST {which} files in {root / 'MNIST' / 'raw'}: {e}") from e
    return ds.data, ds.targets


def _read_uint8(root: Path, train: bool, md5: dict[str, str],
                write_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One official split as uint8 images (N, 28, 28) and labels (N,).

    torchvision reads the IDX files; the tensors it returns are kept in
    ``<root>/MNIST/.tensors/`` under the files' MD5s, so that later processes
    (sweep workers) skip torchvision's import. A cached tensor is used only
    if the IDX file it would make has exactly the recorded MD5. It holds the
    bytes, before any normalization, so one cache serves every
    ``data.normalize``. ``write_cache=False`` (a root that cannot be written)
    reads an existing cache but writes none.
    """
    prefix = "train" if train else "t10k"
    want_x, want_y = md5.get(f"{prefix}-images-idx3-ubyte"), md5.get(f"{prefix}-labels-idx1-ubyte")
    cache = root / "MNIST" / ".tensors" / f"{prefix}-{want_x}-{want_y}.pt" if want_x and want_y else None
    if cache is not None and cache.exists():
        try:
            saved = torch.load(cache, weights_only=True)
            images, labels = saved["images"], saved["labels"].to(torch.uint8)
            if _idx_bytes_md5(images) == want_x and _idx_bytes_md5(labels) == want_y:
                return images, saved["labels"]
            log.warning("tensor cache %s does not match the IDX files; reading them again", cache)
        except Exception as e:  # any unreadable cache is just a cache miss
            log.warning("tensor cache %s unreadable (%s); reading the IDX files again", cache, e)
    images, labels = _read_with_torchvision(root, train)
    if cache is not None and write_cache:
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        try:
            cache.parent.mkdir(exist_ok=True)
            torch.save({"images": images, "labels": labels}, tmp)
            os.replace(tmp, cache)
        except OSError as e:  # only a cache: the run goes on without it
            tmp.unlink(missing_ok=True)
            log.warning("tensor cache %s not written: %s", cache, e)
    return images, labels


def _read_split(root: Path, train: bool, device: torch.device, md5: dict[str, str],
                normalize: str, write_cache: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one official split; normalize once on ``device``."""
    which = "training" if train else "test"
    images, labels = _read_uint8(root, train, md5, write_cache)
    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28) or labels.shape != (images.shape[0],):
        raise DataError(
            f"MNIST {which} files hold images {tuple(images.shape)} and labels "
            f"{tuple(labels.shape)}, expected (N, 28, 28) and (N,)"
        )
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) <= 9):
        raise DataError(f"MNIST {which} labels fall outside 0..9")
    mean, std = NORMALIZE[normalize]
    x = images.to(device).reshape(-1, 28 * 28).float().div_(255.0)
    x = x.sub_(mean).div_(std)
    return x, labels.to(device=device, dtype=torch.int64)


def pixel_permutation(seed: int) -> torch.Tensor:
    """The fixed order of the 784 pixels under ``data.permute`` (CPU, seeded generator only)."""
    return torch.randperm(28 * 28, generator=torch.Generator().manual_seed(int(seed)))


def load_mnist(
    root: str | os.PathLike[str],
    *,
    val_size: int = 5000,
    split_seed: int = 0,
    normalize: str = "notebook",
    source: str = "auto",
    verify: bool = True,
    device: str | torch.device = "cpu",
    permute_seed: Optional[int] = None,
) -> MNISTSplits:
    """Prepare (see :func:`study.mnist_files.prepare_mnist`) and load MNIST as normalized tensors.

    ``val_size`` images of the official training set become the validation
    set, chosen by a permutation seeded with ``split_seed`` alone (0: an
    empty validation split, float32 (0, 784) and int64 (0,); training on all
    images); the test set is the official 10,000. ``normalize`` names the
    pixel scaling (:data:`NORMALIZE`). ``permute_seed`` (None: off) reorders
    the 784 pixels of every image by one fixed permutation seeded with it
    (permuted MNIST, ``data.permute``).
    """
    if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
        raise DataError(f"data.val_size={val_size!r} must be an integer >= 0")
    # The schema's enums (study.config.Normalize, DataSource) stand for their values;
    # str() of one would be its name ("Normalize.notebook").
    normalize, source = getattr(normalize, "value", normalize), getattr(source, "value", source)
    if normalize not in NORMALIZE:
        raise DataError(f"data.normalize={normalize!r} is not one of {', '.join(NORMALIZE)}")
    info, unwritable = prepare(root, source, verify)
    if unwritable:
        log.warning("data.root=%s cannot be written (%s): reading its MNIST files without the "
                    "preparation lock or the tensor cache", info["root"], unwritable)
    device = torch.device(device)
    root_path = Path(info["root"])
    x, y = _read_split(root_path, True, device, info["md5"], normalize, write_cache=not unwritable)
    test_x, test_y = _read_split(root_path, False, device, info["md5"], normalize, write_cache=not unwritable)

    n = x.shape[0]
    if val_size >= n:
        raise DataError(f"data.val_size={val_size} must be below the {n} training images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    # Sorted so each split keeps the official order; membership is what the seed decides.
    val_idx = perm[:val_size].sort().values.to(device)
    train_idx = perm[val_size:].sort().values.to(device)

    if permute_seed is not None:
        pixels = pixel_permutation(permute_seed).to(device)
        x, test_x = x[:, pixels], test_x[:, pixels]

    info = {
        **info,
        "permute_seed": permute_seed,  # null: pixels in their order
        "n_train": n - val_size,
        "n_val": val_size,
        "n_test": int(test_x.shape[0]),
        "val_size": val_size,
        "split_seed": split_seed,
        "normalize": normalize,
        "normalization": list(NORMALIZE[normalize]),  # [mean, std]: x = (pixel / 255 - mean) / std
    }
    log.info(
        "MNIST loaded on %s: %d train, %d validation, %d test (source %s, normalize %s)",
        device,
        info["n_train"],
        info["n_val"],
        info["n_test"],
        info["source"],
        normalize,
    )
    return MNISTSplits(
        train_x=x[train_idx],
        train_y=y[train_idx],
        val_x=x[val_idx],
        val_y=y[val_idx],
        test_x=test_x,
        test_y=test_y,
        info=info,
    )
