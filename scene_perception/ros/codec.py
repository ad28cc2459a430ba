"""sensor_msgs/Image <-> numpy without cv_bridge (which is not installable from PyPI).

Design points:

* ``image_to_numpy`` returns a zero-copy view of ``msg.data`` whenever possible (``np.frombuffer`` + a
  strided view that skips row padding); it copies only to fix a non-native byte order.  The view aliases the
  message: call ``.copy()`` before modifying it or keeping it after the message is reused.
* ``numpy_to_image`` hands rclpy an ``array.array('B')`` filled from one bulk copy.  Assigning a ``bytes``
  object costs the same with field checks off but ~200 ms per 720p frame with ``ROS_PYTHON_CHECK_FIELDS=1``,
  and a ``memoryview`` is converted element by element (~100 ms); ``array.array`` is accepted as-is.
* Every malformed message raises :class:`ImageEncodingError` naming the field and the offending values, so a
  misconfigured driver is diagnosed from the log line alone.
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

__all__ = [
    "ENCODINGS",
    "EncodingInfo",
    "ImageEncodingError",
    "image_to_numpy",
    "numpy_to_image",
    "stamp_to_ns",
    "to_byte_array",
    "to_rgb8",
]


class ImageEncodingError(ValueError):
    """The image message (or array) cannot be interpreted with the given encoding."""


@dataclass(frozen=True)
class EncodingInfo:
    """Element type and channel count of one ``sensor_msgs/image_encodings`` value."""

    dtype: np.dtype
    channels: int

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(np.dtype(np.uint8), 3),
    "bgr8": EncodingInfo(np.dtype(np.uint8), 3),
    "rgba8": EncodingInfo(np.dtype(np.uint8), 4),
    "bgra8": EncodingInfo(np.dtype(np.uint8), 4),
    "mono8": EncodingInfo(np.dtype(np.uint8), 1),
    "mono16": EncodingInfo(np.dtype(np.uint16), 1),
    "8UC1": EncodingInfo(np.dtype(np.uint8), 1),
    "8UC3": EncodingInfo(np.dtype(np.uint8), 3),
    "16UC1": EncodingInfo(np.dtype(np.uint16), 1),
    "32FC1": EncodingInfo(np.dtype(np.float32), 1),
}

_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


def _encoding_info(encoding: str) -> EncodingInfo:
    try:
        return ENCODINGS[encoding]
    except KeyError:
        raise ImageEncodingError(
            f"unsupported image encoding {encoding!r} (supported: {', '.join(ENCODINGS)})"
        ) from None


def stamp_to_ns(header: Any) -> int:
    """Nanoseconds since the epoch of a ``std_msgs/Header`` (or a ``builtin_interfaces/Time``).

    Integer nanoseconds compare exactly, unlike float seconds, which matters for matching stereo pairs.
    """
    stamp = getattr(header, "stamp", header)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def to_byte_array(arr: np.ndarray) -> array.array:
    """One bulk copy of ``arr``'s bytes into the ``array.array('B')`` rclpy stores for ``uint8[]`` fields."""
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return out


def image_to_numpy(msg: Image) -> np.ndarray:
    """Decode an Image to ``(H, W)`` (one channel) or ``(H, W, C)``, encoding's dtype, native byte order.

    Handles row padding (``step > width * bytes_per_pixel``) and ``is_bigendian``.  Returns a view of
    ``msg.data`` unless a byte swap was needed.
    """
    info = _encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageEncodingError(f"image has zero size: width={width}, height={height} ({msg.encoding})")
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise ImageEncodingError(
            f"image step {step} < width {width} * {info.bytes_per_pixel} bytes ({msg.encoding})"
        )
    needed = step * height
    size = len(msg.data)
    if size < needed:
        raise ImageEncodingError(
            f"image data has {size} bytes < step {step} * height {height} = {needed} ({msg.encoding})"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8, count=needed)
    rows = buf.reshape(height, step)
    if step != row_bytes:
        rows = rows[:, :row_bytes]
    big = bool(msg.is_bigendian)
    dtype = info.dtype.newbyteorder(">" if big else "<") if info.dtype.itemsize > 1 else info.dtype
    # The last axis is contiguous (stride 1), so reinterpreting it as wider elements is a view even when rows
    # are padded; an odd step only makes the view unaligned, which numpy handles.
    arr = rows.view(dtype)
    if info.dtype.itemsize > 1 and big != _NATIVE_BIG_ENDIAN:
        arr = arr.astype(info.dtype.newbyteorder("="))
    if info.channels == 1:
        return arr
    return arr.reshape(height, width, info.channels)


