"""Camera pose lifecycle node: one camera image in; PoseNet pose with MC-dropout covariance out (+ TF).

A thin adapter around :class:`~scene_perception.pipelines.pose.PosePipeline` (PoseNet, Kendall & Cipolla,
trained with learned homoscedastic weighting or the geometric reprojection loss; covariance from
Monte-Carlo dropout): ROS message -> numpy -> pipeline -> ROS message.  The benchmark
(``benchmarks/pose_accuracy.py``) runs the same pipeline.

Topics (relative, remap as usual):
  in:  left/image_rect (sensor_msgs/Image; rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1, 8UC3)
  out: pose (geometry_msgs/PoseWithCovarianceStamped): header.stamp = the image's stamp, header.frame_id =
       ``map_frame``; the pose of the image's optical frame (x right, y down, z forward) in the map;
       covariance row-major over (x, y, z, rotX, rotY, rotZ) in m^2 / rad^2, rotations about the map's
       fixed axes; /diagnostics; /tf (``map_frame`` -> ``camera_frame``) only when tf2_ros is importable.

TF: tf2_ros is not on PyPI, so the pip environment has no TransformBroadcaster; the node then logs once
that it publishes the pose topic only and reports ``tf: unavailable`` in /diagnostics (it does not fake a
/tf publisher).  On a ROS installation with tf2_ros the broadcast is on while ``publish_tf`` is true.

PoseNet relocalises within the one scene it was trained in: the shipped weights know one synthetic street
(models/posenet.json says which); a camera elsewhere gets a pose in that street, with no warning the
network could give.  The covariance is epistemic only (see the model card's calibration numbers).

Input validation, stamp rules and counted publishing are shared with the other image nodes
(:mod:`scene_perception.ros.image_input`).  Lifecycle: configure loads the weights (missing / corrupt /
mismatching / absent weights fail the transition: the node stays unconfigured, reason in the log and in
/diagnostics at ERROR) and creates the publisher; activate subscribes; deactivate unsubscribes.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from scene_perception.ros import params as P
from scene_perception.ros.diagnostics import ERROR, Health, diagnostic_array
from scene_perception.ros.image_input import InputRejected, StampGuard, decode_rgb, publish_counted
from scene_perception.ros.qos import qos_from_name

__all__ = ["INPUT_TOPIC", "OUTPUT_TOPIC", "PoseNode", "main", "pose_message", "transform_message"]

INPUT_TOPIC = "left/image_rect"
OUTPUT_TOPIC = "pose"


def pose_message(result: Any, stamp: Any, map_frame: str) -> PoseWithCovarianceStamped:
    """PoseWithCovarianceStamped of a :class:`~scene_perception.pipelines.pose.PoseResult`."""
    msg = PoseWithCovarianceStamped()
    msg.header = Header(stamp=stamp, frame_id=map_frame)
    p = msg.pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in result.position)
    x, y, z, w = (float(v) for v in result.quaternion)
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = x, y, z, w
    msg.pose.covariance = np.asarray(result.covariance, np.float64).reshape(36)
    return msg


def transform_message(result: Any, stamp: Any, map_frame: str, child_frame: str) -> TransformStamped:
    """The same pose as a TF transform ``map_frame`` -> ``child_frame`` (world_T_camera)."""
    msg = TransformStamped()
    msg.header = Header(stamp=stamp, frame_id=map_frame)
    msg.child_frame_id = child_frame
    t = msg.transform
    t.translation.x, t.translation.y, t.translation.z = (float(v) for v in result.position)
    t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w = (float(v) for v in result.quaternion)
    return msg


def _transform_broadcaster(node: LifecycleNode) -> Any:
    """tf2_ros.TransformBroadcaster, or None when tf2_ros is not installed (e.g. ROS 2 from PyPI)."""
    try:
        from tf2_ros import TransformBroadcaster
    except ImportError:
        return None
    return TransformBroadcaster(node)


class PoseNode(LifecycleNode):
    """PoseNet camera relocalisation with MC-dropout covariance as a managed node."""

    PARAM_SPECS = P.POSE_PARAMS
    DESCRIPTION = "camera pose"

    def __init__(self, node_name: str = "pose", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = P.declare(self, self.PARAM_SPECS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.health = Health(self.get_logger().warning, self.params["log_throttle_seconds"])
        self.pipeline: Any = None  # PosePipeline once configured
        self.device = ""
        self._pub: Any = None
        self._sub: Any = None
        self._tf: Any = None
        self._tf_status = "not configured"
        self._stamps = StampGuard("image")
        self.invalid_inputs = 0
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        result = P.validate(self.PARAM_SPECS, changes)
        if result.successful:
            for change in changes:
                self.params[change.name] = change.value
                if change.name == "log_throttle_seconds":
                    self.health.throttle_seconds = float(change.value)
                elif change.name == "mc_samples" and self.pipeline is not None:
                    self.pipeline.mc_samples = int(change.value)
        return result

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._load_pipeline():
            return TransitionCallbackReturn.FAILURE
        self._pub = self.create_lifecycle_publisher(
            PoseWithCovarianceStamped, OUTPUT_TOPIC, qos_from_name(self.params["output_qos"])
        )
        self._tf = _transform_broadcaster(self)
        if self._tf is None:
            self._tf_status = "unavailable (tf2_ros not installed): pose topic only"
            if self.params["publish_tf"]:
                self.get_logger().info(f"publish_tf is set but tf2_ros is not importable: no /tf broadcast, "
                                       f"the pose goes to {self.resolve_topic_name(OUTPUT_TOPIC)} only")
        else:
            self._tf_status = "tf2_ros"
        return TransitionCallbackReturn.SUCCESS

    def _load_pipeline(self) -> bool:
        """Build the pipeline from ``weights``; False (logged, counted as model_load_failed) on failure."""
        p = self.params
        log = self.get_logger()
        try:
            # Imported here so a broken torch install fails the transition with a message, not the import.
            import torch

            from scene_perception.engines.select import resolve_device
            from scene_perception.pipelines.pose import PosePipeline

            if p["num_threads"] > 0:
                torch.set_num_threads(int(p["num_threads"]))
            device = resolve_device(str(p["device"]))
            pipeline = PosePipeline.from_weights(p["weights"] or None, int(p["mc_samples"]), device)
        except (ImportError, OSError, ValueError, RuntimeError) as exc:
            # ModelLoadError is a RuntimeError: missing, corrupt, mismatching or absent weights land here.
            log.error(f"configure failed, node stays unconfigured: {exc}")
            self.health.problem("model_load_failed", str(exc))
            return False
        self.pipeline, self.device = pipeline, device
        info = pipeline.model_info
        log.info(f"PoseNet '{getattr(info, 'name', '?')}' from {getattr(info, 'weights_path', '?')} on "
                 f"{device}; input {pipeline.input_size[1]}x{pipeline.input_size[0]}, "
                 f"mc_samples={pipeline.mc_samples}")
        return True

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._sub = self.create_subscription(
            Image, INPUT_TOPIC, self._on_image, qos_from_name(self.params["input_qos"])
        )
        self._stamps.reset()
        self.get_logger().info(f"active: subscribed to {self.resolve_topic_name(INPUT_TOPIC)}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscription()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscription()
        if self._pub is not None:
            self.destroy_lifecycle_publisher(self._pub)
        self._pub, self._tf = None, None
        self._tf_status = "not configured"
        self.pipeline = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_cleanup(state)

    def _destroy_subscription(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
        self._sub = None

    # ------------------------------------------------------------------ processing
    def _reject(self, kind: str, message: str) -> None:
        self.invalid_inputs += 1
        self.health.problem(kind, message)

    def _on_image(self, msg: Image) -> None:
        t0 = time.perf_counter()
        self.health.count("input " + INPUT_TOPIC)
        if self.pipeline is None:
            return
        try:
            stamp_ns = self._stamps.check(msg.header, self.health)
            image = decode_rgb("input", msg, int(self.params["max_input_pixels"]))
        except InputRejected as exc:
            self._reject(exc.kind, str(exc))
            return
        self._stamps.accept(stamp_ns)
        try:
            result = self.pipeline(image)
            out = pose_message(result, msg.header.stamp, str(self.params["map_frame"]))
        except (RuntimeError, ValueError) as exc:
            self.health.problem("inference_error", f"pipeline failed on frame {stamp_ns}: {exc}")
            return
        publish_counted({"pose": self._pub}, {"pose": out}, self.health)
        if self._tf is not None and self.params["publish_tf"]:
            child = str(self.params["camera_frame"]) or msg.header.frame_id
            if child:
                try:
                    self._tf.sendTransform(transform_message(result, msg.header.stamp,
                                                             str(self.params["map_frame"]), child))
                except Exception as exc:  # noqa: BLE001 - same rule as publish_counted
                    self.health.problem("publish_error", f"TF broadcast failed: {type(exc).__name__}: {exc}")
            else:
                self.health.problem("no_camera_frame", "image has no header.frame_id and camera_frame is "
                                                       "empty: no TF broadcast for this frame")
        self.health.count("outputs")
        self.health.inference(float(result.latency_ms))
        self.health.latency((time.perf_counter() - t0) * 1e3)

    # ------------------------------------------------------------------ health
    def _backend_status(self) -> str:
        if self.pipeline is None:
            return f"requested torch ({self.params['device']})"
        import torch

        return (f"torch {torch.__version__} on {self.device} ({torch.get_num_threads()} threads), "
                f"mc_samples {self.pipeline.mc_samples} (batched)")

    def _publish_diagnostics(self) -> None:
        in_rate = self.health.rates.get("input " + INPUT_TOPIC)
        out_rate = self.health.rates.get("outputs")
        configured = self.pipeline is not None
        info = getattr(self.pipeline, "model_info", None)
        state = ("configured" if configured else "unconfigured") + (" (subscribed)" if self._sub else "")
        values = {
            "state": state,
            "input rate (Hz)": f"{in_rate.rate() if in_rate else 0.0:.2f}",
            "output rate (Hz)": f"{out_rate.rate() if out_rate else 0.0:.2f}",
            "dropped (sync) count": "n/a (single image input, no synchronizer)",
            "invalid input count": str(self.invalid_inputs),
            "backend": self._backend_status(),
            "model": str(getattr(info, "name", "none")),
            "weights": str(getattr(info, "weights_path", None) or self.params["weights"] or "shipped"),
            "mc_samples": str(self.params["mc_samples"]),
            "map_frame": str(self.params["map_frame"]),
            "tf": self._tf_status,
        }
        level, message = None, ""
        if not configured and self.health.problems["model_load_failed"]:
            level, message = ERROR, "model failed to load: " + self.health.last_error
        status = self.health.status(
            f"{self.get_name()}: {self.DESCRIPTION}", self.get_fully_qualified_name(), values, level, message
        )
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))


def main(argv: list[str] | None = None) -> None:
    """``ros2 run scene_perception pose_node``; configures + activates unless --no-autostart."""
    from scene_perception.ros.runner import run_nodes

    argv = sys.argv if argv is None else argv
    run_nodes([("pose", PoseNode, {})], argv=argv)


if __name__ == "__main__":
    main()
