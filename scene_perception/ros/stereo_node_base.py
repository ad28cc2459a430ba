"""What every stereo-input node shares: input validation, synchronization, publishing and health.

``stereo_depth`` (GC-Net) and ``sgbm_depth`` (the OpenCV baseline) must accept exactly the same inputs,
reject exactly the same malformed ones under the same problem kinds, and publish the same message layout:
otherwise the graph benchmark and an RViz session would compare the nodes' plumbing, not their matchers.
So the plumbing lives here once, and a node only says how it turns a validated, rectified RGB pair into
disparity (:meth:`StereoNodeBase._compute`).

Topics (all relative, remap as usual), following stereo_image_proc / Isaac ROS:
  in:  left/image_rect, left/camera_info, right/image_rect, right/camera_info
  out: disparity (stereo_msgs/DisparityImage), depth (32FC1 m, NaN invalid, REP 118), points (organized
       PointCloud2 xyz+rgb) and whatever else a subclass lists in ``OUTPUTS`` (e.g. depth/uncertainty),
       /diagnostics (see :data:`~scene_perception.ros.diagnostics.SUMMARY_KEYS`).

Lifecycle: configure sets the matcher up (:meth:`_configure_backend`; a failure leaves the node
unconfigured) and creates the publishers; activate subscribes; deactivate unsubscribes; cleanup releases.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, ClassVar, Protocol

import numpy as np
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from stereo_msgs.msg import DisparityImage

from scene_perception.geometry.rectification import Rectifier
from scene_perception.geometry.stereo_camera import CameraModelError, StereoCamera
from scene_perception.ros import params as P
from scene_perception.ros.codec import numpy_to_image
from scene_perception.ros.image_input import (
    INPUT_ENCODINGS,
    InputRejected,
    decode_rgb,
    image_message_type,
    publish_counted,
    rectify_rgb,
    transport_topic,
)
from scene_perception.ros.messages import make_depth_image, make_disparity_image, make_point_cloud
from scene_perception.ros.node_base import PerceptionNodeBase
from scene_perception.ros.qos import qos_from_name
from scene_perception.ros.sync import (
    ApproximateTimeSynchronizer,
    Subscriber,
    TimeSynchronizer,
    dropped_count,
)

__all__ = ["INPUT_ENCODINGS", "INPUT_TOPICS", "DepthOutputs", "InputRejected", "StereoNodeBase"]

INPUT_TOPICS = ("left/image_rect", "left/camera_info", "right/image_rect", "right/camera_info")

#: Outputs every stereo node publishes: key -> (message type, relative topic).
BASE_OUTPUTS: dict[str, tuple[type, str]] = {
    "disparity": (DisparityImage, "disparity"),
    "depth": (Image, "depth"),
    "points": (PointCloud2, "points"),
}


class DepthOutputs(Protocol):
    """What :meth:`StereoNodeBase._compute` returns (``StereoDepthResult`` is one).

    ``disparity`` is in px *without* the principal-point offset (d = xl - xr of the rectified images), so
    ``camera.disparity_to_depth`` applies; ``depth_std`` is None for matchers without uncertainty.
    """

    disparity: np.ndarray
    valid: np.ndarray
    depth: np.ndarray | None
    depth_std: np.ndarray | None
    points: np.ndarray | None
    inference_ms: float


def _bounds(result: DepthOutputs, min_disparity: float, max_disparity: float) -> tuple[float, float]:
    """The (min, max) disparity the message may claim: a matcher that reports the bounds it applied (the
    GC-Net pipeline: ``max_depth`` raises the floor, a downscaled run widens the range) overrides the
    node's."""
    return (float(getattr(result, "min_disparity", min_disparity)),
            float(getattr(result, "max_disparity", max_disparity)))


