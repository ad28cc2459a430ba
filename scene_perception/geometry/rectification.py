"""Rectify raw camera images with their ROS CameraInfo (K, D, R, P) as ``image_proc`` does (numpy, OpenCV).

Why this exists: a stereo rig's driver publishes *raw* images, distorted by the lens and not row-aligned
with the other camera; ``stereo_image_proc`` users run ``image_proc`` first. Without a ROS install there is
no ``image_proc`` (nor ``image_geometry``), so the nodes can rectify themselves. The numbers follow
``image_geometry::PinholeCameraModel`` (the library behind ``image_proc``):

* the map from a rectified pixel to the raw one is ``cv2.initUndistortRectifyMap(K, D, R, P)``
  (``plumb_bob`` and ``rational_polynomial``) or ``cv2.fisheye.initUndistortRectifyMap`` (``equidistant``),
  at the CameraInfo's ``width`` x ``height``, with fixed-point ``CV_16SC2`` maps (1/32 px steps; about
  twice as fast to remap as float maps) and ``INTER_LINEAR``, border black (NaN for float images);
* after rectification the image is in the frame of the rectified projection matrix ``P``. That is the
  frame :meth:`StereoCamera.from_projection_matrices` already assumes (it reads ``fx, fy, cx, cy, Tx`` from
  ``P`` only), so the stereo model built from the same CameraInfo stays right with no change.

Maps cost milliseconds to build (tens for 1080p), so :class:`Rectifier` builds them once per CameraInfo
*content* and only rebuilds when a calibration value changes (a driver re-sends the same CameraInfo with
every frame).

Not supported (refused with a :class:`RectificationError` naming the field, never silently wrong):
``binning_x``/``binning_y`` > 1 and a ``roi`` that is not the full image. ``image_geometry`` rescales K and P
for those, but the stereo model is built from the unscaled P, so accepting them here would make depth wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from scene_perception.geometry.stereo_camera import CameraModelError

__all__ = [
    "DISTORTION_MODELS",
    "RECTIFICATION_ERROR_KINDS",
    "RECTIFY_MODES",
    "RectificationError",
    "RectificationMaps",
    "Rectifier",
    "camera_info_key",
    "check_camera_info",
    "needs_rectification",
    "raw_from_rectified_maps",
    "rectification_maps",
    "remap",
    "topic_is_rectified",
]

#: ``rectify`` parameter values: ``off`` never touches the image (input is already rectified); ``on`` always
#: remaps it with the CameraInfo (input is raw); ``auto`` remaps when :func:`needs_rectification` says the
#: image is not already in the P frame (and the topic is not ``image_rect*``, see :class:`Rectifier`).
RECTIFY_MODES: tuple[str, ...] = ("auto", "on", "off")

#: ``CameraInfo.distortion_model`` values understood (``sensor_msgs/distortion_models.hpp``) and the number
#: of ``D`` coefficients each accepts. An empty D means no distortion; OpenCV's pinhole model takes 4, 5,
#: 8, 12 or 14 coefficients (ROS calibrations write 5 for plumb_bob, 8 for rational_polynomial), the
#: fisheye model exactly 4.
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (0, 4, 5, 8, 12, 14),
    "rational_polynomial": (0, 4, 5, 8, 12, 14),
    "equidistant": (0, 4),
}

#: Every ``RectificationError.kind`` (beyond those of ``CAMERA_ERROR_KINDS``) with what it means. A node
#: reports them as ``camera_info_<kind>``, like the stereo model's errors.
RECTIFICATION_ERROR_KINDS: dict[str, str] = {
    "bad_size": "camera_info width or height is 0 (rectification needs the calibrated image size)",
    "size_mismatch": "the image is not the size its camera_info was calibrated for",
    "nonfinite": "NaN or inf in K, D, R or P",
    "bad_matrix": "K without 9, R without 9 or P without 12 values",
    "uncalibrated": "K or P all zeros (an uncalibrated driver's camera_info)",
    "bad_focal": "fx or fy <= 0 in K or P",
    "bad_rotation": "R is not a rotation (all zeros when unset: a monocular camera uses the identity)",
    "bad_distortion_model": "distortion_model is not plumb_bob, rational_polynomial or equidistant",
    "bad_distortion": "D has a number of coefficients the distortion model does not take",
    "unsupported_binning": "binning_x or binning_y > 1",
    "unsupported_roi": "a roi that is not the full image",
    "bad_mode": "a rectify mode other than auto, on, off",
}

# R counts as the identity (and K as equal to P's left 3x3) within these: calibration files print 6-9
# decimals, and a rectified simulation camera writes exact values.
_IDENTITY_ATOL = 1e-6
_ROTATION_ATOL = 1e-3


class RectificationError(CameraModelError):
    """The CameraInfo cannot rectify this image; ``kind`` is a stable reason code (see
    :data:`RECTIFICATION_ERROR_KINDS`).

    A subclass of :class:`CameraModelError` so that a node which already turns camera model errors into
    ``camera_info_<kind>`` rejections handles these with the same ``except`` clause.
    """


@dataclass(frozen=True)
class RectificationMaps:
    """The two ``cv2.remap`` maps of one calibration: rectified pixel -> raw pixel, ``width`` x ``height``."""

    map1: np.ndarray
    map2: np.ndarray | None
    width: int
    height: int


def _side(side: str) -> str:
    return f"{side} camera_info" if side else "camera_info"


def _matrix(info: Any, name: str, size: int, shape: tuple[int, int], side: str) -> np.ndarray:
    values = np.asarray(getattr(info, name), dtype=np.float64).ravel()
    if values.size != size:
        raise RectificationError(
            f"{_side(side)} {name.upper()} has {values.size} values, expected {size}", "bad_matrix"
        )
    if not np.all(np.isfinite(values)):
        raise RectificationError(
            f"{_side(side)} {name.upper()} has NaN or inf: {values.tolist()}", "nonfinite"
        )
    return values.reshape(shape)


def _distortion(info: Any, side: str) -> tuple[str, np.ndarray]:
    model = str(getattr(info, "distortion_model", ""))
    d = np.asarray(getattr(info, "d", ()), dtype=np.float64).ravel()
    if not np.all(np.isfinite(d)):
        raise RectificationError(f"{_side(side)} D has NaN or inf: {d.tolist()}", "nonfinite")
    if model not in DISTORTION_MODELS:
        if not np.any(d):
            # No coefficients to interpret: an empty model name with an empty / zero D is an ideal camera
            # (what some simulators publish), and reading it as such is exact.
            return "plumb_bob", d
        raise RectificationError(
            f"{_side(side)} distortion_model {model!r} is not supported "
            f"(supported: {', '.join(DISTORTION_MODELS)})",
            "bad_distortion_model",
        )
    if d.size not in DISTORTION_MODELS[model]:
        raise RectificationError(
            f"{_side(side)} distortion_model {model!r} takes "
            f"{' or '.join(str(n) for n in DISTORTION_MODELS[model] if n)} coefficients, D has {d.size}",
            "bad_distortion",
        )
    return model, d


@dataclass(frozen=True)
class _Calibration:
    """The validated numbers of one CameraInfo."""

    width: int
    height: int
    model: str
    d: np.ndarray
    k: np.ndarray
    r: np.ndarray
    p: np.ndarray


def _calibration(info: Any, side: str = "") -> _Calibration:
    width, height = int(getattr(info, "width", 0)), int(getattr(info, "height", 0))
    if width <= 0 or height <= 0:
        raise RectificationError(
            f"{_side(side)} size is {width}x{height}: rectification needs the calibrated image size",
            "bad_size",
        )
    for axis in ("x", "y"):
        binning = int(getattr(info, f"binning_{axis}", 0))
        if binning > 1:
            raise RectificationError(
                f"{_side(side)} binning_{axis} = {binning}: binned cameras are not supported "
                "(the stereo model reads the unbinned P)",
                "unsupported_binning",
            )
    roi = getattr(info, "roi", None)
    if roi is not None:
        x, y, w, h = (int(getattr(roi, f)) for f in ("x_offset", "y_offset", "width", "height"))
        if (x, y) != (0, 0) or (w, h) not in ((0, 0), (width, height)):
            raise RectificationError(
                f"{_side(side)} roi is x={x} y={y} {w}x{h} in a {width}x{height} image: only the full "
                "image is supported",
                "unsupported_roi",
            )
    model, d = _distortion(info, side)
    k = _matrix(info, "k", 9, (3, 3), side)
    r = _matrix(info, "r", 9, (3, 3), side)
    p = _matrix(info, "p", 12, (3, 4), side)
    for name, m in (("K", k), ("P", p)):
        if not np.any(m):
            raise RectificationError(
                f"{_side(side)} {name} is all zeros: the camera is not calibrated (an uncalibrated driver "
                "publishes zeros); run camera_calibration or set rectify: off",
                "uncalibrated",
            )
        if m[0, 0] <= 0 or m[1, 1] <= 0:
            raise RectificationError(
                f"{_side(side)} {name} has fx={m[0, 0]}, fy={m[1, 1]}: focal lengths must be > 0", "bad_focal"
            )
    if not np.any(r):
        raise RectificationError(
            f"{_side(side)} R is all zeros (unset): a monocular or already rectified camera has the identity",
            "bad_rotation",
        )
    if not np.allclose(r @ r.T, np.eye(3), atol=_ROTATION_ATOL) or np.linalg.det(r) <= 0:
        raise RectificationError(
            f"{_side(side)} R is not a rotation matrix (R R^T != I or det <= 0): {r.ravel().tolist()}",
            "bad_rotation",
        )
    return _Calibration(width, height, model, d, k, r, p)


def check_camera_info(info: Any, side: str = "") -> None:
    """Raise :class:`RectificationError` unless ``info`` can rectify an image (see the module docstring).

    ``info`` is duck-typed: anything with ``width``, ``height``, ``distortion_model``, ``d``, ``k``, ``r``,
    ``p`` (and optionally ``binning_x``, ``binning_y``, ``roi``) as ``sensor_msgs/CameraInfo`` has them.
    ``side`` ("left", "right") starts the messages.
    """
    _calibration(info, side)


def camera_info_key(info: Any) -> tuple:
    """A hashable summary of everything in ``info`` the maps depend on (not the header).

    Two CameraInfos with equal keys give identical maps; it is what the map cache compares, because a
    driver re-publishes an equal CameraInfo with every frame and ``sensor_msgs`` messages are not hashable.
    """
    roi = getattr(info, "roi", None)
    roi_key = (
        tuple(int(getattr(roi, f)) for f in ("x_offset", "y_offset", "width", "height"))
        if roi is not None
        else ()
    )

    def values(name: str) -> tuple[float, ...]:
        return tuple(np.asarray(getattr(info, name, ()), dtype=np.float64).ravel().tolist())

    return (
        int(getattr(info, "width", 0)),
        int(getattr(info, "height", 0)),
        str(getattr(info, "distortion_model", "")),
        values("d"),
        values("k"),
        values("r"),
        values("p"),
        int(getattr(info, "binning_x", 0)),
        int(getattr(info, "binning_y", 0)),
        roi_key,
    )


def _needs(cal: _Calibration) -> bool:
    return bool(
        np.any(cal.d)
        or not np.allclose(cal.r, np.eye(3), rtol=0.0, atol=_IDENTITY_ATOL)
        or not np.allclose(cal.k, cal.p[:, :3], rtol=0.0, atol=_IDENTITY_ATOL)
    )


def needs_rectification(info: Any, side: str = "") -> bool:
    """Whether an image described by ``info`` is *not* already in the frame of its rectified ``P``.

    True when any D coefficient is non-zero, when R is not the identity, or when K differs from P's left
    3x3 (a rectified camera matrix that moved the principal point or changed the focal length). This is
    what ``rectify: auto`` uses. ``image_proc``'s rectify node checks D alone and passes an image with a
    zero D through unchanged; that is right for one camera but leaves a stereo camera with a zero D and a
    rectifying R (or K != P) unaligned, so the two extra conditions are deliberate. A calibration-less
    CameraInfo (K or P all zeros) is not "already rectified" but invalid: it raises
    :class:`RectificationError` (``uncalibrated``), as do the other checks of :func:`check_camera_info`.
    """
    return _needs(_calibration(info, side))


def rectification_maps(info: Any, side: str = "", *, fixed_point: bool = True) -> RectificationMaps:
    """Build the ``cv2.remap`` maps that take a raw image of ``info``'s camera to the rectified P frame.

    ``fixed_point`` gives ``CV_16SC2`` + ``CV_16UC1`` maps (what ``image_geometry`` uses: fast, 1/32 px
    interpolation steps); ``False`` gives two ``CV_32FC1`` maps (x, y), exact, for tests and analysis.
    Uncached: use :class:`Rectifier` per frame.
    """
    cal = _calibration(info, side)
    size = (cal.width, cal.height)
    m1type = cv2.CV_16SC2 if fixed_point else cv2.CV_32FC1
    if cal.model == "equidistant" and cal.d.size:
        map1, map2 = cv2.fisheye.initUndistortRectifyMap(
            cal.k, cal.d.reshape(4, 1), cal.r, cal.p, size, m1type
        )
    else:
        d = cal.d if cal.d.size else np.zeros(5)
        map1, map2 = cv2.initUndistortRectifyMap(cal.k, d, cal.r, cal.p, size, m1type)
    return RectificationMaps(map1, map2, cal.width, cal.height)


def _undistort_points(cal: _Calibration, points: np.ndarray) -> np.ndarray:
    """Raw pixel coordinates (N, 1, 2) -> rectified ones, iterated to convergence (not OpenCV's 5 steps)."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9)
    if cal.model == "equidistant" and cal.d.size:
        return cv2.fisheye.undistortPoints(
            points, cal.k, cal.d.reshape(4, 1), R=cal.r, P=cal.p, criteria=criteria
        )
    d = cal.d if cal.d.size else np.zeros(5)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x; 5.x folded the criteria into undistortPoints
        return cv2.undistortPointsIter(points, cal.k, d, cal.r, cal.p, criteria)
    return cv2.undistortPoints(points, cal.k, d, R=cal.r, P=cal.p, criteria=criteria)


def raw_from_rectified_maps(info: Any, side: str = "") -> RectificationMaps:
    """The inverse of :func:`rectification_maps`: float maps that turn a *rectified* image into the raw one.

    For simulation and tests (render an ideal rectified pair, then see it as the real lenses would), not for
    the nodes. Built by undistorting every raw pixel centre with the iterative point undistortion, so it is
    as accurate as that converges (well below 0.01 px for ordinary lenses); raw pixels that see outside the
    rectified image come out black.
    """
    cal = _calibration(info, side)
    xs, ys = np.meshgrid(np.arange(cal.width, dtype=np.float64), np.arange(cal.height, dtype=np.float64))
    raw = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
    rect = _undistort_points(cal, raw).reshape(cal.height, cal.width, 2).astype(np.float32)
    return RectificationMaps(
        np.ascontiguousarray(rect[..., 0]), np.ascontiguousarray(rect[..., 1]), cal.width, cal.height
    )


def _check_size(image: np.ndarray, width: int, height: int, side: str) -> None:
    if image.shape[:2] != (height, width):
        raise RectificationError(
            f"{side + ' ' if side else ''}image is {image.shape[1]}x{image.shape[0]} but its camera_info is "
            f"calibrated for {width}x{height}",
            "size_mismatch",
        )


def remap(image: np.ndarray, maps: RectificationMaps, side: str = "") -> np.ndarray:
    """``cv2.remap`` with ``INTER_LINEAR`` of an (H, W) or (H, W, C) image through ``maps``.

    The image must be the maps' size (a camera_info for another resolution would rectify with the wrong
    centre and scale): :class:`RectificationError` ``size_mismatch`` otherwise. Pixels that map outside the
    source become 0, or NaN for float images (so a depth consumer does not read them as real values).
    """
    _check_size(image, maps.width, maps.height, side)
    border = float("nan") if np.issubdtype(image.dtype, np.floating) else 0
    return cv2.remap(
        image, maps.map1, maps.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )


#: Image topic base names that by ROS convention already carry rectified images (``image_proc`` outputs).
_RECTIFIED_TOPIC_PREFIXES: Sequence[str] = ("image_rect",)


def topic_is_rectified(topic: str) -> bool:
    """Whether a topic's last name says its images are rectified (``image_rect``, ``image_rect_color``).

    ``image_proc`` republishes the camera's CameraInfo unchanged next to its rectified images, so its D and
    R still describe the raw lens: ``rectify: auto`` judging by the CameraInfo alone would rectify those
    images a second time. The topic name is the only signal that they already are.
    """
    name = topic.rstrip("/").rsplit("/", 1)[-1]
    return any(name.startswith(prefix) for prefix in _RECTIFIED_TOPIC_PREFIXES)


class Rectifier:
    """Rectify one camera's frames with its CameraInfo, building the maps once per calibration.

    One instance per camera (left, right); not thread-safe (a node's image callback runs on one thread).

    * ``mode="off"``: :meth:`rectify` returns the image itself, untouched and unchecked.
    * ``mode="on"``: the input is raw; every frame is remapped (the CameraInfo must be valid).
    * ``mode="auto"``: remapped when :func:`needs_rectification` is true, unless ``image_topic`` is an
      ``image_rect*`` topic (:func:`topic_is_rectified`), which is taken as already rectified. An invalid
      CameraInfo raises in ``auto`` too: the stereo model built from it would be wrong either way.

    ``builds`` counts map builds, so a test (or a diagnostic) can see that an unchanged CameraInfo is not
    rebuilt; ``active`` says whether the last frame was remapped.
    """

    def __init__(self, mode: str = "auto", side: str = "", image_topic: str | None = None) -> None:
        if mode not in RECTIFY_MODES:
            raise RectificationError(
                f"rectify mode {mode!r} is not one of {', '.join(RECTIFY_MODES)}", "bad_mode"
            )
        self.mode = mode
        self.side = side
        self.image_topic = image_topic
        self.builds = 0
        self.active = False
        self._key: tuple | None = None
        self._maps: RectificationMaps | None = None

    def _update(self, info: Any) -> None:
        key = camera_info_key(info)
        if key == self._key:
            return
        # Validate before remembering the key, so a bad CameraInfo raises on every frame, not just the first.
        want = self.mode == "on" or _needs(_calibration(info, self.side))
        self._maps = rectification_maps(info, self.side) if want else None
        if want:
            self.builds += 1
        self._key = key

    def rectify(self, image: np.ndarray, info: Any) -> np.ndarray:
        """``image`` in the rectified P frame of ``info``; the same array when nothing needs doing.

        Raises :class:`RectificationError` for an invalid CameraInfo or an image of another size.
        """
        if self.mode == "off" or (
            self.mode == "auto" and self.image_topic is not None and topic_is_rectified(self.image_topic)
        ):
            # Nothing to undo: the stereo model built from P checks what the matcher needs (a rectified
            # stream's CameraInfo may leave width/height 0, which rectification itself could not accept).
            self.active = False
            return image
        self._update(info)
        if self._maps is None:
            _check_size(image, int(info.width), int(info.height), self.side)
            self.active = False
            return image
        self.active = True
        return remap(image, self._maps, self.side)

    def reset(self) -> None:
        """Forget the cached maps (a node's cleanup / reconfigure)."""
        self._key, self._maps, self.active = None, None, False
