"""Rectification of raw camera images with their CameraInfo (geometry/rectification.py).

The truth is built, not assumed: an ideal rectified pair (the procedural renderer, or an anti-aliased
checkerboard whose corner positions are known exactly) is *distorted* with a known K, D, R through the
inverse maps, as a real lens would see it, and rectification must give the ideal pair back. Where the
opencv-doc chessboard pairs are on disk (``tools/fetch_eval_data.sh``), a real stereo calibration is made
from them and its rectified images must have row-aligned corners.

Bounds (measured values in brackets, on OpenCV 5.1):
* maps: rectify then un-rectify a pixel: back within 0.01 px (0.0007 plumb_bob, 0.002 rational,
  0.0006 fisheye);
* image: rectified(distorted(ideal)) vs ideal, PSNR > 38 dB in the region both maps cover (43.2-43.7 dB:
  two bilinear resamplings); the distorted image alone scores < 25 dB against the ideal one;
* synthetic checkerboard: left/right corner rows differ by < 0.1 px after rectification (0.039), > 5 px
  before (17.8), and corners land within 0.15 px of their true rectified position (0.067);
* real calibration (opencv-doc, 13 pairs, stereoCalibrate rms 0.48 px): mean row difference < 0.5 px (0.22),
  > 5 px raw (12.8); corners found in the rectified image agree with the same corners found in the raw
  image and moved by point undistortion: median < 0.1 px (0.05).
"""

from __future__ import annotations

import glob
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.geometry.rectification import (
    RECTIFICATION_ERROR_KINDS,
    RectificationError,
    Rectifier,
    camera_info_key,
    check_camera_info,
    needs_rectification,
    raw_from_rectified_maps,
    rectification_maps,
    remap,
    topic_is_rectified,
)
from scene_perception.geometry.stereo_camera import CameraModelError, StereoCamera, camera_info_matrices

REPO = Path(__file__).resolve().parents[1]
CHESSBOARD = REPO / ".cache" / "eval" / "chessboard"

W, H = 640, 480
F = 0.8 * W
CX, CY = (W - 1) / 2.0, (H - 1) / 2.0
BASELINE = 0.12
P_LEFT = np.array([[F, 0, CX, 0], [0, F, CY, 0], [0, 0, 1, 0]])
P_RIGHT = P_LEFT.copy()
P_RIGHT[0, 3] = -F * BASELINE

# Lenses as a calibration would report them (typical magnitudes for a ~65 degree lens).
LENSES = {
    "plumb_bob": [-0.28, 0.09, 0.0008, -0.0006, -0.01],
    "rational_polynomial": [0.3, -0.1, 0.001, 0.0005, 0.02, 0.65, -0.05, 0.05],
    "equidistant": [0.05, -0.01, 0.003, -0.001],
}


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    return cv2.Rodrigues(np.deg2rad([rx, ry, rz]))[0]


def info(
    model: str = "plumb_bob",
    d: list[float] | None = None,
    k: np.ndarray | None = None,
    r: np.ndarray | None = None,
    p: np.ndarray = P_LEFT,
    width: int = W,
    height: int = H,
) -> CameraInfo:
    """A real sensor_msgs/CameraInfo (the module is duck-typed, the node passes these)."""
    msg = CameraInfo(width=width, height=height, distortion_model=model)
    msg.d = list(LENSES[model] if d is None else d)
    msg.k = (
        np.array([[F * 1.04, 0, CX + 6.5], [0, F * 1.03, CY - 4.2], [0, 0, 1]]) if k is None else k
    ).ravel()
    msg.r = (rotation(1.5, -2.0, 0.7) if r is None else r).ravel()
    msg.p = np.asarray(p, dtype=np.float64).ravel()
    return msg


def ideal(side: str = "left") -> CameraInfo:
    """An already rectified camera, as camera_info_matrices (and a simulator) describe it."""
    cal = camera_info_matrices(W, H, F, F, CX, CY, BASELINE)
    msg = CameraInfo(width=W, height=H, distortion_model=cal["distortion_model"])
    msg.d, msg.k, msg.r, msg.p = list(cal[side]["d"]), cal[side]["k"], cal[side]["r"], cal[side]["p"]
    return msg


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    diff = a.astype(np.float64)[mask] - b.astype(np.float64)[mask]
    return float(10 * np.log10(255.0**2 / np.mean(diff**2)))


