"""Replay rosbag2 files into a live ROS graph and record what comes out, without ros2bag.

``ros2 bag play/record`` are not installable in the pip environment, so the demo and the evaluation use
these two small nodes.  Both move *serialized* CDR bytes (rclpy publishes ``bytes`` and ``raw=True``
subscriptions deliver them), so a frame is never decoded just to be re-encoded: what the bag holds is
exactly what the node under test receives, and what it publishes is exactly what the output bag holds.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from scene_perception.data.bag_io import BagReadError, typestore
from scene_perception.ros.qos import qos_from_name


def message_class(msgtype: str) -> type:
    """``sensor_msgs/msg/Image`` -> the rclpy message class."""
    pkg, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


@dataclass
class FrameGroup:
    """All raw messages of one header stamp, in bag order."""

    stamp_ns: int
    messages: list[tuple[str, str, bytes]] = field(default_factory=list)  # (topic, msgtype, cdr bytes)


def read_frame_groups(path: str | Path, topics: Sequence[str]) -> Iterator[FrameGroup]:
    """Yield the bag's messages on ``topics`` grouped by header stamp (stamps in first-seen order).

    Grouping by header stamp rather than log time matters for recorded bags, where the four stereo
    topics of one frame are logged at slightly different times.  Groups are emitted once a later stamp
    has been seen on every topic, so memory stays bounded by the topics' skew.
    """
    path = Path(path)
    store = typestore()
    pending: dict[int, FrameGroup] = {}
    order: list[int] = []
    try:
        with Reader(path) as reader:
            missing = sorted(set(topics) - {c.topic for c in reader.connections})
            if missing:
                raise BagReadError(f"{path}: no topic(s) {missing}; it has {sorted(reader.topics)}")
            conns = [c for c in reader.connections if c.topic in topics]
            latest: dict[str, int] = defaultdict(int)
            for conn, _, raw in reader.messages(connections=conns):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                if stamp not in pending:
                    pending[stamp] = FrameGroup(stamp)
                    order.append(stamp)
                pending[stamp].messages.append((conn.topic, conn.msgtype, bytes(raw)))
                latest[conn.topic] = max(latest[conn.topic], stamp)
                horizon = min(latest[t] for t in topics) if len(latest) == len(topics) else None
                while order and horizon is not None and order[0] < horizon:
                    yield pending.pop(order.pop(0))
    except BagReadError:
        raise
    except Exception as exc:  # rosbags raises several types for truncated/corrupt storage
        raise BagReadError(f"cannot read bag {path}: {exc}") from exc
    for stamp in order:
        yield pending.pop(stamp)


class BagPlayer(Node):
    """Publishes :class:`FrameGroup` s; the caller decides the pacing (lock-step for evaluation, a rate
    for throughput benchmarks)."""

    def __init__(self, name: str = "bag_player", qos: str = "sensor_data", **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._qos: QoSProfile = qos_from_name(qos)
        self._pubs: dict[str, Any] = {}

    def prepare(self, topics: Iterable[tuple[str, str]]) -> None:
        """Create publishers up front for ``(topic, msgtype)`` so discovery completes before playback."""
        for topic, msgtype in topics:
            if topic not in self._pubs:
                self._pubs[topic] = self.create_publisher(message_class(msgtype), topic, self._qos)

    def publishers_matched(self) -> bool:
        return bool(self._pubs) and all(p.get_subscription_count() > 0 for p in self._pubs.values())

    def publish_group(self, group: FrameGroup) -> None:
        self.prepare((t, m) for t, m, _ in group.messages)
        for topic, _, raw in group.messages:
            self._pubs[topic].publish(raw)


class BagRecorder(Node):
    """Subscribes to topics with ``raw=True`` and writes the bytes to a new rosbag2 (mcap by default)."""

    def __init__(
        self,
        path: str | Path,
        topics: Sequence[tuple[str, str]],
        name: str = "bag_recorder",
        qos: str = "reliable",
        storage: str = "mcap",
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.path = Path(path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        store = typestore()
        self.count: dict[str, int] = defaultdict(int)
        self.stamps: dict[str, set[int]] = defaultdict(set)
        self._conns = {}
        for topic, msgtype in topics:
            conn = self._writer.add_connection(topic, msgtype, typestore=store)
            self._conns[topic] = conn
            self.create_subscription(
                message_class(msgtype),
                topic,
                lambda raw, t=topic, mt=msgtype: self._on_raw(t, mt, raw),
                qos_from_name(qos),
                raw=True,
            )

    def _on_raw(self, topic: str, msgtype: str, raw: bytes) -> None:
        msg = typestore().deserialize_cdr(raw, msgtype)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._writer.write(self._conns[topic], stamp, raw)
        self.count[topic] += 1
        self.stamps[topic].add(stamp)

    def has_all(self, stamp_ns: int) -> bool:
        return all(stamp_ns in self.stamps[t] for t in self._conns)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()
