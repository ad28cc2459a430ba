"""The two-refinement std as a function of the network's scale (issue 25, two_pass_scale/rule.md): for a
frame refined twice the published std is multiplied by (s / s_ref)^e, ``s`` the scale the network ran at;
frames refined once are untouched, and e = 0 is the output before, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from evalutil import load_benchmark

from scene_perception.data.conditions import render_condition
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT, LocalRefinementConfig
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

SEED = 10_000_323  # a held-out test seed: behaviour only, nothing is chosen on it


@pytest.fixture(scope="module")
def pipe():
    return build_stereo_pipeline("lite", None, compute_points=False).pipeline


def _runs(pipe, max_disparity: float, *settings: tuple[float, float]) -> list:
    s = render_condition(SEED, 256, 128, max_disparity, "camera")
    pipe.max_disparity = max_disparity
    try:
        out = []
        for e, s_ref in settings:
            pipe.local_refinement = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, two_pass_scale_exponent=e,
                                                        two_pass_scale_reference=s_ref)
            out.append(pipe(s.left, s.right))
        return out
    finally:
        pipe.max_disparity = None
        pipe.local_refinement = DEFAULT_LOCAL_REFINEMENT


@pytest.mark.parametrize("max_disparity", [144.0, 256.0])
def test_the_std_of_a_frame_refined_twice_follows_the_scale(pipe, max_disparity: float) -> None:
    base, same, scaled = _runs(pipe, max_disparity, (0.0, 0.5), (2.0, 128.0 / max_disparity), (1.5, 0.6))
    s = base.scale
    assert s == pytest.approx(128.0 / max_disparity)
    np.testing.assert_array_equal(scaled.disparity, base.disparity)
    ok = np.isfinite(base.disparity_std)
    # s_ref = s: a factor 1 whatever the exponent.
    np.testing.assert_allclose(same.disparity_std[ok], base.disparity_std[ok], rtol=1e-5)
    np.testing.assert_allclose(scaled.disparity_std[ok], base.disparity_std[ok] * (s / 0.6) ** 1.5, rtol=1e-5)
    assert scaled.two_pass_factor == base.two_pass_factor  # the measure's factor; the term comes on top


def test_frames_refined_once_are_untouched(pipe) -> None:
    base, scaled = _runs(pipe, 40.0, (0.0, 0.5), (2.0, 0.5))
    assert base.scale == 1.0
    np.testing.assert_array_equal(scaled.disparity_std, base.disparity_std)


@pytest.mark.parametrize("field, value", [
    ("two_pass_scale_exponent", -0.5), ("two_pass_scale_exponent", 5.5),
    ("two_pass_scale_reference", 0.0), ("two_pass_scale_reference", 1.2)])
def test_bad_settings_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        LocalRefinementConfig(**{field: value})


def test_two_pass_scale_script_quick_runs() -> None:
    """The rule's script on tiny renders: the grid is the rule's, today's row has e = 0, every frame records
    the scale the pipeline ran at, and a chosen term holds through the pipeline."""
    bench = load_benchmark("two_pass_scale")
    res = bench.main(["--quick", "--threads", "1"])
    fit = res["fit"]
    assert len(fit["grid"]) == len(bench.E_GRID) * len(bench.REF_GRID) and fit["today"]["e"] == 0.0
    assert set(fit["today"]["cells"]) == {f"{c}@160" for c in ("exact", "nuisance", "camera", "rig")}
    if fit["chosen"]["e"] > 0:
        assert res["pipeline_check"]["holds"]
    fr = {"std": np.array([1.0, 2.0]), "scale": 0.8, "error": np.array([0.5, 3.0])}
    np.testing.assert_allclose(bench.scaled(fr, 2.0, 0.4), [4.0, 8.0])
