"""Stereo depth lifecycle node: synchronized rectified stereo in; disparity, depth, uncertainty, points out.

The node is a thin adapter around :class:`~scene_perception.pipelines.stereo_depth.StereoDepthPipeline`:
ROS message -> numpy -> pipeline -> ROS message.  Everything it computes can be reproduced offline with the
same pipeline, which is how the CLI and the evaluation reuse it.

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

import math
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from stereo_msgs.msg import DisparityImage

from scene_perception.engines.base import EngineError
from scene_perception.geometry.stereo_camera import CameraModelError, StereoCamera
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline, StereoDepthResult
from scene_perception.ros import params as P
from scene_perception.ros.codec import ENCODINGS, ImageEncodingError, image_to_numpy, stamp_to_ns, to_rgb8
from scene_perception.ros.diagnostics import ERROR, WARN, Health, diagnostic_array
from scene_perception.ros.messages import make_depth_image, make_disparity_image, make_point_cloud
from scene_perception.ros.qos import qos_from_name
from scene_perception.ros.sync import ApproximateTimeSynchronizer, Subscriber, TimeSynchronizer

#: Encodings the node accepts as camera input, mapped to the colour encoding their pixels are read as
#: (colour is converted to RGB, mono replicated). The generic 8UC1 / 8UC3 carry no colour semantics; they
#: are read as mono8 / rgb8, as the bag tools write them.
INPUT_ENCODINGS: dict[str, str] = {
    "rgb8": "rgb8",
    "bgr8": "bgr8",
    "rgba8": "rgba8",
    "bgra8": "bgra8",
    "mono8": "mono8",
    "mono16": "mono16",
    "8UC1": "mono8",
    "8UC3": "rgb8",
}

INPUT_TOPICS = ("left/image_rect", "left/camera_info", "right/image_rect", "right/camera_info")


class InputRejected(Exception):
    """A stereo set that cannot be processed; ``kind`` names the counter it is reported under."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class StereoDepthNode(LifecycleNode):
    """GC-Net stereo depth as a managed (lifecycle) node."""

    def __init__(self, node_name: str = "stereo_depth", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = P.declare(self, P.STEREO_DEPTH_PARAMS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.health = Health(self.get_logger().warning, self.params["log_throttle_seconds"])
        self.pipeline: StereoDepthPipeline | None = None
        self.model_info: Any = None
        self.backend_choice: Any = None
        self._max_disparity = 0.0
        self._pubs: dict[str, Any] = {}
        self._subs: list[Subscriber] = []
        self._sync: Any = None
        self._topic_counts: Counter[str] = Counter()
        self._last_check_counts: Counter[str] = Counter()
        self._last_check_sets = 0
        self._last_stamp_ns: int | None = None
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics)
        self._check_timer = self.create_timer(self.params["input_check_period"], self._check_inputs)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        result = P.validate(P.STEREO_DEPTH_PARAMS, changes)
        if result.successful:
            for change in changes:
                self.params[change.name] = change.value
                if change.name == "log_throttle_seconds":
                    self.health.throttle_seconds = float(change.value)
                if self.pipeline is not None and change.name in ("min_disparity", "max_uncertainty"):
                    self._apply_pipeline_params()
        return result

    def _apply_pipeline_params(self) -> None:
        assert self.pipeline is not None
        self.pipeline.min_disparity = float(self.params["min_disparity"])
        max_unc = float(self.params["max_uncertainty"])
        self.pipeline.max_uncertainty = max_unc if max_unc > 0 else math.inf

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        # Imported here so that a broken torch install fails the transition with a message, not the import.
        from scene_perception.engines.cache import model_digest, prepare_cache_dir
        from scene_perception.engines.select import choose_backend, create_engine
        from scene_perception.models.weights import ModelLoadError, load_stereo_model

        p = self.params
        log = self.get_logger()
        try:
            if p["num_threads"] > 0:
                import torch

                torch.set_num_threads(int(p["num_threads"]))
            model, info = load_stereo_model(p["model"], p["weights"] or None)
            choice = choose_backend(str(p["backend"]), str(p["device"]), log=log.info)
            # Only the compiled backends write to the cache; a torch node must not fail on a bad cache path.
            cache_dir = prepare_cache_dir(p["engine_cache_dir"]) if choice.backend != "torch" else None
            engine = create_engine(
                choice,
                model,
                model_sha256=model_digest(model, info.sha256),
                cache_dir=cache_dir,
                num_threads=int(p["num_threads"]),
                logger=log,
            )
            self.pipeline = StereoDepthPipeline(engine, compute_points=True)
        except (ModelLoadError, OSError, ValueError, RuntimeError) as exc:
            # EngineError / BackendUnavailable are RuntimeErrors: same clear failure, node unconfigured.
            log.error(f"configure failed, node stays unconfigured: {exc}")
            self.health.problem("model_load_failed", str(exc))
            return TransitionCallbackReturn.FAILURE
        self.model_info = info
        self.backend_choice = choice
        if cache_dir is not None:
            log.info(
                f"{choice.backend}: engines for each input size are built on the first frame of that size "
                f"and cached in {cache_dir}"
            )
        self._max_disparity = float(model.max_disparity)
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
        out_qos = qos_from_name(p["output_qos"])
        self._pubs = {
            "disparity": self.create_lifecycle_publisher(DisparityImage, "disparity", out_qos),
            "depth": self.create_lifecycle_publisher(Image, "depth", out_qos),
            "uncertainty": self.create_lifecycle_publisher(Image, "depth/uncertainty", out_qos),
            "points": self.create_lifecycle_publisher(PointCloud2, "points", out_qos),
        }
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        in_qos = qos_from_name(p["input_qos"])
        types = (Image, CameraInfo, Image, CameraInfo)
        self._subs = [
            Subscriber(self, t, name, qos_profile=in_qos) for t, name in zip(types, INPUT_TOPICS, strict=True)
        ]
        for sub, name in zip(self._subs, INPUT_TOPICS, strict=True):
            sub.registerCallback(self._count_topic, name)
        if p["approximate_sync"]:
            self._sync = ApproximateTimeSynchronizer(
                self._subs, p["queue_size"], p["approximate_sync_tolerance_seconds"]
            )
        else:
            self._sync = TimeSynchronizer(self._subs, p["queue_size"])
        self._sync.registerCallback(self._on_stereo)
        self._last_stamp_ns = None
        self.get_logger().info(
            f"active: {'approximate' if p['approximate_sync'] else 'exact'} sync on "
            + ", ".join(self.resolve_topic_name(t) for t in INPUT_TOPICS)
        )
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscriptions()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscriptions()
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self.pipeline is not None:
            self.pipeline.engine.close()
        self.pipeline = None
        self.model_info = None
        self.backend_choice = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_cleanup(state)

    def _destroy_subscriptions(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub.sub)
        self._subs = []
        self._sync = None

    # ------------------------------------------------------------------ input handling
    def _count_topic(self, msg: Any, name: str) -> None:
        self._topic_counts[name] += 1
        self.health.count("input " + name)

    def _check_image(self, side: str, msg: Image) -> None:
        """Reject an image whose header does not describe its buffer, naming the field and the values.

        The codec would refuse most of these too, but checking here gives every kind its own diagnostic
        counter and throttled warning. ``data`` longer than ``step * height`` is rejected as well (the codec
        alone would ignore the tail): the header then does not describe the buffer, and the likeliest cause
        (a wrong ``height`` or ``step``) would otherwise produce a silently sheared or cropped image.
        """
        encoding, width, height, step = msg.encoding, int(msg.width), int(msg.height), int(msg.step)
        if encoding not in INPUT_ENCODINGS:
            if encoding in ENCODINGS:
                raise InputRejected(
                    "not_camera_encoding",
                    f"{side} image encoding '{encoding}' is a valid ROS encoding but not a camera image "
                    f"(depth / disparity maps are not stereo input); accepted: {', '.join(INPUT_ENCODINGS)}",
                )
            raise InputRejected(
                "unsupported_encoding",
                f"{side} image encoding {encoding!r} is unknown; accepted: {', '.join(INPUT_ENCODINGS)}",
            )
        if width == 0 or height == 0:
            raise InputRejected("empty_image", f"{side} image is empty ({width}x{height})")
        if width * height > self.params["max_input_pixels"]:
            raise InputRejected(
                "image_too_large",
                f"{side} image {width}x{height} = {width * height} px exceeds "
                f"max_input_pixels={self.params['max_input_pixels']}",
            )
        row_bytes = width * ENCODINGS[encoding].bytes_per_pixel
        if step < row_bytes:
            raise InputRejected(
                "image_step_too_small",
                f"{side} image step {step} < width {width} * {ENCODINGS[encoding].bytes_per_pixel} bytes "
                f"({encoding}) = {row_bytes}",
            )
        needed, size = step * height, len(msg.data)
        if size < needed:
            raise InputRejected(
                "image_data_truncated",
                f"{side} image data has {size} bytes < step {step} * height {height} = {needed} (truncated?)",
            )
        if size > needed:
            raise InputRejected(
                "image_data_oversized",
                f"{side} image data has {size} bytes > step {step} * height {height} = {needed}: "
                "height or step is wrong",
            )

    def _decode(
        self, left_msg: Image, left_info: CameraInfo, right_msg: Image, right_info: CameraInfo
    ) -> tuple[np.ndarray, np.ndarray, StereoCamera]:
        """Validate and convert one stereo set; raise InputRejected naming what is wrong."""
        self._check_image("left", left_msg)
        self._check_image("right", right_msg)
        if (left_msg.width, left_msg.height) != (right_msg.width, right_msg.height):
            raise InputRejected(
                "size_mismatch",
                f"left image is {left_msg.width}x{left_msg.height} but right is "
                f"{right_msg.width}x{right_msg.height}",
            )
        for side, info in (("left", left_info), ("right", right_info)):
            if (info.width, info.height) != (0, 0) and (info.width, info.height) != (
                left_msg.width,
                left_msg.height,
            ):
                raise InputRejected(
                    "camera_info_mismatch",
                    f"{side} camera_info is for {info.width}x{info.height} but images are "
                    f"{left_msg.width}x{left_msg.height}",
                )
        try:
            left = to_rgb8(image_to_numpy(left_msg), INPUT_ENCODINGS[left_msg.encoding])
            right = to_rgb8(image_to_numpy(right_msg), INPUT_ENCODINGS[right_msg.encoding])
        except ImageEncodingError as exc:
            raise InputRejected("malformed_image", str(exc)) from exc
        try:
            camera = StereoCamera.from_projection_matrices(
                left_info.p,
                right_info.p,
                left_msg.width,
                left_msg.height,
                frame_id=left_msg.header.frame_id or left_info.header.frame_id,
            )
        except CameraModelError as exc:
            # One counter per reason (nonfinite, bad_focal, no_baseline, ...): see CAMERA_ERROR_KINDS.
            raise InputRejected("camera_info_" + exc.kind, str(exc)) from exc
        return left, right, camera

    def _on_stereo(
        self, left_msg: Image, left_info: CameraInfo, right_msg: Image, right_info: CameraInfo
    ) -> None:
        t0 = time.perf_counter()
        self.health.count("stereo sets")
        if self.pipeline is None:
            return
        stamp_ns = stamp_to_ns(left_msg.header)
        if stamp_ns < 0:
            # ROS time is never negative (rclpy.time.Time refuses it): a corrupt header, not a clock.
            self.health.problem(
                "invalid_stamp",
                f"stereo set stamped sec={left_msg.header.stamp.sec} nanosec={left_msg.header.stamp.nanosec} "
                f"({stamp_ns} ns < 0): dropped",
            )
            return
        # Stamp 0 is accepted (simulations and synthetic bags start there); a driver that never stamps shows
        # up as duplicate_stamp from its second frame on, with a hint.
        if self._last_stamp_ns is not None:
            if stamp_ns == self._last_stamp_ns:
                hint = " (stamp 0: does the driver set header.stamp?)" if stamp_ns == 0 else ""
                self.health.problem(
                    "duplicate_stamp", f"stereo set with the same stamp {stamp_ns} ns again{hint}: dropped"
                )
                return
            if stamp_ns < self._last_stamp_ns:
                self.health.problem(
                    "stamp_went_backwards",
                    f"stamp {stamp_ns} ns is {(self._last_stamp_ns - stamp_ns) / 1e9:.3f} s older than the "
                    "last frame (bag loop or clock reset?); processing it anyway",
                )
        try:
            left, right, camera = self._decode(left_msg, left_info, right_msg, right_info)
        except InputRejected as exc:
            self.health.problem(exc.kind, str(exc))
            return
        self._last_stamp_ns = stamp_ns
        want_points = (
            bool(self.params["publish_points"]) and self._pubs["points"].get_subscription_count() > 0
        )
        self.pipeline.compute_points = want_points
        try:
            result = self.pipeline(left, right, camera)
        except EngineError as exc:
            # Building the engine for this frame size failed; the pipeline will not retry this size.
            self.health.problem("engine_build_failed", f"no {self.params['backend']} engine for frame: {exc}")
            return
        except (RuntimeError, ValueError) as exc:
            self.health.problem("inference_error", f"pipeline failed on frame {stamp_ns}: {exc}")
            return
        self._publish(result, left_msg, camera, left if want_points else None)
        self.health.count("outputs")
        self.health.latency((time.perf_counter() - t0) * 1e3)

    def _publish(
        self, result: StereoDepthResult, left_msg: Image, camera: StereoCamera, rgb: np.ndarray | None
    ) -> None:
        header = left_msg.header
        if not header.frame_id:
            header.frame_id = camera.frame_id
        # DisparityImage's own rule is Z = f*T/d: fold the principal-point offset into the published value,
        # as stereo_image_proc does, so consumers need no doffs.
        disparity_msg = make_disparity_image(
            result.disparity + np.float32(camera.doffs),
            result.valid,
            header,
            f=camera.fx,
            t=camera.baseline,
            min_disparity=float(self.params["min_disparity"]),
            max_disparity=self._max_disparity,
            delta_d=float(self.params["delta_d"]),
        )
        messages = {
            "disparity": disparity_msg,
            "depth": make_depth_image(result.depth, header),
            "uncertainty": make_depth_image(result.depth_std, header),
        }
        if rgb is not None and result.points is not None:
            messages["points"] = make_point_cloud(result.points, rgb, header)
        for key, msg in messages.items():
            try:
                self._pubs[key].publish(msg)
            except Exception as exc:  # noqa: BLE001 - RCLError / InvalidHandle are not importable publicly
                # One failing topic must not stop the others or the node; counted and throttled like input.
                self.health.problem("publish_error", f"publishing {key} failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ health
    def _check_inputs(self) -> None:
        """Warn when inputs arrive but never form a stereo set (missing camera_info, unmatched stamps)."""
        sets = self.health.counters["stereo sets"]
        new = {t: self._topic_counts[t] - self._last_check_counts[t] for t in INPUT_TOPICS}
        if any(new.values()) and sets == self._last_check_sets:
            period = self.params["input_check_period"]
            silent = [t for t, n in new.items() if n == 0]
            detail = ", ".join(f"{self.resolve_topic_name(t)}: {n}" for t, n in new.items())
            hint = (
                f"no messages at all on {', '.join(silent)}"
                if silent
                else "all four topics are publishing but their stamps never match"
                + ("" if self.params["approximate_sync"] else " exactly (try approximate_sync:=true)")
            )
            # Two kinds: a silent topic (camera_info never published, wrong remap) is fixed elsewhere than
            # stamps that never match (unsynchronized cameras, exact sync on free-running drivers).
            self.health.problem(
                "input_topics_silent" if silent else "inputs_unsynchronized",
                f"no complete stereo set in {period:.1f} s ({detail}): {hint}",
            )
        self._last_check_counts = Counter(self._topic_counts)
        self._last_check_sets = sets

    def _backend_status(self) -> str:
        """Resolved backend/device/precision and the engine's shapes, or the request when unconfigured."""
        requested = f"{self.params['backend']} ({self.params['device']})"
        choice = self.backend_choice
        if choice is None or self.pipeline is None:
            return f"requested {requested}"
        return f"{self.pipeline.engine.describe()}; requested {requested}"

    def _publish_diagnostics(self) -> None:
        info = self.model_info
        state = "configured" if self.pipeline is not None else "unconfigured"
        extra = {
            "state": state + (" (subscribed)" if self._subs else ""),
            "backend": self._backend_status(),
            "model": str(self.params["model"]),
            "weights": str(getattr(info, "weights_path", None) or "none"),
            "trained": str(getattr(info, "trained", False)),
            "sync dropped": str(getattr(self._sync, "dropped", 0)),
        }
        level, message = None, ""
        if self.pipeline is None and self.health.problems["model_load_failed"]:
            level, message = ERROR, "model failed to load: " + self.health.last_error
        elif info is not None and not info.trained:
            level, message = WARN, "UNTRAINED weights: outputs are meaningless"
        status = self.health.status(
            f"{self.get_name()}: stereo depth", self.get_fully_qualified_name(), extra, level, message
        )
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))


def main(argv: list[str] | None = None) -> None:
    """``ros2 run scene_perception stereo_depth_node``; configures + activates unless --no-autostart."""
    from scene_perception.ros.runner import run_nodes

    argv = sys.argv if argv is None else argv
    run_nodes([("stereo_depth", StereoDepthNode, {})], argv=argv)


if __name__ == "__main__":
    main()
