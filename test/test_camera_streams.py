"""Real camera streams: YUV 4:2:2 and Bayer encodings, CompressedImage input, rectification errors as kinds.

Every conversion is checked against a known image: an RGB image is put into the format the way a camera or
``compressed_image_transport`` would (cv2.cvtColor for YUV, sampling into the mosaic for Bayer, cv2.imencode
with image_transport's format strings), read back with what the nodes call (``decode_rgb``), and compared.

Bounds (measured in brackets, 320x240 procedural image blurred with sigma 2, OpenCV 5.1):
* YUV 4:2:2 (chroma shared by pixel pairs): mean |error| < 1.5 levels (0.79), max < 25 (18); the other byte
  order (UYVY read as YUYV) is off by > 20 on average (47), so the test sees a swap;
* Bayer (bilinear demosaicing, 2 px border excluded): mean < 0.5 (0.25), max < 16 (9); a uniform colour
  exact everywhere; 16-bit equal to 8-bit within 1 level;
* JPEG quality 95 through the wire: exactly cv2.imdecode's pixels in RGB order, PSNR > 30 dB against the
  textured (unblurred) image sent (33.7); PNG and TIFF exact.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.geometry.rectification import Rectifier
from scene_perception.ros.codec import (
    BAYER_ENCODINGS,
    ENCODINGS,
    RGB_CONVERTIBLE,
    YUV422_ENCODINGS,
    compressed_format,
    compressed_image_size,
    image_to_numpy,
    numpy_to_compressed_image,
    numpy_to_image,
    to_rgb8,
)
from scene_perception.ros.image_input import (
    INPUT_ENCODINGS,
    InputRejected,
    decode_rgb,
    image_message_type,
    rectify_rgb,
    transport_topic,
)

W, H = 320, 240
MAX_PIXELS = 4096 * 4096


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return make_stereo_sample(1, W, H).left


@pytest.fixture(scope="module")
def smooth(rgb: np.ndarray) -> np.ndarray:
    # Camera optics low-pass the image before the sensor samples it; YUV 4:2:2 and Bayer assume that.
    return cv2.GaussianBlur(rgb, (0, 0), 2)


def wire(msg: Image | CompressedImage) -> Image | CompressedImage:
    """Through rclpy's CDR serializer: what a subscriber actually receives (data as array.array)."""
    return deserialize_message(serialize_message(msg), type(msg))


def abs_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int32) - b.astype(np.int32))


def rejected(msg: Image | CompressedImage, max_pixels: int = MAX_PIXELS) -> InputRejected:
    with pytest.raises(InputRejected) as exc:
        decode_rgb("left", msg, max_pixels)
    assert str(exc.value).startswith("left ")
    return exc.value


# ------------------------------------------------------------------------------------ the encoding list
def test_input_encodings_are_one_list() -> None:
    """Every accepted encoding is a codec encoding whose colour reading to_rgb8 converts."""
    for encoding, reading in INPUT_ENCODINGS.items():
        assert encoding in ENCODINGS, encoding
        assert reading in RGB_CONVERTIBLE, reading
    for encoding in (*YUV422_ENCODINGS, *BAYER_ENCODINGS):
        assert encoding in INPUT_ENCODINGS


# ------------------------------------------------------------------------------------------------- YUV
YUV_FROM_RGB = {"uyvy": cv2.COLOR_RGB2YUV_UYVY, "yuyv": cv2.COLOR_RGB2YUV_YUY2}
YUV_LAYOUT = {"uyvy": "uyvy", "yuv422": "uyvy", "yuyv": "yuyv", "yuv422_yuy2": "yuyv"}


@pytest.mark.parametrize("encoding", list(YUV_LAYOUT))
def test_yuv422(encoding: str, smooth: np.ndarray) -> None:
    layout = YUV_LAYOUT[encoding]
    packed = cv2.cvtColor(smooth, YUV_FROM_RGB[layout])  # (H, W, 2) as the camera sends it
    out = decode_rgb("left", wire(numpy_to_image(packed, encoding, step=2 * W + 6)), MAX_PIXELS)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    err = abs_err(out, smooth)
    assert err.mean() < 1.5 and err.max() < 25, (err.mean(), err.max())
    swapped = "yuyv" if layout == "uyvy" else "uyvy"
    assert abs_err(to_rgb8(packed, swapped), smooth).mean() > 20  # the byte order is really tested


