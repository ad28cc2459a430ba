"""Stereo depth lifecycle node: synchronized rectified stereo in; disparity, depth, uncertainty, points out.

The node is a thin adapter around :class:`~scene_perception.pipelines.stereo_depth.StereoDepthPipeline`:
ROS message -> numpy -> pipeline -> ROS message.  Everything it computes can be reproduced offline with the
same pipeline, which is how the CLI and the evaluation reuse it.

Input validation, synchronization, publishing and diagnostics are shared with the SGBM baseline node
(:mod:`scene_perception.ros.stereo_node_base`); this module only adds the network.

Topics (all relative, remap as usual), following stereo_image_proc / Isaac ROS:
  in:  left/image_rect, left/camera_info, right/image_rect, right/camera_info
  out: disparity (stereo_msgs/DisparityImage), depth (32FC1 m, NaN invalid, REP 118),
       depth/uncertainty (32FC1 std-dev m), points (organized PointCloud2 xyz+rgb), /diagnostics,
       depth/confidence (32FC1 0..1, only with ``quality.publish_confidence``)

Live quality (``quality.*``, off by default; :mod:`scene_perception.pipelines.quality`, docs/live_quality.md):
the GT-free photometric reprojection error, left-right consistency, vertical misalignment and the share of
valid pixels the SGBM candidate confirms, of each assessed frame, summarised over a window in /diagnostics
with WARN thresholds.  An aid with measured limits.

Online adaptation (``adapt.*``, off by default; :mod:`scene_perception.ros.adaptation`, docs/adaptation.md):
the network keeps training on every Nth frame in a background process; accepted versions are saved and
swapped in between two frames.  Measured: it helped on one real rig, not on synthetic periodic textures.

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
from scene_perception.pipelines.quality import flipped_pair
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline, StereoDepthResult
from scene_perception.ros import params as P
from scene_perception.ros.diagnostics import ERROR, WARN
from scene_perception.ros.live_quality import NodeQuality
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
    OUTPUTS = {**BASE_OUTPUTS, "uncertainty": (Image, "depth/uncertainty"),
               "confidence": (Image, "depth/confidence")}
    DESCRIPTION = "stereo depth"

    def __init__(self, node_name: str = "stereo_depth", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.pipeline: StereoDepthPipeline | None = None
        self.model_info: Any = None
        self.backend_choice: Any = None
        self._refinement_ms: collections.deque[float] = collections.deque(maxlen=100)
        # The last frame's (factor, measure, per pixel, the measure's name then).
        self._two_pass: tuple[float, float, bool, str] | None = None
        self._network_run = ""  # how the network ran on the last frame (scale, range; diagnostics)
        self._one_pass = ""  # the last frame's one-pass std factor (diagnostics)
        self._gate = ""  # whether max_view_residual kept the last frame's network output (diagnostics)
        self._quality = NodeQuality(int(self.params["quality.window"]), second_matcher=True)
        self._adapt: Any = None  # NodeAdaptation while adapt.enabled and configured
        self._far_head: Any = None  # ModelInfo of the far head in use
        self._far_note = ""  # why there is none

    # ------------------------------------------------------------------ parameters
    def _on_parameter_changed(self, change: Parameter) -> None:
        if change.name == "quality.window":
            self._quality.resize(int(change.value))
        if self._adapt is not None and change.name == "adapt.every":
            self._adapt.every = int(change.value)
        if self._adapt is not None and change.name == "adapt.serve":
            self._adapt.serve = bool(change.value)
        if self.pipeline is not None and (
            change.name in ("min_disparity", "max_uncertainty", "min_texture", "far_sigma", "far_probability",
                            "max_disparity", "max_depth", "max_network_pixels",
                            "extend_range")
            or change.name.startswith("local_refinement.")
        ):
            self._apply_pipeline_params()

    def _apply_pipeline_params(self) -> None:
        assert self.pipeline is not None
        self.pipeline.min_disparity = float(self.params["min_disparity"])
        self.pipeline.max_depth = float(self.params["max_depth"])
        self.pipeline.max_disparity = float(self.params["max_disparity"]) or None
        self.pipeline.max_network_pixels = int(self.params["max_network_pixels"])
        self.pipeline.extend_range = bool(self.params["extend_range"])
        engine = self.pipeline.engine
        if self.pipeline.extend_range and getattr(engine, "range_multiple", None) is None:
            self.get_logger().warning(
                f"extend_range: the {engine.backend} engine's disparity range is fixed at "
                f"{self.pipeline.network_max_disparity:g} px (a graph built for one input size); pairs "
                "whose max_disparity exceeds it are shrunk to fit instead (torch, and ONNX Runtime / "
                "TensorRT built per resolution, widen the range)")
        max_unc = float(self.params["max_uncertainty"])
        self.pipeline.max_uncertainty = max_unc if max_unc > 0 else math.inf
        self.pipeline.min_texture = float(self.params["min_texture"])
        self.pipeline.far_sigma = float(self.params["far_sigma"])
        self.pipeline.far_probability = float(self.params["far_probability"])
        self.pipeline.local_refinement = P.local_refinement_config(self.params)

    # ------------------------------------------------------------------ lifecycle
    def _configure_backend(self) -> bool:
        """Load the model and set up the inference backend; False (logged, counted) when that fails."""
        # Imported here so that a broken torch install fails the transition with a message, not the import.
        from scene_perception.models.weights import ModelLoadError

        p = self.params
        log = self.get_logger()
        try:
            setup = self._build_pipeline(p["weights"] or None)
        except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
            # EngineError / BackendUnavailable are RuntimeErrors: same clear failure, node unconfigured.
            log.error(f"configure failed, node stays unconfigured: {exc}")
            self.health.problem("model_load_failed", str(exc))
            return False
        self.pipeline, info, choice = setup.pipeline, setup.info, setup.choice
        self.model_info = info
        self._far_head = setup.far_head
        self._far_note = setup.far_note
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
        if p["adapt.enabled"]:
            self._start_adaptation()
        return True

    def _build_pipeline(self, weights: str | None) -> Any:
        """The one factory call (configure and every adapted version): checks, backend, engine, pipeline."""
        from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

        p = self.params
        return build_stereo_pipeline(
            p["model"], weights, backend=str(p["backend"]), device=str(p["device"]),
            engine_cache_dir=p["engine_cache_dir"], num_threads=int(p["num_threads"]),
            far_head_weights=p["far_head_weights"] or None, far_probability=float(p["far_probability"]),
            logger=self.get_logger(), compute_points=True,
        )

    def _start_adaptation(self) -> None:
        """Start the background adapter from the weights just loaded (refused, with the reason, without a
        trained weights file: there is nothing to adapt from or to compare against)."""
        from scene_perception.ros.adaptation import NodeAdaptation
        from scene_perception.training.adapt import AdaptConfig

        p, info = self.params, self.model_info
        if info is None or not info.trained or info.weights_path is None:
            self.get_logger().error(
                "adapt.enabled but no trained weights file is loaded: adaptation stays off"
            )
            self.health.problem("adaptation_failed", "adaptation needs trained weights from a file")
            return
        config = AdaptConfig(steps_per_round=int(p["adapt.steps_per_round"]), lr=float(p["adapt.lr"]),
                             min_improvement=float(p["adapt.min_improvement"]),
                             min_holdout_frames=int(p["adapt.min_holdout_frames"]),
                             anchor_pairs=int(p["adapt.anchor_pairs"]),
                             max_anchor_rise=float(p["adapt.max_anchor_rise"]),
                             max_sgbm_drop=float(p["adapt.max_sgbm_drop"]),
                             out_dir=str(p["adapt.out_dir"]))
        self._adapt = NodeAdaptation(info.weights_path, config, int(p["adapt.every"]),
                                     lambda path: self._build_pipeline(path).pipeline, bool(p["adapt.serve"]))
        self.get_logger().info(
            f"online adaptation on: every {p['adapt.every']} frame(s), versions to {p['adapt.out_dir']}"
        )

    def _swap_adapted(self) -> None:
        """Serve a newly accepted version, if one finished loading (between two frames: no frame sees a
        half-swapped pipeline)."""
        ready = self._adapt.poll()
        if self._adapt.last_error:
            self.health.problem("adaptation_failed", self._adapt.last_error)
            self._adapt.last_error = ""
        if ready is None:
            return
        pipeline, path = ready
        old, self.pipeline = self.pipeline, pipeline
        if pipeline.far_head is None:
            self._far_head = None
            self._far_note = "the far head fits only the configured weights, not the adapted ones"
        self._apply_pipeline_params()
        if old is not None:
            old.engine.close()
        self.get_logger().info(f"online adaptation: now serving {path}")

    def _release_backend(self) -> None:
        if self._adapt is not None:
            self._adapt.close()
            self._adapt = None
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
        if self._adapt is not None:
            self._swap_adapted()
        assert self.pipeline is not None
        self.pipeline.compute_points = want_points
        try:
            result = self.pipeline(left, right, camera)
            self._refinement_ms.append(result.refinement_ms)
            cfg = self.pipeline.local_refinement
            self._two_pass = (result.two_pass_factor, result.two_pass_measure, result.two_pass_per_pixel,
                              cfg.two_pass_std_measure if cfg is not None else "measure")
            self._one_pass = _describe_one_pass(result.one_pass_factor, result.one_pass_measure,
                                                cfg.one_pass_std_measure if cfg is not None else "none",
                                                cfg.one_pass_std_pixels if cfg is not None else "all")
            self._gate = ("" if cfg is None or cfg.max_view_residual <= 0 else
                          f"{'network alone' if result.refinement_gated else 'refined'}: view residual "
                          f"{result.view_residual:.4f} vs max_view_residual {cfg.max_view_residual:g}")
            self._network_run = _describe_network_run(result.scale, result.max_disparity,
                                                      self.pipeline.network_max_disparity)
            if self._adapt is not None:
                self._adapt.offer(left, right)
            return result
        except EngineError as exc:
            # Building the engine for this frame size failed; the pipeline will not retry this size.
            self.health.problem("engine_build_failed", f"no {self.params['backend']} engine for frame: {exc}")
        except (RuntimeError, ValueError) as exc:
            self.health.problem("inference_error", f"pipeline failed on frame {self._last_stamp_ns}: {exc}")
        return None

    # ------------------------------------------------------------------ live quality
    def _extra_images(
        self, left: np.ndarray, right: np.ndarray, result: StereoDepthResult
    ) -> dict[str, np.ndarray]:
        """The frame's live quality (when on; ros/live_quality.py), and the confidence image when asked."""
        if self.pipeline is None:
            return {}
        return self._quality.frame(self, left, right, result.disparity, result.valid, self.pipeline.device,
                                   lambda: self._right_disparity(left, right), result.sgbm_disparity)

    def _right_disparity(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The right view's disparity from a second pass on the mirrored, swapped pair (NaN where invalid)."""
        assert self.pipeline is not None
        wanted_points = self.pipeline.compute_points
        try:
            self.pipeline.compute_points = False
            mirrored = self.pipeline(*flipped_pair(left, right))
        finally:
            self.pipeline.compute_points = wanted_points
        return np.where(mirrored.valid, mirrored.disparity, np.float32(np.nan))[:, ::-1]

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
            "far head": (f"{self._far_head.weights_path} (sha256 {(self._far_head.sha256 or '?')[:12]})"
                         if self._far_head is not None else self._far_note or "none"),
        }
        if self._refinement_ms:
            extra["local refinement p50 (ms)"] = f"{float(np.median(self._refinement_ms)):.1f}"
        if self._network_run:
            extra["network run (last frame)"] = self._network_run
        if self._one_pass:
            extra["one-pass std factor (last frame)"] = self._one_pass
        if self._gate:
            extra["refinement gate (last frame)"] = self._gate
        if self._two_pass is not None:
            extra["two-pass std factor (last frame)"] = _describe_two_pass(*self._two_pass)
        quality_values, quality_warning = self._quality.status(self.params)
        extra.update(quality_values)
        if self._adapt is not None:
            extra.update(self._adapt.status())
        else:
            extra["adaptation"] = "off (adapt.enabled)"
        level, message = None, ""
        if self.pipeline is None and self.health.problems["model_load_failed"]:
            level, message = ERROR, "model failed to load: " + self.health.last_error
        elif info is not None and not info.trained:
            level, message = WARN, "UNTRAINED weights: outputs are meaningless"
        elif self._far_head is None and float(self.params["far_probability"]) < 1.0:
            level, message = WARN, f"far_probability is set but no far head is in use: {self._far_note}"
        elif quality_warning:
            level, message = WARN, quality_warning
        elif self._adapt is not None and not self._adapt.alive:
            level, message = WARN, "online adaptation stopped: its process exited (see the log)"
        return extra, level, message


