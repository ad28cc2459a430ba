"""The GT-free view-agreement measures and the per-frame two-pass std factor (issue 25)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from scene_perception.pipelines import view_agreement as va
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT, LocalRefinementConfig
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline


def _texture(h: int = 96, w: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth random texture in 0..1 (blurred noise, so Immerkaer's estimator sees little structure)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return np.repeat(img[..., None], 3, axis=2)


def _tensors(left: np.ndarray, right: np.ndarray, shift: float) -> tuple[torch.Tensor, ...]:
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float()  # noqa: E731
    return to(left), to(right), torch.full((1, 1, *left.shape[:2]), float(shift))


def _pair(noise: float, shift: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(seed + 1)
    base = _texture(seed=seed)
    left = base + rng.normal(0, noise, base.shape).astype(np.float32)
    right = np.roll(base, -shift, axis=1) + rng.normal(0, noise, base.shape).astype(np.float32)
    return _tensors(left.clip(0, 1), right.clip(0, 1), shift)


@pytest.mark.parametrize("sigma", [0.01, 0.03])
def test_noise_sigma_recovers_added_white_noise(sigma: float) -> None:
    img = _texture()
    noisy = img + np.random.default_rng(5).normal(0, sigma, img.shape).astype(np.float32)
    t = torch.from_numpy(noisy.transpose(2, 0, 1).copy())[None]
    # Grey = mean of 3 channels with independent noise: sigma / sqrt(3).
    assert va.noise_sigma(t) == pytest.approx(sigma / math.sqrt(3.0), rel=0.15)


def test_each_measure_grows_with_noise_and_with_a_wrong_disparity() -> None:
    cfg = DEFAULT_LOCAL_REFINEMENT
    clean, noisy = _pair(0.0), _pair(0.03)
    for name in ("photometric", "noise", "zncc"):
        assert va.measure(name, *noisy, cfg) > 2 * va.measure(name, *clean, cfg) + 1e-6, name
    left, right, disp = clean
    wrong = disp + 3.0
    for name in ("photometric", "zncc"):  # these read the disparity; the noise estimate does not
        assert va.measure(name, left, right, wrong, cfg) > va.measure(name, left, right, disp, cfg) + 0.01, \
            name
    assert va.zncc_residual(left, right, disp, cfg) < 0.01  # an exact match


def test_measures_ignore_non_finite_disparities_and_report_unknown() -> None:
    left, right, disp = _pair(0.01)
    nan = torch.full_like(disp, float("nan"))
    assert math.isnan(va.measure("zncc", left, right, nan, DEFAULT_LOCAL_REFINEMENT))
    assert math.isnan(va.measure("photometric", left, right, nan, DEFAULT_LOCAL_REFINEMENT))
    assert math.isnan(va.measure("none", left, right, disp, DEFAULT_LOCAL_REFINEMENT))
    with pytest.raises(ValueError, match="unknown two-pass measure"):
        va.measure("ssim", left, right, disp, DEFAULT_LOCAL_REFINEMENT)


def test_two_pass_factor_form() -> None:
    assert va.two_pass_factor(0.2, 1.5, 0.1, 1.0) == pytest.approx(3.0)
    assert va.two_pass_factor(0.05, 1.5, 0.1, 1.0) == pytest.approx(1.0)  # clipped below
    assert va.two_pass_factor(10.0, 1.5, 0.1, 1.0) == pytest.approx(va.TWO_PASS_FACTOR_RANGE[1])
    assert va.two_pass_factor(math.nan, 1.5, 0.1, 1.0) == 1.5  # unknown: the base factor
    assert va.two_pass_factor(0.0, 1.5, 0.1, 1.0) == 1.5
    assert va.two_pass_factor(0.3, 1.5, 0.1, 0.0) == 1.5  # exponent 0: today's constant


def test_pixel_features_and_the_per_pixel_factor() -> None:
    """pixel_features: log(1 - ZNCC + 0.01) is lowest at the true disparity, the correction term is log 0.05
    where the second pass moved nothing; two_pass_log_factor: per pixel a clipped (1, 1, H, W) map that is the
    per-frame factor where every feature sits at its centre, per frame a float (also when the measure is not
    zncc)."""
    cfg = DEFAULT_LOCAL_REFINEMENT
    left, right, disp = _pair(0.01)
    score, scored, var_l = va.zncc_map(left, right, disp, cfg)
    assert scored[..., :, 20:].all() and float(score[scored].median()) > 0.9
    feats = va.pixel_features(score, var_l, disp, disp)
    assert feats.shape == (3, *left.shape[2:])
    assert torch.allclose(feats[2], torch.full_like(feats[2], math.log(0.05)))
    wrong = va.pixel_features(*va.zncc_map(left, right, disp + 3.0, cfg)[::2], disp + 3.0, disp)
    assert float(wrong[0].median()) > float(feats[0].median()) + 1.0
    assert torch.allclose(wrong[2], torch.full_like(wrong[2], math.log(3.05)))
    centre = tuple(float(v) for v in feats.flatten(1).median(dim=1).values)
    flat = dataclasses.replace(cfg, two_pass_std_pixel=(0.0, 0.0, 0.0, *centre))
    log_f, value = va.two_pass_log_factor(flat, left, right, disp, disp)
    frame = math.log(cfg.two_pass_std_factor) + cfg.two_pass_std_exponent * math.log(
        value / cfg.two_pass_std_reference)
    frame = min(max(frame, math.log(0.5)), math.log(8.0))
    assert isinstance(log_f, torch.Tensor) and log_f.shape == (1, 1, *left.shape[2:])
    assert torch.allclose(log_f, torch.full_like(log_f, frame), atol=1e-6)
    steep = dataclasses.replace(flat, two_pass_std_pixel=(5.0, 0.0, 0.0, *centre))
    log_f, _ = va.two_pass_log_factor(steep, left, right, disp + 3.0, disp)
    assert float(log_f.max()) == pytest.approx(math.log(va.TWO_PASS_PIXEL_RANGE[1]))  # clipped
    per_frame, _ = va.two_pass_log_factor(dataclasses.replace(steep, two_pass_std_measure="noise"), left,
                                          right, disp, disp)
    assert isinstance(per_frame, float)
    with pytest.raises(ValueError, match="two_pass_std_pixel"):
        LocalRefinementConfig(two_pass_std_pixel=(1.0, 2.0))
    with pytest.raises(ValueError, match="two_pass_std_pixel"):
        LocalRefinementConfig(two_pass_std_pixel=(1.0,) * 11 + (math.nan,))
    with pytest.raises(ValueError, match="base must be > 0"):
        LocalRefinementConfig(two_pass_std_pixel=(0.0,) * 12)
    with pytest.raises(ValueError, match="two_pass_std_pixel"):
        LocalRefinementConfig(two_pass_std_pixel=(1.0,) * 10)


def test_sgbm_features_and_the_twelve_number_form() -> None:
    """With SGBM's candidate: feature 4 is 1 exactly where SGBM gave no disparity, feature 5 its log
    disagreement there where it gave one (NaN elsewhere); the 12-number setting uses its own base and
    exponent, raises the factor by w4 (1 - h0) where SGBM was silent and by w5 per log px of disagreement,
    adds nothing for the disagreement of a silent pixel, and without a candidate falls back to the per-frame
    fields (a different base)."""
    cfg = DEFAULT_LOCAL_REFINEMENT
    left, right, disp = _pair(0.01)
    score, _, var_l = va.zncc_map(left, right, disp, cfg)
    candidate = disp.clone()
    candidate[..., :, :40] = float("nan")  # SGBM silent on the left strip
    candidate[..., :, 100:] += 4.0  # and 4 px off on the right one
    feats = va.pixel_features(score, var_l, disp, disp, candidate)
    assert feats.shape == (5, *left.shape[2:])
    assert bool((feats[3, :, :40] == 1).all()) and bool((feats[3, :, 40:] == 0).all())
    assert bool(feats[4, :, :40].isnan().all())
    assert torch.allclose(feats[4, :, 40:100], torch.full_like(feats[4, :, 40:100], math.log(0.05)))
    assert torch.allclose(feats[4, :, 100:], torch.full_like(feats[4, :, 100:], math.log(4.05)))
    assert torch.equal(feats[:3], va.pixel_features(score, var_l, disp, disp))
    centre = [float(v) for v in feats[:3].flatten(1).median(dim=1).values]
    g0 = math.log(0.05)
    setting = (2.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.1, *centre, 0.0, g0)
    ten = dataclasses.replace(cfg, two_pass_std_pixel=setting, two_pass_std_factor=3.0)
    assert va.pixel_setting(ten) == (2.0, 0.0, (0.0, 0.0, 0.0, 0.5, 0.1), (*centre, 0.0, g0))
    log_f, _ = va.two_pass_log_factor(ten, left, right, disp, disp, candidate)
    base = math.log(2.0)
    assert isinstance(log_f, torch.Tensor)
    assert torch.allclose(log_f[0, 0, :, :40], torch.full((96, 40), base + 0.5))
    assert torch.allclose(log_f[0, 0, :, 40:100], torch.full((96, 60), base))
    assert torch.allclose(log_f[0, 0, :, 100:], torch.full((96, 60), base + 0.1 * (math.log(4.05) - g0)))
    per_frame, value = va.two_pass_log_factor(ten, left, right, disp, disp, None)
    assert isinstance(per_frame, float)
    assert per_frame == pytest.approx(math.log(va.two_pass_factor(value, 3.0, ten.two_pass_std_reference,
                                                                  ten.two_pass_std_exponent)))
    six = dataclasses.replace(ten, two_pass_std_pixel=(0.0, 0.0, 0.0, *centre))
    assert va.pixel_setting(six)[:2] == (3.0, ten.two_pass_std_exponent)
    assert isinstance(va.two_pass_log_factor(six, left, right, disp, disp, None)[0], torch.Tensor)


def test_frame_disagreement_feature_and_the_fourteen_number_form() -> None:
    """rule_pixel7: the sixth feature is one value per frame, the median log disagreement over the pixels
    SGBM answered (NaN when it answered nowhere, then adding nothing); the 14-number setting raises every
    pixel's factor by w6 per log unit of it, and falls back to the per-frame fields without a candidate."""
    cfg = DEFAULT_LOCAL_REFINEMENT
    left, right, disp = _pair(0.01)
    score, _, var_l = va.zncc_map(left, right, disp, cfg)
    candidate = disp.clone()
    candidate[..., :, :40] = float("nan")  # silent: not in the median
    candidate[..., :, 40:70] += 0.25  # 30 columns 0.25 px off, 90 columns 2 px off: the median is 2 px off
    candidate[..., :, 70:] += 2.0
    feats = va.pixel_features(score, var_l, disp, disp, candidate, frame_disagreement=True)
    assert feats.shape == (6, *left.shape[2:])
    assert torch.equal(feats[:5].nan_to_num(-99.0),
                       va.pixel_features(score, var_l, disp, disp, candidate).nan_to_num(-99.0))
    assert torch.allclose(feats[5], torch.full_like(feats[5], math.log(2.05)))
    silent = va.pixel_features(score, var_l, disp, disp, torch.full_like(disp, float("nan")),
                               frame_disagreement=True)
    assert bool(silent[5].isnan().all())
    centre = [float(v) for v in feats[:3].flatten(1).median(dim=1).values]
    g0, m0 = math.log(2.05), math.log(0.55)
    setting = (2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, *centre, 0.0, g0, m0)
    fourteen = dataclasses.replace(cfg, two_pass_std_pixel=setting, two_pass_std_factor=3.0)
    assert LocalRefinementConfig(two_pass_std_pixel=setting).two_pass_std_pixel == setting
    log_f, _ = va.two_pass_log_factor(fourteen, left, right, disp, disp, candidate)
    assert isinstance(log_f, torch.Tensor)
    assert torch.allclose(log_f, torch.full_like(log_f, math.log(2.0) + 0.3 * (math.log(2.05) - m0)))
    log_f, _ = va.two_pass_log_factor(fourteen, left, right, disp, disp, torch.full_like(disp, float("nan")))
    assert torch.allclose(log_f, torch.full_like(log_f, math.log(2.0)))  # nothing answered: no term
    assert isinstance(va.two_pass_log_factor(fourteen, left, right, disp, disp, None)[0], float)
    with pytest.raises(ValueError, match="base must be > 0"):
        LocalRefinementConfig(two_pass_std_pixel=(0.0,) * 14)
    with pytest.raises(ValueError, match="6, 12 or 14"):
        LocalRefinementConfig(two_pass_std_pixel=(1.0,) * 13)


