"""benchmarks/refinement_choice.py: how often a GT-free measure picks the better of the two outputs."""

from __future__ import annotations

import pytest
from evalutil import load_benchmark

from scene_perception.evaluation.metrics import BAD_THRESHOLDS

rc = load_benchmark("refinement_choice")


def _row(bad2_refined: float, bad2_network: float, photo: tuple[float, float], lr: tuple[float, float],
         zncc_net: float = 0.05) -> dict:
    def out(bad2: float, p: float, c: float) -> dict:
        metrics = {"epe": bad2 / 10, "d1": bad2, "density": 100.0, "n_pixels": 100, "n_scored": 100,
                   **{f"bad{t}": bad2 for t in BAD_THRESHOLDS}}
        return {"metrics": metrics, "photometric p50": p, "left-right consistent": c}
    return {"refined": out(bad2_refined, photo[0], lr[0]),
            "network alone": out(bad2_network, photo[1], lr[1]), "zncc net": zncc_net}


def test_a_measure_that_tracks_the_truth_picks_the_oracle() -> None:
    rows = [_row(5.0, 9.0, (0.1, 0.2), (0.9, 0.8)), _row(12.0, 8.0, (0.3, 0.2), (0.5, 0.9))]
    s = rc.summarise(rows)
    assert s["refined better in % of frames"] == 50.0
    for measure in rc.MEASURES:
        assert s[measure]["agrees with GT in % of frames"] == 100.0
        assert s[measure]["pooled"]["bad2"] == pytest.approx(s["oracle"]["bad2"])
    assert s["oracle"]["bad2"] < min(s["refined"]["bad2"], s["network alone"]["bad2"])


def test_a_measure_biased_to_one_output_agrees_only_where_that_one_is_better() -> None:
    # The photometric residual always favours the refined output (the refinement maximises ZNCC).
    rows = [_row(5.0, 9.0, (0.1, 0.2), (0.9, 0.8)), _row(12.0, 8.0, (0.1, 0.2), (0.5, 0.9)),
            _row(7.0, 7.05, (0.1, 0.2), (0.5, 0.9))]  # a tie within 0.1 point: left out of the agreement
    s = rc.summarise(rows)
    assert s["photometric p50"]["picks refined in % of frames"] == 100.0
    assert s["photometric p50"]["agrees with GT in % of frames"] == 50.0
    assert s["left-right consistent"]["agrees with GT in % of frames"] == 100.0


def test_the_frame_regime_gate_refines_below_its_threshold_only() -> None:
    """'refined where zncc net <= T': a threshold between a clean frame (refinement helps) and a camera-like
    frame (it hurts) gives the oracle; one below both gives the network alone, one above both refines all."""
    rows = [_row(5.0, 9.0, (0.1, 0.2), (0.9, 0.8), zncc_net=0.004),
            _row(12.0, 8.0, (0.1, 0.2), (0.5, 0.9), zncc_net=0.1)]
    s = rc.summarise(rows)
    assert s["zncc net"]["median"] == pytest.approx(0.052)
    assert s["gate"]["0.05"]["bad2"] == pytest.approx(s["oracle"]["bad2"])
    assert s["gate"]["0.05"]["refined in % of frames"] == 50.0
    assert s["gate"]["0.005"]["bad2"] == pytest.approx(s["oracle"]["bad2"])  # 0.004 <= 0.005 too
    assert s["gate"]["0.2"]["bad2"] == pytest.approx(s["refined"]["bad2"])
