"""analysis.budget: a preset's headline at its budget and at twice it, on real records through the CLI."""

import json

import pytest

from analysis.budget import main
from helpers import load, record, write_runs
from analysis.claims import evaluate_claim


def c5_runs(epochs: int, bn_small: list[float]) -> list[dict]:
    """small_batch records: BN loses accuracy at batch 4 (bn_small), the other norms do not."""
    flat = {4: [0.93, 0.935, 0.94], 64: [0.95, 0.955, 0.96]}
    acc = {"batch": {4: bn_small, 64: [0.95, 0.955, 0.96]}, "none": flat, "layer": flat}
    recs = []
    for norm, table in acc.items():
        for b, v in table.items():
            for s in range(3):
                r = record("small_batch", norm, s, batch=b, test=v[s], val=v[s], lr=0.01 * b / 64)
                r["config"]["epochs"] = epochs
                recs.append(r)
    return recs


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("later, long_enough", [([0.785, 0.795, 0.805], True), ([0.85, 0.86, 0.87], False)])
def test_the_headline_at_each_budget_and_the_rule(tmp_path, capsys, later, long_enough):
    first, second = c5_runs(1, [0.78, 0.79, 0.80]), c5_runs(2, later)
    folder = write_runs(tmp_path / "pilot", first + second)
    code, out, err = run(capsys, folder, "--by", "epochs", "--claims", "C5", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    at_1 = evaluate_claim("C5", load(tmp_path / "one", first), tmp_path / "r1")
    at_2 = evaluate_claim("C5", load(tmp_path / "two", second), tmp_path / "r2")
    assert [s["budget"] for s in row["steps"]] == [1, 2]
    assert row["steps"][0]["value"] == pytest.approx(at_1.value) and row["steps"][1]["value"] == pytest.approx(at_2.value)
    (pair,) = row["pairs"]
    assert pair["change"] == pytest.approx(at_2.value - at_1.value)
    assert pair["long_enough"] is long_enough and row["shortest"] == (1 if long_enough else None)
    assert pair["why"].startswith("absolute change") and ("<" if long_enough else ">=") + " half the margin 1" in pair["why"]
    code, out, _ = run(capsys, folder, "--by", "epochs", "--claims", "C5")
    assert out.startswith("| claim | epochs=1 | epochs=2 |")
    assert ("1 -> 2: " + f"{pair['change']:+.3g}" + (", yes" if long_enough else ", no")) in out
    assert out.rstrip().endswith("| epochs=1 |" if long_enough else "| - |")


def test_the_shortest_budget_that_holds_against_the_next(tmp_path, capsys):
    """Three budgets: 1 -> 2 moves the headline, 2 -> 4 does not: 2 is the shortest long enough."""
    recs = c5_runs(1, [0.85, 0.86, 0.87]) + c5_runs(2, [0.78, 0.79, 0.80]) + c5_runs(4, [0.781, 0.791, 0.801])
    code, out, err = run(capsys, write_runs(tmp_path / "pilot", recs), "--by", "epochs", "--claims", "C5", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert [p["long_enough"] for p in row["pairs"]] == [False, True] and row["shortest"] == 2


def test_where_keeps_only_the_named_runs_and_bad_keys_are_one_line(tmp_path, capsys):
    recs = c5_runs(1, [0.78, 0.79, 0.80]) + c5_runs(2, [0.78, 0.79, 0.80])
    for r in recs:
        r["config"]["warmup_epochs"] = 0
    other = c5_runs(2, [0.5, 0.5, 0.5])
    for r in other:
        r["config"]["warmup_epochs"] = 1
    folder = write_runs(tmp_path / "pilot", recs + other)
    code, out, _ = run(capsys, folder, "--by", "epochs", "--where", "warmup_epochs=0", "--claims", "C5", "--json")
    assert code == 0 and json.loads(out)[0]["shortest"] == 1
    code, _, err = run(capsys, folder, "--by", "no_such_key")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: no config key no_such_key")
    code, _, err = run(capsys, folder, "--by", "epochs", "--claims", "C5,C99")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --claims C99: no such claim; known: C1,")
    code, _, err = run(capsys, folder, "--by", "epochs", "--where", "warmup_epochs=7")
    assert code == 2 and "a pilot needs two budgets" in err
