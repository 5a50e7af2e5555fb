"""The claims section: a computed verdict for each claim of the protocol.

`../shared/docs/protocol.md` lists the notebook's nine claims about BN and a
table C1..C15 of checkable claims, each with the experiment that tests it.
Every experiment is a preset (`conf/experiment/<name>.yaml`; `quick/<name>`
is its smoke-test variant) and every run records the preset it was launched
with (`experiment` in result.json). Each claim function reads the runs of
its preset(s) and returns a `ClaimResult`: the statistic, its value with a
95% interval over seeds, n, the verdict, the figure, and the literature
number it stands beside. Nothing here is typed in: a claim whose preset has
no runs is "not run" and says which command runs it.

The verdict rule (`VERDICT_RULE`, printed in the report) is one rule for
every claim: each claim is turned into a signed statistic whose expected
sign is stated beside it; the claim is *supported* when the 95% interval
lies entirely on the expected side, *not supported* when it lies entirely
on the other side, and *inconclusive* when it contains zero (or when there
are too few seeds for an interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pandas as pd

from analysis.collect import Collection
from analysis.stats import Difference, MeanInterval
from analysis.summary import Analysis

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN, OUT_OF_SCOPE = (
    "supported", "not supported", "inconclusive", "not run", "out of scope")

VERDICT_RULE = (
    "Each claim is measured as one signed statistic (the table says which, and which sign the "
    "claim expects) with a 95% interval over seeds (Student t for a mean, Welch for a difference of "
    "means). Supported: the whole interval is on the expected side of zero. Not supported: the whole "
    "interval is on the other side. Inconclusive: the interval contains zero, there are fewer than "
    "two seeds per arm (no interval), or every seed gave the same value (a zero-width interval says "
    "nothing about the spread). A claim whose runs are missing is 'not run'. The verdicts are "
    "computed from the runs each time the report is built.")


@dataclass
class ExperimentRuns:
    """The runs of one preset (`experiment` in their records), analyzed on their own."""

    name: str  # the preset, without a `quick/` prefix
    quick: bool  # the runs came from the quick/ variant
    records: list[dict[str, Any]]  # deduplicated result.json records
    analysis: Analysis  # summary.analyze over just these runs

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run (analysis.runs: config columns flattened, final metrics, status)."""
        return self.analysis.runs


@dataclass
class ClaimResult:
    claim: str  # "C5"
    title: str  # the claim in words, from the protocol's table
    verdict: str  # supported | not supported | inconclusive | not run
    statistic: str  # what was measured, with the sign the claim expects ("BN minus LayerNorm ..., expected > 0")
    value: Optional[float] = None  # the statistic
    low: Optional[float] = None  # its 95% interval
    high: Optional[float] = None
    unit: str = ""  # "points", "x", "steps", "log10", ...
    n: str = ""  # replicates, e.g. "3 seeds per arm"
    evidence: str = ""  # one or two sentences with the numbers behind the statistic
    figure: Optional[str] = None  # file name (in the report folder) of the figure it comes from
    experiment: str = ""  # the preset(s) whose runs it read
    literature: str = ""  # the published number it stands beside (from LITERATURE)
    details: list[str] = field(default_factory=list)  # per-setting lines (per batch size, per layer, ...)


def zero_width(low: Optional[float], high: Optional[float]) -> bool:
    """A finite interval with no width: identical values in every arm, not certainty."""
    return low is not None and high is not None and math.isfinite(low) and math.isfinite(high) and not high > low


def directional(low: float, high: float, expect_positive: bool = True) -> str:
    """The verdict rule for one interval of a statistic whose expected sign is given.

    stats gives a zero-width 95% interval when every seed of every arm has the
    same value (seeds that agree to the last digit, steps on a coarse probe
    grid, a largest stable lr on a decade grid): that is no evidence of a
    small spread, and it must not make a claim 'supported'.
    """
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if zero_width(low, high):
        return INCONCLUSIVE
    if (low > 0) if expect_positive else (high < 0):
        return SUPPORTED
    if (high < 0) if expect_positive else (low > 0):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def verdict_of(x: Difference | MeanInterval, expect_positive: bool = True) -> str:
    """The rule on a difference or a mean with its interval."""
    return directional(x.low, x.high, expect_positive)


