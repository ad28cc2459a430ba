"""A node that is inferring still answers (issue 20, item 5): lifecycle services and /diagnostics keep their
pace during a slow frame, and sets that arrive while it is busy are skipped and counted, not queued.

Real rclpy nodes over Fast DDS. The slow frame is the real pipeline behind a 3 s pause (what a large frame
on a small board costs), so the test does not depend on how fast this machine is.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lifecycle_msgs.srv import GetState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosutil import (
    Driver,
    RosHarness,
    diagnostic_values,
    make_camera,
    publish_all,
    shifted_pair,
    stereo_messages,
)

from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import save_stereo_model
from scene_perception.ros.stereo_depth_node import StereoDepthNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W = 48, 96
FRAME_S = 3.0
#: The issue's goal is 100 ms; the bound leaves room for a loaded 2-core CI machine. The measured
#: response times are printed (pytest -s) to compare with the goal.
RESPONSE_BOUND_S = 0.5


class SlowStereoDepthNode(StereoDepthNode):
    """The real node whose every frame takes at least FRAME_S seconds longer."""

    def _compute(self, left, right, camera, want_points):  # noqa: ANN001, ANN202
        time.sleep(FRAME_S)
        return super()._compute(left, right, camera, want_points)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "lite_slow.safetensors"
    save_stereo_model(GCNet(CONFIGS["lite"]), path, {"trained": False})
    return path


def test_services_and_diagnostics_answer_while_a_frame_is_inferred(weights: Path) -> None:
    harness = RosHarness()
    try:
        node = harness.add(SlowStereoDepthNode("slow_stereo", context=harness.context, parameter_overrides=[
            Parameter("weights", value=str(weights)), Parameter("num_threads", value=1),
            Parameter("diagnostics_period", value=0.2)]))
        driver = harness.add(Driver(harness.context))
        client = driver.create_client(GetState, "slow_stereo/get_state")
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert harness.spin_until(client.service_is_ready, 10.0)
        camera = make_camera(W, H)
        left, right = shifted_pair(H, W, 4, seed=3)
        harness.spin_for(1.0)  # discovery

        publish_all(driver.pubs, stereo_messages(left, right, camera, 1_000_000_000))
        assert harness.spin_until(lambda: node._worker.processing, 10.0)
        started = time.monotonic()
        diag_before = len(driver.got["diag"])
        # Three more sets while the first is computed: the newest waits, the two before it are skipped.
        for k in range(2, 5):
            publish_all(driver.pubs, stereo_messages(left, right, camera, k * 1_000_000_000))
            harness.spin_for(0.1)
        response_s = []
        while time.monotonic() - started < FRAME_S - 1.0:
            t0 = time.monotonic()
            future = client.call_async(GetState.Request())
            assert harness.spin_until(future.done, 5.0)
            response_s.append(time.monotonic() - t0)
            assert future.result().current_state.label == "active"
        busy_diag = len(driver.got["diag"]) - diag_before
        print(f"get_state answered in {[round(1000 * s) for s in response_s]} ms during a {FRAME_S} s frame; "
              f"{busy_diag} diagnostics messages meanwhile")
        assert node._worker.busy, "the first frame must still be in progress while the services were called"
        assert response_s and max(response_s) < RESPONSE_BOUND_S
        assert busy_diag >= 3  # 0.2 s period: the timer keeps running during inference

        # The first set and the newest one are published; the two in between were skipped and counted.
        assert harness.spin_until(lambda: len(driver.got["disparity"]) >= 2, 3 * FRAME_S + 10.0)
        harness.spin_for(0.6)
        stamps = [m.header.stamp.sec for m in driver.got["disparity"]]
        assert stamps == [1, 4], stamps
        values = diagnostic_values(driver.got["diag"], "slow_stereo")
        assert values.get("skipped (busy) count") == "2", values
        assert np.isfinite(float(values["inference latency p50 (ms)"]))
        # Deactivate waits for a frame in progress instead of releasing the network under it.
        publish_all(driver.pubs, stereo_messages(left, right, camera, 5_000_000_000))
        assert harness.spin_until(lambda: node._worker.processing, 10.0)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert not node._worker.busy and node.health.counters["outputs"] == 3
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert not node.health.problems["inference_error"]
    finally:
        harness.shutdown()
