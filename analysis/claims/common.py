"""What every claim shares, written once: its result, the one verdict rule,
the runs it reads, numbers in words, and its figure.

A claim module (`cNN_<what>.py`) reads the runs of its preset(s) through
`ClaimRuns` (`runs.need("max_lr")`), computes one signed statistic with a 95%
interval over seeds (`analysis.stats`), takes its verdict from `verdict_of`
(the rule below, `VERDICT_RULE`), words it, and draws one figure
(`draw`, saved as `claim_cN.png`). The registry (`analysis.claims`) runs it
under `guarded`: a claim never raises into the report.

Conventions of the claims that compare accuracies (each result's evidence
repeats the ones that apply): a diverged run has no final accuracy and counts
at chance (CHANCE_ACC): a model whose weights went non-finite predicts no
better than chance, and leaving it out would credit the arm that blew up with
its surviving seeds. Failed and pruned runs are left out and counted. A claim
checked per setting (batch size, ghost size, ...) takes its verdict from
`combine` over the settings; its headline value is the least favourable
setting's (`headline`), so that a supported claim's headline interval is
itself clear of zero; `details` lists every setting.
"""

from __future__ import annotations

import logging
import math
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional

import matplotlib

matplotlib.use("Agg")  # no display where a report is built

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from analysis.collect import Collection, finite, num  # noqa: E402
from analysis.figures import DPI, grid, log2_batch_axis, palette  # noqa: E402,F401 (log2_batch_axis: for the claims)
from analysis.stats import Difference, MeanInterval, interval_bounds, scaled  # noqa: E402,F401 (scaled: for the claims)
from analysis.summary import Analysis, analyze, norm_name, norm_order  # noqa: E402

if TYPE_CHECKING:
    from analysis.claims import Claim

# ------------------------------------------------------------------ the verdict rule
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_RUN, OUT_OF_SCOPE = (
    "supported", "not supported", "inconclusive", "not run", "out of scope")
NO_EFFECT = "no meaningful effect"  # the equivalence verdict: the whole interval inside +-the claim's margin
NOT_REPLICATED = "not replicated"  # the two seed sets of a claim gave different verdicts

VERDICT_RULE = (
    "Each claim is measured as one signed statistic (the table says which, and which sign the "
    "claim expects) with a 95% interval over seeds (Student t for a mean, Welch for a difference of "
    "means), and has a margin: the smallest effect that matters for it, in the statistic's unit, fixed "
    "before the runs (docs/claims.md says why each). No meaningful effect: the whole interval lies inside "
    "plus or minus the margin. Otherwise supported: the whole interval is on the expected side of zero; "
    "not supported: the whole interval is on the other side; inconclusive: the interval contains zero "
    "(the row then says how large an effect the data still allow), there are fewer than two seeds per "
    "arm (no interval), or every seed gave the same value (a zero-width interval says nothing about "
    "the spread). A claim checked per setting (batch size, ...) gets a verdict only where every setting "
    "gives the same one. A claim whose runs are missing is 'not run'. With a replication (python -m "
    "study.suite --replicate: every preset again on a disjoint seed set) a claim is settled only where "
    "both seed sets give the same verdict; otherwise it reads 'not replicated' with both verdicts shown. "
    "The verdicts are computed from the runs each time the report is built.")

ZERO_WIDTH_NOTE = ("The headline interval has zero width: every seed gave the same value, so the t interval "
                   "measures no spread (identical replicates, a discrete grid or a constant metric) and the rule "
                   "reads it as inconclusive")


def zero_width(low: Optional[float], high: Optional[float]) -> bool:
    """A finite interval with no width: identical values in every arm, not certainty."""
    return low is not None and high is not None and math.isfinite(low) and math.isfinite(high) and not high > low


# The margin (smallest effect that matters, Claim.margin) of the claim being evaluated. `guarded` sets it
# for the duration of one claim's `evaluate`, so that every verdict the claim's module takes through
# `verdict_of`/`directional`, one per setting included, is judged against that claim's own margin.
_MARGIN: ContextVar[Optional[float]] = ContextVar("claim_margin", default=None)