def test_yuv422_odd_width() -> None:
    msg = numpy_to_image(np.zeros((4, 5, 2), np.uint8), "uyvy")
    exc = rejected(msg)
    assert exc.kind == "malformed_image" and "width 5 is odd" in str(exc)


# ----------------------------------------------------------------------------------------------- Bayer
def mosaic(img: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image as a Bayer sensor with ``pattern`` (ROS spelling: 2x2 tile, row by row) would."""
    out = np.zeros(img.shape[:2], img.dtype)
    channel = {"r": 0, "g": 1, "b": 2}
    for letter, (dy, dx) in zip(pattern, ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True):
        out[dy::2, dx::2] = img[dy::2, dx::2, channel[letter]]
    return out


PATTERNS = ("rggb", "bggr", "gbrg", "grbg")


@pytest.mark.parametrize("pattern", PATTERNS)
def test_bayer8(pattern: str, smooth: np.ndarray) -> None:
    encoding = f"bayer_{pattern}8"
    out = decode_rgb("left", wire(numpy_to_image(mosaic(smooth, pattern), encoding)), MAX_PIXELS)
    err = abs_err(out, smooth)[2:-2, 2:-2]
    assert err.mean() < 0.5 and err.max() < 16, (err.mean(), err.max())
    uniform = np.empty((16, 18, 3), np.uint8)
    uniform[:] = (200, 100, 30)
    np.testing.assert_array_equal(to_rgb8(mosaic(uniform, pattern), encoding), uniform)
    # Any other pattern's conversion puts red and blue (or green) elsewhere: the ROS->OpenCV naming matters.
    for other in PATTERNS:
        if other != pattern:
            assert abs_err(to_rgb8(mosaic(uniform, pattern), f"bayer_{other}8"), uniform).max() > 50


@pytest.mark.parametrize("pattern", PATTERNS)
def test_bayer16(pattern: str, smooth: np.ndarray) -> None:
    wide = smooth.astype(np.uint16) * 257  # full 16-bit range, as a 12/16-bit sensor scaled up
    msg = numpy_to_image(mosaic(wide, pattern), f"bayer_{pattern}16")
    msg.is_bigendian = 1 - msg.is_bigendian  # byte-swapped on the wire: the codec's swap applies
    msg.data = np.frombuffer(msg.data, np.uint16).byteswap().tobytes()
    out16 = decode_rgb("left", wire(msg), MAX_PIXELS)
    out8 = to_rgb8(mosaic(smooth, pattern), f"bayer_{pattern}8")
    assert abs_err(out16, out8).max() <= 1


# ------------------------------------------------------------------------------------- CompressedImage
@pytest.mark.parametrize(
    ("text", "encoding", "codec", "target"),
    [
        ("rgb8; jpeg compressed bgr8", "rgb8", "jpeg", "bgr8"),
        ("mono8; png compressed mono8", "mono8", "png", "mono8"),
        ("mono16; png compressed ", "mono16", "png", ""),
        ("bayer_rggb8; png compressed ", "bayer_rggb8", "png", ""),
        ("bgr8; tiff compressed bgr8", "bgr8", "tiff", "bgr8"),
        ("jpeg", None, "jpeg", ""),
        ("png", None, "png", ""),
        (" JPG ", None, "jpeg", ""),
    ],
)
def test_compressed_format(text: str, encoding: str | None, codec: str, target: str) -> None:
    fmt = compressed_format(text)
    assert (fmt.encoding, fmt.codec, fmt.target, fmt.depth) == (encoding, codec, target, False)


def test_compressed_depth_format() -> None:
    assert compressed_format("16UC1; compressedDepth png").depth
    assert compressed_format("32FC1; compressedDepth").depth


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3"])
def test_compressed_jpeg_colour(encoding: str, rgb: np.ndarray) -> None:
    raw = numpy_to_image(
        {
            "rgb8": rgb,
            "bgr8": rgb[..., ::-1],
            "rgba8": np.dstack([rgb, np.full((H, W), 255, np.uint8)]),
            "bgra8": np.dstack([rgb[..., ::-1], np.full((H, W), 9, np.uint8)]),
            "8UC3": rgb,
        }[encoding].copy(),
        encoding,
    )
    if encoding == "8UC3":  # no colour semantics of its own: read as rgb8, as for raw Image input
        msg = numpy_to_compressed_image(image_to_numpy(raw), "rgb8")
        msg.format = "8UC3; jpeg compressed bgr8"
    else:
        msg = numpy_to_compressed_image(image_to_numpy(raw), encoding)
    assert msg.format == f"{encoding}; jpeg compressed bgr8"
    out = decode_rgb("left", wire(msg), MAX_PIXELS)
    # Exactly OpenCV's own decoding of the bytes, in RGB order; and close to the image that was sent.
    np.testing.assert_array_equal(
        out, cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    )
    mse = np.mean(abs_err(out, rgb).astype(np.float64) ** 2)
    assert 10 * np.log10(255.0**2 / mse) > 30.0


@pytest.mark.parametrize("codec", ["png", "tiff"])
@pytest.mark.parametrize(
    "encoding",
    ["rgb8", "bgr8", "rgba8", "mono8", "mono16", "bayer_rggb8", "bayer_gbrg8", "bayer_bggr16"],
)
def test_compressed_lossless(codec: str, encoding: str, rgb: np.ndarray) -> None:
    """PNG / TIFF keep the samples, so the decoded RGB equals the raw Image's decoded RGB exactly."""
    rng = np.random.default_rng(5)
    info = ENCODINGS[encoding]
    if encoding in ("rgb8", "rgba8"):
        arr = rgb if encoding == "rgb8" else np.dstack([rgb, np.full((H, W), 255, np.uint8)])
    elif encoding == "bgr8":
        arr = np.ascontiguousarray(rgb[..., ::-1])
    elif encoding.startswith("bayer"):
        arr = mosaic(rgb.astype(info.dtype) * (257 if info.dtype == np.uint16 else 1), encoding[6:10])
    else:
        arr = rng.integers(0, np.iinfo(info.dtype).max, (H, W), endpoint=True).astype(info.dtype)
    want = decode_rgb("left", numpy_to_image(arr, encoding), MAX_PIXELS)
    msg = numpy_to_compressed_image(arr, encoding, codec)
    target = "bgr8" if encoding in ("rgb8", "bgr8", "rgba8") else ""
    assert msg.format == f"{encoding}; {codec} compressed {target}"
    np.testing.assert_array_equal(decode_rgb("left", wire(msg), MAX_PIXELS), want)


def test_compressed_legacy_formats(rgb: np.ndarray) -> None:
    """Before format carried the encoding: 3 channels are BGR, 1 channel mono (the subscriber's rule)."""
    for text, ext in (("jpeg", ".jpg"), ("png", ".png")):
        msg = CompressedImage(format=text)
        msg.data = cv2.imencode(ext, rgb[..., ::-1])[1].tobytes()
        out = decode_rgb("left", wire(msg), MAX_PIXELS)
        assert abs_err(out, rgb).mean() < 3.0, text
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        msg.data = cv2.imencode(ext, gray)[1].tobytes()
        out = decode_rgb("left", msg, MAX_PIXELS)
        assert abs_err(out[..., 0], gray).mean() < 3.0 and (out[..., 0] == out[..., 2]).all()


def test_compressed_jpeg_of_mono16(rgb: np.ndarray) -> None:
    # JPEG keeps 8 bits: the publisher writes mono8; reading gives the top byte, like mono16 raw input.
    mono16 = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    msg = numpy_to_compressed_image(mono16, "mono16", "jpeg")
    assert msg.format == "mono16; jpeg compressed mono8"
    out = decode_rgb("left", wire(msg), MAX_PIXELS)
    assert abs_err(out, to_rgb8(mono16, "mono16")).mean() < 2.0


@pytest.mark.parametrize("progressive", [0, 1])
def test_header_size_before_decode(progressive: int, rgb: np.ndarray) -> None:
    jpeg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, progressive])[1].tobytes()
    assert compressed_image_size(jpeg) == ("jpeg", (W, H))
    assert compressed_image_size(cv2.imencode(".png", rgb)[1]) == ("png", (W, H))
    assert compressed_image_size(cv2.imencode(".tiff", rgb)[1]) == ("tiff", (W, H))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds one tiny IDAT: decoding would allocate it all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


