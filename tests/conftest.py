"""Shared fixtures: a tiny, learnable dataset in the real MNIST file format.

Tests never download MNIST: they point the real loader at these files with
``data.root=<root> data.verify=false data.val_size=200``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from study.mnist_files import write_idx

TINY_N_TRAIN = 1200
TINY_N_TEST = 400
TINY_SEED = 1234


def make_tiny_arrays(
    n_train: int = TINY_N_TRAIN, n_test: int = TINY_N_TEST, seed: int = TINY_SEED
) -> dict[str, np.ndarray]:
    """MNIST-shaped uint8 images whose class is learnable in an epoch or two.

    Each class has a fixed random "stroke" prototype (about 20% of the pixels
    lit, like a digit); an image is its class prototype at a random intensity
    plus Gaussian noise, clipped to 0..255. Labels are balanced and shuffled.
    Keys are the official IDX file names.
    """
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, 28, 28)) < 0.2) * 255.0

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        intensity = rng.uniform(0.6, 1.0, size=(n, 1, 1))
        noise = rng.normal(0.0, 60.0, size=(n, 28, 28))
        images = np.clip(prototypes[labels] * intensity + noise, 0, 255).round().astype(np.uint8)
        return images, labels

    train_images, train_labels = split(n_train)
    test_images, test_labels = split(n_test)
    return {
        "train-images-idx3-ubyte": train_images,
        "train-labels-idx1-ubyte": train_labels,
        "t10k-images-idx3-ubyte": test_images,
        "t10k-labels-idx1-ubyte": test_labels,
    }


@pytest.fixture(scope="session")
def tiny_arrays() -> dict[str, np.ndarray]:
    """The arrays written by ``tiny_mnist``, keyed by IDX file name (read-only)."""
    arrays = make_tiny_arrays()
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory, tiny_arrays: dict[str, np.ndarray]) -> Path:
    """Root of a tiny MNIST: ``<root>/MNIST/raw/`` holds the 4 uncompressed IDX files.

    1,200 training and 400 test 28x28 images, 10 classes. Treat it as
    read-only: it is shared by the whole session.
    """
    root = tmp_path_factory.mktemp("tiny_mnist")
    for name, array in tiny_arrays.items():
        write_idx(root / "MNIST" / "raw" / name, array)
    return root


@pytest.fixture
def no_cpp_compiler(monkeypatch):
    """Inductor finds no C++ compiler (what `compile_unavailable` asks it)."""
    import torch._inductor.cpp_builder as cpp_builder

    def no_compiler(*_a, **_k):
        raise RuntimeError("No working C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)


@pytest.fixture(scope="module")
def tiny_data(tiny_mnist: Path):
    """``tiny_mnist`` loaded as the trainer takes it: 200 validation images, files not checked."""
    from study.data import load_mnist

    return load_mnist(tiny_mnist, val_size=200, verify=False)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's tests (bit-for-bit comparisons), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
