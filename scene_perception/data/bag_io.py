"""rosbag2 read/write of stereo sequences with ground truth (pure Python: ``rosbags`` + numpy, no rclpy).

Why ``rosbags`` rather than ``rosbag2_py``: data generation, training and evaluation run in plain Python
environments (CI, training machines) where a ROS installation is not guaranteed, yet the bags they produce
must play back with ``ros2 bag play`` into the real nodes.  ``rosbags`` writes the standard rosbag2 layout
(``metadata.yaml`` + one ``.mcap`` or ``.db3`` file) with CDR payloads and RIHS01 type hashes, so a ROS 2
installation sees an ordinary bag.

Layout of a stereo bag (relative topic names; see :class:`StereoBagTopics`)::

    /left/image_rect     sensor_msgs/msg/Image       rgb8          frame "left_optical"
    /left/camera_info    sensor_msgs/msg/CameraInfo  plumb_bob     frame "left_optical"
    /right/image_rect    sensor_msgs/msg/Image       rgb8          frame "right_optical"
    /right/camera_info   sensor_msgs/msg/CameraInfo  plumb_bob     frame "right_optical"
    /gt/disparity        sensor_msgs/msg/Image       32FC1 px      (left view, d = x_left - x_right)
    /gt/depth            sensor_msgs/msg/Image       32FC1 m       (NaN where the depth is infinite, e.g. sky)
    /gt/nonoccluded      sensor_msgs/msg/Image       mono8         (255 = left pixel seen in the right view)
    /gt/semantic         sensor_msgs/msg/Image       mono8 class id
    /gt/instance         sensor_msgs/msg/Image       16UC1 instance id (0 = stuff)
    /gt/pose             geometry_msgs/msg/PoseStamped   world_T_left_optical, frame "map"

Every message of one frame carries the frame's stamp in its header and is logged at that same time, so
readers can group by stamp.  The CameraInfo pair follows the rectified-stereo convention of
:mod:`scene_perception.geometry.stereo_camera` (``P_right[0,3] = -fx * B``, ``R = I``, ``D = 0``).

``rosbags`` is imported only inside the functions that read or write a bag (issue 19: nothing outside
``ros/`` needs ROS or ``rosbags`` at import time), so the many modules that import this one for its types
and :func:`decode_image` (training, evaluation, benchmarks) also import on machines without ``rosbags``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from scene_perception.geometry.rotations import matrix_to_quaternion, quaternion_to_matrix
from scene_perception.geometry.stereo_camera import CameraModelError, StereoCamera

if TYPE_CHECKING:  # annotations only; at run time rosbags is imported where a bag is opened
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores
    from rosbags.typesys.store import Typestore

__all__ = [
    "DEFAULT_TOPICS",
    "TYPESTORE",  # noqa: F822 - provided lazily by the module __getattr__ (no rosbags at import time)
    "BagMessage",
    "BagReadError",
    "StereoBagFrame",
    "StereoBagTopics",
    "decode_image",
    "iter_messages",
    "read_stereo_bag",
    "typestore",
    "write_stereo_bag",
]

_LOG = logging.getLogger(__name__)

# The ROS 2 Kilted message definitions: the distribution whose rclpy wheels this project uses.  Image,
# CameraInfo and PoseStamped are unchanged since Jazzy (same RIHS01 hashes), so Jazzy installs read the
# bags too.  rosbag2 metadata version 9 is what Jazzy and Kilted write themselves.  Held as the member
# name of rosbags' ``Stores`` so that naming it needs no rosbags; the public ``TYPESTORE`` (the enum
# member itself) is resolved on first access by the module ``__getattr__`` below.
_TYPESTORE_NAME = "ROS2_KILTED"
_BAG_VERSION = 9

_IMAGE = "sensor_msgs/msg/Image"
_INFO = "sensor_msgs/msg/CameraInfo"
_POSE = "geometry_msgs/msg/PoseStamped"

# storage name -> member name of rosbags' ``StoragePlugin`` (names, so arguments are checked without rosbags).
_STORAGES = {"mcap": "MCAP", "sqlite3": "SQLITE3"}

# encoding -> (numpy dtype, channels).  The set the readers accept; writers only produce rgb8, mono8,
# 16UC1 and 32FC1.  Kept here (not in ros/codec.py) because this module must not import ROS messages.
_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}


class BagReadError(RuntimeError):
    """A bag is missing, truncated, corrupt, or lacks what the caller asked for (the message names it)."""


@dataclass(frozen=True)
class StereoBagTopics:
    """Topic names and frame ids of a stereo bag.

    Kept as one value so writer, reader, the synth command and the ROS nodes' remappings agree on a single
    definition; :meth:`namespaced` prefixes all topics (e.g. ``/sim``) for bags holding several rigs.
    """

    left_image: str = "/left/image_rect"
    left_info: str = "/left/camera_info"
    right_image: str = "/right/image_rect"
    right_info: str = "/right/camera_info"
    disparity: str = "/gt/disparity"
    depth: str = "/gt/depth"
    nonoccluded: str = "/gt/nonoccluded"
    semantic: str = "/gt/semantic"
    instance: str = "/gt/instance"
    pose: str = "/gt/pose"
    left_frame: str = "left_optical"
    right_frame: str = "right_optical"
    map_frame: str = "map"

    def namespaced(self, namespace: str) -> StereoBagTopics:
        """The same layout with every topic under ``namespace`` (``""`` or ``"/"`` leaves it unchanged)."""
        ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
        names = ("left_image", "left_info", "right_image", "right_info", *self.gt_topics(), "pose")
        return replace(self, **{name: ns + getattr(self, name) for name in names})

    @staticmethod
    def gt_topics() -> dict[str, str]:
        """Ground-truth image fields -> encoding written (field names double as keys of ``gt`` dicts)."""
        return {"disparity": "32FC1", "depth": "32FC1", "nonoccluded": "mono8", "semantic": "mono8",
                "instance": "16UC1"}

    def all_topics(self) -> tuple[str, ...]:
        """Every topic of the layout, in writing order."""
        return (self.left_image, self.left_info, self.right_image, self.right_info,
                *(getattr(self, name) for name in self.gt_topics()), self.pose)


DEFAULT_TOPICS = StereoBagTopics()


class BagMessage(NamedTuple):
    """One deserialized message: ``(topic, stamp_ns, msgtype, msg)``.

    ``stamp_ns`` is the header stamp when the message has a header (what consumers synchronise on), else
    the time it was logged in the bag.
    """

    topic: str
    stamp_ns: int
    msgtype: str
    msg: Any


@dataclass
class StereoBagFrame:
    """All messages of one stamp, decoded to numpy.

    ``gt`` holds whichever ground-truth images the bag has, keyed by :meth:`StereoBagTopics.gt_topics`
    field name: ``disparity`` / ``depth`` float32 (H, W), ``nonoccluded`` bool, ``semantic`` uint8,
    ``instance`` uint16.  ``camera`` is None when the bag has no CameraInfo pair for this stamp, ``pose``
    (4x4 float64 world_T_left_optical) None without a pose message.
    """

    index: int
    stamp_ns: int
    left: np.ndarray  # (H, W, 3) uint8 RGB
    right: np.ndarray  # (H, W, 3) uint8 RGB
    camera: StereoCamera | None
    gt: dict[str, np.ndarray] = field(default_factory=dict)
    pose: np.ndarray | None = None


def _store_id() -> Stores:
    """The rosbags ``Stores`` member of :data:`TYPESTORE` (imports rosbags: call only where a bag is used)."""
    from rosbags.typesys import Stores

    return Stores[_TYPESTORE_NAME]


def __getattr__(name: str) -> Any:
    """Module attribute ``TYPESTORE``, resolved lazily so importing this module does not import rosbags."""
    if name == "TYPESTORE":
        return _store_id()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The shared Kilted typestore used for writing (building one takes ~80 ms, so it is done once).

    Public so tools can build or decode extra messages with exactly the definitions the bags use; treat
    it as read-only (registering types here would leak into every later bag).
    """
    from rosbags.typesys import get_typestore

    return get_typestore(_store_id())