def within_margin(low: Optional[float], high: Optional[float], margin: Optional[float]) -> bool:
    """The whole interval inside (-margin, +margin): no effect that matters."""
    return (margin is not None and low is not None and high is not None and math.isfinite(low)
            and math.isfinite(high) and -margin < low and high < margin)


def directional(low: Optional[float], high: Optional[float], expect_positive: bool = True) -> str:
    """The verdict rule for one interval of a statistic whose expected sign is given (and, while a claim is
    evaluated, that claim's margin: an interval inside +-margin is 'no meaningful effect').

    stats gives a zero-width 95% interval when every seed of every arm has the
    same value (seeds that agree to the last digit, steps on a coarse probe
    grid, a largest stable lr on a decade grid): that is no evidence of a
    small spread, and it must not make a claim 'supported'.
    """
    if low is None or high is None or math.isnan(low) or math.isnan(high) or zero_width(low, high):
        return INCONCLUSIVE
    if within_margin(low, high, _MARGIN.get()):
        return NO_EFFECT
    if (low > 0) if expect_positive else (high < 0):
        return SUPPORTED
    if (high < 0) if expect_positive else (low > 0):
        return NOT_SUPPORTED
    return INCONCLUSIVE


def verdict_of(x: Difference | MeanInterval, expect_positive: bool = True) -> str:
    """The rule on a difference or a mean with its interval."""
    return directional(x.low, x.high, expect_positive)


def combine(verdicts: Iterable[str]) -> str:
    """One verdict from several settings: the verdict every setting gives (supported, not supported, no
    meaningful effect), else inconclusive."""
    vs = [v for v in verdicts if v not in (NOT_RUN, OUT_OF_SCOPE)]
    if not vs:
        return NOT_RUN
    for v in (SUPPORTED, NOT_SUPPORTED, NO_EFFECT):
        if all(x == v for x in vs):
            return v
    return INCONCLUSIVE


def headline(settings: list[tuple[str, Any, str]], expect_positive: bool = True) -> tuple[str, Any]:
    """(label, interval) of the least favourable setting: lowest low bound (expected > 0), highest high bound
    (expected < 0). `settings` holds (label, Difference or MeanInterval, verdict)."""
    def key(s: tuple[str, Any, str]) -> float:
        bound = s[1].low if expect_positive else -s[1].high
        return bound if math.isfinite(bound) else -math.inf
    label, d, _ = min(settings, key=key)
    return label, d


# ------------------------------------------------------------------ the result
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
    literature: str = ""  # the published number it stands beside (the claim module's LITERATURE)
    details: list[str] = field(default_factory=list)  # per-setting lines (per batch size, per layer, ...)
    margin: Optional[float] = None  # the smallest effect that matters, in `unit` (Claim.margin)
    seeds: Optional[int] = None  # replicates behind the headline interval (the smaller arm's)
    replication: Optional["ClaimResult"] = None  # the same claim on the disjoint replication seed set

    @property
    def bound(self) -> Optional[float]:
        """The largest effect (either sign) the 95% interval still allows: max(|low|, |high|)."""
        if self.low is None or self.high is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            return None
        return max(abs(self.low), abs(self.high))

    @property
    def settled(self) -> str:
        """The verdict the report stands by: this seed set's, unless a replication gave another one."""
        if self.replication is None or self.replication.verdict == NOT_RUN or self.verdict == NOT_RUN:
            return self.verdict
        return self.verdict if self.replication.verdict == self.verdict else NOT_REPLICATED

    @property
    def agreement(self) -> str:
        """'yes' / 'no' where both seed sets ran, '-' otherwise."""
        if self.replication is None or NOT_RUN in (self.verdict, self.replication.verdict):
            return "-"
        return "yes" if self.replication.verdict == self.verdict else "no"


def flag_zero_width(res: ClaimResult) -> ClaimResult:
    """Say in the evidence when the headline interval has zero width."""
    if zero_width(res.low, res.high) and ZERO_WIDTH_NOTE not in res.evidence:
        res.evidence = f"{res.evidence.rstrip('.')}. {ZERO_WIDTH_NOTE}."
    return res


