"""StereoCamera: calibration parsing, disparity/depth/points conversions, and the doffs sign convention.

Ground truth comes from projecting synthetic 3-D points through the ROS-convention P matrices, so the tests
check the model against the projection equations rather than against its own formulas.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from scene_perception.geometry import CameraModelError, StereoCamera, camera_info_matrices
from scene_perception.geometry.stereo_camera import CAMERA_ERROR_KINDS

W, H = 64, 48
FX, FY, CX, CY, B = 100.0, 102.0, 31.5, 23.5, 0.12


def make_camera(cx_right: float = CX) -> StereoCamera:
    m = camera_info_matrices(W, H, FX, FY, CX, CY, B, "left_optical", cx_right=cx_right)
    return StereoCamera.from_projection_matrices(m["left"]["p"], m["right"]["p"], W, H, "left_optical")


def project(p: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Pixel coordinates (N, 2) of points (N, 3) through a 3x4 projection matrix."""
    hom = np.c_[xyz, np.ones(len(xyz))] @ p.T
    return hom[:, :2] / hom[:, 2:3]


@pytest.fixture
def points3d() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.c_[rng.uniform(-1, 1, 50), rng.uniform(-0.7, 0.7, 50), rng.uniform(0.5, 20.0, 50)]


# ---------------------------------------------------------------- construction


def test_from_projection_matrices_values() -> None:
    cam = make_camera(cx_right=40.0)
    assert (cam.width, cam.height, cam.frame_id) == (W, H, "left_optical")
    assert cam.fx == FX and cam.fy == FY and cam.cx == CX and cam.cy == CY
    assert cam.cx_right == 40.0
    assert cam.baseline == pytest.approx(B)
    assert cam.doffs == pytest.approx(40.0 - CX)
    pl, pr = cam.projection_matrices()
    assert pr[0, 3] == pytest.approx(-FX * B)
    assert pl[0, 3] == 0.0


def test_from_camera_info_duck_typed() -> None:
    m = camera_info_matrices(W, H, FX, FY, CX, CY, B)
    left = SimpleNamespace(p=m["left"]["p"], width=W, height=H, header=SimpleNamespace(frame_id="cam_l"))
    right = SimpleNamespace(p=m["right"]["p"], width=W, height=H, header=SimpleNamespace(frame_id="cam_r"))
    cam = StereoCamera.from_camera_info(left, right)
    assert cam.frame_id == "cam_l"
    assert cam.baseline == pytest.approx(B)
    right_bad = SimpleNamespace(p=m["right"]["p"], width=W * 2, height=H, header=SimpleNamespace(frame_id=""))
    with pytest.raises(CameraModelError, match="sizes"):
        StereoCamera.from_camera_info(left, right_bad)


def _p(fx: float = FX, tx: float = -FX * B, fx_right: float | None = None, cy_right: float = CY):
    pl = [fx, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1, 0]
    fr = fx if fx_right is None else fx_right
    pr = [fr, 0, CX, tx, 0, FY, cy_right, 0, 0, 0, 1, 0]
    return pl, pr


@pytest.mark.parametrize(
    ("kwargs", "size", "message", "kind"),
    [
        ({"fx": 0.0, "fx_right": 0.0}, (W, H), "fx=0", "bad_focal"),
        ({"fx_right": 0.0}, (W, H), "right camera_info P has fx=0", "bad_focal"),
        ({"tx": 0.0}, (W, H), r"P\[0,3\] is 0: no baseline", "no_baseline"),
        ({"tx": FX * B}, (W, H), "swapped", "bad_baseline"),
        ({"fx_right": FX * 1.1}, (W, H), "focal lengths differ", "focal_mismatch"),
        ({"cy_right": CY + 5}, (W, H), "not rectified", "rows_misaligned"),
        ({}, (0, H), "width and height must be > 0", "bad_size"),
    ],
)
def test_from_projection_matrices_errors(
    kwargs: dict, size: tuple[int, int], message: str, kind: str
) -> None:
    pl, pr = _p(**kwargs)
    with pytest.raises(CameraModelError, match=message) as info:
        StereoCamera.from_projection_matrices(pl, pr, *size)
    assert info.value.kind == kind
    assert kind in CAMERA_ERROR_KINDS