# ----------------------------------------------------------------------------------------------- writing
def _header(store: Typestore, stamp_ns: int, frame_id: str) -> Any:
    t = store.types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=frame_id,
    )


def _image_msg(store: Typestore, header: Any, array: np.ndarray, encoding: str) -> Any:
    """An Image with a tightly packed little-endian payload (``step = width * bytes per pixel``)."""
    dtype, channels = _ENCODINGS[encoding]
    src = np.asarray(array)
    arr = np.ascontiguousarray(src, dtype=dtype.newbyteorder("<"))
    if src.dtype.kind in "iub" and src.dtype != dtype and not np.array_equal(arr, src):
        # e.g. int64 class ids > 255 would wrap silently into mono8 and corrupt the ground truth.
        raise ValueError(f"{src.dtype} values do not fit the {encoding} image ({dtype}) without loss")
    if arr.ndim != (2 if channels == 1 else 3) or (channels > 1 and arr.shape[2] != channels):
        raise ValueError(f"{encoding} image needs shape (H, W{'' if channels == 1 else f', {channels}'}), "
                         f"got {array.shape}")
    h, w = arr.shape[:2]
    return store.types[_IMAGE](
        header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
        step=w * channels * dtype.itemsize, data=arr.reshape(-1).view(np.uint8),
    )


