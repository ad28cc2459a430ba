"""evaluation/board_plane.py and benchmarks/chessboard_planes.py: the chessboard plane as a reference
disparity on real pairs without GT, the calibration check rule_pixel8.md chose the two-pass std with
(issue 25)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from evalutil import load_benchmark
from test_chessboard import BOARD, CHESSBOARD, K, render_board

from scene_perception.data.datasets.chessboard import board_points
from scene_perception.evaluation.board_plane import (
    board_reference,
    plane_pairs,
    plane_reference,
    shrink_board,
)

BASELINE = 3.0  # squares


def _rectified_pair(rvec: np.ndarray, tvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An ideal rectified rig: the same K, the right camera BASELINE squares to the right."""
    right_t = tvec + np.array([[-BASELINE], [0.0], [0.0]])
    return render_board(rvec, tvec, K), render_board(rvec, right_t, K)


def test_board_reference_is_the_boards_true_disparity() -> None:
    """On a rendered tilted board the fitted plane gives f B / Z at every inner corner to a tenth of a pixel,
    the reference covers the board inside the corners only, and a pair without a board gives None."""
    rvec, tvec = np.deg2rad([[20.0], [-25.0], [5.0]]), np.array([[-4.0], [-2.5], [22.0]])
    ref = board_reference(*_rectified_pair(rvec, tvec))
    assert ref is not None and ref["rms"] < 0.1 and ref["row_error"] < 0.1
    pts = board_points(BOARD).reshape(-1, 3)
    cam = (cv2.Rodrigues(rvec)[0] @ pts.T + tvec).T
    uv, _ = cv2.projectPoints(pts, rvec, tvec, K, None)
    uv = uv.reshape(-1, 2)
    a, b, c = ref["plane"]
    truth = K[0, 0] * BASELINE / cam[:, 2]
    np.testing.assert_allclose(a * uv[:, 0] + b * uv[:, 1] + c, truth, atol=0.1)
    inside = np.isfinite(ref["reference"])
    hull = np.zeros(inside.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(uv.astype(np.float32)).round().astype(np.int32), 1)
    assert inside.sum() > 0.8 * hull.sum() and not (inside & (hull == 0)).any()
    assert ref["corner_disparity"][0] == pytest.approx(truth.min(), abs=0.3)
    blank = np.full((480, 640, 3), 128, np.uint8)
    assert board_reference(blank, blank) is None


def test_shrink_board_halves_views_and_plane_and_keeps_the_boards_edge() -> None:
    """The 320x240 board the one-refinement benchmarks score: views area-averaged, the plane's disparity in
    small-image px (half), NaN off the board kept NaN."""
    ys, xs = np.mgrid[0:48, 0:64].astype(np.float32)
    plane = 40.0 + 0.25 * xs - 0.1 * ys
    plane[:, :16] = np.nan  # off the board
    left = np.full((48, 64, 3), 100, np.uint8)
    [(name, lt, rt, small)] = shrink_board([("p", left, left.copy(), {"reference": plane})])
    assert name == "p" and lt.shape == rt.shape == (24, 32, 3) and small.shape == (24, 32)
    assert np.isnan(small[:, :8]).all() and np.isfinite(small[:, 8:]).all()
    # Area average of an affine plane is the plane at the small pixel's centre, halved.
    y, x = 10, 20
    centre = 40.0 + 0.25 * (2 * x + 0.5) - 0.1 * (2 * y + 0.5)
    np.testing.assert_allclose(small[y, x], 0.5 * centre, rtol=1e-5)


def test_plane_reference_says_why_a_pair_is_no_reference() -> None:
    pair = _rectified_pair(np.deg2rad([[20.0], [-25.0], [5.0]]), np.array([[-4.0], [-2.5], [22.0]]))
    ref, why = plane_reference(*pair)
    assert ref is not None and why == ""
    refused, why = plane_reference(*pair, max_rms=ref["rms"] / 2)  # a stricter fit than this one
    assert refused is not None and why.startswith("plane RMS")
    blank = np.full((480, 640, 3), 128, np.uint8)
    assert plane_reference(blank, blank) == (None, "board not found in both rectified views")


def test_violation_is_zero_inside_the_goals_only() -> None:
    """two_pass_adaptive.goal_violation, rule_pixel8.md's score: 0 exactly where meets_goals holds."""
    from scene_perception.evaluation.calibration import expected_coverage

    ta = load_benchmark("two_pass_adaptive")
    one = expected_coverage(1.0, "laplace")
    assert ta.goal_violation([0.76, 0.94, 0.98]) == 0.0 and ta.meets_goals([0.76, 0.94, 0.98])
    assert ta.goal_violation([0.76, 0.88, 0.95]) == pytest.approx(0.02)
    assert ta.goal_violation([0.90, 0.98, 0.99]) == pytest.approx(0.01 + (0.90 - one - 0.10))
    assert not ta.meets_goals([0.90, 0.98, 0.99])


