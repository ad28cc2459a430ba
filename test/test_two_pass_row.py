"""The two-refinement std floor that follows the rig's GT-free row residual (issue 25, two_pass_row/rule.md):
for a frame refined twice the published std becomes sqrt(std^2 + (a sqrt(max(r^2 - r0^2, 0)))^2), ``r`` the
spread of matched corners' vertical offsets at the refined disparity; frames refined once are untouched."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from evalutil import load_benchmark

from scene_perception.data.conditions import render_condition
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT, LocalRefinementConfig
from scene_perception.pipelines.quality import row_residual
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

SEED = 10_000_322  # a held-out test seed: behaviour only, nothing is chosen on it


@pytest.fixture(scope="module")
def pipe():
    return build_stereo_pipeline("lite", None, compute_points=False).pipeline


def _floored(a: float, r0: float) -> LocalRefinementConfig:
    """The floor alone: the scale term (two_pass_scale_exponent), which multiplies after it, off."""
    return dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, two_pass_row_floor=a, two_pass_row_noise=r0,
                               two_pass_scale_exponent=0.0)


def _runs(pipe, max_disparity: float, *settings: tuple[float, float]) -> tuple:
    """The pipeline's results on one rig render (a smooth row residual in the right view) per setting."""
    s = render_condition(SEED, 256, 128, max_disparity, "rig")
    pipe.max_disparity = max_disparity
    try:
        out = []
        for a, r0 in settings:
            pipe.local_refinement = _floored(a, r0)
            out.append(pipe(s.left, s.right))
        return s, out
    finally:
        pipe.max_disparity = None
        pipe.local_refinement = DEFAULT_LOCAL_REFINEMENT


def test_the_floor_adds_in_quadrature_on_frames_refined_twice(pipe) -> None:
    s, (base, off, floored) = _runs(pipe, 180, (0.0, 0.0), (0.0, 0.3), (2.0, 0.05))
    assert base.scale < 1.0
    np.testing.assert_array_equal(off.disparity_std, base.disparity_std)  # a = 0: today, bit for bit
    np.testing.assert_array_equal(floored.disparity, base.disparity)
    d = torch.from_numpy(base.disparity)[None, None]
    r = row_residual(image_to_tensor(s.left).contiguous(), image_to_tensor(s.right).contiguous(), d,
                     torch.isfinite(d)).item()
    assert math.isfinite(r) and r > 0.05
    floor = 2.0 * math.sqrt(r * r - 0.05 ** 2)
    ok = np.isfinite(base.disparity_std)
    np.testing.assert_allclose(floored.disparity_std[ok], np.hypot(base.disparity_std[ok], floor), rtol=1e-4)
    assert floored.disparity_std[ok].min() >= floor * (1 - 1e-4)


def test_no_floor_below_the_estimators_own_spread_and_none_for_frames_refined_once(pipe) -> None:
    _, (base, quiet) = _runs(pipe, 180, (0.0, 0.0), (2.0, 5.0))  # r0 above any r: F = 0
    np.testing.assert_array_equal(quiet.disparity_std, base.disparity_std)
    _, (once, once_floored) = _runs(pipe, 40, (0.0, 0.0), (2.0, 0.0))
    assert once.scale == 1.0
    np.testing.assert_array_equal(once_floored.disparity_std, once.disparity_std)


@pytest.mark.parametrize("field, value", [
    ("two_pass_row_floor", -0.1), ("two_pass_row_floor", 11.0),
    ("two_pass_row_noise", -0.1), ("two_pass_row_noise", 6.0)])
def test_bad_settings_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        LocalRefinementConfig(**{field: value})


def test_two_pass_row_script_quick_runs() -> None:
    """The rule's script on tiny renders: today's row has a = 0, the grid is the rule's, a chosen floor holds
    through the pipeline, and each frame's r is what the pipeline reads."""
    bench = load_benchmark("two_pass_row")
    res = bench.main(["--quick", "--threads", "1"])
    fit = res["fit"]
    assert fit["frames"] == 4 * 2 and len(fit["grid"]) == len(bench.A_GRID) * len(bench.R0_GRID)
    assert fit["today"]["a"] == 0.0
    if fit["chosen"]["a"] > 0:
        assert res["pipeline_check"]["holds"]
    assert bench.floor_of(0.3, 2.0, 0.0) == pytest.approx(0.6)
    assert bench.floor_of(0.1, 2.0, 0.2) == 0.0 and bench.floor_of(math.nan, 2.0, 0.0) == 0.0
