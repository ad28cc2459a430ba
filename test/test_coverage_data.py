"""The coverage phenomena of the procedural renderer (issue 22 item 2) and the camera effects.

Each phenomenon must (a) really be in the pair where its region mask says so, (b) leave the rest of the
pair alone (own RNG stream), and (c) keep the ground truth exact: the GT warp of the right view reproduces
the left view, except where a view-dependent highlight is by design different in the two views.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from evalutil import load_benchmark
from test_procedural import SMALL, _warp_error  # the GT-warp proof of the base renderer

from scene_perception.data.augment import CAMERA_EFFECTS, AugmentConfig, augment_pair
from scene_perception.data.procedural import (
    COVERAGE_REGIONS,
    ProceduralStereoDataset,
    SceneConfig,
    make_stereo_sample,
)
from scene_perception.training.stereo import TrainConfig


def _local_std(img: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    mean = cv2.blur(grey, (7, 7))
    return np.sqrt(np.maximum(cv2.blur(grey * grey, (7, 7)) - mean * mean, 0))


def _on(name: str, p: float = 1.0) -> SceneConfig:
    return SceneConfig(**{f"{name}_probability": p})


def test_all_off_is_the_default_and_regions_are_empty() -> None:
    a = make_stereo_sample(4, **SMALL, nuisance=True)
    b = make_stereo_sample(4, **SMALL, nuisance=True, scene=SceneConfig(
        thin_probability=0.0, textureless_probability=0.0, repetitive_probability=0.0, dark_probability=0.0,
        specular_probability=0.0))
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.right, b.right)
    assert a.regions == {} and b.regions == {}
    assert set(COVERAGE_REGIONS) == {"sky", "thin", "textureless", "repetitive", "dark", "specular"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thin_structures_are_thin_in_front_and_keep_the_gt_proof(seed: int) -> None:
    plain = make_stereo_sample(seed, **SMALL)
    s = make_stereo_sample(seed, **SMALL, scene=_on("thin"))
    thin = s.regions["thin"]
    assert 0 < thin.mean() < 0.15
    # In front of what they cover, and nothing else in the pair moved.
    assert np.all(s.disparity[thin] >= plain.disparity[thin] - 1e-4)
    np.testing.assert_array_equal(s.disparity[~thin], plain.disparity[~thin])
    # Thin: an opening (erosion then dilation) with a 7x7 square removes almost all of it.
    opened = cv2.morphologyEx(thin.astype(np.uint8), cv2.MORPH_OPEN, np.ones((7, 7), np.uint8)).astype(bool)
    assert opened.sum() <= 0.1 * thin.sum()
    err = _warp_error(s)
    vis = s.nonoccluded
    assert err[vis].mean() < 2.0
    assert err[vis & thin].mean() < 6.0, "thin pixels that are visible must warp too (up to aliasing)"


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("name", ["textureless", "repetitive", "dark"])
def test_surface_styles_change_appearance_not_geometry(name: str, seed: int) -> None:
    plain = make_stereo_sample(seed, **SMALL)
    s = make_stereo_sample(seed, **SMALL, scene=_on(name))
    region = s.regions[name]
    assert region.mean() > 0.9  # probability 1: every surface
    np.testing.assert_array_equal(s.disparity, plain.disparity)
    np.testing.assert_array_equal(s.nonoccluded, plain.nonoccluded)
    vis = s.nonoccluded
    assert _warp_error(s)[vis].mean() < 2.0  # still view consistent: GT exact
    inner = cv2.erode(region.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    std, std_plain = np.median(_local_std(s.left)[inner]), np.median(_local_std(plain.left)[inner])
    assert std_plain > 0.01  # seeds whose plain pair is textured (some procedural textures are faint)
    if name == "textureless":
        assert std < 0.004 and std < 0.25 * std_plain
    elif name == "repetitive":
        assert std > 0.015  # strong periodic contrast survives the mip filtering
    else:
        grey = cv2.cvtColor(s.left, cv2.COLOR_RGB2GRAY)[inner].mean()
        grey_plain = cv2.cvtColor(plain.left, cv2.COLOR_RGB2GRAY)[inner].mean()
        assert grey < 0.35 * grey_plain


def test_textureless_and_repetitive_have_their_own_rng_stream() -> None:
    """Half the surfaces restyled: those not restyled keep exactly their look (nothing else drew)."""
    seed = 8
    plain = make_stereo_sample(seed, **SMALL)
    s = make_stereo_sample(seed, **SMALL, scene=_on("textureless", 0.5))
    untouched = ~s.regions.get("textureless", np.zeros_like(s.nonoccluded))
    assert untouched.any()
    np.testing.assert_array_equal(s.left[untouched], plain.left[untouched])


def test_specular_highlights_differ_between_views_where_marked() -> None:
    found = 0
    for seed in range(12):
        s = make_stereo_sample(seed, **SMALL, scene=_on("specular"))
        spec = s.regions.get("specular")
        if spec is None or spec.sum() < 100:
            continue
        found += 1
        plain = make_stereo_sample(seed, **SMALL)
        np.testing.assert_array_equal(s.disparity, plain.disparity)
        assert np.all(s.left[spec].astype(int) >= plain.left[spec].astype(int))  # highlights only add light
        assert (s.left[spec].astype(int) - plain.left[spec].astype(int)).mean() > 5
    assert found >= 3, "specular_probability 1 should give visible highlights in most pairs"


def test_coverage_pairs_are_deterministic_and_reach_the_dataset() -> None:
    cfg = SceneConfig(thin_probability=0.5, textureless_probability=0.3, repetitive_probability=0.3,
                      dark_probability=0.3, specular_probability=0.3)
    a = make_stereo_sample(11, **SMALL, scene=cfg)
    b = make_stereo_sample(11, **SMALL, scene=cfg)
    np.testing.assert_array_equal(a.left, b.left)
    assert a.regions.keys() == b.regions.keys()
    ds = ProceduralStereoDataset(4, width=128, height=64, max_disparity=24.0, scene=cfg)
    item = ds[1]
    np.testing.assert_array_equal(
        item["left"].permute(1, 2, 0).mul(255).round().byte().numpy(), ds.sample(1).left)


def test_camera_effects_are_off_by_default_and_differ_between_views() -> None:
    rng = np.random.default_rng(0)
    left = rng.integers(60, 200, (64, 96, 3), dtype=np.uint8)
    right = left.copy()
    # Off: exactly the transforms of before (no extra random draws).
    a = augment_pair(np.random.default_rng(3), left, right)
    b = augment_pair(np.random.default_rng(3), left, right, AugmentConfig(vignetting=0.0, white_balance=0.0))
    np.testing.assert_array_equal(a[0], b[0])
    only = AugmentConfig(asymmetric_colour=0.0, gamma=(1.0, 1.0), saturation=(1.0, 1.0), blur=0.0, jpeg=0.0,
                         y_jitter=0.0, eraser=0.0, vignetting=1.0, white_balance=0.0)
    flat = np.full((64, 96, 3), 200, np.uint8)
    out_l, out_r = augment_pair(np.random.default_rng(5), flat, flat, only)
    for out in (out_l, out_r):
        assert out[0, 0].mean() < out[32, 48].mean() - 10  # darker corners
    assert not np.array_equal(out_l, out_r)  # each view its own fall-off
    wb = AugmentConfig(asymmetric_colour=0.0, gamma=(1.0, 1.0), saturation=(1.0, 1.0), blur=0.0, jpeg=0.0,
                       y_jitter=0.0, eraser=0.0, white_balance=1.0)
    out_l, out_r = augment_pair(np.random.default_rng(6), flat, flat, wb)
    assert not np.array_equal(out_l[0, 0], out_r[0, 0])
    assert CAMERA_EFFECTS.vignetting > 0 and CAMERA_EFFECTS.white_balance > 0


def test_train_config_plumbs_and_checks_coverage() -> None:
    config = TrainConfig(thin_probability=0.2, dark_probability=0.1, augment=True, camera_effects=True)
    config.validate()
    assert config.scene_config.thin_probability == 0.2 and config.scene_config.dark_probability == 0.1
    assert config.augment_config is CAMERA_EFFECTS
    assert TrainConfig().augment_config is False and TrainConfig(augment=True).augment_config is True
    with pytest.raises(ValueError, match="specular_probability"):
        TrainConfig(specular_probability=1.5).validate()
    with pytest.raises(ValueError, match="camera_effects needs augment"):
        TrainConfig(camera_effects=True).validate()


@pytest.mark.slow
def test_coverage_benchmark_scores_each_phenomenon_on_its_pixels(tmp_path) -> None:
    """benchmarks/coverage.py on the shipped lite, tiny: every row present, the sky scored against GT 0."""
    import json

    cov = load_benchmark("coverage")
    out = tmp_path / "cov.json"
    assert cov.main(["--pairs", "2", "--width", "128", "--height", "64", "--max-disparity", "24",
                     "--only", "plain", "sky", "thin", "textureless", "--json", str(out)]) == 0
    rows = {r["phenomenon"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"plain", "sky", "thin", "textureless"}
    for name in ("plain", "sky", "thin", "textureless"):
        assert rows[name]["pixels"] > 0, name
        assert np.isfinite(rows[name]["models"][0]["epe"])
    assert rows["thin"]["pixels"] < rows["plain"]["pixels"]  # scored on the thin pixels only
    # The same seeds' masks: a sky pixel's score is the disparity published there (GT 0).
    s, _, _, scored = cov.render(cov.PHENOMENA[1], 20_000_000, 128, 64, 24.0)
    assert np.all(s.disparity[scored] == 0) and scored.any()


@pytest.mark.slow
def test_coverage_ablation_smoke(tmp_path) -> None:
    """The GPU run's ablation phase in CPU smoke mode: two 3-step probes, then the per-phenomenon scores
    of the shipped weights and both probes."""
    import json

    abl = load_benchmark("coverage_ablation")
    out = tmp_path / "ablation.json"
    assert abl.main(["--smoke", "--device", "cpu", "--probes", "control", "thin", "--minutes", "2",
                     "--pairs", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["probes"]["control"]["rc"] == 0 and report["probes"]["thin"]["steps"] == 3
    assert report["probes"]["thin"]["flags"] == ["--thin-probability", "0.6"]
    rows = report["scores"]["rows"]
    assert {r["phenomenon"] for r in rows} >= {"plain", "thin"}
    assert all(len(r["models"]) == 3 for r in rows)  # shipped + two probes
