"""sensor_msgs/Image codec: round trips, row padding, byte order, error messages, rgb8 conversion.

Messages are also pushed through rclpy's CDR serializer, which is what a subscriber actually receives.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from scene_perception.ros.codec import (
    ENCODINGS,
    ImageEncodingError,
    image_to_numpy,
    numpy_to_image,
    stamp_to_ns,
    to_rgb8,
)

H, W = 5, 7


def sample(encoding: str, rng: np.random.Generator) -> np.ndarray:
    info = ENCODINGS[encoding]
    shape = (H, W) if info.channels == 1 else (H, W, info.channels)
    if info.dtype == np.float32:
        return rng.standard_normal(shape).astype(np.float32)
    return rng.integers(0, np.iinfo(info.dtype).max, shape, endpoint=True).astype(info.dtype)


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("pad", [0, 3, 8])
def test_round_trip(encoding: str, pad: int) -> None:
    rng = np.random.default_rng(list(ENCODINGS).index(encoding))
    arr = sample(encoding, rng)
    bpp = ENCODINGS[encoding].bytes_per_pixel
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = numpy_to_image(arr, encoding, header, step=W * bpp + pad)
    assert msg.step == W * bpp + pad and len(msg.data) == msg.step * H
    assert (msg.height, msg.width, msg.encoding) == (H, W, encoding)
    assert msg.header.frame_id == "cam"
    wire = deserialize_message(serialize_message(msg), Image)
    out = image_to_numpy(wire)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_unpadded_decode_is_a_view() -> None:
    arr = np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)
    msg = numpy_to_image(arr, "rgb8")
    out = image_to_numpy(msg)
    assert not out.flags.owndata  # zero-copy view of msg.data


def test_single_channel_accepts_trailing_axis() -> None:
    arr = np.arange(H * W, dtype=np.uint16).reshape(H, W, 1)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(arr, "mono16")), arr[..., 0])


@pytest.mark.parametrize(("encoding", "dtype"), [("16UC1", ">u2"), ("32FC1", ">f4"), ("mono16", ">u2")])
@pytest.mark.parametrize("pad", [0, 1])
def test_big_endian(encoding: str, dtype: str, pad: int) -> None:
    values = (np.arange(H * W) * 37 + 1).reshape(H, W).astype(np.dtype(dtype).newbyteorder("="))
    if encoding == "32FC1":
        values = values * np.float32(0.25) - 3
    big = values.astype(dtype)
    row = W * big.itemsize
    raw = np.zeros((H, row + pad), np.uint8)
    raw[:, :row] = big.view(np.uint8).reshape(H, row)
    msg = Image(height=H, width=W, encoding=encoding, is_bigendian=1, step=row + pad)
    msg.data = raw.tobytes()
    out = image_to_numpy(msg)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, values)
    # and the same bytes flagged little-endian decode to the byte-swapped values
    msg.is_bigendian = 0
    np.testing.assert_array_equal(image_to_numpy(msg), values.byteswap())


def test_encoder_writes_native_order_and_flag() -> None:
    arr = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    msg = numpy_to_image(arr.astype(">u2"), "16UC1")
    assert msg.is_bigendian == int(sys.byteorder == "big")
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def _msg(**kw: object) -> Image:
    fields = {"height": 4, "width": 320, "encoding": "rgb8", "step": 960, "is_bigendian": 0}
    data = kw.pop("data", b"\0" * 960 * 4)
    fields.update(kw)
    msg = Image(**fields)
    msg.data = bytes(data)
    return msg


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"encoding": "nv12"}, r"unsupported image encoding 'nv12'"),
        ({"encoding": ""}, r"unsupported image encoding ''"),
        ({"step": 959}, r"image step 959 < width 320 \* 3 bytes \(rgb8\)"),
        ({"data": b"\0" * (960 * 4 - 1)}, r"3839 bytes < step 960 \* height 4"),
        ({"height": 0, "data": b""}, r"zero size: width=320, height=0"),
        ({"width": 0}, r"zero size: width=0"),
    ],
)
def test_decode_errors(kw: dict, message: str) -> None:
    with pytest.raises(ImageEncodingError, match=message):
        image_to_numpy(_msg(**kw))


def test_encode_errors() -> None:
    with pytest.raises(ImageEncodingError, match="unsupported image encoding 'nv21'"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "nv21")
    with pytest.raises(ImageEncodingError, match=r"does not match encoding '32FC1' \(float32\)"):
        numpy_to_image(np.zeros((2, 2), np.float64), "32FC1")
    with pytest.raises(ImageEncodingError, match=r"expected \(H, W, 3\)"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ImageEncodingError, match="zero size"):
        numpy_to_image(np.zeros((0, 2), np.uint8), "mono8")
    with pytest.raises(ImageEncodingError, match=r"image step 5 < width 2 \* 3 bytes"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8", step=5)
    assert issubclass(ImageEncodingError, ValueError)


def test_to_rgb8_colour_orders() -> None:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[1, 2] = (10, 20, 30)
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1].copy(),
        "rgba8": np.dstack([rgb, np.full((H, W), 255, np.uint8)]),
        "bgra8": np.dstack([rgb[..., ::-1], np.full((H, W), 7, np.uint8)]),
    }
    for encoding, arr in cases.items():
        # through a message, as a node would see it
        out = to_rgb8(image_to_numpy(numpy_to_image(arr, encoding)), encoding)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous, encoding
        assert tuple(out[1, 2]) == (10, 20, 30), encoding
        np.testing.assert_array_equal(out, rgb)


def test_to_rgb8_mono() -> None:
    g8 = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    out = to_rgb8(g8, "mono8")
    assert out.shape == (H, W, 3)
    np.testing.assert_array_equal(out[..., 0], g8)
    np.testing.assert_array_equal(out[..., 2], g8)
    g16 = np.array([[0, 255, 256, 65535]], np.uint16)
    np.testing.assert_array_equal(to_rgb8(g16, "mono16")[0, :, 1], [0, 0, 1, 255])


def test_to_rgb8_rejects() -> None:
    with pytest.raises(ImageEncodingError, match="cannot convert encoding '32FC1'"):
        to_rgb8(np.zeros((2, 2), np.float32), "32FC1")
    with pytest.raises(ImageEncodingError, match="does not fit encoding 'bgr8'"):
        to_rgb8(np.zeros((2, 2, 4), np.uint8), "bgr8")


def test_stamp_to_ns() -> None:
    h = Header()
    h.stamp.sec, h.stamp.nanosec = 1_700_000_000, 123_456_789
    assert stamp_to_ns(h) == 1_700_000_000_123_456_789
    assert stamp_to_ns(h.stamp) == 1_700_000_000_123_456_789
