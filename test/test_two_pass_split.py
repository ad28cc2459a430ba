"""The two-refinement std split (issue 25, two_pass_split/rule.md): after the two-pass factor, the std of a
frame refined twice is scaled by one number where the second refinement changed the pixel and another where it
did not; frames refined once are untouched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from evalutil import load_benchmark

from scene_perception.data.conditions import render_condition
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT, LocalRefinementConfig
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

SEED = 10_000_321  # a held-out test seed: behaviour only, nothing is chosen on it


@pytest.fixture(scope="module")
def pipe():
    return build_stereo_pipeline("lite", None, compute_points=False).pipeline


def _scaled(k: float, u: float) -> LocalRefinementConfig:
    return dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, two_pass_changed_scale=k, two_pass_unchanged_scale=u)


def _without_and_with_split(pipe, max_disparity: float) -> tuple:
    """The pipeline's result on one camera render at scales (1, 1) and at (1.3, 0.6)."""
    s = render_condition(SEED, 256, 128, max_disparity, "camera")
    pipe.max_disparity = max_disparity
    try:
        pipe.local_refinement = _scaled(1.0, 1.0)
        base = pipe(s.left, s.right)
        pipe.local_refinement = _scaled(1.3, 0.6)
        return base, pipe(s.left, s.right)
    finally:
        pipe.max_disparity = None
        pipe.local_refinement = DEFAULT_LOCAL_REFINEMENT


def test_the_split_scales_changed_and_unchanged_pixels_of_frames_refined_twice(pipe) -> None:
    base, split = _without_and_with_split(pipe, 180)
    assert base.scale < 1.0 and split.scale < 1.0
    np.testing.assert_array_equal(split.disparity, base.disparity)
    ok = np.isfinite(base.disparity_std) & (base.disparity_std > 0)
    ratio = split.disparity_std[ok] / base.disparity_std[ok]
    changed = np.isclose(ratio, 1.3, rtol=1e-5)
    assert np.all(changed | np.isclose(ratio, 0.6, rtol=1e-5))
    assert 0.05 < changed.mean() < 0.95  # both kinds of pixel are there


def test_frames_refined_once_are_untouched(pipe) -> None:
    base, split = _without_and_with_split(pipe, 40)
    assert base.scale == 1.0
    np.testing.assert_array_equal(split.disparity_std, base.disparity_std)


@pytest.mark.parametrize("field, value", [
    ("two_pass_changed_scale", 0.0), ("two_pass_changed_scale", 4.5),
    ("two_pass_unchanged_scale", 0.0), ("two_pass_unchanged_scale", 1.2)])
def test_bad_scales_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        LocalRefinementConfig(**{field: value})


def test_two_pass_split_script_quick_runs() -> None:
    """The rule's script on tiny renders: the grid's counts agree with a direct coverage, and the choice holds
    through the pipeline."""
    bench = load_benchmark("two_pass_split")
    res = bench.main(["--quick", "--threads", "1"])
    fit = res["fit"]
    assert fit["frames"] == 4 * 2 and len(fit["grid"]) == len(bench.K_GRID) * len(bench.U_GRID)
    assert (fit["today"]["k"], fit["today"]["u"]) == (1.0, 1.0)
    if "chosen" in fit:
        assert res["pipeline_check"]["holds"]
        assert fit["chosen"]["score"] <= fit["today"]["score"]
