"""Build the ROS messages scene_perception publishes (disparity, depth, point cloud, camera info, label info).

Kept apart from the nodes so tests, tools and the demo produce byte-identical messages without spinning a
node, and so the field conventions (REP 118 depth, stereo_msgs invalid-disparity fill, PCL rgb packing) are
written down in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from scene_perception.geometry.stereo_camera import StereoCamera, camera_info_matrices
from scene_perception.ros.codec import numpy_to_image, to_byte_array

__all__ = [
    "LABEL_INFO_TYPE",
    "VISION_CLASS_TYPE",
    "camera_info_pair_from_camera",
    "make_camera_info",
    "make_camera_info_pair",
    "make_depth_image",
    "make_disparity_image",
    "make_label_info",
    "make_point_cloud",
    "pack_rgb",
    "point_cloud_to_numpy",
    "unpack_rgb",
    "valid_window",
]

# vision_msgs/LabelInfo is the ROS standard for a segmentation model's label set (vision_msgs >= 4, used by
# Isaac ROS and RViz plugins). It is not published on PyPI, so the pip environment falls back to our own
# scene_perception/LabelInfo + VisionClass (msg/), a copy of vision_msgs' layout (same field names, types and
# order; test_label_info_definition.py compares them), so one code path fills either and a consumer written
# against vision_msgs reads ours unchanged. Only the ROS type name differs. The vision_msgs branch itself has
# never run here (UNVERIFIED): vision_msgs is not installable in the pip environment.
try:
    from vision_msgs.msg import LabelInfo as _LabelInfo
    from vision_msgs.msg import VisionClass as _VisionClass
except ImportError:
    from scene_perception.msg import LabelInfo as _LabelInfo
    from scene_perception.msg import VisionClass as _VisionClass
#: The message type published on semantic/label_info in this environment (vision_msgs' when installed).
LABEL_INFO_TYPE: type = _LabelInfo
#: Its element type (``class_map`` entries).
VISION_CLASS_TYPE: type = _VisionClass

# PointField datatype constants -> numpy element types.
_POINTFIELD_DTYPES: dict[int, np.dtype] = {
    PointField.INT8: np.dtype(np.int8),
    PointField.UINT8: np.dtype(np.uint8),
    PointField.INT16: np.dtype(np.int16),
    PointField.UINT16: np.dtype(np.uint16),
    PointField.INT32: np.dtype(np.int32),
    PointField.UINT32: np.dtype(np.uint32),
    PointField.FLOAT32: np.dtype(np.float32),
    PointField.FLOAT64: np.dtype(np.float64),
}

# x, y, z, rgb as four float32 in 16 bytes: the PCL PointXYZRGB wire layout RViz and PCL tools understand.
_POINT_STEP = 16
_XYZRGB_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "rgb"],
        "formats": ["<f4"] * 4,
        "offsets": [0, 4, 8, 12],
        "itemsize": _POINT_STEP,
    }
)
_XYZ_DTYPE = np.dtype(
    {"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [0, 4, 8], "itemsize": _POINT_STEP}
)


def _header(header: Header | None) -> Header:
    return header if header is not None else Header()


def valid_window(valid: np.ndarray) -> RegionOfInterest:
    """Bounding box of the ``True`` pixels as a RegionOfInterest; zero size when nothing is valid."""
    roi = RegionOfInterest()
    rows = np.flatnonzero(valid.any(axis=1))
    if rows.size == 0:
        return roi
    cols = np.flatnonzero(valid.any(axis=0))
    roi.x_offset = int(cols[0])
    roi.y_offset = int(rows[0])
    roi.width = int(cols[-1] - cols[0] + 1)
    roi.height = int(rows[-1] - rows[0] + 1)
    roi.do_rectify = False
    return roi


def make_disparity_image(
    disparity: np.ndarray,
    valid: np.ndarray | None,
    header: Header | None,
    f: float,
    t: float,
    min_disparity: float,
    max_disparity: float,
    delta_d: float,
) -> DisparityImage:
    """``stereo_msgs/DisparityImage`` with a 32FC1 image.

    stereo_msgs marks invalid pixels by a value below ``min_disparity``, so those are written as
    ``min_disparity - 1``.  A pixel counts as valid only if ``valid`` says so *and* its value is finite and
    ``>= min_disparity`` (otherwise consumers would misread it anyway); ``valid_window`` is the bounding box
    of those pixels.  ``f`` is the focal length (px) and ``t`` the baseline (m), so ``Z = f * t / d``.
    """
    d = np.asarray(disparity, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"disparity must be (H, W), got shape {d.shape}")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(d) & (d >= np.float32(min_disparity))
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != d.shape:
            raise ValueError(f"valid mask shape {v.shape} != disparity shape {d.shape}")
        ok &= v
    fill = np.float32(min_disparity - 1.0)
    out = np.where(ok, d, fill).astype(np.float32, copy=False)

    hdr = _header(header)
    msg = DisparityImage()
    msg.header = hdr
    msg.image = numpy_to_image(out, "32FC1", hdr)
    msg.f = float(f)
    msg.t = float(t)
    msg.valid_window = valid_window(ok)
    msg.min_disparity = float(min_disparity)
    msg.max_disparity = float(max_disparity)
    msg.delta_d = float(delta_d)
    return msg


def make_depth_image(
    depth: np.ndarray, header: Header | None, valid: np.ndarray | None = None,
    too_far: np.ndarray | None = None, too_near: np.ndarray | None = None,
) -> Image:
    """REP 118 depth image: 32FC1 metres, NaN for pixels without a measurement.

    Non-finite or non-positive depths and pixels outside ``valid`` are all written as NaN, so consumers
    (depth_image_proc, RViz) have one invalid marker to check.  REP 118 gives the non-finite values REP 117's
    meanings: invalid pixels in ``too_far`` are written ``+Inf`` (out of range: beyond what the sensor
    resolves, e.g. the sky; a costmap may clear along such a ray) and those in ``too_near`` ``-Inf`` (nearer
    than it can measure); a pixel in both is ``+Inf``.  A valid depth is never replaced.
    """
    z = np.asarray(depth, dtype=np.float32)
    if z.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {z.shape}")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    out = np.where(ok, z, np.float32(np.nan)).astype(np.float32, copy=False)
    for mask, value in ((too_near, -np.inf), (too_far, np.inf)):
        if mask is None:
            continue
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != z.shape:
            raise ValueError(f"depth flags must be shaped like the depth {z.shape}, got {mask.shape}")
        out[mask & ~ok] = np.float32(value)
    return numpy_to_image(out, "32FC1", _header(header))


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack ``(..., 3)`` uint8 RGB into float32 whose bits are ``0x00RRGGBB`` (the PCL/RViz ``rgb`` field).

    The float value itself is meaningless (often a denormal); only the bit pattern is read by consumers.
    """
    c = np.asarray(rgb, dtype=np.uint8)
    if c.shape[-1] != 3:
        raise ValueError(f"rgb must have 3 channels in the last axis, got shape {c.shape}")
    packed = (c[..., 0].astype(np.uint32) << 16) | (c[..., 1].astype(np.uint32) << 8) | c[..., 2]
    return packed.view(np.float32)


