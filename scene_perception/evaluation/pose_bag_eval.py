"""Score the pose node's recorded ``pose`` (PoseWithCovarianceStamped) against a bag's ``/gt/pose``.

Pure (both bags read with ``rosbags``, no ROS), like :mod:`scene_perception.evaluation.scene_bag_eval`: what
is scored is what the node published.  The arithmetic is :func:`scene_perception.evaluation.pose.
pose_metrics` (median translation / rotation error and the 2-sigma-equivalent calibration fractions, the
same code ``benchmarks/pose_accuracy.py`` reports on the model card), so the eval report and the card mean
the same thing.

PoseNet relocalises only in the one world it was trained in: on a bag of another world the errors say
nothing about the model.  :func:`world_mismatch` compares the bag's ``scene-perception synth`` settings
with the world the model card records, so the report can say so instead of printing plausible numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scene_perception.data.bag_io import iter_messages, read_stereo_bag
from scene_perception.data.pose_frames import bag_synth_settings
from scene_perception.evaluation.pose import pose_metrics
from scene_perception.geometry.rotations import canonical_quaternion, matrix_to_quaternion

__all__ = ["POSE_TOPIC", "WORLD_KEYS", "PoseEvaluation", "card_world", "evaluate_pose_bag", "world_mismatch"]

#: Where the pose node publishes when it runs in the root namespace.
POSE_TOPIC = "/pose"
#: ``synth`` settings that define the world (layout); the trajectory and image size may differ.
WORLD_KEYS = ("seed", "world_length")


@dataclass
class PoseEvaluation:
    """Recorded vs ground-truth poses of the frames that have both, in stamp order."""

    stamps_ns: list[int] = field(default_factory=list)
    missing_stamps: list[int] = field(default_factory=list)
    pred_position: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    pred_quaternion: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    covariance: np.ndarray = field(default_factory=lambda: np.zeros((0, 6, 6)))
    gt_position: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    gt_quaternion: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    #: :func:`pose_metrics` of the arrays above (empty when no frame was scored).
    metrics: dict[str, float] = field(default_factory=dict)


def evaluate_pose_bag(gt_bag: str | Path, output_bag: str | Path, pose_topic: str = POSE_TOPIC
                      ) -> PoseEvaluation:
    """Pose errors and covariance calibration of ``output_bag``'s poses against ``gt_bag``'s ``/gt/pose``.

    Frames without a GT pose are skipped; frames with one but no recorded pose go to ``missing_stamps``.
    """
    recorded: dict[int, Any] = {
        stamp: msg.pose for _, stamp, _, msg in iter_messages(output_bag, [pose_topic])
    }
    result = PoseEvaluation()
    rows: list[tuple[np.ndarray, ...]] = []
    for frame in read_stereo_bag(gt_bag):
        if frame.pose is None:
            continue
        pred = recorded.get(frame.stamp_ns)
        if pred is None:
            result.missing_stamps.append(frame.stamp_ns)
            continue
        p, q = pred.pose.position, pred.pose.orientation
        rows.append((
            np.array([p.x, p.y, p.z], np.float64),
            canonical_quaternion(np.array([q.x, q.y, q.z, q.w], np.float64)),
            np.asarray(pred.covariance, np.float64).reshape(6, 6),
            frame.pose[:3, 3].astype(np.float64),
            matrix_to_quaternion(frame.pose[:3, :3]),
        ))
        result.stamps_ns.append(frame.stamp_ns)
    if rows:
        (result.pred_position, result.pred_quaternion, result.covariance, result.gt_position,
         result.gt_quaternion) = (np.stack(col) for col in zip(*rows, strict=True))
        result.metrics = pose_metrics(result.pred_position, result.pred_quaternion, result.covariance,
                                      result.gt_position, result.gt_quaternion)
    return result


def card_world(weights_path: str | Path | None) -> dict[str, Any]:
    """The world (:data:`WORLD_KEYS`) a pose model was trained in, from the ``synth`` settings its card
    records (``metrics.heldout.heldout_bag_synth``: a drive through the training world); {} when unknown."""
    if weights_path is None:
        return {}
    try:
        card = json.loads(Path(weights_path).with_suffix(".json").read_text(encoding="utf-8"))
        synth = card["metrics"]["heldout"]["heldout_bag_synth"]
        return {k: synth[k] for k in WORLD_KEYS if k in synth}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def world_mismatch(bag: str | Path, model_world: dict[str, Any]) -> str:
    """Why ``bag`` is not (known to be) the model's world, or "" when its synth settings match."""
    if not model_world:
        return "the pose model card does not record its training world"
    bag_world = bag_synth_settings(bag)
    if not bag_world:
        return "the bag records no synth settings, so its world is unknown"
    differ = [f"{k} {bag_world.get(k)} (model: {model_world.get(k)})" for k in WORLD_KEYS
              if bag_world.get(k) != model_world.get(k)]
    return ("the bag's world differs: " + ", ".join(differ)) if differ else ""
