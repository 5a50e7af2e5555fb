"""The notebook's own training pipeline, as it was written, timed: the
benchmark's baseline (study/bench.py, docs/speed.md)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from study.device import set_deterministic
from study.measure.clock import cpu_wait, sync
from study.spec import train_spec
from study.train import build_member


@contextmanager
def deterministic(flag: bool) -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    set_deterministic(flag)
    try:
        yield
    finally:
        set_deterministic(before)


def notebook_dataset(root: Path) -> datasets.MNIST:
    """The notebook's dataset: per-sample ToTensor + Normalize on PIL images."""
    # As the notebook wrote it (pixels to [-1, 1]); the trainer's default, data.normalize=notebook, is the same.
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    # download=False: the files were prepared (and verified, unless --no-verify) by load_mnist.
    return datasets.MNIST(root, train=True, download=False, transform=transform)


def measure_notebook(cfg: DictConfig, dataset: datasets.MNIST, device: torch.device, warmup: int,
                     samples: Optional[int], seconds: float) -> dict[str, Any]:
    """The notebook's training loop, timed after `warmup` samples over `samples` samples (None: `seconds`)."""
    model = build_member(train_spec(cfg).model, cfg.seed).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True)
    model.train()

    def batches():
        while True:  # as many epochs as the budget needs
            yield from loader

    it = batches()
    running_loss = 0.0

    def step() -> int:
        nonlocal running_loss
        images, labels = next(it)
        while len(images) < 2:  # an epoch's trailing batch of one, which BN cannot train on
            images, labels = next(it)
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = model(images.view(images.size(0), -1))
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()  # the notebook's loss bookkeeping (a host sync per step)
        return images.size(0)

    out: dict[str, Any] = {}
    with deterministic(False):  # the notebook never turned it on
        warm = 0
        while warm < warmup:
            warm += step()
        sync(device)
        with cpu_wait(out):
            done, t0 = 0, time.perf_counter()
            while True:
                done += step()
                if samples is not None:
                    if done >= samples:
                        break
                elif time.perf_counter() - t0 >= seconds:
                    break
            sync(device)
            took = time.perf_counter() - t0
    return {"samples": done, "seconds": took, "samples_per_second": done / took, **out}
