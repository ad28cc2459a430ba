"""Faults around the stereo node (issue 8, item 2): bad weights, a corrupt engine cache, a vanishing
publisher, and ``publish()`` raising.  Real files, real rclpy nodes over Fast DDS, no mocks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosutil import Driver, RosHarness, make_camera, private_domain_id, send, shifted_pair, stereo_messages
from sensor_msgs.msg import CameraInfo, Image

from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import save_stereo_model
from scene_perception.ros.stereo_depth_node import StereoDepthNode

pytestmark = pytest.mark.ros

H, W = 48, 96
CAMERA = make_camera(W, H)
LEFT, RIGHT = shifted_pair(H, W, 5, seed=21)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "lite_faults.safetensors"
    save_stereo_model(GCNet(CONFIGS["lite"]), path, {"trained": False})
    return path


def make_node(harness: RosHarness, name: str, weights: str, **params) -> StereoDepthNode:
    overrides = [Parameter("weights", value=weights), Parameter("num_threads", value=1)]
    overrides.append(Parameter("input_depth", value=10))  # bursts: every message must arrive
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return harness.add(StereoDepthNode(name, context=harness.context, parameter_overrides=overrides))


# ------------------------------------------------------------------------------------ (a) weights files
def bad_weights(tmp: Path, good: Path) -> list[tuple[str, Path, str]]:
    """(case, weights path, what the error must say) for every way the weights parameter can be wrong."""
    data = good.read_bytes()
    card = json.loads(good.with_suffix(".json").read_text())
    cases = []

    def file(name: str, content: bytes, card_fields: dict | None = None) -> Path:
        path = tmp / name
        path.write_bytes(content)
        if card_fields is not None:
            path.with_suffix(".json").write_text(json.dumps({**card, **card_fields}))
        return path

    cases.append(("missing", tmp / "missing.safetensors", "does not exist"))
    cases.append(
        ("garbage", file("garbage.safetensors", b"\x00\x01 not safetensors"), "corrupt or truncated")
    )
    # Truncated without a card: only safetensors' own header/size check can notice.
    cases.append(("truncated", file("trunc.safetensors", data[: len(data) // 2]), "corrupt or truncated"))
    # Truncated next to its card: the sha256 check catches it before a byte is parsed.
    cases.append(("truncated, card", file("trunc_card.safetensors", data[:-100], {}), "sha256 mismatch"))
    cases.append(
        ("card sha256 wrong", file("wrongsha.safetensors", data, {"sha256": "0" * 64}), "sha256 mismatch")
    )
    cases.append(("empty", file("empty.safetensors", b""), "is empty"))
    cases.append(("pickle suffix", file("model.pt", data), "pickles"))
    (tmp / "dir.safetensors").mkdir()
    cases.append(("directory", tmp / "dir.safetensors", "is a directory"))
    os.mkfifo(tmp / "fifo.safetensors")  # would block forever in open(); must be refused before that
    cases.append(("fifo", tmp / "fifo.safetensors", "FIFO"))
    return cases


def test_bad_weights_leave_node_unconfigured_then_recover(weights: Path, tmp_path: Path) -> None:
    harness = RosHarness(private_domain_id())
    try:
        node = make_node(harness, "stereo_depth_weights", str(weights), diagnostics_period=0.2)
        driver = harness.add(Driver(harness.context))
        cases = bad_weights(tmp_path, weights)
        for i, (case, path, message) in enumerate(cases):
            assert node.set_parameters([Parameter("weights", value=str(path))])[0].successful
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE, case
            assert node.pipeline is None, case
            assert node.health.problems["model_load_failed"] == i + 1, case
            assert path.name in node.health.last_error and message in node.health.last_error, (
                case,
                node.health.last_error,
            )

        # /diagnostics says ERROR with the reason while the node is unconfigured.
        def error_reported() -> bool:
            return any(
                st.level == DiagnosticStatus.ERROR and "fifo.safetensors" in st.message
                for array in driver.got["diag"]
                for st in array.status
            )

        assert harness.spin_until(error_reported, 10)
        # Fixing the parameter recovers without restarting the process (the node was left unconfigured).
        node.set_parameters([Parameter("weights", value=str(weights))])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.pipeline is not None and node.model_info.weights_path == weights
    finally:
        harness.shutdown()


@pytest.mark.slow
def test_engine_cache_dir_is_validated_and_corrupt_onnx_rebuilt(weights: Path, tmp_path: Path, capfd) -> None:
    """onnxruntime backend: unsafe cache dirs fail configure; a corrupted cached graph is re-exported."""
    harness = RosHarness(private_domain_id())
    try:
        shared = tmp_path / "shared"
        shared.mkdir()
        node = make_node(
            harness,
            "stereo_depth_ort",
            str(weights),
            backend="onnxruntime",
            device="cpu",
            engine_cache_dir=str(shared),
        )
        for mode in (0o777, 0o1777):  # world-writable, with or without the sticky bit
            shared.chmod(mode)
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert "world-writable" in node.health.last_error and str(shared) in node.health.last_error
        shared.chmod(0o755)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        driver = harness.add(Driver(harness.context))
        assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
        assert send(harness, driver, stereo_messages(LEFT, RIGHT, CAMERA, 1_000_000_000), timeout=60)
        [graph] = shared.glob(f"lite_{H}x{W}_fp32_*.onnx")  # exported on the first frame
        graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])

        capfd.readouterr()
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
        assert send(harness, driver, stereo_messages(LEFT, RIGHT, CAMERA, 2_000_000_000), timeout=60)
        err = capfd.readouterr().err
        assert f"cached ONNX graph {graph} is corrupt" in err and "rebuilding it" in err, err[-2000:]
        assert graph.stat().st_size > 0 and "engine_build_failed" not in node.health.problems
    finally:
        harness.shutdown()


# --------------------------------------------------------------- (c) publishers vanish, (d) publish raises
@pytest.fixture(scope="module")
def ros(weights: Path):
    harness = RosHarness(private_domain_id())
    node = make_node(harness, "stereo_depth", str(weights), log_throttle_seconds=0.0)
    driver = harness.add(Driver(harness.context))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
    yield harness, node, driver
    harness.shutdown()


def test_publisher_that_vanishes_and_returns_is_picked_up(ros) -> None:
    harness, node, driver = ros
    assert send(harness, driver, stereo_messages(LEFT, RIGHT, CAMERA, 10_000_000_000))
    # The camera driver goes away: its publishers are destroyed and the node sees no publisher...
    for pub in driver.pubs:
        driver.destroy_publisher(pub)
    assert harness.spin_until(lambda: node.count_publishers("left/image_rect") == 0, 10)
    harness.spin_for(0.3)
    outputs = node.health.counters["outputs"]
    # ... and comes back (new publishers, same topics): frames flow again without touching the node.
    q = qos_profile_sensor_data
    driver.pubs = [
        driver.create_publisher(Image, "left/image_rect", q),
        driver.create_publisher(CameraInfo, "left/camera_info", q),
        driver.create_publisher(Image, "right/image_rect", q),
        driver.create_publisher(CameraInfo, "right/camera_info", q),
    ]
    assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
    for i in range(3):
        assert send(harness, driver, stereo_messages(LEFT, RIGHT, CAMERA, 11_000_000_000 + i))
    assert node.health.counters["outputs"] == outputs + 3


def test_publish_error_is_caught_counted_and_other_topics_still_publish(ros) -> None:
    """A publisher whose handle is gone makes rclpy's ``publish()`` raise (InvalidHandle, a RuntimeError
    like RCLError): the node counts ``publish_error``, keeps publishing the other topics, and a lifecycle
    cleanup + configure restores it."""
    harness, node, driver = ros
    # Destroy the node's real uncertainty publisher underneath it (what a racing cleanup would do).
    assert node.destroy_publisher(node._pubs["uncertainty"])
    driver.clear()
    before = node.health.problems["publish_error"]
    assert send(harness, driver, stereo_messages(LEFT, RIGHT, CAMERA, 20_000_000_000))
    assert node.health.problems["publish_error"] == before + 1
    assert "publishing uncertainty failed: InvalidHandle" in node.health.last_error
    assert send(harness, driver, stereo_messages(LEFT, RIGHT, CAMERA, 20_000_000_001))
    assert node.health.problems["publish_error"] == before + 2
    harness.spin_for(0.2)

    def at(topic: str, sec: int) -> int:  # messages of this test only (earlier frames may still arrive)
        return sum(m.header.stamp.sec == sec for m in driver.got[topic])

    assert at("uncertainty", 20) == 0 and at("depth", 20) == 2 and at("disparity", 20) == 2

    for transition in ("deactivate", "cleanup", "configure", "activate"):
        assert getattr(node, f"trigger_{transition}")() == TransitionCallbackReturn.SUCCESS, transition
    assert harness.spin_until(lambda: node._pubs["uncertainty"].get_subscription_count() > 0, 10)
    assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
    assert send(harness, driver, stereo_messages(LEFT, RIGHT, CAMERA, 21_000_000_000))
    assert harness.spin_until(lambda: at("uncertainty", 21) == 1, 5)
    assert node.health.problems["publish_error"] == before + 2