ZERO_WIDTH_NOTE = ("The headline interval has zero width: every seed gave the same value, so the t interval "
                   "measures no spread (identical replicates, a discrete grid or a constant metric) and the rule "
                   "reads it as inconclusive")


def flag_zero_width(res: "ClaimResult") -> "ClaimResult":
    """Say in the evidence when the headline interval has zero width."""
    if zero_width(res.low, res.high) and ZERO_WIDTH_NOTE not in res.evidence:
        res.evidence = f"{res.evidence.rstrip('.')}. {ZERO_WIDTH_NOTE}."
    return res


def combine(verdicts: list[str]) -> str:
    """One verdict from several settings: all supported -> supported; all not -> not; else inconclusive."""
    vs = [v for v in verdicts if v not in (NOT_RUN, OUT_OF_SCOPE)]
    if not vs:
        return NOT_RUN
    if all(v == SUPPORTED for v in vs):
        return SUPPORTED
    if all(v == NOT_SUPPORTED for v in vs):
        return NOT_SUPPORTED
    return INCONCLUSIVE


# The protocol's literature numbers, one per claim (../shared/docs/protocol.md).
LITERATURE: dict[str, str] = {
    "C1": "no direct figure; Masters & Luschi 2018: best results at batch 2-32 when lr is tuned",
    "C2": "Bjorck et al. 2018 (ResNet-110, CIFAR-10): BN's benefit comes mainly from enabling larger "
          "learning rates",
    "C3": "Bjorck et al. 2018: at the same small learning rate the two are close; Tuning Playbook: "
          "tune the baseline's lr as well",
    "C4": "Ioffe & Szegedy 2015 (ImageNet): 14x fewer steps to 72.2% (with other changes); "
          "Shallue et al. 2018: steps to target fall as 1/B, then diminish, then plateau",
    "C5": "Wu & He 2018 (ResNet-50, ImageNet): BN top-1 error 23.6/23.7/24.8/27.3/34.7 at 32/16/8/4/2 "
          "images per GPU; GroupNorm 24.1/24.2/24.0/24.2/24.1",
    "C6": "Ioffe 2017 (Batch Renorm) and Wu & He 2018: small batches make BN's batch statistics "
          "inaccurate, so training and inference disagree",
    "C7": "Hoffer et al. 2017: the large-batch gap comes from fewer updates; ghost BN reduces it",
    "C8": "Ioffe & Szegedy 2015, fig. 1b,c: 15/50/85th percentiles of a last-hidden sigmoid input "
          "drift without BN and stay stable with BN",
    "C9": "Santurkar et al. 2018 (VGG, CIFAR-10): internal covariate shift is not smaller with BN",
    "C10": "Santurkar et al. 2018: loss variation, gradient change and effective beta-smoothness along "
           "the gradient are smaller with BN, by up to two orders of magnitude early in training",
    "C11": "Ioffe & Szegedy 2015 sec. 4.1 (3x100 sigmoid, batch 60, 50,000 steps): a public re-run "
           "reported 0.980 with BN vs 0.977 without",
    "C12": "Ioffe & Szegedy 2015: BN regularizes (dropout could be reduced); no MNIST figure",
    "C13": "Goyal et al. 2017 (ImageNet): lr proportional to batch size, with warm-up, holds to batch 8k",
    "C14": "measured on this project's trainer only; the notebook names the overhead without a number",
    "C15": "Ioffe & Szegedy 2015: BN prevents small parameter changes from amplifying through deep "
           "networks and lets saturating nonlinearities train",
}

