"""The SGBM baseline node's live quality (issue 26): the same keys as ``stereo_depth``, through real Fast DDS.

Aligned frames of a textured plane must read a low photometric error, a high left-right consistent share
(here the exact check: a second SGBM pass on the mirrored pair), no vertical offset and OK; the right image
one row lower must read an offset of about +1 px and WARN; the confidence image is 0 where SGBM gave nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosutil import (
    QUALITY_KEYS,
    Driver,
    RosHarness,
    private_domain_id,
    quality_values_after,
    send_frames,
    shifted_pair,
)
from sensor_msgs.msg import Image

from scene_perception.ros.codec import image_to_numpy
from scene_perception.ros.live_quality import SGBM_KEY
from scene_perception.ros.sgbm_node import SGBMDepthNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W, D = 96, 160, 6
KEYS = QUALITY_KEYS


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(private_domain_id())
    node = SGBMDepthNode("sgbm_depth", context=harness.context, parameter_overrides=[
        Parameter("max_disparity", value=32),
        Parameter("diagnostics_period", value=0.2),
        Parameter("input_depth", value=10),
        Parameter("quality.enabled", value=True),
        Parameter("quality.lr_check", value="network"),
        Parameter("quality.publish_confidence", value=True),
        Parameter("quality.window", value=3),
    ])
    harness.add(node)
    driver = harness.add(Driver(harness.context))
    driver.got["confidence"] = []
    driver.create_subscription(Image, "depth/confidence", driver.got["confidence"].append, 10)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
    assert harness.spin_until(lambda: node._pubs["confidence"].get_subscription_count() > 0, 10)
    yield harness, node, driver
    harness.shutdown()


def values_after(harness: RosHarness, driver: Driver, frames: int) -> tuple[dict[str, str], DiagnosticStatus]:
    return quality_values_after(harness, driver, "sgbm_depth", frames)


def test_sgbm_reports_the_same_quality_keys_and_warns_on_a_vertical_offset(ros) -> None:
    harness, node, driver = ros
    left, right = shifted_pair(H, W, D, seed=4)
    send_frames(harness, driver, left, right, 1_000_000_000)
    values, status = values_after(harness, driver, 3)
    assert values["live quality"].startswith("on (network")
    assert 0.0 <= float(values[KEYS[0]]) < node.params["quality.photometric_warn"], values
    assert node.params["quality.lr_consistent_warn"] < float(values[KEYS[1]]) <= 100.0, values
    assert abs(float(values[KEYS[2]])) < 0.3, values
    assert SGBM_KEY not in values, values  # the baseline has no second matcher to ask
    assert status.level == DiagnosticStatus.OK, status.message
    assert values["uncertainty"].startswith("none")

    assert harness.spin_until(lambda: len(driver.got["confidence"]) >= 3, 5)
    conf = image_to_numpy(driver.got["confidence"][-1])
    disparity = driver.got["disparity"][-1]
    d = image_to_numpy(disparity.image)
    valid = np.isfinite(d) & (d > disparity.min_disparity)
    assert conf.shape == (H, W) and np.all((conf >= 0) & (conf <= 1))
    assert np.all(conf[~valid] == 0) and valid.any() and np.median(conf[valid]) > 0.3

    right_low = np.concatenate([right[:1], right[:-1]])
    send_frames(harness, driver, left, right_low, 2_000_000_000)
    values, status = values_after(harness, driver, 3)
    assert float(values[KEYS[2]]) == pytest.approx(1.0, abs=0.3), values
    assert status.level == DiagnosticStatus.WARN and "vertical offset" in status.message, status.message
