"""Message builders: DisparityImage, REP 118 depth, organized PointCloud2 and CameraInfo pairs.

Each message goes through rclpy's CDR serializer and back, so the tests see what a subscriber would.
"""

from __future__ import annotations

import time
from typing import TypeVar

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from stereo_msgs.msg import DisparityImage

from scene_perception.geometry import StereoCamera
from scene_perception.ros.codec import image_to_numpy
from scene_perception.ros.messages import (
    camera_info_pair_from_camera,
    make_camera_info_pair,
    make_depth_image,
    make_disparity_image,
    make_point_cloud,
    pack_rgb,
    point_cloud_to_numpy,
    unpack_rgb,
)

MsgT = TypeVar("MsgT")
H, W = 6, 9
FX, B = 120.0, 0.1


def wire(msg: MsgT, cls: type[MsgT]) -> MsgT:
    """Serialize and deserialize, as a subscriber receives it."""
    return deserialize_message(serialize_message(msg), cls)


def header() -> Header:
    h = Header(frame_id="left_optical")
    h.stamp.sec, h.stamp.nanosec = 5, 600
    return h


# ---------------------------------------------------------------- DisparityImage


def test_disparity_image_fields_and_invalid_fill() -> None:
    rng = np.random.default_rng(0)
    disp = rng.uniform(2.0, 60.0, (H, W)).astype(np.float32)
    valid = np.zeros((H, W), bool)
    valid[1:4, 2:7] = True
    disp[2, 3] = np.nan  # flagged valid but not finite: must become invalid
    msg = wire(make_disparity_image(disp, valid, header(), FX, B, 1.0, 64.0, 0.25), DisparityImage)
    assert msg.header.frame_id == "left_optical" and msg.image.header.stamp.nanosec == 600
    assert msg.f == pytest.approx(FX) and msg.t == pytest.approx(B)
    assert (msg.min_disparity, msg.max_disparity, msg.delta_d) == (1.0, 64.0, 0.25)
    assert msg.image.encoding == "32FC1"
    img = image_to_numpy(msg.image)
    ok = valid.copy()
    ok[2, 3] = False
    np.testing.assert_array_equal(img[ok], disp[ok])
    assert np.all(img[~ok] == 0.0)  # min_disparity - 1
    assert np.all(img[~ok] < msg.min_disparity)
    roi = msg.valid_window
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (2, 1, 5, 3)


def test_disparity_below_min_is_invalid_and_window_tight() -> None:
    disp = np.full((H, W), 10.0, np.float32)
    disp[:, 0] = 0.5  # below min_disparity 1.0
    disp[H - 1, :] = 0.5
    msg = make_disparity_image(disp, None, None, FX, B, 1.0, 64.0, 1.0)
    roi = msg.valid_window
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (1, 0, W - 1, H - 1)
    assert image_to_numpy(msg.image)[H - 1, 3] == 0.0


def test_disparity_nothing_valid_zero_window() -> None:
    disp = np.ones((H, W), np.float32)
    msg = make_disparity_image(disp, np.zeros((H, W), bool), None, FX, B, -4.0, 60.0, 1.0)
    roi = msg.valid_window
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (0, 0, 0, 0)
    assert np.all(image_to_numpy(msg.image) == -5.0)


def test_disparity_image_depth_consistency() -> None:
    cam = StereoCamera(W, H, FX, FX, 4.0, 3.0, 4.0, B, "left_optical")
    disp = np.linspace(1.5, 50.0, H * W, dtype=np.float32).reshape(H, W)
    msg = make_disparity_image(disp, np.ones((H, W), bool), header(), cam.fx, cam.baseline, 0.0, 64.0, 1.0)
    d = image_to_numpy(msg.image)
    np.testing.assert_allclose(msg.f * msg.t / d, cam.disparity_to_depth(disp), rtol=1e-5)


def test_disparity_shape_errors() -> None:
    with pytest.raises(ValueError, match="valid mask shape"):
        make_disparity_image(np.zeros((H, W), np.float32), np.zeros((W, H), bool), None, FX, B, 0, 1, 1)


# ---------------------------------------------------------------- depth


def test_depth_image_rep118() -> None:
    depth = np.full((H, W), 2.5, np.float32)
    depth[0, 0] = 0.0
    depth[0, 1] = -1.0
    depth[0, 2] = np.inf
    valid = np.ones((H, W), bool)
    valid[1, 1] = False
    msg = wire(make_depth_image(depth, header(), valid), Image)
    assert msg.encoding == "32FC1" and msg.header.frame_id == "left_optical"
    z = image_to_numpy(msg)
    assert np.isnan(z[0, :3]).all() and np.isnan(z[1, 1])
    assert np.isnan(z).sum() == 4 and np.all(z[2:] == 2.5)