@pytest.mark.parametrize(
    ("index", "value", "message", "kind"),
    [
        (0, float("nan"), r"non-finite values: P\[0,0\]=nan", "nonfinite"),
        (3, float("inf"), r"non-finite values: P\[0,3\]=inf", "nonfinite"),
        (7, 2.5, r"P\[1,3\] \(Ty\) is left=0.0, right=2.5: vertical", "vertical_offset"),
    ],
)
def test_right_projection_entry_errors(index: int, value: float, message: str, kind: str) -> None:
    """One corrupted entry of the right P is named by its row/column, with a reason code for diagnostics."""
    pl, pr = _p()
    pr[index] = value
    with pytest.raises(CameraModelError, match=message) as info:
        StereoCamera.from_projection_matrices(pl, pr, W, H)
    assert info.value.kind == kind


def test_zero_projection_and_wrong_length() -> None:
    pl, _ = _p()
    with pytest.raises(CameraModelError, match="all zeros") as info:
        StereoCamera.from_projection_matrices(pl, [0.0] * 12, W, H)
    assert info.value.kind == "uncalibrated"
    with pytest.raises(CameraModelError, match="expected 12") as info:
        StereoCamera.from_projection_matrices(pl, [1.0] * 9, W, H)
    assert info.value.kind == "p_size"
    assert issubclass(CameraModelError, ValueError)
    assert CameraModelError("plain message").kind == "invalid"


def test_direct_construction_validates() -> None:
    with pytest.raises(CameraModelError, match="baseline"):
        StereoCamera(W, H, FX, FY, CX, CY, CX, 0.0)
    with pytest.raises(CameraModelError, match="focal length"):
        StereoCamera(W, H, -1.0, FY, CX, CY, CX, B)


# ---------------------------------------------------------------- conversions against projection


@pytest.mark.parametrize("cx_right", [CX, CX + 7.25, CX - 3.0])
def test_doffs_sign_with_projected_points(points3d: np.ndarray, cx_right: float) -> None:
    cam = make_camera(cx_right)
    pl, pr = cam.projection_matrices()
    xl = project(pl, points3d)
    xr = project(pr, points3d)
    d = (xl[:, 0] - xr[:, 0]).astype(np.float32)
    np.testing.assert_allclose(xl[:, 1], xr[:, 1])  # rectified: same row
    # With doffs > 0 far points have d < 0 (still a positive depth): lift the default d > 0 cut-off.
    depth = cam.disparity_to_depth(d, min_disparity=-np.inf)
    assert np.isfinite(depth).all()
    np.testing.assert_allclose(depth, points3d[:, 2], rtol=1e-5)
    np.testing.assert_allclose(cam.depth_to_disparity(points3d[:, 2]), d, rtol=1e-5, atol=1e-4)


def test_round_trip_and_dtype() -> None:
    cam = make_camera(CX + 2.0)
    d = np.linspace(0.5, 60.0, 200, dtype=np.float32).reshape(10, 20)
    z = cam.disparity_to_depth(d)
    assert z.dtype == np.float32 and z.shape == d.shape
    np.testing.assert_allclose(cam.depth_to_disparity(z), d, rtol=1e-5)


def test_invalid_disparity_gives_nan() -> None:
    cam = make_camera(CX + 4.0)  # doffs = 4: d = -3 gives a positive d + doffs, but d <= min_disparity
    d = np.array([np.nan, np.inf, -np.inf, 0.0, -3.0, 1.0, 5.0], dtype=np.float32)
    z = cam.disparity_to_depth(d)
    assert np.isnan(z[:5]).all()
    assert np.isfinite(z[5:]).all()
    z2 = cam.disparity_to_depth(d, min_disparity=2.0)
    assert np.isnan(z2[5]) and np.isfinite(z2[6])
    # negative doffs: d + doffs <= 0 must be invalid even when d > min_disparity
    cam_neg = make_camera(CX - 4.0)
    assert np.isnan(cam_neg.disparity_to_depth(np.array([3.0, 4.0], np.float32))).all()
    assert np.isnan(cam.depth_to_disparity(np.array([0.0, -1.0, np.nan], np.float32))).all()


