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

Input validation, stamp rules, counted publishing, weights loading and the diagnostics summary are shared
with the other single-image node (:mod:`scene_perception.ros.image_node_base`).  Lifecycle: configure
loads the weights (missing / corrupt / mismatching / absent weights fail the transition: the node stays
unconfigured, reason in the log and in /diagnostics at ERROR) and creates the publisher; activate
subscribes; deactivate unsubscribes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import QoSProfile
from std_msgs.msg import Header

from scene_perception.ros import params as P
from scene_perception.ros.image_node_base import INPUT_TOPIC, ImageNodeBase

__all__ = ["INPUT_TOPIC", "OUTPUT_TOPIC", "PoseNode", "main", "pose_message", "transform_message"]

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


class PoseNode(ImageNodeBase):
    """PoseNet camera relocalisation with MC-dropout covariance as a managed node."""

    PARAM_SPECS = P.POSE_PARAMS
    DESCRIPTION = "camera pose"

    def __init__(self, node_name: str = "pose", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._tf: Any = None
        self._tf_status = "not configured"

    @property
    def _pub(self) -> Any:
        """The pose publisher (None while unconfigured)."""
        return self._pubs.get("pose")

    # ------------------------------------------------------------------ lifecycle
    def _build_pipeline(self, device: str) -> Any:
        from scene_perception.pipelines.pose import PosePipeline

        p = self.params
        return PosePipeline.from_weights(p["weights"] or None, int(p["mc_samples"]), device)

    def _pipeline_loaded(self) -> None:
        pipeline, info = self.pipeline, self.pipeline.model_info
        self.get_logger().info(
            f"PoseNet '{getattr(info, 'name', '?')}' from {getattr(info, 'weights_path', '?')} on "
            f"{self.device}; input {pipeline.input_size[1]}x{pipeline.input_size[0]}, "
            f"mc_samples={pipeline.mc_samples}"
        )

    def _create_publishers(self, out_qos: QoSProfile) -> None:
        pub = self.create_lifecycle_publisher(PoseWithCovarianceStamped, OUTPUT_TOPIC, out_qos)
        self._pubs = {"pose": pub}
        self._tf = _transform_broadcaster(self)
        if self._tf is None:
            self._tf_status = "unavailable (tf2_ros not installed): pose topic only"
            if self.params["publish_tf"]:
                self.get_logger().info(f"publish_tf is set but tf2_ros is not importable: no /tf broadcast, "
                                       f"the pose goes to {self.resolve_topic_name(OUTPUT_TOPIC)} only")
        else:
            self._tf_status = "tf2_ros"

    def _release_publishers(self) -> None:
        self._tf = None
        self._tf_status = "not configured"

    # ------------------------------------------------------------------ processing
    def _messages(self, result: Any, image: np.ndarray, header: Header) -> dict[str, Any]:
        return {"pose": pose_message(result, header.stamp, str(self.params["map_frame"]))}

    def _publish(self, result: Any, messages: Mapping[str, Any], header: Header) -> None:
        super()._publish(result, messages, header)
        if self._tf is None or not self.params["publish_tf"]:
            return
        child = str(self.params["camera_frame"]) or header.frame_id
        if child:
            try:
                self._tf.sendTransform(transform_message(result, header.stamp,
                                                         str(self.params["map_frame"]), child))
            except Exception as exc:  # noqa: BLE001 - same rule as publish_counted
                self.health.problem("publish_error", f"TF broadcast failed: {type(exc).__name__}: {exc}")
        else:
            self.health.problem("no_camera_frame", "image has no header.frame_id and camera_frame is "
                                                   "empty: no TF broadcast for this frame")

    # ------------------------------------------------------------------ health
    def _diagnostic_extra(self) -> tuple[dict[str, str], Any, str]:
        info = getattr(self.pipeline, "model_info", None)
        values = {
            "model": str(getattr(info, "name", "none")),
            "weights": str(getattr(info, "weights_path", None) or self.params["weights"] or "shipped"),
            "mc_samples": str(self.params["mc_samples"]),
            "map_frame": str(self.params["map_frame"]),
            "tf": self._tf_status,
        }
        return values, None, ""


def main(argv: list[str] | None = None) -> None:
    """``ros2 run scene_perception pose_node``; configures + activates unless --no-autostart."""
    from scene_perception.ros.runner import run_nodes

    argv = sys.argv if argv is None else argv
    raise SystemExit(run_nodes([("pose", PoseNode, {})], argv=argv))


if __name__ == "__main__":
    main()
