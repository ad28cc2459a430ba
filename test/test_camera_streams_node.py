"""Real camera streams into the live stereo node (issue 20, item 8), over Fast DDS with real messages:
raw (distorted, unrectified) images rectified in the node, CompressedImage input, yuv422 / bayer encodings,
and approximate sync of free-running cameras.

The reference is the same node fed the ideal rectified pair: whatever the transport or the lens, the node
must see (nearly) the same pixels and so publish (nearly) the same disparity.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosutil import RosHarness, header
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from stereo_msgs.msg import DisparityImage

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.geometry.rectification import raw_from_rectified_maps, remap
from scene_perception.ros.codec import image_to_numpy, numpy_to_compressed_image, numpy_to_image
from scene_perception.ros.messages import camera_info_pair_from_camera
from scene_perception.ros.stereo_depth_node import StereoDepthNode

pytestmark = pytest.mark.ros

H, W = 96, 192
SAMPLE = make_stereo_sample(31, width=W, height=H, max_disparity=24.0)
CAMERA = SAMPLE.camera


def _infos(stamp_ns: int) -> tuple[CameraInfo, CameraInfo]:
    return camera_info_pair_from_camera(CAMERA, header(stamp_ns, CAMERA.frame_id))


def _raw_infos(stamp_ns: int) -> tuple[CameraInfo, CameraInfo]:
    """The pair's CameraInfo as a real rig reports it: distorted lenses (D), a rectifying rotation (R) and
    a raw K, with the rectified P the ideal images were rendered in."""
    left, right = _infos(stamp_ns)
    for info, rot, d in ((left, (0.8, -1.1, 0.4), 0.06), (right, (-0.6, 0.9, -0.3), -0.05)):
        info.distortion_model = "plumb_bob"
        info.d = [-0.12 + d, 0.03, 0.0004, -0.0003, 0.0]
        k = np.array([[CAMERA.fx * 1.02, 0.0, CAMERA.cx + 2.5], [0.0, CAMERA.fy * 1.02, CAMERA.cy - 1.5],
                      [0.0, 0.0, 1.0]])
        info.k = k.ravel().tolist()
        info.r = cv2.Rodrigues(np.deg2rad(rot))[0].ravel().tolist()
    return left, right


class Rig:
    """Publishers of one image type on the given topics, and a recorder of the node's disparity."""

    def __init__(self, harness: RosHarness, image_type: type, left_topic: str, right_topic: str) -> None:
        self.node = harness.add(Node("rig", context=harness.context))
        q = qos_profile_sensor_data
        self.pubs = [self.node.create_publisher(image_type, left_topic, q),
                     self.node.create_publisher(CameraInfo, "left/camera_info", q),
                     self.node.create_publisher(image_type, right_topic, q),
                     self.node.create_publisher(CameraInfo, "right/camera_info", q)]
        self.got: list[DisparityImage] = []
        self.node.create_subscription(DisparityImage, "disparity", self.got.append, 10)

    def send(self, left, left_info, right, right_info) -> None:  # noqa: ANN001
        for pub, msg in zip(self.pubs, (left, left_info, right, right_info), strict=True):
            pub.publish(msg)


def _start(harness: RosHarness, name: str, remap_raw: bool = False, **params) -> StereoDepthNode:
    overrides = [Parameter("num_threads", value=1), Parameter("input_depth", value=5),
                 *(Parameter(k, value=v) for k, v in params.items())]
    cli = None
    if remap_raw:
        cli = ["--ros-args", "-r", "left/image_rect:=left/image_raw",
               "-r", "right/image_rect:=right/image_raw"]
    node = harness.add(StereoDepthNode(name, context=harness.context, parameter_overrides=overrides,
                                       cli_args=cli))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    return node


def _disparity(msg: DisparityImage) -> np.ndarray:
    d = image_to_numpy(msg.image).astype(np.float32)
    return np.where(d > msg.min_disparity, d, np.nan)


def _run(harness: RosHarness, rig: Rig, messages: tuple, timeout: float = 30.0) -> np.ndarray:
    harness.spin_for(0.5)  # discovery
    before = len(rig.got)
    rig.send(*messages)
    assert harness.spin_until(lambda: len(rig.got) > before, timeout), "no disparity for the set"
    return _disparity(rig.got[-1])


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The node's disparity for the ideal rectified rgb8 pair."""
    harness = RosHarness()
    try:
        _start(harness, "ref_stereo")
        rig = Rig(harness, Image, "left/image_rect", "right/image_rect")
        li, ri = _infos(1_000)
        h = header(1_000, CAMERA.frame_id)
        return _run(harness, rig, (numpy_to_image(SAMPLE.left, "rgb8", h), li,
                                   numpy_to_image(SAMPLE.right, "rgb8", h), ri))
    finally:
        harness.shutdown()


def _close(got: np.ndarray, want: np.ndarray, median_px: float, share: float = 0.8) -> None:
    both = np.isfinite(got) & np.isfinite(want)
    assert both.mean() >= share, f"only {both.mean():.2f} of the pixels valid in both"
    diff = np.abs(got[both] - want[both])
    assert float(np.median(diff)) <= median_px, f"median |delta| {np.median(diff):.3f} px"