def test_depth_std_matches_finite_differences() -> None:
    cam = make_camera(CX + 3.0)
    d = np.array([[2.0, 8.0, 30.0, 55.5]], dtype=np.float64)
    sigma = np.array([[0.5, 1.0, 0.25, 2.0]])
    h = 1e-4
    fd = (cam.fx * cam.baseline / (d - h + cam.doffs) - cam.fx * cam.baseline / (d + h + cam.doffs)) / (2 * h)
    std = cam.depth_std(d.astype(np.float32), sigma.astype(np.float32))
    assert std.dtype == np.float32
    np.testing.assert_allclose(std, np.abs(fd) * sigma, rtol=1e-4)
    bad = cam.depth_std(np.array([0.0, np.nan], np.float32), np.array([1.0, 1.0], np.float32))
    assert np.isnan(bad).all()


def test_points_reproject_to_pixel() -> None:
    cam = make_camera(CX + 1.5)
    rng = np.random.default_rng(1)
    disp = rng.uniform(1.0, 40.0, (H, W)).astype(np.float32)
    disp[5, 7] = 0.0
    disp[10, 3] = np.nan
    pts = cam.points(disp)
    assert pts.shape == (H, W, 3) and pts.dtype == np.float32
    assert np.isnan(pts[5, 7]).all() and np.isnan(pts[10, 3]).all()
    valid = np.isfinite(pts[..., 2])
    pl, pr = cam.projection_matrices()
    vv, uu = np.nonzero(valid)
    xyz = pts[valid].astype(np.float64)
    np.testing.assert_allclose(project(pl, xyz), np.c_[uu, vv], atol=1e-3)
    # and the right camera sees it d pixels to the left
    np.testing.assert_allclose(project(pr, xyz)[:, 0], uu - disp[valid], atol=1e-3)


def test_scaled_keeps_geometry() -> None:
    cam = make_camera(CX + 2.0)
    half = cam.scaled(0.5, 0.5)
    assert (half.width, half.height) == (W // 2, H // 2)
    assert half.fx == FX / 2 and half.baseline == cam.baseline
    assert half.cx == pytest.approx((CX + 0.5) / 2 - 0.5)
    # the same point: disparity halves, depth unchanged
    d = np.array([10.0, 20.0], dtype=np.float32)
    np.testing.assert_allclose(half.disparity_to_depth(d / 2), cam.disparity_to_depth(d), rtol=1e-6)
    with pytest.raises(CameraModelError):
        cam.scaled(0.0, 1.0)


def test_camera_info_matrices_layout() -> None:
    m = camera_info_matrices(W, H, FX, FY, CX, CY, B, "f", cx_right=CX + 1)
    assert m["left"]["k"].shape == (9,) and m["left"]["p"].shape == (12,)
    assert m["right"]["p"][3] == pytest.approx(-FX * B)
    assert m["right"]["p"][2] == CX + 1 and m["right"]["k"][2] == CX + 1
    np.testing.assert_array_equal(m["left"]["r"], np.eye(3).ravel())
    with pytest.raises(CameraModelError):
        camera_info_matrices(W, H, FX, FY, CX, CY, 0.0)


def test_torch_tensors_give_the_numpy_results_on_their_device() -> None:
    """The pipeline converts on the engine's device: the same methods on tensors, same values, and the
    result stays a tensor (no host copy)."""
    torch = pytest.importorskip("torch")
    cam = make_camera(cx_right=CX + 3.0)
    rng = np.random.default_rng(3)
    d = (rng.random((6, 9)) * 40 - 5).astype(np.float32)
    d[0, 0], d[1, 1], d[2, 2] = np.nan, np.inf, -3.5  # invalid: NaN, inf, d + doffs <= 0
    sd = (rng.random((6, 9)) * 2).astype(np.float32)
    t, ts = torch.from_numpy(d), torch.from_numpy(sd)
    for got, want in (
        (cam.disparity_to_depth(t, 1.0), cam.disparity_to_depth(d, 1.0)),
        (cam.depth_std(t, ts, 1.0), cam.depth_std(d, sd, 1.0)),
        (cam.points(t, 1.0), cam.points(d, 1.0)),
    ):
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        assert want.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, equal_nan=True)
    assert np.isnan(cam.points(d, 1.0)[2, 2]).all()
