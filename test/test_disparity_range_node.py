"""Near objects and far points through the live node (issue 20, items 1 and 2), over Fast DDS.

A rendered pair whose nearest surfaces reach ~150 px, beyond lite's 128 px range: by default nothing valid
exceeds the message's ``max_disparity``; with the scene's ``max_disparity`` set live the node matches a
shrunk pair and reaches the near surfaces (fewer gross errors). The default ``max_depth`` (auto) keeps
sub-pixel disparities, i.e. phantom points hundreds of km away, out of disparity, depth and points.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosutil import Driver, RosHarness, last_status, send, stereo_messages

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.ros.codec import image_to_numpy
from scene_perception.ros.stereo_depth_node import StereoDepthNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SAMPLE = make_stereo_sample(41, width=384, height=192, max_disparity=170.0, min_disparity=20.0)


def test_range_and_depth_limits_in_the_published_messages() -> None:
    gt = SAMPLE.disparity
    assert (gt > 128).mean() > 0.1  # the scene really has near surfaces beyond the network's range
    harness = RosHarness()
    try:
        node = harness.add(StereoDepthNode("range_stereo", context=harness.context, parameter_overrides=[
            Parameter("num_threads", value=1), Parameter("input_depth", value=5),
            Parameter("diagnostics_period", value=0.2)]))
        driver = harness.add(Driver(harness.context))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        harness.spin_for(1.0)

        def publish(stamp_s: int) -> tuple[np.ndarray, object, np.ndarray]:
            msgs = stereo_messages(SAMPLE.left, SAMPLE.right, SAMPLE.camera, stamp_s * 1_000_000_000)
            assert send(harness, driver, msgs, timeout=60.0)
            msg = driver.got["disparity"][-1]
            d = image_to_numpy(msg.image).astype(np.float32)
            depth = image_to_numpy(driver.got["depth"][-1]).astype(np.float32)
            return d, msg, depth

        def network_run(key: str = "network run (last frame)") -> str:
            """What /diagnostics says under ``key`` of the last frame (after that frame's outputs)."""
            driver.got["diag"].clear()

            def reported() -> bool:
                st = last_status(driver, "range_stereo")
                return st is not None and any(kv.key == key for kv in st.values)

            assert harness.spin_until(reported, 10)
            return {kv.key: kv.value for kv in last_status(driver, "range_stereo").values}[key]

        d, msg, depth = publish(1)
        assert network_run().startswith("as trained: scale 1.00, network range 128 px")
        values = {kv.key: kv.value for kv in last_status(driver, "range_stereo").values}
        assert re.fullmatch(r"\d\.\d\d \(zncc 0\.\d{4}, changed pixels\)",
                            values["one-pass std factor (last frame)"])
        valid = d > msg.min_disparity
        assert msg.max_disparity == 128.0 and msg.min_disparity == 1.0  # lite's range; max_depth auto: 1 px
        assert d[valid].max() <= msg.max_disparity
        assert np.nanmax(depth) <= SAMPLE.camera.focal_baseline / 1.0
        bad_default = float((np.abs(d - gt)[valid] > 2).mean())

        # The scene's range, set live: the network runs on the pair shrunk to 2/3.
        result = node.set_parameters([Parameter("max_disparity", value=192.0)])
        assert result[0].successful, result[0].reason
        d, msg, _ = publish(2)
        valid = d > msg.min_disparity
        assert msg.max_disparity == 192.0 and d[valid].max() <= 192.0
        assert (valid & (gt > 128)).mean() > 0.05  # the near surfaces are reached now
        bad_scaled = float((np.abs(d - gt)[valid] > 2).mean())
        assert network_run() == "pair shrunk: scale 0.67, network range 128 px (192 px of the frame)"
        values = {kv.key: kv.value for kv in last_status(driver, "range_stereo").values}
        assert values["one-pass std factor (last frame)"] == "1 (the frame was not refined once)"
        print(f"bad-2 among valid pixels: default {bad_default:.3f}, max_disparity 192 {bad_scaled:.3f}")
        assert bad_scaled < bad_default

        # extend_range, live: the network widens its range to 192 and runs on the whole pair instead.
        assert node.set_parameters([Parameter("extend_range", value=True)])[0].successful
        d, msg, _ = publish(3)
        valid = d > msg.min_disparity
        assert msg.max_disparity == 192.0 and d[valid].max() <= 192.0
        assert node.pipeline is not None and node.pipeline.engine.max_disparity == 192
        assert (valid & (gt > 128)).mean() > 0.05
        bad_wide = float((np.abs(d - gt)[valid] > 2).mean())
        assert network_run() == "range widened: scale 1.00, network range 192 px (192 px of the frame)"
        print(f"bad-2 among valid pixels, extend_range: {bad_wide:.3f}")
        assert node.set_parameters([Parameter("extend_range", value=False)])[0].successful

        # An explicit max_depth: nothing farther is published, in depth or in the disparity message.
        z_max = float(np.nanpercentile(SAMPLE.depth, 50))
        assert node.set_parameters([Parameter("max_depth", value=z_max)])[0].successful
        d, msg, depth = publish(6)
        floor = SAMPLE.camera.focal_baseline / z_max
        assert msg.min_disparity == pytest.approx(floor, rel=1e-5)  # a float32 field
        assert np.nanmax(depth) <= z_max * (1 + 1e-5)
        assert (d[d > msg.min_disparity] > floor * (1 - 1e-5)).all()

        # far_sigma, live: pixels within K std of that floor are dropped too (their depth is unbounded).
        assert node.set_parameters([Parameter("far_sigma", value=3.0)])[0].successful
        _, _, depth_far = publish(7)
        kept, kept_far = np.isfinite(depth).sum(), np.isfinite(depth_far).sum()
        assert 0 < kept_far < kept
        assert np.isfinite(depth[np.isfinite(depth_far)]).all()  # a subset: nothing new appears

        # The view-residual gate, live: a threshold below any frame's residual publishes the network alone.
        gate = Parameter("local_refinement.max_view_residual", value=1e-4)
        assert node.set_parameters([gate])[0].successful
        publish(8)
        assert network_run("refinement gate (last frame)").startswith("network alone: view residual 0.")
    finally:
        harness.shutdown()
