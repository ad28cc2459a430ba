"""benchmarks/refinement_rule.py: rule.md's candidates and decision, on made-up scores with a known answer."""

from __future__ import annotations

import dataclasses

from evalutil import load_benchmark

from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

rr = load_benchmark("refinement_rule")


def test_candidates_are_rule_md_s_fifteen_with_today_s_default_as_d() -> None:
    cands = rr.candidates()
    assert len(cands) == 15
    assert cands["D"] == DEFAULT_LOCAL_REFINEMENT
    assert cands["X0.01"] == dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, min_x_texture=0.01)
    assert not cands["X0.01 no SGBM"].sgbm_candidate
    assert cands["T0.04"].min_texture == 0.04 and cands["T0.04"].min_x_texture == 0.0
    assert set(rr.references()) & set(cands) == set()


def _scores(epe: dict[str, float], board_bad2: dict[str, float]) -> tuple[dict, dict]:
    names = list(rr.candidates())
    synth = {c: {k: {"epe": epe.get(k, 1.0), "bad2": 5.0, "ause": 0.2} for k in names}
             for c in rr.RULE_CONDITIONS}
    board = {"settings": {k: {"bad2": board_bad2.get(k, 34.0)} for k in names}}
    return board, synth


def test_the_lowest_board_error_among_the_eligible_wins_if_it_gains_enough() -> None:
    board, synth = _scores({"D": 1.0, "X0.01": 1.02, "X0.04": 1.2}, {"D": 34.0, "X0.01": 25.0, "X0.04": 15.0})
    d = rr.decide(board, synth)
    assert "X0.04" in d["ineligible"] and "EPE" in d["ineligible"]["X0.04"]  # 0.2 px worse on validation
    assert d["chosen"] == "X0.01" and d["changes_default"]


def test_a_small_board_gain_keeps_the_default_and_ties_go_to_the_lower_validation_epe() -> None:
    board, synth = _scores({"D": 1.0}, {"D": 34.0, "X0.01": 32.0})
    assert rr.decide(board, synth)["chosen"] == "D"  # 2 points < MIN_BOARD_GAIN
    board, synth = _scores({"D": 1.0, "X0.01": 1.02, "X0.02": 1.01},
                           {"D": 34.0, "X0.01": 25.0, "X0.02": 25.4})
    d = rr.decide(board, synth)
    assert set(d["tied"]) == {"X0.01", "X0.02"} and d["chosen"] == "X0.02"


def test_the_camera_condition_can_rule_a_setting_out() -> None:
    board, synth = _scores({"D": 1.0}, {"D": 34.0, "X0.01": 20.0})
    synth["camera"]["X0.01"]["ause"] = 0.25  # D's 0.2 + more than AUSE_SLACK
    d = rr.decide(board, synth)
    assert d["ineligible"]["X0.01"].startswith("camera AUSE") and d["chosen"] == "D"


def test_rule_2_s_candidates_gate_the_gradient_share() -> None:
    cands = rr.candidates(2)
    assert len(cands) == 9 and cands["D"] == DEFAULT_LOCAL_REFINEMENT
    assert cands["S0.1"] == dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, min_x_share=0.1)
    assert not cands["S0.3 no SGBM"].sgbm_candidate and cands["S0.3 no SGBM"].min_x_share == 0.3
    snr = rr.candidates(3)
    assert len(snr) == 9 and snr["N4"] == dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, min_x_snr=4.0)


def test_rule_4_s_candidates_gate_the_peak_sharpness() -> None:
    cands = rr.candidates(4)
    assert len(cands) == 9 and cands["D"] == DEFAULT_LOCAL_REFINEMENT
    assert cands["K0.05"] == dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, min_peak_curvature=0.05)
    assert not cands["K0.2 no SGBM"].sgbm_candidate and cands["K0.2 no SGBM"].min_peak_curvature == 0.2
    assert rr.parse_args(["--rule", "4"]).rule == 4


def test_every_rule_names_its_committed_text() -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    assert all((repo / path).is_file() for path in rr.RULE_FILES.values())
