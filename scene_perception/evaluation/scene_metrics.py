"""Metrics for the multi-task scene network: semantic IoU, instance-offset error, inverse-depth error, and
the quality of its uncertainty (expected calibration error, out-of-distribution separation).

Why these: they are the columns of Kendall, Gal & Cipolla (CVPR 2018) Table 1 (IoU, instance mean error in
px, inverse-depth mean error) plus the two checks that an uncertainty is more than a picture -- a
calibrated softmax (ECE: confidence matches accuracy) and an epistemic uncertainty that is larger on inputs
unlike the training data (mutual information in vs out, and how well it separates them, AUROC).  Depth
sparsification (AUSE) lives in :mod:`scene_perception.evaluation.uncertainty`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ConfusionMatrix",
    "auroc",
    "expected_calibration_error",
    "instance_matches",
    "inverse_depth_error",
    "offset_error",
]


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix (rows: ground truth, columns: prediction) over many images."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> None:
        pred = np.asarray(pred).ravel().astype(np.int64)
        gt = np.asarray(gt).ravel().astype(np.int64)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
        keep = (gt >= 0) & (gt < self.num_classes) & (pred >= 0) & (pred < self.num_classes)
        if valid is not None:
            keep &= np.asarray(valid).ravel().astype(bool)
        idx = gt[keep] * self.num_classes + pred[keep]
        self.matrix += np.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both prediction and ground truth."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes present in the ground truth (classes never labelled are not counted,
        so a class the data lack cannot score 0 or 1 by accident)."""
        present = self.matrix.sum(1) > 0
        iou = self.iou()
        return float(np.nanmean(iou[present])) if present.any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")


def offset_error(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """Sum of Euclidean offset errors (px) over ``mask`` and the pixel count, so callers can pool images.

    ``pred`` and ``gt`` are (2, H, W) (dx, dy) fields; ``mask`` (H, W) the instance pixels.
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    mask = np.asarray(mask, bool)
    err = np.sqrt(((pred - gt) ** 2).sum(0))[mask]
    return float(err.sum()), int(mask.sum())


def inverse_depth_error(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None
                        ) -> tuple[float, int]:
    """Sum of absolute inverse-depth errors (1/m) over ``mask`` (default: finite ground truth), and the
    pixel count."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    keep = np.isfinite(gt) & np.isfinite(pred)
    if mask is not None:
        keep &= np.asarray(mask, bool)
    return float(np.abs(pred - gt)[keep].sum()), int(keep.sum())


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15
                               ) -> dict[str, float | list[float]]:
    """ECE (Guo et al., 2017): bin pixels by the confidence of the predicted class; ECE is the
    pixel-weighted mean of ``|accuracy - mean confidence|`` over the bins (0 = perfectly calibrated).

    Returns ``ece``, ``mce`` (the worst bin) and per-bin ``accuracy`` / ``confidence`` / ``count``
    (empty bins: NaN, count 0) for reliability diagrams.
    """
    conf = np.asarray(confidence, np.float64).ravel()
    corr = np.asarray(correct, bool).ravel()
    if conf.shape != corr.shape:
        raise ValueError(f"confidence {conf.shape} and correct {corr.shape} differ in size")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    keep = np.isfinite(conf)
    conf, corr = np.clip(conf[keep], 0.0, 1.0), corr[keep]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    acc_sum = np.bincount(which, weights=corr.astype(np.float64), minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, acc_sum / count, np.nan)
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
    gap = np.abs(acc - mean_conf)
    n = count.sum()
    ece = float(np.nansum(gap * count) / n) if n else float("nan")
    mce = float(np.nanmax(gap)) if n else float("nan")
    return {"ece": ece, "mce": mce, "accuracy": acc.tolist(), "confidence": mean_conf.tolist(),
            "count": count.astype(int).tolist()}


def auroc(scores_negative: np.ndarray, scores_positive: np.ndarray) -> float:
    """Area under the ROC curve for "positive has the higher score" (Mann-Whitney U with tie correction):
    0.5 = no separation, 1.0 = every positive above every negative."""
    neg = np.asarray(scores_negative, np.float64).ravel()
    pos = np.asarray(scores_positive, np.float64).ravel()
    neg, pos = neg[np.isfinite(neg)], pos[np.isfinite(pos)]
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    allv = np.concatenate([neg, pos])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size, np.float64)
    sorted_v = allv[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[neg.size:].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (neg.size * pos.size))


def instance_matches(pred: np.ndarray, gt: np.ndarray, min_pixels: int = 20, iou: float = 0.5
                     ) -> tuple[int, int, int]:
    """(matched, ground-truth count, predicted count) of instances with IoU > ``iou``.

    Only instances of at least ``min_pixels`` px count on either side (a 3-pixel distant pole is not a
    fair test of a 96x192 network).  With ``iou >= 0.5`` a match is unique by construction, so precision
    is ``matched / predicted`` and recall ``matched / ground truth``.
    """
    pred = np.asarray(pred).ravel().astype(np.int64)
    gt = np.asarray(gt).ravel().astype(np.int64)
    g_ids, g_inv, g_cnt = np.unique(gt, return_inverse=True, return_counts=True)
    p_ids, p_inv, p_cnt = np.unique(pred, return_inverse=True, return_counts=True)
    g_keep = (g_ids != 0) & (g_cnt >= min_pixels)
    p_keep = (p_ids != 0) & (p_cnt >= min_pixels)
    inter = np.zeros((len(g_ids), len(p_ids)), np.int64)
    np.add.at(inter, (g_inv, p_inv), 1)
    union = g_cnt[:, None] + p_cnt[None, :] - inter
    ious = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    ious = ious[g_keep][:, p_keep]
    matched = int((ious > iou).any(1).sum()) if ious.size else 0
    return matched, int(g_keep.sum()), int(p_keep.sum())