def test_rig_residual_moves_the_right_view_by_a_smooth_field_of_the_given_rms() -> None:
    """rig_residual: on linear ramps (where bilinear sampling is exact) the image moves by a field of RMS
    ``sigma`` px per axis, smooth at the pixel scale, the same for a seed and other for another; 0 px leaves
    it alone."""
    from scene_perception.data.augment import rig_residual

    h, w = 96, 192
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramps = np.stack([xs, ys, xs + ys], axis=2)
    out = rig_residual(7, ramps, 0.3)
    inner = (slice(4, h - 4), slice(4, w - 4))  # away from the reflected border
    dx, dy = (out[..., 0] - xs)[inner], (out[..., 1] - ys)[inner]
    for field in (dx, dy):
        assert 0.2 < float(np.sqrt(np.mean(field ** 2))) < 0.4
        # smooth: a slow sub-pixel drift (remap samples at 1/32 px, so neighbours may differ by ~0.03)
        assert float(np.abs(np.diff(field, axis=1)).max()) < 0.1
    assert float(np.abs(dx - dy).mean()) > 0.05  # two fields, not one
    np.testing.assert_array_equal(out, rig_residual(7, ramps, 0.3))
    assert not np.array_equal(out, rig_residual(8, ramps, 0.3))
    img = (_texture(seed=3) * 255).astype(np.uint8)
    np.testing.assert_array_equal(rig_residual(7, img, 0.0), img)


