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
* Camera formats that are not RGB (YUV 4:2:2 and Bayer mosaics, as drivers publish them to save bandwidth)
  are converted by :func:`to_rgb8` with OpenCV, as ``cv_bridge`` would, rather than refused.
* ``sensor_msgs/CompressedImage`` (``image_transport``'s ``compressed`` transport, what most bags record) is
  read by :func:`compressed_format`, :func:`compressed_image_size` (the pixel size from the JPEG / PNG / TIFF
  header, *before* decoding, so an oversized image is refused without allocating it) and
  :func:`decode_compressed` (``cv2.imdecode``); :func:`numpy_to_compressed_image` writes what
  ``compressed_image_transport`` writes, for tests and tools.
"""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

__all__ = [
    "BAYER_ENCODINGS",
    "ENCODINGS",
    "RGB_CONVERTIBLE",
    "YUV422_ENCODINGS",
    "CompressedFormat",
    "EncodingInfo",
    "ImageEncodingError",
    "compressed_format",
    "compressed_image_size",
    "compressed_is_complete",
    "decode_compressed",
    "image_to_numpy",
    "numpy_to_compressed_image",
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
    # YUV 4:2:2, two bytes per pixel (a chroma byte and a luma byte; each pixel pair shares U and V).
    "uyvy": EncodingInfo(np.dtype(np.uint8), 2),
    "yuv422": EncodingInfo(np.dtype(np.uint8), 2),  # = uyvy (the older name, deprecated in sensor_msgs)
    "yuyv": EncodingInfo(np.dtype(np.uint8), 2),
    "yuv422_yuy2": EncodingInfo(np.dtype(np.uint8), 2),  # = yuyv (deprecated name)
    # Raw Bayer mosaics, one sample per pixel; the name spells the 2x2 tile row by row from the top left.
    "bayer_rggb8": EncodingInfo(np.dtype(np.uint8), 1),
    "bayer_bggr8": EncodingInfo(np.dtype(np.uint8), 1),
    "bayer_gbrg8": EncodingInfo(np.dtype(np.uint8), 1),
    "bayer_grbg8": EncodingInfo(np.dtype(np.uint8), 1),
    "bayer_rggb16": EncodingInfo(np.dtype(np.uint16), 1),
    "bayer_bggr16": EncodingInfo(np.dtype(np.uint16), 1),
    "bayer_gbrg16": EncodingInfo(np.dtype(np.uint16), 1),
    "bayer_grbg16": EncodingInfo(np.dtype(np.uint16), 1),
}

#: YUV 4:2:2 encodings -> the OpenCV conversion to RGB (``uyvy`` is OpenCV's UYVY, ``yuyv`` its YUY2).
#: OpenCV's (and cv_bridge's) YUV is BT.601 limited range, which is what V4L2 cameras deliver by default.
YUV422_ENCODINGS: dict[str, int] = {
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuyv": cv2.COLOR_YUV2RGB_YUY2,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2,
}

#: Bayer encodings -> the OpenCV demosaicing to RGB (bilinear). OpenCV's classic names are offset from
#: ROS's: they name the 2x2 tile starting at the *second* row and column, so ROS ``rggb`` is OpenCV
#: ``BayerBG`` (the mapping ``cv_bridge`` uses; OpenCV 5 adds ``BayerRGGB`` aliases with equal values).
BAYER_ENCODINGS: dict[str, int] = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
    "bayer_rggb16": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr16": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg16": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg16": cv2.COLOR_BayerGB2RGB,
}

#: What :func:`to_rgb8` converts (the colour encodings it understands; generic ones like 8UC3 are not).
RGB_CONVERTIBLE: tuple[str, ...] = (
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    *YUV422_ENCODINGS,
    *BAYER_ENCODINGS,
)

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

    Supports rgb8, bgr8, rgba8, bgra8, mono8 and mono16 (reduced to 8 bits by ``>> 8``), the YUV 4:2:2
    encodings (``uyvy`` / ``yuv422``, ``yuyv`` / ``yuv422_yuy2``; ``(H, W, 2)`` uint8, even width) and the
    Bayer mosaics (``bayer_rggb8`` ... ``bayer_grbg16``; bilinear demosaicing, 16-bit reduced by ``>> 8``
    after demosaicing). Generic encodings (8UC3, 16UC1, 32FC1, ...) carry no colour semantics and are
    rejected rather than guessed.
    """
    a = np.asarray(arr)
    if (encoding in ("mono8", "mono16") or encoding in BAYER_ENCODINGS) and a.ndim == 3 and a.shape[2] == 1:
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
    if encoding in YUV422_ENCODINGS:
        if a.ndim != 3 or a.shape[2] != 2 or a.dtype != np.uint8:
            raise ImageEncodingError(
                f"array shape {a.shape} dtype {a.dtype} does not fit encoding {encoding!r} "
                "(expected (H, W, 2) uint8)"
            )
        if a.shape[1] % 2:
            raise ImageEncodingError(
                f"{encoding} image width {a.shape[1]} is odd: YUV 4:2:2 stores pixels in pairs sharing "
                "U and V"
            )
        return cv2.cvtColor(np.ascontiguousarray(a), YUV422_ENCODINGS[encoding])
    if encoding in BAYER_ENCODINGS:
        want = ENCODINGS[encoding].dtype
        if a.ndim != 2 or a.dtype != want:
            raise ImageEncodingError(
                f"array shape {a.shape} dtype {a.dtype} does not fit encoding {encoding!r} "
                f"(expected (H, W) {want})"
            )
        if a.shape[0] < 2 or a.shape[1] < 2:
            raise ImageEncodingError(
                f"{encoding} image {a.shape[1]}x{a.shape[0]} is smaller than one 2x2 tile"
            )
        rgb = cv2.cvtColor(np.ascontiguousarray(a), BAYER_ENCODINGS[encoding])
        return rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)
    raise ImageEncodingError(
        f"cannot convert encoding {encoding!r} to rgb8 (supported: {', '.join(RGB_CONVERTIBLE)})"
    )


