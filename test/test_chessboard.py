"""Stereo calibration + rectification of chessboard pairs (scene_perception/data/datasets/chessboard.py).

The truth is built, not assumed: a known rig (focal length, lens, rotation, baseline) sees a 9x6 board in
several poses, through ``projectPoints`` (corners only) or rendered as images (whole pipeline: detection,
calibration, rectified PNGs, calibration.json, read back by StereoFolder).  Where the opencv-doc chessboard
pairs are on disk (``tools/fetch_eval_data.sh``, as ``test_rectification.py`` uses them) the real rig is
calibrated too.

Bounds (measured values in brackets, OpenCV 5.1): projected corners with 0.1 px noise: RMS < 0.2 px (0.14),
baseline within 1 % (0.02 %), focal length within 1 % (0.2 %), noiseless corners' rows after rectification
within 0.05 px (0.013; 12.9 raw); rendered boards: RMS < 0.3 px (0.08), baseline within 2 % (0.13 %), rows of
the corners found again in the rectified images < 0.2 px (0.047; 12.7 raw); opencv-doc: 13 of 13 pairs, RMS
< 0.7 px (0.48), rows < 0.5 px (0.22; 12.8 raw), board disparity 50-102 px at half size.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from scene_perception.data.datasets import StereoFolder
from scene_perception.data.datasets.chessboard import (
    BOARD,
    CALIBRATION_NAME,
    board_points,
    calibrate_stereo,
    chessboard_to_folder,
    main,
)

REPO = Path(__file__).resolve().parents[1]
CHESSBOARD = REPO / ".cache" / "eval" / "chessboard"

W, H = 640, 480
F = 520.0
K = np.array([[F, 0, 322.0], [0, F, 236.0], [0, 0, 1]])
K_RIGHT = np.array([[F, 0, 315.0], [0, F, 229.0], [0, 0, 1]])
BASELINE = 3.0  # in squares
R_RIG = cv2.Rodrigues(np.deg2rad([0.8, -1.5, 0.6]))[0]  # right-from-left rotation
T_RIG = np.array([-BASELINE, 0.05, 0.02])  # right-from-left translation: the right camera sits at +x


def poses(n: int = 10, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Board poses (rvec, tvec) in the left camera, 20-30 squares away, tilted up to ~35 degrees, seen by
    both cameras."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rvec = np.deg2rad(rng.uniform([-35, -35, -20], [35, 35, 20])).reshape(3, 1)
        tvec = np.array([rng.uniform(-6, 2), rng.uniform(-4, 1), rng.uniform(20, 30)]).reshape(3, 1)
        out.append((rvec, tvec))
    return out


def right_pose(rvec: np.ndarray, tvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = R_RIG @ cv2.Rodrigues(rvec)[0]
    return cv2.Rodrigues(r)[0], R_RIG @ tvec + T_RIG.reshape(3, 1)


def test_projected_corners_recover_the_rig() -> None:
    """stereoCalibrate on projected corners (distorted lenses, 0.1 px noise) finds the baseline, and the
    rectification puts each corner on the same row in both views."""
    obj = board_points(BOARD)
    d_left = np.array([-0.12, 0.05, 0, 0, 0, 0, 0, 0.01])
    d_right = np.array([-0.10, 0.03, 0, 0, 0, 0, 0, 0.0])
    rng = np.random.default_rng(1)
    left, right, clean = [], [], []
    for rvec, tvec in poses():
        pl = cv2.projectPoints(obj, rvec, tvec, K, d_left)[0].reshape(-1, 2)
        pr = cv2.projectPoints(obj, *right_pose(rvec, tvec), K_RIGHT, d_right)[0].reshape(-1, 2)
        for p in (pl, pr):
            assert (p.min(0) > 0).all() and (p.max(0) < (W - 1, H - 1)).all()
        clean.append((pl, pr))
        left.append(pl + rng.normal(0, 0.1, pl.shape))
        right.append(pr + rng.normal(0, 0.1, pr.shape))
    calib = calibrate_stereo([obj] * len(left), left, right, (W, H))
    assert calib.rms < 0.2
    assert calib.baseline == pytest.approx(np.linalg.norm(T_RIG), rel=0.01)
    assert calib.k1[0, 0] == pytest.approx(F, rel=0.01)
    # The noiseless corners land on one row (the noisy ones differ by the noise alone: ~0.11 px).
    rows = [np.abs(calib.rectify_points(pl, 0)[:, 1] - calib.rectify_points(pr, 1)[:, 1]) for pl, pr in clean]
    assert np.concatenate(rows).mean() < 0.05
    raw = np.concatenate([np.abs(pl[:, 1] - pr[:, 1]) for pl, pr in clean])
    assert raw.mean() > 5.0  # the rig is not rectified to begin with
    # Zero-disparity rectification: one principal point, the right camera's P carries -fx * baseline.
    assert calib.p1[0, 2] == pytest.approx(calib.p2[0, 2]) and calib.p2[0, 3] < 0


def render_board(rvec: np.ndarray, tvec: np.ndarray, k: np.ndarray, square_px: int = 24) -> np.ndarray:
    """(H, W, 3) uint8 view of the 9x6-inner-corner board (10x7 squares, white margin) in front of a grey,
    lightly textured wall, through a pinhole camera (warpPerspective of a flat texture)."""
    cols, rows = BOARD[0] + 1, BOARD[1] + 1
    margin = square_px
    tex = np.full((rows * square_px + 2 * margin, cols * square_px + 2 * margin), 235, np.uint8)
    for j in range(rows):
        for i in range(cols):
            if (i + j) % 2 == 0:
                y, x = margin + j * square_px, margin + i * square_px
                tex[y : y + square_px, x : x + square_px] = 20
    # Board point (X, Y) in squares -> texture px; the first inner corner is at (margin + square) - 0.5
    # (pixel centres are integer coordinates).
    c = margin + square_px - 0.5
    a = np.array([[square_px, 0, c], [0, square_px, c], [0, 0, 1]])
    r = cv2.Rodrigues(rvec)[0]
    h_img = k @ np.column_stack([r[:, 0], r[:, 1], tvec.ravel()])
    warp = h_img @ np.linalg.inv(a)
    board = cv2.warpPerspective(tex, warp, (W, H), flags=cv2.INTER_AREA, borderValue=0)
    inside = cv2.warpPerspective(np.ones_like(tex), warp, (W, H), flags=cv2.INTER_NEAREST) > 0
    wall = cv2.GaussianBlur(np.random.default_rng(7).integers(90, 170, (H, W)).astype(np.uint8), (0, 0), 3)
    img = np.where(inside, board, wall)
    return np.repeat(img[:, :, None], 3, axis=2)


def test_rendered_pairs_to_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Rendered pairs (no lens distortion) through the whole converter; a pair without a board is rectified
    but left out of the calibration (and logged)."""
    src = tmp_path / "raw"
    src.mkdir()
    for n, (rvec, tvec) in enumerate(poses(8, seed=3), start=1):
        for view, (rv, tv, k) in (("left", (rvec, tvec, K)), ("right", (*right_pose(rvec, tvec), K_RIGHT))):
            cv2.imwrite(str(src / f"{view}{n:02d}.png"), render_board(rv, tv, k))
    blank = np.full((H, W, 3), 128, np.uint8)
    cv2.imwrite(str(src / "left09.png"), blank)
    cv2.imwrite(str(src / "right09.png"), blank)
    out = tmp_path / "rectified"
    with caplog.at_level(logging.WARNING, logger="scene_perception.data.datasets.chessboard"):
        rec = chessboard_to_folder(src, out, square=1.0, scale=0.5)
    assert "left09: board 9x6 not found in the left and right view" in caplog.text
    assert rec["pairs_used"] == [f"left{n:02d}" for n in range(1, 9)]
    assert rec["pairs_board_not_found"] == ["left09"] and rec["pairs_skipped"] == []
    assert rec["pairs_written"] == [f"{n:02d}" for n in range(1, 10)]
    assert rec["baseline"] == pytest.approx(np.linalg.norm(T_RIG), rel=0.02)
    assert rec["rms_px"] < 0.3
    assert rec["row_error_px"] < 0.2 and rec["row_error_raw_px"] > 5.0
    assert rec["outside_source_fraction"] < 0.01  # alpha=0: (almost) every rectified pixel has a source
    assert (rec["width"], rec["height"]) == (W // 2, H // 2)
    assert rec["fx"] == pytest.approx(rec["calibration"]["fx"] / 2)
    # The board's disparity at the written size is fx * baseline / depth (20-30 squares, tilted).
    lo, hi = rec["corner_disparity_px"]
    assert 0.6 * rec["fx"] * 3 / 30 < lo < hi < 1.5 * rec["fx"] * 3 / 20
    assert json.loads((out / CALIBRATION_NAME).read_text()) == rec

    folder = StereoFolder(out)
    assert len(folder) == 9
    sample = folder[0]
    assert sample.left.shape == (H // 2, W // 2, 3) and sample.disparity is None


@pytest.mark.skipif(
    not (CHESSBOARD / "left01.jpg").is_file(),
    reason="opencv-doc chessboard pairs absent (tools/fetch_eval_data.sh)",
)
def test_real_opencv_doc_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The opencv-doc rig through the CLI entry: every pair used, rows aligned after rectification."""
    out = tmp_path / "chessboard_rectified"
    assert main([str(CHESSBOARD), str(out), "--scale", "0.5"]) == 0
    assert "13 pairs rectified" in capsys.readouterr().out
    rec = json.loads((out / CALIBRATION_NAME).read_text())
    assert len(rec["pairs_used"]) == 13 and rec["pairs_rectified_corners_found"] == 13
    assert rec["rms_px"] < 0.7
    assert rec["row_error_px"] < 0.5 and rec["row_error_points_px"] < 0.5 and rec["row_error_raw_px"] > 5.0
    assert (rec["width"], rec["height"]) == (320, 240)
    assert 2.5 < rec["baseline"] < 4.5  # squares (8.4 cm at the 25 mm of left_intrinsics.yml)
    lo, hi = rec["corner_disparity_px"]
    assert 40 < lo < hi < 110  # inside the lite model's 128 px at half size
    assert len(StereoFolder(out)) == 13
    assert main([str(tmp_path / "missing"), str(out)]) == 1

    # --holdout: named pairs to heldout/, the rest to train/; the rig is still calibrated on all 13.
    split = tmp_path / "split"
    assert main([str(CHESSBOARD), str(split), "--scale", "0.5", "--holdout", "12,13,14"]) == 0
    rec = json.loads((split / CALIBRATION_NAME).read_text())
    assert rec["pairs_heldout"] == ["12", "13", "14"] and len(rec["pairs_used"]) == 13
    held, train = StereoFolder(split / "heldout"), StereoFolder(split / "train")
    assert [held.item_name(i).split("/")[-1] for i in range(len(held))] == ["12", "13", "14"]
    assert len(train) == 10
    assert not {train.item_name(i).split("/")[-1] for i in range(len(train))} & {"12", "13", "14"}
    assert not (split / "left").exists()
    assert main([str(CHESSBOARD), str(tmp_path / "bad"), "--holdout", "99"]) == 1
    assert "held-out pairs ['99']" in capsys.readouterr().err