def unpack_rgb(rgb_float: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: float32 ``rgb`` field -> ``(..., 3)`` uint8 RGB."""
    bits = np.ascontiguousarray(rgb_float, dtype=np.float32).view(np.uint32)
    out = np.empty(bits.shape + (3,), dtype=np.uint8)
    out[..., 0] = (bits >> 16) & 0xFF
    out[..., 1] = (bits >> 8) & 0xFF
    out[..., 2] = bits & 0xFF
    return out


def make_point_cloud(xyz: np.ndarray, rgb: np.ndarray | None, header: Header | None) -> PointCloud2:
    """Organized ``(H, W)`` PointCloud2 with float32 x, y, z (+ packed rgb), point_step 16, is_dense False.

    Invalid points stay NaN (organized clouds keep one point per pixel so consumers can index by pixel).
    Without ``rgb`` the rgb field is omitted but the 16-byte point step is kept for alignment.  Built from
    one structured array and one bulk copy (~10 ms for 1280x720 on the project machines).
    """
    p = np.asarray(xyz, dtype=np.float32)
    if p.ndim != 3 or p.shape[2] != 3:
        raise ValueError(f"xyz must be (H, W, 3), got shape {p.shape}")
    h, w = int(p.shape[0]), int(p.shape[1])
    dtype = _XYZ_DTYPE if rgb is None else _XYZRGB_DTYPE
    cloud = np.empty((h, w), dtype=dtype)
    if rgb is None:
        # Deterministic bytes in the padding (np.empty would leak whatever memory held before).
        cloud.view(np.uint8).reshape(h, w, _POINT_STEP)[..., 12:] = 0
    cloud["x"] = p[..., 0]
    cloud["y"] = p[..., 1]
    cloud["z"] = p[..., 2]
    fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate(("x", "y", "z"))
    ]
    if rgb is not None:
        c = np.asarray(rgb)
        if c.shape != (h, w, 3):
            raise ValueError(f"rgb shape {c.shape} != ({h}, {w}, 3)")
        cloud["rgb"] = pack_rgb(c)
        fields.append(PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1))
    msg = PointCloud2()
    msg.header = _header(header)
    msg.height = h
    msg.width = w
    msg.fields = fields
    msg.is_bigendian = False  # the dtype above is explicitly little-endian, whatever the host
    msg.point_step = _POINT_STEP
    msg.row_step = _POINT_STEP * w
    msg.is_dense = False
    msg.data = to_byte_array(cloud)
    return msg


def point_cloud_to_numpy(msg: PointCloud2) -> np.ndarray:
    """Decode a PointCloud2 into an ``(H, W)`` structured array with one named field per PointField.

    Honours ``point_step``/``row_step`` padding and ``is_bigendian``; returns native byte order.  Meant for
    tests and tools (sensor_msgs_py is not on PyPI).
    """
    h, w = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for fld in msg.fields:
        try:
            base = _POINTFIELD_DTYPES[int(fld.datatype)]
        except KeyError:
            raise ValueError(f"PointField {fld.name!r} has unknown datatype {fld.datatype}") from None
        base = base.newbyteorder(order) if base.itemsize > 1 else base
        count = int(fld.count) if fld.count else 1
        names.append(fld.name)
        formats.append(base if count == 1 else (base, (count,)))
        offsets.append(int(fld.offset))
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    native = dtype.newbyteorder("=")  # applies to every field
    if h <= 0 or w <= 0:
        return np.empty((max(h, 0), max(w, 0)), dtype=native)
    if row_step < w * point_step:
        raise ValueError(f"PointCloud2 row_step {row_step} < width {w} * point_step {point_step}")
    if len(msg.data) < row_step * h:
        raise ValueError(f"PointCloud2 data has {len(msg.data)} bytes < row_step {row_step} * height {h}")
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=row_step * h).reshape(h, row_step)
    # Last axis contiguous: viewing it as point_step-byte records is zero-copy even with row padding.
    cloud = raw[:, : w * point_step].view(dtype)
    return cloud.astype(native) if native != dtype else cloud


def make_label_info(class_names: Sequence[str], stamp: Time | None = None, threshold: float = 0.0) -> Any:
    """A :data:`LABEL_INFO_TYPE` for a segmentation model whose label image holds ``class_names``' indices.

    ``class_map[i]`` is ``(class_id=i, class_name=class_names[i])``: the value ``i`` in the label image means
    that class. ``threshold`` is the confidence cut the model applied (0: every pixel gets its arg-max
    class). The header carries only ``stamp``: the label set belongs to the model, not to a camera frame.
    No class colours: vision_msgs has no field for them.
    """
    if len(class_names) > 65535:  # 65535 is vision_msgs' UNLABELED id
        raise ValueError(f"{len(class_names)} classes do not fit uint16 class ids below 65535")
    msg = LABEL_INFO_TYPE()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.class_map = [VISION_CLASS_TYPE(class_id=i, class_name=str(n)) for i, n in enumerate(class_names)]
    msg.threshold = float(threshold)
    return msg


def make_camera_info(
    side: dict[str, Any], width: int, height: int, header: Header | None, distortion_model: str = "plumb_bob"
) -> CameraInfo:
    """One CameraInfo from a side of :func:`camera_info_matrices` (keys ``k``, ``r``, ``p``, ``d``)."""
    msg = CameraInfo()
    msg.header = _header(header)
    msg.width = int(width)
    msg.height = int(height)
    msg.distortion_model = distortion_model
    msg.d = [float(x) for x in np.asarray(side["d"], dtype=np.float64).ravel()]
    msg.k = np.asarray(side["k"], dtype=np.float64).reshape(9)
    msg.r = np.asarray(side["r"], dtype=np.float64).reshape(9)
    msg.p = np.asarray(side["p"], dtype=np.float64).reshape(12)
    return msg


def make_camera_info_pair(
    width: int,
    height: int,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    baseline: float,
    frame_id: str = "",
    *,
    cx_right: float | None = None,
    header: Header | None = None,
    right_frame_id: str | None = None,
) -> tuple[CameraInfo, CameraInfo]:
    """Left/right CameraInfo for an ideal rectified pair (``P_right[0,3] = -fx * baseline``).

    ``header`` supplies the stamp (its frame_id is replaced by ``frame_id`` / ``right_frame_id``), so a
    synthetic pair can be stamped like the images it accompanies.
    """
    mats = camera_info_matrices(width, height, fx, fy, cx, cy, baseline, frame_id, cx_right=cx_right)
    stamp_src = _header(header)
    infos = []
    for side, fid in (("left", frame_id), ("right", frame_id if right_frame_id is None else right_frame_id)):
        hdr = Header()
        hdr.stamp = stamp_src.stamp
        hdr.frame_id = fid
        infos.append(
            make_camera_info(mats[side], mats["width"], mats["height"], hdr, mats["distortion_model"])
        )
    return infos[0], infos[1]


def camera_info_pair_from_camera(
    camera: StereoCamera, header: Header | None = None, right_frame_id: str | None = None
) -> tuple[CameraInfo, CameraInfo]:
    """CameraInfo pair describing an existing :class:`StereoCamera` (inverse of ``from_camera_info``)."""
    return make_camera_info_pair(
        camera.width,
        camera.height,
        camera.fx,
        camera.fy,
        camera.cx,
        camera.cy,
        camera.baseline,
        camera.frame_id,
        cx_right=camera.cx_right,
        header=header,
        right_frame_id=right_frame_id,
    )