# ----------------------------------------------------------------------------------- CompressedImage
#: Still-image codecs ``compressed_image_transport`` writes (its ``format`` parameter), and the magic bytes
#: the data of each starts with. The data is identified by its magic, not by the format string: drivers
#: that fill ``format`` by hand get it wrong often enough.
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "jpeg": (b"\xff\xd8",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "tiff": (b"II*\x00", b"MM\x00*"),
}
_CODEC_NAMES: dict[str, str] = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png", "tiff": "tiff", "tif": "tiff"}


@dataclass(frozen=True)
class CompressedFormat:
    """A ``CompressedImage.format`` string, parsed as ``compressed_image_transport`` writes it.

    ``"rgb8; jpeg compressed bgr8"`` -> encoding ``rgb8`` (the Image it was made from), codec ``jpeg``,
    target ``bgr8`` (the layout of the compressed pixels). The older format-only strings (``"jpeg"``,
    ``"png"``) have no encoding; the decoded channel count then says mono / BGR, as the subscriber does.
    A PNG of a non-colour image (mono, Bayer) has an empty target: the raw samples were kept.
    ``depth`` is set for ``compressedDepth`` (depth maps, never camera images).
    """

    encoding: str | None
    codec: str
    target: str
    depth: bool = False


def compressed_format(fmt: str) -> CompressedFormat:
    """Parse a ``CompressedImage.format``; :class:`ImageEncodingError` for anything not a still image."""
    text = fmt.strip()
    if ";" not in text:
        codec = _CODEC_NAMES.get(text.lower())
        if codec is None:
            raise ImageEncodingError(
                f"compressed image format {fmt!r} is not a still image codec "
                f"(accepted: {', '.join(_CODEC_NAMES)}, or 'ENCODING; CODEC compressed TARGET')"
            )
        return CompressedFormat(None, codec, "")
    encoding, rest = (part.strip() for part in text.split(";", 1))
    words = rest.split()
    if words and words[0].lower() == "compresseddepth":
        return CompressedFormat(encoding, words[1].lower() if len(words) > 1 else "png", "", depth=True)
    codec = _CODEC_NAMES.get(words[0].lower()) if words else None
    if codec is None or (len(words) > 1 and words[1].lower() != "compressed"):
        raise ImageEncodingError(
            f"compressed image format {fmt!r} is not 'ENCODING; CODEC compressed TARGET' with a still image "
            f"codec ({', '.join(_CODEC_NAMES)})"
        )
    return CompressedFormat(encoding, codec, words[2] if len(words) > 2 else "")


