"""The far head (issue 22 item 4): model, labels, training on a real cache, loading checks, the pipeline's
``far_probability`` rule and the live node parameter over Fast DDS."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosutil import Driver, RosHarness, last_status, make_camera, send, stereo_messages

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.models.far_head import FarHead, far_head_inputs, far_labels
from scene_perception.models.weights import ModelInfo, ModelLoadError, load_far_head, save_model
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline
from scene_perception.ros.codec import image_to_numpy
from scene_perception.ros.stereo_depth_node import StereoDepthNode
from scene_perception.training.far_head import FarHeadTrainConfig, far_loss, render_cache, train_far_head

SHIPPED = build_stereo_pipeline("lite").info  # the shipped lite weights' ModelInfo (name, sha256)


def constant_head(logit: float) -> FarHead:
    """A head whose output is ``logit`` everywhere (its last conv zeroed, the bias set)."""
    head = FarHead()
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.fill_(logit)
    return head.eval()


def write_head(head: FarHead, path: Path, stereo_sha256: str | None) -> Path:
    save_model(head, path, {} if stereo_sha256 is None else {"stereo_sha256": stereo_sha256})
    return path


def test_head_output_has_the_input_size_whatever_it_is() -> None:
    head = FarHead().eval()
    for h, w in ((37, 61), (64, 128)):
        left = torch.rand(2, 3, h, w)
        disparity = torch.rand(2, 1, h, w) * 10
        log_scale = torch.full((2, 1, h, w), float("nan"))  # non-finite inputs must not spread
        out = head(left, disparity, log_scale)
        assert out.shape == (2, 1, h, w) and torch.isfinite(out).all()
    x = far_head_inputs(torch.rand(1, 3, 8, 8), torch.full((1, 1, 8, 8), -3.0), torch.zeros(1, 1, 8, 8))
    assert x.shape == (1, 6, 8, 8) and (x[:, 3] == 0).all()  # negative disparity reads as 0


def test_labels_mark_sky_and_sub_pixel_disparities_and_ignore_unknown_gt() -> None:
    gt = torch.tensor([0.0, 0.5, 1.0, 1.5, 40.0, float("nan"), float("inf")]).view(1, 1, 1, 7)
    target, known = far_labels(gt)
    assert target.flatten().tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert known.flatten().tolist() == [True] * 5 + [False] * 2


def test_training_on_a_rendered_cache_learns_the_sky(tmp_path: Path) -> None:
    """Real renders with sky, the frozen shipped network's outputs, a cache on disk reused on the second
    call, and a head whose loss falls and that flags sky pixels more than scene pixels."""
    torch.manual_seed(0)
    config = FarHeadTrainConfig(pairs=12, width=128, height=64, sky_probability=1.0, epochs=6, batch_size=4,
                                lr=3e-3, cache_dir=str(tmp_path / "cache"))
    net = build_stereo_pipeline("lite").pipeline.model
    arrays = render_cache(config, net, SHIPPED.sha256 or "")
    assert arrays["left"].shape == (12, 3, 64, 128) and arrays["left"].dtype == np.uint8
    sky_share = float((arrays["gt"] <= 1).mean())
    assert 0.02 < sky_share < 0.9
    cached = tmp_path / "cache" / "arrays.safetensors"
    mtime = cached.stat().st_mtime_ns
    again = render_cache(config, net, SHIPPED.sha256 or "")
    assert cached.stat().st_mtime_ns == mtime  # read back, not re-rendered
    assert np.array_equal(again["left"], arrays["left"])
    assert render_cache(FarHeadTrainConfig(**{**config.__dict__, "pairs": 2}), net, "x")["left"].shape[0] == 2

    head, losses = train_far_head(config, arrays)
    assert losses[-1] < losses[0]
    left = torch.from_numpy(arrays["left"]).float() / 255
    d, s, gt = (torch.from_numpy(arrays[a]).float() for a in ("disparity", "log_scale", "gt"))
    with torch.no_grad():
        p = torch.sigmoid(head(left, d, s))
        assert far_loss(head, left, d, s, gt) < losses[0]
    target, known = far_labels(gt)
    assert p[(target > 0) & known].mean() > p[(target == 0) & known].mean() + 0.2


def test_loading_checks_the_stereo_weights_the_head_was_made_for(tmp_path: Path) -> None:
    good = write_head(constant_head(3.0), tmp_path / "good" / "lite_far.safetensors", SHIPPED.sha256)
    head, info = load_far_head(SHIPPED, good)
    assert info.trained and info.sha256 and float(head.out.bias.detach()) == 3.0
    other = ModelInfo("lite", "lite", None, "0" * 64, True)
    with pytest.raises(ModelLoadError, match="trained for stereo weights sha256"):
        load_far_head(other, good)
    stale = write_head(constant_head(3.0), tmp_path / "stale" / "lite_far.safetensors", "f" * 64)
    with pytest.raises(ModelLoadError, match="ffffffffffff"):
        load_far_head(SHIPPED, stale)
    bare = write_head(constant_head(3.0), tmp_path / "bare" / "lite_far.safetensors", None)
    bare.with_suffix(".json").unlink()
    with pytest.raises(ModelLoadError, match="no model card"):
        load_far_head(SHIPPED, bare)
    with pytest.raises(ModelLoadError, match="pickle"):
        load_far_head(SHIPPED, tmp_path / "head.pt")
    # The factory never fails on a head: it runs without one and says why.
    setup = build_stereo_pipeline("lite", far_head_weights=stale, far_probability=0.5)
    assert setup.far_head is None and setup.pipeline.far_head is None and "ffffffffffff" in setup.far_note
    setup = build_stereo_pipeline("lite", far_head_weights=good)
    assert setup.far_head is not None and setup.far_note == ""
    # Found beside the stereo weights (<stem>_far), before the model search path.
    stereo = tmp_path / "mine" / "v13.safetensors"
    stereo.parent.mkdir()
    stereo.write_bytes(SHIPPED.weights_path.read_bytes())
    beside = write_head(constant_head(-2.0), tmp_path / "mine" / "v13_far.safetensors", SHIPPED.sha256)
    setup = build_stereo_pipeline("lite", stereo)
    assert setup.far_head is not None and setup.far_head.weights_path == beside
    assert float(setup.pipeline.far_head.out.bias.detach()) == -2.0


def test_pipeline_invalidates_what_the_head_calls_far_at_any_scale(tmp_path: Path) -> None:
    s = make_stereo_sample(5, width=160, height=96)
    path = write_head(constant_head(math.log(0.6 / 0.4)), tmp_path / "lite_far.safetensors", SHIPPED.sha256)
    setup = build_stereo_pipeline("lite", far_head_weights=path, compute_points=False, local_refinement=None,
                                  far_probability=1.0)
    pipeline = setup.pipeline
    base = pipeline(s.left, s.right)
    assert base.far == 0 and base.valid.mean() > 0.5  # far_probability 1: off
    pipeline.far_probability = 0.7  # the head says 0.6 everywhere: below the threshold
    assert pipeline(s.left, s.right).far == 0
    pipeline.far_probability = 0.5
    r = pipeline(s.left, s.right)
    assert r.far == s.left.shape[0] * s.left.shape[1] and not r.valid.any()
    assert r.far_mask is not None and r.far_mask.shape == s.left.shape[:2] and r.far_mask.all()
    assert base.far_mask is None or not base.far_mask.any()  # off: the head may not even run
    np.testing.assert_array_equal(r.disparity, base.disparity)  # the head moves no disparity or std
    np.testing.assert_array_equal(r.disparity_std, base.disparity_std)
    pipeline.max_disparity = 192.0  # the network runs shrunk; the verdict is brought to the input size
    r = pipeline(s.left, s.right)
    assert r.scale < 1 and r.far == s.left.size // 3 and not r.valid.any()
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="far_probability"):
            pipeline.far_probability = bad


@pytest.mark.ros
@pytest.mark.slow
def test_far_probability_is_a_live_node_parameter_and_a_head_for_other_weights_is_reported(
        tmp_path: Path) -> None:
    s = make_stereo_sample(7, width=160, height=96)
    camera = make_camera(160, 96)
    far = write_head(constant_head(5.0), tmp_path / "far" / "lite_far.safetensors", SHIPPED.sha256)
    stale = write_head(constant_head(5.0), tmp_path / "stale" / "lite_far.safetensors", "e" * 64)
    harness = RosHarness()
    try:
        node = harness.add(StereoDepthNode("far_stereo", context=harness.context, parameter_overrides=[
            Parameter("num_threads", value=1), Parameter("far_head_weights", value=str(far)),
            Parameter("far_probability", value=1.0),
            Parameter("diagnostics_period", value=0.2), Parameter("input_depth", value=5)]))
        driver = harness.add(Driver(harness.context))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        harness.spin_for(1.0)

        def depth_after(stamp_s: int) -> np.ndarray:
            msgs = stereo_messages(s.left, s.right, camera, stamp_s * 10**9)
            assert send(harness, driver, msgs, timeout=60)
            return image_to_numpy(driver.got["depth"][-1]).astype(np.float32)

        assert np.isfinite(depth_after(1)).mean() > 0.5  # off
        assert node.set_parameters([Parameter("far_probability", value=0.5)])[0].successful
        # Everything "far": nothing published as a surface, and the depth image says "beyond range" (+Inf,
        # REP 117/118) unless depth_infinities is off (NaN, no measurement).
        assert np.isposinf(depth_after(2)).all()
        assert node.set_parameters([Parameter("depth_infinities", value=False)])[0].successful
        assert np.isnan(depth_after(3)).all()
        assert harness.spin_until(lambda: (st := last_status(driver, "far_stereo")) is not None and any(
            kv.key == "far pixels count" for kv in st.values), 10), last_status(driver, "far_stereo")
        values = {kv.key: kv.value for kv in last_status(driver, "far_stereo").values}
        assert str(far) in values["far head"] and int(values["far pixels count"]) >= 160 * 96
        assert not node.set_parameters([Parameter("far_probability", value=0.0)])[0].successful  # range

        # A head made for other weights: the node runs without it, publishes, and says so (WARN).
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.set_parameters([Parameter("far_head_weights", value=str(stale))])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        harness.spin_for(0.5)
        assert np.isfinite(depth_after(4)).mean() > 0.5
        driver.got["diag"].clear()

        def warned() -> bool:
            st = last_status(driver, "far_stereo")
            return st is not None and st.level == DiagnosticStatus.WARN and "far head" in st.message

        assert harness.spin_until(warned, 10), last_status(driver, "far_stereo")
        values = {kv.key: kv.value for kv in last_status(driver, "far_stereo").values}
        assert "eeeeeeeeeeee" in values["far head"]
    finally:
        harness.shutdown()


def test_card_of_a_trained_head_records_its_stereo_weights(tmp_path: Path) -> None:
    from scene_perception.training.far_head import main

    out = tmp_path / "lite_far.safetensors"
    assert main(["--pairs", "4", "--epochs", "1", "--batch-size", "2", "--width", "64", "--height", "32",
                 "--cache-dir", str(tmp_path / "cache"), "--output", str(out), "--threads", "1"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["stereo_sha256"] == SHIPPED.sha256 and card["config"]["name"] == "far"
    assert card["training"]["command"].startswith("scene-perception train far-head")
    head, _ = load_far_head(SHIPPED, out)
    assert isinstance(head, FarHead)


def test_sky_validity_benchmark_scores_the_far_rule_on_a_real_street_bag(tmp_path: Path, capsys) -> None:
    """benchmarks/sky_validity.py end to end (a real rosbag2 street, the pipeline rerun per threshold): a head
    that calls everything far leaves no sky and no scene at 0.5 and changes nothing at 1 (off)."""
    from evalutil import load_benchmark

    module = load_benchmark("sky_validity")
    head = write_head(constant_head(4.0), tmp_path / "lite_far.safetensors", SHIPPED.sha256)
    assert module.main(["--seeds", "7", "--frames", "1", "--width", "128", "--height", "64",
                        "--validation-pairs", "1", "--max-uncertainty", "inf", "--threads", "1",
                        "--far-probability", "1", "0.5", "--far-head", str(head), "--noise-std", "2"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| 0 | inf | 0 |")]
    off, on = ([c.strip() for c in r] for r in rows)
    assert off[3] == "1" and on[3] == "0.5"
    assert float(off[6]) > 20 and float(off[8]) > 20  # street scene and validation pairs kept with it off
    assert float(on[4]) == 0 and float(on[6]) == 0 and float(on[8]) == 0  # everything "far" at 0.5
    noisy = module.add_noise(np.full((4, 4, 3), 128, np.uint8), 2.0, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and 0 < noisy.std() < 5