def _bounds(x: Difference | MeanInterval) -> tuple[Optional[float], ...]:
    v = x.diff if isinstance(x, Difference) else x.mean
    return tuple(float(b) if b is not None and math.isfinite(b) else None for b in (v, x.low, x.high))


def _replicates(x: Difference | MeanInterval) -> int:
    """The replicates behind an interval: n of a mean, the smaller arm's n of a difference."""
    return int(min(x.n_a, x.n_b)) if isinstance(x, Difference) else int(x.n)


def bound_note(res: ClaimResult) -> str:
    """What an interval that decides nothing still says: how large an effect it allows, against the margin."""
    unit = f" {res.unit}" if res.unit else ""
    if res.verdict == NO_EFFECT:
        return (f"The whole 95% interval lies within +-{res.margin:g}{unit}, the smallest effect that matters for "
                f"this claim: no meaningful effect")
    b = res.bound
    if res.verdict != INCONCLUSIVE or b is None or zero_width(res.low, res.high) or not res.low <= 0 <= res.high:
        return ""  # an interval clear of zero undecided only because the settings disagree: the details say
    margin = (f"; the smallest effect that matters here is {res.margin:g}{unit}, so the data cannot yet tell "
              f"a meaningful effect from none" if res.margin is not None and b >= res.margin else "")
    return (f"Bound: no effect larger than {b:.3g}{unit} in either direction is compatible with the data (95%; "
            f"the interval runs from {res.low:+.3g} to {res.high:+.3g}){margin}")


# ------------------------------------------------------------------ the runs of a preset
QUICK_PREFIX = "quick/"
NO_PRESET = "(no preset)"  # runs launched without experiment=...


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

    @property
    def label(self) -> str:
        return f"{QUICK_PREFIX if self.quick else ''}{self.name}"


def preset_of(experiment: Any) -> tuple[str, bool]:
    """(preset name, quick variant?) of a record's `experiment` value."""
    raw = experiment if isinstance(experiment, str) and experiment else NO_PRESET
    quick = raw.startswith(QUICK_PREFIX)
    return (raw[len(QUICK_PREFIX):] if quick else raw), quick


def split_by_experiment(col: Collection, replication: Optional[bool] = None) -> dict[str, ExperimentRuns]:
    """The runs of each preset, each analyzed on its own.

    Runs of `quick/<name>` count as `<name>`, but only where the full preset
    has no runs here (the two budgets are not pooled). Runs launched without
    a preset are grouped under NO_PRESET. `replication`: only the runs of
    the replication seed set (True: seeds >= REPLICATION_SEED), only the
    first set's (False), or all (None).
    """
    from analysis.claims import in_replication

    keys = [preset_of(e) for e in (col.runs["experiment"] if "experiment" in col.runs else [None] * len(col.runs))]
    if replication is not None:
        seeds = col.runs["seed"] if "seed" in col.runs else [None] * len(col.runs)
        keep = [in_replication(s) == replication for s in seeds]
        keys = [k if ok else None for k, ok in zip(keys, keep)]
    present = set(k for k in keys if k is not None)
    out: dict[str, ExperimentRuns] = {}
    for name, quick in sorted(present):
        if quick and (name, False) in present:
            continue
        mask = [k == (name, quick) for k in keys]
        records = [r for r in col.records if preset_of(r.get("experiment")) == (name, quick)
                   and (replication is None or in_replication(seed_of(r)) == replication)]
        out[name] = ExperimentRuns(name=name, quick=quick, records=records,
                                   analysis=analyze(subset(col, mask, records)))
    return out


def subset(col: Collection, mask: list[bool], records: list[dict[str, Any]]) -> Collection:
    """A Collection of the runs selected by `mask` (and their records)."""
    runs = col.runs[mask].reset_index(drop=True).copy()
    # Config keys that only other presets' records have are not this preset's keys.
    config = [c for c in col.config_columns if c in runs.columns and runs[c].notna().any()]
    # The tuning studies these runs belong to (a preset without a tuning sweep names none).
    here = set(runs["study"].dropna().astype(str)) if "study" in runs else set()
    tuning = {url: [n for n in names if n in here] for url, names in col.tuning_studies.items()}
    return Collection(runs=runs, history=col.history[col.history.run.isin(set(runs["run"]))].reset_index(drop=True),
                      records=records, config_columns=config, problems=[], sources=col.sources,
                      studies=col.studies, duplicates=[], tuning_studies={u: n for u, n in tuning.items() if n})