# ---------------------------------------------------------------------------------------------- decisions
def test_ideal_camera_needs_nothing() -> None:
    assert not needs_rectification(ideal("left"))
    assert not needs_rectification(ideal("right"))


@pytest.mark.parametrize(
    "change",
    [
        {"d": [0, 0, 0, 0, 1e-9]},  # any non-zero D, as image_proc judges it
        {"r": rotation(0, 0.05, 0)},  # zero D but a rectifying rotation (image_proc would pass it through)
        {"k": np.array([[F, 0, CX + 1.0], [0, F, CY], [0, 0, 1]])},  # K != P's 3x3: a new camera matrix
    ],
)
def test_needs_rectification(change: dict) -> None:
    base = {"d": [0.0] * 5, "k": P_LEFT[:, :3], "r": np.eye(3)}
    base.update(change)
    assert needs_rectification(info(**base))


@pytest.mark.parametrize(
    ("change", "kind", "message"),
    [
        ({"k": np.zeros((3, 3))}, "uncalibrated", "K is all zeros: the camera is not calibrated"),
        ({"p": np.zeros((3, 4))}, "uncalibrated", "P is all zeros"),
        ({"r": np.zeros((3, 3))}, "bad_rotation", "R is all zeros"),
        ({"r": np.diag([1.0, 1.0, 2.0])}, "bad_rotation", "not a rotation matrix"),
        ({"model": "fisheye", "d": [0.1, 0, 0, 0]}, "bad_distortion_model", "'fisheye' is not supported"),
        ({"model": "equidistant", "d": [0.1, 0, 0, 0, 0]}, "bad_distortion", "takes 4 coefficients, D has 5"),
        ({"d": [0.1, 0.0, 0.0]}, "bad_distortion", "D has 3"),
        ({"d": [np.nan, 0, 0, 0, 0]}, "nonfinite", "D has NaN"),
        ({"width": 0}, "bad_size", "size is 0x480"),
        ({"k": -np.eye(3)}, "bad_focal", "K has fx=-1.0"),
    ],
)
def test_invalid_camera_info(change: dict, kind: str, message: str) -> None:
    msg = info(**change)
    with pytest.raises(RectificationError, match=message) as exc:
        needs_rectification(msg, "left")
    assert exc.value.kind == kind and kind in RECTIFICATION_ERROR_KINDS
    assert str(exc.value).startswith("left camera_info")
    # The node's existing `except CameraModelError` (-> camera_info_<kind>) catches these too.
    assert isinstance(exc.value, CameraModelError)
    with pytest.raises(RectificationError):
        Rectifier("on").rectify(np.zeros((H, W), np.uint8), msg)


def test_binning_and_roi_refused() -> None:
    msg = info()
    msg.binning_x = 2
    with pytest.raises(RectificationError, match="binning_x = 2") as exc:
        check_camera_info(msg)
    assert exc.value.kind == "unsupported_binning"
    msg = info()
    msg.roi.x_offset, msg.roi.width, msg.roi.height = 10, 100, 100
    with pytest.raises(RectificationError, match="roi is x=10") as exc:
        check_camera_info(msg)
    assert exc.value.kind == "unsupported_roi"
    msg = info()
    msg.roi.width, msg.roi.height = W, H  # the full image, written out: fine
    check_camera_info(msg)


def test_duck_typed_info() -> None:
    # Anything with the CameraInfo field names works (bag readers, tools): plain lists, no roi / binning.
    duck = SimpleNamespace(
        width=W,
        height=H,
        distortion_model="plumb_bob",
        d=LENSES["plumb_bob"],
        k=list(info().k),
        r=list(info().r),
        p=list(P_LEFT.ravel()),
    )
    assert needs_rectification(duck)
    np.testing.assert_array_equal(rectification_maps(duck).map1, rectification_maps(info()).map1)


def test_topic_is_rectified() -> None:
    assert topic_is_rectified("left/image_rect")
    assert topic_is_rectified("/stereo/left/image_rect_color/")
    assert not topic_is_rectified("left/image_raw")
    assert not topic_is_rectified("/camera/left/image")