def _camera_info_msgs(store: Typestore, camera: StereoCamera, stamp_ns: int,
                      topics: StereoBagTopics) -> tuple[Any, Any]:
    """Left/right CameraInfo of an ideal rectified pair: K = P[:, :3], R = I, D = 0 (plumb_bob)."""
    t = store.types
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    out = []
    for p, frame in zip(camera.projection_matrices(), (topics.left_frame, topics.right_frame), strict=True):
        out.append(t[_INFO](
            header=_header(store, stamp_ns, frame), height=camera.height, width=camera.width,
            distortion_model="plumb_bob", d=np.zeros(5), k=np.ascontiguousarray(p[:, :3]).reshape(9),
            r=np.eye(3).reshape(9), p=p.reshape(12).copy(), binning_x=0, binning_y=0, roi=roi,
        ))
    return out[0], out[1]


def _pose_msg(store: Typestore, pose: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    t = store.types
    m = np.asarray(pose, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"pose must be a finite 4x4 matrix, got shape {m.shape}")
    qx, qy, qz, qw = (float(v) for v in matrix_to_quaternion(m[:3, :3]))
    return t[_POSE](header=_header(store, stamp_ns, frame_id), pose=t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])),
        orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
    ))


def _frame_messages(store: Typestore, frame: Any, topics: StereoBagTopics
                    ) -> Iterator[tuple[str, str, Any]]:
    """(topic, msgtype, message) for one WorldFrame-like object; absent/None GT fields are skipped."""
    stamp = int(frame.stamp_ns)
    if stamp < 0:
        raise ValueError(f"frame {getattr(frame, 'index', '?')} has a negative stamp {stamp} ns")
    left_header = _header(store, stamp, topics.left_frame)
    info_l, info_r = _camera_info_msgs(store, frame.camera, stamp, topics)
    yield topics.left_image, _IMAGE, _image_msg(store, left_header, frame.left, "rgb8")
    yield topics.left_info, _INFO, info_l
    right_header = _header(store, stamp, topics.right_frame)
    yield topics.right_image, _IMAGE, _image_msg(store, right_header, frame.right, "rgb8")
    yield topics.right_info, _INFO, info_r
    for name, encoding in StereoBagTopics.gt_topics().items():
        value = getattr(frame, name, None)
        if value is None:
            continue
        arr = np.asarray(value)
        if name == "depth":
            arr = np.where(np.isinf(arr), np.float32(np.nan), arr.astype(np.float32, copy=False))
        elif name == "nonoccluded":
            arr = np.where(arr, np.uint8(255), np.uint8(0))
        yield getattr(topics, name), _IMAGE, _image_msg(store, left_header, arr, encoding)
    pose = getattr(frame, "pose", None)
    if pose is not None:
        yield topics.pose, _POSE, _pose_msg(store, pose, stamp, topics.map_frame)


