"""The stereo node's live quality (issue 26 items 1-2), through real Fast DDS with real rclpy nodes.

The node runs the shipped (trained) lite weights on a textured plane: aligned frames must report a low
photometric error, a high left-right consistent share, no vertical offset, an OK level and a confidence image;
the same frames with the right image moved down one row must report an offset of about +1 px and WARN; frames
without a single valid pixel must read "unknown", never 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosutil import (
    QUALITY_KEYS,
    Driver,
    RosHarness,
    last_status,
    private_domain_id,
    quality_values_after,
    send_frames,
    shifted_pair,
)
from sensor_msgs.msg import Image

from scene_perception.ros.codec import image_to_numpy
from scene_perception.ros.live_quality import SGBM_KEY
from scene_perception.ros.stereo_depth_node import StereoDepthNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W, D = 96, 160, 6
KEYS = QUALITY_KEYS


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(private_domain_id())
    node = StereoDepthNode(
        "stereo_depth",
        context=harness.context,
        parameter_overrides=[
            Parameter("device", value="cpu"),
            Parameter("diagnostics_period", value=0.2),
            Parameter("log_throttle_seconds", value=0.0),
            Parameter("input_depth", value=10),
            Parameter("quality.enabled", value=True),
            Parameter("quality.publish_confidence", value=True),
            Parameter("quality.window", value=3),
        ],
    )
    harness.add(node)
    driver = harness.add(Driver(harness.context))
    driver.got["confidence"] = []
    driver.create_subscription(Image, "depth/confidence", driver.got["confidence"].append, 10)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.model_info.trained, "the test needs the shipped trained lite weights"
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
    assert harness.spin_until(lambda: node._pubs["confidence"].get_subscription_count() > 0, 10)
    yield harness, node, driver
    harness.shutdown()


def values_after(harness: RosHarness, driver: Driver, frames: int) -> tuple[dict[str, str], DiagnosticStatus]:
    return quality_values_after(harness, driver, "stereo_depth", frames)


def test_quality_keys_confidence_and_vertical_offset(ros) -> None:
    harness, node, driver = ros
    values, _ = values_after(harness, driver, 0)
    assert all(values[k] == "unknown" for k in (*KEYS, SGBM_KEY)), values  # nothing assessed: unknown, not 0

    left, right = shifted_pair(H, W, D, seed=4)
    driver.got["confidence"].clear()
    send_frames(harness, driver, left, right, 1_000_000_000)
    values, status = values_after(harness, driver, 3)
    photometric, consistent = float(values[KEYS[0]]), float(values[KEYS[1]])
    vertical = float(values[KEYS[2]])
    assert 0.0 <= photometric < node.params["quality.photometric_warn"], values
    assert node.params["quality.lr_consistent_warn"] < consistent <= 100.0, values
    assert abs(vertical) < 0.3, values
    assert 0.0 <= float(values[KEYS[3]]) < 0.3, values  # an aligned rig: the offsets do not vary either
    # The CPU pipeline's SGBM candidate, a second matcher, confirms the network's plane.
    assert node.params["quality.sgbm_agreement_warn"] < float(values[SGBM_KEY]) <= 100.0, values
    assert values["quality frames"] == "3 (0 unknown)"
    assert float(values["quality p50 (ms)"]) > 0
    assert status.level == DiagnosticStatus.OK, status.message

    # The confidence image: 32FC1, the frame's size and stamp, 0..1, 0 exactly where the disparity is invalid.
    assert harness.spin_until(lambda: len(driver.got["confidence"]) >= 3, 5)
    msg = driver.got["confidence"][-1]
    assert msg.encoding == "32FC1" and msg.header.frame_id == "left_optical"
    conf = image_to_numpy(msg)
    disparity = driver.got["disparity"][-1]
    valid = image_to_numpy(disparity.image) > disparity.min_disparity
    assert conf.shape == (H, W) and np.all((conf >= 0) & (conf <= 1))
    assert np.all(conf[~valid] == 0) and np.median(conf[valid]) > 0.3

    # The same frames with the right camera's image one row lower: a de-calibrated rig.
    right_low = np.concatenate([right[:1], right[:-1]])
    send_frames(harness, driver, left, right_low, 2_000_000_000)
    values, status = values_after(harness, driver, 3)
    assert float(values[KEYS[2]]) == pytest.approx(1.0, abs=0.3), values
    assert float(values[KEYS[3]]) < 0.3, values  # one shift for the whole image: no spread
    assert status.level == DiagnosticStatus.WARN and "vertical offset" in status.message, status.message
    assert float(values[KEYS[0]]) > photometric, values  # the misalignment also raises the residual

    # The network check: a second pass on the mirrored pair, reported as such.
    assert node.set_parameters([Parameter("quality.lr_check", value="network")])[0].successful
    send_frames(harness, driver, left, right, 3_000_000_000)
    values, status = values_after(harness, driver, 3)
    assert values["live quality"].startswith("on (network")
    assert 50.0 < float(values[KEYS[1]]) <= 100.0, values
    assert status.level == DiagnosticStatus.OK, status.message
    node.set_parameters([Parameter("quality.lr_check", value="uniqueness")])


def test_no_valid_pixel_is_unknown_not_zero_and_off_is_off(ros) -> None:
    harness, node, driver = ros
    unknown_before = node.health.counters["quality unknown frames"]
    # Every pixel invalid (no disparity std is that small): nothing to score.
    assert node.set_parameters([Parameter("max_uncertainty", value=1e-6)])[0].successful
    try:
        left, right = shifted_pair(H, W, D, seed=5)
        send_frames(harness, driver, left, right, 4_000_000_000)
        values, _ = values_after(harness, driver, 3)
        assert all(values[k] == "unknown" for k in KEYS), values
        assert values["quality frames"] == "3 (3 unknown)"
        assert node.health.counters["quality unknown frames"] >= unknown_before + 3
        assert not math.isnan(float(values["output rate (Hz)"]))  # the node kept publishing
        conf = image_to_numpy(driver.got["confidence"][-1]) if driver.got["confidence"] else None
        assert conf is not None and np.all(conf == 0)
    finally:
        node.set_parameters([Parameter("max_uncertainty", value=0.0)])

    assert node.set_parameters([Parameter("quality.enabled", value=False),
                                Parameter("quality.publish_confidence", value=False)])[0].successful
    driver.got["diag"].clear()
    assert harness.spin_until(lambda: last_status(driver, "stereo_depth") is not None, 5)
    values = {kv.key: kv.value for kv in last_status(driver, "stereo_depth").values}
    assert values["live quality"].startswith("off") and all(values[k] == "off" for k in KEYS), values


def test_every_nth_frame_is_assessed(ros) -> None:
    harness, node, driver = ros
    assert node.set_parameters([Parameter("quality.enabled", value=True),
                                Parameter("quality.publish_confidence", value=False),
                                Parameter("quality.window", value=20),
                                Parameter("quality.every", value=2)])[0].successful
    try:
        before = len(node._quality.window.frames)
        left, right = shifted_pair(H, W, D, seed=6)
        send_frames(harness, driver, left, right, 5_000_000_000, n=4)
        values, _ = values_after(harness, driver, before + 2)  # 4 frames, every 2nd assessed
        assert values["quality frames"].startswith(f"{before + 2} ")
    finally:
        node.set_parameters([Parameter("quality.every", value=1), Parameter("quality.window", value=3)])