def test_floored_log_scale_adds_the_floor_in_quadrature() -> None:
    std = torch.tensor([0.0, 0.1, 1.0, float("nan")])
    log_scale = torch.log(std / math.sqrt(2.0))
    out = math.sqrt(2.0) * torch.exp(va.floored_log_scale(log_scale, 0.3))
    want = torch.sqrt(std ** 2 + 0.09)
    assert torch.allclose(out[:3], want[:3], atol=1e-6) and bool(out[3].isnan())
    assert va.floored_log_scale(log_scale, 0.0) is log_scale


def test_pipeline_floor_applies_with_the_per_pixel_factor_only() -> None:
    """two_pass_std_floor: std = sqrt(std_no_floor^2 + floor^2) on the per-pixel path; ignored without an
    SGBM candidate (per frame) and on the one-refinement path; refused when negative."""
    cfg = DEFAULT_LOCAL_REFINEMENT
    floor = dataclasses.replace(cfg, two_pass_std_floor=0.5)
    r0, rf = _run(cfg, 0.01, 256.0), _run(floor, 0.01, 256.0)
    assert rf.two_pass_per_pixel
    np.testing.assert_allclose(rf.disparity_std, np.sqrt(r0.disparity_std ** 2 + 0.25), rtol=1e-5)
    per_frame = _run(dataclasses.replace(cfg, sgbm_candidate=False), 0.01, 256.0)
    no_sgbm = dataclasses.replace(floor, sgbm_candidate=False)
    np.testing.assert_array_equal(_run(no_sgbm, 0.01, 256.0).disparity_std, per_frame.disparity_std)
    np.testing.assert_array_equal(_run(floor, 0.01, None).disparity_std, _run(cfg, 0.01, None).disparity_std)
    with pytest.raises(ValueError, match="two_pass_std_floor"):
        LocalRefinementConfig(two_pass_std_floor=-0.1)


