"""The notebook's nine claims, each answered through the C rows that test it."""

from __future__ import annotations

from analysis.claims.common import NOT_RUN, NOT_SUPPORTED, SUPPORTED, ClaimResult, combine, format_value

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
    # Poorly: BN adds little accuracy (C16 read in reverse), costs more per step, has a train/eval
    # discrepancy at small batch, and LayerNorm does as well.
    (9, "BN fits recurrent models poorly", (("C16", -1), ("C16b", +1), ("C16c", +1), ("C16d", +1))),
)
FLIP = {SUPPORTED: NOT_SUPPORTED, NOT_SUPPORTED: SUPPORTED}


def notebook_verdicts(results: list[ClaimResult]) -> list[dict[str, str]]:
    """The notebook's claims, each with the verdict its C rows give it."""
    by_id = {r.claim: r for r in results}
    rows = []
    for number, text, links in NOTEBOOK_CLAIMS:
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