# The protocol's table: claim -> (title, preset(s) that test it).
CLAIMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "C1": ("at a fixed lr and epoch budget BN's advantage grows with batch size", ("notebook",)),
    "C2": ("BN raises the largest stable learning rate", ("max_lr",)),
    "C3": ("with lr tuned per arm the gap shrinks", ("tune", "notebook")),
    "C4": ("BN needs fewer steps to a target accuracy", ("steps_to_target",)),
    "C5": ("small batches hurt BN but not LayerNorm/GroupNorm/no-norm", ("small_batch",)),
    "C6": ("train/inference discrepancy, worse under a shifted test set", ("shift",)),
    "C7": ("ghost BN at large batch recovers part of the small-batch result", ("ghost",)),
    "C8": ("BN stabilizes activation distributions", ("ioffe2015",)),
    "C9": ("BN does not reduce internal covariate shift", ("ics",)),
    "C10": ("BN smooths the loss landscape", ("landscape",)),
    "C11": ("the BN paper's sigmoid network replicates", ("ioffe2015", "notebook")),
    "C12": ("the regularizing effect needs long training", ("regularization",)),
    "C13": ("linear lr scaling holds over a range of batch sizes", ("linear_scaling",)),
    "C14": ("BN costs compute", ("overhead",)),
    "C15": ("vanishing/exploding gradients are mitigated", ("deep",)),
}

ClaimFn = Callable[[Mapping[str, ExperimentRuns], Path], ClaimResult]


def not_run(claim: str, why: str = "") -> ClaimResult:
    """The row of a claim whose preset(s) have no runs in this report."""
    title, presets = CLAIMS[claim]
    cmd = "; ".join(f"python study/run.py -m experiment={p}" for p in presets)
    return ClaimResult(claim=claim, title=title, verdict=NOT_RUN, statistic="",
                       evidence=(why or "no runs of its preset here") + f" (run: {cmd}, or python -m study.suite)",
                       experiment=", ".join(presets), literature=LITERATURE[claim])


QUICK_PREFIX = "quick/"
NO_PRESET = "(no preset)"  # runs launched without experiment=...


def preset_of(experiment: Any) -> tuple[str, bool]:
    """(preset name, quick variant?) of a record's `experiment` value."""
    raw = experiment if isinstance(experiment, str) and experiment else NO_PRESET
    quick = raw.startswith(QUICK_PREFIX)
    return (raw[len(QUICK_PREFIX):] if quick else raw), quick


def split_by_experiment(col: Collection) -> dict[str, ExperimentRuns]:
    """The runs of each preset, each analyzed on its own.

    Runs of `quick/<name>` count as `<name>`, but only where the full preset
    has no runs here (the two budgets are not pooled). Runs launched without
    a preset are grouped under NO_PRESET.
    """
    from analysis.summary import analyze

    keys = [preset_of(e) for e in (col.runs["experiment"] if "experiment" in col.runs else [None] * len(col.runs))]
    present = set(keys)
    out: dict[str, ExperimentRuns] = {}
    for name, quick in sorted(present):
        if quick and (name, False) in present:
            continue
        mask = [k == (name, quick) for k in keys]
        records = [r for r in col.records if preset_of(r.get("experiment")) == (name, quick)]
        sub = subset(col, mask, records)
        out[name] = ExperimentRuns(name=name, quick=quick, records=records, analysis=analyze(sub))
    return out


def subset(col: Collection, mask: list[bool], records: list[dict[str, Any]]) -> Collection:
    """A Collection of the runs selected by `mask` (and their records)."""
    runs = col.runs[mask].reset_index(drop=True).copy()
    # Config keys that only other presets' records have are not this preset's keys.
    config = [c for c in col.config_columns if c in runs.columns and runs[c].notna().any()]
    return Collection(runs=runs, history=col.history[col.history.run.isin(set(runs["run"]))].reset_index(drop=True),
                      records=records, config_columns=config, problems=[], sources=col.sources,
                      study_name=col.study_name, duplicates=[])


def save_figure(fig: Any, out: Path, claim: str) -> str:
    """Write a claim's figure as `claim_<id>.png` in `out`; returns the file name."""
    from analysis.figures import DPI

    out.mkdir(parents=True, exist_ok=True)
    name = f"claim_{claim.lower()}.png"
    fig.savefig(out / name, dpi=DPI)
    fig.clear()
    return name


