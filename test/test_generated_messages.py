"""The rosidl-generated messages (msg/) import, serialize and travel over DDS.

They are built into the environment prefix, apart from our sources, and both halves share the import name
``scene_perception``; these tests fail first when that merge (pkgutil.extend_path) or the build breaks.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message

from scene_perception.msg import LabelInfo, VisionClass
from scene_perception.ros.messages import LABEL_INFO_TYPE, make_label_info

# The QoS the label-info publisher uses: latched, so subscribers that start later still get the label set.
LATCHED = QoSProfile(
    depth=1,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def _label_info() -> LabelInfo:
    msg = LabelInfo()
    msg.header.frame_id = "left_camera_optical_frame"
    msg.header.stamp.sec = 12
    msg.header.stamp.nanosec = 345
    msg.threshold = 0.25
    msg.class_map = [
        VisionClass(class_id=0, class_name="unlabeled"),
        VisionClass(class_id=7, class_name="road"),
        VisionClass(class_id=65535, class_name="UNLABELED"),  # vision_msgs' reserved id: uint16 range kept
    ]
    return msg


def _assert_same(got: LabelInfo, want: LabelInfo) -> None:
    assert got.header.frame_id == want.header.frame_id
    assert got.header.stamp == want.header.stamp
    assert got.threshold == want.threshold
    assert [(c.class_id, c.class_name) for c in got.class_map] == [
        (c.class_id, c.class_name) for c in want.class_map
    ]


def test_generated_package_merges_with_sources() -> None:
    # Our own subpackages and the generated msg subpackage resolve under the same top-level package.
    assert importlib.util.find_spec("scene_perception.ros") is not None
    assert importlib.util.find_spec("scene_perception.msg") is not None
    assert LabelInfo.__module__.startswith("scene_perception.msg")


def test_field_types() -> None:
    # (Kilted validates field values only with ROS_PYTHON_CHECK_FIELDS=1, so only the types are checked.)
    # vision_msgs' layout (test_label_info_definition.py compares it with upstream field for field).
    assert VisionClass.get_fields_and_field_types() == {"class_id": "uint16", "class_name": "string"}
    assert LabelInfo.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "class_map": "sequence<scene_perception/VisionClass>",
        "threshold": "float",
    }


def test_make_label_info() -> None:
    """The builder the scene node uses: class_id = index into the names, the stamp, the threshold."""
    msg = make_label_info(["sky", "road"], stamp=_label_info().header.stamp, threshold=0.5)
    assert isinstance(msg, LABEL_INFO_TYPE)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, "sky"), (1, "road")]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 345, "")
    assert msg.threshold == 0.5
    assert make_label_info([]).class_map == [] and make_label_info([]).threshold == 0.0
    with pytest.raises(ValueError, match="uint16"):
        make_label_info(["c"] * 65536)


def test_serialization_round_trip() -> None:
    msg = _label_info()
    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 0
    _assert_same(deserialize_message(data, LabelInfo), msg)


@pytest.fixture
def context() -> Iterator[Context]:
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)


def _spin_until(executor: SingleThreadedExecutor, done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


@pytest.mark.ros
def test_latched_label_info_reaches_late_subscriber(context: Context) -> None:
    # A unique namespace keeps parallel runs on the same machine (same ROS domain) apart.
    namespace = f"/test_{uuid.uuid4().hex[:12]}"
    executor = SingleThreadedExecutor(context=context)
    pub_node = rclpy.create_node("label_info_pub", namespace=namespace, context=context)
    sub_node = None
    try:
        publisher = pub_node.create_publisher(LabelInfo, "semantic/label_info", LATCHED)
        sent = _label_info()
        publisher.publish(sent)  # published before any subscriber exists

        sub_node = rclpy.create_node("label_info_sub", namespace=namespace, context=context)
        received: list[LabelInfo] = []
        sub_node.create_subscription(LabelInfo, "semantic/label_info", received.append, LATCHED)
        executor.add_node(pub_node)
        executor.add_node(sub_node)
        _spin_until(executor, lambda: bool(received), timeout_s=10.0)

        # Transient-local: the subscriber gets the sample that was published before it existed.
        assert len(received) == 1
        _assert_same(received[0], sent)
        assert f"{namespace}/semantic/label_info" in dict(sub_node.get_topic_names_and_types())
    finally:
        executor.shutdown()
        if sub_node is not None:
            sub_node.destroy_node()
        pub_node.destroy_node()
