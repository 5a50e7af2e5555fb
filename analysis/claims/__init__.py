"""The claims: one module per claim of the protocol, and this registry.

`../shared/docs/protocol.md` lists the notebook's nine claims about BN and a
table C1..C18 of checkable claims, each with the experiment that tests it
(C16, recurrent nets, is four rows C16..C16d, one per question, from one
module); C19 (input scaling) is a finding of this study beyond that table.
Every experiment is a preset (`conf/experiment/<name>.yaml`; `quick/<name>`
is its smoke-test variant) and every run records the preset it was launched
with (`experiment` in result.json).

`CLAIMS` is that table and the one map of claims to presets: the suite
(`python -m study.suite`) runs the presets named here, in this order, and the
report evaluates each claim on the runs of its presets. A claim's module
`analysis/claims/<module>.py` holds

- `LITERATURE`: the published number its statistic stands beside;
- `evaluate(runs, out) -> ClaimResult`: selection (`runs.need("<preset>")`;
  a preset without runs makes the claim "not run") -> statistic -> verdict
  (`rule.verdict_of`, the one rule, with the claim's margin) -> prose ->
  figure (a helper of the module, saved as `out/claim_<id>.png`);
- where the row says `plain_sweep=True`, `tests_plain_sweep(exp)`: whether a
  sweep launched without a preset has what the claim compares, so that it
  stands in for the claim's first preset (a plain `batch_size=8,64,512`
  sweep answers C1 in its own report);
- where the row says `conv=True` (C2..C5), the claim reads the conv-net
  variants of its presets (`conv_variant`: `cnn_max_lr` for `max_lr`)
  where its first preset did not run, and says so in its evidence.

Add a claim: write its module with those three names (from rule.py, the
verdict rule; runs.py, the run selection and the guard; result.py, the
result; plots.py, the figure parts; analysis/text.py, numbers in words),
add its row here, its preset `conf/experiment/<name>.yaml` and a
`quick/<name>.yaml`, and a test that builds records for it
(tests/test_claims_*.py).

Importing this package is cheap (no pandas, no matplotlib): study/suite.py
reads the registry; the claim modules load when claims are evaluated.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional

if TYPE_CHECKING:
    from analysis.claims.result import ClaimResult
    from analysis.claims.runs import ExperimentRuns


@dataclass(frozen=True)
class Claim:
    id: str  # "C5"
    title: str  # the claim in words, as the protocol's table has it
    presets: tuple[str, ...]  # the presets whose runs it reads (conf/experiment/<name>.yaml)
    module: str  # analysis/claims/<module>.py
    margin: float  # the smallest effect that matters, in the statistic's unit (docs/claims.md says why each)
    plain_sweep: bool = False  # a sweep without a preset may stand in for presets[0] (module.tests_plain_sweep)
    suite_grid: tuple[str, ...] = ()  # overrides the full suite adds to presets[0] (a quick/ preset sets its own)
    conv: bool = False  # where presets[0] did not run, its conv-net variants (conv_variant) are read instead


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "at a fixed lr and epoch budget BN's advantage grows with batch size", ("notebook",),
          "c01_batch_size", margin=1.0, plain_sweep=True, suite_grid=("batch_size=8,64,512",)),
    Claim("C2", "BN raises the largest stable learning rate", ("max_lr",),
          "c02_stable_lr", margin=0.5, plain_sweep=True, conv=True),
    Claim("C3", "with lr tuned per arm the gap shrinks", ("tune", "tune_reference"), "c03_tuned_gap", margin=1.0,
          suite_grid=("batch_size=8,64,512",), conv=True),
    Claim("C4", "BN needs fewer steps to a target accuracy", ("steps_to_target",), "c04_steps_to_target", margin=0.1,
          conv=True),
    Claim("C5", "small batches hurt BN but not LayerNorm/GroupNorm/no-norm", ("small_batch",),
          "c05_small_batch", margin=2.0, conv=True),
    Claim("C6", "train/inference discrepancy, worse under a shifted test set", ("shift",),
          "c06_train_inference", margin=1.0),
    Claim("C7", "ghost BN at large batch recovers part of the small-batch result", ("ghost",),
          "c07_ghost_batch", margin=0.5),
    Claim("C8", "BN stabilizes activation distributions", ("ioffe2015",), "c08_activation_drift", margin=0.1),
    Claim("C9", "BN does not reduce internal covariate shift", ("ics",), "c09_covariate_shift", margin=0.05),
    Claim("C10", "BN smooths the loss landscape", ("landscape",), "c10_landscape", margin=0.1),
    Claim("C11", "the BN paper's sigmoid network replicates", ("ioffe2015",), "c11_sigmoid_net", margin=0.5),
    Claim("C12", "BN regularizes (a smaller train/test gap) once both arms fit the training set", ("regularization",), "c12_regularization", margin=0.5),
    Claim("C13", "linear lr scaling holds over a range of batch sizes", ("linear_scaling",),
          "c13_linear_scaling", margin=25.0),
    Claim("C14", "BN costs compute", ("overhead",), "c14_cost", margin=5.0, plain_sweep=True),
    Claim("C15", "vanishing/exploding gradients are mitigated", ("deep",), "c15_deep_gradients", margin=0.25),
    # Beyond the MLP (protocol: C16 recurrent, one row per question; C17 conv).
    Claim("C16", "BN helps the LSTM's accuracy (row and permuted MNIST)", ("rnn", "rnn_permuted", "rnn_eps"),
          "c16_recurrent", margin=1.0),
    Claim("C16b", "BN costs the LSTM compute per step", ("rnn",), "c16_recurrent", margin=5.0),
    Claim("C16c", "BN-LSTM's train/eval discrepancy is larger at small batch", ("rnn_small_batch",),
          "c16_recurrent", margin=1.0),
    Claim("C16d", "LayerNorm does as well as BN in the LSTM", ("rnn", "rnn_permuted"), "c16_recurrent", margin=0.5),
    Claim("C17", "BN's accuracy advantage at C1's fixed budget carries to conv nets (BatchNorm2d)", ("cnn",), "c17_conv_net", margin=0.25,
          plain_sweep=True),
    Claim("C18", "statistics recomputed with frozen weights (precise BN) match or beat the moving averages",
          ("precise_bn",), "c18_precise_bn", margin=0.25),
    # A finding beyond the protocol's table: the notebook scales pixels to [-1, 1], the usual recipe to mean 0.
    Claim("C19", "BN makes the network insensitive to input scaling", ("input_scaling",),
          "c19_input_scaling", margin=0.5),
)
BY_ID: dict[str, Claim] = {c.id: c for c in CLAIMS}

# The replication seed set: `python -m study.suite --replicate` reruns every preset with each of its seeds
# plus this offset, so the two sets are disjoint and the report tells them apart by the seed alone.
REPLICATION_SEED = 1000
REPLICATION_DIR = "replication"  # the replication's claim figures, inside the report folder


def conv_variant(preset: str) -> str:
    """The conv-net variant of an MLP preset (conf/experiment/cnn_<preset>.yaml; `cnn` for the notebook's).

    A claim with `conv=True` reads these where its first preset did not run,
    so that the report of e.g. `python study/run.py -m experiment=cnn_max_lr`
    gives C2's verdict on the conv net. The suite runs only the MLP presets
    of C1..C5 (the conv net's row is C17)."""
    # C3's fixed-lr reference on the conv net is the cnn preset (all 60,000 images, as the notebook's), not a
    # reference on tune's split: the conv-net reading of C3 still compares two splits (docs/claims.md).
    return "cnn" if preset in ("notebook", "tune_reference") else f"cnn_{preset}"


def in_replication(seed: object) -> bool:
    """Whether a run's seed belongs to the replication set (an int seed >= REPLICATION_SEED)."""
    try:
        return int(seed) >= REPLICATION_SEED  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def suite_presets() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(preset, overrides of the full suite) for every preset a claim reads, in claim order, each once."""
    out: dict[str, tuple[str, ...]] = {}
    for c in CLAIMS:
        for i, p in enumerate(c.presets):
            extra = c.suite_grid if i == 0 else ()
            out[p] = (*out.get(p, ()), *(x for x in extra if x not in out.get(p, ())))
    return tuple(out.items())


def evaluate_claim(claim_id: str, exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    """One claim on the runs in `exps` (preset -> runs); its figure goes into `out`. Never raises."""
    from analysis.claims.runs import NO_PRESET, ClaimRuns, guarded

    claim = BY_ID[claim_id]
    module = importlib.import_module(f"analysis.claims.{claim.module}")
    runs = ClaimRuns(claim, exps, module.LITERATURE)

    def evaluate(runs: ClaimRuns, out: Path) -> ClaimResult:
        first = claim.presets[0]
        if claim.conv and first not in exps and conv_variant(first) in exps:
            runs.aliases = {p: conv_variant(p) for p in claim.presets}
        plain = exps.get(NO_PRESET)
        if claim.plain_sweep and claim.presets[0] not in exps and plain is not None and module.tests_plain_sweep(plain):
            runs.stand_in = plain
        return module.evaluate(runs, out)

    return guarded(evaluate, runs, out)


def evaluate_claims(exps: Mapping[str, ExperimentRuns], out: Path,
                    replication: Optional[Mapping[str, ExperimentRuns]] = None) -> list[ClaimResult]:
    """Every claim of CLAIMS, in order; figures are written into `out`. With `replication` (the runs of the
    replication seed set), each result carries the same claim on those runs (figures in out/replication)."""
    results = [evaluate_claim(c.id, exps, out) for c in CLAIMS]
    if replication:
        for r in results:
            r.replication = evaluate_claim(r.claim, replication, Path(out) / REPLICATION_DIR)
    return results