def test_raw_distorted_images_are_rectified_in_the_node(reference: np.ndarray) -> None:
    """rectify: auto with the image topics remapped to image_raw: the node undoes lens and rotation."""
    harness = RosHarness()
    try:
        li, ri = _raw_infos(2_000)
        raw_l = remap(SAMPLE.left, raw_from_rectified_maps(li, "left"))
        raw_r = remap(SAMPLE.right, raw_from_rectified_maps(ri, "right"))
        assert np.mean(np.abs(raw_l.astype(float) - SAMPLE.left)) > 10  # the lens really moved the pixels
        node = _start(harness, "raw_stereo", remap_raw=True, rectify="auto")
        rig = Rig(harness, Image, "left/image_raw", "right/image_raw")
        h = header(2_000, CAMERA.frame_id)
        got = _run(harness, rig, (numpy_to_image(raw_l, "rgb8", h), li, numpy_to_image(raw_r, "rgb8", h), ri))
        assert all(r.active and r.builds == 1 for r in node._rectifiers)
        inner = np.s_[8:-8, 16:-16]  # away from the black border the raw view leaves after rectification
        _close(got[inner], reference[inner], median_px=0.5)
    finally:
        harness.shutdown()


@pytest.mark.parametrize(("codec", "bound"), [("png", 0.01), ("jpeg", 0.5)])
def test_compressed_images(reference: np.ndarray, codec: str, bound: float) -> None:
    harness = RosHarness()
    try:
        _start(harness, f"compressed_{codec}", image_transport="compressed")
        rig = Rig(harness, CompressedImage, "left/image_rect/compressed", "right/image_rect/compressed")
        li, ri = _infos(3_000)
        h = header(3_000, CAMERA.frame_id)
        got = _run(harness, rig, (numpy_to_compressed_image(SAMPLE.left, "rgb8", codec, h), li,
                                  numpy_to_compressed_image(SAMPLE.right, "rgb8", codec, h), ri))
        _close(got, reference, median_px=bound)
    finally:
        harness.shutdown()


def test_yuv422_and_bayer_encodings(reference: np.ndarray) -> None:
    harness = RosHarness()
    try:
        _start(harness, "encodings_stereo")
        rig = Rig(harness, Image, "left/image_rect", "right/image_rect")
        # yuyv (YUY2): 2 bytes per pixel, as a UVC webcam sends it.
        yuv = [cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2YUV), cv2.COLOR_YUV2RGB) for img in
               (SAMPLE.left, SAMPLE.right)]

        def yuy2(img: np.ndarray) -> np.ndarray:
            y, u, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2YUV))
            packed = np.empty((H, W, 2), np.uint8)
            packed[..., 0] = y
            packed[:, 0::2, 1] = u[:, 0::2]
            packed[:, 1::2, 1] = v[:, 0::2]
            return packed

        li, ri = _infos(4_000)
        h = header(4_000, CAMERA.frame_id)
        got = _run(harness, rig, (numpy_to_image(yuy2(yuv[0]), "yuv422_yuy2", h), li,
                                  numpy_to_image(yuy2(yuv[1]), "yuv422_yuy2", h), ri))
        _close(got, reference, median_px=0.5)

        def rggb(img: np.ndarray) -> np.ndarray:
            mosaic = np.empty((H, W), np.uint8)
            mosaic[0::2, 0::2] = img[0::2, 0::2, 0]
            mosaic[0::2, 1::2] = img[0::2, 1::2, 1]
            mosaic[1::2, 0::2] = img[1::2, 0::2, 1]
            mosaic[1::2, 1::2] = img[1::2, 1::2, 2]
            return mosaic

        li, ri = _infos(5_000)
        h = header(5_000, CAMERA.frame_id)
        got = _run(harness, rig, (numpy_to_image(rggb(SAMPLE.left), "bayer_rggb8", h), li,
                                  numpy_to_image(rggb(SAMPLE.right), "bayer_rggb8", h), ri))
        _close(got, reference, median_px=1.0, share=0.6)  # demosaicing loses detail: a looser bound
    finally:
        harness.shutdown()


def test_approximate_sync_pairs_free_running_cameras_5_ms_apart() -> None:
    """Two free-running cameras stamp their frames a few ms apart: exact sync (the default, for hardware-
    triggered rigs) never pairs them; approximate sync with the default 10 ms tolerance pairs every set."""
    harness = RosHarness()
    try:
        exact = _start(harness, "exact_stereo")
        approx = _start(harness, "approx_stereo", approximate_sync=True)
        rig = Rig(harness, Image, "left/image_rect", "right/image_rect")
        harness.spin_for(0.5)
        for k in range(3):
            t = 10_000_000_000 + k * 200_000_000
            li, _ = _infos(t)
            _, ri = _infos(t + 5_000_000)
            rig.send(numpy_to_image(SAMPLE.left, "rgb8", header(t, CAMERA.frame_id)), li,
                     numpy_to_image(SAMPLE.right, "rgb8", header(t + 5_000_000, "right_optical")), ri)
            harness.spin_for(0.3)
        assert harness.spin_until(lambda: approx.health.counters["outputs"] >= 3, 30.0)
        assert exact.health.counters["stereo sets"] == 0
    finally:
        harness.shutdown()
