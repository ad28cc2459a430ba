"""Instance ids from a centroid-offset field: every thing pixel votes for its instance centroid, votes are
clustered on a grid, and each pixel takes the id of the cluster its vote fell into (Kendall et al., 2018).

Why a vote grid with peak finding instead of mean-shift or OPTICS: it is a few vectorised numpy/OpenCV
passes (no per-pixel Python loop), and its length scale (``cell`` px) is easy to reason about: two objects
whose centroids are closer than about two cells merge, an object whose votes scatter over several cells
with separate maxima may split.  Votes are clustered per
semantic class, so a person standing in front of a car never merges with it.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

__all__ = ["centroid_offsets", "cluster_instances"]


def centroid_offsets(instance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth offsets ``(2, H, W)`` float32 (dx, dy px: pixel -> centroid of its instance's visible
    pixels) and the mask of pixels that belong to an instance (id != 0)."""
    instance = np.asarray(instance)
    h, w = instance.shape
    offsets = np.zeros((2, h, w), np.float32)
    mask = instance != 0
    if not mask.any():
        return offsets, mask
    ids, inverse = np.unique(instance[mask], return_inverse=True)
    ys, xs = np.nonzero(mask)
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.float64)
    cx = np.bincount(inverse, weights=xs, minlength=len(ids)) / counts
    cy = np.bincount(inverse, weights=ys, minlength=len(ids)) / counts
    offsets[0, ys, xs] = cx[inverse] - xs
    offsets[1, ys, xs] = cy[inverse] - ys
    return offsets, mask


def cluster_instances(offsets: np.ndarray, labels: np.ndarray, thing_classes: Iterable[int], *,
                      cell: float = 4.0, min_votes: int = 4, min_pixels: int = 4,
                      max_distance: float = 16.0, smooth_cells: float = 1.0) -> np.ndarray:
    """Cluster ``pixel + offset`` votes of thing-class pixels into instances.

    Votes are counted on a grid of ``cell`` px; the count map, smoothed by a Gaussian of ``smooth_cells``
    cells, has one peak per instance centre (3x3-cell non-maximum suppression; plateau cells that touch
    count as one peak).  Each voting pixel joins the nearest peak.  Peaks rather than connected regions of
    votes, because imprecise offsets of a row of parked cars smear their votes into one connected band
    that still has one maximum per car.

    Args:
        offsets: (2, H, W) predicted (dx, dy) in px at this resolution.
        labels: (H, W) class ids; pixels of ``thing_classes`` vote, per class.
        cell: vote grid cell size (px).
        min_votes: a peak needs this many votes in its 3x3-cell neighbourhood.
        min_pixels: instances with fewer member pixels are dropped (id 0).
        max_distance: a vote farther than this (px) from every peak leaves its pixel at 0.
        smooth_cells: Gaussian sigma (cells) of the vote-count smoothing.

    Returns:
        (H, W) uint16 ids, 0 for stuff and unassigned pixels, 1..N numbered class by class.
    """
    offsets = np.asarray(offsets, np.float32)
    labels = np.asarray(labels)
    if offsets.ndim != 3 or offsets.shape[0] != 2 or offsets.shape[1:] != labels.shape:
        raise ValueError(f"offsets must be (2, H, W) matching labels {labels.shape}, got {offsets.shape}")
    if cell <= 0:
        raise ValueError(f"cell must be > 0, got {cell}")
    h, w = labels.shape
    out = np.zeros((h, w), np.uint16)
    gh, gw = int(np.ceil(h / cell)), int(np.ceil(w / cell))
    next_id = 1
    kernel = np.ones((3, 3), np.uint8)
    for cls in sorted(set(int(c) for c in thing_classes)):
        ys, xs = np.nonzero(labels == cls)
        if ys.size < min_pixels:
            continue
        vx = xs + offsets[0, ys, xs]
        vy = ys + offsets[1, ys, xs]
        gx = np.clip((vx / cell).astype(np.int64), 0, gw - 1)
        gy = np.clip((vy / cell).astype(np.int64), 0, gh - 1)
        hist = np.bincount(gy * gw + gx, minlength=gh * gw).astype(np.float32).reshape(gh, gw)
        support = cv2.boxFilter(hist, -1, (3, 3), normalize=False, borderType=cv2.BORDER_CONSTANT)
        smooth = cv2.GaussianBlur(hist, (0, 0), sigmaX=smooth_cells, borderType=cv2.BORDER_CONSTANT) \
            if smooth_cells > 0 else hist
        peak = (smooth >= cv2.dilate(smooth, kernel) - 1e-6) & (support >= min_votes) & (smooth > 0)
        n, comp = cv2.connectedComponents(peak.astype(np.uint8), connectivity=8)
        if n <= 1:
            continue
        py, px = np.nonzero(comp)
        k = comp[py, px]
        count = np.bincount(k, minlength=n)[1:].astype(np.float64)
        centre_x = (np.bincount(k, weights=px + 0.5, minlength=n)[1:] / count) * cell
        centre_y = (np.bincount(k, weights=py + 0.5, minlength=n)[1:] / count) * cell
        d2 = (vx[:, None] - centre_x[None]) ** 2 + (vy[:, None] - centre_y[None]) ** 2  # (votes, peaks)
        nearest = d2.argmin(1)
        member = np.where(d2[np.arange(nearest.size), nearest] <= max_distance**2, nearest + 1, 0)
        sizes = np.bincount(member, minlength=n)
        remap = np.zeros(n, np.int64)
        for j in range(1, n):
            if sizes[j] >= min_pixels:
                remap[j] = next_id
                next_id += 1
        out[ys, xs] = remap[member].astype(np.uint16)
    return out
