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

    ``reliable`` (keep-last ``depth``) is the shipped input default: it matches rclcpp's / image_transport's
    default publishers (most camera drivers, image_proc, ``ros2 bag play``), and lost fragments of a
    camera-sized frame are resent, which best-effort cannot do (docs/transport.md: on a host with Linux's
    default ``net.core.rmem_max`` best-effort input kept 5-10 of 30 camera-sized stereo sets, reliable
    30/30). It is also the output default (RViz's subscriptions, stereo_image_proc's publishers).
    ``sensor_data`` (best-effort, keep-last) is for drivers that publish best-effort, which a reliable
    reader does not match (rclpy then logs the incompatible RELIABILITY policy); ``best_effort`` is the
    same policies as ``sensor_data``, built explicitly.
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
