"""Helpers shared by the ROS tests: a private rclpy context, spinning until a condition, stereo frames."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from scene_perception.geometry.stereo_camera import StereoCamera
from scene_perception.ros.codec import numpy_to_image
from scene_perception.ros.messages import camera_info_pair_from_camera


class RosHarness:
    """One rclpy context + executor per test module, so tests never share DDS participants by accident."""

    def __init__(self, domain_id: int | None = None) -> None:
        """``domain_id``: a private DDS domain, for tests whose exact message counts must not see other
        processes on this machine (a demo or another test run publishing the same topic names)."""
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list[Node] = []

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def remove(self, node: Node) -> None:
        self.executor.remove_node(node)
        self.nodes.remove(node)
        node.destroy_node()

    def spin_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def shutdown(self) -> None:
        for node in list(self.nodes):
            self.remove(node)
        self.executor.shutdown()
        rclpy.shutdown(context=self.context)


def private_domain_id() -> int:
    """A DDS domain id (1..200) unlikely to be shared with other processes on this machine."""
    return 1 + os.getpid() % 200


def header(stamp_ns: int, frame_id: str = "left_optical") -> Header:
    return Header(
        stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id
    )


def shifted_pair(height: int, width: int, shift: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured fronto-parallel plane: right(x) = left(x + shift), so the true disparity is ``shift``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height, width + shift, 3), dtype=np.uint8)
    left = np.ascontiguousarray(base[:, :width])
    right = np.ascontiguousarray(base[:, shift : shift + width])
    return left, right


def make_camera(width: int, height: int) -> StereoCamera:
    return StereoCamera(width, height, 100.0, 100.0, width / 2, height / 2, width / 2, 0.12, "left_optical")


def stereo_messages(
    left: np.ndarray,
    right: np.ndarray,
    camera: StereoCamera,
    stamp_ns: int,
    encoding: str = "rgb8",
    step: int | None = None,
) -> tuple:
    """(left Image, left CameraInfo, right Image, right CameraInfo) sharing one stamp."""
    h = header(stamp_ns, camera.frame_id)
    if encoding == "bgr8":
        left, right = left[..., ::-1].copy(), right[..., ::-1].copy()
    elif encoding == "mono8":
        left, right = left[..., 1].copy(), right[..., 1].copy()
    li, ri = camera_info_pair_from_camera(camera, h)
    return (
        numpy_to_image(left, encoding, h, step=step),
        li,
        numpy_to_image(right, encoding, header(stamp_ns, "right_optical"), step=step),
        ri,
    )


def publish_all(publishers: Iterable, messages: Iterable) -> None:
    for pub, msg in zip(publishers, messages, strict=True):
        pub.publish(msg)


def diagnostic_values(arrays: Iterable, node_name: str) -> dict[str, str]:
    """Key/values of the most recent DiagnosticStatus from the node called ``node_name`` (by hardware_id,
    the node's fully qualified name), in received DiagnosticArrays; {} when none came yet."""
    for array in reversed(list(arrays)):
        for status in array.status:
            if status.hardware_id.rsplit("/", 1)[-1] == node_name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def check_summary_diagnostics(values: dict[str, str]) -> None:
    """The keys every stereo node must report (issue 7, item 4), present and well-formed."""
    from scene_perception.ros.diagnostics import SUMMARY_KEYS

    missing = [k for k in SUMMARY_KEYS if k not in values]
    assert not missing, f"diagnostics lack {missing}; got {sorted(values)}"
    for key in SUMMARY_KEYS[:4]:  # rates and inference latency percentiles
        float(values[key])  # a number (NaN before the first frame)
    assert int(values["invalid input count"]) >= 0
    assert values["dropped (sync) count"].isdigit() or values["dropped (sync) count"].startswith("n/a")
    assert values["backend"] and not values["backend"].startswith("requested"), values["backend"]


class Driver(Node):
    """Publishes stereo input and records every output of the node under test."""

    def __init__(self, context) -> None:  # noqa: ANN001
        super().__init__("driver", context=context)
        q = qos_profile_sensor_data
        self.pubs = [
            self.create_publisher(Image, "left/image_rect", q),
            self.create_publisher(CameraInfo, "left/camera_info", q),
            self.create_publisher(Image, "right/image_rect", q),
            self.create_publisher(CameraInfo, "right/camera_info", q),
        ]
        self.got: dict[str, list] = {k: [] for k in ("disparity", "depth", "uncertainty", "points", "diag")}
        self.create_subscription(DisparityImage, "disparity", self.got["disparity"].append, 10)
        self.create_subscription(Image, "depth", self.got["depth"].append, 10)
        self.create_subscription(Image, "depth/uncertainty", self.got["uncertainty"].append, 10)
        self.create_subscription(PointCloud2, "points", self.got["points"].append, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.got["diag"].append, 10)

    def clear(self) -> None:
        for v in self.got.values():
            v.clear()


def send(
    harness: RosHarness, driver: Driver, messages: tuple, expect: int = 1, timeout: float = 10.0
) -> bool:
    before = len(driver.got["disparity"])
    publish_all(driver.pubs, messages)
    return harness.spin_until(
        lambda: (
            len(driver.got["disparity"]) >= before + expect and len(driver.got["depth"]) >= before + expect
        ),
        timeout,
    )


# ------------------------------------------------------------------ live quality (both stereo nodes)
#: The live-quality summary keys both stereo nodes publish in /diagnostics.
QUALITY_KEYS = ("photometric error p50", "left-right consistent %", "vertical offset (px)",
                "vertical offset spread (px)")


def last_status(driver: Driver, node_name: str) -> DiagnosticStatus | None:
    """The newest DiagnosticStatus of ``node_name`` the driver received, or None."""
    for array in reversed(driver.got["diag"]):
        for status in array.status:
            if status.hardware_id.rsplit("/", 1)[-1] == node_name:
                return status
    return None


def quality_values_after(harness: RosHarness, driver: Driver, node_name: str,
                         frames: int) -> tuple[dict[str, str], DiagnosticStatus]:
    """The first status of ``node_name`` (after clearing what came before) that reports ``frames`` assessed
    frames in its live-quality window: its key/values and the status."""
    def ready() -> bool:
        status = last_status(driver, node_name)
        return status is not None and any(
            kv.key == "quality frames" and kv.value.startswith(f"{frames} ") for kv in status.values)

    driver.got["diag"].clear()
    assert harness.spin_until(ready, 10), last_status(driver, node_name)
    status = last_status(driver, node_name)
    assert status is not None
    return {kv.key: kv.value for kv in status.values}, status


def send_frames(harness: RosHarness, driver: Driver, left: np.ndarray, right: np.ndarray, first_ns: int,
                n: int = 3) -> None:
    """Send the same pair ``n`` times, 10 ms apart, and wait for each output."""
    camera = make_camera(left.shape[1], left.shape[0])
    for i in range(n):
        assert send(harness, driver, stereo_messages(left, right, camera, first_ns + i * 10_000_000))
