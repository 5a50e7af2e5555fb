"""C16's budget pilot: the `rnn` preset's runs, with the final probes taken after every epoch.

    uv run python docs/pilots/c16_pilot.py --norm batch --epochs 10 --seeds 0,1,2 --out outputs/pilot-c16/rows-batch.json
    uv run python docs/pilots/c16_pilot.py --norm batch --permute --epochs 10 ...

Each invocation trains one pack (the given seeds of one arm, `experiment=rnn`
at `--epochs` epochs, `--batch` and `--eps`) through the study's own trainer
(`study.train.train_runs`, the spec `python study/run.py -m experiment=rnn
epochs=E steps=null ...` gives, so a seed's numbers are those of the preset's
run at that budget), and after every epoch (or those of `--probe-epochs`) takes the final probe
`precise_bn` (test accuracy with population, batch and recomputed statistics,
the numbers `modes` gives as well, and for BN-LSTM the per-step variances) on a copy of the model. Training at
budget B is the first B epochs of training at 2B (Adam without a schedule,
the same data order), so one run at 2B gives the headline at every budget up
to 2B: the pilot rule of docs/claims.md ("the headline statistic at the budget
and at twice it differ by less than half the margin"). The probes' time is
kept out of the wall times printed per epoch. Writes one JSON file per pack.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from study.config import compose_config
from study.device import configure_determinism
from study.probes import Probes, step_norms
from study.runner import get_data, plain_config
from study.spec import train_spec
from study.train import train_runs


ABLATE_FIRST = (1, 2, 3, 4, 6, 8, 14)  # batch statistics at the first k steps, population statistics after


@torch.no_grad()
def first_steps_batch_acc(model, x: torch.Tensor, y: torch.Tensor, chunk: int, k: int) -> list[float]:
    """Per run, test accuracy of a BN-LSTM pack with the test chunk's batch statistics at steps < k and the
    population (running) statistics at the others: which steps' population statistics cost the accuracy."""
    net = copy.deepcopy(model)
    norms = [m for _, m in step_norms(net)]
    hooks = [m.register_forward_pre_hook(lambda m, args: setattr(m, "training", int(args[1]) < k)) for m in norms]
    net.eval()
    correct = torch.zeros(net.runs)
    for xc, yc in zip(x.split(chunk), y.split(chunk)):
        correct += (net(xc.unsqueeze(0).expand(net.runs, -1, -1)).argmax(-1) == yc).sum(1)
    for h in hooks:
        h.remove()
    return (correct / len(x)).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--norm", required=True, choices=["none", "batch", "batch_shared", "layer"])
    ap.add_argument("--permute", action="store_true", help="data.permute=true (permuted pixels)")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--eps", type=float, default=None, help="model.bn_eps (default: conf/model/lstm.yaml's)")
    ap.add_argument("--probe-epochs", default="", help="the epochs after which to probe, e.g. 1,2,3,4,5,6,8,10 "
                    "(default: every epoch)")
    ap.add_argument("--ablate-epochs", default="", help="BN-LSTM: after these epochs also the accuracy with batch "
                    f"statistics at the first k steps only, k in {ABLATE_FIRST} (default: the last epoch)")
    ap.add_argument("--override", action="append", default=[], help="another config override (repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    overrides = ["experiment=rnn", f"model.norm={args.norm}", f"data.permute={str(args.permute).lower()}",
                 f"epochs={args.epochs}", "steps=null", f"batch_size={args.batch}", "threads=1",
                 "probes.kinds=[precise_bn]"]
    if args.eps is not None:
        overrides.append(f"model.bn_eps={args.eps}")
    overrides += args.override
    cfg = plain_config(compose_config(overrides))
    configure_determinism(1)
    device = torch.device("cpu")
    data = get_data(cfg, device)
    seeds = [int(s) for s in args.seeds.split(",")]

    per_epoch: list[dict] = []
    models: list = []  # the pack after the last epoch, saved beside the JSON
    plain_on_epoch = Probes.on_epoch
    probe_at = {int(e) for e in args.probe_epochs.split(",") if e} or set(range(1, args.epochs + 1))
    ablate_at = {int(e) for e in args.ablate_epochs.split(",") if e} or {args.epochs}
    d = data
    epoch = 0

    def on_epoch(self: Probes, model):  # after each epoch's evaluation: the final probes, timed apart
        nonlocal epoch
        extra = plain_on_epoch(self, model)
        epoch += 1
        models[:] = [model]
        if epoch not in probe_at:
            return extra
        t0 = time.perf_counter()
        final = self.final(model)
        if epoch in ablate_at and step_norms(model):
            accs = {k: first_steps_batch_acc(model, d.test_x, d.test_y, self.batch_size, k) for k in ABLATE_FIRST}
            for r, f in enumerate(final):
                f["first_steps_batch_acc"] = {str(k): a[r] for k, a in accs.items()}
        spent = time.perf_counter() - t0
        self.seconds += spent
        per_epoch.append({"epoch": epoch, "probe_seconds": spent, "final": final})
        print(f"epoch {epoch}: " + "; ".join(
            f"seed {s}: pop {f['precise_bn']['ema_acc']:.4f} batch {f['precise_bn']['train_mode_acc']:.4f}"
            + (f" precise {f['precise_bn']['precise_acc'][-1]:.4f}" if f['precise_bn']['precise_acc'] else "")
            for s, f in zip(seeds, final)), flush=True)
        return extra

    Probes.on_epoch = on_epoch
    t0 = time.perf_counter()
    try:
        outcomes = train_runs(train_spec(cfg), seeds, data, device, tag=f"[{args.norm}] ")
    finally:
        Probes.on_epoch = plain_on_epoch
    wall = time.perf_counter() - t0
    out = {"overrides": overrides, "seeds": seeds, "wall_seconds": wall, "threads": torch.get_num_threads(),
           "runs": [{"seed": o.seed, "status": o.status, "history": o.history,
                     "per_epoch": [{"epoch": e["epoch"], "probe_seconds": e["probe_seconds"], **e["final"][k]}
                                   for e in per_epoch]} for k, o in enumerate(outcomes)]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in models[-1].state_dict().items()}, args.out.with_suffix(".pt"))
    args.out.write_text(json.dumps(out))
    print(f"wrote {args.out} ({wall:.0f} s)")


if __name__ == "__main__":
    main()
