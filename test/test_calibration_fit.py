"""Calibration fixes of issue 25 item 2: the two-refinement path's std factor and the pose covariance fits."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from scene_perception.evaluation.pose import (
    CHI2_2SIGMA_3DOF,
    TWO_SIGMA_MASS,
    apply_additive_floor,
    fit_additive_floor,
    fit_block_scale,
    inside_fraction,
    mahalanobis_sq,
)
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT, LocalRefinementConfig
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline
from scene_perception.pipelines.view_agreement import two_pass_factor

_REPO = Path(__file__).resolve().parents[1]
_FIT = _REPO / "benchmarks" / "results" / "2026-12-05_cpu" / "calibration_two_pass_fit_validation.json"
_ADAPTIVE = _REPO / "benchmarks" / "results" / "2026-12-06_cpu" / "two_pass_adaptive"
#: The per-frame fits in the order they were made; the default is the last one that shipped.
_ADAPTIVE_FITS = (_ADAPTIVE / "validation.json", _ADAPTIVE / "validation_camera.json")
#: The constant form (no per-frame measure): the factor alone sets the two-pass std.
_CONSTANT = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, two_pass_std_measure="none",
                                two_pass_std_exponent=0.0)


class _SlopeModel(nn.Module):
    """Stand-in network: disparity = 0.3 x column (a slanted plane), varying log-scale, no randomness."""

    size_divisor = 16

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = left.shape
        cols = torch.arange(w, dtype=torch.float32).expand(b, 1, h, w)
        rows = torch.arange(h, dtype=torch.float32)[:, None].expand(b, 1, h, w)
        return cols * 0.3, 0.01 * rows - 0.5


def _pair(h: int = 64, w: int = 192, shift: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    left = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return left, np.roll(left, -shift, axis=1)


def _run(cfg: LocalRefinementConfig, max_disparity: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    pipe = StereoDepthPipeline(_SlopeModel(), local_refinement=cfg, max_disparity=max_disparity,
                               compute_points=False)
    r = pipe(*_pair())
    return r.disparity, r.disparity_std, r.scale


@pytest.mark.parametrize("factor", [0.5, 2.7])
def test_two_refinement_path_multiplies_the_published_std_by_the_factor(factor: float) -> None:
    """Above the network's range (256 > 128 px: shrink 1/2, refine twice) the std is factor x the std of
    the same run without the factor, and the disparity is untouched."""
    base = dataclasses.replace(_CONSTANT, two_pass_std_factor=1.0)
    d1, s1, scale = _run(base, 256.0)
    df, sf, _ = _run(dataclasses.replace(base, two_pass_std_factor=factor), 256.0)
    assert scale == pytest.approx(0.5)
    np.testing.assert_array_equal(df, d1)
    np.testing.assert_allclose(sf, factor * s1, rtol=1e-5)
    assert not np.allclose(sf, s1)


def test_one_refinement_path_is_bit_identical_whatever_the_factor() -> None:
    base = dataclasses.replace(_CONSTANT, two_pass_std_factor=1.0)
    d1, s1, scale = _run(base, None)
    df, sf, _ = _run(dataclasses.replace(base, two_pass_std_factor=3.0), None)
    assert scale == 1.0
    np.testing.assert_array_equal(df, d1)
    np.testing.assert_array_equal(sf, s1)


def test_shipped_two_pass_factor_is_the_validation_fit() -> None:
    """The constant the first rule chose (1.5) was the default until the per-frame rules shipped; the default
    now is exactly what the last shipped rule chose on validation (per frame: two_pass_adaptive.py's JSON;
    per pixel: two_pass_pixel.py's; a 12-number per-pixel setting carries its own base and exponent and
    leaves the per-frame fields to the last per-frame fit, its fallback without an SGBM candidate), and the
    default pipeline's two-refinement std is that factor times the old (factor 1) std."""
    old_fit = json.loads(_FIT.read_text(encoding="utf-8"))["disparity"]["two_pass"]["fit"]
    assert old_fit["change_default"] and old_fit["chosen"]["factor"] == pytest.approx(1.5)
    frame_fits = [json.loads(path.read_text(encoding="utf-8"))["fit"] for path in _ADAPTIVE_FITS]
    frame_shipped = [f for f in frame_fits if f["ship"]]
    pixel_fits = [json.loads((_ADAPTIVE / f"validation_{n}.json").read_text(encoding="utf-8"))["fit"]
                  for n in ("pixel", "pixel2", "pixel3", "pixel4", "pixel6", "pixel7")]
    pixel_shipped = [f for f in pixel_fits if f["ship"]]
    # rule_pixel8.md then chose among the fitted settings with the chessboard condition
    # (chessboard_planes.py).
    choice = json.loads((_ADAPTIVE / "validation_pixel8.json").read_text(encoding="utf-8"))
    if choice["decision"]["changes_default"]:
        picked = choice["board"]["settings"][choice["decision"]["chosen"]]
        pixel_shipped = [f for f in pixel_fits if picked and f["setting"]["two_pass_std_pixel"] == picked]
        assert pixel_shipped or not picked  # a fitted setting, or the per-frame one
    cfg = DEFAULT_LOCAL_REFINEMENT
    floor_fit = json.loads((_ADAPTIVE / "validation_pixel5.json").read_text(encoding="utf-8"))["fit"]
    floor = floor_fit["setting"]["two_pass_std_floor"] if floor_fit["ship"] else 0.0
    assert cfg.two_pass_std_floor == floor
    if pixel_shipped:
        chosen = pixel_shipped[-1]["setting"]
        assert cfg.two_pass_std_measure == "zncc"
        assert all(pixel_shipped[-1]["checks"].values()) or choice["decision"]["changes_default"]
        assert list(cfg.two_pass_std_pixel) == pytest.approx(chosen["two_pass_std_pixel"])
        assert cfg.two_pass_std_reference == pytest.approx(frame_shipped[-1]["reference"], rel=1e-4)
        per_frame = (chosen["two_pass_std_factor"], chosen["two_pass_std_exponent"])
        if len(chosen["two_pass_std_pixel"]) >= 12:
            assert tuple(chosen["two_pass_std_pixel"][:2]) == pytest.approx(per_frame)
            fit = frame_shipped[-1]
            per_frame = (fit["chosen"]["f0"], fit["chosen"]["b"])
        assert (cfg.two_pass_std_factor, cfg.two_pass_std_exponent) == pytest.approx(per_frame)
    elif frame_shipped:
        fit = frame_shipped[-1]
        assert all(fit["checks"].values()) and cfg.two_pass_std_pixel == ()
        assert cfg.two_pass_std_measure == fit["measure"]
        assert cfg.two_pass_std_reference == pytest.approx(fit["reference"], rel=1e-4)
        assert (cfg.two_pass_std_factor, cfg.two_pass_std_exponent) == pytest.approx(
            (fit["chosen"]["f0"], fit["chosen"]["b"]))
    else:
        assert (cfg.two_pass_std_measure, cfg.two_pass_std_factor) == ("none", 1.5)
    old = dataclasses.replace(_CONSTANT, two_pass_std_factor=1.0)
    _, s_old, _ = _run(old, 256.0)
    pipe = StereoDepthPipeline(_SlopeModel(), local_refinement=cfg, max_disparity=256.0, compute_points=False)
    r = pipe(*_pair())
    if cfg.two_pass_std_pixel:  # a factor per pixel, within the clip; the reported one is its median
        ratio = r.disparity_std / s_old
        assert np.nanmin(ratio) >= 0.5 - 1e-5 and np.nanmax(ratio) <= 8.0 + 1e-5
        assert float(np.nanmedian(ratio)) == pytest.approx(r.two_pass_factor, rel=1e-3)
    else:
        assert r.two_pass_factor == pytest.approx(two_pass_factor(
            r.two_pass_measure, cfg.two_pass_std_factor, cfg.two_pass_std_reference,
            cfg.two_pass_std_exponent))
        np.testing.assert_allclose(r.disparity_std, r.two_pass_factor * s_old, rtol=1e-5)