def runs_table(e: ExperimentRuns) -> pd.DataFrame:
    """A preset's run table with the columns every claim reads (NaN where absent), batch size and lr numeric."""
    df = e.runs.copy()
    for c in ("norm", "batch_size", "lr", "seed", "status", "val_acc", "test_acc"):
        if c not in df.columns:
            df[c] = np.nan
    df["batch_size"] = pd.to_numeric(df["batch_size"], errors="coerce")
    df["lr"] = pd.to_numeric(df["lr"], errors="coerce")
    return df


def families(exp: ExperimentRuns) -> set[str]:
    """The model families (`model.family`) of a preset's runs; records older than the key are MLPs."""
    df = exp.runs
    if "model.family" not in df:
        return {"mlp"}
    return {str(f) if isinstance(f, str) else "mlp" for f in df["model.family"]}


def column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series(np.nan, index=df.index, dtype=float)


class NotRun(Exception):
    """A preset the claim needs has no runs here (raised by `ClaimRuns.need`)."""


@dataclass
class ClaimRuns:
    """The runs one claim reads, and the frame of its result (claim, title, presets, literature)."""

    claim: Claim
    exps: Mapping[str, ExperimentRuns]  # every preset's runs in the report
    literature: str
    stand_in: Optional[ExperimentRuns] = None  # a sweep without a preset that tests the claim (Claim.plain_sweep)
    aliases: Mapping[str, str] = field(default_factory=dict)  # preset -> the conv-net preset read instead (Claim.conv)

    def get(self, preset: str) -> Optional[ExperimentRuns]:
        """The runs of `preset` (of its conv-net variant where `aliases` says so), or None; a plain sweep
        stands in for the claim's first preset."""
        e = self.exps.get(self.aliases.get(preset, preset))
        if e is None and preset == self.claim.presets[0]:
            return self.stand_in
        return e

    def need(self, preset: str) -> ExperimentRuns:
        """The runs of `preset`; without them the claim is 'not run'."""
        e = self.get(preset)
        if e is None:
            raise NotRun(preset)
        return e

    @property
    def experiment(self) -> str:
        """The presets it reads, as the table names them (quick/<name> where the runs came from the quick variant)."""
        return ", ".join(e.label if (e := self.get(p)) is not None else p for p in self.claim.presets)

    def result(self, verdict: str, statistic: str, *, interval: Difference | MeanInterval | None = None,
               **fields: Any) -> ClaimResult:
        """The claim's row; `interval` fills value, low and high (None where not finite)."""
        if interval is not None:
            fields["value"], fields["low"], fields["high"] = _bounds(interval)
            fields.setdefault("seeds", _replicates(interval))
        if self.aliases and fields.get("evidence"):
            fields["evidence"] = f"On the conv net (model=cnn): {fields['evidence']}"
        fields.setdefault("experiment", self.experiment)
        fields.setdefault("margin", self.claim.margin)
        return ClaimResult(claim=self.claim.id, title=self.claim.title, verdict=verdict, statistic=statistic,
                           literature=self.literature, **fields)

    def inconclusive(self, statistic: str, why: str, **fields: Any) -> ClaimResult:
        return self.result(INCONCLUSIVE, statistic, evidence=why, **fields)

    def not_run(self, why: str = "") -> ClaimResult:
        presets = [self.aliases.get(p, p) for p in self.claim.presets]
        cmd = "; ".join(f"python study/run.py -m experiment={p}" for p in presets)
        return self.result(NOT_RUN, "", experiment=", ".join(presets),
                           evidence=(why or "no runs of its preset here") + f" (run: {cmd}, or python -m study.suite)")


