"""The one-pass std (issue 25): frames the pipeline refines once get their std map multiplied by
``clip(f0 (m / m_ref)^b, lo, 6)``, ``m`` a GT-free view-agreement measure of the frame, on every pixel or on
the pixels the refinement changed, and the pixels it left alone by ``one_pass_unchanged_scale``."""

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
    default = pipe(s.left, s.right)  # on by default (one_pass_refit/rule.md): through a camera it widens
    assert default.scale == 1.0 and default.one_pass_factor > 1.0 and np.isfinite(default.one_pass_measure)
    off = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, one_pass_std_measure="none",
                              one_pass_std_pixels="all", one_pass_unchanged_scale=1.0)
    pipe.local_refinement = off
    base = pipe(s.left, s.right)
    assert base.scale == 1.0 and base.one_pass_factor == 1.0 and np.isnan(base.one_pass_measure)
    # The default: its factor on the pixels the refinement changed, 0.95 on the others.
    ok = np.isfinite(base.disparity_std) & (base.disparity_std > 0)
    ratio = default.disparity_std[ok] / base.disparity_std[ok]
    on_changed = np.isclose(ratio, default.one_pass_factor, rtol=1e-5)
    unchanged = DEFAULT_LOCAL_REFINEMENT.one_pass_unchanged_scale
    assert np.all(on_changed | np.isclose(ratio, unchanged, rtol=1e-5))
    assert 0.05 < on_changed.mean() < 0.95
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
                              one_pass_std_exponent=0.5, one_pass_std_pixels="all",
                              one_pass_std_min_factor=1.0, one_pass_unchanged_scale=1.0)
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


def test_changed_form_and_unchanged_scale_split_the_map(pipe, camera_pair) -> None:
    """``one_pass_std_pixels`` ``changed`` puts the factor on the pixels the refinement changed only, and
    ``one_pass_unchanged_scale`` scales the others (times the factor in the ``all`` form): every pixel's std
    is the factor-off std times one of two numbers, the same pixels in both forms."""
    s = camera_pair
    off = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, one_pass_std_measure="none",
                              one_pass_std_pixels="all", one_pass_unchanged_scale=1.0)
    const = dataclasses.replace(off, one_pass_std_measure="zncc", one_pass_std_factor=2.0,
                                one_pass_std_exponent=0.0)
    try:
        pipe.local_refinement = off
        base = pipe(s.left, s.right)
        pipe.local_refinement = dataclasses.replace(const, one_pass_std_pixels="changed",
                                                    one_pass_unchanged_scale=0.6)
        split = pipe(s.left, s.right)
        pipe.local_refinement = dataclasses.replace(const, one_pass_unchanged_scale=0.6)
        whole = pipe(s.left, s.right)
    finally:
        pipe.local_refinement = DEFAULT_LOCAL_REFINEMENT
    np.testing.assert_array_equal(split.disparity, base.disparity)
    ok = np.isfinite(base.disparity_std) & (base.disparity_std > 0)
    ratio_split = split.disparity_std[ok] / base.disparity_std[ok]
    ratio_whole = whole.disparity_std[ok] / base.disparity_std[ok]
    changed = np.isclose(ratio_split, 2.0, rtol=1e-5)
    assert np.all(changed | np.isclose(ratio_split, 0.6, rtol=1e-5))
    assert 0.05 < changed.mean() < 0.95  # both kinds of pixel are there
    np.testing.assert_allclose(ratio_whole, np.where(changed, 2.0, 1.2), rtol=1e-5)
    assert split.one_pass_factor == whole.one_pass_factor == 2.0


@pytest.mark.parametrize("lo", [1.0, 0.5])
def test_the_factor_is_clipped_below_at_its_minimum(lo: float) -> None:
    """``view_agreement.one_pass_factor``: with the lower clip at 1 it is the two-pass factor of the same
    numbers; a lower clip lets it fall to there, also when the measure is unknown or the exponent 0."""
    cfg = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, one_pass_std_factor=0.8, one_pass_std_reference=0.1,
                              one_pass_std_exponent=0.5, one_pass_std_min_factor=lo)
    for m in (1e-4, 0.01, 0.1, 0.5, 10.0):
        want = min(6.0, max(lo, 0.8 * (m / 0.1) ** 0.5))
        assert view_agreement.one_pass_factor(m, cfg) == pytest.approx(want)
        if lo == 1.0:
            assert view_agreement.one_pass_factor(m, cfg) == pytest.approx(
                view_agreement.two_pass_factor(m, 0.8, 0.1, 0.5))
    assert view_agreement.one_pass_factor(float("nan"), cfg) == max(lo, 0.8)
    constant = dataclasses.replace(cfg, one_pass_std_exponent=0.0)
    assert view_agreement.one_pass_factor(0.3, constant) == max(lo, 0.8)


@pytest.mark.parametrize("field, value", [
    ("one_pass_std_measure", "zcc"), ("one_pass_std_reference", 0.0), ("one_pass_std_factor", float("inf")),
    ("one_pass_std_exponent", -1.0), ("one_pass_std_pixels", "unchanged"), ("one_pass_std_min_factor", 0.0),
    ("one_pass_std_min_factor", 1.5), ("one_pass_unchanged_scale", 0.0), ("one_pass_unchanged_scale", 1.01)])
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


def test_one_pass_refit_script_quick_runs() -> None:
    """The refit rule's script on tiny renders: the grid's counts agree with a direct numpy coverage, its
    factors with the pipeline's own, the choice (if any) holds through the pipeline; the report mode runs."""
    bench = load_benchmark("one_pass_refit")
    cfg = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, one_pass_std_reference=0.08)
    grid = bench.factor_grid(0.05, 0.08)
    for i, lo in enumerate(bench.LOWS):
        for j in (0, 10, 70):
            for k in (0, 4, 40):
                c = bench.config_of(cfg, ("all", lo, 1.0, bench.F0_GRID[j], bench.B_GRID[k]))
                assert grid[i, j, k] == pytest.approx(view_agreement.one_pass_factor(0.05, c))
    res = bench.main(["--quick", "--threads", "1"])
    fit = res["fit"]
    assert fit["frames"] == 4 * 2
    today = fit["today"]
    np.testing.assert_allclose(today["pooled"]["coverage"], today["direct_coverage"], atol=1e-12)
    if "chosen" in fit:
        np.testing.assert_allclose(fit["chosen"]["pooled"]["coverage"], fit["chosen"]["direct_coverage"],
                                   atol=1e-12)
        assert res["pipeline_check"]["holds"]
    rep = bench.main(["--quick", "--threads", "1", "--setting", "changed,0.5,0.8,1.5,0.0"])
    rows = rep["renders"]["exact"]
    assert rows["setting"]["factors"] == [1.5, 1.5]
    assert min(rows["today"]["factors"]) >= 1.0  # today's lower clip


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