@pytest.mark.parametrize("field,value", [
    ("two_pass_std_measure", "ssim"), ("two_pass_std_reference", 0.0), ("two_pass_std_reference", math.inf),
    ("two_pass_std_exponent", -1.0), ("two_pass_std_exponent", math.nan)])
def test_config_refuses_bad_two_pass_settings(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        LocalRefinementConfig(**{field: value})


class _ShiftModel(nn.Module):
    """Stand-in network: a constant disparity of 4 px at its own scale, log-scale 0."""

    size_divisor = 16

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = left.shape
        return torch.full((b, 1, h, w), 4.0), torch.zeros((b, 1, h, w))


def _run(cfg: LocalRefinementConfig, noise: float, max_disparity: float | None):
    rng = np.random.default_rng(2)
    base = (_texture(128, 256) * 255).astype(np.float32)
    left = (base + rng.normal(0, 255 * noise, base.shape)).clip(0, 255).astype(np.uint8)
    right = (np.roll(base, -8, axis=1) + rng.normal(0, 255 * noise, base.shape)).clip(0, 255).astype(np.uint8)
    pipe = StereoDepthPipeline(_ShiftModel(), local_refinement=cfg, max_disparity=max_disparity,
                               compute_points=False)
    return pipe(left, right)


def test_pipeline_applies_the_per_frame_factor_on_the_two_refinement_path_only() -> None:
    """Two refinements (range 256 > the stand-in's 128 px): the std is the frame's factor x the std of the
    same run at factor 1, the factor follows the measure (noisier views, larger factor), the disparity is
    untouched; one refinement: factor 1 and no measure computed."""
    off = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, two_pass_std_factor=1.0, two_pass_std_pixel=())
    on = dataclasses.replace(off, two_pass_std_factor=2.0, two_pass_std_measure="zncc",
                             two_pass_std_reference=0.05, two_pass_std_exponent=0.5)
    factors = []
    for noise in (0.002, 0.03):
        r1, rf = _run(off, noise, 256.0), _run(on, noise, 256.0)
        assert rf.scale == pytest.approx(0.5)
        assert rf.two_pass_factor == pytest.approx(va.two_pass_factor(rf.two_pass_measure, 2.0, 0.05, 0.5))
        np.testing.assert_array_equal(rf.disparity, r1.disparity)
        np.testing.assert_allclose(rf.disparity_std, rf.two_pass_factor * r1.disparity_std, rtol=1e-5)
        factors.append(rf.two_pass_factor)
    assert factors[1] > factors[0]
    single = _run(on, 0.03, None)
    assert single.scale == 1.0 and single.two_pass_factor == 1.0 and math.isnan(single.two_pass_measure)
    assert not (rf.two_pass_per_pixel or single.two_pass_per_pixel)


