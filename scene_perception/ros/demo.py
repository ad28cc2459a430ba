"""``scene-perception demo``: synthetic stereo through the running node, no camera needed.

A player node publishes procedurally rendered stereo frames (pixel-exact ground truth) with CameraInfo over
Fast DDS; the stereo depth lifecycle node processes them; a recorder node collects disparity, depth and
uncertainty.  The demo then scores the node's outputs against ground truth and writes a figure.  It is the
same path a robot uses, end to end, just with a renderer in place of the camera driver.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.ros.codec import image_to_numpy, numpy_to_image, stamp_to_ns
from scene_perception.ros.messages import camera_info_pair_from_camera
from scene_perception.ros.stereo_depth_node import StereoDepthNode


@dataclass
class FrameScore:
    stamp_ns: int
    epe: float
    bad2: float
    depth_abs_rel: float
    density: float
    latency_ms: float


class _PlayerRecorder(Node):
    def __init__(self, context: Context) -> None:
        super().__init__("demo_player", context=context)
        q = qos_profile_sensor_data
        self.pubs = [
            self.create_publisher(Image, "left/image_rect", q),
            self.create_publisher(CameraInfo, "left/camera_info", q),
            self.create_publisher(Image, "right/image_rect", q),
            self.create_publisher(CameraInfo, "right/camera_info", q),
        ]
        self.disparity: dict[int, DisparityImage] = {}
        self.depth: dict[int, Image] = {}
        self.uncertainty: dict[int, Image] = {}
        self.received_at: dict[int, float] = {}
        self.create_subscription(DisparityImage, "disparity", self._on_disp, 10)
        self.create_subscription(
            Image, "depth", lambda m: self.depth.__setitem__(stamp_to_ns(m.header), m), 10
        )
        self.create_subscription(
            Image, "depth/uncertainty", lambda m: self.uncertainty.__setitem__(stamp_to_ns(m.header), m), 10
        )

    def _on_disp(self, msg: DisparityImage) -> None:
        key = stamp_to_ns(msg.header)
        self.disparity[key] = msg
        self.received_at[key] = time.monotonic()


def _spin_until(executor: SingleThreadedExecutor, cond, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        executor.spin_once(timeout_sec=0.02)
    return bool(cond())


def _score(
    gt_disp: np.ndarray, gt_depth: np.ndarray, mask: np.ndarray, disp_msg: DisparityImage, depth: np.ndarray
) -> tuple[float, float, float, float]:
    pred = image_to_numpy(disp_msg.image)
    valid_pred = pred > disp_msg.min_disparity
    m = mask & np.isfinite(gt_disp)
    err = np.abs(pred[m] - gt_disp[m])
    both = m & np.isfinite(depth)
    abs_rel = (
        float(np.mean(np.abs(depth[both] - gt_depth[both]) / gt_depth[both])) if both.any() else float("nan")
    )
    return float(err.mean()), float((err > 2.0).mean() * 100), abs_rel, float(valid_pred.mean() * 100)


def _figure(
    path: Path,
    left: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    std: np.ndarray,
    mask: np.ndarray,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = float(np.nanmax(gt))
    err = np.where(mask, np.abs(pred - gt), np.nan)
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.2))
    panels = [
        (left, "left image", None, None),
        (gt, "ground-truth disparity (px)", "magma", (0, vmax)),
        (pred, "predicted disparity (px)", "magma", (0, vmax)),
        (err, "|error| (px, non-occluded)", "inferno", (0, 5)),
        (std, "disparity std-dev, aleatoric (px)", "viridis", None),
        (np.abs(pred - gt) > 2, "bad-2 pixels", "gray", (0, 1)),
    ]
    for ax, (img, name, cmap, lim) in zip(axes.ravel(), panels, strict=True):
        kwargs = {} if lim is None else {"vmin": lim[0], "vmax": lim[1]}
        im = ax.imshow(img, cmap=cmap, **kwargs)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
        if cmap is not None:
            fig.colorbar(im, ax=ax, fraction=0.03)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_demo(
    out_dir: Path = Path("out/demo"),
    frames: int = 5,
    model: str = "lite",
    weights: str | None = None,
    width: int = 320,
    height: int = 240,
    seed: int = 1000,
) -> int:
    """Play ``frames`` synthetic stereo frames through a live node; print metrics; write a figure."""
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    overrides = [Parameter("model", value=model), Parameter("log_throttle_seconds", value=2.0)]
    if weights:
        overrides.append(Parameter("weights", value=str(weights)))
    node = StereoDepthNode("stereo_depth", context=context, parameter_overrides=overrides)
    io = _PlayerRecorder(context)
    executor.add_node(node)
    executor.add_node(io)
    scores: list[FrameScore] = []
    try:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            print("demo: the stereo node failed to configure (see the error above)")
            return 1
        node.trigger_activate()
        if not _spin_until(executor, lambda: all(p.get_subscription_count() > 0 for p in io.pubs), 10):
            print("demo: DDS discovery did not complete in 10 s")
            return 1
        trained = bool(node.model_info.trained)
        last = None
        for i in range(frames):
            sample = make_stereo_sample(seed + i, width=width, height=height, max_disparity=64)
            stamp_ns = 1_700_000_000_000_000_000 + i * 100_000_000
            header = Header(
                stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="left_optical"
            )
            li, ri = camera_info_pair_from_camera(
                dataclasses.replace(sample.camera, frame_id="left_optical"), header
            )
            msgs = [
                numpy_to_image(sample.left, "rgb8", header),
                li,
                numpy_to_image(sample.right, "rgb8", header),
                ri,
            ]
            sent = time.monotonic()
            for pub, msg in zip(io.pubs, msgs, strict=True):
                pub.publish(msg)
            if not _spin_until(
                executor,
                lambda key=stamp_ns: key in io.depth and key in io.disparity and key in io.uncertainty,
                30,
            ):
                print(f"demo: frame {i} produced no output in 30 s")
                return 1
            depth = image_to_numpy(io.depth[stamp_ns])
            mask = sample.nonoccluded
            epe, bad2, abs_rel, density = _score(
                sample.disparity, sample.depth, mask, io.disparity[stamp_ns], depth
            )
            scores.append(
                FrameScore(stamp_ns, epe, bad2, abs_rel, density, (io.received_at[stamp_ns] - sent) * 1e3)
            )
            last = (sample, io.disparity[stamp_ns], io.uncertainty[stamp_ns])
        print()
        print(
            f"| frame | EPE px | bad-2 % | depth abs-rel | density % | latency ms |"
            f"  ({width}x{height}, model {model})"
        )
        print("|---|---|---|---|---|---|")
        for i, s in enumerate(scores):
            print(
                f"| {i} | {s.epe:.2f} | {s.bad2:.1f} | {s.depth_abs_rel:.3f} | {s.density:.1f} "
                f"| {s.latency_ms:.0f} |"
            )
        mean = lambda f: float(np.nanmean([getattr(s, f) for s in scores]))  # noqa: E731
        print(
            f"| mean | {mean('epe'):.2f} | {mean('bad2'):.1f} | {mean('depth_abs_rel'):.3f} | "
            f"{mean('density'):.1f} | {mean('latency_ms'):.0f} |"
        )
        if last is not None:
            sample, disp_msg, unc_msg = last
            pred = image_to_numpy(disp_msg.image).copy()
            # The depth-std image is what the node publishes; convert back to disparity std for the figure.
            camera = sample.camera
            depth_std = image_to_numpy(unc_msg)
            std_d = depth_std * (pred + camera.doffs) ** 2 / camera.focal_baseline
            fig = out_dir / "demo.png"
            tag = "" if trained else "  — UNTRAINED WEIGHTS"
            _figure(
                fig,
                sample.left,
                sample.disparity,
                pred,
                std_d,
                sample.nonoccluded,
                f"scene_perception stereo_depth node, model '{model}'{tag}: EPE {scores[-1].epe:.2f} px, "
                f"bad-2 {scores[-1].bad2:.1f} %",
            )
            print(f"figure: {fig}")
        if not trained:
            print("WARNING: the node ran UNTRAINED weights, so these numbers are meaningless; see README.")
        return 0
    finally:
        executor.remove_node(node)
        executor.remove_node(io)
        node.destroy_node()
        io.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)
