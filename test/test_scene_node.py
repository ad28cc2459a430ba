"""The scene lifecycle node, driven through real Fast DDS by real rclpy nodes.

A driver publishes camera images on ``left/image_rect`` and records every output. The node must be a thin
adapter: its labels / instances / depth equal the offline :class:`ScenePipeline`'s on the same pixels, every
output carries the input's header at the input's size, the overlay is the documented blend, the label list
reaches a subscriber that joins late, ``mc_samples`` switches the epistemic outputs on and off at run time,
and malformed input or bad weights are reported without taking the node down.

The weights are a seeded random-init ``tiny`` multi-task net saved with ``models/weights.py`` (the node's
plumbing is under test here, not the model's accuracy).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosutil import RosHarness, check_summary_diagnostics, diagnostic_values, header, private_domain_id
from sensor_msgs.msg import Image

from scene_perception.data.world import CLASSES
from scene_perception.models.multitask import CONFIGS, MultiTaskNet
from scene_perception.models.weights import save_scene_model
from scene_perception.msg import LabelInfo
from scene_perception.pipelines.scene import ScenePipeline
from scene_perception.ros.codec import image_to_numpy, numpy_to_image
from scene_perception.ros.params import SCENE_PARAMS
from scene_perception.ros.qos import latched_qos
from scene_perception.ros.runner import node_types, nodes_from_config, run_nodes
from scene_perception.ros.scene_node import (
    LABEL_INFO_TOPIC,
    OUTPUTS,
    SceneNode,
    overlay_labels,
    palette_array,
)

ROOT = Path(__file__).resolve().parents[1]
H, W = 44, 70  # not multiples of the net's size divisor (8): outputs must still come back at H x W
ALWAYS = ("labels", "color", "instances", "aleatoric", "depth", "depth_variance")
EPISTEMIC = ("uncertainty", "depth_epistemic")
ENCODING = {
    "labels": "mono8",
    "color": "rgb8",
    "instances": "16UC1",
    **{k: "32FC1" for k in ("aleatoric", "depth", "depth_variance", *EPISTEMIC)},
}


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "scene_test.safetensors"
    save_scene_model(MultiTaskNet(CONFIGS["tiny"]), path, {"trained": False})
    return path


class SceneDriver(Node):
    """Publishes camera images and records every output of the scene node by key."""

    def __init__(self, context) -> None:  # noqa: ANN001
        super().__init__("scene_driver", context=context)
        self.pub = self.create_publisher(Image, "left/image_rect", qos_profile_sensor_data)
        self.got: dict[str, list] = {k: [] for k in (*OUTPUTS, "diag")}
        for key, topic in OUTPUTS.items():
            self.create_subscription(Image, topic, self.got[key].append, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.got["diag"].append, 10)

    def at(self, key: str, stamp_ns: int) -> list[Image]:
        return [
            m
            for m in self.got[key]
            if m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == stamp_ns
        ]


@pytest.fixture(scope="module")
def ros(weights: Path):
    harness = RosHarness(private_domain_id())
    node = SceneNode(
        "scene",
        context=harness.context,
        parameter_overrides=[
            Parameter("weights", value=str(weights)),
            Parameter("device", value="cpu"),
            Parameter("diagnostics_period", value=0.2),
            Parameter("log_throttle_seconds", value=0.0),
            Parameter("input_depth", value=10),  # tests publish bursts and need every message
        ],
    )
    harness.add(node)
    driver = harness.add(SceneDriver(harness.context))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert harness.spin_until(lambda: driver.pub.get_subscription_count() > 0, 10)
    assert harness.spin_until(lambda: all(node._pubs[k].get_subscription_count() > 0 for k in OUTPUTS), 10)
    yield harness, node, driver
    harness.shutdown()


def send(harness: RosHarness, driver: SceneDriver, msg: Image, keys=ALWAYS, timeout: float = 10.0) -> bool:
    stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
    driver.pub.publish(msg)
    return harness.spin_until(lambda: all(driver.at(k, stamp) for k in keys), timeout)


@pytest.mark.ros
def test_outputs_match_offline_pipeline_with_input_header_and_size(ros, weights: Path) -> None:
    harness, node, driver = ros
    rgb = image(1)
    stamp = 1_000_000_007
    assert send(harness, driver, numpy_to_image(rgb, "rgb8", header(stamp, "cam_optical")))
    out = {k: driver.at(k, stamp)[-1] for k in ALWAYS}
    for key, msg in out.items():
        assert msg.header.frame_id == "cam_optical", key
        assert (msg.height, msg.width, msg.encoding) == (H, W, ENCODING[key]), key
    harness.spin_for(0.2)
    assert not any(driver.at(k, stamp) for k in EPISTEMIC), "epistemic outputs with mc_samples = 0"

    offline = ScenePipeline.from_weights(weights, device="cpu")(rgb)
    labels = image_to_numpy(out["labels"])
    np.testing.assert_array_equal(labels, offline.labels)
    assert labels.max() < len(CLASSES)
    np.testing.assert_array_equal(image_to_numpy(out["instances"]), offline.instances)
    np.testing.assert_allclose(image_to_numpy(out["depth"]), offline.depth, rtol=1e-5)
    np.testing.assert_allclose(image_to_numpy(out["depth_variance"]), offline.depth_variance, rtol=1e-5)
    np.testing.assert_allclose(image_to_numpy(out["aleatoric"]), offline.semantic_aleatoric, rtol=1e-5)
    # The overlay is the documented blend with the data set's class colours (default alpha 0.5).
    colours = np.array([c.rgb for c in CLASSES], np.float32)[labels]
    expected = np.clip(np.rint(0.5 * rgb.astype(np.float32) + 0.5 * colours), 0, 255)
    np.testing.assert_array_equal(image_to_numpy(out["color"]), expected.astype(np.uint8))


@pytest.mark.ros
def test_bgr_with_padded_rows_and_mono_are_read_as_camera_images(ros) -> None:
    harness, node, driver = ros
    rgb = image(2)
    ref_stamp, bgr_stamp, mono_stamp = 2_000_000_000, 2_000_000_001, 2_000_000_002
    assert send(harness, driver, numpy_to_image(rgb, "rgb8", header(ref_stamp)), keys=("labels",))
    bgr = numpy_to_image(rgb[..., ::-1].copy(), "bgr8", header(bgr_stamp), step=3 * W + 5)
    assert send(harness, driver, bgr, keys=("labels",))
    np.testing.assert_array_equal(
        image_to_numpy(driver.at("labels", bgr_stamp)[-1]), image_to_numpy(driver.at("labels", ref_stamp)[-1])
    )
    assert send(harness, driver, numpy_to_image(rgb[..., 1].copy(), "mono8", header(mono_stamp)))
    assert image_to_numpy(driver.at("color", mono_stamp)[-1]).shape == (H, W, 3)


@pytest.mark.ros
def test_label_info_reaches_a_late_subscriber(ros) -> None:
    harness, _, _ = ros
    late = harness.add(Node("late_listener", context=harness.context))
    got: list[LabelInfo] = []
    late.create_subscription(LabelInfo, LABEL_INFO_TOPIC, got.append, latched_qos(1))
    try:
        assert harness.spin_until(lambda: bool(got), 10), "transient-local label_info not delivered"
        msg = got[0]
        # vision_msgs' fields: class_id is the value in semantic/labels, threshold 0 (arg-max, no cut).
        assert [(c.class_id, c.class_name) for c in msg.class_map] == [(c.id, c.name) for c in CLASSES]
        assert msg.threshold == 0.0
        harness.spin_for(0.3)
        assert len(got) == 1, "published once on activate, not per frame"
    finally:
        harness.remove(late)


@pytest.mark.ros
def test_mc_samples_and_overlay_alpha_change_at_runtime(ros) -> None:
    harness, node, driver = ros
    rgb = image(3)
    assert not node.set_parameters([Parameter("mc_samples", value=65)])[0].successful  # range 0..64
    assert node.set_parameters([Parameter("mc_samples", value=4)])[0].successful
    assert node.pipeline.mc_samples == 4
    stamp = 3_000_000_000
    assert send(harness, driver, numpy_to_image(rgb, "rgb8", header(stamp)), keys=(*ALWAYS, *EPISTEMIC))
    for key in EPISTEMIC:
        msg = driver.at(key, stamp)[-1]
        assert (msg.height, msg.width, msg.encoding) == (H, W, "32FC1"), key
        values = image_to_numpy(msg)
        assert np.all(np.isfinite(values)) and np.all(values >= 0), key
    # Mutual information is bounded by the label entropy, ln(number of classes).
    mi = image_to_numpy(driver.at("uncertainty", stamp)[-1])
    assert mi.max() <= np.log(len(CLASSES)) + 1e-4 and mi.max() > 0

    assert node.set_parameters([Parameter("mc_samples", value=0), Parameter("overlay_alpha", value=1.0)])[
        0
    ].successful
    stamp += 1
    assert send(harness, driver, numpy_to_image(rgb, "rgb8", header(stamp)))
    harness.spin_for(0.2)
    assert not any(driver.at(k, stamp) for k in EPISTEMIC), "epistemic outputs after mc_samples back to 0"
    labels = image_to_numpy(driver.at("labels", stamp)[-1])
    palette = palette_array(tuple(c.rgb for c in CLASSES))
    np.testing.assert_array_equal(image_to_numpy(driver.at("color", stamp)[-1]), palette[labels])
    node.set_parameters([Parameter("overlay_alpha", value=0.5)])


@pytest.mark.ros
def test_bad_input_is_counted_and_node_keeps_running(ros) -> None:
    harness, node, driver = ros
    rgb = image(4)
    before_invalid = node.invalid_inputs
    stamp = 4_000_000_000
    unknown = numpy_to_image(rgb, "rgb8", header(stamp))
    unknown.encoding = "yuv_weird"
    truncated = numpy_to_image(rgb, "rgb8", header(stamp + 1))
    truncated.data = truncated.data[: len(truncated.data) // 2]
    empty = Image(header=header(stamp + 2), encoding="rgb8", height=0, width=0, step=0)
    depth_map = numpy_to_image(np.ones((H, W), np.float32), "32FC1", header(stamp + 3))
    cases = {
        "unsupported_encoding": (unknown, "input image encoding 'yuv_weird' is unknown"),
        "image_data_truncated": (truncated, "(truncated?)"),
        "empty_image": (empty, "input image is empty (0x0)"),
        "not_camera_encoding": (depth_map, "'32FC1' is a valid ROS encoding but not a camera image"),
    }
    kinds = tuple(cases)
    for kind, (msg, text) in cases.items():
        n = node.health.problems[kind]
        driver.pub.publish(msg)
        assert harness.spin_until(lambda k=kind, n=n: node.health.problems[k] > n, 5), kind
        assert text in node.health.last_error, (kind, node.health.last_error)
    assert node.invalid_inputs == before_invalid + 4
    # A pipeline failure (here: an mc_samples value the pipeline refuses, set behind the parameter's range
    # check) costs that frame only.
    node.pipeline.mc_samples = 1000
    n = node.health.problems["inference_error"]
    driver.pub.publish(numpy_to_image(rgb, "rgb8", header(stamp + 5)))
    assert harness.spin_until(lambda: node.health.problems["inference_error"] == n + 1, 5)
    node.pipeline.mc_samples = 0
    # ... and a valid frame afterwards is still processed.
    assert send(harness, driver, numpy_to_image(rgb, "rgb8", header(stamp + 10)))

    def reported() -> bool:
        values = diagnostic_values(driver.got["diag"], "scene")
        return all(f"problem {k}" in values for k in kinds) and values.get("invalid input count") == str(
            node.invalid_inputs
        )

    assert harness.spin_until(reported, 5)
    values = diagnostic_values(driver.got["diag"], "scene")
    check_summary_diagnostics(values)
    assert values["backend"].startswith("torch") and "on cpu" in values["backend"]
    assert values["model"] == "scene_test" and values["trained"] == "False"


@pytest.mark.ros
def test_publish_error_is_counted_and_other_topics_still_publish(ros) -> None:
    harness, node, driver = ros
    assert node.destroy_publisher(node._pubs["aleatoric"])
    before = node.health.problems["publish_error"]
    stamp = 5_000_000_000
    keys = tuple(k for k in ALWAYS if k != "aleatoric")
    assert send(harness, driver, numpy_to_image(image(5), "rgb8", header(stamp)), keys=keys)
    assert node.health.problems["publish_error"] == before + 1
    assert "publishing aleatoric failed" in node.health.last_error
    # A lifecycle cleanup + configure restores the publisher.
    for transition in ("deactivate", "cleanup", "configure", "activate"):
        assert getattr(node, f"trigger_{transition}")() == TransitionCallbackReturn.SUCCESS, transition
    assert harness.spin_until(lambda: all(node._pubs[k].get_subscription_count() > 0 for k in OUTPUTS), 10)
    assert harness.spin_until(lambda: driver.pub.get_subscription_count() > 0, 10)
    assert send(harness, driver, numpy_to_image(image(5), "rgb8", header(stamp + 1)))


@pytest.mark.ros
def test_missing_or_corrupt_weights_leave_node_unconfigured(weights: Path, tmp_path: Path) -> None:
    harness = RosHarness(private_domain_id())
    try:
        node = harness.add(
            SceneNode(
                "scene_bad_weights",
                context=harness.context,
                parameter_overrides=[Parameter("diagnostics_period", value=0.2)],
            )
        )
        diag: list[DiagnosticArray] = []
        listener = harness.add(Node("diag_listener", context=harness.context))
        listener.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)
        garbage = tmp_path / "garbage.safetensors"
        garbage.write_bytes(b"\x00not a safetensors file" * 10)
        truncated = tmp_path / "truncated.safetensors"  # with the original's card: sha256 mismatch
        truncated.write_bytes(weights.read_bytes()[:-100])
        truncated.with_suffix(".json").write_text(weights.with_suffix(".json").read_text())
        cases = [
            (tmp_path / "missing.safetensors", "does not exist"),
            (tmp_path / "model.pt", "pickle"),
            (garbage, "corrupt"),
            (truncated, "sha256 mismatch"),
        ]
        for i, (path, message) in enumerate(cases):
            assert node.set_parameters([Parameter("weights", value=str(path))])[0].successful
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE, path
            assert node.pipeline is None and not node._pubs, path
            assert node.health.problems["model_load_failed"] == i + 1
            assert message in node.health.last_error, (path, node.health.last_error)

        def error_reported() -> bool:
            return any(
                st.level == DiagnosticStatus.ERROR and "truncated.safetensors" in st.message
                for array in diag
                for st in array.status
                if st.hardware_id.endswith("scene_bad_weights")
            )

        assert harness.spin_until(error_reported, 5)
        # Fixing the parameter recovers without restarting the process.
        node.set_parameters([Parameter("weights", value=str(weights))])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node.pipeline is not None
    finally:
        harness.shutdown()


def test_registered_for_run_and_config_example_is_valid(tmp_path: Path) -> None:
    """``scene-perception run`` / the launch file know ``scene``; the commented config example is valid."""
    assert node_types()["scene"] is SceneNode
    lines = (ROOT / "config" / "perception.yaml").read_text().splitlines()
    block = []
    for line in lines[lines.index("# /**/scene:") :]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    example = yaml.safe_load("\n".join(block))
    params = example["/**/scene"]["ros__parameters"]
    specs = {s.name: s for s in SCENE_PARAMS}
    assert set(params) <= set(specs), set(params) - set(specs)
    for name, value in params.items():
        assert type(value) is type(specs[name].default), name
    path = tmp_path / "scene.yaml"
    path.write_text(yaml.safe_dump(example))
    assert [(n, c) for n, c, _ in nodes_from_config(path)] == [("scene", SceneNode)]
    assert (ROOT / "scripts" / "scene_node").is_file()


def test_overlay_is_the_alpha_blend() -> None:
    rgb = np.full((2, 3, 3), 100, np.uint8)
    labels = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    palette = palette_array(((200, 0, 50), (0, 0, 0), (255, 255, 255), (10, 20, 30), (1, 2, 3)))
    out = overlay_labels(rgb, labels, palette, 0.25)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0, 0], [125, 75, 88])  # 0.75 * 100 + 0.25 * (200, 0, 50), rounded
    np.testing.assert_array_equal(out[1, 2], [75, 75, 75])  # unknown id: black
    np.testing.assert_array_equal(overlay_labels(rgb, labels, palette, 0.0), rgb)


@pytest.mark.ros
def test_run_starts_scene_from_a_params_file_under_a_namespace(weights: Path, tmp_path: Path) -> None:
    """``scene-perception run``'s code path: the ``/**/scene`` section's values reach the node (mc_samples
    from the file turns the epistemic output on), autostart activates it, remaps put it under /cam."""
    cfg = tmp_path / "scene.yaml"
    cfg.write_text(f'/**/scene:\n  ros__parameters:\n    weights: "{weights}"\n    mc_samples: 3\n')
    stop = threading.Event()
    codes: list[int] = []
    argv = ["scene-perception", "--ros-args", "-r", "__ns:=/cam"]
    runner = threading.Thread(
        target=lambda: codes.append(run_nodes(nodes_from_config(cfg), argv=argv, params_file=cfg, stop=stop))
    )
    runner.start()
    harness = RosHarness()  # the runner's domain (ROS_DOMAIN_ID of this test session)
    try:
        listener = harness.add(Node("run_listener", context=harness.context, namespace="/cam"))
        pub = listener.create_publisher(Image, "left/image_rect", qos_profile_sensor_data)
        info: list[LabelInfo] = []
        mi: list[Image] = []
        listener.create_subscription(LabelInfo, LABEL_INFO_TOPIC, info.append, latched_qos(1))
        listener.create_subscription(Image, "semantic/uncertainty", mi.append, 10)
        assert harness.spin_until(lambda: pub.get_subscription_count() > 0 and bool(info), 20)
        assert len(info[0].class_map) == len(CLASSES)
        # The publisher can see the node's reader before that reader has matched the publisher, and a
        # best-effort sample sent in that gap is dropped: resend (new stamps) until an output arrives.
        for i in range(20):
            pub.publish(numpy_to_image(image(7), "rgb8", header(7_000_000_000 + i * 50_000_000)))
            if harness.spin_until(lambda: bool(mi), 1.0):
                break
        assert mi, "no semantic/uncertainty: mc_samples from file lost?"
        assert (mi[0].height, mi[0].width) == (H, W)
    finally:
        stop.set()
        runner.join(20)
        harness.shutdown()
    assert codes == [0]


def test_label_info_type_follows_vision_msgs_availability() -> None:
    """vision_msgs/LabelInfo when importable (ROS installs), our msg otherwise (the pip environment)."""
    from scene_perception.ros.scene_node import LABEL_INFO_TYPE

    try:
        from vision_msgs.msg import LabelInfo as VisionLabelInfo
    except ImportError:
        assert LABEL_INFO_TYPE is LabelInfo
    else:  # pragma: no cover - vision_msgs is not on PyPI; this branch runs only in a ROS install
        assert LABEL_INFO_TYPE is VisionLabelInfo


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize(("depth", "expected"), [(1, [4]), (10, [0, 1, 2, 3, 4])])
def test_input_depth_decides_between_newest_frame_and_every_frame(
    weights: Path, depth: int, expected: list[int]
) -> None:
    """Five frames arrive while the node is busy (its executor not spinning). With ``input_depth`` 1 the
    node then works on the newest only (the stale four are skipped, not queued); with 10 on all five, in
    order."""
    harness = RosHarness(private_domain_id())
    ns = f"/depth{depth}"
    try:
        node = SceneNode(
            "scene",
            namespace=ns,
            context=harness.context,
            parameter_overrides=[
                Parameter("weights", value=str(weights)),
                Parameter("input_depth", value=depth),
            ],
        )
        harness.add(node)
        peer = harness.add(Node("peer", namespace=ns, context=harness.context))
        pub = peer.create_publisher(Image, "left/image_rect", qos_profile_sensor_data)
        got: list[Image] = []
        peer.create_subscription(Image, "semantic/labels", got.append, 10)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert harness.spin_until(lambda: pub.get_subscription_count() > 0, 10)
        assert harness.spin_until(lambda: node._pubs["labels"].get_subscription_count() > 0, 10)
        harness.spin_for(0.5)  # both ends matched (best effort drops samples sent before that)
        for i in range(5):
            pub.publish(numpy_to_image(image(i), "rgb8", header((10 + i) * 1_000_000_000)))
        time.sleep(1.5)  # all five reach the node's reader before its executor takes any (slack for CI load)
        assert harness.spin_until(lambda: len(got) >= len(expected), 10)
        harness.spin_for(0.5)
        assert [m.header.stamp.sec - 10 for m in got] == expected
    finally:
        harness.shutdown()
