"""Stereo and depth accuracy metrics (pure numpy), with the conventions the project notes use.

Why one module: the benchmark, training validation and tests must count pixels the same way, or numbers
from different tools cannot be compared.  Conventions:

* The *evaluated* pixels are ``mask`` (default: all) where the ground truth is finite.  Data sets mark
  unknown GT differently (Middlebury: 0), so the caller folds that into ``mask``.
* A prediction may be *sparse*: non-finite predicted pixels are not scored for accuracy (EPE, bad-x, D1)
  but count against ``density``.  This is how classical matchers (SGBM) are usually reported; to compare
  them with a dense network on equal terms, fill them first with :func:`fill_holes_background`.
* Percentages are in percent (0..100); ``delta1`` in :func:`depth_metrics` is a fraction as in the
  depth-estimation literature.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BAD_THRESHOLDS",
    "depth_metrics",
    "disparity_metrics",
    "fill_holes_background",
    "pool_metrics",
]

# Thresholds (px) of the bad-x rates reported by disparity_metrics.
BAD_THRESHOLDS: tuple[int, ...] = (1, 2, 3, 4)


def _evaluated(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Pixels that count at all: inside ``mask`` with finite GT (shape-checked, since a silent broadcast of
    a (H, W, 1) prediction against (H, W) GT would score the wrong pixels)."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    evaluated = np.isfinite(gt)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != gt.shape:
            raise ValueError(f"mask shape {mask.shape} differs from ground truth shape {gt.shape}")
        evaluated &= mask.astype(bool)
    return evaluated


def disparity_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Disparity errors of ``pred`` against ``gt`` (both in px, same shape).

    Returns a dict with
        ``epe``: mean absolute error (px) over scored pixels;
        ``bad1`` .. ``bad4``: % of scored pixels with ``|err| > x`` px (strictly greater, as Middlebury);
        ``d1``: % of scored pixels with ``|err| > 3`` px *and* ``|err| > 5 %`` of ``|gt|`` (KITTI 2015);
        ``density``: % of evaluated pixels where ``pred`` is finite;
        ``n_pixels``: evaluated pixels (``mask`` and finite GT);
        ``n_scored``: evaluated pixels with a finite prediction (the denominator of the error rates).
    Error metrics are NaN when nothing could be scored, so an empty prediction never looks perfect.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    evaluated = _evaluated(pred, gt, mask)
    scored = evaluated & np.isfinite(pred)
    n_pixels, n_scored = int(evaluated.sum()), int(scored.sum())
    out: dict[str, float] = {}
    if n_scored:
        err = np.abs(pred[scored] - gt[scored])
        out["epe"] = float(err.mean())
        for t in BAD_THRESHOLDS:
            out[f"bad{t}"] = 100.0 * float(np.count_nonzero(err > t)) / n_scored
        outlier = (err > 3.0) & (err > 0.05 * np.abs(gt[scored]))
        out["d1"] = 100.0 * float(np.count_nonzero(outlier)) / n_scored
    else:
        out["epe"] = float("nan")
        for t in BAD_THRESHOLDS:
            out[f"bad{t}"] = float("nan")
        out["d1"] = float("nan")
    out["density"] = 100.0 * n_scored / n_pixels if n_pixels else float("nan")
    out["n_pixels"] = n_pixels
    out["n_scored"] = n_scored
    return out


def fill_holes_background(disparity: np.ndarray) -> np.ndarray:
    """Dense copy of a sparse disparity map: each hole takes the smaller of its row neighbours' values.

    Why the *smaller* (background) disparity: holes in a left-view disparity map are mostly occlusions and
    mismatches next to depth edges, where the hidden surface is the one behind; extending the foreground
    would fatten objects.  This is the usual "background fill" used to score sparse matchers densely (as
    the project notes' "filled" SGBM numbers).  A hole touching the image border takes its only neighbour.
    Rows without any valid pixel are then filled the same way along columns; an all-invalid map stays NaN.
    Non-finite values are holes; the input is not modified.
    """
    disp = np.asarray(disparity, dtype=np.float32)
    if disp.ndim != 2:
        raise ValueError(f"disparity must be 2-D (H, W), got shape {disp.shape}")
    out = _fill_rows(disp)
    empty_rows = ~np.isfinite(out).any(axis=1)
    if empty_rows.any() and not empty_rows.all():
        out = _fill_rows(out.T).T
    return np.ascontiguousarray(out)


def _fill_rows(disp: np.ndarray) -> np.ndarray:
    """Row-wise background fill (vectorised: nearest valid index to the left/right via running max/min)."""
    h, w = disp.shape
    valid = np.isfinite(disp)
    cols = np.broadcast_to(np.arange(w), (h, w))
    # Index of the nearest valid pixel at or left of x (-1: none), and at or right of x (w: none).
    left_idx = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    right_idx = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    padded = np.concatenate([disp, np.full((h, 1), np.inf, np.float32)], axis=1)  # index w and -1 -> +inf
    left_val = padded[rows, np.where(left_idx >= 0, left_idx, w)]
    right_val = padded[rows, right_idx]
    filled = np.minimum(left_val, right_val)  # inf on one side: the other side wins
    out = np.where(valid, disp, filled).astype(np.float32)
    out[np.isinf(out) & ~valid] = np.nan  # no valid pixel on either side
    return out


def depth_metrics(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Standard monocular/stereo depth metrics (Eigen et al. 2014) over pixels with positive finite depth.

    GT pixels that are non-positive or non-finite (sky at infinity, no return) are not evaluated; predicted
    pixels that are non-positive or non-finite are not scored and lower ``density`` (as in
    :func:`disparity_metrics`).  Returns ``abs_rel``, ``sq_rel`` (m), ``rmse`` (m), ``rmse_log``,
    ``delta1`` (fraction with ``max(p/g, g/p) < 1.25``), ``density`` (%), ``n_pixels``, ``n_scored``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        evaluated = _evaluated(pred, gt, mask) & (gt > 0)
        scored = evaluated & np.isfinite(pred) & (pred > 0)
    n_pixels, n_scored = int(evaluated.sum()), int(scored.sum())
    out: dict[str, float] = {}
    if n_scored:
        p, g = pred[scored], gt[scored]
        diff = p - g
        out["abs_rel"] = float(np.mean(np.abs(diff) / g))
        out["sq_rel"] = float(np.mean(diff**2 / g))
        out["rmse"] = float(np.sqrt(np.mean(diff**2)))
        out["rmse_log"] = float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2)))
        out["delta1"] = float(np.mean(np.maximum(p / g, g / p) < 1.25))
    else:
        for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1"):
            out[key] = float("nan")
    out["density"] = 100.0 * n_scored / n_pixels if n_pixels else float("nan")
    out["n_pixels"] = n_pixels
    out["n_scored"] = n_scored
    return out


def pool_metrics(per_image: list[dict[str, float]]) -> dict[str, float]:
    """Combine per-image :func:`disparity_metrics` results as if all pixels were scored together.

    Why pixel-weighted rather than a mean of per-image numbers: a pair with few evaluated pixels (mostly
    occluded, mostly sky) would otherwise weigh as much as a full one, and pooled rates are what the
    Middlebury/KITTI tables report.  Rates are weighted by ``n_scored``, density by ``n_pixels``.
    """
    n_pixels = sum(int(m["n_pixels"]) for m in per_image)
    n_scored = sum(int(m["n_scored"]) for m in per_image)
    out: dict[str, float] = {}
    keys = ["epe", *(f"bad{t}" for t in BAD_THRESHOLDS), "d1"]
    for key in keys:
        out[key] = (
            sum(m[key] * m["n_scored"] for m in per_image if m["n_scored"]) / n_scored
            if n_scored
            else float("nan")
        )
    out["density"] = 100.0 * n_scored / n_pixels if n_pixels else float("nan")
    out["n_pixels"] = n_pixels
    out["n_scored"] = n_scored
    return out