def test_pipeline_default_is_per_pixel_with_the_sgbm_candidate_and_per_frame_without() -> None:
    """The shipped setting (rule_pixel6.md's, chosen by rule_pixel8.md): a factor map within the clip on the
    two-refinement path, its median reported; with the SGBM candidate off, one factor per frame from the
    per-frame fields (rule_camera.md's setting)."""
    cfg = DEFAULT_LOCAL_REFINEMENT
    assert len(cfg.two_pass_std_pixel) == 12 and cfg.sgbm_candidate
    one = dataclasses.replace(cfg, two_pass_std_factor=1.0, two_pass_std_exponent=0.0, two_pass_std_pixel=())
    r1, r = _run(one, 0.01, 256.0), _run(cfg, 0.01, 256.0)
    assert r.two_pass_per_pixel and r.scale == pytest.approx(0.5)
    np.testing.assert_array_equal(r.disparity, r1.disparity)
    both = np.isfinite(r.disparity_std) & (r1.disparity_std > 0)
    ratio = r.disparity_std[both] / r1.disparity_std[both]
    lo, hi = va.TWO_PASS_PIXEL_RANGE
    assert ratio.min() >= lo - 1e-5 and ratio.max() <= hi + 1e-5 and ratio.max() > ratio.min() * 1.05
    assert float(np.median(ratio)) == pytest.approx(r.two_pass_factor, rel=0.02)
    no_sgbm = dataclasses.replace(cfg, sgbm_candidate=False)
    rn, rn1 = _run(no_sgbm, 0.01, 256.0), _run(dataclasses.replace(one, sgbm_candidate=False), 0.01, 256.0)
    assert not rn.two_pass_per_pixel
    assert rn.two_pass_factor == pytest.approx(va.two_pass_factor(
        rn.two_pass_measure, cfg.two_pass_std_factor, cfg.two_pass_std_reference, cfg.two_pass_std_exponent))
    np.testing.assert_allclose(rn.disparity_std, rn.two_pass_factor * rn1.disparity_std, rtol=1e-5)


