"""``scene-perception eval``: replay a rosbag2 through the live nodes, record, score, report.

1. Replay the bag's stereo topics (serialized bytes, lock-step: one frame at a time, waiting for the nodes'
   outputs, so no frame is dropped and the score is deterministic) over Fast DDS into a fresh stereo depth
   lifecycle node -- and, when the bag has semantic ground truth, a scene node on the same left images;
   when it has ground-truth poses and a pose model is available, a pose node too -- and record everything
   they publish into a second bag.
2. Score the recorded outputs against the bag's ground truth (pure, from the two bags:
   :mod:`scene_perception.evaluation.stereo_bag_eval`, :mod:`scene_perception.evaluation.scene_bag_eval`
   for the scene node's mIoU, :mod:`scene_perception.evaluation.pose_bag_eval` for the pose errors and
   covariance calibration).  The scene node publishes no probabilities or offsets, so ECE and the instance
   scores come from the same ScenePipeline run offline over the bag's left images.
3. Print a table and write a markdown report with figures.

This is the deployed path end to end (message conversion, sync, validity rules), with a bag in place of the
camera driver.  ``scene-perception demo`` is the same with a synthetic bag rendered first.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any, NamedTuple

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter
from tqdm import tqdm

from scene_perception.data.bag_io import DEFAULT_TOPICS
from scene_perception.evaluation.pose_bag_eval import (
    POSE_TOPIC,
    card_world,
    evaluate_pose_bag,
    world_mismatch,
)
from scene_perception.evaluation.scene_bag_eval import (
    LABELS_TOPIC,
    evaluate_scene_bag,
    evaluate_scene_offline,
)
from scene_perception.evaluation.stereo_bag_eval import SKY_VALID_NOTE, StereoEvaluation, evaluate_stereo_bag
from scene_perception.ros.bag_replay import BagPlayer, BagRecorder, read_frame_groups
from scene_perception.ros.pose_node import PoseNode
from scene_perception.ros.scene_node import SceneNode
from scene_perception.ros.stereo_depth_node import StereoDepthNode

INPUTS = (
    DEFAULT_TOPICS.left_image,
    DEFAULT_TOPICS.left_info,
    DEFAULT_TOPICS.right_image,
    DEFAULT_TOPICS.right_info,
)
OUTPUTS = (
    ("/disparity", "stereo_msgs/msg/DisparityImage"),
    ("/depth", "sensor_msgs/msg/Image"),
    ("/depth/uncertainty", "sensor_msgs/msg/Image"),
)
#: What the scene node adds to the recording (only when it runs): the labels that are scored.
SCENE_OUTPUTS = ((LABELS_TOPIC, "sensor_msgs/msg/Image"),)
#: What the pose node adds (only when it runs): the pose with its MC-dropout covariance.
POSE_OUTPUTS = ((POSE_TOPIC, "geometry_msgs/msg/PoseWithCovarianceStamped"),)


class Replay(NamedTuple):
    """What :func:`replay_through_node` measured: per-frame latency (ms) and, per node, whether its weights
    were trained (None: that node did not run)."""

    latencies: list[float]
    trained: bool
    scene_trained: bool | None
    pose_trained: bool | None


def bag_topics(bag: Path) -> set[str]:
    """Topic names a rosbag2 holds (from its metadata; no message is read)."""
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        return set(reader.topics)


def _spin_until(executor: SingleThreadedExecutor, cond, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        executor.spin_once(timeout_sec=0.02)
    return bool(cond())


def _image_node(cls: type[LifecycleNode], name: str, context: Context, weights: str | None) -> LifecycleNode:
    """A single-image node (scene, pose) on the CPU with quiet logs and ``weights`` (None = shipped)."""
    overrides = [Parameter("log_throttle_seconds", value=2.0), Parameter("device", value="cpu")]
    if weights:
        overrides.append(Parameter("weights", value=str(weights)))
    return cls(name, context=context, parameter_overrides=overrides)


def _start(node: LifecycleNode, what: str) -> None:
    """configure + activate, or RuntimeError (the node has logged why)."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        raise RuntimeError(f"the {what} node failed to configure (see the error above)")
    node.trigger_activate()


def _trained(info: Any) -> bool:
    return bool(getattr(info, "trained", False))