def guarded(fn: Callable[[ClaimRuns, Path], ClaimResult], runs: ClaimRuns, out: Path) -> ClaimResult:
    """`fn(runs, out)` under the claim's margin, never raising: a missing preset gives a 'not run' row; data
    that trip an unforeseen case give an inconclusive row naming the error, not a crashed report. Also flags
    a zero-width headline interval and states the bound of an undecided one in the evidence."""
    token = _MARGIN.set(runs.claim.margin)
    try:
        res = flag_zero_width(fn(runs, Path(out)))
    except NotRun as e:
        return runs.not_run(f"no runs of preset {e} here")
    except Exception as e:  # the report must still build; the row names the error
        logging.getLogger(__name__).exception("claim %s could not be computed", runs.claim.id)
        return runs.inconclusive("", f"the statistic could not be computed from these runs ({type(e).__name__}: {e})")
    finally:
        _MARGIN.reset(token)
    note = bound_note(res)
    if note and note not in res.evidence:
        res.evidence = f"{res.evidence.rstrip('. ')}. {note}."
    return res


# ------------------------------------------------------------------ reading records
def config_of(r: dict[str, Any]) -> dict[str, Any]:
    c = r.get("config")
    return c if isinstance(c, dict) else {}


def norm_of(r: dict[str, Any]) -> Any:
    m = config_of(r).get("model")
    return m.get("norm") if isinstance(m, dict) else None


def seed_of(r: dict[str, Any]) -> Any:
    return r.get("seed", config_of(r).get("seed"))


def val_series(r: dict[str, Any]) -> tuple[list[tuple[float, float]], str]:
    """(step, val_acc) pairs from the val_acc probe, else from the per-epoch history; and which."""
    probes = r.get("probes")
    series = probes.get("series") if isinstance(probes, dict) else None
    pts = [(float(s["step"]), float(s["val_acc"])) for s in (series if isinstance(series, list) else [])
           if isinstance(s, dict) and finite(s.get("step")) and finite(s.get("val_acc"))]
    if pts:
        return sorted(pts), "probe"
    hist = r.get("history") if isinstance(r.get("history"), list) else []
    pts = [(float(h["step"]), float(h["val_acc"])) for h in hist
           if isinstance(h, dict) and finite(h.get("step")) and finite(h.get("val_acc"))]
    return sorted(pts), ("history" if pts else "none")


# ------------------------------------------------------------------ accuracies and intervals
CHANCE_ACC = 0.1  # accuracy a diverged run counts at where accuracies are compared (ten classes)
DIVERGED_NOTE = f"A diverged run counts at chance accuracy ({CHANCE_ACC:.0%}); failed and pruned runs are left out"


def acc_values(g: pd.DataFrame, metric: str, scale: float = 100.0) -> tuple[list[float], int, int]:
    """Per-run accuracies in points (completed: the metric; diverged: chance); (values, n diverged, n left out)."""
    vals: list[float] = []
    diverged = left_out = 0
    for status, v in zip(g["status"], column(g, metric)):
        if status == "completed" and finite(v):
            vals.append(scale * float(v))
        elif status == "diverged":
            vals.append(scale * CHANCE_ACC)
            diverged += 1
        else:
            left_out += 1
    return vals, diverged, left_out


def counts_note(diverged: int, left_out: int) -> str:
    parts = []
    if diverged:
        parts.append(f"{diverged} diverged run{'s' if diverged != 1 else ''} counted at chance")
    if left_out:
        parts.append(f"{left_out} failed/pruned/incomplete run{'s' if left_out != 1 else ''} left out")
    return f" ({'; '.join(parts)})" if parts else ""


# ------------------------------------------------------------------ numbers in words
def signed(x: Any, digits: int = 2) -> str:
    """+1.23; n/a where not a finite number."""
    return f"{num(x):+.{digits}f}" if finite(x) else "n/a"


def short(x: Any) -> str:
    """Three significant digits; n/a where not a finite number."""
    return f"{num(x):.3g}" if finite(x) else "n/a"


def count(x: Any) -> str:
    """A step or other count with thousands separators; n/a where not a finite number."""
    return f"{num(x):,.0f}" if finite(x) else "n/a"