def test_depth_image_rep117_infinities_only_where_there_is_no_depth() -> None:
    """+Inf (too far) and -Inf (too near) mark flagged pixels without a depth; a valid depth is never
    replaced; a pixel flagged both ways is +Inf; unflagged invalid pixels stay NaN."""
    depth = np.full((H, W), 2.5, np.float32)
    valid = np.ones((H, W), bool)
    valid[0, :4] = False
    far = np.zeros((H, W), bool)
    near = np.zeros((H, W), bool)
    far[0, 0] = far[0, 2] = far[3, 3] = True  # (3, 3) is valid: keeps its depth
    near[0, 1] = near[0, 2] = True
    z = image_to_numpy(wire(make_depth_image(depth, header(), valid, too_far=far, too_near=near), Image))
    assert np.isposinf(z[0, 0]) and np.isneginf(z[0, 1]) and np.isposinf(z[0, 2]) and np.isnan(z[0, 3])
    assert z[3, 3] == 2.5 and np.isfinite(z[1:]).all()
    with pytest.raises(ValueError, match="shaped like the depth"):
        make_depth_image(depth, header(), valid, too_far=far[:, :-1])


# ---------------------------------------------------------------- PointCloud2


def test_point_cloud_layout_and_round_trip() -> None:
    rng = np.random.default_rng(2)
    xyz = rng.standard_normal((H, W, 3)).astype(np.float32)
    xyz[3, 4] = np.nan
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 255, 255)
    rgb[0, 1] = (0, 0, 0)
    msg = wire(make_point_cloud(xyz, rgb, header()), PointCloud2)
    assert (msg.height, msg.width) == (H, W)
    assert msg.point_step == 16 and msg.row_step == 16 * W and not msg.is_dense and not msg.is_bigendian
    assert len(msg.data) == H * W * 16
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1),
    ]
    cloud = point_cloud_to_numpy(msg)
    assert cloud.shape == (H, W)
    np.testing.assert_array_equal(np.stack([cloud["x"], cloud["y"], cloud["z"]], -1), xyz)
    assert np.isnan([cloud[3, 4][k] for k in "xyz"]).all()
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), rgb)
    # PCL packing: bits 0x00RRGGBB, read directly from the wire bytes
    raw = np.frombuffer(msg.data, np.uint8).reshape(H, W, 16)
    bits = raw[..., 12:16].copy().view("<u4")[..., 0]
    r, g, b = (int(c) for c in rgb[2, 5])
    assert int(bits[2, 5]) == (r << 16) | (g << 8) | b
    assert int(bits[0, 0]) == 0x00FFFFFF


def test_point_cloud_without_rgb() -> None:
    xyz = np.ones((H, W, 3), np.float32)
    msg = make_point_cloud(xyz, None, None)
    assert [f.name for f in msg.fields] == ["x", "y", "z"] and msg.point_step == 16
    cloud = point_cloud_to_numpy(msg)
    assert cloud.dtype.names == ("x", "y", "z") and np.all(cloud["z"] == 1.0)


def test_point_cloud_decode_padding_and_big_endian() -> None:
    pts = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=">f4")
    row = np.zeros(2 * 16 + 8, np.uint8)  # 2 points, 16-byte step, 8 bytes row padding
    for i in range(2):
        row[i * 16 : i * 16 + 12] = pts[i].view(np.uint8)
    msg = PointCloud2(height=2, width=2, point_step=16, row_step=40, is_bigendian=True)
    msg.fields = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")
    ]
    msg.data = np.tile(row, 2).tobytes()
    cloud = point_cloud_to_numpy(msg)
    assert cloud.shape == (2, 2) and cloud.dtype["x"].isnative
    np.testing.assert_array_equal(cloud["z"], [[3.0, 6.0], [3.0, 6.0]])


def test_pack_rgb_round_trip() -> None:
    c = np.array([[1, 2, 3], [255, 0, 128]], np.uint8)
    packed = pack_rgb(c)
    assert packed.dtype == np.float32
    assert packed.view(np.uint32).tolist() == [0x010203, 0xFF0080]
    np.testing.assert_array_equal(unpack_rgb(packed), c)


def test_point_cloud_720p_speed() -> None:
    xyz = np.zeros((720, 1280, 3), np.float32)
    rgb = np.zeros((720, 1280, 3), np.uint8)
    make_point_cloud(xyz, rgb, None)  # warm-up
    t0 = time.perf_counter()
    msg = make_point_cloud(xyz, rgb, None)
    elapsed = time.perf_counter() - t0
    assert len(msg.data) == 720 * 1280 * 16
    assert elapsed < 0.25, f"{elapsed * 1e3:.1f} ms"  # ~10 ms expected; generous for loaded CI machines


# ---------------------------------------------------------------- CameraInfo


def test_camera_info_pair_round_trip_through_stereo_camera() -> None:
    left, right = make_camera_info_pair(
        640,
        480,
        500.0,
        501.0,
        319.5,
        239.5,
        0.075,
        "cam_left",
        cx_right=322.0,
        header=header(),
        right_frame_id="cam_right",
    )
    left, right = wire(left, CameraInfo), wire(right, CameraInfo)
    assert left.header.frame_id == "cam_left" and right.header.frame_id == "cam_right"
    assert left.header.stamp.sec == 5 and right.header.stamp.nanosec == 600
    assert right.p[3] == pytest.approx(-500.0 * 0.075) and left.p[3] == 0.0
    assert left.distortion_model == "plumb_bob" and len(left.d) == 5
    cam = StereoCamera.from_camera_info(left, right)
    assert cam.baseline == pytest.approx(0.075) and cam.cx_right == 322.0 and cam.frame_id == "cam_left"
    again = StereoCamera.from_camera_info(*camera_info_pair_from_camera(cam))
    assert again == cam