def replay_through_node(
    bag: Path,
    out_bag: Path,
    model: str,
    weights: str | None,
    timeout_per_frame: float = 60.0,
    backend: str = "torch",
    scene_weights: str | None = None,
    with_scene: bool = False,
    pose_weights: str | None = None,
    with_pose: bool = False,
) -> Replay:
    """Play ``bag``'s stereo topics into fresh nodes frame by frame; record their outputs into ``out_bag``.

    ``with_scene`` / ``with_pose`` add a scene / pose node (weights ``scene_weights`` / ``pose_weights``,
    None = shipped) fed by the same left images.  Latency is publish -> all outputs of all nodes recorded.
    """
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    overrides = [
        Parameter("model", value=model),
        Parameter("log_throttle_seconds", value=2.0),
        Parameter("backend", value=backend),
    ]
    if weights:
        overrides.append(Parameter("weights", value=str(weights)))
    node = StereoDepthNode("stereo_depth", context=context, parameter_overrides=overrides)
    scene = _image_node(SceneNode, "scene", context, scene_weights) if with_scene else None
    pose = _image_node(PoseNode, "pose", context, pose_weights) if with_pose else None
    player = BagPlayer(context=context)
    if out_bag.exists():
        shutil.rmtree(out_bag)
    outputs = OUTPUTS + (SCENE_OUTPUTS if with_scene else ()) + (POSE_OUTPUTS if with_pose else ())
    recorder = BagRecorder(out_bag, outputs, context=context)
    nodes = (node, player, recorder) + tuple(n for n in (scene, pose) if n is not None)
    for n in nodes:
        executor.add_node(n)
    latencies: list[float] = []
    try:
        _start(node, "stereo")
        trained = _trained(node.model_info)
        scene_trained = pose_trained = None
        if scene is not None:
            _start(scene, "scene")
            scene_trained = bool(scene.pipeline.trained)
        if pose is not None:
            _start(pose, "pose")
            pose_trained = _trained(pose.pipeline.model_info)
        groups = read_frame_groups(bag, INPUTS)
        first = next(groups, None)
        if first is None:
            raise RuntimeError(f"{bag} holds no stereo frames")
        player.prepare((t, m) for t, m, _ in first.messages)
        if not _spin_until(
            executor,
            lambda: player.publishers_matched() and all(recorder.count_publishers(t) > 0 for t, _ in outputs),
            15,
        ):
            raise RuntimeError("DDS discovery between player, node and recorder did not complete in 15 s")
        # Progress on stderr (stdout carries the tables).
        for group in tqdm((first, *groups), desc="replay", unit="frame", leave=False):
            sent = time.monotonic()
            player.publish_group(group)
            if not _spin_until(executor, lambda s=group.stamp_ns: recorder.has_all(s), timeout_per_frame):
                tqdm.write(f"eval: no output for stamp {group.stamp_ns} within {timeout_per_frame:.0f} s")
                latencies.append(math.nan)
                continue
            latencies.append((time.monotonic() - sent) * 1e3)
        return Replay(latencies, trained, scene_trained, pose_trained)
    finally:
        for n in nodes:
            executor.remove_node(n)
            n.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)


