"""Score the scene node's recorded ``semantic/labels`` against a bag's ground-truth semantic images.

Pure (both bags read with ``rosbags``, no ROS), like :mod:`scene_perception.evaluation.stereo_bag_eval`:
what is scored is what the node published, so message conversion and resizing back to the input size are
part of the measurement. The IoU arithmetic is :class:`~scene_perception.evaluation.scene_metrics.
ConfusionMatrix` (the same code the training benchmarks use), accumulated over all frames for the pooled
mIoU (the standard definition: one confusion matrix over the data set, not a mean of per-frame mIoUs).

The node publishes labels and instance ids but no class probabilities or offsets, so the calibration (ECE)
and instance scores come from :func:`evaluate_scene_offline`: the same :class:`~scene_perception.pipelines.
scene.ScenePipeline` the node wraps, run over the bag's left images (issue 7 allows "nodes or pipelines").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from scene_perception.data.bag_io import decode_image, iter_messages, read_stereo_bag
from scene_perception.evaluation.scene_metrics import (
    ConfusionMatrix,
    expected_calibration_error,
    instance_matches,
    offset_error,
)
from scene_perception.models.labels import CLASSES
from scene_perception.pipelines.instances import centroid_offsets

__all__ = [
    "LABELS_TOPIC",
    "SceneEvaluation",
    "SceneFrameResult",
    "SceneOfflineEvaluation",
    "evaluate_scene_bag",
    "evaluate_scene_offline",
    "input_size_confidence",
]

#: Where the scene node publishes its class ids when it runs in the root namespace.
LABELS_TOPIC = "/semantic/labels"


@dataclass
class SceneFrameResult:
    stamp_ns: int
    miou: float
    pixel_accuracy: float


@dataclass
class SceneEvaluation:
    frames: list[SceneFrameResult] = field(default_factory=list)
    missing_stamps: list[int] = field(default_factory=list)
    confusion: ConfusionMatrix = field(default_factory=lambda: ConfusionMatrix(len(CLASSES)))
    class_names: tuple[str, ...] = tuple(c.name for c in CLASSES)
    #: Arrays of the last scored frame, for a figure: left (RGB), gt and pred (class ids).
    last: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def miou(self) -> float:
        """Pooled mean IoU over the classes present in the ground truth."""
        return self.confusion.miou()

    @property
    def pixel_accuracy(self) -> float:
        return self.confusion.pixel_accuracy()

    def iou(self) -> dict[str, float]:
        """Pooled IoU per class name (NaN: class neither labelled nor predicted)."""
        return dict(zip(self.class_names, (float(v) for v in self.confusion.iou()), strict=True))


def _labels_by_stamp(path: Path, topic: str) -> dict[int, np.ndarray]:
    return {stamp: decode_image(msg) for _, stamp, _, msg in iter_messages(path, [topic])}


def evaluate_scene_bag(
    gt_bag: str | Path, output_bag: str | Path, labels_topic: str = LABELS_TOPIC
) -> SceneEvaluation:
    """Per-frame and pooled mIoU / pixel accuracy of ``output_bag``'s labels against ``gt_bag``'s GT.

    Frames without GT semantics are skipped; frames with GT but no published labels are listed in
    ``missing_stamps`` (not scored as wrong: the stereo report counts them the same way).
    """
    outputs = _labels_by_stamp(Path(output_bag), labels_topic)
    result = SceneEvaluation()
    n = len(result.class_names)
    for frame in read_stereo_bag(gt_bag):
        gt = frame.gt.get("semantic")
        if gt is None:
            continue
        pred = outputs.get(frame.stamp_ns)
        if pred is None:
            result.missing_stamps.append(frame.stamp_ns)
            continue
        if pred.shape != gt.shape:
            raise ValueError(
                f"frame {frame.stamp_ns}: labels are {pred.shape[1]}x{pred.shape[0]} but the GT is "
                f"{gt.shape[1]}x{gt.shape[0]} (the node must publish at the input size)"
            )
        per_frame = ConfusionMatrix(n)
        per_frame.update(pred, gt)
        result.confusion.matrix += per_frame.matrix
        result.frames.append(SceneFrameResult(frame.stamp_ns, per_frame.miou(), per_frame.pixel_accuracy()))
        result.last = {"left": frame.left, "gt": gt, "pred": pred}
    return result


@dataclass
class SceneOfflineEvaluation:
    """Calibration and instance scores of the scene pipeline on a bag's left images (pooled over frames).

    ``ece`` / ``mce``: :func:`expected_calibration_error` of the max class probability vs "label correct",
    every GT-labelled pixel at the input size; ``instance_error_px``: mean Euclidean error of the predicted
    centroid offsets over GT instance pixels (Kendall et al. 2018, Table 1); recall / precision of the
    clustered instances (>= 20 px, IoU > 0.5, :func:`instance_matches`).
    """

    frames: int = 0
    ece: float = float("nan")
    mce: float = float("nan")
    ece_bins: int = 15
    mean_confidence: float = float("nan")
    accuracy: float = float("nan")
    instance_error_px: float = float("nan")
    instance_pixels: int = 0
    instances_matched: int = 0
    instances_gt: int = 0
    instances_pred: int = 0
    mc_samples: int = 0

    @property
    def instance_recall(self) -> float:
        return self.instances_matched / self.instances_gt if self.instances_gt else float("nan")

    @property
    def instance_precision(self) -> float:
        return self.instances_matched / self.instances_pred if self.instances_pred else float("nan")


def input_size_confidence(probabilities: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Max class probability per pixel at ``size`` (H, W), upsampled exactly as the pipeline upsamples the
    mean softmax before its argmax (bilinear, half-pixel centres), so it is the confidence *of* the
    published label."""
    p = torch.from_numpy(np.ascontiguousarray(probabilities, np.float32))
    if tuple(p.shape[1:]) != tuple(size):
        p = F.interpolate(p[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
    return p.max(0).values.numpy()


def evaluate_scene_offline(gt_bag: str | Path, pipeline: Any, ece_bins: int = 15) -> SceneOfflineEvaluation:
    """Run ``pipeline`` (a ScenePipeline) on every left image of ``gt_bag`` that has semantic GT; score
    calibration (ECE) and, where the bag has ``/gt/instance``, the instance offsets and clusters."""
    confidence, correct = [], []
    off_sum, off_n = 0.0, 0
    matched = n_gt = n_pred = 0
    frames = 0
    for frame in read_stereo_bag(gt_bag):
        gt = frame.gt.get("semantic")
        if gt is None:
            continue
        r = pipeline(frame.left)
        frames += 1
        confidence.append(input_size_confidence(r.probabilities, gt.shape).ravel())
        correct.append((r.labels == gt).ravel())
        gt_instance = frame.gt.get("instance")
        if gt_instance is not None:
            gt_off, mask = centroid_offsets(gt_instance)
            s, n = offset_error(r.offsets, gt_off, mask)
            off_sum, off_n = off_sum + s, off_n + n
            m, g, p = instance_matches(r.instances, gt_instance)
            matched, n_gt, n_pred = matched + m, n_gt + g, n_pred + p
    result = SceneOfflineEvaluation(frames=frames, ece_bins=ece_bins, mc_samples=int(pipeline.mc_samples),
                                    instance_pixels=off_n, instances_matched=matched, instances_gt=n_gt,
                                    instances_pred=n_pred)
    if frames:
        conf, corr = np.concatenate(confidence), np.concatenate(correct)
        ece = expected_calibration_error(conf, corr, ece_bins)
        result.ece, result.mce = float(ece["ece"]), float(ece["mce"])
        result.mean_confidence, result.accuracy = float(conf.mean()), float(corr.mean())
    if off_n:
        result.instance_error_px = off_sum / off_n
    return result
