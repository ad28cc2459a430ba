"""SGBM baseline lifecycle node: ``stereo_depth``'s inputs and outputs, computed by OpenCV StereoSGBM.

Why a baseline node: stereo_image_proc's disparity node runs (semi-)global block matching, which is what a
ROS user compares a learned stereo node against. Running it behind exactly the same validation,
synchronization and publishing code (:class:`~scene_perception.ros.stereo_node_base.StereoNodeBase`) lets
the graph benchmark (``benchmarks/ros_graph.py``) and RViz compare the matchers and nothing else.

The matcher is :class:`~scene_perception.pipelines.sgbm.SGBMMatcher` with the project's baseline settings
(3-way SGBM, block 5, P1/P2 = 8/32 * 3 * 25, uniqueness 10, speckle 100/2, preFilterCap 63): the same numbers
the accuracy benchmark reports for SGBM. Only the search range (``max_disparity``) and the matching scale
(``scale``) are parameters; the cost settings are deliberately not tunable per scene.

Topics: in ``left/image_rect``, ``left/camera_info``, ``right/image_rect``, ``right/camera_info``; out
``disparity``, ``depth``, ``points``, ``/diagnostics``, and ``depth/confidence`` with
``quality.publish_confidence``. **No uncertainty:** SGBM gives no per-pixel std-dev, so
``depth/uncertainty`` is not published (its invalid pixels -- uniqueness / speckle rejects and the
unsearchable left border -- are simply NaN in ``depth``).

Live quality (``quality.*``, off by default): the same GT-free numbers as ``stereo_depth``
(:mod:`scene_perception.ros.live_quality`), so both matchers can be watched on one stream; the exact
left-right check (``quality.lr_check: network``) is a second SGBM pass on the mirrored, swapped pair.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from scene_perception.geometry.stereo_camera import StereoCamera
from scene_perception.pipelines.sgbm import SGBMMatcher
from scene_perception.ros import params as P
from scene_perception.ros.diagnostics import WARN
from scene_perception.ros.live_quality import NodeQuality
from scene_perception.ros.stereo_node_base import BASE_OUTPUTS, StereoNodeBase

__all__ = ["SGBMDepthNode", "SGBMResult", "main"]


@dataclass
class SGBMResult:
    """One frame's outputs (see :class:`~scene_perception.ros.stereo_node_base.DepthOutputs`)."""

    disparity: np.ndarray
    valid: np.ndarray
    depth: np.ndarray
    depth_std: None
    points: np.ndarray | None
    inference_ms: float