def test_candidates_are_the_fitted_settings_and_pixel6_is_the_default() -> None:
    """rule_pixel8.md's candidates differ only in two_pass_std_pixel; the default is the one it chose."""
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

    cp = load_benchmark("chessboard_planes")
    cands = cp.candidates(DEFAULT_LOCAL_REFINEMENT)
    assert list(cands) == ["per frame", "pixel4", "pixel6", "pixel7"]
    assert cands["per frame"].two_pass_std_pixel == () and cands["pixel7"].two_pass_std_pixel == cp.PIXEL7
    assert DEFAULT_LOCAL_REFINEMENT.two_pass_std_pixel == cp.PIXEL6
    for cfg in cands.values():
        assert (cfg.two_pass_std_factor, cfg.two_pass_std_exponent) == (3.35, 0.25)


@pytest.mark.skipif(not (CHESSBOARD / "left01.jpg").is_file(),
                    reason="opencv-doc chessboard pairs absent (tools/fetch_eval_data.sh)")
def test_quick_run_on_the_real_pairs(tmp_path: Path) -> None:
    """--quick end to end on the opencv-doc pairs: rectified at full size, the board found, every candidate
    scored on the same pipeline disparities (refined twice)."""
    cp = load_benchmark("chessboard_planes")
    out = tmp_path / "q.json"
    res = cp.main(["--quick", "--threads", "1", "--accuracy", "--ablation", "--json", str(out)])
    used = [p for p in res["board"]["pairs"] if p["used"]]
    assert len(res["board"]["pairs"]) == 2 and used and out.is_file()
    assert all(p["rms"] <= 0.25 and 90 < p["corner_disparity"][0] for p in used)
    rows = res["board"]["candidates"]
    assert set(rows) == {"per frame", "pixel4", "pixel6", "pixel7"}
    assert len({r["pixels"] for r in rows.values()}) == 1
    assert len({round(r["median_std"], 6) for r in rows.values()}) == 4  # the stds differ, the pixels not
    acc = res["board"]["accuracy"]
    assert set(acc) == {"ours (default pipeline)", "ours, no SGBM candidate", "ours, network alone",
                        "SGBM_3WAY sparse", "SGBM_3WAY filled"}
    assert acc["ours (default pipeline)"]["density"] == 100.0 and acc["SGBM_3WAY sparse"]["density"] < 100.0
    assert len({m["n_pixels"] for m in acc.values()}) == 1  # every method on the same reference pixels
    abl = res["board"]["ablation"]
    assert len(abl) == 10 and abl["default"]["bad2"] == acc["ours (default pipeline)"]["bad2"]
    assert abl["network alone"]["bad2"] == acc["ours, network alone"]["bad2"]
    assert len({round(m["bad2"], 6) for m in abl.values()}) > 5  # the variants really differ


@pytest.mark.skipif(not (CHESSBOARD / "left01.jpg").is_file(),
                    reason="opencv-doc chessboard pairs absent (tools/fetch_eval_data.sh)")
def test_plane_pairs_are_the_seven_the_rules_name() -> None:
    pairs = plane_pairs(CHESSBOARD)
    assert [name for name, *_ in pairs] == list(load_benchmark("adaptation").PLANE_PAIRS)
    for _, left, right, ref in pairs:
        assert left.shape == right.shape == (480, 640, 3) and ref["reference"].shape == (480, 640)


@pytest.mark.skipif(not (CHESSBOARD / "left01.jpg").is_file(),
                    reason="opencv-doc chessboard pairs absent (tools/fetch_eval_data.sh)")
def test_adaptation_on_the_chessboard_rig_streams_the_other_pairs_and_scores_the_plane_pairs(
        tmp_path: Path) -> None:
    """benchmarks/adaptation.py --shift chessboard: the 6 pairs without a plane fit are the stream (half size,
    no reference), the 7 plane pairs the evaluation (full size, reference on the board only); a quick run
    scores before and after and refuses the bad stream."""
    ad = load_benchmark("adaptation")
    stream, evaluation = ad.chessboard_data(CHESSBOARD)
    assert len(stream) == 13 - len(ad.PLANE_PAIRS) and len(evaluation) == len(ad.PLANE_PAIRS)
    assert all(left.shape == (240, 320, 3) for left, _ in stream)
    for left, _, ref in evaluation:
        assert left.shape == (480, 640, 3) and 0.05 < np.isfinite(ref).mean() < 0.6
        assert 90.0 < np.nanmin(ref) and np.nanmax(ref) < 210.0
    res = ad.main(["--shift", "chessboard", "--quick", "--holdout-every", "3", "--out-dir", str(tmp_path),
                   "--chessboard-dir", str(CHESSBOARD)])
    assert res["size"] == [240, 320] and len(res["rounds"]) == 2
    assert 0.0 < res["before"]["bad2"] < 100.0 and res["before"]["density"] > 90.0
    bad = res["bad_stream"]
    assert bad["weights_unchanged"] and bad["rejected"] == bad["offered"]
