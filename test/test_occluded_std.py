"""The occluded-pixel std scale (issue 25, occluded_pixels/rule.md): after the one- or two-pass steps, the std
is multiplied where the pipeline's own disparity is hidden from the right camera, and nowhere else."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from evalutil import load_benchmark

from scene_perception.data.conditions import render_condition
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT, LocalRefinementConfig
from scene_perception.pipelines.occlusion import occluded_by_ordering
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

SEED = 10_000_321  # a held-out test seed: behaviour only, nothing is chosen on it


@pytest.fixture(scope="module")
def pipe():
    return build_stereo_pipeline("lite", None, compute_points=False).pipeline


def _without_and_with(pipe, max_disparity: float, scale: float = 3.0) -> tuple:
    s = render_condition(SEED, 256, 128, max_disparity, "camera")
    pipe.max_disparity = max_disparity
    try:
        pipe.local_refinement = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, occlusion_std_scale=1.0)
        base = pipe(s.left, s.right)
        pipe.local_refinement = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, occlusion_std_scale=scale)
        return base, pipe(s.left, s.right)
    finally:
        pipe.max_disparity = None
        pipe.local_refinement = DEFAULT_LOCAL_REFINEMENT


@pytest.mark.parametrize("max_disparity", [40, 180])  # refined once, twice
def test_only_the_pixels_hidden_by_the_own_disparity_are_widened(pipe, max_disparity: float) -> None:
    base, wide = _without_and_with(pipe, max_disparity)
    assert (base.scale < 1.0) == (max_disparity > 128)
    np.testing.assert_array_equal(wide.disparity, base.disparity)
    hidden = occluded_by_ordering(torch.from_numpy(base.disparity)).numpy()
    # Occlusions are there (at range 180 on 256 px most of the hidden share is the left border band).
    assert 0.005 < hidden.mean() < 0.9 and not hidden.all()
    np.testing.assert_array_equal(wide.disparity_std[~hidden], base.disparity_std[~hidden])
    np.testing.assert_allclose(wide.disparity_std[hidden], 3.0 * base.disparity_std[hidden], rtol=1e-5)


def test_the_mask_follows_the_ordering_constraint_on_any_leading_dims() -> None:
    d = torch.full((2, 1, 3, 60), 5.0)
    d[..., 30:40] = 15.0
    hidden = occluded_by_ordering(d)
    assert hidden.shape == d.shape and hidden.dtype == torch.bool
    assert hidden[..., 21:30].all() and not hidden[..., 5:20].any() and not hidden[..., 30:].any()


@pytest.mark.parametrize("value", [0.5, 101.0])
def test_a_bad_scale_is_refused_by_name(value: float) -> None:
    with pytest.raises(ValueError, match="occlusion_std_scale"):
        LocalRefinementConfig(occlusion_std_scale=value)


def test_occluded_std_script_quick_runs() -> None:
    """The rule's script on tiny renders: one frame per (condition, range, seed), the grid, and a choice
    that holds through the pipeline."""
    bench = load_benchmark("occluded_std")
    res = bench.main(["--quick", "--threads", "1", "--conditions", "exact"])
    fit = res["fit"]
    assert fit["frames"] == 2 * 2 and len(fit["grid"]) == len(bench.GRID)
    assert fit["today"]["f"] == 1.0 and set(fit["sets"]) == {"exact, once", "exact, twice"}
    if "chosen" in fit and fit["chosen"]["f"] != 1.0:
        assert res["pipeline_check"]["holds"]
        assert fit["chosen"]["score"] <= fit["today"]["score"]


def test_joint_rule_reproduces_today_from_the_u1_base_and_reports_a_setting() -> None:
    """rule_joint.md records the std with u 1 and applies u in numpy: its today row (f 1, u 0.35) must equal
    rule.md's today, which ran the pipeline as shipped; ``--setting`` reports the pair it is given."""
    bench = load_benchmark("occluded_std")
    single = bench.main(["--quick", "--threads", "1", "--conditions", "exact", "--setting", "2"])["fit"]
    joint = bench.main(["--quick", "--threads", "1", "--conditions", "exact", "--joint",
                        "--setting", "2,0.5"])["fit"]
    for name in single["sets"]:
        want = single["today"]["sets"][name]["coverage"]
        assert joint["today"]["sets"][name]["coverage"] == pytest.approx(want, abs=1e-3)  # float rounding
    assert (joint["chosen"]["f"], joint["chosen"]["u"]) == (2.0, 0.5)
    assert (single["chosen"]["f"], single["chosen"]["u"]) == (2.0, 1.0)
    once = "exact, once"  # u never touches frames refined once
    assert joint["chosen"]["sets"][once]["coverage"] == single["chosen"]["sets"][once]["coverage"]