def _bytes(data: Any) -> memoryview:
    return memoryview(np.frombuffer(data, dtype=np.uint8))


def _codec_of(buf: memoryview) -> str | None:
    head = bytes(buf[:8])
    for codec, magics in _MAGIC.items():
        if any(head.startswith(m) for m in magics):
            return codec
    return None


def _jpeg_size(buf: memoryview) -> tuple[int, int] | None:
    """Width and height from the first SOFn segment (``None`` when the header ends before one)."""
    n, pos = len(buf), 2
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            raise ImageEncodingError(f"JPEG data has no marker at byte {pos} (corrupt header)")
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # TEM, RSTn: no length
            pos += 2
            continue
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 2:
            raise ImageEncodingError(f"JPEG segment 0xFF{marker:02X} at byte {pos} has length {length}")
        if marker in (*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)):
            if pos + 9 > n:
                return None
            height, width = struct.unpack(">HH", bytes(buf[pos + 5 : pos + 9]))
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            raise ImageEncodingError("JPEG data has no frame header (SOF) before its scan")
        pos += 2 + length
    return None


def _tiff_size(buf: memoryview) -> tuple[int, int] | None:
    """Width and height from the first IFD's ImageWidth / ImageLength tags."""
    order = "<" if bytes(buf[:2]) == b"II" else ">"
    if len(buf) < 8:
        return None
    (ifd,) = struct.unpack(order + "I", bytes(buf[4:8]))
    if ifd + 2 > len(buf):
        return None
    (count,) = struct.unpack(order + "H", bytes(buf[ifd : ifd + 2]))
    size: dict[int, int] = {}
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(buf):
            return None
        tag, kind = struct.unpack(order + "HH", bytes(buf[entry : entry + 4]))
        if tag in (256, 257):
            fmt = order + ("H" if kind == 3 else "I")
            (size[tag],) = struct.unpack(fmt, bytes(buf[entry + 8 : entry + 8 + struct.calcsize(fmt)]))
    if 256 in size and 257 in size:
        return size[256], size[257]
    return None


def compressed_image_size(data: Any) -> tuple[str, tuple[int, int] | None]:
    """The codec of compressed ``data`` (by its magic bytes) and its ``(width, height)`` from the header.

    Reads only the header, so a node can refuse an image over its pixel budget before ``cv2.imdecode``
    allocates it (a 100-byte PNG can declare 60000 x 60000 pixels). The size is ``None`` only when the
    header is cut short; :class:`ImageEncodingError` when the data is not JPEG, PNG or TIFF or the header is
    corrupt.
    """
    buf = _bytes(data)
    codec = _codec_of(buf)
    if codec is None:
        raise ImageEncodingError(
            f"compressed image data is not JPEG, PNG or TIFF (starts with {bytes(buf[:8]).hex(' ')})"
        )
    if codec == "png":
        if len(buf) < 24:
            return codec, None
        if bytes(buf[12:16]) != b"IHDR":
            raise ImageEncodingError("PNG data does not start with an IHDR chunk (corrupt header)")
        width, height = struct.unpack(">II", bytes(buf[16:24]))
        return codec, (width, height)
    if codec == "jpeg":
        return codec, _jpeg_size(buf)
    return codec, _tiff_size(buf)


def compressed_is_complete(codec: str, data: Any) -> bool:
    """Whether the data ends as a whole JPEG (EOI marker) or PNG (IEND chunk) does; TIFF has no trailer.

    Needed because libjpeg decodes a truncated JPEG "successfully", with the missing rows grey, and only
    warns on stderr: a cut-off frame would otherwise reach the network as real pixels.
    """
    buf = bytes(_bytes(data)[-64:]).rstrip(b"\x00")  # some MJPEG cameras pad frames with zeros
    if codec == "jpeg":
        return buf.endswith(b"\xff\xd9")
    if codec == "png":
        return buf.endswith(b"IEND\xaeB`\x82")
    return True