class SGBMDepthNode(StereoNodeBase):
    """OpenCV StereoSGBM stereo depth as a managed (lifecycle) node; no uncertainty output."""

    PARAM_SPECS = P.SGBM_DEPTH_PARAMS
    OUTPUTS = {**BASE_OUTPUTS, "confidence": (Image, "depth/confidence")}
    DESCRIPTION = "SGBM stereo depth (baseline, no uncertainty)"

    def __init__(self, node_name: str = "sgbm_depth", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.matcher: SGBMMatcher | None = None
        self._quality = NodeQuality(int(self.params["quality.window"]))

    def _on_parameter_changed(self, change: Parameter) -> None:
        if change.name == "quality.window":
            self._quality.resize(int(change.value))

    # ------------------------------------------------------------------ lifecycle
    def _configure_backend(self) -> bool:
        p = self.params
        try:
            if p["num_threads"] > 0:
                cv2.setNumThreads(int(p["num_threads"]))
            self.matcher = SGBMMatcher(float(p["max_disparity"]), scale=float(p["scale"]))
        except (ValueError, cv2.error) as exc:
            self.get_logger().error(f"configure failed, node stays unconfigured: {exc}")
            self.health.problem("configure_failed", str(exc))
            return False
        # Largest value SGBM can report, in px of the input images (it searches 0 .. num_disparities - 1 at
        # the matching scale).
        self._max_disparity = (self.matcher.num_disparities - 1) / self.matcher.scale
        self.get_logger().info(f"SGBM baseline: {self._backend_status()}; no uncertainty output")
        return True

    def _release_backend(self) -> None:
        self.matcher = None

    def _ready(self) -> bool:
        return self.matcher is not None

    # ------------------------------------------------------------------ processing
    def _compute(
        self, left: np.ndarray, right: np.ndarray, camera: StereoCamera, want_points: bool
    ) -> SGBMResult | None:
        assert self.matcher is not None
        m = self.matcher
        width = max(1, round(left.shape[1] * m.scale))
        if width <= m.num_disparities:
            # StereoSGBM crashes the process on such images (not a Python exception): refuse them first.
            self._reject(
                "image_too_narrow",
                f"image is {left.shape[1]} px wide ({width} px at scale {m.scale:g}) but SGBM searches "
                f"{m.num_disparities} disparities and needs a wider image: lower max_disparity",
            )
            return None
        start = time.perf_counter()
        try:
            disparity = self.matcher(left, right)
        except (cv2.error, ValueError) as exc:
            self.health.problem("inference_error", f"SGBM failed on frame {self._last_stamp_ns}: {exc}")
            return None
        inference_ms = (time.perf_counter() - start) * 1e3
        min_d = float(self.params["min_disparity"])
        depth = camera.disparity_to_depth(disparity, min_d)
        # disparity_to_depth already applies every validity rule (finite, > min_disparity, positive depth).
        valid = np.isfinite(depth)
        points = camera.points(disparity, min_d) if want_points else None
        return SGBMResult(disparity, valid, depth, None, points, inference_ms)

    # ------------------------------------------------------------------ live quality
    def _extra_images(self, left: np.ndarray, right: np.ndarray, result: SGBMResult) -> dict[str, np.ndarray]:
        """The frame's live quality (when on; ros/live_quality.py), and the confidence image when asked."""
        if self.matcher is None:
            return {}
        return self._quality.frame(self, left, right, result.disparity, result.valid, "cpu",
                                   lambda: self._right_disparity(left, right))

    def _right_disparity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The right view's disparity: SGBM on the mirrored, swapped pair, mirrored back (NaN invalid)."""
        from scene_perception.pipelines.quality import flipped_pair  # torch: only with the network check

        assert self.matcher is not None
        mirrored = np.asarray(self.matcher(*flipped_pair(left, right)), np.float32)
        return np.where(np.isfinite(mirrored) & (mirrored >= 0), mirrored, np.float32(np.nan))[:, ::-1]

    # ------------------------------------------------------------------ health
    def _backend_status(self) -> str:
        p = self.params
        threads = cv2.getNumThreads()
        if self.matcher is None:
            return f"requested opencv StereoSGBM_3WAY, max_disparity {p['max_disparity']}, scale {p['scale']}"
        m = self.matcher
        return (
            f"opencv {cv2.__version__} StereoSGBM_3WAY on cpu ({threads} threads), "
            f"{m.num_disparities} disparities at scale {m.scale:g}, block {m.config.block_size}"
        )

    def _diagnostic_extra(self) -> tuple[dict[str, str], Any, str]:
        extra = {"uncertainty": "none (SGBM has no per-pixel std-dev; depth/uncertainty not published)"}
        quality_values, quality_warning = self._quality.status(self.params)
        extra.update(quality_values)
        return extra, (WARN if quality_warning else None), quality_warning


def main(argv: list[str] | None = None) -> None:
    """``ros2 run scene_perception sgbm_depth_node``; configures + activates unless --no-autostart."""
    from scene_perception.ros.runner import run_nodes

    argv = sys.argv if argv is None else argv
    raise SystemExit(run_nodes([("sgbm_depth", SGBMDepthNode, {})], argv=argv))


if __name__ == "__main__":
    main()
