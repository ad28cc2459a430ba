"""Score recorded stereo outputs (a rosbag2 of the node's topics) against a ground-truth bag.

Pure: reads both bags with ``rosbags`` (no ROS needed), so a recording made on a robot can be scored on any
machine.  The outputs are what the node published, not a re-run of the model: this measures the deployed
path, including message conversion and the validity rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scene_perception.data.bag_io import StereoBagFrame, decode_image, iter_messages, read_stereo_bag
from scene_perception.evaluation.metrics import depth_metrics, disparity_metrics, pool_metrics
from scene_perception.evaluation.uncertainty import ause

#: Legend of the "sky valid %" column of the reports.
SKY_VALID_NOTE = (
    "share of ground-truth pixels at infinity (sky) that the node published as a valid disparity: "
    "EPE cannot see them, but each is a surface in depth / points where there is none"
)


def at_infinity(gt_disparity: np.ndarray, doffs: float) -> np.ndarray:
    """Pixels whose matcher-convention GT disparity says infinitely far: ``d + doffs <= 0`` (the sky;
    ``d = 0`` for the synthetic world's cameras).  NaN (unknown) GT is not at infinity."""
    return np.isfinite(gt_disparity) & (gt_disparity + np.float32(doffs) <= 0)


@dataclass
class OutputTopics:
    disparity: str = "/disparity"
    depth: str = "/depth"
    uncertainty: str = "/depth/uncertainty"


@dataclass
class FrameResult:
    stamp_ns: int
    disparity: dict[str, float]
    depth: dict[str, float]
    uncertainty: dict[str, float]
    # Pixels at infinity (sky): how many the GT has and how many the node published as valid anyway.
    # EPE and bad-x cannot see these (no finite GT disparity to compare with), but each one is a surface
    # in the depth image and point cloud where there is none.
    far: dict[str, float] = field(default_factory=dict)


@dataclass
class StereoEvaluation:
    frames: list[FrameResult] = field(default_factory=list)
    missing_stamps: list[int] = field(default_factory=list)
    pooled: dict[str, float] = field(default_factory=dict)
    depth_mean: dict[str, float] = field(default_factory=dict)
    ause_mean: float = float("nan")
    #: % of all frames' pixels at infinity that were published as valid (NaN when the GT has none).
    far_published: float = float("nan")
    # Arrays of the last scored frame, for a figure.
    last: dict[str, np.ndarray] = field(default_factory=dict)


def _outputs_by_stamp(path: Path, topics: OutputTopics) -> dict[int, dict[str, np.ndarray | float]]:
    out: dict[int, dict[str, np.ndarray | float]] = {}
    wanted = [topics.disparity, topics.depth, topics.uncertainty]
    for topic, stamp, _, msg in iter_messages(path, wanted):
        entry = out.setdefault(stamp, {})
        if topic == topics.disparity:
            entry["disparity"] = decode_image(msg.image).astype(np.float32)
            entry["min_disparity"] = float(msg.min_disparity)
        elif topic == topics.depth:
            entry["depth"] = decode_image(msg)
        else:
            entry["depth_std"] = decode_image(msg)
    return out


def _score(frame: StereoBagFrame, outputs: dict[str, np.ndarray | float]) -> tuple[FrameResult, dict]:
    cam = frame.camera
    doffs = cam.doffs if cam is not None else 0.0
    # The node folds the principal-point offset into DisparityImage (Z = f*t/d); undo it to compare with
    # the matcher-convention GT (d = x_left - x_right).
    published = outputs["disparity"]
    valid = published >= outputs["min_disparity"]
    pred = np.where(valid, published - np.float32(doffs), np.nan).astype(np.float32)
    gt = frame.gt["disparity"]
    mask = frame.gt.get("nonoccluded", np.ones_like(gt, dtype=bool)) & np.isfinite(gt) & (gt > 0)
    disp = disparity_metrics(pred, gt, mask)
    far = at_infinity(gt, doffs)
    n_far, n_published = int(far.sum()), int((far & valid).sum())
    far_stats = {"n_far": n_far, "n_published": n_published,
                 "published": 100.0 * n_published / n_far if n_far else float("nan")}
    gt_depth = frame.gt.get("depth")
    depth = (
        depth_metrics(outputs["depth"], gt_depth, mask) if gt_depth is not None and "depth" in outputs else {}
    )
    unc: dict[str, float] = {}
    std_d = None
    if "depth_std" in outputs and cam is not None:
        # Depth std back to disparity std (first order): sigma_d = sigma_Z * (d + doffs)^2 / (f B).
        std_d = outputs["depth_std"] * (published**2) / np.float32(cam.focal_baseline)
        scored = mask & np.isfinite(pred) & np.isfinite(std_d)
        if scored.any():
            unc = ause(np.abs(pred - gt)[scored], std_d[scored])
    arrays = {"left": frame.left, "gt": gt, "pred": pred, "mask": mask}
    if std_d is not None:
        arrays["std"] = std_d
    return FrameResult(frame.stamp_ns, disp, depth, unc, far_stats), arrays


def evaluate_stereo_bag(
    gt_bag: str | Path, output_bag: str | Path, topics: OutputTopics | None = None
) -> StereoEvaluation:
    """Per-frame and pooled disparity / depth / uncertainty metrics of ``output_bag`` against ``gt_bag``."""
    topics = topics or OutputTopics()
    outputs = _outputs_by_stamp(Path(output_bag), topics)
    result = StereoEvaluation()
    for frame in read_stereo_bag(gt_bag):
        if "disparity" not in frame.gt:
            continue
        got = outputs.get(frame.stamp_ns)
        if got is None or "disparity" not in got:
            result.missing_stamps.append(frame.stamp_ns)
            continue
        frame_result, arrays = _score(frame, got)
        result.frames.append(frame_result)
        result.last = arrays
    if result.frames:
        result.pooled = pool_metrics([f.disparity for f in result.frames])
        keys = {k for f in result.frames for k in f.depth}
        result.depth_mean = {
            k: float(np.nanmean([f.depth.get(k, np.nan) for f in result.frames])) for k in keys
        }
        values = [f.uncertainty["ause"] for f in result.frames if "ause" in f.uncertainty]
        result.ause_mean = float(np.mean(values)) if values else float("nan")
        n_far = sum(f.far["n_far"] for f in result.frames)
        if n_far:
            result.far_published = 100.0 * sum(f.far["n_published"] for f in result.frames) / n_far
    return result