def decode_compressed(
    data: Any, fmt: CompressedFormat, expected_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, str]:
    """Decode compressed image data to an array and the encoding :func:`to_rgb8` should read it as.

    ``cv2.imdecode(IMREAD_UNCHANGED)``: the samples as stored, 8 or 16 bits, no EXIF rotation (a camera
    frame must keep its pixel grid). The encoding follows ``compressed_image_transport``'s subscriber: 3
    channels are BGR (``bgr8``, or ``bgr16`` reduced here to 8 bits), 4 BGRA, 1 channel mono (``mono8`` /
    ``mono16``), except a Bayer image kept raw (PNG, empty target), which is demosaiced as its encoding
    says. ``expected_size`` (from :func:`compressed_image_size`) must match the decoded size.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise ImageEncodingError(f"{fmt.codec} data ({buf.size} bytes) could not be decoded (corrupt?)")
    height, width = arr.shape[:2]
    if expected_size is not None and expected_size != (width, height):
        raise ImageEncodingError(
            f"{fmt.codec} decoded to {width}x{height} but its header says "
            f"{expected_size[0]}x{expected_size[1]}"
        )
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageEncodingError(f"{fmt.codec} data decoded to {arr.dtype} samples; expected 8 or 16 bits")
    if channels == 1:
        arr = arr.reshape(height, width)
        if fmt.encoding in BAYER_ENCODINGS and fmt.target in ("", fmt.encoding):
            bits = 8 if arr.dtype == np.uint8 else 16
            return arr, fmt.encoding.rstrip("0123456789") + str(bits)
        return arr, "mono8" if arr.dtype == np.uint8 else "mono16"
    if channels in (3, 4):
        if arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        return arr, "bgr8" if channels == 3 else "bgra8"
    raise ImageEncodingError(f"{fmt.codec} data decoded to {channels} channels; expected 1, 3 or 4")


def numpy_to_compressed_image(
    arr: np.ndarray,
    encoding: str,
    codec: str = "jpeg",
    header: Header | None = None,
    jpeg_quality: int = 95,
) -> CompressedImage:
    """Encode an image as ``compressed_image_transport`` would, format string included.

    ``arr`` is an Image's pixels in ``encoding`` (as :func:`image_to_numpy` returns them). Colour encodings
    become BGR (``"rgb8; jpeg compressed bgr8"``, ``"rgb8; png compressed bgr8"``), mono becomes
    ``mono8`` for JPEG (16 bits reduced by ``>> 8``) and stays raw for PNG (``"mono16; png compressed "``),
    and so do Bayer mosaics in PNG. Exists so tests and tools can produce what bags contain.
    """
    codec = _CODEC_NAMES.get(codec, codec)
    a = np.asarray(arr)
    colour = {"rgb8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGBA2BGR, "bgra8": cv2.COLOR_BGRA2BGR}
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8"):
        pixels, target = (a if encoding == "bgr8" else cv2.cvtColor(a, colour[encoding])), "bgr8"
    elif encoding in ("mono8", "mono16") or encoding in BAYER_ENCODINGS:
        if codec == "jpeg":
            if encoding in BAYER_ENCODINGS:
                raise ImageEncodingError(
                    "a Bayer image in JPEG is demosaiced to mono8 first: not supported here"
                )
            pixels, target = (a if a.dtype == np.uint8 else (a >> 8).astype(np.uint8)), "mono8"
        else:
            pixels, target = a, ""
    else:
        raise ImageEncodingError(
            f"cannot compress encoding {encoding!r} (rgb8, bgr8, rgba8, bgra8, mono8, mono16, bayer)"
        )
    if codec == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(pixels), params)
    elif codec in ("png", "tiff"):
        ok, data = cv2.imencode(".png" if codec == "png" else ".tiff", np.ascontiguousarray(pixels))
    else:
        raise ImageEncodingError(f"unknown codec {codec!r} (jpeg, png, tiff)")
    if not ok:
        raise ImageEncodingError(f"cv2.imencode({codec}) failed for a {a.shape} {a.dtype} {encoding} image")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = f"{encoding}; {codec} compressed {target}"
    msg.data = to_byte_array(data)
    return msg
