"""Camera-image input checks and counted publishing shared by every image-input node.

The stereo nodes (``stereo_depth``, ``sgbm_depth``) and the single-image ``scene`` node must refuse exactly
the same malformed images under the same problem kinds, judge stamps by the same rules and survive a failing
``publish()`` the same way: a monitor reading ``problem <kind>`` from /diagnostics, or a user reading the
throttled warning, should not need to know which node it is looking at. So those rules live here once; the
nodes only add their own synchronization (or none) and outputs.

Camera input comes as ``sensor_msgs/Image`` (``image_transport: raw``) or ``sensor_msgs/CompressedImage``
(``image_transport: compressed``, on ``<image topic>/compressed``: what most bags record); :func:`decode_rgb`
takes either and applies the same problem kinds to both. Rectification of raw camera images with their
CameraInfo is :func:`rectify_rgb` (``geometry/rectification.py`` does the work).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from scene_perception.geometry.rectification import Rectifier
from scene_perception.geometry.stereo_camera import CameraModelError
from scene_perception.ros.codec import (
    ENCODINGS,
    ImageEncodingError,
    compressed_format,
    compressed_image_size,
    compressed_is_complete,
    decode_compressed,
    image_to_numpy,
    stamp_to_ns,
    to_rgb8,
)
from scene_perception.ros.diagnostics import Health

__all__ = [
    "IMAGE_TRANSPORTS",
    "INPUT_ENCODINGS",
    "InputRejected",
    "StampGuard",
    "check_image",
    "decode_compressed_rgb",
    "decode_rgb",
    "image_message_type",
    "publish_counted",
    "rectify_rgb",
    "transport_topic",
]

#: Encodings the nodes accept as camera input, mapped to the colour encoding their pixels are read as
#: (colour is converted to RGB, mono replicated, YUV 4:2:2 and Bayer converted with OpenCV as cv_bridge
#: does). The generic 8UC1 / 8UC3 carry no colour semantics; they are read as mono8 / rgb8, as the bag tools
#: write them. The single list of what is accepted, for Image and CompressedImage input alike.
INPUT_ENCODINGS: dict[str, str] = {
    "rgb8": "rgb8",
    "bgr8": "bgr8",
    "rgba8": "rgba8",
    "bgra8": "bgra8",
    "mono8": "mono8",
    "mono16": "mono16",
    "8UC1": "mono8",
    "8UC3": "rgb8",
    "uyvy": "uyvy",
    "yuv422": "yuv422",
    "yuyv": "yuyv",
    "yuv422_yuy2": "yuv422_yuy2",
    "bayer_rggb8": "bayer_rggb8",
    "bayer_bggr8": "bayer_bggr8",
    "bayer_gbrg8": "bayer_gbrg8",
    "bayer_grbg8": "bayer_grbg8",
    "bayer_rggb16": "bayer_rggb16",
    "bayer_bggr16": "bayer_bggr16",
    "bayer_gbrg16": "bayer_gbrg16",
    "bayer_grbg16": "bayer_grbg16",
}

#: ``image_transport`` values the nodes take: message type and the suffix image_transport gives the topic.
IMAGE_TRANSPORTS: dict[str, tuple[type, str]] = {
    "raw": (Image, ""),
    "compressed": (CompressedImage, "/compressed"),
}


class InputRejected(Exception):
    """An input that cannot be processed; ``kind`` names the counter it is reported under."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _check_pixels(side: str, what: str, width: int, height: int, max_pixels: int) -> None:
    """``empty_image`` / ``image_too_large`` for a raw image's header or a compressed image's own header."""
    if width == 0 or height == 0:
        raise InputRejected("empty_image", f"{side} {what} is empty ({width}x{height})")
    if width * height > max_pixels:
        raise InputRejected(
            "image_too_large",
            f"{side} {what} {width}x{height} = {width * height} px exceeds max_input_pixels={max_pixels}",
        )


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
    _check_pixels(side, "image", width, height, max_pixels)
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


def decode_rgb(side: str, msg: Image | CompressedImage, max_pixels: int) -> np.ndarray:
    """The pixels as contiguous (H, W, 3) uint8 RGB; InputRejected otherwise.

    An Image goes through :func:`check_image`, a CompressedImage through :func:`decode_compressed_rgb`, so a
    node calls this one function whatever its ``image_transport``.
    """
    if isinstance(msg, CompressedImage):
        return decode_compressed_rgb(side, msg, max_pixels)
    check_image(side, msg, max_pixels)
    try:
        return to_rgb8(image_to_numpy(msg), INPUT_ENCODINGS[msg.encoding])
    except ImageEncodingError as exc:
        raise InputRejected("malformed_image", f"{side} image: {exc}") from exc


