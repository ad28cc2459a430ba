"""Score the scene node's recorded ``semantic/labels`` against a bag's ground-truth semantic images.

Pure (both bags read with ``rosbags``, no ROS), like :mod:`scene_perception.evaluation.stereo_bag_eval`:
what is scored is what the node published, so message conversion and resizing back to the input size are
part of the measurement. The IoU arithmetic is :class:`~scene_perception.evaluation.scene_metrics.
ConfusionMatrix` (the same code the training benchmarks use), accumulated over all frames for the pooled
mIoU (the standard definition: one confusion matrix over the data set, not a mean of per-frame mIoUs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scene_perception.data.bag_io import decode_image, iter_messages, read_stereo_bag
from scene_perception.data.world import CLASSES
from scene_perception.evaluation.scene_metrics import ConfusionMatrix

__all__ = ["LABELS_TOPIC", "SceneEvaluation", "SceneFrameResult", "evaluate_scene_bag"]

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