@pytest.mark.ros
@pytest.mark.slow
def test_node_reports_the_frames_two_pass_factor_and_takes_the_measure_live() -> None:
    """A real node on a pair that needs more range than the network's: /diagnostics names the frame's factor
    (the median of the shipped per-pixel map) and measure; switched to per frame live, the published std is
    the per-frame factor times the same std; with the measure off, the constant factor alone."""
    from rclpy.parameter import Parameter
    from rosutil import Driver, RosHarness, last_status, make_camera, send, stereo_messages

    from scene_perception.data.procedural import make_stereo_sample
    from scene_perception.ros.codec import image_to_numpy
    from scene_perception.ros.stereo_depth_node import StereoDepthNode

    KEY = "two-pass std factor (last frame)"  # noqa: N806
    s = make_stereo_sample(3, width=192, height=96, max_disparity=150)
    camera = make_camera(192, 96)
    harness = RosHarness()
    try:
        node = harness.add(StereoDepthNode("two_pass_stereo", context=harness.context, parameter_overrides=[
            Parameter("num_threads", value=1), Parameter("max_disparity", value=150.0),
            Parameter("diagnostics_period", value=0.2), Parameter("input_depth", value=5)]))
        driver = harness.add(Driver(harness.context))
        from rclpy.lifecycle import TransitionCallbackReturn

        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        harness.spin_for(1.0)

        def frame(stamp_s: int, previous: str = "") -> tuple[np.ndarray, dict[str, str]]:
            """Send one pair; its std image and the first status that reports a factor other than the
            previous frame's text (a status queued before the frame could still say that)."""
            msgs = stereo_messages(s.left, s.right, camera, stamp_s * 10**9)
            assert send(harness, driver, msgs, timeout=60)
            driver.got["diag"].clear()  # after the frame's outputs

            def reported() -> bool:
                st = last_status(driver, "two_pass_stereo")
                return st is not None and any(kv.key == KEY and kv.value != previous for kv in st.values)

            assert harness.spin_until(reported, 10), last_status(driver, "two_pass_stereo")
            values = {kv.key: kv.value for kv in last_status(driver, "two_pass_stereo").values}
            return image_to_numpy(driver.got["uncertainty"][-1]).astype(np.float32), values

        std_pixel, values = frame(1)
        text = values[KEY]
        assert "median per pixel" in text and "zncc" in text, text
        assert va.TWO_PASS_PIXEL_RANGE[0] <= float(text.split()[0]) <= va.TWO_PASS_PIXEL_RANGE[1]
        per_pixel = "local_refinement.two_pass_std_per_pixel"
        assert node.set_parameters([Parameter(per_pixel, value=False)])[0].successful
        std_zncc, values = frame(2, text)
        text = values[KEY]
        assert "per pixel" not in text and "zncc" in text, text
        factor = float(text.split()[0])
        assert 1.0 <= factor <= 6.0
        both = np.isfinite(std_pixel) & np.isfinite(std_zncc)
        assert both.mean() > 0.3
        assert float(np.ptp(std_pixel[both] / std_zncc[both])) > 0.05  # the map is not one factor
        measure = "local_refinement.two_pass_std_measure"
        assert node.set_parameters([Parameter(measure, value="none")])[0].successful
        std_const, values = frame(3, text)
        assert values[KEY] == f"{DEFAULT_LOCAL_REFINEMENT.two_pass_std_factor:.2f}"
        both = np.isfinite(std_zncc) & np.isfinite(std_const)
        assert both.mean() > 0.3
        np.testing.assert_allclose(std_zncc[both] / std_const[both],
                                   factor / DEFAULT_LOCAL_REFINEMENT.two_pass_std_factor, rtol=0.02)
        assert not node.set_parameters([Parameter(measure, value="ssim")])[0].successful
    finally:
        harness.shutdown()