def numpy_to_image(
    arr: np.ndarray, encoding: str, header: Header | None = None, step: int | None = None
) -> Image:
    """Encode an array as an Image in native byte order.

    ``arr`` must already have the encoding's dtype and channel count (no silent casts: a float depth map
    published as ``16UC1`` would be wrong, not just imprecise).  ``step`` > ``width * bytes_per_pixel`` pads
    each row with zeros, which exists to test decoders against drivers that pad rows.
    """
    info = _encoding_info(encoding)
    a = np.asarray(arr)
    if a.ndim == 3 and info.channels == 1 and a.shape[2] == 1:
        a = a[:, :, 0]
    expected_ndim = 2 if info.channels == 1 else 3
    if a.ndim != expected_ndim or (info.channels > 1 and a.shape[2] != info.channels):
        want = "(H, W)" if info.channels == 1 else f"(H, W, {info.channels})"
        raise ImageEncodingError(f"array shape {a.shape} does not fit encoding {encoding!r}: expected {want}")
    if a.dtype.base.newbyteorder("=") != info.dtype:
        raise ImageEncodingError(
            f"array dtype {a.dtype} does not match encoding {encoding!r} ({info.dtype}); "
            "convert it explicitly"
        )
    height, width = int(a.shape[0]), int(a.shape[1])
    if height == 0 or width == 0:
        raise ImageEncodingError(f"array has zero size: shape {a.shape}")
    native = a.astype(info.dtype, copy=False)  # fixes a non-native byte order, no copy otherwise
    row_bytes = width * info.bytes_per_pixel
    if step is None:
        step = row_bytes
    step = int(step)
    if step < row_bytes:
        raise ImageEncodingError(
            f"image step {step} < width {width} * {info.bytes_per_pixel} bytes ({encoding})"
        )

    msg = Image()
    if header is not None:
        msg.header = header
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = int(_NATIVE_BIG_ENDIAN)
    msg.step = step
    if step == row_bytes:
        msg.data = to_byte_array(native)
    else:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = np.ascontiguousarray(native).view(np.uint8).reshape(height, row_bytes)
        msg.data = to_byte_array(padded)
    return msg


def to_rgb8(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Convert a decoded image to contiguous ``(H, W, 3)`` uint8 RGB, the input the stereo network expects.

    Supports rgb8, bgr8, rgba8, bgra8, mono8 and mono16 (reduced to 8 bits by ``>> 8``).  Generic encodings
    (8UC3, 16UC1, 32FC1, ...) carry no colour semantics and are rejected rather than guessed.
    """
    a = np.asarray(arr)
    if encoding in ("mono8", "mono16") and a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        channels = ENCODINGS[encoding].channels
        if a.ndim != 3 or a.shape[2] != channels or a.dtype != np.uint8:
            raise ImageEncodingError(
                f"array shape {a.shape} dtype {a.dtype} does not fit encoding {encoding!r} "
                f"(expected (H, W, {channels}) uint8)"
            )
        if encoding == "rgb8":
            rgb = a
        elif encoding == "bgr8":
            rgb = a[:, :, ::-1]
        elif encoding == "rgba8":
            rgb = a[:, :, :3]
        else:
            rgb = a[:, :, 2::-1]
        return np.ascontiguousarray(rgb)
    if encoding in ("mono8", "mono16"):
        want = np.uint8 if encoding == "mono8" else np.uint16
        if a.ndim != 2 or a.dtype != want:
            raise ImageEncodingError(
                f"array shape {a.shape} dtype {a.dtype} does not fit encoding {encoding!r} "
                f"(expected (H, W) {np.dtype(want)})"
            )
        gray = a if encoding == "mono8" else (a >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    raise ImageEncodingError(
        f"cannot convert encoding {encoding!r} to rgb8 (supported: rgb8, bgr8, rgba8, bgra8, mono8, mono16)"
    )
