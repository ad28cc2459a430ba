"""Calibrate a stereo rig from raw chessboard pairs and write them rectified, as a folder of unlabelled pairs
(pure, no ROS; OpenCV does the maths, as its ``stereo_calib.cpp`` sample does).

The pairs are the real, unlabelled stereo that Debian's ``opencv-doc`` ships (``tools/fetch_eval_data.sh``
puts ``left01..14.jpg`` / ``right01..14.jpg``, 640x480, in ``.cache/eval/chessboard``; 9x6 inner corners).
They have no ground truth, so they may be trained on (self-supervised: ``train stereo --mode mixed`` or
``--mode self_supervised`` with ``--dataset folder:OUT``); Aloe, which has GT, stays evaluation only.  The
package's other two-view images are no rectifiable stereo: ``left.jpg`` / ``right.jpg`` (warpPerspective
demo) differ by a large rotation, the rest are single views, optical-flow pairs or mono videos.

Steps: ``findChessboardCorners`` + ``cornerSubPix`` in both views (pairs where the board is not found in both
are left out of the calibration, and logged); ``stereoCalibrate`` (one focal length, square pixels, no
tangential distortion, rational model with k1, k2, k6: the sample's flags); ``stereoRectify`` with
``CALIB_ZERO_DISPARITY`` (one principal point, so ``d = x_left - x_right`` with no offset) and by default
``alpha=0``: the rectified images show valid pixels only.  With ``alpha=1`` every source pixel is kept but
curved black borders, shaped differently in the two views, come in; a photometric loss would compare that
fill (no information) and match its edges, so the periphery is cropped instead.  Every pair of the
calibration's image size is then remapped (bilinear), also pairs whose board was not found, and shrunk by
``scale`` (INTER_AREA).

Output (the ``left/`` + ``right/`` layout of :class:`~scene_perception.data.datasets.folder.StereoFolder`;
files are rewritten, stale ones not removed): ``OUT/left/<n>.png``, ``OUT/right/<n>.png`` (``left01.jpg`` ->
``01.png``) and ``OUT/calibration.json``: the camera of the written images (``fx``, ``cx``, ``cy``,
``width``, ``height``; ``baseline`` in the units of ``square``), ``rms_px`` (stereoCalibrate's reprojection
error), ``row_error_px`` (mean ``|y_left - y_right|`` of the corners found again in the full-size rectified
images; ``row_error_points_px`` the same from the raw corners mapped by the rectification,
``row_error_raw_px`` before rectification), ``corner_disparity_px`` (the board's disparity range in written
px), the pairs used / skipped and the full-size matrices (``calibration``).

    python -m scene_perception.data.datasets.chessboard .cache/eval/chessboard \\
        .cache/real_unlabelled/chessboard_rectified --scale 0.5

On the opencv-doc pairs: 13 of 13 pairs used, RMS 0.48 px, rectified row error 0.22 px (12.8 px raw),
baseline 3.34 squares; the board sits at 100-204 px of disparity at full size, beyond the lite model's 128,
hence ``--scale 0.5`` (320x240, 50-102 px).  ``--square`` is the square size (default 1.0, the sample's: the
baseline is in squares; the package's ``left_intrinsics.yml`` of the same camera says 0.025 m, i.e. 8.4 cm).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scene_perception.data.datasets.folder import StereoFolder
from scene_perception.data.datasets.sample import DatasetError

__all__ = [
    "BOARD",
    "CALIBRATION_NAME",
    "StereoCalibration",
    "board_points",
    "calibrate_stereo",
    "chessboard_to_folder",
    "find_corners",
    "main",
]

_LOG = logging.getLogger(__name__)

#: Inner corners (columns, rows) of the opencv-doc board (``stereo_calib.cpp``'s default).
BOARD = (9, 6)
CALIBRATION_NAME = "calibration.json"

#: ``stereo_calib.cpp``'s stereoCalibrate flags less ``CALIB_USE_INTRINSIC_GUESS`` (see calibrate_stereo).
_FLAGS = (cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_ZERO_TANGENT_DIST | cv2.CALIB_SAME_FOCAL_LENGTH
          | cv2.CALIB_RATIONAL_MODEL | cv2.CALIB_FIX_K3 | cv2.CALIB_FIX_K4 | cv2.CALIB_FIX_K5)
_CRITERIA = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-5)


def board_points(board: tuple[int, int] = BOARD, square: float = 1.0) -> np.ndarray:
    """(N, 3) float32 corner positions on the board plane (z = 0), row by row as OpenCV finds them."""
    obj = np.zeros((board[0] * board[1], 3), np.float32)
    obj[:, :2] = np.mgrid[0 : board[0], 0 : board[1]].T.reshape(-1, 2) * square
    return obj


def find_corners(gray: np.ndarray, board: tuple[int, int] = BOARD, win: int = 11) -> np.ndarray | None:
    """(N, 2) float32 sub-pixel inner corners of ``board`` in a grey image, or None when not found."""
    found, corners = cv2.findChessboardCorners(
        gray, board, cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    )
    if not found:
        return None
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    return cv2.cornerSubPix(gray, corners, (win, win), (-1, -1), crit).reshape(-1, 2)


@dataclass
class StereoCalibration:
    """A calibrated, rectified rig: raw intrinsics ``k``/``d``, right-from-left ``r``/``t``, rectification
    ``r1``/``r2``/``p1``/``p2``/``q`` (``stereoRectify``), image ``size`` (width, height)."""

    size: tuple[int, int]
    rms: float
    k1: np.ndarray
    d1: np.ndarray
    k2: np.ndarray
    d2: np.ndarray
    r: np.ndarray
    t: np.ndarray
    r1: np.ndarray
    r2: np.ndarray
    p1: np.ndarray
    p2: np.ndarray
    q: np.ndarray
    alpha: float

    @property
    def fx(self) -> float:
        return float(self.p1[0, 0])

    @property
    def cx(self) -> float:
        return float(self.p1[0, 2])

    @property
    def cy(self) -> float:
        return float(self.p1[1, 2])

    @property
    def baseline(self) -> float:
        """Distance between the rectified centres, in the units of the board points."""
        return float(-self.p2[0, 3] / self.p2[0, 0])

    def maps(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """``initUndistortRectifyMap`` of the left and the right view (float32 x and y maps)."""
        return tuple(  # type: ignore[return-value]
            cv2.initUndistortRectifyMap(k, d, rr, p, self.size, cv2.CV_32FC1)
            for k, d, rr, p in ((self.k1, self.d1, self.r1, self.p1), (self.k2, self.d2, self.r2, self.p2))
        )

    def rectify_points(self, points: np.ndarray, view: int) -> np.ndarray:
        """Raw pixel positions of view 0 (left) or 1 (right) -> rectified pixel positions, (N, 2)."""
        k, d, rr, p = ((self.k1, self.d1, self.r1, self.p1), (self.k2, self.d2, self.r2, self.p2))[view]
        pts = np.asarray(points, np.float64).reshape(-1, 1, 2)
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9)
        if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x spelling
            return cv2.undistortPointsIter(pts, k, d, rr, p, crit).reshape(-1, 2)
        return cv2.undistortPoints(pts, k, d, R=rr, P=p, criteria=crit).reshape(-1, 2)

    def to_json(self) -> dict[str, Any]:
        return {
            "width": self.size[0], "height": self.size[1], "fx": self.fx, "cx": self.cx, "cy": self.cy,
            "baseline": self.baseline, "rms_px": self.rms, "alpha": self.alpha,
            **{name: getattr(self, name).tolist()
               for name in ("k1", "d1", "k2", "d2", "r", "t", "r1", "r2", "p1", "p2", "q")},
        }


def calibrate_stereo(object_points: list[np.ndarray], left_points: list[np.ndarray],
                     right_points: list[np.ndarray], size: tuple[int, int], alpha: float = 0.0
                     ) -> StereoCalibration:
    """``stereoCalibrate`` and ``stereoRectify`` (``CALIB_ZERO_DISPARITY``, ``alpha``) of corresponding
    corners; ``size`` = (w, h).

    The flags are ``stereo_calib.cpp``'s except that OpenCV initialises the intrinsics itself (a per-camera
    calibration) instead of the sample's ``initCameraMatrix2D`` guess: on the opencv-doc pairs that reaches
    RMS 0.48 px instead of 0.60, with fx 534.5 px next to the 535.9 of the package's ``left_intrinsics.yml``.
    """
    obj = [np.asarray(o, np.float32).reshape(-1, 3) for o in object_points]
    views = [[np.asarray(p, np.float32).reshape(-1, 1, 2) for p in pts]
             for pts in (left_points, right_points)]
    rms, k1, d1, k2, d2, r, t, _, _ = cv2.stereoCalibrate(
        obj, views[0], views[1], None, None, None, None, size, flags=_FLAGS, criteria=_CRITERIA
    )
    r1, r2, p1, p2, q, *_ = cv2.stereoRectify(
        k1, d1, k2, d2, size, r, t, flags=cv2.CALIB_ZERO_DISPARITY, alpha=alpha
    )
    return StereoCalibration(size, float(rms), k1, d1, k2, d2, r, t, r1, r2, p1, p2, q, float(alpha))


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _out_name(name: str, index: int) -> str:
    stem = re.sub(r"(?i)left", "", name).replace("/", "_").strip("_-. ")
    return stem or f"{index:04d}"


def chessboard_to_folder(src: str | Path, out: str | Path, board: tuple[int, int] = BOARD,
                         square: float = 1.0, alpha: float = 0.0, scale: float = 1.0,
                         holdout: Sequence[str] = ()) -> dict[str, Any]:
    """Calibrate the rig from the chessboard pairs under ``src`` (any layout :class:`StereoFolder` reads),
    write every pair rectified (then shrunk by ``scale``, INTER_AREA) to ``out/left`` + ``out/right`` and the
    calibration to ``out/calibration.json``; returns that JSON's content (see the module docstring).

    ``holdout``: written names (``"12"`` for ``left12.jpg``) kept out of training.  With any, the pairs go
    to ``out/train/{left,right}`` and ``out/heldout/{left,right}`` instead, so ``folder:out/train`` trains
    on the rest and a GT-free score (photometric error, left-right consistency) of ``out/heldout`` judges a
    self-supervised run on real pairs it never saw.  All pairs still calibrate the rig: the calibration
    uses the board's corners, not the network.

    Raises:
        DatasetError: no pairs under ``src``, or fewer than 3 with the board found in both views; a held-out
            name that is no written pair.
        ValueError: ``scale`` not in (0, 1].
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    holdout = set(holdout)
    src, out = Path(src), Path(out)
    reader = StereoFolder(src)
    samples, used, skipped, no_board, corners = [], [], [], [], []
    size: tuple[int, int] | None = None
    for i in range(len(reader)):
        name = reader.item_name(i)
        try:
            s = reader[i]
        except DatasetError as exc:  # left and right of different sizes
            _LOG.warning("skipping %s: %s", name, exc)
            skipped.append(name)
            continue
        h, w = s.left.shape[:2]
        size = size or (w, h)
        if (w, h) != size:
            _LOG.warning("skipping %s: %dx%d, the first pair is %dx%d", name, w, h, *size)
            skipped.append(name)
            continue
        samples.append(s)
        found = [find_corners(_gray(img), board) for img in (s.left, s.right)]
        if found[0] is None or found[1] is None:
            views = " and ".join(v for v, c in zip(("left", "right"), found, strict=True) if c is None)
            _LOG.warning("%s: board %dx%d not found in the %s view: not used for the calibration",
                         name, board[0], board[1], views)
            no_board.append(name)
            continue
        used.append(name)
        corners.append(found)
    if size is None:
        raise DatasetError(f"no readable pairs under {src}")
    if len(used) < 3:
        raise DatasetError(f"board {board[0]}x{board[1]} found in both views of {len(used)} pairs under "
                           f"{src}; need at least 3")
    calib = calibrate_stereo([board_points(board, square)] * len(used), [c[0] for c in corners],
                             [c[1] for c in corners], size, alpha)
    (map_lx, map_ly), (map_rx, map_ry) = calib.maps()
    outside = 0.0
    for mx, my in ((map_lx, map_ly), (map_rx, map_ry)):
        outside = max(outside, float(np.mean((mx < 0) | (mx > size[0] - 1) | (my < 0) | (my > size[1] - 1))))
    out_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    sx = out_size[0] / size[0]  # written px per rectified px along x (disparities scale by it)
    stems = [_out_name(smp.name, i) for i, smp in enumerate(samples)]
    if holdout - set(stems):
        raise DatasetError(f"held-out pairs {sorted(holdout - set(stems))} are not among the pairs under "
                           f"{src} ({', '.join(stems)})")

    def folder(stem: str) -> Path:
        return out if not holdout else out / ("heldout" if stem in holdout else "train")

    for stem in stems:
        for view in ("left", "right"):
            (folder(stem) / view).mkdir(parents=True, exist_ok=True)
    raw_dy = [np.abs(c[0][:, 1] - c[1][:, 1]) for c in corners]
    rect_dy, disparities, names = [], [], []
    for index, s in enumerate(samples):
        # Replicate, not black: with alpha=0 only a few edge pixels (~0.02 %) map outside the source.
        rect = [cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                for img, (mx, my) in ((s.left, (map_lx, map_ly)), (s.right, (map_rx, map_ry)))]
        stem = stems[index]
        names.append(stem)
        for view, img in zip(("left", "right"), rect, strict=True):
            if scale != 1.0:
                img = cv2.resize(img, out_size, interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder(stem) / view / f"{stem}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if s.name in used:
            q = [find_corners(_gray(img), board) for img in rect]
            if q[0] is not None and q[1] is not None:
                rect_dy.append(np.abs(q[0][:, 1] - q[1][:, 1]))
                disparities.append(q[0][:, 0] - q[1][:, 0])
    point_dy = [np.abs(calib.rectify_points(c[0], 0)[:, 1] - calib.rectify_points(c[1], 1)[:, 1])
                for c in corners]
    disp = np.concatenate(disparities) if disparities else np.zeros(0)
    record = {
        "source": str(src),
        "board": list(board),
        "square": square,
        "scale": scale,
        # The camera of the written images (rectified, then shrunk: pixel centres scale about -0.5).
        "width": out_size[0], "height": out_size[1], "fx": calib.fx * sx,
        "cx": (calib.cx + 0.5) * sx - 0.5, "cy": (calib.cy + 0.5) * out_size[1] / size[1] - 0.5,
        "baseline": calib.baseline, "rms_px": calib.rms, "alpha": alpha,
        "row_error_px": float(np.concatenate(rect_dy).mean()) if rect_dy else None,
        "row_error_max_px": float(np.concatenate(rect_dy).max()) if rect_dy else None,
        "row_error_points_px": float(np.concatenate(point_dy).mean()),
        "row_error_raw_px": float(np.concatenate(raw_dy).mean()),
        "pairs_rectified_corners_found": len(rect_dy),
        # x_left - x_right of the corners, in the written images' px (the board is the nearest object).
        "corner_disparity_px": [float(disp.min() * sx), float(disp.max() * sx)] if disp.size else None,
        "outside_source_fraction": outside,
        "pairs_used": used,
        "pairs_board_not_found": no_board,
        "pairs_skipped": skipped,
        "pairs_written": names,
        "pairs_heldout": sorted(holdout),
        "calibration": calib.to_json(),
    }
    (out / CALIBRATION_NAME).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Calibrate a stereo rig from raw chessboard pairs and write them rectified (left/ + "
                    "right/ + calibration.json): real stereo without GT for self-supervised training"
    )
    p.add_argument("src", nargs="?", default=".cache/eval/chessboard")
    p.add_argument("out", nargs="?", default=".cache/real_unlabelled/chessboard_rectified")
    p.add_argument("--board", default=f"{BOARD[0]}x{BOARD[1]}", help="inner corners COLSxROWS (default 9x6)")
    p.add_argument("--square", type=float, default=1.0, help="square size (the baseline's unit; default 1)")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="stereoRectify alpha: 0 = valid pixels only, no black border (default); "
                        "1 = all pixels")
    p.add_argument("--scale", type=float, default=1.0,
                   help="shrink the rectified pairs by this factor (0, 1] (0.5 for the opencv-doc pairs: "
                        "their board lies at 100-204 px of disparity at full size, beyond lite's 128)")
    p.add_argument("--holdout", default="",
                   help="comma-separated pair names (e.g. 12,13,14) written to OUT/heldout, the rest to "
                        "OUT/train: real pairs a self-supervised run never trains on, to judge it by")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        cols, rows = (int(v) for v in args.board.lower().split("x"))
        holdout = [n.strip() for n in args.holdout.split(",") if n.strip()]
        rec = chessboard_to_folder(args.src, args.out, (cols, rows), args.square, args.alpha, args.scale,
                                   holdout)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    row = "-" if rec["row_error_px"] is None else f"{rec['row_error_px']:.3f}"
    disp = rec["corner_disparity_px"] or [float("nan")] * 2
    print(f"{len(rec['pairs_written'])} pairs rectified to {args.out} ({rec['width']}x{rec['height']}); "
          f"calibrated on {len(rec['pairs_used'])}: rms {rec['rms_px']:.3f} px, "
          f"baseline {rec['baseline']:.3f} "
          f"(square {args.square:g}); rectified row error {row} px (raw {rec['row_error_raw_px']:.2f} px); "
          f"written camera fx {rec['fx']:.1f} cx {rec['cx']:.1f} cy {rec['cy']:.1f} px, board disparity "
          f"{disp[0]:.0f}-{disp[1]:.0f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
