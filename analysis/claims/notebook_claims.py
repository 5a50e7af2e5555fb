"""The notebook's nine claims, each answered through the C rows that test it."""

from __future__ import annotations

from analysis.claims.result import ClaimResult, format_value
from analysis.claims.rule import (CONTRADICTED, MIXED, NO_EFFECT, NOT_REPLICATED, NOT_RUN, SUPPORTED, TRIVIAL,
                                  combine)

# How a row's verdict reads for the notebook's claim it answers (docs/claims.md#the-notebooks-nine-claims):
#   EFFECT:   the notebook claims the row's effect (its verdict as it is);
#   REVERSED: the notebook claims the opposite of the row's claim (C9: "BN does not reduce internal covariate
#             shift"): the row's support contradicts the notebook and the other way round; no meaningful effect
#             (or a trivially small one) confirms the row, so the notebook's effect is absent;
#   ABSENT:   the notebook claims the row's effect is absent or reversed (C16 for "BN fits recurrent models
#             poorly": BN does not help the LSTM's accuracy): no meaningful or a trivially small effect, or a
#             contradicted row, confirms the notebook.
EFFECT, REVERSED, ABSENT = "effect", "reversed", "absent"
READINGS: dict[str, dict[str, str]] = {
    EFFECT: {},
    REVERSED: {SUPPORTED: CONTRADICTED, CONTRADICTED: SUPPORTED, NO_EFFECT: CONTRADICTED, TRIVIAL: CONTRADICTED},
    ABSENT: {SUPPORTED: CONTRADICTED, CONTRADICTED: SUPPORTED, NO_EFFECT: SUPPORTED, TRIVIAL: SUPPORTED},
}
READ_AS = {EFFECT: "", REVERSED: "read in reverse", ABSENT: "read as: the effect is absent"}

# Each notebook claim reads the rows that test it: speed (3) from steps to a target (C4), not from a final
# accuracy; batch-size sensitivity through noisy statistics (7) from the small-batch and statistics claims
# (C5: BN's error rises at small batch where the other norms' does not; C6: BN's train/eval discrepancy is
# larger at small batch), not from C1, whose fixed lr and epoch budget give small batches more steps.
NOTEBOOK_CLAIMS: tuple[tuple[int, str, tuple[tuple[str, str], ...]], ...] = (
    (1, "BN reduces internal covariate shift", (("C8", EFFECT), ("C9", REVERSED))),
    (2, "BN allows higher learning rates (more stable training)", (("C2", EFFECT),)),
    (3, "BN speeds convergence", (("C4", EFFECT),)),
    (4, "BN regularizes (smaller train/test gap)", (("C12", EFFECT),)),
    (5, "BN mitigates vanishing/exploding gradients", (("C15", EFFECT),)),
    (6, "BN costs compute in training and inference", (("C14", EFFECT),)),
    (7, "BN is sensitive to batch size (small batches give noisy statistics)", (("C5", EFFECT), ("C6", EFFECT))),
    (8, "BN's train/inference discrepancy, worse under a distribution shift", (("C6", EFFECT),)),
    # Poorly: BN adds no accuracy, costs more per step, has a train/eval discrepancy at small batch, and
    # LayerNorm does as well (C16d is a non-inferiority claim: supported = as well or better). C16 reads
    # BN-LSTM as it is evaluated (population statistics): the notebook's "poorly" is about the network one
    # gets; whether its weights or its statistics fail is C16's details (batch, re-estimated statistics).
    (9, "BN fits recurrent models poorly",
     (("C16", ABSENT), ("C16b", EFFECT), ("C16c", EFFECT), ("C16d", EFFECT))),
)


def notebook_verdicts(results: list[ClaimResult]) -> list[dict[str, str]]:
    """The notebook's claims, each with the verdict its C rows give it (their settled verdicts: a row whose
    replication disagrees makes the notebook's claim 'not replicated' too)."""
    by_id = {r.claim: r for r in results}
    rows = []
    for number, text, links in NOTEBOOK_CLAIMS:
        parts, verdicts, figures = [], [], []
        for cid, reading in links:
            r = by_id.get(cid)
            v = r.settled if r is not None else NOT_RUN
            read, how = READINGS[reading].get(v, v), READ_AS[reading]
            if v == MIXED and reading != EFFECT and r.settings:
                # Each setting through the reading: a row contradicted in one pixel order and without a
                # meaningful effect in the other is, read as an absence, supported in both.
                read = _per_setting(r, reading)
                if r.replication is not None and r.replication.settings and _per_setting(r.replication,
                                                                                         reading) != read:
                    read = NOT_REPLICATED
                how += f", per setting: {read}"
            verdicts.append(read)
            number_ = f": {format_value(r)}, n = {r.n}" if r is not None and r.verdict != NOT_RUN else ""
            parts.append(f"{cid} {v}{f' ({how})' if how else ''}{number_}")
            if r is not None and r.figure:
                figures.append(r.figure)
        verdict = NOT_REPLICATED if NOT_REPLICATED in verdicts else combine(verdicts)
        rows.append({"#": str(number), "notebook claim": text, "verdict": verdict,
                     "from": "; ".join(parts), "figures": ", ".join(figures) or "-"})
    return rows


def _per_setting(r: ClaimResult, reading: str) -> str:
    return combine(READINGS[reading].get(v, v) for *_, v in r.settings)