# ------------------------------------------------------------------------------------------------- maps
@pytest.mark.parametrize("model", list(LENSES))
def test_maps_invert(model: str) -> None:
    """Rectified pixel -> raw (rectification map) -> rectified (inverse map) comes back within 0.01 px."""
    msg = info(
        model,
        width=320,
        height=240,
        p=P_LEFT * [[0.5], [0.5], [1]],
        k=np.array([[F * 0.52, 0, 165], [0, F * 0.515, 118], [0, 0, 1]]),
    )
    fwd = rectification_maps(msg, fixed_point=False)
    inv = raw_from_rectified_maps(msg)
    qx, qy = np.meshgrid(np.arange(320, dtype=np.float32), np.arange(240, dtype=np.float32))
    inside = (fwd.map1 >= 0) & (fwd.map1 <= 319) & (fwd.map2 >= 0) & (fwd.map2 <= 239)
    assert inside.mean() > 0.95
    back_x = cv2.remap(inv.map1, fwd.map1, fwd.map2, cv2.INTER_LINEAR)
    back_y = cv2.remap(inv.map2, fwd.map1, fwd.map2, cv2.INTER_LINEAR)
    err = np.hypot(back_x - qx, back_y - qy)[inside]
    assert err.max() < 0.01, err.max()


@pytest.mark.parametrize("model", list(LENSES))
def test_recovers_rendered_pair(model: str) -> None:
    """Ideal rendered view -> distorted by the lens -> rectified: the ideal view again (PSNR > 38 dB)."""
    ideal_img = make_stereo_sample(3, W, H, fx=F).left
    msg = info(model)
    raw = remap(ideal_img, raw_from_rectified_maps(msg))
    rect = Rectifier("auto", "left").rectify(raw, msg)
    # Compare where both resamplings read real pixels: the raw pixel seen sees inside the ideal image.
    seen = remap(np.ones((H, W), np.float32), raw_from_rectified_maps(msg))
    covered = remap(seen, rectification_maps(msg, fixed_point=False)) > 0.999
    covered = cv2.erode(covered.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert covered.mean() > 0.9
    assert psnr(rect, ideal_img, covered) > 38.0
    assert psnr(raw, ideal_img, covered) < 25.0  # without rectification the views really differ


# -------------------------------------------------------------------------------------------- checkerboard
BOARD = (9, 6)  # inner corners
SQUARE, X0, Y0, SHIFT = 36, 150, 130, 24


def checkerboard_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ideal rectified pair of a fronto-parallel board (disparity SHIFT px) and its true left corners.

    Drawn at 8x and area-averaged, so edges are anti-aliased and a corner at the 8x boundary E sits at
    E/8 - 0.5 in OpenCV's pixel-centre coordinates.
    """
    s = 8
    hi = np.full((H * s, W * s), 255, np.uint8)
    for j in range(BOARD[1] + 1):
        for i in range(BOARD[0] + 1):
            if (i + j) % 2 == 0:
                y, x = (Y0 + j * SQUARE) * s, (X0 + i * SQUARE) * s
                hi[y : y + SQUARE * s, x : x + SQUARE * s] = 0
    left = cv2.resize(hi, (W, H), interpolation=cv2.INTER_AREA)
    right = np.full_like(left, 255)
    right[:, : W - SHIFT] = left[:, SHIFT:]
    truth = np.array(
        [
            [X0 + (i + 1) * SQUARE - 0.5, Y0 + (j + 1) * SQUARE - 0.5]
            for j in range(BOARD[1])
            for i in range(BOARD[0])
        ]
    )
    return left, right, truth


def find_corners(gray: np.ndarray, pattern: tuple[int, int] = BOARD, win: int = 5) -> np.ndarray:
    found, corners = cv2.findChessboardCorners(
        gray, pattern, cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    )
    assert found
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-4)
    return cv2.cornerSubPix(gray, corners, (win, win), (-1, -1), crit).reshape(-1, 2)


def test_checkerboard_rows_align() -> None:
    left, right, truth = checkerboard_pair()
    np.testing.assert_allclose(find_corners(left), truth, atol=0.01)  # the rendering convention holds
    infos = (
        info(
            "plumb_bob",
            [-0.25, 0.07, 0.001, -0.0005, 0.0],
            np.array([[F * 1.03, 0, CX + 5], [0, F * 1.02, CY - 3], [0, 0, 1]]),
            rotation(1.2, -1.5, 0.8),
            P_LEFT,
        ),
        info(
            "plumb_bob",
            [-0.22, 0.05, -0.0007, 0.0009, 0.0],
            np.array([[F * 0.98, 0, CX - 4], [0, F * 0.99, CY + 6], [0, 0, 1]]),
            rotation(-1.0, 1.2, -0.9),
            P_RIGHT,
        ),
    )
    raws = [remap(img, raw_from_rectified_maps(i)) for img, i in zip((left, right), infos, strict=True)]
    raw_l, raw_r = find_corners(raws[0]), find_corners(raws[1])
    assert np.abs(raw_l[:, 1] - raw_r[:, 1]).max() > 5.0

    rect_l = find_corners(Rectifier("on", "left").rectify(raws[0], infos[0]))
    rect_r = find_corners(Rectifier("on", "right").rectify(raws[1], infos[1]))
    assert np.abs(rect_l[:, 1] - rect_r[:, 1]).max() < 0.1
    assert np.abs(rect_l - truth).max() < 0.15
    assert np.abs(rect_r - (truth - [SHIFT, 0])).max() < 0.15
    # The stereo model from the same CameraInfos (P only) is the rectified pair's: SHIFT px is its depth.
    camera = StereoCamera.from_camera_info(*infos)
    depth = camera.disparity_to_depth(np.float32(np.median(rect_l[:, 0] - rect_r[:, 0])))
    assert abs(float(depth) - F * BASELINE / SHIFT) < 0.01 * F * BASELINE / SHIFT


# --------------------------------------------------------------------------------------------- the cache
def test_rectifier_caches_by_content() -> None:
    img = np.zeros((H, W, 3), np.uint8)
    rect = Rectifier("auto", "left")
    rect.rectify(img, info())
    rect.rectify(img, info())  # a new, equal message: no rebuild
    assert rect.builds == 1 and rect.active
    changed = info()
    changed.header.frame_id = "other"  # the header is not calibration
    rect.rectify(img, changed)
    assert rect.builds == 1
    changed.d[0] += 1e-6
    assert camera_info_key(changed) != camera_info_key(info())
    rect.rectify(img, changed)
    assert rect.builds == 2
    rect.reset()
    rect.rectify(img, changed)
    assert rect.builds == 3


def test_rectifier_modes() -> None:
    img = (np.arange(H * W) % 251).astype(np.uint8).reshape(H, W)
    assert Rectifier("off").rectify(img, info(k=np.zeros((3, 3)))) is img  # off: not even checked
    auto = Rectifier("auto")
    assert auto.rectify(img, ideal()) is img and not auto.active and auto.builds == 0
    # An image_rect topic with the raw camera's CameraInfo (image_proc's output): already rectified.
    assert Rectifier("auto", image_topic="left/image_rect").rectify(img, info()) is img
    assert Rectifier("auto", image_topic="left/image_raw").rectify(img, info()) is not img
    # on: always remapped; an ideal camera's maps are the identity, exactly, with fixed-point maps.
    on = Rectifier("on")
    out = on.rectify(img, ideal())
    assert on.active and out is not img
    np.testing.assert_array_equal(out, img)
    with pytest.raises(RectificationError, match="bad_mode|not one of") as exc:
        Rectifier("yes")
    assert exc.value.kind == "bad_mode"


def test_size_mismatch_and_float_border() -> None:
    with pytest.raises(
        RectificationError, match="image is 320x240 but its camera_info is calibrated for 640x480"
    ):
        Rectifier("on", "left").rectify(np.zeros((240, 320), np.uint8), info())
    with pytest.raises(RectificationError, match="calibrated for 640x480") as exc:
        Rectifier("auto").rectify(np.zeros((240, 320), np.uint8), ideal())
    assert exc.value.kind == "size_mismatch"
    depth = Rectifier("on").rectify(np.ones((H, W), np.float32), info())
    assert np.isnan(depth).any() and np.nanmax(depth) == 1.0  # outside the lens: NaN, not 0 m


# ------------------------------------------------------------------------------------- real calibration
def undistort_points(
    points: np.ndarray, k: np.ndarray, d: np.ndarray, r: np.ndarray, p: np.ndarray
) -> np.ndarray:
    """Raw pixels -> rectified pixels, iterated to convergence (OpenCV 4.x and 5.x spell it differently)."""
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9)
    pts = points.reshape(-1, 1, 2).astype(np.float64)
    if hasattr(cv2, "undistortPointsIter"):
        return cv2.undistortPointsIter(pts, k, d, r, p, crit).reshape(-1, 2)
    return cv2.undistortPoints(pts, k, d, R=r, P=p, criteria=crit).reshape(-1, 2)


@pytest.mark.skipif(
    not (CHESSBOARD / "left01.jpg").is_file(),
    reason="opencv-doc chessboard pairs absent (tools/fetch_eval_data.sh)",
)
def test_real_stereo_calibration() -> None:
    """Calibrate the opencv-doc rig (as OpenCV's stereo_calib sample does) and rectify its raw pairs."""
    pattern = (9, 6)
    obj = np.zeros((pattern[0] * pattern[1], 3), np.float32)
    obj[:, :2] = np.mgrid[0 : pattern[0], 0 : pattern[1]].T.reshape(-1, 2)
    pairs = []
    for left_path in sorted(glob.glob(str(CHESSBOARD / "left[0-9][0-9].jpg"))):
        left = cv2.imread(left_path, cv2.IMREAD_GRAYSCALE)
        right = cv2.imread(left_path.replace("left", "right"), cv2.IMREAD_GRAYSCALE)
        pairs.append((left, right, find_corners(left, pattern, 11), find_corners(right, pattern, 11)))
    assert len(pairs) >= 10
    size = pairs[0][0].shape[::-1]
    flags = (
        cv2.CALIB_FIX_ASPECT_RATIO
        | cv2.CALIB_ZERO_TANGENT_DIST
        | cv2.CALIB_SAME_FOCAL_LENGTH
        | cv2.CALIB_RATIONAL_MODEL
        | cv2.CALIB_FIX_K3
        | cv2.CALIB_FIX_K4
        | cv2.CALIB_FIX_K5
    )
    rms, k1, d1, k2, d2, r, t, _, _ = cv2.stereoCalibrate(
        [obj] * len(pairs),
        [p[2] for p in pairs],
        [p[3] for p in pairs],
        None,
        None,
        None,
        None,
        size,
        flags=flags,
        criteria=(cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-5),
    )
    assert rms < 1.0
    r1, r2, p1, p2, *_ = cv2.stereoRectify(
        k1, d1, k2, d2, size, r, t, flags=cv2.CALIB_ZERO_DISPARITY, alpha=0
    )
    infos = []
    for k, d, rr, p in ((k1, d1, r1, p1), (k2, d2, r2, p2)):
        # The 8 coefficients ROS's rational_polynomial carries (the rest are 0 with these flags).
        assert not np.any(d.ravel()[8:])
        infos.append(info("rational_polynomial", list(d.ravel()[:8]), k, rr, p, size[0], size[1]))
    assert needs_rectification(infos[0]) and needs_rectification(infos[1])
    StereoCamera.from_camera_info(*infos)  # the rectified P pair is a valid stereo model

    left_rect, right_rect = Rectifier("auto", "left"), Rectifier("auto", "right")
    raw_dy, rect_dy, image_vs_points = [], [], []
    for left, right, corners_l, corners_r in pairs:
        raw_dy.append(np.abs(corners_l[:, 1] - corners_r[:, 1]))
        ql = find_corners(left_rect.rectify(left, infos[0]), pattern, 11)
        qr = find_corners(right_rect.rectify(right, infos[1]), pattern, 11)
        rect_dy.append(np.abs(ql[:, 1] - qr[:, 1]))
        moved = undistort_points(corners_l, k1, d1, r1, p1)
        image_vs_points.append(np.hypot(*(ql - moved).T))
    assert left_rect.builds == 1 and right_rect.builds == 1
    assert np.concatenate(raw_dy).mean() > 5.0
    assert np.concatenate(rect_dy).mean() < 0.5
    assert np.median(np.concatenate(image_vs_points)) < 0.1
