"""``benchmarks/refinement_gate.py``: the rule that chooses ``max_view_residual`` (issue 22).  The script on
tiny renders (its combination of the two outputs must match the pipeline run at the chosen threshold), and
the rule's decision on hand-made summaries, where each clause can be made to fail."""

from __future__ import annotations

import copy

import pytest
from evalutil import load_benchmark

bench = load_benchmark("refinement_gate")
SETS = ("exact", "nuisance", "camera", "rig", "board 640x480", "board 320x240")


def test_quick_run_combines_outputs_as_the_pipeline_does() -> None:
    res = bench.main(["--quick", "--threads", "1"])
    summary = res["summary"]
    assert set(summary) == {"exact", "nuisance", "camera", "rig"}
    for row in summary.values():
        # The gate's extremes are today's two outputs; every candidate lies between them frame by frame.
        assert row["network"]["refined %"] == 0.0 and row["today"]["refined %"] == 100.0
        assert all(0.0 <= row[f"{t:g}"]["refined %"] <= 100.0 for t in bench.CANDIDATES)
    check = res["pipeline_check"]
    assert check["frames"] == 4 and check["holds"], check
    assert not res["decision"]["ship"] and "sets missing" in res["decision"]["why"]


def summary_of(today: float = 10.0, gated: float = 8.0, exact_epe: float = 0.5) -> dict:
    """Every set at ``today`` bad-2 with the gate off and ``gated`` at every candidate; coverage in band."""
    def cell(bad2: float, epe: float = 1.0) -> dict:
        return {"bad2": bad2, "epe": epe, "coverage": [0.8, 0.94, 0.98], "refined %": 50.0}

    out = {}
    for k in SETS:
        row = {"today": cell(today, exact_epe if k == "exact" else 1.0)}
        row.update({f"{t:g}": cell(gated, exact_epe if k == "exact" else 1.0) for t in bench.CANDIDATES})
        out[k] = row
    return out


def test_decision_takes_the_lowest_sum_and_ties_go_to_the_larger_threshold() -> None:
    s = summary_of()
    s["camera"]["0.04"]["bad2"] = 7.0  # lowest sum at 0.04 ...
    s["camera"]["0.06"]["bad2"] = 7.05  # ... but 0.06 is within the 0.1 point tie
    d = bench.decide(s)
    assert d["chosen"] == "0.06" and d["ship"]
    assert d["gain"] == pytest.approx(4 * 10.0 - (3 * 8.0 + 7.05))


@pytest.mark.parametrize("spoil, fails", [
    (lambda s: s["exact"]["0.05"].update(epe=0.54), "exact EPE"),  # + 0.04 px > 0.03
    (lambda s: s["exact"]["0.05"].update(bad2=10.31), "exact bad-2"),  # + 0.31 points > 0.3
    (lambda s: s["nuisance"]["0.05"].update(bad2=10.01), "nuisance bad-2"),
    (lambda s: s["board 320x240"]["0.05"].update(bad2=10.5), "board 320x240 bad-2"),
])
def test_each_eligibility_clause_can_exclude_a_threshold(spoil, fails: str) -> None:
    s = summary_of()
    spoil(s)
    d = bench.decide(s)
    assert not d["candidates"]["0.05"]["eligible"] and not d["candidates"]["0.05"]["checks"][fails]
    assert d["candidates"]["0.04"]["eligible"]


def test_ship_needs_three_points_and_coverage_in_band() -> None:
    small = bench.decide(summary_of(today=10.0, gated=9.5))  # 4 x 0.5 = 2 points
    assert small["chosen"] is not None and not small["ship"]
    s = summary_of()
    for t in bench.CANDIDATES:
        s["rig"][f"{t:g}"]["coverage"] = [0.8, 0.975, 0.99]
    d = bench.decide(s)
    assert not d["ship"] and not d["ship checks"]["rig 2-std in [90, 97] %"]
    none = copy.deepcopy(summary_of())
    for t in bench.CANDIDATES:
        none["camera"][f"{t:g}"]["bad2"] = 11.0
    assert bench.decide(none)["chosen"] is None