def write_stereo_bag(
    path: str | Path,
    frames: Iterable[Any],
    storage: str = "mcap",
    topics: StereoBagTopics = DEFAULT_TOPICS,
    *,
    compress: bool = False,
    overwrite: bool = False,
    custom_data: Mapping[str, str] | None = None,
) -> Path:
    """Write WorldFrame-like objects to a new rosbag2 directory ``path``; returns ``path``.

    Each frame needs ``stamp_ns``, ``left``/``right`` (H, W, 3) uint8 RGB and ``camera``
    (:class:`StereoCamera`); ``disparity``, ``depth``, ``nonoccluded``, ``semantic``, ``instance`` and
    ``pose`` are written when present and not None, so plain recordings work too.  Frames are consumed
    lazily: a long generated sequence never has to fit in memory.

    Args:
        storage: ``"mcap"`` (default; what ROS 2 Jazzy+ records) or ``"sqlite3"``.
        compress: zstd; chunk compression for mcap, per-message compression for sqlite3 (both are modes
            ``ros2 bag`` reads natively).
        overwrite: replace an existing *bag* directory (one holding ``metadata.yaml``); any other existing
            path is refused, so a typo cannot delete unrelated data.
        custom_data: string pairs stored in ``metadata.yaml`` (e.g. the generator's seed).

    On any error the partly written directory is removed: a bag without ``metadata.yaml`` would only
    confuse later readers.
    """
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin

    path = Path(path)
    if storage not in _STORAGES:
        raise ValueError(f"unknown storage {storage!r}; choose one of {sorted(_STORAGES)}")
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pick a new bag directory (or use overwrite)")
        if not (path / "metadata.yaml").is_file():
            raise FileExistsError(f"{path} exists and is not a rosbag2 directory (no metadata.yaml); "
                                  "refusing to overwrite it")
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = typestore()
    writer = Writer(path, version=_BAG_VERSION, storage_plugin=StoragePlugin[_STORAGES[storage]])
    if compress:
        mode = CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE
        writer.set_compression(mode, CompressionFormat.ZSTD)
    for key, value in (custom_data or {}).items():
        writer.set_custom_data(str(key), str(value))
    try:
        with writer:
            connections: dict[str, Any] = {}
            for frame in frames:
                stamp = int(frame.stamp_ns)
                for topic, msgtype, msg in _frame_messages(store, frame, topics):
                    conn = connections.get(topic)
                    if conn is None:
                        conn = connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
                    writer.write(conn, stamp, store.serialize_cdr(msg, msgtype))
            if not connections:
                raise ValueError(f"no frames to write to {path}: an empty bag would be useless")
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


# ----------------------------------------------------------------------------------------------- reading
def _reader_typestore(reader: Reader) -> Typestore:
    """Kilted types plus any type the bag defines that the store lacks (custom messages in foreign bags)."""
    from rosbags.typesys import get_types_from_idl, get_types_from_msg, get_typestore

    base = typestore()
    unknown = [c for c in reader.connections if c.msgtype not in base.fielddefs]
    if not unknown:
        return base
    store = get_typestore(_store_id())  # a private copy: registering must not change the shared store
    for conn in unknown:
        if conn.msgdef.data.startswith("=" * 80 + "\nIDL: "):
            types = get_types_from_idl(conn.msgdef.data)
        else:
            types = get_types_from_msg(conn.msgdef.data, conn.msgtype)
        store.register(types)
    return store


