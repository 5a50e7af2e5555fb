"""The tables of C16's pilot (docs/claims.md#c16-the-lstm-measured) from the JSON files of c16_pilot.py.

    uv run python docs/pilots/c16_summary.py outputs/pilot-c16

Per pack file (arm, pixel order, batch, eps): test accuracy per probed epoch
with population (EMA), batch and recomputed (precise, 10^4 images)
statistics, mean over seeds (each seed in brackets); BN-LSTM and LN-LSTM
minus the LSTM of the same pixel order and batch per epoch (means over the
same seeds: the difference of means); the pilot rule for candidate budgets
B (the statistic at B and at 2B); training and evaluation seconds per run
and epoch (the history's, probes left out); for BN-LSTM the per-step
statistics and the ablation at the last probed epoch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean, median

STEP_NORMS = ("norm_x", "norm_h", "norm_c")


def load(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def arm_of(d: dict) -> tuple[str, bool, int, str]:
    o = dict(x.split("=", 1) for x in d["overrides"])
    return o["model.norm"], o["data.permute"] == "true", int(o["batch_size"]), o.get("model.bn_eps", "1e-05")


def series(d: dict, key: str) -> dict[int, list[float]]:
    """epoch -> per-seed accuracy: pop (the history's test_acc, every epoch; the probes' ema_acc is the same
    number), batch (train_mode_acc), precise (precise_acc[-1]); without batch statistics all three are pop."""
    out: dict[int, list[float]] = {}
    if key == "pop" or not arm_of(d)[0].startswith("batch"):  # the history's test accuracy: population statistics
        for run in d["runs"]:
            for h in run["history"]:
                out.setdefault(h["epoch"], []).append(100 * h["test_acc"])
        return out
    for run in d["runs"]:
        for e in run["per_epoch"]:
            p = e["precise_bn"]
            v = {"pop": p["ema_acc"], "batch": p["train_mode_acc"],
                 "precise": p["precise_acc"][-1] if p["precise_acc"] else p["ema_acc"]}[key]
            out.setdefault(e["epoch"], []).append(100 * v)
    return out


def fmt(vs: list[float]) -> str:
    return f"{mean(vs):6.2f} [" + " ".join(f"{v:.2f}" for v in vs) + "]"


def main() -> None:
    packs = load(Path(sys.argv[1]))
    by_arm = {arm_of(d): (name, d) for name, d in packs.items()}
    print("## accuracy per epoch (%, mean [seeds])")
    for (norm, perm, batch, eps), (name, d) in sorted(by_arm.items(), key=lambda kv: kv[1][0]):
        print(f"\n### {name}: norm={norm} permuted={perm} batch={batch} eps={eps} seeds={d['seeds']}, "
              f"wall {d['wall_seconds'] / 60:.1f} min")
        secs = [h["epoch_seconds"] / h["pack_size"] for r in d["runs"] for h in r["history"]]
        ev = [h["eval_seconds"] / h["pack_size"] for r in d["runs"] for h in r["history"]]
        probe = [e["probe_seconds"] for e in d["runs"][0]["per_epoch"]]
        print(f"training s per run-epoch: median {median(secs):.1f} (min {min(secs):.1f}); evaluation "
              f"{median(ev):.1f}; probes per probed epoch (pack) {median(probe):.0f}")
        pop, bat, pre = series(d, "pop"), series(d, "batch"), series(d, "precise")
        for ep in sorted(pop):
            line = f"epoch {ep:2d}: pop {fmt(pop[ep])}"
            if norm.startswith("batch") and ep in bat:
                line += f" | batch {fmt(bat[ep])} | precise {fmt(pre[ep])}"
            print(line)
    print("\n## minus the LSTM of the same order and batch (points; difference of seed means)")
    for (norm, perm, batch, eps), (name, d) in sorted(by_arm.items(), key=lambda kv: kv[1][0]):
        base = by_arm.get(("none", perm, batch, "1e-05"))
        if norm == "none" or base is None:
            continue
        lstm = series(base[1], "pop")
        rows = {k: series(d, k) for k in ("pop", "batch", "precise")}
        print(f"\n### {name} minus {base[0]}")
        for ep in sorted(rows["pop"]):
            if ep not in lstm:
                continue
            parts = [f"{k} {mean(rows[k][ep]) - mean(lstm[ep]):+6.2f}" for k in rows
                     if ep in rows[k] and (k == "pop" or norm.startswith("batch"))]
            print(f"epoch {ep:2d}: " + " | ".join(parts))
        print("pilot rule (statistic at 2B minus at B; |.| < 0.5 point, half C16's margin):")
        for b in sorted(rows["pop"]):
            if 2 * b in rows["pop"] and b in lstm and 2 * b in lstm:
                parts = [f"{k} {(mean(rows[k][2 * b]) - mean(lstm[2 * b])) - (mean(rows[k][b]) - mean(lstm[b])):+6.2f}"
                         for k in rows if b in rows[k] and 2 * b in rows[k] and (k == "pop" or norm.startswith("batch"))]
                print(f"  B={b}: " + " | ".join(parts))
    print("\n## LSTM and LN-LSTM on their own: statistic at 2B minus at B (points)")
    for (norm, perm, batch, eps), (name, d) in sorted(by_arm.items(), key=lambda kv: kv[1][0]):
        s = series(d, "precise" if norm.startswith("batch") else "pop")
        print(f"{name}: " + "; ".join(f"B={b} {mean(s[2 * b]) - mean(s[b]):+.2f}" for b in sorted(s) if 2 * b in s))
    print("\n## BN-LSTM per step at the last probed epoch (first seed): running_var min/median, fraction below eps, "
          "normalized-input RMS on the test set; EMA | precise")
    for (norm, perm, batch, eps), (name, d) in sorted(by_arm.items(), key=lambda kv: kv[1][0]):
        if not norm.startswith("batch"):
            continue
        last = d["runs"][0]["per_epoch"][-1]
        p = last["precise_bn"]
        print(f"\n### {name} (epoch {last['epoch']}); eps {p['step_variances']['ema']['eps']}")
        for n in STEP_NORMS:
            for which in ("ema", "precise"):
                v = p["step_variances"][which][n]
                z = p["step_z_rms"][which][n]
                print(f"{n} {which:7s} below-eps " + " ".join(f"{b:.2f}" for b in v["below_eps"][:6]) + " ... "
                      + " ".join(f"{b:.2f}" for b in v["below_eps"][-3:]))
                print(f"{n} {which:7s} min       " + " ".join(f"{b:.0e}" for b in v["min"][:6]) + " ... "
                      + " ".join(f"{b:.0e}" for b in v["min"][-3:]))
                print(f"{n} {which:7s} z rms     " + " ".join(f"{b:.3g}" for b in z[:8]) + " ... "
                      + " ".join(f"{b:.3g}" for b in z[-3:]))
        for r in d["runs"]:
            e = r["per_epoch"][-1]
            if "first_steps_batch_acc" in e:
                print(f"seed {r['seed']}: precise by sample size {[round(100 * a, 2) for a in e['precise_bn']['precise_acc']]}; "
                      f"batch statistics at the first k steps only: "
                      + ", ".join(f"k={k} {100 * a:.2f}" for k, a in e["first_steps_batch_acc"].items())
                      + f"; pop {100 * e['precise_bn']['ema_acc']:.2f}, batch {100 * e['precise_bn']['train_mode_acc']:.2f}")


if __name__ == "__main__":
    main()