def _describe(config: LocalRefinementConfig | None) -> str:
    if config is None:
        return "off"
    return ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(config).items())


def _describe_network_run(scale: float, searched: float, trained: float) -> str:
    """How the network ran: at what scale of the frame and over what range (px of the frame), and whether
    the pair was shrunk or the range widened for it (``max_disparity``, ``extend_range``,
    ``max_network_pixels``)."""
    network_range = searched * scale
    how = ("range widened" if network_range > trained + 0.5
           else "pair shrunk" if scale < 1.0 else "as trained")
    return f"{how}: scale {scale:.2f}, network range {network_range:.0f} px ({searched:.0f} px of the frame)"


def _describe_one_pass(factor: float, measure: float, name: str, pixels: str = "all") -> str:
    """The last frame's one-pass std factor, the measure it followed (``one_pass_std_measure``) and, when it
    multiplied only the pixels the refinement changed (``one_pass_std_pixels``), that."""
    if math.isnan(measure):
        return f"{factor:g} (" + ("off: one_pass_std_measure none)" if name == "none"
                                  else "the frame was not refined once)")
    return f"{factor:.2f} ({name} {measure:.4f}" + (", changed pixels)" if pixels == "changed" else ")")


def _describe_two_pass(factor: float, measure: float, per_pixel: bool, name: str) -> str:
    """The last frame's two-pass std factor (its median when it is per pixel), and the view-agreement
    measure ``name`` it followed (docs/calibration.md): a monitor sees how far the std was widened and why
    (named as that frame ran, not as the parameters read now)."""
    if factor == 1.0 and math.isnan(measure):
        return "1 (not refined twice)"
    return (f"{factor:.2f}" + (" median per pixel" if per_pixel else "")
            + ("" if math.isnan(measure) else f" ({name} {measure:.4f})"))


def main(argv: list[str] | None = None) -> None:
    """``ros2 run scene_perception stereo_depth_node``; configures + activates unless --no-autostart."""
    from scene_perception.ros.runner import run_nodes

    argv = sys.argv if argv is None else argv
    raise SystemExit(run_nodes([("stereo_depth", StereoDepthNode, {})], argv=argv))


if __name__ == "__main__":
    main()
