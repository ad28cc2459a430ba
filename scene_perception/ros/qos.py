"""Named QoS profiles so that launch files and YAML can pick one by string."""

from __future__ import annotations

import copy

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)


def qos_from_name(name: str, depth: int = 5) -> QoSProfile:
    """Return the QoS profile called ``name``.

    ``sensor_data`` is best-effort, keep-last: the right default for camera inputs, where a late frame is
    worth less than the next one.  ``reliable`` matches RViz's default subscriptions and stereo_image_proc's
    publishers, so it is the output default.
    """
    if name == "sensor_data":
        profile = copy.copy(qos_profile_sensor_data)
        profile.depth = depth
        return profile
    if name in ("reliable", "best_effort"):
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=depth,
            reliability=ReliabilityPolicy.RELIABLE if name == "reliable" else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.VOLATILE,
        )
    raise ValueError(f"unknown QoS profile name {name!r}; use sensor_data, reliable or best_effort")


def latched_qos(depth: int = 1) -> QoSProfile:
    """Transient-local QoS for messages that late joiners must still receive (label lists, model info)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
