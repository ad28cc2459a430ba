"""The chessboard's plane as a reference disparity on real stereo pairs that have no ground truth.

A board is a plane, so in a rectified pair its disparity is affine in the image position, ``d = a x + b y +
c``, fixed by the inner corners found to sub-pixel precision in both views.  Inside the board that plane is a
reference that comes from the pair's own geometry: an error against it carries what a real camera adds
(sensor noise, optics, the rig's rectification residual) and no render has.  The opencv-doc pairs have no
GT data set, so, unlike Aloe, they may be validated and tuned on (``benchmarks/chessboard_planes.py``, the
adaptation benchmark's ``--shift chessboard``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: The scored pixels: inside the left corners' convex hull, eroded by this many px (rule_pixel8.md).
ERODE_PX = 2
#: A pair whose plane fit leaves a larger RMS corner residual (px, full size) is no reference
#: (rule_pixel8.md: 7 of the 13 opencv-doc pairs pass).
MAX_PLANE_RMS = 0.25


def board_reference(left: np.ndarray, right: np.ndarray) -> dict[str, Any] | None:
    """The plane fitted to the inner corners' disparities of a rectified RGB pair, and its reference map (NaN
    outside the eroded hull); None when the board is not found in both views."""
    from scene_perception.data.datasets.chessboard import find_corners

    grey = [cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in (left, right)]
    corners = [find_corners(g) for g in grey]
    if corners[0] is None or corners[1] is None:
        return None
    (xl, yl), (xr, yr) = corners[0].T, corners[1].T
    d = xl - xr
    a = np.stack([xl, yl, np.ones_like(xl)], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, d.astype(np.float64), rcond=None)
    residual = d - a @ coef
    h, w = grey[0].shape
    mask = np.zeros((h, w), np.uint8)
    hull = cv2.convexHull(corners[0].astype(np.float32)).round().astype(np.int32)
    cv2.fillConvexPoly(mask, hull, 1)
    mask = cv2.erode(mask, np.ones((2 * ERODE_PX + 1, 2 * ERODE_PX + 1), np.uint8)).astype(bool)
    ys, xs = np.mgrid[0:h, 0:w]
    plane = coef[0] * xs + coef[1] * ys + coef[2]
    return {"plane": coef.tolist(), "rms": float(np.sqrt(np.mean(residual ** 2))),
            "row_error": float(np.mean(np.abs(yl - yr))),
            "corner_disparity": [float(d.min()), float(d.max())],
            "reference": np.where(mask, plane, np.nan).astype(np.float32)}


def plane_reference(left: np.ndarray, right: np.ndarray, max_rms: float = MAX_PLANE_RMS
                    ) -> tuple[dict[str, Any] | None, str]:
    """:func:`board_reference` and why it is no reference: ``(ref, "")`` for a usable pair; ``(None, why)``
    when the board is not found; ``(ref, why)`` when the plane fit leaves an RMS corner residual above
    ``max_rms`` px (kept so a report can show the fit it refused).  The one place the benchmarks apply the
    plane filter."""
    ref = board_reference(left, right)
    if ref is None:
        return None, "board not found in both rectified views"
    if ref["rms"] > max_rms:
        return ref, f"plane RMS {ref['rms']:.3f} px"
    return ref, ""


def rectified_chessboard(src: str | Path, out: str | Path, scale: float = 1.0
                         ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every pair under ``src`` rectified with the package's calibration (``data/datasets/chessboard.py``,
    written to ``out``) and shrunk by ``scale``, as (name, left, right) RGB arrays; ``name`` is the pair's
    number (``"01"`` for ``left01.jpg``)."""
    from scene_perception.data.datasets.chessboard import chessboard_to_folder
    from scene_perception.data.datasets.folder import StereoFolder

    chessboard_to_folder(src, out, scale=scale)
    reader = StereoFolder(out)
    pairs = []
    for i in range(len(reader)):
        s = reader[i]
        pairs.append((Path(reader.item_name(i)).name, s.left, s.right))
    return pairs


def plane_pairs(src: str | Path, max_rms: float = MAX_PLANE_RMS
                ) -> list[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]]:
    """The pairs under ``src`` that are a reference, rectified at full size: ``(name, left, right, ref)``
    for each whose :func:`plane_reference` holds (rule_pixel8.md's 7 of the 13 opencv-doc pairs)."""
    with tempfile.TemporaryDirectory() as tmp:
        pairs = rectified_chessboard(src, tmp)
    out = []
    for name, left, right in pairs:
        ref, why = plane_reference(left, right, max_rms)
        if not why:
            out.append((name, left, right, ref))
    return out


#: The full-size (640x480) pairs are searched to this many px: their board spans 100-204 px of disparity, past
#: lite's 128, so the pipeline refines them twice (rule_pixel8.md, refinement_rule.py's rules).
BOARD_MAX_DISPARITY = 256.0
#: 640x480 -> 320x240: the board's 100-204 px of disparity become 50-102, inside lite's 128 (one refinement).
BOARD_SCALE = 0.5


def shrink_board(pairs: list[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]], scale: float = BOARD_SCALE
                 ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`plane_pairs`' output shrunk by ``scale``: ``(name, left, right, plane disparity in small px)``.

    The views are area-averaged, and so is the plane (NaN off the board stays NaN at the board's edge): its
    disparity at the small pixel, in small-image px.  The benchmarks that score the board refined once use it.
    """
    out = []
    for name, left, right, ref in pairs:
        size = (round(left.shape[1] * scale), round(left.shape[0] * scale))
        shrink = [cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in (left, right)]
        plane = cv2.resize(ref["reference"].astype(np.float32), size, interpolation=cv2.INTER_AREA)
        out.append((name, *shrink, plane * np.float32(scale)))
    return out
