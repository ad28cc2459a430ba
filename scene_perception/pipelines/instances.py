"""Instance ids from a centroid-offset field: every thing pixel votes for its instance centroid, votes are
clustered on a grid, and each pixel takes the id of the cluster its vote fell into (Kendall et al., 2018).

Why a grid and connected components instead of mean-shift or OPTICS: it is a few vectorised numpy/OpenCV
passes (no per-pixel Python loop), its cost does not grow with the number of instances, and its single
length scale (``cell`` px) is easy to reason about: two objects whose centroids are closer than about two
cells merge, an object whose votes scatter over more than a few cells may split.  Votes are clustered per
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
                      max_distance: float = 8.0) -> np.ndarray:
    """Cluster ``pixel + offset`` votes of thing-class pixels into instances.

    Args:
        offsets: (2, H, W) predicted (dx, dy) in px at this resolution.
        labels: (H, W) class ids; pixels of ``thing_classes`` vote, per class.
        cell: vote grid cell size (px).
        min_votes: a 3x3 cell neighbourhood needs this many votes to seed a cluster.
        min_pixels: clusters with fewer member pixels are dropped (id 0).
        max_distance: a pixel whose vote lands outside every seed joins the nearest seed's cluster when
            its vote is within this many px of it, otherwise it stays 0.

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
        seeds = ((support >= min_votes) & (hist > 0)).astype(np.uint8)
        n, comp = cv2.connectedComponents(seeds, connectivity=8)
        if n <= 1:
            continue
        member = comp[gy, gx]
        orphan = member == 0
        if orphan.any():
            # Nearest seed cell (in grid units) for votes that missed every seed.
            dist, nearest = cv2.distanceTransformWithLabels(1 - seeds, cv2.DIST_L2, 5,
                                                            labelType=cv2.DIST_LABEL_PIXEL)
            seed_y, seed_x = np.nonzero(seeds)
            # distanceTransformWithLabels numbers seed pixels 1.. in row-major scan order.
            label_of = np.zeros(seed_y.size + 1, np.int32)
            label_of[1:] = comp[seed_y, seed_x]
            oy, ox = gy[orphan], gx[orphan]
            near = dist[oy, ox] * cell <= max_distance
            member_orphan = np.where(near, label_of[nearest[oy, ox]], 0)
            member = member.copy()
            member[orphan] = member_orphan
        sizes = np.bincount(member, minlength=n)
        remap = np.zeros(n, np.int64)
        for k in range(1, n):
            if sizes[k] >= min_pixels:
                remap[k] = next_id
                next_id += 1
        out[ys, xs] = remap[member].astype(np.uint16)
    return out