def compressed(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


def test_compressed_rejections(rgb: np.ndarray) -> None:
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    png = cv2.imencode(".png", rgb)[1].tobytes()
    cases = {
        # a 60000 x 60000 PNG of 100 bytes: refused from its header, never decoded
        "image_too_large": [
            (compressed("rgb8; png compressed bgr8", png_header_only(60000, 60000)), "60000x60000"),
            (
                compressed("rgb8; jpeg compressed bgr8", jpeg),
                f"{W}x{H} = {W * H} px exceeds max_input_pixels=1000",
            ),
        ],
        "image_data_truncated": [
            (compressed("rgb8; jpeg compressed bgr8", jpeg[: len(jpeg) // 2]), "no end marker"),
            (compressed("rgb8; png compressed bgr8", png[: len(png) - 40]), "no end marker"),
            (compressed("rgb8; png compressed bgr8", png[:20]), "ends inside its png header"),
        ],
        "malformed_image": [
            (compressed("jpeg", b"GIF89a" + bytes(100)), "not JPEG, PNG or TIFF (starts with 47 49 46"),
            (
                compressed("rgb8; png compressed bgr8", png[:100] + bytes(len(png) - 112) + png[-12:]),
                "could not be decoded",
            ),
        ],
        "empty_image": [
            (compressed("rgb8; jpeg compressed bgr8", b""), "has no data"),
            (compressed("png", png_header_only(0, 10)), "is empty (0x10)"),
        ],
        "not_camera_encoding": [
            (compressed("16UC1; compressedDepth png", png), "compressedDepth: a depth map"),
            (compressed("32FC1; png compressed ", png), "'32FC1' is a valid ROS encoding but not a camera"),
        ],
        "unsupported_encoding": [
            (compressed("h264", jpeg), "'h264' is not a still image codec"),
            (compressed("rgb8; webp compressed bgr8", jpeg), "not 'ENCODING; CODEC compressed TARGET'"),
            (compressed("nv12; jpeg compressed mono8", jpeg), "'nv12' is not supported"),
        ],
    }
    for kind, msgs in cases.items():
        for msg, message in msgs:
            exc = rejected(msg, 1000 if "max_input_pixels=1000" in message else MAX_PIXELS)
            assert exc.kind == kind, (kind, str(exc))
            assert message in str(exc), (message, str(exc))


def test_zero_padded_jpeg_accepted(rgb: np.ndarray) -> None:
    # MJPEG cameras pad frames to a fixed size with zeros after the end marker.
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes() + bytes(37)
    out = decode_rgb("left", compressed("rgb8; jpeg compressed bgr8", jpeg), MAX_PIXELS)
    assert out.shape == (H, W, 3)


# -------------------------------------------------------------------------------- transport, rectification
def test_transport_topics() -> None:
    assert transport_topic("left/image_raw", "compressed") == "left/image_raw/compressed"
    assert transport_topic("left/image_rect", "raw") == "left/image_rect"
    assert image_message_type("compressed") is CompressedImage and image_message_type("raw") is Image
    with pytest.raises(ValueError, match="'theora' is not one of raw, compressed"):
        transport_topic("left/image_raw", "theora")


def test_rectify_rgb_kinds(rgb: np.ndarray) -> None:
    info = CameraInfo(width=W, height=H, distortion_model="plumb_bob")
    info.d = [0.1, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(InputRejected, match="K is all zeros") as exc:
        rectify_rgb("left", rgb, info, Rectifier("auto", "left"))
    assert exc.value.kind == "camera_info_uncalibrated"
    info.k = [200.0, 0, 160, 0, 200, 120, 0, 0, 1]
    info.p = [200.0, 0, 160, 0, 0, 200, 120, 0, 0, 0, 1, 0]
    info.r = [1.0, 0, 0, 0, 1, 0, 0, 0, 1]
    out = rectify_rgb("left", rgb, info, Rectifier("auto", "left"))
    assert out.shape == rgb.shape and out is not rgb
    with pytest.raises(InputRejected) as exc:
        rectify_rgb("left", rgb[:100], info, Rectifier("auto", "left"))
    assert exc.value.kind == "camera_info_size_mismatch"