def guarded(claim: str) -> Callable[[ClaimFn], ClaimFn]:
    """A claim function that never raises: data that trip an unforeseen case give an
    inconclusive row naming the error, not a crashed report. Also flags a zero-width
    headline interval in the evidence."""
    import functools
    import logging

    def wrap(fn: ClaimFn) -> ClaimFn:
        @functools.wraps(fn)
        def inner(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
            try:
                return flag_zero_width(fn(exps, Path(out)))
            except Exception as e:  # the report must still build; the row names the error
                logging.getLogger(__name__).exception("claim %s could not be computed", claim)
                title, presets = CLAIMS[claim]
                names = [f"quick/{p}" if p in exps and exps[p].quick else p for p in presets]
                return ClaimResult(claim=claim, title=title, verdict=INCONCLUSIVE, statistic="",
                                   evidence=f"the statistic could not be computed from these runs "
                                            f"({type(e).__name__}: {e})",
                                   experiment=", ".join(names), literature=LITERATURE[claim])
        return inner
    return wrap


# ------------------------------------------------------------------ C1
@guarded("C1")
def claim_c1(exps: Mapping[str, ExperimentRuns], out: Path) -> ClaimResult:
    """C1: BN minus no-norm test accuracy, largest batch minus smallest (lr fixed)."""
    from analysis.figures import fig_accuracy_vs_batch
    from analysis.stats import contrast

    exp = exps.get("notebook") or exps.get(NO_PRESET)
    title = CLAIMS["C1"][0]
    if exp is None:
        return not_run("C1")
    a = exp.analysis
    base = ClaimResult(claim="C1", title=title, verdict=INCONCLUSIVE,
                       statistic="BN minus no-norm test accuracy at the largest batch minus the same at the "
                                 "smallest, expected > 0", unit="points", experiment=exp.name,
                       literature=LITERATURE["C1"])
    if a.lr_varies or a.differences.empty or len(a.batch_sizes) < 2:
        base.evidence = "needs both norms at a fixed lr and two or more batch sizes"
        return base
    g = a.differences[a.differences.norm == "batch"].dropna(subset=["test_acc_diff"]).sort_values("batch_size")
    if len(g) < 2:
        base.evidence = "needs BN and no-norm runs at two or more batch sizes"
        return base
    lo, hi = g.iloc[0], g.iloc[-1]
    c = contrast(hi["_difference"], lo["_difference"])
    base.verdict = verdict_of(c)
    base.value, base.low, base.high = 100 * c.diff, 100 * c.low, 100 * c.high
    base.n = f"{int(min(g.n.min(), g.n_baseline.min()))} seeds per arm and batch size (at least)"
    base.details = [f"batch {int(r.batch_size)}: BN minus no norm {100 * r.test_acc_diff:+.2f} points "
                    f"({100 * r.low:+.2f} to {100 * r.high:+.2f})" for r in g.itertuples()]
    base.evidence = (f"lr {fmt_value(a.fixed.get('lr'))}, {fmt_value(a.fixed.get('epochs'))} epochs: BN minus no "
                     f"norm rises from {100 * lo.test_acc_diff:+.2f} points at batch {int(lo.batch_size)} to "
                     f"{100 * hi.test_acc_diff:+.2f} at batch {int(hi.batch_size)}")
    fig, _ = fig_accuracy_vs_batch(a)
    if fig is not None:
        base.figure = save_figure(fig, out, "C1")
    return base


def fmt_value(v: Any) -> str:
    from analysis.summary import fmt_value as f

    return f(v)


# ------------------------------------------------------------------ all claims
def claim_functions() -> dict[str, ClaimFn]:
    from analysis import claims_metrics as m
    from analysis import claims_probes as p

    return {"C1": claim_c1, "C2": m.claim_c2, "C3": m.claim_c3, "C4": m.claim_c4, "C5": m.claim_c5,
            "C6": p.claim_c6, "C7": m.claim_c7, "C8": p.claim_c8, "C9": p.claim_c9, "C10": p.claim_c10,
            "C11": m.claim_c11, "C12": m.claim_c12, "C13": m.claim_c13, "C14": m.claim_c14,
            "C15": p.claim_c15}


def evaluate_claims(exps: Mapping[str, ExperimentRuns], out: Path) -> list[ClaimResult]:
    """Every claim C1..C15, in order; figures are written into `out`. Each claim
    function is `guarded`: one claim's bad data cannot sink the report."""
    return [fn(exps, out) for fn in claim_functions().values()]


# The notebook's nine claims, each answered through the C rows that test it:
# +1 = that row supports the notebook's claim when it is supported, -1 = it
# contradicts it (C9: "BN does not reduce internal covariate shift").
NOTEBOOK_CLAIMS: tuple[tuple[int, str, tuple[tuple[str, int], ...]], ...] = (
    (1, "BN reduces internal covariate shift", (("C8", +1), ("C9", -1))),
    (2, "BN allows higher learning rates (more stable training)", (("C2", +1),)),
    (3, "BN speeds convergence", (("C4", +1), ("C11", +1))),
    (4, "BN regularizes (smaller train/test gap)", (("C12", +1),)),
    (5, "BN mitigates vanishing/exploding gradients", (("C15", +1),)),
    (6, "BN costs compute in training and inference", (("C14", +1),)),
    (7, "BN is sensitive to batch size (small batches give noisy statistics)", (("C5", +1), ("C1", +1))),
    (8, "BN's train/inference discrepancy, worse under a distribution shift", (("C6", +1),)),
    (9, "BN fits recurrent models poorly", ()),
)
FLIP = {SUPPORTED: NOT_SUPPORTED, NOT_SUPPORTED: SUPPORTED}


def notebook_verdicts(results: list[ClaimResult]) -> list[dict[str, str]]:
    """The notebook's claims, each with the verdict its C rows give it."""
    by_id = {r.claim: r for r in results}
    rows = []
    for number, text, links in NOTEBOOK_CLAIMS:
        if not links:
            rows.append({"#": str(number), "notebook claim": text, "verdict": OUT_OF_SCOPE,
                         "from": "out of scope: this study trains MLPs on MNIST, no recurrent model",
                         "figures": "-"})
            continue
        parts, verdicts, figures = [], [], []
        for cid, sign in links:
            r = by_id.get(cid)
            v = r.verdict if r is not None else NOT_RUN
            verdicts.append(FLIP.get(v, v) if sign < 0 else v)
            number_ = f": {format_value(r)}, n = {r.n}" if r is not None and r.verdict != NOT_RUN else ""
            parts.append(f"{cid} {v}{' (read in reverse)' if sign < 0 else ''}{number_}")
            if r is not None and r.figure:
                figures.append(r.figure)
        rows.append({"#": str(number), "notebook claim": text, "verdict": combine(verdicts),
                     "from": "; ".join(parts), "figures": ", ".join(figures) or "-"})
    return rows


def format_value(r: ClaimResult) -> str:
    def ok(x: Optional[float]) -> bool:
        return x is not None and isinstance(x, (int, float)) and math.isfinite(x)

    if not ok(r.value):
        return "n/a"
    unit = f" {r.unit}" if r.unit else ""
    iv = f" [{r.low:+.3g}, {r.high:+.3g}]" if ok(r.low) and ok(r.high) else " (no interval)"
    return f"{r.value:+.3g}{unit}{iv}"


def claims_table(results: list[ClaimResult]) -> pd.DataFrame:
    return pd.DataFrame([{
        "claim": f"{r.claim}: {r.title}", "verdict": r.verdict, "statistic (expected sign)": r.statistic or "-",
        "measured [95% CI]": format_value(r), "n": r.n or "-", "preset": r.experiment or "-",
        "figure": r.figure or "-", "literature": r.literature,
    } for r in results])