class StereoNodeBase(PerceptionNodeBase):
    """Lifecycle node skeleton: synchronized, validated stereo in; disparity/depth/points out; health.

    Subclasses set ``PARAM_SPECS`` (a tuple from :mod:`scene_perception.ros.params`, which must include the
    shared sync/QoS/output/health parameters), ``OUTPUTS`` and ``DESCRIPTION``, and implement
    :meth:`_configure_backend`, :meth:`_release_backend`, :meth:`_ready`, :meth:`_compute` and
    :meth:`_backend_status`.
    """

    PARAM_SPECS: ClassVar[tuple[P.ParamSpec, ...]]
    OUTPUTS: ClassVar[dict[str, tuple[type, str]]] = BASE_OUTPUTS
    DESCRIPTION: ClassVar[str] = "stereo depth"
    STAMPED_INPUT: ClassVar[str] = "stereo set"

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._max_disparity = 0.0
        self._subs: list[Subscriber] = []
        self._rectifiers: list[Rectifier] = []
        self._sync: Any = None
        self._topic_counts: Counter[str] = Counter()
        self._last_check_counts: Counter[str] = Counter()
        self._last_check_sets = 0
        self._check_timer = self.create_timer(self.params["input_check_period"], self._check_inputs)

    @property
    def _last_stamp_ns(self) -> int | None:
        """Stamp of the last stereo set that passed validation (named in subclasses' error messages)."""
        return self._stamps.last_ns

    # ------------------------------------------------------------------ subclass interface
    def _configure_backend(self) -> bool:
        """Set the matcher up from ``self.params``; on failure log, count a problem and return False."""
        raise NotImplementedError

    def _release_backend(self) -> None:
        """Undo :meth:`_configure_backend` (cleanup / shutdown)."""
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once configured (frames arriving before that are counted but not processed)."""
        raise NotImplementedError

    def _compute(
        self, left: np.ndarray, right: np.ndarray, camera: StereoCamera, want_points: bool
    ) -> DepthOutputs | None:
        """Disparity etc. for a validated HxWx3 uint8 RGB pair; None after reporting a problem."""
        raise NotImplementedError

    def _backend_status(self) -> str:
        """What computes the disparity, for the ``backend`` diagnostic key."""
        raise NotImplementedError

    def _extra_images(
        self, left: np.ndarray, right: np.ndarray, result: DepthOutputs
    ) -> dict[str, np.ndarray]:
        """Extra (H, W) float32 images to publish with this frame, by ``OUTPUTS`` key (32FC1, values as
        given: e.g. ``confidence``); called after :meth:`_compute` on the worker thread.  None by default."""
        return {}

    def _diagnostic_extra(self) -> tuple[dict[str, str], Any, str]:
        """Extra key/values, a forced level (or None) and its message for the DiagnosticStatus."""
        return {}, None, ""

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._configure_backend():
            return TransitionCallbackReturn.FAILURE
        out_qos = qos_from_name(self.params["output_qos"])
        self._pubs = {
            key: self.create_lifecycle_publisher(msg_type, topic, out_qos)
            for key, (msg_type, topic) in self.OUTPUTS.items()
        }
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        in_qos = qos_from_name(p["input_qos"], depth=int(p["input_depth"]))
        transport = str(p["image_transport"])
        image_type = image_message_type(transport)
        # image_transport's naming: the transport's topic hangs off the (remapped) base image topic.
        topics = [
            transport_topic(self.resolve_topic_name(t), transport)
            if transport != "raw" and t.endswith("image_rect") else t
            for t in INPUT_TOPICS
        ]
        types = (image_type, CameraInfo, image_type, CameraInfo)
        self._subs = [
            Subscriber(self, t, name, qos_profile=in_qos) for t, name in zip(types, topics, strict=True)
        ]
        for sub, name in zip(self._subs, INPUT_TOPICS, strict=True):
            sub.registerCallback(self._count_topic, name)
        # One rectifier per camera; `auto` leaves topics named image_rect* alone (already rectified).
        self._rectifiers = [
            Rectifier(str(p["rectify"]), side, self.resolve_topic_name(topic))
            for side, topic in (("left", INPUT_TOPICS[0]), ("right", INPUT_TOPICS[2]))
        ]
        if p["approximate_sync"]:
            self._sync = ApproximateTimeSynchronizer(
                self._subs, p["queue_size"], p["approximate_sync_tolerance_seconds"]
            )
        else:
            self._sync = TimeSynchronizer(self._subs, p["queue_size"])
        self._sync.registerCallback(self._on_stereo)
        self._stamps.reset()
        self._worker.capacity = int(p["input_depth"])
        self._worker.start()
        self.get_logger().info(
            f"active: {'approximate' if p['approximate_sync'] else 'exact'} sync on "
            + ", ".join(self.resolve_topic_name(t) for t in topics) + f"; rectify {p['rectify']}"
        )
        return super().on_activate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscriptions()
        self._destroy_publishers()
        self._release_backend()
        return TransitionCallbackReturn.SUCCESS

    def _destroy_subscriptions(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub.sub)
        self._subs = []
        self._sync = None
        # The frame in progress finishes (and publishes) before deactivate/cleanup releases the matcher.
        self._worker.stop()

    # ------------------------------------------------------------------ input handling
    def _count_topic(self, msg: Any, name: str) -> None:
        self._topic_counts[name] += 1
        self.health.count("input " + name)

    def _decode(
        self, left_msg: Image | CompressedImage, left_info: CameraInfo, right_msg: Image | CompressedImage,
        right_info: CameraInfo,
    ) -> tuple[np.ndarray, np.ndarray, StereoCamera]:
        """Validate, convert and (per ``rectify``) rectify one stereo set; InputRejected naming what is
        wrong. Sizes are compared after decoding: a CompressedImage says its size only in its data."""
        max_pixels = int(self.params["max_input_pixels"])
        left = decode_rgb("left", left_msg, max_pixels)
        right = decode_rgb("right", right_msg, max_pixels)
        (h, w), (hr, wr) = left.shape[:2], right.shape[:2]
        if (w, h) != (wr, hr):
            raise InputRejected("size_mismatch", f"left image is {w}x{h} but right is {wr}x{hr}")
        for side, info in (("left", left_info), ("right", right_info)):
            if (info.width, info.height) != (0, 0) and (info.width, info.height) != (w, h):
                raise InputRejected(
                    "camera_info_mismatch",
                    f"{side} camera_info is for {info.width}x{info.height} but images are {w}x{h}",
                )
        left = rectify_rgb("left", left, left_info, self._rectifiers[0])
        right = rectify_rgb("right", right, right_info, self._rectifiers[1])
        try:
            camera = StereoCamera.from_projection_matrices(
                left_info.p,
                right_info.p,
                w,
                h,
                frame_id=left_msg.header.frame_id or left_info.header.frame_id,
            )
        except CameraModelError as exc:
            # One counter per reason (nonfinite, bad_focal, no_baseline, ...): see CAMERA_ERROR_KINDS.
            raise InputRejected("camera_info_" + exc.kind, str(exc)) from exc
        return left, right, camera

    def _on_stereo(
        self, left_msg: Image, left_info: CameraInfo, right_msg: Image, right_info: CameraInfo
    ) -> None:
        """Synchronizer callback (executor thread): count the set and hand it to the worker."""
        self.health.count("stereo sets")
        if self._ready():
            self._worker.submit((left_msg, left_info, right_msg, right_info, time.perf_counter()))

    def _process_input(self, item: tuple[Image, CameraInfo, Image, CameraInfo, float]) -> None:
        """Validate, compute and publish one stereo set (worker thread)."""
        left_msg, left_info, right_msg, right_info, t0 = item
        if not self._ready():
            return
        try:
            stamp_ns = self._stamps.check(left_msg.header, self.health)
        except InputRejected as exc:
            self._reject(exc.kind, str(exc))
            return
        try:
            left, right, camera = self._decode(left_msg, left_info, right_msg, right_info)
        except InputRejected as exc:
            self._reject(exc.kind, str(exc))
            return
        self._stamps.accept(stamp_ns)
        want_points = (
            bool(self.params["publish_points"]) and self._pubs["points"].get_subscription_count() > 0
        )
        result = self._compute(left, right, camera, want_points)
        if result is None:
            return
        extra = self._extra_images(left, right, result)
        self._publish(result, left_msg, camera, left if want_points else None, extra)
        saturated = int(getattr(result, "saturated", 0))
        if saturated:
            # Near surfaces beyond the searched range: invalid, not published farther than they are.
            self.health.count("saturated pixels", saturated)
            self.health.count("frames with saturated pixels")
        far = int(getattr(result, "far", 0))
        if far:
            # Beyond the matcher's range by the far head (the sky): invalid, counted like saturation.
            self.health.count("far pixels", far)
        self.health.count("outputs")
        self.health.inference(float(result.inference_ms))
        self.health.latency((time.perf_counter() - t0) * 1e3)

    def _publish(
        self, result: DepthOutputs, left_msg: Image, camera: StereoCamera, rgb: np.ndarray | None,
        extra: dict[str, np.ndarray] | None = None,
    ) -> None:
        header = left_msg.header
        if not header.frame_id:
            header.frame_id = camera.frame_id
        # DisparityImage's own rule is Z = f*T/d: fold the principal-point offset into the published value,
        # as stereo_image_proc does, so consumers need no doffs.
        min_disparity, max_disparity = _bounds(result, float(self.params["min_disparity"]),
                                               self._max_disparity)
        disparity_msg = make_disparity_image(
            result.disparity + np.float32(camera.doffs),
            result.valid,
            header,
            f=camera.fx,
            t=camera.baseline,
            min_disparity=min_disparity + camera.doffs,
            max_disparity=max_disparity + camera.doffs,
            delta_d=float(self.params["delta_d"]),
        )
        too_far = too_near = None
        if self.params.get("depth_infinities", False):  # REP 117 meanings (the GC-Net node's parameter)
            too_far, too_near = getattr(result, "far_mask", None), getattr(result, "saturated_mask", None)
        messages = {"disparity": disparity_msg,
                    "depth": make_depth_image(result.depth, header, too_far=too_far, too_near=too_near)}
        if "uncertainty" in self._pubs and result.depth_std is not None:
            messages["uncertainty"] = make_depth_image(result.depth_std, header)
        if rgb is not None and result.points is not None:
            messages["points"] = make_point_cloud(result.points, rgb, header)
        for key, image in (extra or {}).items():
            if key in self._pubs:
                messages[key] = numpy_to_image(np.ascontiguousarray(image, dtype=np.float32), "32FC1", header)
        publish_counted(self._pubs, messages, self.health)

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

    def _summary(self) -> dict[str, str]:
        """The :data:`~scene_perception.ros.diagnostics.SUMMARY_KEYS` this node computes itself."""
        left_rate = self.health.rates.get("input " + INPUT_TOPICS[0])
        out_rate = self.health.rates.get("outputs")
        dropped = dropped_count(self._sync) if self._sync is not None else 0
        no_counter = "n/a (message_filters does not count)"
        return {
            "input rate (Hz)": f"{left_rate.rate() if left_rate else 0.0:.2f}",
            "output rate (Hz)": f"{out_rate.rate() if out_rate else 0.0:.2f}",
            "dropped (sync) count": no_counter if dropped is None else str(dropped),
            "invalid input count": str(self.invalid_inputs),
            "backend": self._backend_status(),
        }

    def _publish_diagnostics(self) -> None:
        extra, level, message = self._diagnostic_extra()
        state = "configured" if self._ready() else "unconfigured"
        values = {"state": state + (" (subscribed)" if self._subs else ""), **self._summary(), **extra}
        self._publish_status(values, level, message)
