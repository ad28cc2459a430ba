"""Stereo depth lifecycle node: synchronized rectified stereo in; disparity, depth, uncertainty, points out.

The node is a thin adapter around :class:`~scene_perception.pipelines.stereo_depth.StereoDepthPipeline`:
ROS message -> numpy -> pipeline -> ROS message.  Everything it computes can be reproduced offline with the
same pipeline, which is how the CLI and the evaluation reuse it.

Input validation, synchronization, publishing and diagnostics are shared with the SGBM baseline node
(:mod:`scene_perception.ros.stereo_node_base`); this module only adds the network.

Topics (all relative, remap as usual), following stereo_image_proc / Isaac ROS:
  in:  left/image_rect, left/camera_info, right/image_rect, right/camera_info
  out: disparity (stereo_msgs/DisparityImage), depth (32FC1 m, NaN invalid, REP 118),
       depth/uncertainty (32FC1 std-dev m), points (organized PointCloud2 xyz+rgb), /diagnostics

Lifecycle: configure loads the model and sets up the inference backend (a missing or corrupt weights file,
an unavailable backend or an unusable engine cache directory fails the transition and leaves the node
unconfigured, with the reason in the log); activate subscribes; deactivate unsubscribes.

Backends (parameter ``backend``): ``torch`` runs eagerly at any size. ``onnxruntime`` and ``tensorrt``
run static-shape graphs, so their engine is built for the first frame's padded size (exported / built
into ``engine_cache_dir``, reused from there on later starts) and rebuilt when the camera resolution
changes; both events are logged. That first build blocks the frame callback for seconds (ONNX export) to
minutes (a TensorRT build of the paper model); afterwards the cache makes it a load.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
from typing import Any

import numpy as np
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from scene_perception.engines.base import EngineError
from scene_perception.geometry.stereo_camera import StereoCamera
from scene_perception.pipelines.local_refinement_config import LocalRefinementConfig
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline, StereoDepthResult
from scene_perception.ros import params as P
from scene_perception.ros.diagnostics import ERROR, WARN
from scene_perception.ros.stereo_node_base import (
    BASE_OUTPUTS,
    INPUT_ENCODINGS,
    INPUT_TOPICS,
    InputRejected,
    StereoNodeBase,
)

# Re-exported: these names lived here before the base class existed.
__all__ = ["INPUT_ENCODINGS", "INPUT_TOPICS", "InputRejected", "StereoDepthNode", "main"]


class StereoDepthNode(StereoNodeBase):
    """GC-Net stereo depth as a managed (lifecycle) node."""

    PARAM_SPECS = P.STEREO_DEPTH_PARAMS
    OUTPUTS = {**BASE_OUTPUTS, "uncertainty": (Image, "depth/uncertainty")}
    DESCRIPTION = "stereo depth"

    def __init__(self, node_name: str = "stereo_depth", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.pipeline: StereoDepthPipeline | None = None
        self.model_info: Any = None
        self.backend_choice: Any = None
        self._refinement_ms: collections.deque[float] = collections.deque(maxlen=100)

    # ------------------------------------------------------------------ parameters
    def _on_parameter_changed(self, change: Parameter) -> None:
        if self.pipeline is not None and (
            change.name in ("min_disparity", "max_uncertainty", "min_texture", "max_disparity", "max_depth",
                            "max_network_pixels")
            or change.name.startswith("local_refinement.")
        ):
            self._apply_pipeline_params()

    def _apply_pipeline_params(self) -> None:
        assert self.pipeline is not None
        self.pipeline.min_disparity = float(self.params["min_disparity"])
        self.pipeline.max_depth = float(self.params["max_depth"])
        self.pipeline.max_disparity = float(self.params["max_disparity"]) or None
        self.pipeline.max_network_pixels = int(self.params["max_network_pixels"])
        max_unc = float(self.params["max_uncertainty"])
        self.pipeline.max_uncertainty = max_unc if max_unc > 0 else math.inf
        self.pipeline.min_texture = float(self.params["min_texture"])
        self.pipeline.local_refinement = P.local_refinement_config(self.params)

    # ------------------------------------------------------------------ lifecycle
    def _configure_backend(self) -> bool:
        """Load the model and set up the inference backend; False (logged, counted) when that fails."""
        # Imported here so that a broken torch install fails the transition with a message, not the import.
        from scene_perception.models.weights import ModelLoadError
        from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

        p = self.params
        log = self.get_logger()
        try:
            setup = build_stereo_pipeline(
                p["model"], p["weights"] or None, backend=str(p["backend"]), device=str(p["device"]),
                engine_cache_dir=p["engine_cache_dir"], num_threads=int(p["num_threads"]), logger=log,
                compute_points=True,
            )
        except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
            # EngineError / BackendUnavailable are RuntimeErrors: same clear failure, node unconfigured.
            log.error(f"configure failed, node stays unconfigured: {exc}")
            self.health.problem("model_load_failed", str(exc))
            return False
        self.pipeline, info, choice = setup.pipeline, setup.info, setup.choice
        self.model_info = info
        self.backend_choice = choice
        if setup.cache_dir is not None:
            log.info(
                f"{choice.backend}: engines for each input size are built on the first frame of that size "
                f"and cached in {setup.cache_dir}"
            )
        self._apply_pipeline_params()
        if not info.trained:
            self.get_logger().error(
                f"UNTRAINED WEIGHTS for model '{p['model']}': no trained weights were found, so disparity, "
                "depth and uncertainty are meaningless. Train with `scene-perception train stereo` or "
                "pass `weights`."
            )
        else:
            self.get_logger().info(
                f"model '{info.name}' from {info.weights_path} (sha256 {str(info.sha256)[:12]})"
            )
        return True

    def _release_backend(self) -> None:
        if self.pipeline is not None:
            self.pipeline.engine.close()
        self.pipeline = None
        self.model_info = None
        self.backend_choice = None

    def _ready(self) -> bool:
        return self.pipeline is not None

    # ------------------------------------------------------------------ processing
    def _compute(
        self, left: np.ndarray, right: np.ndarray, camera: StereoCamera, want_points: bool
    ) -> StereoDepthResult | None:
        assert self.pipeline is not None
        self.pipeline.compute_points = want_points
        try:
            result = self.pipeline(left, right, camera)
            self._refinement_ms.append(result.refinement_ms)
            return result
        except EngineError as exc:
            # Building the engine for this frame size failed; the pipeline will not retry this size.
            self.health.problem("engine_build_failed", f"no {self.params['backend']} engine for frame: {exc}")
        except (RuntimeError, ValueError) as exc:
            self.health.problem("inference_error", f"pipeline failed on frame {self._last_stamp_ns}: {exc}")
        return None

    # ------------------------------------------------------------------ health
    def _backend_status(self) -> str:
        """Resolved backend/device/precision and the engine's shapes, or the request when unconfigured."""
        requested = f"{self.params['backend']} ({self.params['device']})"
        choice = self.backend_choice
        if choice is None or self.pipeline is None:
            return f"requested {requested}"
        return f"{self.pipeline.engine.describe()}; requested {requested}"

    def _diagnostic_extra(self) -> tuple[dict[str, str], Any, str]:
        info = self.model_info
        extra = {
            "model": str(self.params["model"]),
            "weights": str(getattr(info, "weights_path", None) or "none"),
            "trained": str(getattr(info, "trained", False)),
            "local refinement": _describe(self.pipeline.local_refinement if self.pipeline else None),
        }
        if self._refinement_ms:
            extra["local refinement p50 (ms)"] = f"{float(np.median(self._refinement_ms)):.1f}"
        level, message = None, ""
        if self.pipeline is None and self.health.problems["model_load_failed"]:
            level, message = ERROR, "model failed to load: " + self.health.last_error
        elif info is not None and not info.trained:
            level, message = WARN, "UNTRAINED weights: outputs are meaningless"
        return extra, level, message


def _describe(config: LocalRefinementConfig | None) -> str:
    if config is None:
        return "off"
    return ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(config).items())


def main(argv: list[str] | None = None) -> None:
    """``ros2 run scene_perception stereo_depth_node``; configures + activates unless --no-autostart."""
    from scene_perception.ros.runner import run_nodes

    argv = sys.argv if argv is None else argv
    raise SystemExit(run_nodes([("stereo_depth", StereoDepthNode, {})], argv=argv))


if __name__ == "__main__":
    main()