@pytest.mark.slow
def test_two_pass_adaptive_benchmark_smoke(tmp_path) -> None:
    """benchmarks/two_pass_adaptive.py and two_pass_pixel.py --quick end to end: the rules' steps on real
    renders through the real pipeline, the pipeline's own run agreeing with the numpy fit; and calibration.py
    scoring a per-frame setting."""
    import json

    from evalutil import load_benchmark

    out = tmp_path / "fit.json"
    res = load_benchmark("two_pass_adaptive").main(["--quick", "--threads", "1", "--json", str(out),
                                                    "--conditions", "exact,camera",
                                                    "--today", "zncc,0.04,2,0.1"])
    fit = json.loads(out.read_text())["fit"]
    assert fit["measure"] in ("photometric", "noise", "zncc") and fit["frames"] == 4
    assert fit["conditions"] == ["exact", "camera"] and fit["today_setting"]["measure"] == "zncc"
    if "chosen" in fit:
        assert res["pipeline_check"]["holds"], res["pipeline_check"]
        assert fit["reference"] > 0 and 1.0 <= fit["chosen"]["f0"] <= 4.0
    pixel = load_benchmark("two_pass_pixel").main(["--quick", "--threads", "1"])
    shape = pixel["fit"]["shape"]
    assert len(shape["w"]) == 3 and shape["nll_fitted"] <= shape["nll_start"] + 1e-9
    assert pixel["pipeline_check"]["holds"], pixel["pipeline_check"]
    assert len(pixel["fit"]["setting"]["two_pass_std_pixel"]) == 6
    sgbm = load_benchmark("two_pass_pixel").main(["--quick", "--threads", "1", "--sgbm-features",
                                                  "--today-shipped", "--conditions", "exact,rig"])
    assert sgbm["today_name"] == "today (shipped per pixel)" and sgbm["fit"]["conditions"] == ["exact", "rig"]
    assert len(sgbm["fit"]["shape"]["w"]) == 5 and sgbm["fit"]["search"]["evaluations"] > 1
    assert sgbm["pipeline_check"]["holds"], sgbm["pipeline_check"]
    assert len(sgbm["fit"]["setting"]["two_pass_std_pixel"]) == 12
    cache = tmp_path / "frames.npz"
    frame_args = ["--quick", "--threads", "1", "--frame-disagreement", "--today-shipped", "--conditions",
                  "exact,rig", "--cache", str(cache)]
    frame = load_benchmark("two_pass_pixel").main(frame_args)
    assert len(frame["fit"]["shape"]["w"]) == 6 and cache.is_file()
    assert frame["pipeline_check"]["holds"], frame["pipeline_check"]
    assert len(frame["fit"]["setting"]["two_pass_std_pixel"]) == 14
    again = load_benchmark("two_pass_pixel").main(frame_args)  # from the cache: the same fit
    assert again["fit"]["setting"] == frame["fit"]["setting"]
    floor = load_benchmark("two_pass_floor").main(["--quick", "--threads", "1"])
    assert floor["fit"]["conditions"] == ["exact", "nuisance", "camera", "rig"]
    assert floor["pipeline_check"]["holds"], floor["pipeline_check"]
    setting = f"zncc,{0.04},{2.0},{0.5}"
    cal = load_benchmark("calibration").main(["--quick", "--sections", "disparity", "--two-pass",
                                    "--two-pass-setting", setting, "--aloe-dir", "", "--motorcycle-dir", "",
                                    "--nuisance", "--camera-effects"])
    tp = cal["disparity"]["two_pass"]
    assert tp["nuisance"] and tp["camera_effects"]
    assert tp["measure"] == "zncc" and tp["factor_check"]["numpy_factor_diff"] == 0.0
    assert tp["factor_check"]["max_rel_std_diff"] < 1e-4
    assert 1.0 <= tp["frame_factors"]["min"] <= tp["frame_factors"]["max"] <= 6.0