def with_interval(v: float, lo: float, hi: float, unit: str = " points", digits: int = 2) -> str:
    """'+1.23 points (+0.50 to +1.96)'; the missing interval said in words."""
    if not math.isfinite(v):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{v:+.{digits}f}{unit} (no interval: fewer than two seeds)"
    return f"{v:+.{digits}f}{unit} ({lo:+.{digits}f} to {hi:+.{digits}f})"


def diff_text(d: Difference, unit: str = " points", digits: int = 2) -> str:
    return with_interval(d.diff, d.low, d.high, unit, digits)


def bracketed(x: Difference | MeanInterval, digits: int = 2) -> str:
    """'+1.23 [+0.50, +1.96] (n=3)' for a mean, '(n=3, 3)' for a difference of two arms."""
    v, n = (x.diff, f"{x.n_a}, {x.n_b}") if isinstance(x, Difference) else (x.mean, str(x.n))
    iv = (f"[{x.low:+.{digits}f}, {x.high:+.{digits}f}]" if math.isfinite(x.low) and math.isfinite(x.high)
          else "no interval")
    return f"{signed(v, digits)} {iv} (n={n})"


def n_text(counts: Iterable[int], what: str = "seeds per arm") -> str:
    """'3 seeds per arm', '2 to 3 seeds per arm'."""
    c = [int(x) for x in counts if x]
    if not c:
        return f"0 {what}"
    lo, hi = min(c), max(c)
    return f"{lo} {what}" if lo == hi else f"{lo} to {hi} {what}"


def format_value(r: ClaimResult) -> str:
    """The statistic with its interval, for the tables."""
    def ok(x: Optional[float]) -> bool:
        return x is not None and isinstance(x, (int, float)) and math.isfinite(x)

    if not ok(r.value):
        return "n/a"
    unit = f" {r.unit}" if r.unit else ""
    iv = f" [{r.low:+.3g}, {r.high:+.3g}]" if ok(r.low) and ok(r.high) else " (no interval)"
    return f"{r.value:+.3g}{unit}{iv}"


def format_margin(r: ClaimResult) -> str:
    return f"+-{r.margin:g}{' ' + r.unit if r.unit else ''}" if r.margin is not None else "-"


def format_replication(r: ClaimResult) -> str:
    """The replication seed set's verdict and value, for the tables."""
    rep = r.replication
    if rep is None or rep.verdict == NOT_RUN:
        return "not run"
    return f"{rep.verdict}: {format_value(rep)} (n={rep.seeds if rep.seeds is not None else '-'})"


def claims_table(results: list[ClaimResult]) -> pd.DataFrame:
    """The claims table: the settled verdict first; with a replication, both seed sets' verdicts and numbers."""
    replicated = any(r.replication is not None for r in results)

    def row(r: ClaimResult) -> dict[str, str]:
        out = {"claim": f"{r.claim}: {r.title}", "verdict": r.settled, "statistic (expected sign)": r.statistic or "-"}
        if replicated:
            out["first seed set [95% CI]"] = f"{r.verdict}: {format_value(r)}" if r.verdict != NOT_RUN else NOT_RUN
            out["replication [95% CI]"] = format_replication(r)
            out["agree"] = r.agreement
        else:
            out["measured [95% CI]"] = format_value(r)
        return {**out, "margin": format_margin(r), "n": r.n or "-", "preset": r.experiment or "-",
                "figure": r.figure or "-", "literature": r.literature}

    return pd.DataFrame([row(r) for r in results])


# ------------------------------------------------------------------ figures
def save_figure(fig: Figure, out: Path, claim: str) -> str:
    """Write a claim's figure as `claim_<id>.png` in `out`; returns the file name."""
    out.mkdir(parents=True, exist_ok=True)
    name = f"claim_{claim.lower()}.png"
    fig.savefig(out / name, dpi=DPI)
    fig.clear()
    return name


def draw(claim: str, out: Path, make: Callable[[], Optional[Figure]], details: list[str]) -> Optional[str]:
    """Draw and save one claim figure (None: nothing to draw); a drawing error costs the figure, not the
    claim (noted in details)."""
    try:
        fig = make()
        return save_figure(fig, out, claim) if fig is not None else None
    except Exception as e:
        details.append(f"figure not drawn: {type(e).__name__}: {e}")
        return None


