"""Pilot: the cnn family's pack (study.models.cnn.PackedCNN) against its
members one after the other (LoopedPack), per training step, and a run's
trainer step against a plain nn.Module loop. Interleaved in one process:
compare the ratios, not the absolute numbers (docs/speed.md#noise).

    .venv/bin/python docs/pilots/cnn_pack.py [--threads 1,2] [--steps 20] [--rounds 3]

Arms: looped (LoopedPack, R networks one after another), packed (PackedCNN
as the trainer builds it), grouped (PackedCNN's grouped layers forced at
every batch size), packed NCHW, and one run: a plain nn.Module step
(build_cnn + SGD) and the trainer's step on a pack of one. Prints samples/s,
median over rounds, and the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import torch
import torch.nn.functional as F

from study.device import configure_determinism
from study.models.cnn import PackedCNN, build_cnn
from study.models.pack import LoopedPack


def members(norm: str, r: int, channels_last: bool) -> list:
    out = []
    for s in range(r):
        torch.manual_seed(s)
        out.append(build_cnn(norm=norm, channels_last=channels_last))  # the preset's 16, 32 channels, 64 hidden
    return out


def pack_step(model, r: int, b: int):
    """The trainer's autograd step (study.train.training_step): one SGD step of every member."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, foreach=True)
    x, y = torch.randn(r, b, 784), torch.randint(0, 10, (r * b,))

    def step():
        losses = F.cross_entropy(model(x).reshape(r * b, -1), y, reduction="none").view(r, b).mean(1)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
    return step


def plain_step(net, b: int):
    """The plain nn.Module loop's step: build_cnn + torch.optim.SGD, zero_grad / backward / step."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(b, 784), torch.randint(0, 10, (b,))

    def step():
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return step


def seconds(step, n: int) -> float:
    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--batches", default="64,8")
    ap.add_argument("--norms", default="none,batch")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    r = a.runs
    configure_determinism(None)  # as the trainer runs
    print(f"pack of {r}; samples/s summed over a pack's members; looped, packed and grouped: channels_last")
    for threads, b, norm in itertools.product(map(int, a.threads.split(",")), map(int, a.batches.split(",")),
                                              a.norms.split(",")):
        torch.set_num_threads(threads)
        grouped = PackedCNN(members(norm, r, True))
        grouped.grouped_below = 10**9  # the grouped layers at every batch size
        arms = {
            "looped": pack_step(LoopedPack(members(norm, r, True)), r, b),
            "packed": pack_step(PackedCNN(members(norm, r, True)), r, b),  # as the trainer builds it
            "grouped": pack_step(grouped, r, b),
            "packed NCHW": pack_step(PackedCNN(members(norm, r, False)), r, b),
            "plain 1 run": plain_step(members(norm, 1, True)[0], b),
            "trainer 1 run": pack_step(PackedCNN(members(norm, 1, True)), 1, b),
        }
        sizes = {k: (1 if "1 run" in k else r) * b for k in arms}
        rates = {k: [] for k in arms}
        for _ in range(a.rounds):  # interleaved: the machine's speed drifts
            for k, step in arms.items():
                rates[k].append(sizes[k] / seconds(step, a.steps))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"threads {threads} batch {b} norm {norm} (load average {os.getloadavg()[0]:.1f}): "
              + ", ".join(f"{k} {v:,.0f}" for k, v in med.items()))
        print(f"   packed/looped {med['packed'] / med['looped']:.2f}x, grouped/looped "
              f"{med['grouped'] / med['looped']:.2f}x, NCHW/NHWC packed {med['packed NCHW'] / med['packed']:.2f}x, "
              f"packed/plain 1 run {med['packed'] / med['plain 1 run']:.2f}x, "
              f"trainer 1 run/plain {med['trainer 1 run'] / med['plain 1 run']:.2f}x")


if __name__ == "__main__":
    main()
