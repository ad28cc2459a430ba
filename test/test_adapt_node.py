"""The stereo node's online adaptation (``adapt.*``, issue 26 item 3) through real Fast DDS.

The node starts from the shipped lite weights with a damaged refinement head (noisy disparities, a large
photometric error), so the adapter has something to fix: a round must be accepted, the version saved with a
card, loaded with the usual checks and served, while the node keeps publishing every frame.  A node without
a trained weights file refuses to adapt, says why, and keeps working.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosutil import (
    Driver,
    RosHarness,
    diagnostic_values,
    make_camera,
    private_domain_id,
    send,
    stereo_messages,
)

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import load_stereo_model, save_stereo_model
from scene_perception.ros.stereo_depth_node import StereoDepthNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W = 128, 256  # the adapter's default crop


def _node(harness: RosHarness, weights: Path, out_dir: Path) -> StereoDepthNode:
    node = StereoDepthNode("stereo_depth", context=harness.context, parameter_overrides=[
        Parameter("device", value="cpu"),
        Parameter("weights", value=str(weights)),
        Parameter("diagnostics_period", value=0.2),
        Parameter("input_depth", value=10),
        Parameter("adapt.enabled", value=True),
        Parameter("adapt.every", value=1),
        Parameter("adapt.steps_per_round", value=10),
        Parameter("adapt.lr", value=3e-4),
        Parameter("adapt.min_improvement", value=0.0),
        Parameter("adapt.min_holdout_frames", value=1),
        Parameter("adapt.out_dir", value=str(out_dir)),
    ])
    return harness.add(node)


def _frames(n: int, first_stamp_ns: int = 1_000_000_000) -> list[tuple]:
    camera = make_camera(W, H)
    out = []
    for i in range(n):
        s = make_stereo_sample(30_000_000 + i, width=W, height=H, max_disparity=24)
        out.append(stereo_messages(s.left, s.right, camera, first_stamp_ns + i * 50_000_000))
    return out


def test_accepted_versions_are_saved_and_served(tmp_path: Path) -> None:
    model, info = load_stereo_model("lite")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "refine" in name and p.ndim > 1:
                p.add_(0.5 * p.std() * torch.randn_like(p))
    damaged = tmp_path / "damaged.safetensors"
    save_stereo_model(model, damaged, {"trained": True})
    harness = RosHarness(private_domain_id())
    try:
        node = _node(harness, damaged, tmp_path / "adapt")
        driver = harness.add(Driver(harness.context))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
        frames = _frames(10)
        for messages in frames:  # every frame is published: the adapter never holds the callback up
            assert send(harness, driver, messages)
        i = 0
        # Keep the stream going (slowly) until an accepted version is served: the swap happens between frames.
        while not harness.spin_until(lambda: node._adapt.serving is not None, 3.0) and i < 60:
            assert send(harness, driver, frames[i % len(frames)], timeout=20)
            i += 1
        adapt = node._adapt
        assert adapt.serving is not None, adapt.status()
        served = Path(adapt.serving)
        assert served.parent == tmp_path / "adapt" and served.is_file()
        card = json.loads(served.with_suffix(".json").read_text())
        assert card["training"]["adapted_from"]["weights"] == str(damaged)
        assert card["metrics"]["holdout_photometric_after"] < card["metrics"]["holdout_photometric_before"]
        assert node.pipeline.model is not None
        loaded, _ = load_stereo_model("lite", served)
        state = node.pipeline.model.state_dict()
        assert all(torch.equal(state[k].cpu(), v) for k, v in loaded.state_dict().items())
        # The adapted pipeline publishes (a stamp never sent: the loop above may have ended on frames[0], and
        # a repeated stamp is dropped as a duplicate).
        assert send(harness, driver, _frames(1, first_stamp_ns=9_000_000_000)[0])
        driver.got["diag"].clear()
        assert harness.spin_until(lambda: "adaptation serving" in diagnostic_values(driver.got["diag"],
                                                                                    "stereo_depth"), 5)
        values = diagnostic_values(driver.got["diag"], "stereo_depth")
        assert values["adaptation serving"] == str(served) and "accepted" in values["adaptation rounds"]
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node._adapt is None  # the adapter process was stopped
    finally:
        harness.shutdown()


def test_untrained_weights_are_not_adapted(tmp_path: Path) -> None:
    untrained = tmp_path / "untrained.safetensors"
    save_stereo_model(GCNet(CONFIGS["lite"]), untrained, {"trained": False})
    harness = RosHarness(private_domain_id())
    try:
        node = _node(harness, untrained, tmp_path / "adapt")
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS  # the node itself still works
        assert node._adapt is None and node.health.problems["adaptation_failed"] == 1
        node.trigger_cleanup()
    finally:
        harness.shutdown()
