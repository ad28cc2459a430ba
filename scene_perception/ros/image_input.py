"""Camera-image input checks and counted publishing shared by every image-input node.

The stereo nodes (``stereo_depth``, ``sgbm_depth``) and the single-image ``scene`` node must refuse exactly
the same malformed images under the same problem kinds, judge stamps by the same rules and survive a failing
``publish()`` the same way: a monitor reading ``problem <kind>`` from /diagnostics, or a user reading the
throttled warning, should not need to know which node it is looking at. So those rules live here once; the
nodes only add their own synchronization (or none) and outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from scene_perception.ros.codec import ENCODINGS, ImageEncodingError, image_to_numpy, stamp_to_ns, to_rgb8
from scene_perception.ros.diagnostics import Health

__all__ = ["INPUT_ENCODINGS", "InputRejected", "StampGuard", "check_image", "decode_rgb", "publish_counted"]

#: Encodings the nodes accept as camera input, mapped to the colour encoding their pixels are read as
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


class InputRejected(Exception):
    """An input that cannot be processed; ``kind`` names the counter it is reported under."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_image(side: str, msg: Image, max_pixels: int) -> None:
    """Reject an image whose header does not describe its buffer, naming the field and the values.

    The codec would refuse most of these too, but checking here gives every kind its own diagnostic
    counter and throttled warning. ``data`` longer than ``step * height`` is rejected as well (the codec
    alone would ignore the tail): the header then does not describe the buffer, and the likeliest cause
    (a wrong ``height`` or ``step``) would otherwise produce a silently sheared or cropped image.
    ``side`` starts every message (``"left"`` -> "left image ...").
    """
    encoding, width, height, step = msg.encoding, int(msg.width), int(msg.height), int(msg.step)
    if encoding not in INPUT_ENCODINGS:
        if encoding in ENCODINGS:
            raise InputRejected(
                "not_camera_encoding",
                f"{side} image encoding '{encoding}' is a valid ROS encoding but not a camera image "
                f"(depth / disparity maps are not camera input); accepted: {', '.join(INPUT_ENCODINGS)}",
            )
        raise InputRejected(
            "unsupported_encoding",
            f"{side} image encoding {encoding!r} is unknown; accepted: {', '.join(INPUT_ENCODINGS)}",
        )
    if width == 0 or height == 0:
        raise InputRejected("empty_image", f"{side} image is empty ({width}x{height})")
    if width * height > max_pixels:
        raise InputRejected(
            "image_too_large",
            f"{side} image {width}x{height} = {width * height} px exceeds max_input_pixels={max_pixels}",
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


def decode_rgb(side: str, msg: Image, max_pixels: int) -> np.ndarray:
    """:func:`check_image`, then the pixels as contiguous (H, W, 3) uint8 RGB; InputRejected otherwise."""
    check_image(side, msg, max_pixels)
    try:
        return to_rgb8(image_to_numpy(msg), INPUT_ENCODINGS[msg.encoding])
    except ImageEncodingError as exc:
        raise InputRejected("malformed_image", str(exc)) from exc


class StampGuard:
    """The stamp rules of every image node: negative stamps and repeats are dropped, going back is allowed.

    Stamp 0 is accepted (simulations and synthetic bags start there); a driver that never stamps shows up as
    ``duplicate_stamp`` from its second frame on, with a hint. A stamp older than the last one (a bag loop, a
    clock reset) is reported as ``stamp_went_backwards`` but processed. ``what`` names the input in messages
    ("stereo set", "image").
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.last_ns: int | None = None

    def check(self, header: Header, health: Health) -> int:
        """The stamp in ns; raises InputRejected (``invalid_stamp``, ``duplicate_stamp``) to drop it."""
        stamp_ns = stamp_to_ns(header)
        if stamp_ns < 0:
            # ROS time is never negative (rclpy.time.Time refuses it): a corrupt header, not a clock.
            raise InputRejected(
                "invalid_stamp",
                f"{self.what} stamped sec={header.stamp.sec} nanosec={header.stamp.nanosec} "
                f"({stamp_ns} ns < 0): dropped",
            )
        if self.last_ns is not None:
            if stamp_ns == self.last_ns:
                hint = " (stamp 0: does the driver set header.stamp?)" if stamp_ns == 0 else ""
                raise InputRejected(
                    "duplicate_stamp", f"{self.what} with the same stamp {stamp_ns} ns again{hint}: dropped"
                )
            if stamp_ns < self.last_ns:
                health.problem(
                    "stamp_went_backwards",
                    f"stamp {stamp_ns} ns is {(self.last_ns - stamp_ns) / 1e9:.3f} s older than the "
                    "last frame (bag loop or clock reset?); processing it anyway",
                )
        return stamp_ns

    def accept(self, stamp_ns: int) -> None:
        """Remember a stamp once its input passed validation (a rejected input does not move the clock)."""
        self.last_ns = stamp_ns

    def reset(self) -> None:
        self.last_ns = None


def publish_counted(pubs: Mapping[str, Any], messages: Mapping[str, Any], health: Health) -> int:
    """Publish ``messages[key]`` on ``pubs[key]``; a failing publish is counted, never raised.

    One failing topic must not stop the others or the node (RCLError / InvalidHandle after a racing cleanup
    are not importable publicly, hence the broad except). Returns how many were published.
    """
    published = 0
    for key, msg in messages.items():
        try:
            pubs[key].publish(msg)
            published += 1
        except Exception as exc:  # noqa: BLE001
            health.problem("publish_error", f"publishing {key} failed: {type(exc).__name__}: {exc}")
    return published