def panel() -> tuple[Figure, Any]:
    """One figure with one panel (the single-panel claim figures)."""
    fig, axes = grid(1, 1, w=5.2, h=3.6, margin=(0.0, 0.0))
    return fig, axes[0, 0]


def legend(ax, fontsize: int = 8) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, frameon=False)


def label_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """A single-panel claim figure's axis labels, its title (small: it says what the bars are) and legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    legend(ax)


def log_y(ax) -> None:
    """A log y axis with ticks at 1, 2, 3, 5, 7 per decade (data within one decade still get labelled ticks)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def clamp_axis(ax, low: float = 0.0, high: float = 100.0) -> None:
    """Keep an axis within the range its quantity can take (accuracy: 0-100%; a difference of two: +-100 points).

    The 95% t interval of 2 seeds has a t quantile of 12.7 and can reach far
    past the possible range; left alone it sets the axis (-200..300%) and
    flattens the data to a line. Bars that run past the edge are cut there.
    """
    y0, y1 = ax.get_ylim()
    pad = 0.03 * (high - low)
    ax.set_ylim(max(y0, low - pad), min(y1, high + pad))


def mean_band(ax, xs: list[float], groups: list[list[float]], color: Any, label: str,
              bars: bool = False, marker: str = "o") -> None:
    """Mean over seeds at each x with its 95% t-interval (bars or band; none for one seed)."""
    pts = [(x, float(np.mean(v)), *interval_bounds(v)) for x, v in zip(xs, groups) if len(v)]
    if not pts:
        return
    x, m, lo, hi = (np.array(c, dtype=float) for c in zip(*pts))
    if bars:
        ax.errorbar(x, m, yerr=[m - lo, hi - m], color=color, marker=marker, capsize=3, label=label)
    else:
        ax.plot(x, m, color=color, label=label)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)


def errorbar(ax, xs: list[float], ms: list[MeanInterval], **kw: Any) -> None:
    """Means with their 95% t-intervals (none where n < 2)."""
    y = np.array([m.mean for m in ms], dtype=float)
    lo = np.array([m.mean - m.low if math.isfinite(m.low) else 0.0 for m in ms])
    hi = np.array([m.high - m.mean if math.isfinite(m.high) else 0.0 for m in ms])
    ax.errorbar(xs, y, yerr=[lo, hi], capsize=3, **kw)


def trace(ax, g: pd.DataFrame, ycol: str, color: Any, label: Optional[str], log: bool = False,
          style: str = "-") -> None:
    """Per-seed faint lines and the mean over seeds (geometric on a log axis) per step."""
    g = g[np.isfinite(g[ycol].astype(float))]
    if log:
        g = g[g[ycol] > 0]
    if g.empty:
        return
    for _, r in g.groupby("run"):
        r = r.sort_values("step")
        ax.plot(r.step, r[ycol], color=color, alpha=0.25, lw=0.8, ls=style)
    vals = np.log10(g[ycol].astype(float)) if log else g[ycol].astype(float)
    mean = vals.groupby(g.step).mean()
    ax.plot(mean.index, 10 ** mean.values if log else mean.values, color=color, lw=1.8, ls=style, label=label)


def curves_figure(curves: list[tuple[Any, list[tuple[float, float]]]], xlabel: str, ylabel: str, title: str,
                  scale: float = 1.0, clamp: tuple[float, float] = (0.0, 100.0)) -> Figure:
    """Mean and 95% band over seeds per norm; each run's (x, y) points, pooled at equal x; y kept within `clamp`."""
    fig, ax = panel()
    pal = palette(n for n, _ in curves)
    for norm in norm_order(n for n, _ in curves):
        by_x: dict[float, list[float]] = {}
        for n, pts in curves:
            if n == norm:
                for x, y in pts:
                    by_x.setdefault(x, []).append(scale * y)
        xs = sorted(by_x)
        mean_band(ax, xs, [by_x[x] for x in xs], pal[norm], norm_name(norm))
    clamp_axis(ax, *clamp)
    label_axes(ax, xlabel, ylabel, f"{title}\n(line: mean over seeds; band: 95% t interval over seeds)")
    return fig
