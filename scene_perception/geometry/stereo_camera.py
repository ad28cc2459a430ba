"""Rectified stereo camera model: disparity <-> depth <-> 3-D points (pure numpy, no ROS imports).

The model follows the ROS ``sensor_msgs/CameraInfo`` conventions for a *rectified* horizontal stereo pair,
so that the same numbers a ROS driver publishes can be used here without translation::

    P_left  = [fx  0  cx   Tx_l]        P_right = [fx  0  cx_r  Tx_r]
              [ 0 fy  cy   0   ]                  [ 0 fy  cy    0   ]
              [ 0  0   1   0   ]                  [ 0  0   1    0   ]

with ``Tx_l = 0`` (normally) and ``Tx_r = -fx * B`` where ``B > 0`` is the baseline in metres.

Sign of the principal-point offset (``doffs``)
----------------------------------------------
Project a point ``(X, Y, Z)`` given in the left optical frame through both matrices::

    x_l = fx * X / Z + cx
    x_r = (fx * X - fx * B) / Z + cx_r  =  fx * X / Z + cx_r - fx * B / Z

With the stereo-matcher convention ``d = x_l - x_r`` (a left pixel ``x`` matches the right pixel ``x - d``)::

    d = fx * B / Z + (cx - cx_r)     =>     Z = fx * B / (d + doffs),   doffs = cx_r - cx

This is exactly the Middlebury ``calib.txt`` convention (``doffs = cx1 - cx0``, camera 1 = right).  When the
rectification put both principal points in the same column (the usual ROS / OpenCV ``alpha`` default),
``doffs == 0``.  Depth is only positive where ``d + doffs > 0``; other pixels are reported as invalid (NaN).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CAMERA_ERROR_KINDS", "CameraModelError", "StereoCamera", "camera_info_matrices"]

# Relative tolerance when comparing focal lengths / rows of the left and right projection matrices. The
# values come from a calibration file printed with a few decimals, so exact equality is too strict.
_REL_TOL = 1e-4


class CameraModelError(ValueError):
    """The calibration does not describe a usable rectified horizontal stereo pair.

    ``kind`` is a short, stable reason code (``nonfinite``, ``bad_focal``, ``no_baseline`` ...; see
    :data:`CAMERA_ERROR_KINDS`) so that a node can count each kind of bad calibration separately in its
    diagnostics and throttle their warnings independently; the message stays the human explanation.
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


#: Every ``CameraModelError.kind`` this module raises, with what it means.
CAMERA_ERROR_KINDS: dict[str, str] = {
    "invalid": "any other inconsistency (unused by the calibration checks)",
    "p_size": "a projection matrix without 12 values",
    "nonfinite": "NaN or inf in a projection matrix or a camera parameter",
    "bad_size": "image size zero",
    "size_mismatch": "left and right camera_info sizes differ",
    "uncalibrated": "a projection matrix that is all zeros",
    "bad_focal": "fx or fy <= 0",
    "focal_mismatch": "left and right focal lengths differ (not a rectified pair)",
    "rows_misaligned": "left and right cy differ (rows not aligned)",
    "vertical_offset": "Ty = P[1,3] != 0 (vertical stereo)",
    "no_baseline": "both P[0,3] are 0",
    "bad_baseline": "baseline <= 0 (left/right swapped?)",
    "bad_scale": "a non-positive or non-finite scale factor",
    "bad_shape": "a disparity array that is not 2-D",
}


def _as_projection(p: Sequence[float] | npt.ArrayLike, side: str) -> np.ndarray:
    """Return a 3x4 float64 projection matrix from a flat 12-vector (CameraInfo.p) or a 3x4 array."""
    arr = np.asarray(p, dtype=np.float64)
    if arr.size != 12:
        raise CameraModelError(
            f"{side} camera_info P has {arr.size} values, expected 12 (3x4 row-major projection matrix)",
            "p_size",
        )
    arr = arr.reshape(3, 4)
    if not np.all(np.isfinite(arr)):
        rows, cols = np.nonzero(~np.isfinite(arr))
        bad = ", ".join(f"P[{r},{c}]={arr[r, c]}" for r, c in zip(rows, cols, strict=True))
        raise CameraModelError(f"{side} camera_info P contains non-finite values: {bad}", "nonfinite")
    return arr


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=1e-9)


