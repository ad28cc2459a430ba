"""The SGBM baseline node end to end over Fast DDS: the stereo node's inputs and outputs, no uncertainty.

A textured fronto-parallel plane shifted by a known number of pixels must come back as that disparity, with
depth = f*t/d and a point cloud that agrees; the node reports the same diagnostics keys as the GC-Net node.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosutil import (
    Driver,
    RosHarness,
    check_summary_diagnostics,
    diagnostic_values,
    make_camera,
    private_domain_id,
    publish_all,
    send,
    shifted_pair,
    stereo_messages,
)
from stereo_msgs.msg import DisparityImage

from scene_perception.pipelines.sgbm import SGBMMatcher
from scene_perception.ros.codec import image_to_numpy
from scene_perception.ros.messages import point_cloud_to_numpy
from scene_perception.ros.params import SGBM_DEPTH_PARAMS
from scene_perception.ros.runner import node_types, nodes_from_config
from scene_perception.ros.sgbm_node import SGBMDepthNode

ROOT = Path(__file__).resolve().parents[1]
H, W = 64, 128
SHIFT = 7
MAX_DISPARITY = 32


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(private_domain_id())
    node = SGBMDepthNode(
        "sgbm_depth",
        context=harness.context,
        parameter_overrides=[
            Parameter("max_disparity", value=MAX_DISPARITY),
            Parameter("diagnostics_period", value=0.2),
            Parameter("log_throttle_seconds", value=0.0),
            Parameter("input_depth", value=10),  # tests publish bursts and need every message
        ],
    )
    harness.add(node)
    driver = harness.add(Driver(harness.context))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
    assert harness.spin_until(lambda: node._pubs["points"].get_subscription_count() > 0, 10)
    yield harness, node, driver
    harness.shutdown()


@pytest.mark.ros
def test_known_shift_gives_disparity_depth_and_points(ros) -> None:
    harness, node, driver = ros
    driver.clear()
    left, right = shifted_pair(H, W, SHIFT, seed=11)
    camera = make_camera(W, H)
    assert send(harness, driver, stereo_messages(left, right, camera, 1_000_000_000))
    assert harness.spin_until(lambda: bool(driver.got["points"]), 5)
    msg: DisparityImage = driver.got["disparity"][-1]
    assert msg.header.stamp.sec == 1 and msg.header.frame_id == "left_optical"
    assert msg.f == pytest.approx(camera.fx) and msg.t == pytest.approx(camera.baseline)
    assert msg.max_disparity == pytest.approx(MAX_DISPARITY - 1)
    d = image_to_numpy(msg.image)
    valid = d > msg.min_disparity
    # SGBM cannot match the first num_disparities columns (no right pixel to compare); the rest of the
    # plane is dense and exact on random texture.
    assert not valid[:, : MAX_DISPARITY - 1].any()
    assert valid[:, MAX_DISPARITY:].mean() > 0.9
    assert np.abs(d[valid] - SHIFT).max() < 1.0
    assert np.median(np.abs(d[valid] - SHIFT)) < 0.1
    win = msg.valid_window
    assert win.x_offset >= MAX_DISPARITY - 1 and win.width > 0

    depth = image_to_numpy(driver.got["depth"][-1])
    assert np.array_equal(np.isfinite(depth), valid)
    np.testing.assert_allclose(depth[valid], msg.f * msg.t / d[valid], rtol=1e-5)
    np.testing.assert_allclose(np.median(depth[valid]), camera.fx * camera.baseline / SHIFT, rtol=0.02)
    cloud = point_cloud_to_numpy(driver.got["points"][-1])
    assert cloud.shape == (H, W)
    np.testing.assert_allclose(cloud["z"][valid], depth[valid], rtol=1e-5)
    assert np.all(np.isnan(cloud["z"][~valid]))
    # No uncertainty output: SGBM has none, and the node does not even advertise the topic.
    assert "uncertainty" not in node._pubs and not driver.got["uncertainty"]
    assert driver.count_publishers("depth/uncertainty") == 0


@pytest.mark.ros
def test_principal_point_offset_is_folded_into_published_disparity(ros) -> None:
    """With cx_right != cx, DisparityImage carries d + doffs so that Z = f*t/d holds, as for stereo_depth."""
    harness, node, driver = ros
    left, right = shifted_pair(H, W, SHIFT, seed=12)
    base = make_camera(W, H)
    camera = type(base)(W, H, base.fx, base.fy, base.cx, base.cy, base.cx + 2.0, base.baseline, base.frame_id)
    assert send(harness, driver, stereo_messages(left, right, camera, 2_000_000_000))
    msg = driver.got["disparity"][-1]
    d = image_to_numpy(msg.image)
    valid = d > msg.min_disparity
    assert np.median(d[valid]) == pytest.approx(SHIFT + camera.doffs, abs=0.1)
    depth = image_to_numpy(driver.got["depth"][-1])
    np.testing.assert_allclose(depth[valid], msg.f * msg.t / d[valid], rtol=1e-5)


@pytest.mark.ros
def test_bad_input_counted_and_diagnostics_over_dds(ros) -> None:
    harness, node, driver = ros
    camera = make_camera(W, H)
    left, right = shifted_pair(H, W, SHIFT, seed=13)
    invalid_before = node.invalid_inputs
    for i in range(3):
        assert send(harness, driver, stereo_messages(left, right, camera, 3_000_000_000 + i * 50_000_000))
    bad = list(stereo_messages(left, right, camera, 4_000_000_000))
    bad[2] = stereo_messages(left[:, :-8].copy(), right[:, :-8].copy(), camera, 4_000_000_000)[2]
    publish_all(driver.pubs, bad)
    assert harness.spin_until(lambda: node.health.problems["size_mismatch"] > 0, 5)
    # ... and the next valid frame is processed.
    assert send(harness, driver, stereo_messages(left, right, camera, 5_000_000_000))

    def reported() -> bool:
        values = diagnostic_values(driver.got["diag"], "sgbm_depth")
        return bool(values) and int(values["invalid input count"]) > invalid_before

    assert harness.spin_until(reported, 5)
    values = diagnostic_values(driver.got["diag"], "sgbm_depth")
    check_summary_diagnostics(values)
    assert "StereoSGBM" in values["backend"] and "32 disparities" in values["backend"], values["backend"]
    assert float(values["input rate (Hz)"]) > 0 and float(values["output rate (Hz)"]) > 0
    assert float(values["inference latency p50 (ms)"]) > 0
    assert values["problem size_mismatch"] == "1"
    assert values["uncertainty"].startswith("none")


@pytest.mark.ros
def test_too_narrow_image_is_rejected_not_a_crash(ros) -> None:
    """OpenCV's StereoSGBM segfaults on images no wider than its disparity range: refused with a problem."""
    harness, node, driver = ros
    with pytest.raises(ValueError, match="wider than num_disparities=32"):
        SGBMMatcher(MAX_DISPARITY)(*shifted_pair(H, MAX_DISPARITY, 2))
    narrow = make_camera(MAX_DISPARITY, H)
    left, right = shifted_pair(H, MAX_DISPARITY, 2, seed=14)
    invalid_before = node.invalid_inputs
    publish_all(driver.pubs, stereo_messages(left, right, narrow, 6_000_000_000))
    assert harness.spin_until(lambda: node.health.problems["image_too_narrow"] == 1, 5)
    assert node.invalid_inputs == invalid_before + 1
    assert "lower max_disparity" in node.health.last_error
    left, right = shifted_pair(H, W, SHIFT, seed=15)
    assert send(harness, driver, stereo_messages(left, right, make_camera(W, H), 7_000_000_000))


def test_registered_for_run_and_config_example_is_valid(tmp_path) -> None:
    """``scene-perception run`` knows sgbm_depth, and the commented example in the shipped config is valid."""
    assert node_types()["sgbm_depth"] is SGBMDepthNode
    text = (ROOT / "config" / "perception.yaml").read_text()
    lines = text.splitlines()
    start = lines.index("# /**/sgbm_depth:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    example = yaml.safe_load("\n".join(block))
    params = example["/**/sgbm_depth"]["ros__parameters"]
    specs = {s.name: s for s in SGBM_DEPTH_PARAMS}
    assert set(params) <= set(specs), set(params) - set(specs)
    for name, value in params.items():
        assert type(value) is type(specs[name].default), name
    path = tmp_path / "sgbm.yaml"
    path.write_text(yaml.safe_dump(example))
    assert [(n, c) for n, c, _ in nodes_from_config(path)] == [("sgbm_depth", SGBMDepthNode)]


def test_sgbm_node_does_not_load_torch() -> None:
    """The OpenCV-only node shares the parameter table with the network node, not its torch import."""
    code = "import sys, scene_perception.ros.sgbm_node; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
