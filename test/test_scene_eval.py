"""mIoU of the scene node in ``scene-perception eval`` (issue 7 item 1): scoring and the end-to-end replay.

``evaluate_scene_bag`` is checked on a hand-made output bag (perfect labels -> mIoU 1, one frame missing ->
listed, not scored), and ``evaluate_bag`` end to end on a synthetic bag: the scene node runs next to the
stereo node, its recorded labels equal the offline pipeline's on the bag's left images, and the mIoU in the
report equals one computed here from those labels with plain numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from evalutil import H, W, untrained_weights, write_gt_bag
from rosbags.rosbag2 import Writer

from scene_perception.data.bag_io import _header, _image_msg, read_stereo_bag, typestore
from scene_perception.data.world import CLASSES
from scene_perception.evaluation.scene_bag_eval import LABELS_TOPIC, evaluate_scene_bag
from scene_perception.pipelines.scene import ScenePipeline
from scene_perception.ros.bag_eval import evaluate_bag


@pytest.fixture(scope="module")
def gt_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gt_bag(tmp_path_factory.mktemp("gt"))


def numpy_miou(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Pooled IoU over the classes present in the GT, written out independently of ConfusionMatrix."""
    ious = []
    for c in range(len(CLASSES)):
        inter = sum(int(np.sum((p == c) & (g == c))) for p, g in pairs)
        union = sum(int(np.sum((p == c) | (g == c))) for p, g in pairs)
        if any(np.any(g == c) for _, g in pairs):
            ious.append(inter / union)
    return float(np.mean(ious))


def write_labels_bag(path: Path, labels: dict[int, np.ndarray]) -> Path:
    store = typestore()
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(LABELS_TOPIC, "sensor_msgs/msg/Image", typestore=store)
        for stamp, arr in labels.items():
            msg = _image_msg(store, _header(store, stamp, "left_optical"), arr, "mono8")
            writer.write(conn, stamp, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    return path


def test_scoring_perfect_wrong_and_missing_frames(gt_bag: Path, tmp_path: Path) -> None:
    frames = list(read_stereo_bag(gt_bag))
    assert len(frames) == 2 and all("semantic" in f.gt for f in frames)
    perfect = write_labels_bag(tmp_path / "perfect", {f.stamp_ns: f.gt["semantic"] for f in frames})
    ev = evaluate_scene_bag(gt_bag, perfect)
    assert len(ev.frames) == 2 and not ev.missing_stamps
    assert ev.miou == pytest.approx(1.0) and ev.pixel_accuracy == pytest.approx(1.0)

    # Frame 0 all "road", frame 1 missing: only frame 0 is scored.
    road = np.full((H, W), 1, np.uint8)
    partial = write_labels_bag(tmp_path / "partial", {frames[0].stamp_ns: road})
    ev = evaluate_scene_bag(gt_bag, partial)
    assert ev.missing_stamps == [frames[1].stamp_ns] and len(ev.frames) == 1
    assert ev.miou == pytest.approx(numpy_miou([(road, frames[0].gt["semantic"])]))
    assert ev.pixel_accuracy == pytest.approx(float(np.mean(frames[0].gt["semantic"] == 1)))


@pytest.mark.ros
def test_eval_reports_scene_miou_from_the_live_node(
    gt_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stereo_w, scene_w = untrained_weights(tmp_path)
    out = tmp_path / "eval"
    assert evaluate_bag(gt_bag, out, "lite", str(stereo_w), scene_weights=str(scene_w)) == 0
    # The bag has /gt/pose but is not from the shipped PoseNet's world: the automatic choice skips the pose
    # node rather than reporting errors that mean nothing (test_pose_eval forces it with pose=True).
    printed = capsys.readouterr().out
    assert "pose errors skipped: the pose model was trained in another world" in printed
    assert "stereo_depth and scene node(s)" in printed

    frames = list(read_stereo_bag(gt_bag))
    pipeline = ScenePipeline.from_weights(scene_w, device="cpu")
    ev = evaluate_scene_bag(gt_bag, out / "outputs")
    assert len(ev.frames) == 2 and not ev.missing_stamps
    recorded = ev.last["pred"]
    np.testing.assert_array_equal(recorded, pipeline(frames[-1].left).labels)  # node == offline pipeline
    offline = [(pipeline(f.left).labels, f.gt["semantic"]) for f in frames]
    expected = numpy_miou(offline)
    assert ev.miou == pytest.approx(expected)

    report = (out / "report.md").read_text()
    assert "## Semantics (scene node)" in report and "2 frames, 0 without output" in report
    assert f"mIoU {expected * 100:.1f} %" in report
    assert "UNTRAINED SCENE WEIGHTS" in report
    assert "## Camera pose" not in report
    assert (out / "semantic.png").stat().st_size > 0 and "![semantic.png](semantic.png)" in report