@dataclass(frozen=True)
class StereoCamera:
    """Intrinsics of a rectified horizontal stereo pair, expressed in the left camera's optical frame.

    ``cx_right`` is kept separately from ``cx`` because rectification may shift the principal points
    differently (see the module docstring for the resulting ``doffs`` term).  Images are assumed to be the
    rectified images the projection matrices describe (``width`` x ``height`` pixels).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    cx_right: float
    baseline: float
    frame_id: str = ""

    def __post_init__(self) -> None:
        # Validate eagerly: a bad model would otherwise surface as NaN/inf depth far away from the cause.
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise CameraModelError(
                f"camera image size is {self.width}x{self.height}: width and height must be > 0 "
                "(is camera_info filled in?)",
                "bad_size",
            )
        for name in ("fx", "fy", "cx", "cy", "cx_right", "baseline"):
            if not math.isfinite(float(getattr(self, name))):
                raise CameraModelError(f"camera {name} is not finite: {getattr(self, name)}", "nonfinite")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraModelError(
                f"camera focal length must be > 0, got fx={self.fx}, fy={self.fy} "
                "(is the camera_info P matrix filled in?)",
                "bad_focal",
            )
        if self.baseline <= 0:
            raise CameraModelError(
                f"stereo baseline must be > 0 metres, got {self.baseline} "
                "(are the left and right camera_info swapped?)",
                "bad_baseline",
            )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_projection_matrices(
        cls,
        p_left: Sequence[float] | npt.ArrayLike,
        p_right: Sequence[float] | npt.ArrayLike,
        width: int,
        height: int,
        frame_id: str = "",
    ) -> StereoCamera:
        """Build the model from the two rectified projection matrices (ROS ``CameraInfo.p``, 12 values each).

        The baseline is ``(Tx_l - Tx_r) / fx``, which reduces to the ROS rule ``-P_right[0,3] / P_right[0,0]``
        for the usual ``Tx_l = 0``; using the difference keeps rigs whose left camera is not the reference
        frame of the calibration correct.
        """
        pl = _as_projection(p_left, "left")
        pr = _as_projection(p_right, "right")
        if int(width) <= 0 or int(height) <= 0:
            raise CameraModelError(
                f"camera_info size is {width}x{height}: width and height must be > 0 "
                "(is camera_info filled in?)",
                "bad_size",
            )
        if not np.any(pl):
            raise CameraModelError(
                "left camera_info P is all zeros: the camera is not calibrated", "uncalibrated"
            )
        if not np.any(pr):
            raise CameraModelError(
                "right camera_info P is all zeros: the camera is not calibrated", "uncalibrated"
            )
        fx, fy, cx, cy = pl[0, 0], pl[1, 1], pl[0, 2], pl[1, 2]
        fx_r, fy_r, cx_r, cy_r = pr[0, 0], pr[1, 1], pr[0, 2], pr[1, 2]
        if fx <= 0 or fy <= 0:
            raise CameraModelError(
                f"left camera_info P has fx={fx}, fy={fy}: focal lengths must be > 0", "bad_focal"
            )
        if fx_r <= 0 or fy_r <= 0:
            raise CameraModelError(
                f"right camera_info P has fx={fx_r}, fy={fy_r}: focal lengths must be > 0", "bad_focal"
            )
        if not _close(fx, fx_r) or not _close(fy, fy_r):
            raise CameraModelError(
                f"left and right focal lengths differ (left fx={fx}, fy={fy}; right fx={fx_r}, fy={fy_r}): "
                "the images are not a rectified pair (use the rectified P, not K)",
                "focal_mismatch",
            )
        if not _close(cy, cy_r):
            raise CameraModelError(
                f"left cy={cy} and right cy={cy_r} differ: rows are not aligned, the pair is not rectified "
                "for horizontal stereo",
                "rows_misaligned",
            )
        if pl[1, 3] != 0 or pr[1, 3] != 0:
            raise CameraModelError(
                f"camera_info P[1,3] (Ty) is left={pl[1, 3]}, right={pr[1, 3]}: "
                "vertical stereo is not supported",
                "vertical_offset",
            )
        if pr[0, 3] == 0 and pl[0, 3] == 0:
            raise CameraModelError(
                "right camera_info P[0,3] is 0: no baseline; "
                "is this really the right camera of a rectified pair?",
                "no_baseline",
            )
        baseline = float((pl[0, 3] - pr[0, 3]) / fx)
        if baseline <= 0:
            raise CameraModelError(
                f"baseline from camera_info P[0,3] is {baseline:.6g} m "
                f"(left Tx={pl[0, 3]}, right Tx={pr[0, 3]}): "
                "it must be > 0; are the left and right camera_info swapped?",
                "bad_baseline",
            )
        return cls(
            width=int(width),
            height=int(height),
            fx=float(fx),
            fy=float(fy),
            cx=float(cx),
            cy=float(cy),
            cx_right=float(cx_r),
            baseline=baseline,
            frame_id=str(frame_id),
        )

    @classmethod
    def from_camera_info(cls, left_info: Any, right_info: Any) -> StereoCamera:
        """Build the model from two ``sensor_msgs/CameraInfo``-like objects (duck-typed, no ROS import).

        Uses ``.p``, ``.width``, ``.height`` and ``.header.frame_id`` (the left one: points are expressed in
        the left optical frame).
        """
        if (left_info.width, left_info.height) != (right_info.width, right_info.height):
            raise CameraModelError(
                f"left camera_info is {left_info.width}x{left_info.height} but right is "
                f"{right_info.width}x{right_info.height}: a rectified pair must have equal sizes",
                "size_mismatch",
            )
        header = getattr(left_info, "header", None)
        frame_id = getattr(header, "frame_id", "") if header is not None else ""
        return cls.from_projection_matrices(
            left_info.p, right_info.p, int(left_info.width), int(left_info.height), frame_id
        )

    # ------------------------------------------------------------------ derived values
    @property
    def doffs(self) -> float:
        """Principal-point offset ``cx_right - cx`` (px) so that ``Z = fx * B / (d + doffs)``."""
        return self.cx_right - self.cx

    @property
    def focal_baseline(self) -> float:
        """``fx * B`` in px*m: the numerator of every disparity/depth conversion."""
        return self.fx * self.baseline

    def projection_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(P_left, P_right)`` as 3x4 float64 arrays in the ROS CameraInfo convention."""
        pl = np.array([[self.fx, 0.0, self.cx, 0.0], [0.0, self.fy, self.cy, 0.0], [0.0, 0.0, 1.0, 0.0]])
        pr = pl.copy()
        pr[0, 2] = self.cx_right
        pr[0, 3] = -self.fx * self.baseline
        return pl, pr

    # ------------------------------------------------------------------ conversions
    # disparity_to_depth, depth_std and points take numpy arrays or torch tensors (returned on the tensor's
    # device), one implementation for both: the stereo pipeline converts on the engine's device, so a GPU
    # frame is downloaded once, finished; offline tools pass numpy.  torch is never imported here (the
    # OpenCV-only SGBM node uses this module): a tensor brings its module along.

    def _valid_disparity(self, d: Any, min_disparity: float) -> Any:
        xp = _namespace(d)
        with np.errstate(invalid="ignore"):
            return xp.isfinite(d) & (d > min_disparity) & (d + self.doffs > 0)

    def disparity_to_depth(self, disparity: npt.ArrayLike, min_disparity: float = 0.0) -> np.ndarray:
        """Depth in metres (float32); NaN where the disparity is non-finite, ``<= min_disparity``, or would
        give a non-positive depth (``d + doffs <= 0``).

        NaN rather than 0 marks invalid pixels because that is what REP 118 depth images and PointCloud2
        consumers expect.
        """
        d = _float32(disparity)
        xp = _namespace(d)
        valid = self._valid_disparity(d, min_disparity)
        depth = np.float32(self.focal_baseline) / xp.where(valid, d + np.float32(self.doffs), np.float32(1.0))
        return xp.where(valid, depth, np.float32(np.nan))

    def depth_to_disparity(self, depth: npt.ArrayLike) -> np.ndarray:
        """Disparity in px (float32) for a depth in metres; NaN where the depth is non-finite or ``<= 0``."""
        z = np.asarray(depth, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(z) & (z > 0)
        zs = np.where(valid, z, np.float32(1.0))
        d = np.float32(self.focal_baseline) / zs - np.float32(self.doffs)
        return np.where(valid, d, np.float32(np.nan)).astype(np.float32, copy=False)

    def depth_std(
        self, disparity: npt.ArrayLike, disparity_std: npt.ArrayLike, min_disparity: float = 0.0
    ) -> np.ndarray:
        """First-order depth uncertainty (m, float32): ``|dZ/dd| * sigma_d = fx*B / (d + doffs)^2 * sigma_d``.

        Depth error grows quadratically with distance, so a constant disparity error is a poor proxy for
        depth quality; this propagates the per-pixel disparity std.  NaN where the depth is invalid.
        """
        d, sd = _float32(disparity), _float32(disparity_std)
        xp = _namespace(d)
        valid = self._valid_disparity(d, min_disparity)
        denom = xp.where(valid, d + np.float32(self.doffs), np.float32(1.0))
        std = np.float32(self.focal_baseline) / (denom * denom) * abs(sd)
        return xp.where(valid, std, np.float32(np.nan))

    def scaled(self, sx: float, sy: float) -> StereoCamera:
        """Model for the images resized by ``(sx, sy)`` (e.g. a network running at reduced resolution).

        Principal points use the pixel-centre convention of ``cv2.resize`` / ``F.interpolate``
        (``align_corners=False``): ``c' = (c + 0.5) * s - 0.5``.  Disparities scale with ``sx``; the baseline
        is a physical length and does not change.
        """
        if not (sx > 0 and sy > 0 and math.isfinite(sx) and math.isfinite(sy)):
            raise CameraModelError(f"scale factors must be finite and > 0, got sx={sx}, sy={sy}", "bad_scale")
        return StereoCamera(
            width=max(1, round(self.width * sx)),
            height=max(1, round(self.height * sy)),
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            cx_right=(self.cx_right + 0.5) * sx - 0.5,
            baseline=self.baseline,
            frame_id=self.frame_id,
        )

    def points(self, disparity: npt.ArrayLike, min_disparity: float = 0.0) -> np.ndarray:
        """Back-project a left disparity map to ``(H, W, 3)`` float32 XYZ in the left optical frame
        (x right, y down, z forward; metres); NaN where the disparity is invalid.

        Pixel ``(u, v)`` is the column/row index of the array, i.e. pixel centres at integer coordinates as
        in the ROS/OpenCV projection model.
        """
        d = _float32(disparity)
        if d.ndim != 2:
            raise CameraModelError(f"disparity must be a 2-D (H, W) array, got shape {tuple(d.shape)}",
                                   "bad_shape")
        z = self.disparity_to_depth(d, min_disparity)
        h, w = d.shape
        u = (_arange_like(d, w) - np.float32(self.cx)) / np.float32(self.fx)
        v = (_arange_like(d, h) - np.float32(self.cy)) / np.float32(self.fy)
        return _namespace(d).stack([z * u[None, :], z * v[:, None], z], axis=-1)


def _namespace(x: Any) -> Any:
    """``numpy`` for arrays, ``torch`` for tensors: the functions used here have the same names in both."""
    return np if isinstance(x, np.ndarray) else sys.modules["torch"]


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _float32(x: Any) -> Any:
    """A float32 numpy array, or a float32 tensor on its own device."""
    return x.float() if _is_tensor(x) else np.asarray(x, dtype=np.float32)


def _arange_like(x: Any, n: int) -> Any:
    if _is_tensor(x):
        return sys.modules["torch"].arange(n, dtype=x.dtype, device=x.device)
    return np.arange(n, dtype=np.float32)


def camera_info_matrices(
    width: int,
    height: int,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    baseline: float,
    frame_id: str = "",
    cx_right: float | None = None,
) -> dict[str, Any]:
    """Flat CameraInfo arrays (``k``, ``r``, ``p``, ``d``) for an ideal rectified pair.

    Tests and the demo need a consistent pair of calibrations without a calibration file; keeping it here
    (pure numpy) lets both the geometry tests and ``ros/messages.py`` share one definition.  Returns::

        {"width", "height", "frame_id", "distortion_model",
         "left": {"k": (9,), "r": (9,), "p": (12,), "d": (5,)}, "right": {...}}

    with ``P_right[0,3] = -fx * baseline`` as ROS requires.
    """
    cxr = cx if cx_right is None else cx_right
    # Construct the camera first so invalid parameters fail here with the same messages as everywhere else.
    cam = StereoCamera(
        int(width),
        int(height),
        float(fx),
        float(fy),
        float(cx),
        float(cy),
        float(cxr),
        float(baseline),
        frame_id,
    )
    pl, pr = cam.projection_matrices()
    sides = {}
    for name, p in (("left", pl), ("right", pr)):
        sides[name] = {
            "k": p[:, :3].ravel().copy(),
            "r": np.eye(3).ravel(),
            "p": p.ravel().copy(),
            "d": np.zeros(5),
        }
    return {
        "width": cam.width,
        "height": cam.height,
        "frame_id": frame_id,
        "distortion_model": "plumb_bob",
        **sides,
    }
