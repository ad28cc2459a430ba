"""The one-pass std factor (issue 25): frames the pipeline refines once get their whole std map multiplied
by ``clip(f0 (m / m_ref)^b, 1, 6)``, ``m`` a GT-free view-agreement measure of the frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from evalutil import load_benchmark

from scene_perception.data.conditions import render_condition
from scene_perception.pipelines import view_agreement
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT, LocalRefinementConfig
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

SEED = 10_000_321  # a held-out test seed: behaviour only, nothing is chosen on it


@pytest.fixture(scope="module")
def pipe():
    return build_stereo_pipeline("lite", None, compute_points=False).pipeline


@pytest.fixture(scope="module")
def camera_pair():
    return render_condition(SEED, 256, 128, 40, "camera")


def test_off_and_a_constant_factor_scales_the_whole_map(pipe, camera_pair) -> None:
    s = camera_pair
    default = pipe(s.left, s.right)  # on by default (one_pass_std/rule.md): through a camera it widens
    assert default.scale == 1.0 and default.one_pass_factor > 1.0 and np.isfinite(default.one_pass_measure)
    off = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, one_pass_std_measure="none")
    pipe.local_refinement = off
    base = pipe(s.left, s.right)
    assert base.scale == 1.0 and base.one_pass_factor == 1.0 and np.isnan(base.one_pass_measure)
    np.testing.assert_allclose(default.disparity_std, default.one_pass_factor * base.disparity_std, rtol=1e-5)
    pipe.local_refinement = dataclasses.replace(off, one_pass_std_measure="zncc", one_pass_std_factor=2.0,
                                                one_pass_std_exponent=0.0)
    doubled = pipe(s.left, s.right)
    np.testing.assert_array_equal(doubled.disparity, base.disparity)  # the disparity is not touched
    assert doubled.one_pass_factor == 2.0 and 0.0 < doubled.one_pass_measure < 1.0
    np.testing.assert_allclose(doubled.disparity_std, 2.0 * base.disparity_std, rtol=1e-5)
    pipe.local_refinement = DEFAULT_LOCAL_REFINEMENT


def test_the_factor_follows_the_measure_and_is_clipped(pipe, camera_pair) -> None:
    s = camera_pair
    cfg = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, one_pass_std_measure="zncc",
                              one_pass_std_reference=0.05, one_pass_std_factor=1.5,
                              one_pass_std_exponent=0.5)
    pipe.local_refinement = dataclasses.replace(cfg, one_pass_std_measure="none")
    base = pipe(s.left, s.right)
    pipe.local_refinement = cfg
    r = pipe(s.left, s.right)
    want = min(6.0, max(1.0, 1.5 * (r.one_pass_measure / 0.05) ** 0.5))
    assert r.one_pass_factor == pytest.approx(want)
    np.testing.assert_allclose(r.disparity_std, want * base.disparity_std, rtol=1e-5)
    # An exact render agrees better across the views: a smaller measure, a smaller factor.
    exact = render_condition(SEED, 256, 128, 40, "exact")
    r_exact = pipe(exact.left, exact.right)
    assert r_exact.one_pass_measure < r.one_pass_measure and r_exact.one_pass_factor <= r.one_pass_factor
    huge = dataclasses.replace(cfg, one_pass_std_reference=1e-6)
    pipe.local_refinement = huge
    assert pipe(s.left, s.right).one_pass_factor == view_agreement.TWO_PASS_FACTOR_RANGE[1]
    pipe.local_refinement = DEFAULT_LOCAL_REFINEMENT


def test_frames_refined_twice_keep_their_own_factor(pipe) -> None:
    s = render_condition(SEED, 256, 128, 180, "exact")
    pipe.local_refinement = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, one_pass_std_measure="zncc",
                                                one_pass_std_factor=3.0)
    pipe.max_disparity = 180
    try:
        r = pipe(s.left, s.right)
    finally:
        pipe.max_disparity = None
        pipe.local_refinement = DEFAULT_LOCAL_REFINEMENT
    assert r.scale < 1.0 and r.one_pass_factor == 1.0 and r.two_pass_factor > 1.0


@pytest.mark.parametrize("field, value", [
    ("one_pass_std_measure", "zcc"), ("one_pass_std_reference", 0.0), ("one_pass_std_factor", float("inf")),
    ("one_pass_std_exponent", -1.0)])
def test_bad_settings_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        LocalRefinementConfig(**{field: value})


def test_one_pass_std_script_quick_runs() -> None:
    """The rule's script on tiny renders: the fit (which stops at its Spearman floor or chooses) and the
    report mode with a given setting."""
    bench = load_benchmark("one_pass_std")
    assert set(bench.main(["--cost", "--threads", "1"])["cost_ms"]) == {"320x240", "640x480", "1282x1110"}
    res = bench.main(["--quick", "--threads", "1"])
    assert res["fit"]["frames"] == 4 * 2 and res["fit"]["measure"] in ("photometric", "noise", "zncc")
    rep = bench.main(["--quick", "--threads", "1", "--setting", "zncc,0.1,1.5,0.5"])
    rows = rep["renders"]["camera"]
    assert rows["today"]["factors"] == [1.0, 1.0] and min(rows["setting"]["factors"]) >= 1.0
    assert rows["setting"]["coverage"][1] >= rows["today"]["coverage"][1]  # a factor >= 1 only widens


def test_view_residual_gate_keeps_the_network_output_above_its_threshold(pipe, camera_pair) -> None:
    """``max_view_residual``: off changes nothing; a threshold below the frame's residual publishes exactly
    what the pipeline without a refinement publishes (disparity and std); one above it refines as usual."""
    s = camera_pair
    default = pipe(s.left, s.right)
    assert not default.refinement_gated and np.isnan(default.view_residual)
    pipe.local_refinement = None
    alone = pipe(s.left, s.right)
    try:
        pipe.local_refinement = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, max_view_residual=1e-4)
        gated = pipe(s.left, s.right)
        assert gated.refinement_gated and gated.view_residual > 1e-4
        np.testing.assert_array_equal(gated.disparity, alone.disparity)
        np.testing.assert_array_equal(gated.disparity_std, alone.disparity_std)
        assert gated.one_pass_factor == 1.0
        pipe.local_refinement = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, max_view_residual=2.0)
        kept = pipe(s.left, s.right)
        assert not kept.refinement_gated and kept.view_residual == gated.view_residual
        np.testing.assert_array_equal(kept.disparity, default.disparity)
        np.testing.assert_array_equal(kept.disparity_std, default.disparity_std)
        # Frames refined twice are gated the same way, before the first refinement.
        wide = render_condition(SEED, 256, 128, 180, "camera")
        pipe.max_disparity = 180
        pipe.local_refinement = None
        alone2 = pipe(wide.left, wide.right)
        pipe.local_refinement = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, max_view_residual=1e-4)
        gated2 = pipe(wide.left, wide.right)
        assert gated2.scale < 1.0 and gated2.refinement_gated and gated2.two_pass_factor == 1.0
        np.testing.assert_array_equal(gated2.disparity, alone2.disparity)
    finally:
        pipe.max_disparity = None
        pipe.local_refinement = DEFAULT_LOCAL_REFINEMENT
    with pytest.raises(ValueError, match="max_view_residual"):
        LocalRefinementConfig(max_view_residual=-0.1)
