"""Seeds by power (analysis/power.py): the projection and the rule."""

from __future__ import annotations

import pytest

from analysis.claims.result import ClaimResult, bound_note
from analysis.claims.rule import INCONCLUSIVE, NO_EFFECT
from analysis.power import MAX_SEEDS, MIN_SEEDS, SAFETY, needs, projected_half_width, seeds_needed


def test_projection_is_the_t_interval_at_the_pilot_spread() -> None:
    assert projected_half_width(1.0, 3, 3) == pytest.approx(1.0)
    # n0=3 -> 12: t(0.975, 2) = 4.303, t(0.975, 11) = 2.201; sqrt(3/12) = 0.5
    assert projected_half_width(1.0, 3, 12) == pytest.approx(2.201 / 4.303 * 0.5, rel=1e-3)


def test_rule_floor_hard_cases_and_undecidable() -> None:
    assert seeds_needed(5.0, 1.0, 3, margin=1.0) == MIN_SEEDS  # a large effect: the floor decides it
    easy, hard = seeds_needed(0.0, 0.8, 3, 1.0), seeds_needed(0.5, 0.8, 3, 1.0)
    assert easy is not None and hard is not None and hard > easy >= MIN_SEEDS  # half the margin is hardest
    n = seeds_needed(0.5, 0.8, 3, 1.0)
    h = projected_half_width(0.8, 3, n)
    assert h <= 0.5 / SAFETY or 0.5 + SAFETY * h <= 1.0  # the n returned decides ...
    h_before = projected_half_width(0.8, 3, n - 1)
    assert not (h_before <= 0.5 / SAFETY or 0.5 + SAFETY * h_before <= 1.0)  # ... and n - 1 does not
    assert seeds_needed(0.5, 100.0, 3, 1.0) is None  # no n up to MAX_SEEDS


def test_needs_reads_each_claims_headline_interval() -> None:
    r = ClaimResult("C12", "t", INCONCLUSIVE, "s", value=0.2, low=-0.6, high=1.0, unit="points", margin=0.5, seeds=3)
    flat = ClaimResult("C15", "t", INCONCLUSIVE, "s", value=1.0, low=1.0, high=1.0, unit="decades", margin=0.25,
                       seeds=3)
    (a, b) = needs([r, flat])
    assert a.pilot_half_width == pytest.approx(0.8) and a.seeds == seeds_needed(0.2, 0.8, 3, 0.5)
    assert b.seeds == MIN_SEEDS and "no pilot interval" in b.why  # zero width: the floor, said
    assert MAX_SEEDS >= MIN_SEEDS


def test_an_undecided_interval_states_its_bound() -> None:
    r = ClaimResult("C7", "t", INCONCLUSIVE, "s", value=0.1, low=-0.3, high=0.8, unit="points", margin=0.5)
    note = bound_note(r)
    assert "no effect larger than 0.8 points in either direction" in note and "0.5 points" in note
    r.verdict, r.high = NO_EFFECT, 0.4
    assert "lies within +-0.5 points" in bound_note(r)
    # settings that disagree leave a claim undecided whose headline interval is clear of zero: no bound there
    r.verdict, r.low, r.high = INCONCLUSIVE, 0.2, 0.4
    assert bound_note(r) == ""
