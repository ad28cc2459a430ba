"""The rosidl-generated messages (msg/) import, serialize and travel over DDS.

They are built into the environment prefix, apart from our sources, and both halves share the import name
``scene_perception``; these tests fail first when that merge (pkgutil.extend_path) or the build breaks.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message

from scene_perception.msg import LabelInfo, SemanticLabel

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
    msg.model = "test-segmenter"
    msg.labels = [
        SemanticLabel(id=0, name="unlabeled", color=[0, 0, 0]),
        SemanticLabel(id=7, name="road", color=[128, 64, 128]),
        SemanticLabel(id=255, name="void", color=[255, 255, 255]),
    ]
    return msg


def _assert_same(got: LabelInfo, want: LabelInfo) -> None:
    assert got.header.frame_id == want.header.frame_id
    assert got.header.stamp == want.header.stamp
    assert got.model == want.model
    assert [(lb.id, lb.name, list(lb.color)) for lb in got.labels] == [
        (lb.id, lb.name, list(lb.color)) for lb in want.labels
    ]


def test_generated_package_merges_with_sources() -> None:
    # Our own subpackages and the generated msg subpackage resolve under the same top-level package.
    assert importlib.util.find_spec("scene_perception.ros") is not None
    assert importlib.util.find_spec("scene_perception.msg") is not None
    assert LabelInfo.__module__.startswith("scene_perception.msg")


def test_field_types() -> None:
    # (Kilted validates field values only with ROS_PYTHON_CHECK_FIELDS=1, so only the types are checked.)
    label = SemanticLabel(id=3, name="car", color=[0, 0, 142])
    assert label.color.dtype == np.uint8 and label.color.tolist() == [0, 0, 142]  # uint8[3]
    assert SemanticLabel().color.shape == (3,)
    assert LabelInfo.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "labels": "sequence<scene_perception/SemanticLabel>",
        "model": "string",
    }


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
