"""Pilot: PackedLSTM's training step as committed against the same step at
an earlier commit (default 55659fd^, before the input term was computed
time-major with the plain arm's biases in the matmul), per arm, pack size
and batch size. Both versions are loaded into one process and timed in
turn (forward, backward, Adam), best of rounds, so read the ratios, not
the absolute numbers (docs/speed.md#noise). Also says whether the two give
bit-identical outputs and gradients on the same weights and inputs.

    uv run python docs/pilots/lstm_input_term.py [--before 55659fd^] [--threads 1] [--rounds 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from study import REPO_ROOT
from study.models import lstm as now

CELLS = [("none", 8, 8), ("none", 1, 8), ("none", 4, 128), ("batch", 8, 8), ("batch", 1, 8), ("batch", 4, 128),
         ("layer", 8, 8), ("layer", 1, 8), ("layer", 4, 128)]  # (arm, pack size, batch size)


def load_before(rev: str):
    text = subprocess.run(["git", "show", f"{rev}:study/models/lstm.py"], cwd=REPO_ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "lstm_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("lstm_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pack(module, norm: str, r: int):
    return module.PackedLSTM([torch.manual_seed(s) and module.build_lstm(hidden=[100], norm=norm) for s in range(r)])


def training_step(model, x, y):
    r, b = x.shape[:2]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)

    def step():
        loss = F.cross_entropy(model(x).reshape(r * b, -1), y, reduction="none").view(r, b).mean(1)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()

    for _ in range(2):
        step()
    return step


def interleaved_ms(steps_of: list, steps: int, rounds: int) -> list[float]:
    """Best ms per step of each step function, timed in turn in every round (the order alternating)."""
    best = [float("inf")] * len(steps_of)
    for k in range(rounds):
        order = list(range(len(steps_of)))[:: 1 if k % 2 == 0 else -1]
        for i in order:
            t = time.perf_counter()
            for _ in range(steps):
                steps_of[i]()
            best[i] = min(best[i], (time.perf_counter() - t) / steps * 1000)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="55659fd^")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    before = load_before(args.before)
    print(f"before = {args.before}, {args.threads} thread(s), best of {args.rounds} rounds, ms per step")
    for norm, r, b in CELLS:
        x, y = torch.randn(r, b, 784), torch.randint(0, 10, (r * b,))
        old, new = pack(before, norm, r), pack(now, norm, r)
        grads = []
        for m in (old, new):
            out = m(x)
            F.cross_entropy(out.reshape(r * b, -1), y).backward()
            grads.append((out.detach(), [q.grad.clone() for q in m.parameters()]))
        same_out = torch.equal(grads[0][0], grads[1][0])
        same_grad = all(torch.equal(g, h) for g, h in zip(grads[0][1], grads[1][1]))
        steps = 10 if b <= 8 else 3
        t_old, t_new = interleaved_ms([training_step(old, x, y), training_step(new, x, y)], steps, args.rounds)
        print(f"{norm:5s} pack {r} batch {b:3d}: before {t_old:7.2f}, now {t_new:7.2f} ({t_old / t_new:.2f}x); "
              f"outputs identical {same_out}, gradients identical {same_grad}")


if __name__ == "__main__":
    sys.exit(main())