@pytest.mark.parametrize("factor", [0.0, -1.0, math.inf, math.nan])
def test_two_pass_factor_must_be_finite_and_positive(factor: float) -> None:
    with pytest.raises(ValueError, match="two_pass_std_factor"):
        LocalRefinementConfig(two_pass_std_factor=factor)


def _gaussian_frames(n: int, true_std: np.ndarray, predicted_std: np.ndarray, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    errors = rng.normal(size=(n, 6)) * true_std
    covs = np.broadcast_to(np.diag(predicted_std ** 2), (n, 6, 6)).copy()
    return errors, covs


def test_block_scale_recovers_a_uniform_under_estimate_per_block() -> None:
    """Errors 4x (translation) and 0.5x (rotation) the predicted std: the block scales are about that, and
    after them 95.45 % of these frames are inside each block's 2-sigma ellipsoid."""
    true = np.array([4.0, 4.0, 4.0, 0.5, 0.5, 0.5])
    errors, covs = _gaussian_frames(20000, true, np.ones(6))
    s = fit_block_scale(errors, covs)
    np.testing.assert_allclose(s, true, rtol=0.05)
    scaled = covs * np.outer(s, s)
    for sl in (slice(0, 3), slice(3, 6)):
        assert inside_fraction(errors[:, sl], scaled[:, sl, sl]) == pytest.approx(TWO_SIGMA_MASS, abs=2e-3)


def test_additive_floor_brings_each_block_to_the_mass_and_is_zero_where_it_already_holds() -> None:
    errors, covs = _gaussian_frames(4000, np.array([0.3, 0.3, 0.3, 0.01, 0.01, 0.01]),
                                    np.array([0.1, 0.1, 0.1, 0.02, 0.02, 0.02]))
    a = fit_additive_floor(errors, covs)
    assert a[0] > 0.1 and a[1] == 0.0  # translation under-estimated, rotation already covers
    floored = apply_additive_floor(covs, a)
    inside = np.mean(mahalanobis_sq(errors[:, :3], floored[:, :3, :3]) <= CHI2_2SIGMA_3DOF)
    assert inside == pytest.approx(TWO_SIGMA_MASS, abs=2e-3)
    np.testing.assert_array_equal(floored[:, 3:, 3:], covs[:, 3:, 3:])


# ----------------------------------------------------------------------------------------- scene calibration
def _scene_image(h: int = 32, w: int = 64) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _scene_pipeline(**kwargs: float):  # noqa: ANN202 - ScenePipeline, imported lazily
    from scene_perception.models.multitask import MultiTaskNet
    from scene_perception.pipelines.scene import ScenePipeline

    torch.manual_seed(11)
    return ScenePipeline(MultiTaskNet("tiny"), input_size=(32, 64), **kwargs)


def test_semantic_temperature_divides_every_sampled_logit() -> None:
    """The tempered probabilities are E_k softmax((f + sigma eps_k) / T), recomputed here by hand."""
    pipe = _scene_pipeline()
    g = torch.Generator().manual_seed(0)
    logits, log_var = torch.randn(2, 9, 4, 5, generator=g), torch.randn(2, 9, 4, 5, generator=g) - 1.0
    t = 0.7
    want = torch.zeros_like(logits)
    for k in range(8):
        eps = pipe._class_pattern(k, 9, logits.device, logits.dtype)
        want += torch.softmax((logits + torch.exp(0.5 * log_var) * eps) / t, dim=1)
    torch.testing.assert_close(pipe._sampled_softmax(logits, log_var, t), want / 8)
    # T = 1 is the old computation, bit for bit.
    assert torch.equal(pipe._sampled_softmax(logits, log_var, 1.0), pipe._sampled_softmax(logits, log_var))


@pytest.mark.parametrize("mc", [0, 3])
def test_scene_temperature_applies_to_its_mode_only(mc: int) -> None:
    """A temperature < 1 sharpens the published softmax (higher top probability, lower expected entropy)
    in its own mode; the other mode's temperature changes nothing; T = 1 is today's output exactly."""
    img = _scene_image()
    other = "semantic_temperature" if mc else "mc_semantic_temperature"
    mine = "mc_semantic_temperature" if mc else "semantic_temperature"
    runs = {}
    for name, kw in (("today", {}), ("other", {other: 0.5}), ("mine", {mine: 0.5})):
        pipe = _scene_pipeline(**kw)
        pipe.mc_samples = mc
        torch.manual_seed(4)
        runs[name] = pipe(img)
    np.testing.assert_array_equal(runs["other"].probabilities, runs["today"].probabilities)
    np.testing.assert_array_equal(runs["other"].semantic_aleatoric, runs["today"].semantic_aleatoric)
    assert runs["mine"].probabilities.max(0).mean() > runs["today"].probabilities.max(0).mean()
    assert runs["mine"].semantic_aleatoric.mean() < runs["today"].semantic_aleatoric.mean()


def test_depth_std_scale_multiplies_the_variance_by_its_square() -> None:
    img = _scene_image()
    a = _scene_pipeline()(img)
    b = _scene_pipeline(depth_std_scale=0.8)(img)
    np.testing.assert_array_equal(b.depth, a.depth)
    finite = np.isfinite(a.depth_variance)
    np.testing.assert_allclose(b.depth_variance[finite], 0.64 * a.depth_variance[finite], rtol=1e-5)


@pytest.mark.parametrize("key", ["semantic_temperature", "mc_semantic_temperature", "depth_std_scale"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.inf])
def test_scene_calibration_values_must_be_finite_and_positive(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=key):
        _scene_pipeline(**{key: value})


def test_from_weights_takes_the_card_calibration_and_arguments_override_it(tmp_path: Path) -> None:
    from scene_perception.models.multitask import MultiTaskNet
    from scene_perception.models.weights import save_scene_model
    from scene_perception.pipelines.scene import ScenePipeline

    path = tmp_path / "s.safetensors"
    save_scene_model(MultiTaskNet("tiny"), path, {"input_size": [24, 40], "calibration": {
        "semantic_temperature": {"value": 0.9}, "mc_semantic_temperature": 0.75}})
    p = ScenePipeline.from_weights(path)
    assert (p.semantic_temperature, p.mc_semantic_temperature, p.depth_std_scale) == (0.9, 0.75, 1.0)
    q = ScenePipeline.from_weights(path, mc_semantic_temperature=1.0)
    assert q.mc_semantic_temperature == 1.0


def test_shipped_scene_card_calibration_is_what_the_pipeline_uses() -> None:
    """The shipped card's calibration values (if any) are the defaults of the shipped pipeline."""
    from scene_perception.pipelines.scene import ScenePipeline

    card = json.loads((_REPO / "models" / "scene.json").read_text(encoding="utf-8"))
    p = ScenePipeline.from_weights()
    for key in ("semantic_temperature", "mc_semantic_temperature", "depth_std_scale"):
        entry = card.get("calibration", {}).get(key, 1.0)
        want = entry["value"] if isinstance(entry, dict) else entry
        assert getattr(p, key) == pytest.approx(want)


# ----------------------------------------------------------------------------------------- pose card
def test_shipped_pose_card_scale_is_the_recorded_fit_and_loads() -> None:
    """The shipped pose card records its covariance calibration, config.covariance_scale is its fitted vector
    (per block: three equal translation and three equal rotation factors for P1) and the pipeline uses it."""
    from scene_perception.pipelines.pose import PosePipeline

    card = json.loads((_REPO / "models" / "posenet.json").read_text(encoding="utf-8"))
    scale = np.asarray(card["config"]["covariance_scale"])
    cal = card.get("covariance_calibration")
    assert cal is not None, "models/posenet.json lost its covariance_calibration record (issue 25 item 2)"
    if cal["method"] == "P1_per_block":
        assert np.ptp(scale[:3]) == 0 and np.ptp(scale[3:]) == 0
    fit = json.loads((_REPO / "benchmarks" / "results" / "2026-12-05_cpu" /
                      "calibration_pose_fit_validation.json").read_text(encoding="utf-8"))["pose_fit"]
    assert fit["accepted"] and fit["winner"] == cal["method"]
    np.testing.assert_allclose(scale, fit["candidates"][cal["method"]]["fit"]["scale"])
    np.testing.assert_allclose(PosePipeline.from_weights(None, mc_samples=2).covariance_scale, scale)