def print_report(ev: StereoEvaluation, latencies: list[float], label: str) -> None:
    print()
    print(
        "| frame | EPE px | bad-2 % | D1 % | density % | depth abs-rel | AUSE | sky valid % | latency ms "
        f"|  {label}"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for i, f in enumerate(ev.frames):
        lat = latencies[i] if i < len(latencies) else math.nan
        print(
            f"| {i} | {f.disparity['epe']:.2f} | {f.disparity['bad2']:.1f} | {f.disparity['d1']:.1f} | "
            f"{f.disparity['density']:.1f} | {f.depth.get('abs_rel', math.nan):.3f} | "
            f"{f.uncertainty.get('ause', math.nan):.3f} | {f.far.get('published', math.nan):.1f} | "
            f"{lat:.0f} |"
        )
    p = ev.pooled
    finite = [x for x in latencies if math.isfinite(x)]
    lat = sorted(finite)[len(finite) // 2] if finite else math.nan
    print(
        f"| all (pooled) | {p['epe']:.2f} | {p['bad2']:.1f} | {p['d1']:.1f} | {p['density']:.1f} | "
        f"{ev.depth_mean.get('abs_rel', math.nan):.3f} | {ev.ause_mean:.3f} | {ev.far_published:.1f} | "
        f"{lat:.0f} (median) |"
    )
    print(f"sky valid %: {SKY_VALID_NOTE}")
    if ev.missing_stamps:
        print(f"{len(ev.missing_stamps)} frame(s) had no output")


def pose_model_world(pose_weights: str | None) -> tuple[dict[str, Any] | None, str]:
    """(training world of the pose model per its card, "") when a pose model loads, else (None, why not)."""
    from scene_perception.models.weights import load_pose_model

    try:
        _, info = load_pose_model("posenet", pose_weights)
    except (OSError, ValueError, RuntimeError) as exc:  # ModelLoadError is a RuntimeError
        return None, str(exc)
    return card_world(info.weights_path), ""


def evaluate_bag(
    bag: Path,
    out_dir: Path,
    model: str = "lite",
    weights: str | None = None,
    backend: str = "torch",
    title: str = "",
    scene: bool | None = None,
    scene_weights: str | None = None,
    pose: bool | None = None,
    pose_weights: str | None = None,
) -> int:
    """Replay ``bag`` through the node(s), score against its GT, print tables, write ``out_dir/report.md``.

    ``scene``: also run the scene node and report its mIoU (plus ECE and instance scores of the same
    pipeline offline); None = when the bag has semantic GT.  ``pose``: also run the pose node and report
    its errors and covariance calibration; None = when the bag has GT poses and a pose model loads.
    """
    from scene_perception.evaluation.report import write_stereo_report

    out_dir.mkdir(parents=True, exist_ok=True)
    out_bag = out_dir / "outputs"
    topics = bag_topics(bag)
    if scene is None:
        scene = DEFAULT_TOPICS.semantic in topics
    model_world: dict[str, Any] = {}
    pose_mismatch = ""  # why the bag is not (known to be) the pose model's world; "" = it is
    pose_auto = pose is None
    if pose is None:
        pose = DEFAULT_TOPICS.pose in topics
    if pose:
        world, why = pose_model_world(pose_weights)
        if world is None:
            print(f"eval: no pose model, pose errors skipped: {why}")
            pose = False
        else:
            model_world = world
            # PoseNet relocalises within the one world it was trained in: on any other world its errors
            # are tens of metres by construction, so the automatic choice skips it (asking for it still
            # runs it, with a warning in the report).
            pose_mismatch = world_mismatch(bag, model_world)
            if pose_auto and pose_mismatch:
                print(f"eval: pose errors skipped: the pose model was trained in another world "
                      f"({pose_mismatch}); pass pose=True / --pose to score it anyway")
                pose = False
    nodes = " and ".join(["stereo_depth"] + ["scene"] * scene + ["pose"] * pose)
    print(f"eval: replaying {bag} through the {nodes} node(s) ({backend}), recording to {out_bag} ...")
    try:
        replay = replay_through_node(
            bag, out_bag, model, weights, backend=backend, scene_weights=scene_weights, with_scene=scene,
            pose_weights=pose_weights, with_pose=pose,
        )
    except RuntimeError as exc:
        print(f"eval: {exc}")
        return 1
    latencies, trained, scene_trained = replay.latencies, replay.trained, replay.scene_trained
    ev = evaluate_stereo_bag(bag, out_bag)
    if not ev.frames:
        print(f"eval: nothing to score ({bag} has no /gt/disparity, or the node produced no output)")
        return 1
    label = f"model {model}, {backend}, non-occluded pixels"
    print_report(ev, latencies, label)
    scene_ev, scene_label, scene_offline = None, "", None
    if scene:
        scene_ev = evaluate_scene_bag(bag, out_bag)
        untrained = "" if scene_trained else " — UNTRAINED SCENE WEIGHTS"
        scene_label = f"scene node semantic/labels vs {DEFAULT_TOPICS.semantic}, all pixels{untrained}"
        miou, acc = scene_ev.miou * 100, scene_ev.pixel_accuracy * 100
        print(
            f"semantics: mIoU {miou:.1f} %, pixel accuracy {acc:.1f} % over {len(scene_ev.frames)} frames "
            f"({len(scene_ev.missing_stamps)} without output)  {scene_label}"
        )
        from scene_perception.pipelines.scene import ScenePipeline

        # The node's own settings (shipped or given weights, mc_samples 0 = the node's default), offline.
        scene_offline = evaluate_scene_offline(bag, ScenePipeline.from_weights(scene_weights, device="cpu"))
        o = scene_offline
        print(
            f"semantics (pipeline offline): ECE {o.ece:.4f} ({o.ece_bins} bins), instance offset error "
            f"{o.instance_error_px:.2f} px, instance recall {o.instance_recall * 100:.1f} %, precision "
            f"{o.instance_precision * 100:.1f} %"
        )
    pose_ev, pose_label, pose_warning = None, "", ""
    if pose:
        pose_ev = evaluate_pose_bag(bag, out_bag)
        world = ", ".join(f"{k} {v}" for k, v in model_world.items()) or "unknown"
        untrained = "" if replay.pose_trained else " — UNTRAINED POSE WEIGHTS"
        pose_label = f"pose node pose vs {DEFAULT_TOPICS.pose}; model trained in world {world}{untrained}"
        if pose_mismatch:
            pose_warning = (
                f"PoseNet relocalises only in the world it was trained in ({world}); {pose_mismatch}, so "
                "these pose errors are meaningless"
            )
        m = pose_ev.metrics
        if m:
            print(
                f"pose: median translation error {m['median_translation_m']:.3f} m, median rotation error "
                f"{m['median_rotation_deg']:.3f} deg, inside 2-sigma {m['inside_2sigma_pose']:.3f} (6-DoF) "
                f"over {int(m['frames'])} frames  {pose_label}"
            )
        else:
            print(f"pose: no frame scored ({len(pose_ev.missing_stamps)} without output)")
        if pose_warning:
            print(f"WARNING: {pose_warning}")
    tag = "" if trained else "  — UNTRAINED WEIGHTS"
    report = write_stereo_report(
        out_dir,
        ev,
        latencies,
        title=(title or f"stereo evaluation of {bag}") + tag,
        label=label,
        bag=bag,
        out_bag=out_bag,
        scene=scene_ev,
        scene_label=scene_label,
        scene_offline=scene_offline,
        pose=pose_ev,
        pose_label=pose_label,
        pose_warning=pose_warning,
    )
    print(f"report: {report}")
    print(f"figure: {out_dir / 'stereo.png'}")
    if not trained:
        print("WARNING: the node ran UNTRAINED weights, so numbers are meaningless; see models/lite.md.")
    return 0
