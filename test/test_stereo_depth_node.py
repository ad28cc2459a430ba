"""The stereo depth lifecycle node, driven through real Fast DDS by real rclpy nodes.

A driver node publishes rectified stereo pairs + CameraInfo; a listener collects what the node publishes.
The node must be a thin adapter: its outputs equal the offline pipeline's on the same pixels, and its
DisparityImage / depth / points agree with each other (Z = f*T/d).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
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

from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import load_stereo_model, save_stereo_model
from scene_perception.pipelines.local_refinement import LocalRefinementConfig
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline
from scene_perception.ros.codec import image_to_numpy
from scene_perception.ros.messages import point_cloud_to_numpy
from scene_perception.ros.params import LOCAL_REFINEMENT_PARAMS
from scene_perception.ros.stereo_depth_node import StereoDepthNode
from scene_perception.ros.sync import dropped_count

pytestmark = pytest.mark.ros

H, W = 48, 96


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixed (random-init, seeded) weights so the node and the offline pipeline run the same network."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "lite_test.safetensors"
    save_stereo_model(GCNet(CONFIGS["lite"]), path, {"trained": False})
    return path


@pytest.fixture(scope="module")
def ros(weights: Path):
    harness = RosHarness(private_domain_id())
    node = StereoDepthNode(
        "stereo_depth",
        context=harness.context,
        parameter_overrides=[
            Parameter("weights", value=str(weights)),
            Parameter("input_check_period", value=0.5),
            Parameter("diagnostics_period", value=0.2),
            Parameter("log_throttle_seconds", value=0.0),
            Parameter("input_depth", value=10),  # tests publish bursts and need every message
        ],
    )
    harness.add(node)
    driver = harness.add(Driver(harness.context))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    # Let discovery finish (publishers see the node's subscriptions) before the first frame.
    assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
    assert harness.spin_until(
        lambda: driver.count_subscribers("points") > 0 and node._pubs["points"].get_subscription_count() > 0,
        10,
    )
    yield harness, node, driver
    harness.shutdown()


def test_outputs_are_consistent_and_match_offline_pipeline(ros, weights: Path) -> None:
    harness, node, driver = ros
    driver.clear()
    left, right = shifted_pair(H, W, 6, seed=1)
    camera = make_camera(W, H)
    assert send(harness, driver, stereo_messages(left, right, camera, 1_000_000_000))
    harness.spin_until(lambda: driver.got["points"] and driver.got["uncertainty"], 5)
    disp_msg: DisparityImage = driver.got["disparity"][-1]
    depth = image_to_numpy(driver.got["depth"][-1])
    assert disp_msg.header.stamp.sec == 1 and disp_msg.header.frame_id == "left_optical"
    assert disp_msg.f == pytest.approx(camera.fx) and disp_msg.t == pytest.approx(camera.baseline)
    assert disp_msg.max_disparity == pytest.approx(CONFIGS["lite"].max_disparity)
    d = image_to_numpy(disp_msg.image)
    assert d.shape == (H, W) and depth.shape == (H, W)
    valid = d > disp_msg.min_disparity
    assert np.array_equal(valid, np.isfinite(depth)), "depth NaN exactly where DisparityImage is invalid"
    assert np.all(d[~valid] < disp_msg.min_disparity)
    np.testing.assert_allclose(depth[valid], disp_msg.f * disp_msg.t / d[valid], rtol=1e-5)

    # The node is a thin adapter: same pixels through the offline pipeline give the same disparity.
    model, _ = load_stereo_model("lite", weights)
    offline = StereoDepthPipeline(model)(left, right, camera)
    np.testing.assert_allclose(d[valid], offline.disparity[valid], atol=1e-4)
    np.testing.assert_array_equal(valid, offline.valid)

    unc = image_to_numpy(driver.got["uncertainty"][-1])
    assert np.all(np.isfinite(unc[valid])) and np.all(unc[valid] > 0)
    np.testing.assert_allclose(unc[valid], offline.depth_std[valid], rtol=1e-4)

    cloud = point_cloud_to_numpy(driver.got["points"][-1])
    assert cloud.shape == (H, W)
    np.testing.assert_allclose(cloud["z"][valid], depth[valid], rtol=1e-5)
    assert np.all(np.isnan(cloud["z"][~valid]))


@pytest.mark.parametrize("encoding", ["bgr8", "mono8"])
def test_other_encodings_and_padded_rows(ros, encoding: str) -> None:
    harness, node, driver = ros
    left, right = shifted_pair(H, W, 4, seed=2)
    channels = 1 if encoding == "mono8" else 3
    step = W * channels + 13  # row padding, as some drivers send
    msgs = stereo_messages(left, right, make_camera(W, H), 2_000_000_000 + channels, encoding, step=step)
    assert msgs[0].step == step
    assert send(harness, driver, msgs), f"{encoding} with padded rows produced no output"
    assert image_to_numpy(driver.got["disparity"][-1].image).shape == (H, W)


def problems(node: StereoDepthNode) -> dict[str, int]:
    return dict(node.health.problems)


def test_bad_input_is_reported_and_node_keeps_running(ros) -> None:
    harness, node, driver = ros
    camera = make_camera(W, H)
    left, right = shifted_pair(H, W, 5, seed=3)
    stamp = 3_000_000_000
    before = problems(node)

    # 1. unknown encoding
    msgs = list(stereo_messages(left, right, camera, stamp))
    msgs[0].encoding = msgs[2].encoding = "yuv_weird"
    publish_all(driver.pubs, msgs)
    assert harness.spin_until(
        lambda: problems(node).get("unsupported_encoding", 0) > before.get("unsupported_encoding", 0), 5
    )

    # 2. left/right size mismatch
    stamp += 1000
    l2, _ = shifted_pair(H, W, 5, seed=4)
    r_small = np.ascontiguousarray(right[:, : W - 8])
    msgs = list(stereo_messages(l2, r_small, camera, stamp))
    publish_all(driver.pubs, msgs)
    assert harness.spin_until(
        lambda: problems(node).get("size_mismatch", 0) > before.get("size_mismatch", 0), 5
    )

    # 3. truncated data
    stamp += 1000
    msgs = list(stereo_messages(left, right, camera, stamp))
    msgs[0].data = msgs[0].data[: len(msgs[0].data) // 2]
    publish_all(driver.pubs, msgs)
    assert harness.spin_until(
        lambda: problems(node).get("image_data_truncated", 0) > before.get("image_data_truncated", 0), 5
    )

    # 4. camera_info without a baseline
    stamp += 1000
    msgs = list(stereo_messages(left, right, camera, stamp))
    p = list(msgs[3].p)
    p[3] = 0.0
    msgs[3].p = p
    publish_all(driver.pubs, msgs)
    assert harness.spin_until(
        lambda: problems(node).get("camera_info_no_baseline", 0) > before.get("camera_info_no_baseline", 0), 5
    )

    # 5. camera_info missing: images arrive, no stereo set completes -> a warning naming the silent topics
    stamp += 1000
    msgs = stereo_messages(left, right, camera, stamp)
    for _ in range(3):
        driver.pubs[0].publish(msgs[0])
        driver.pubs[2].publish(msgs[2])
        harness.spin_for(0.25)
    assert harness.spin_until(
        lambda: problems(node).get("input_topics_silent", 0) > before.get("input_topics_silent", 0), 5
    )
    assert "camera_info" in node.health.last_error or "camera_info" in str(node.health.problems)

    # ... and a valid frame afterwards is still processed.
    stamp += 1000
    driver.clear()
    assert send(harness, driver, stereo_messages(left, right, camera, stamp))
    # Diagnostics report the problems with a WARN-or-worse level.
    assert harness.spin_until(
        lambda: any(
            any(kv.key == "problem size_mismatch" for kv in s.values)
            for a in driver.got["diag"]
            for s in a.status
        ),
        5,
    )


def test_duplicate_stamp_dropped_and_min_disparity_is_live(ros) -> None:
    harness, node, driver = ros
    camera = make_camera(W, H)
    left, right = shifted_pair(H, W, 5, seed=5)
    stamp = 9_000_000_000
    assert send(harness, driver, stereo_messages(left, right, camera, stamp))
    dup_before = problems(node).get("duplicate_stamp", 0)
    publish_all(driver.pubs, stereo_messages(left, right, camera, stamp))
    assert harness.spin_until(lambda: problems(node).get("duplicate_stamp", 0) > dup_before, 5)

    first = driver.got["disparity"][-1]
    d0 = image_to_numpy(first.image)
    threshold = float(np.median(d0[d0 >= first.min_disparity]))  # median of the valid pixels
    assert node.set_parameters([Parameter("min_disparity", value=threshold)])[0].successful
    bad = node.set_parameters([Parameter("input_qos", value="nonsense")])[0]
    assert not bad.successful and "input_qos" in bad.reason
    driver.clear()
    assert send(harness, driver, stereo_messages(left, right, camera, stamp + 1))
    msg = driver.got["disparity"][-1]
    assert msg.min_disparity == pytest.approx(threshold)
    depth = image_to_numpy(driver.got["depth"][-1])
    valid_before = float((d0 >= first.min_disparity).mean())
    assert np.isfinite(depth).mean() < 0.75 * valid_before, "raising min_disparity must invalidate pixels"
    node.set_parameters([Parameter("min_disparity", value=0.0)])


def test_local_refinement_parameters_are_live(ros, weights: Path) -> None:
    """Turning the refinement off, or changing it, applies to the next frame (as offline with the same
    setting); an even window is refused by the declared range."""
    harness, node, driver = ros
    camera = make_camera(W, H)
    left, right = shifted_pair(H, W, 6, seed=7)
    model, _ = load_stereo_model("lite", weights)
    stamp = 11_000_000_000
    try:
        for i, (changes, setting) in enumerate([
            ([Parameter("local_refinement.enabled", value=False)], None),
            ([Parameter("local_refinement.enabled", value=True),
              Parameter("local_refinement.radius", value=1),
              Parameter("local_refinement.min_zncc", value=0.2)],
             LocalRefinementConfig(radius=1, min_zncc=0.2)),
        ]):
            assert all(r.successful for r in node.set_parameters(changes))
            assert node.pipeline.local_refinement == setting
            driver.clear()
            assert send(harness, driver, stereo_messages(left, right, camera, stamp + i))
            d = image_to_numpy(driver.got["disparity"][-1].image)
            offline = StereoDepthPipeline(model, local_refinement=setting)(left, right, camera)
            np.testing.assert_allclose(d[offline.valid], offline.disparity[offline.valid], atol=1e-4)
            extra = node._diagnostic_extra()[0]  # what /diagnostics reports for the stage
            assert (extra["local refinement"] == "off") == (setting is None)
            assert float(extra["local refinement p50 (ms)"]) >= 0.0
        assert not node.set_parameters([Parameter("local_refinement.window", value=6)])[0].successful
    finally:
        node.set_parameters([Parameter(s.name, value=s.default) for s in LOCAL_REFINEMENT_PARAMS])
    assert node.pipeline.local_refinement == LocalRefinementConfig()


def test_diagnostics_summary_over_dds(ros) -> None:
    """Issue 7 item 4: input/output rate, inference latency, dropped / invalid counts and the backend, under
    fixed keys, in the /diagnostics the running node publishes (received here over DDS)."""
    harness, node, driver = ros
    camera = make_camera(W, H)
    left, right = shifted_pair(H, W, 5, seed=7)
    invalid_before = node.invalid_inputs
    driver.clear()
    for i in range(3):
        assert send(harness, driver, stereo_messages(left, right, camera, 20_000_000_000 + i * 50_000_000))
    bad = list(stereo_messages(left, right, camera, 20_500_000_000))
    bad[0].encoding = "32FC1"  # a depth map is not camera input: rejected, counted as invalid input
    publish_all(driver.pubs, bad)

    def reported() -> bool:
        values = diagnostic_values(driver.got["diag"], "stereo_depth")
        return bool(values) and int(values["invalid input count"]) > invalid_before

    assert harness.spin_until(reported, 5), diagnostic_values(driver.got["diag"], "stereo_depth")
    values = diagnostic_values(driver.got["diag"], "stereo_depth")
    check_summary_diagnostics(values)
    assert "torch" in values["backend"], values["backend"]
    assert float(values["input rate (Hz)"]) > 0 and float(values["output rate (Hz)"]) > 0
    assert 0 < float(values["inference latency p50 (ms)"]) <= float(values["inference latency p95 (ms)"])
    # The inference time is part of the whole callback's latency.
    assert float(values["inference latency p50 (ms)"]) <= float(values["latency max (ms)"])
    # Our synchronizer counts what it discards (earlier tests here sent incomplete / repeated sets).
    assert int(values["dropped (sync) count"]) == dropped_count(node._sync)
    assert values["problem not_camera_encoding"] != "0"


def test_approximate_sync(weights: Path) -> None:
    harness = RosHarness()
    try:
        node = harness.add(
            StereoDepthNode(
                "stereo_depth",
                context=harness.context,
                parameter_overrides=[
                    Parameter("weights", value=str(weights)),
                    Parameter("approximate_sync", value=True),
                    Parameter("approximate_sync_tolerance_seconds", value=0.02),
                ],
            )
        )
        driver = harness.add(Driver(harness.context))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
        camera = make_camera(W, H)
        left, right = shifted_pair(H, W, 5, seed=6)
        for i in range(3):
            msgs = stereo_messages(left, right, camera, 10_000_000_000 + i * 100_000_000)
            # the right camera is 5 ms late: exact sync would never match
            msgs[2].header.stamp.nanosec += 5_000_000
            msgs[3].header.stamp.nanosec += 5_000_000
            publish_all(driver.pubs, msgs)
            harness.spin_for(0.1)
        assert harness.spin_until(lambda: len(driver.got["depth"]) >= 3, 10)
    finally:
        harness.shutdown()


def test_corrupt_weights_leave_node_unconfigured(tmp_path: Path) -> None:
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00\x01 definitely not safetensors")
    harness = RosHarness()
    try:
        node = harness.add(
            StereoDepthNode(
                "stereo_depth_bad",
                context=harness.context,
                parameter_overrides=[Parameter("weights", value=str(bad))],
            )
        )
        result = node.trigger_configure()
        assert result != TransitionCallbackReturn.SUCCESS
        assert node.pipeline is None
        assert node.health.problems["model_load_failed"] == 1
        assert "broken.safetensors" in node.health.last_error
        # A fixed parameter and a second configure recover without restarting the process.
        missing = tmp_path / "missing.safetensors"
        node.set_parameters([Parameter("weights", value=str(missing))])
        assert node.trigger_configure() != TransitionCallbackReturn.SUCCESS
        assert math.isfinite(node.health.problems["model_load_failed"])
    finally:
        harness.shutdown()