def _stamp_of(msg: Any, log_ns: int) -> int:
    header = getattr(msg, "header", None)
    if header is None:
        return int(log_ns)
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def iter_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Yield :class:`BagMessage` ``(topic, stamp_ns, msgtype, msg)`` in bag order, deserialized with rosbags.

    ``path`` is a bag directory or a single ``.mcap`` / ``.db3`` file.  ``topics`` restricts the output;
    naming a topic the bag lacks raises :class:`BagReadError` (listing what it has) instead of silently
    yielding nothing.  Missing, truncated or corrupt files raise :class:`BagReadError` naming the file;
    a bag that ends before the message count its metadata promises is reported as truncated.
    """
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagReadError(f"bag {path} does not exist")
    wanted = None if topics is None else set(topics)
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:
        raise BagReadError(f"cannot open bag {_describe(path)} (truncated or corrupt?): {exc}") from exc
    try:
        available = {c.topic for c in reader.connections}
        if wanted is not None and not wanted <= available:
            raise BagReadError(f"bag {path} has no topic(s) {sorted(wanted - available)}; "
                               f"it has {sorted(available)}")
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:
            return
        store = _reader_typestore(reader)
        expected = {c.id: c.msgcount for c in conns}
        seen = dict.fromkeys(expected, 0)
        source = reader.messages(connections=conns)
        while True:
            try:
                item = next(source, None)
                if item is None:
                    break
                conn, log_ns, raw = item
                msg = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:
                raise BagReadError(f"bag {_describe(path)} is corrupt or truncated: "
                                   f"{type(exc).__name__}: {exc}") from exc
            seen[conn.id] += 1
            yield BagMessage(conn.topic, _stamp_of(msg, log_ns), conn.msgtype, msg)
        short = {c.topic: (seen[c.id], expected[c.id]) for c in conns if seen[c.id] < expected[c.id]}
        if short:
            detail = ", ".join(f"{t}: {n} of {m}" for t, (n, m) in sorted(short.items()))
            raise BagReadError(f"bag {_describe(path)} is truncated: metadata promises more messages "
                               f"({detail})")
    finally:
        try:
            reader.close()
        except Exception:  # closing a half-broken reader must not mask the original error
            _LOG.debug("error closing bag %s", path, exc_info=True)


def _describe(path: Path) -> str:
    """The bag path plus its storage file(s), so an error names the file that is actually broken."""
    if path.is_dir():
        files = sorted(p.name for p in path.iterdir() if p.suffix in {".mcap", ".db3", ".zstd"})
        if files:
            return f"{path} ({', '.join(files)})"
    return str(path)


def decode_image(msg: Any) -> np.ndarray:
    """A deserialized Image as an owned numpy array (H, W) or (H, W, C) in native byte order.

    Honours ``step`` padding and ``is_bigendian``; raises ValueError with the reason for anything
    malformed (unsupported encoding, step too small, data too short), which readers turn into
    :class:`BagReadError`.
    """
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {enc!r} (supported: {', '.join(_ENCODINGS)})")
    dtype, channels = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels * dtype.itemsize
    if h <= 0 or w <= 0:
        raise ValueError(f"{enc} image has zero size {w}x{h}")
    if step < row:
        raise ValueError(f"{enc} image step {step} is smaller than width*bytes per pixel = {row}")
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if data.size < step * (h - 1) + row:
        raise ValueError(f"{enc} image data has {data.size} bytes, {w}x{h} with step {step} needs at least "
                         f"{step * (h - 1) + row}")
    rows = np.lib.stride_tricks.as_strided(data, shape=(h, row), strides=(step, 1))
    typed = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    arr = typed.astype(dtype, copy=False) if typed.dtype != dtype else typed
    return arr.reshape((h, w) if channels == 1 else (h, w, channels))


def _to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Colour image as (H, W, 3) uint8 RGB; the readers' contract regardless of how a camera encoded it."""
    if encoding in ("rgb8", "8UC3"):
        return arr
    if encoding == "bgr8":
        return np.ascontiguousarray(arr[..., ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(arr[..., :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(arr[..., 2::-1])
    if encoding in ("mono8", "8UC1"):
        return np.repeat(arr[..., None], 3, axis=2)
    raise ValueError(f"cannot use a {encoding} image as a colour view (need rgb8/bgr8/rgba8/bgra8/mono8)")


def _pose_matrix(msg: Any) -> np.ndarray:
    p, q = msg.pose.position, msg.pose.orientation
    xyzw = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    if not np.linalg.norm(xyzw) > 0:
        raise ValueError("zero-length orientation quaternion")
    m = np.eye(4)
    m[:3, :3] = quaternion_to_matrix(xyzw)
    m[:3, 3] = (p.x, p.y, p.z)
    return m


def _assemble(index: int, stamp: int, msgs: dict[str, Any], topics: StereoBagTopics, path: Path
              ) -> StereoBagFrame:
    """Decode one stamp's messages; malformed content becomes a BagReadError naming bag, topic and stamp."""
    current = ""
    try:
        current = topics.left_image
        left = _to_rgb(decode_image(msgs[current]), msgs[current].encoding)
        current = topics.right_image
        right = _to_rgb(decode_image(msgs[current]), msgs[current].encoding)
        camera = None
        if topics.left_info in msgs and topics.right_info in msgs:
            current = topics.left_info
            camera = StereoCamera.from_camera_info(msgs[topics.left_info], msgs[topics.right_info])
        gt: dict[str, np.ndarray] = {}
        for name in StereoBagTopics.gt_topics():
            current = getattr(topics, name)
            if current in msgs:
                arr = decode_image(msgs[current])
                gt[name] = arr > 0 if name == "nonoccluded" else arr
        pose = None
        if topics.pose in msgs:
            current = topics.pose
            pose = _pose_matrix(msgs[current])
    except (ValueError, CameraModelError) as exc:
        raise BagReadError(f"bag {path}: bad message on {current} at stamp {stamp} ns: {exc}") from exc
    return StereoBagFrame(index=index, stamp_ns=stamp, left=left, right=right, camera=camera, gt=gt,
                          pose=pose)


def read_stereo_bag(path: str | Path, topics: StereoBagTopics = DEFAULT_TOPICS,
                    max_pending: int = 32) -> Iterator[StereoBagFrame]:
    """Yield one :class:`StereoBagFrame` per stamp, in stamp order, from a bag in the layout above.

    Messages are grouped by header stamp, not by position, so bags recorded from live topics (where the
    topics of one stamp interleave with the next) work too.  A stamp is emitted once every layout topic
    the bag contains has arrived for it; stamps still incomplete when a newer one completes, or when more
    than ``max_pending`` are buffered (bounded memory), are emitted if they have both images and dropped
    with a warning otherwise.  Raises :class:`BagReadError` when the bag lacks the image topics or is
    corrupt.
    """
    from rosbags.rosbag2 import Reader

    path = Path(path)
    layout = set(topics.all_topics())
    # Open once up front to learn which layout topics exist (cheap: metadata only).
    try:
        with Reader(path) as reader:
            present = {c.topic for c in reader.connections} & layout
    except FileNotFoundError as exc:
        raise BagReadError(f"bag {path} does not exist or has no metadata.yaml: {exc}") from exc
    except Exception as exc:
        raise BagReadError(f"cannot open bag {_describe(path)} (truncated or corrupt?): {exc}") from exc
    missing = {topics.left_image, topics.right_image} - present
    if missing:
        raise BagReadError(f"bag {path} has no {sorted(missing)} topic(s); a stereo bag needs both image "
                           "topics")

    pending: dict[int, dict[str, Any]] = {}
    index = 0

    def flush(older_than: int | None) -> Iterator[StereoBagFrame]:
        nonlocal index
        for stamp in sorted(s for s in pending if older_than is None or s < older_than):
            msgs = pending.pop(stamp)
            if topics.left_image in msgs and topics.right_image in msgs:
                yield _assemble(index, stamp, msgs, topics, path)
                index += 1
            else:
                _LOG.warning("bag %s: dropping stamp %d ns without both images (has %s)", path, stamp,
                             sorted(msgs))

    for topic, stamp, _msgtype, msg in iter_messages(path, sorted(present)):
        group = pending.setdefault(stamp, {})
        group[topic] = msg
        if len(group) == len(present):
            yield from flush(stamp)
            yield _assemble(index, stamp, pending.pop(stamp), topics, path)
            index += 1
        elif len(pending) > max_pending:
            yield from flush(min(pending) + 1)
    yield from flush(None)