def _reject_encoding(side: str, encoding: str, what: str) -> InputRejected:
    if encoding in ENCODINGS:
        return InputRejected(
            "not_camera_encoding",
            f"{side} {what} encoding '{encoding}' is a valid ROS encoding but not a camera image "
            f"(depth / disparity maps are not camera input); accepted: {', '.join(INPUT_ENCODINGS)}",
        )
    return InputRejected(
        "unsupported_encoding",
        f"{side} {what} encoding {encoding!r} is not supported; accepted: {', '.join(INPUT_ENCODINGS)}",
    )


def decode_compressed_rgb(side: str, msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` as (H, W, 3) uint8 RGB, under the problem kinds Image input uses.

    The format string is read as ``compressed_image_transport`` writes it (``"rgb8; jpeg compressed bgr8"``,
    ``"mono8; png compressed "``, or the older bare ``"jpeg"`` / ``"png"``); the encoding before the ``;``
    must be an :data:`INPUT_ENCODINGS` one (``compressedDepth`` and depth encodings are
    ``not_camera_encoding``). The pixel size is read from the JPEG / PNG / TIFF *header* and checked against
    ``max_pixels`` before ``cv2.imdecode`` allocates anything (``image_too_large``); a JPEG without its end
    marker or a PNG without IEND is ``image_data_truncated`` (libjpeg would decode it with grey rows); data
    that does not decode is ``malformed_image``.
    """
    what = "compressed image"
    try:
        fmt = compressed_format(msg.format)
    except ImageEncodingError as exc:
        raise InputRejected("unsupported_encoding", f"{side} {exc}") from exc
    if fmt.depth:
        raise InputRejected(
            "not_camera_encoding",
            f"{side} {what} format {msg.format!r} is compressedDepth: a depth map, not a camera image",
        )
    if fmt.encoding is not None and fmt.encoding not in INPUT_ENCODINGS:
        raise _reject_encoding(side, fmt.encoding, what)
    if len(msg.data) == 0:
        raise InputRejected("empty_image", f"{side} {what} has no data (format {msg.format!r})")
    try:
        codec, size = compressed_image_size(msg.data)
    except ImageEncodingError as exc:
        raise InputRejected("malformed_image", f"{side} {what}: {exc}") from exc
    if size is None:
        raise InputRejected(
            "image_data_truncated",
            f"{side} {what} data ({len(msg.data)} bytes) ends inside its {codec} header (truncated?)",
        )
    width, height = size
    _check_pixels(side, what, width, height, max_pixels)
    if not compressed_is_complete(codec, msg.data):
        raise InputRejected(
            "image_data_truncated",
            f"{side} {what} {codec} data ({len(msg.data)} bytes) has no end marker (truncated?)",
        )
    try:
        arr, encoding = decode_compressed(msg.data, fmt, size)
        return to_rgb8(arr, encoding)
    except ImageEncodingError as exc:
        raise InputRejected("malformed_image", f"{side} {what}: {exc}") from exc


def rectify_rgb(side: str, image: np.ndarray, info: Any, rectifier: Rectifier) -> np.ndarray:
    """``rectifier.rectify(image, info)``, its errors as ``camera_info_<kind>`` InputRejected.

    Call it on the decoded RGB image (after demosaicing, as ``image_proc`` rectifies ``image_color``) with
    the image's own CameraInfo, one :class:`Rectifier` per camera kept by the node. The kinds are the ones
    the stereo model's CameraModelError already reports under (``camera_info_uncalibrated`` ...), plus
    ``camera_info_size_mismatch``, ``camera_info_bad_rotation``, ``camera_info_bad_distortion[_model]``,
    ``camera_info_unsupported_binning`` / ``_roi`` (see ``RECTIFICATION_ERROR_KINDS``).
    """
    try:
        return rectifier.rectify(image, info)
    except CameraModelError as exc:
        raise InputRejected("camera_info_" + exc.kind, str(exc)) from exc


def image_message_type(transport: str) -> type:
    """The message type an ``image_transport`` value subscribes to (``raw`` -> Image, ``compressed`` ...)."""
    try:
        return IMAGE_TRANSPORTS[transport][0]
    except KeyError:
        raise ValueError(
            f"image_transport {transport!r} is not one of {', '.join(IMAGE_TRANSPORTS)}"
        ) from None


def transport_topic(topic: str, transport: str) -> str:
    """The topic image_transport publishes ``topic`` on for ``transport`` (``left/image_raw/compressed``)."""
    image_message_type(transport)
    return topic.rstrip("/") + IMAGE_TRANSPORTS[transport][1]


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
