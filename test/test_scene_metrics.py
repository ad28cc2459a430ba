"""Scene metrics on cases with known answers: ECE, IoU, AUROC, offset errors, and instance clustering of a
synthetic centroid-offset field."""

from __future__ import annotations

import numpy as np
import pytest

from scene_perception.evaluation.scene_metrics import (
    ConfusionMatrix,
    auroc,
    expected_calibration_error,
    instance_matches,
    inverse_depth_error,
    offset_error,
)
from scene_perception.pipelines.instances import centroid_offsets, cluster_instances


def test_ece_known_toy_cases() -> None:
    # Confidence 0.8 and 8 of 10 correct: perfectly calibrated.
    conf = np.full(10, 0.8)
    correct = np.array([1] * 8 + [0] * 2, bool)
    assert expected_calibration_error(conf, correct)["ece"] == pytest.approx(0.0)
    # Two bins: 0.9-confident and 50 % right (gap 0.4, 4 px); 0.3-confident and 1/2 right (gap 0.2, 2 px).
    conf = np.array([0.9, 0.9, 0.9, 0.9, 0.3, 0.3])
    correct = np.array([1, 1, 0, 0, 1, 0], bool)
    out = expected_calibration_error(conf, correct, bins=10)
    assert out["ece"] == pytest.approx((4 * 0.4 + 2 * 0.2) / 6)
    assert out["mce"] == pytest.approx(0.4)
    assert sum(out["count"]) == 6
    with pytest.raises(ValueError):
        expected_calibration_error(conf, correct[:3])


def test_confusion_matrix_iou() -> None:
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(2 / 3) and np.isnan(iou[2])
    assert cm.miou() == pytest.approx((1 / 2 + 2 / 3) / 2)  # class 2 never labelled: not counted
    assert cm.pixel_accuracy() == pytest.approx(0.75)


def test_auroc() -> None:
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert auroc([0.5, 0.5], [0.5, 0.5]) == 0.5
    assert auroc([0.1, 0.3], [0.2, 0.4]) == pytest.approx(0.75)


def test_offset_and_inverse_depth_errors() -> None:
    pred = np.zeros((2, 2, 2))
    gt = np.zeros((2, 2, 2))
    gt[0, 0, 0], gt[1, 0, 0] = 3.0, 4.0  # error 5 px at (0, 0)
    mask = np.array([[True, True], [False, False]])
    assert offset_error(pred, gt, mask) == (5.0, 2)
    s, n = inverse_depth_error(np.array([0.1, 0.2, np.nan]), np.array([0.2, 0.2, 0.3]))
    assert n == 2 and s == pytest.approx(0.1)


def _two_objects() -> np.ndarray:
    inst = np.zeros((40, 60), np.uint16)
    inst[5:20, 5:25] = 7  # a car
    inst[5:20, 25:50] = 9  # another car, touching the first one
    inst[22:38, 28:31] = 3  # a pole below them
    return inst


def test_centroid_offsets_point_at_centroids() -> None:
    inst = _two_objects()
    off, mask = centroid_offsets(inst)
    assert mask.sum() == (inst > 0).sum()
    ys, xs = np.nonzero(inst == 7)
    vx, vy = xs + off[0, ys, xs], ys + off[1, ys, xs]
    assert np.allclose(vx, xs.mean()) and np.allclose(vy, ys.mean())
    assert (off[:, inst == 0] == 0).all()


def _recovered(got: np.ndarray, inst: np.ndarray, ids=(7, 9, 3)) -> bool:
    """Each true object maps to its own predicted id covering >= 95 % of its pixels; stuff stays 0."""
    if (got[inst == 0] != 0).any():
        return False
    seen = []
    for k in ids:
        vals, counts = np.unique(got[inst == k], return_counts=True)
        best = vals[counts.argmax()]
        if best == 0 or counts.max() < 0.95 * (inst == k).sum():
            return False
        seen.append(best)
    return len(set(seen)) == len(seen)


def test_cluster_instances_recovers_objects_from_noisy_offsets() -> None:
    inst = _two_objects()
    labels = np.zeros(inst.shape, np.uint8)
    labels[(inst == 7) | (inst == 9)] = 4  # car
    labels[inst == 3] = 6  # pole
    off, _ = centroid_offsets(inst)
    rng = np.random.default_rng(0)
    noisy = off + rng.normal(0, 1.0, off.shape).astype(np.float32)
    assert _recovered(cluster_instances(noisy, labels, {4, 5, 6}), inst)
    # Zero offsets (every pixel votes for itself): the touching cars are not separated correctly, so the
    # clustering really relies on the offsets.
    assert not _recovered(cluster_instances(np.zeros_like(off), labels, {4, 5, 6}), inst)
    with pytest.raises(ValueError):
        cluster_instances(off[:1], labels, {4})


def test_instance_matches() -> None:
    gt = np.zeros((10, 20), np.uint16)
    gt[:, :10], gt[:, 10:] = 1, 2
    pred = np.zeros_like(gt)
    pred[:, :9] = 5  # IoU 0.9 with instance 1
    pred[:, 9:13] = 6  # IoU 0.3 with instance 2: not a match
    pred[0, 19] = 7  # 1 px: ignored
    assert instance_matches(pred, gt, min_pixels=20) == (1, 2, 2)
    assert instance_matches(gt, gt, min_pixels=20) == (2, 2, 2)
