"""Local photometric refinement: recovers a known sub-pixel shift, leaves what it cannot see alone."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from scene_perception.pipelines.local_refinement import (
    LocalRefinementConfig,
    fill_left_border,
    noise_std,
    refine_disparity_locally,
)

H, W = 64, 160


def _cfg(**fields: object) -> LocalRefinementConfig:
    """A setting with the sharp-peak test off unless asked for: these pairs' texture is band-limited (blur
    1.2 px), so its ZNCC peak is broader than the default ``min_peak_curvature`` accepts at most pixels, and
    the tests here are about the other mechanisms."""
    return LocalRefinementConfig(**{"min_peak_curvature": 0.0, **fields})


def _texture(seed: int = 0, blur: float = 1.2) -> np.ndarray:
    """A band-limited random texture (bilinear sampling of it is accurate to well below 0.1 px)."""
    rng = np.random.default_rng(seed)
    noise = rng.random((H, W + 64)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), blur)


def _views(tex: np.ndarray, disparity: float) -> tuple[np.ndarray, np.ndarray]:
    """left(x) = right(x - d) for a constant, fractional d, both cut (bilinear) from ``tex`` (H, W + 64)."""
    xs = np.arange(W, dtype=np.float32) + 32.0
    grid_x = np.tile(xs, (H, 1))
    grid_y = np.repeat(np.arange(H, dtype=np.float32)[:, None], W, axis=1)
    return (cv2.remap(tex, grid_x, grid_y, cv2.INTER_LINEAR),
            cv2.remap(tex, grid_x + disparity, grid_y, cv2.INTER_LINEAR))


def _tensors(*views: np.ndarray) -> tuple[torch.Tensor, ...]:
    """(H, W) grey views as (1, 3, H, W) tensors."""
    return tuple(torch.from_numpy(np.ascontiguousarray(v))[None, None].repeat(1, 3, 1, 1) for v in views)


def _pair(disparity: float, seed: int = 0, blur: float = 1.2) -> tuple[torch.Tensor, torch.Tensor]:
    """left(x) = right(x - d) for a constant, fractional d (both cut from one texture)."""
    return _tensors(*_views(_texture(seed, blur), disparity))


def _const(value: float) -> torch.Tensor:
    return torch.full((1, 1, H, W), value)


@pytest.mark.parametrize("error", [-1.7, -0.4, 0.3, 1.6])
def test_recovers_a_sub_pixel_shift_from_a_wrong_start(error: float) -> None:
    truth = 12.35
    left, right = _pair(truth)
    start = _const(truth + error)
    one_search = _cfg(iterations=1, propagation=0)
    for cfg, median, p95 in ((one_search, 0.1, 0.25), (_cfg(), 0.12, 0.4)):
        refined, changed = refine_disparity_locally(left, right, start, cfg)
        interior = changed[0, 0, 4:-4, 20:-4]
        assert interior.float().mean() > 0.95, "a textured, unambiguous pair is corrected almost everywhere"
        err = (refined[0, 0, 4:-4, 20:-4] - truth).abs()[interior]
        # The network's error was up to 1.7 px; what remains is parabola-fit bias (which every further round,
        # re-fitting around a biased value, spreads a little: hence the looser bound for the default).
        assert err.median() < median and err.quantile(0.95) < p95, cfg


def test_corrections_stay_within_the_radius() -> None:
    left, right = _pair(10.0, seed=1)
    cfg = _cfg(radius=1, min_zncc=-1.0, min_texture=0.0, iterations=1, propagation=0)
    start = _const(14.0)  # 4 px off: out of reach
    refined, changed = refine_disparity_locally(left, right, start, cfg)
    assert ((refined - start).abs() <= cfg.radius + 0.5 + 1e-5).all()
    # ... and a best offset at the border of the searched range is not taken as a correction.
    assert ((refined - start).abs()[changed] < cfg.radius + 0.5 + 1e-5).all()


def test_textureless_and_non_finite_pixels_are_kept() -> None:
    left, right = _pair(8.0)
    left[..., :, 60:100] = 0.5  # a flat patch in the left image
    start = _const(8.6)
    start[0, 0, 10, 10] = float("nan")
    refined, changed = refine_disparity_locally(left, right, start, _cfg(window=5))
    assert not changed[0, 0, :, 63:97].any()
    torch.testing.assert_close(refined[0, 0, :, 63:97], start[0, 0, :, 63:97])
    assert torch.isnan(refined[0, 0, 10, 10]) and not changed[0, 0, 10, 10]
    assert changed[0, 0, 8:-8, 20:50].float().mean() > 0.9  # the textured part still is


@pytest.mark.parametrize("gate", [{"min_x_texture": 0.01}, {"min_x_share": 0.2}])
def test_aperture_gates_keep_windows_that_fix_no_disparity(gate: dict) -> None:
    """Horizontal stripes have grey std but match every horizontal shift (the aperture problem): the grey-std
    gate lets the search move them anywhere, either aperture gate keeps them; texture is still corrected with
    it."""
    rows = torch.from_numpy(_texture(4)[:, :1].repeat(W, axis=1))[None, None].repeat(1, 3, 1, 1)
    rows = 0.5 + 4.0 * (rows - rows.mean())  # stripes with a grey std well above min_texture
    gen = torch.Generator().manual_seed(0)
    # Each camera's own sensor noise makes the flat ZNCC curve bumpy: its best offset is then noise.
    noisy_l, noisy_r = (rows + 0.01 * torch.randn(rows.shape, generator=gen) for _ in range(2))
    start = _const(8.6)
    free = _cfg(iterations=1, propagation=0, window_shift=0)
    _, moved = refine_disparity_locally(noisy_l, noisy_r, start, free)
    _, kept = refine_disparity_locally(noisy_l, noisy_r, start, dataclasses.replace(free, **gate))
    assert moved.float().mean() > 0.05, "without the gate the stripes' flat ZNCC curve is 'corrected'"
    assert not kept.any()
    left, right = _pair(8.0)
    gated = dataclasses.replace(free, **gate)
    refined, changed = refine_disparity_locally(left, right, start, gated)
    assert changed[0, 0, 4:-4, 20:-4].float().mean() > 0.9
    assert (refined[0, 0, 4:-4, 20:-4] - 8.0).abs()[changed[0, 0, 4:-4, 20:-4]].median() < 0.1


@pytest.mark.parametrize("sigma", [0.003, 0.01, 0.03])
def test_noise_std_reads_the_noise_not_shading_or_edges(sigma: float) -> None:
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    scene = 0.2 + 0.002 * xs + 0.003 * ys + 0.3 * ((xs // 20 + ys // 16) % 2)  # shading and a checkerboard
    noisy = scene + sigma * torch.randn(scene.shape, generator=torch.Generator().manual_seed(1))
    assert float(noise_std(scene[None, None])) < 1e-4
    assert abs(float(noise_std(noisy[None, None])) / sigma - 1.0) < 0.1


def test_min_x_snr_follows_the_frame_s_noise() -> None:
    """A faint texture is corrected in an exact pair; with noise on both views its ZNCC peaks are noise, and
    the noise-relative gate (same setting) keeps those pixels, while the fixed gates would not know."""
    left, right = _pair(8.0)
    faint_l, faint_r = 0.5 + 0.15 * (left - 0.5), 0.5 + 0.15 * (right - 0.5)  # grey std ~0.01
    cfg = _cfg(iterations=1, propagation=0, window_shift=0, min_x_snr=4.0)
    _, exact = refine_disparity_locally(faint_l, faint_r, _const(8.6), cfg)
    assert exact[0, 0, 4:-4, 20:-4].float().mean() > 0.9
    gen = torch.Generator().manual_seed(2)
    noisy_l, noisy_r = (t + 0.01 * torch.randn(t.shape, generator=gen) for t in (faint_l, faint_r))
    _, gated = refine_disparity_locally(noisy_l, noisy_r, _const(8.6), cfg)
    off = dataclasses.replace(cfg, min_x_snr=0.0)
    _, ungated = refine_disparity_locally(noisy_l, noisy_r, _const(8.6), off)
    assert gated.float().mean() < 0.2 * ungated.float().mean()


def test_min_peak_curvature_keeps_flat_peaks_and_passes_texture() -> None:
    """Smooth shading with a little independent noise in each view (a flat chessboard square): every shift
    scores about the same, so the search's maxima are noise and the default takes many of them; a sharp-peak
    test refuses them.  A textured pair is still corrected at the same setting."""
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    ramp = (0.2 + 0.004 * xs + 0.001 * ys)[None, None].repeat(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(3)
    flat_l, flat_r = (ramp + 0.003 * torch.randn(ramp.shape, generator=gen) for _ in range(2))
    cfg = _cfg(iterations=1, propagation=0, window_shift=0, min_texture=0.0)
    sharp = dataclasses.replace(cfg, min_peak_curvature=0.05)
    inner = (slice(None), slice(None), slice(4, -4), slice(20, -4))
    _, loose = refine_disparity_locally(flat_l, flat_r, _const(8.0), cfg)
    _, strict = refine_disparity_locally(flat_l, flat_r, _const(8.0), sharp)
    took, kept = loose[inner].float().mean(), strict[inner].float().mean()
    assert took > 0.2 and kept < 0.25 * took, (took, kept)
    left, right = _pair(8.0)
    refined, changed = refine_disparity_locally(left, right, _const(8.4), sharp)
    assert changed[inner].float().mean() > 0.9
    assert (refined[inner] - 8.0).abs()[changed[inner]].median() < 0.1
    # The default (0.2, refinement rule 4) wants a sharper peak: a finer texture passes it, the blurred one
    # mostly does not (its corrections are then the network's values, not errors).
    one = LocalRefinementConfig(iterations=1, propagation=0)
    fine_l, fine_r = _pair(8.0, blur=0.7)
    refined, changed = refine_disparity_locally(fine_l, fine_r, _const(8.4), one)
    assert changed[inner].float().mean() > 0.9
    assert (refined[inner] - 8.0).abs()[changed[inner]].median() < 0.1
    _, broad = refine_disparity_locally(left, right, _const(8.4), one)
    assert broad[inner].float().mean() < 0.5
    with pytest.raises(ValueError, match="min_peak_curvature"):
        LocalRefinementConfig(min_peak_curvature=-0.1)


def test_pixels_whose_search_leaves_the_image_are_kept() -> None:
    left, right = _pair(8.0)
    cfg = _cfg(radius=2, iterations=1, propagation=0)
    refined, changed = refine_disparity_locally(left, right, _const(8.4), cfg)
    # x - d - (radius + 1) < 0: the right image has no pixel to compare with.
    assert not changed[0, 0, :, :11].any()


def test_min_zncc_rejects_a_mismatched_pair() -> None:
    left, _ = _pair(8.0, seed=2)
    _, other = _pair(8.0, seed=3)  # an unrelated texture: no good match anywhere
    for shift, at_most in ((0, 0.005), (3, 0.05)):
        # A shiftable window takes the best of (2s+1)^2 windows, so chance matches pass the gate more often.
        cfg = _cfg(min_zncc=0.9, window_shift=shift)
        _, changed = refine_disparity_locally(left, other, _const(8.0), cfg)
        assert changed.float().mean() < at_most, cfg
        ungated_cfg = dataclasses.replace(cfg, min_zncc=-1.0)
        _, ungated = refine_disparity_locally(left, other, _const(8.0), ungated_cfg)
        assert ungated.float().mean() > 0.3, "without the gate much more changes: the gate is what rejects"


def test_propagation_repairs_a_band_beyond_the_search_radius() -> None:
    """Edge fattening in miniature: a 6 px band 12 px off, surrounded by the right answer."""
    truth = 8.3
    left, right = _pair(truth, seed=4)
    start = _const(truth + 0.2)
    start[..., 70:76] = truth + 12.0
    without, _ = refine_disparity_locally(left, right, start, _cfg(propagation=0))
    assert ((without[0, 0, 4:-4, 70:76] - truth).abs() > 5).float().mean() > 0.9
    with_prop, changed = refine_disparity_locally(left, right, start, _cfg(propagation=4))
    band = (with_prop[0, 0, 4:-4, 70:76] - truth).abs()
    assert (band < 0.5).float().mean() > 0.9 and changed[0, 0, 4:-4, 70:76].all()


def _step_pair(
    background: float, foreground: float, edge: int, seed: int = 7
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fronto-parallel foreground (x >= edge in the left image) in front of a background, both textured.

    Rendered from the right image: right(u) shows the foreground where u >= edge - foreground, else the
    background, so left(x) = right(x - d(x)) exactly, with an occluded band left of the edge.
    """
    back, front = _texture(seed), _texture(seed + 1)
    ys = np.repeat(np.arange(H, dtype=np.float32)[:, None], W, axis=1)
    us = np.tile(np.arange(W, dtype=np.float32), (H, 1))
    right = np.where(us >= edge - foreground, cv2.remap(front, us + 32.0 + foreground, ys, cv2.INTER_LINEAR),
                     cv2.remap(back, us + 32.0 + background, ys, cv2.INTER_LINEAR))
    xs = us
    left = np.where(xs >= edge, cv2.remap(front, xs + 32.0, ys, cv2.INTER_LINEAR),
                    cv2.remap(back, xs + 32.0, ys, cv2.INTER_LINEAR))
    return _tensors(left, right)


def test_shiftable_window_repairs_pixels_next_to_a_depth_edge() -> None:
    """A foreground edge fattened onto the background: near the edge the centred window straddles both
    surfaces and matches neither; a window shifted onto the pixel's own side does."""
    edge, back, front = 90, 6.0, 14.0
    left, right = _step_pair(back, front, edge)
    occluded_from = edge - int(front - back)  # background pixels x in [82, 90) are hidden in the right view
    truth = torch.where(torch.arange(W) >= edge, front, back)
    start = _const(back)
    start[..., edge - 12:] = front  # the network's edge 12 px too far onto the background
    bad = {}
    for shift in (0, 3):
        refined, _ = refine_disparity_locally(left, right, start, _cfg(window_shift=shift))
        err = (refined[0, 0, 6:-6] - truth).abs()
        # Visible pixels within 10 px of the occluded band / the edge (the band itself has no right answer).
        near = torch.cat([err[:, occluded_from - 10: occluded_from], err[:, edge: edge + 10]], dim=1)
        bad[shift] = int((near > 1.0).sum())
    assert bad[0] >= 10, f"the centred window should fail next to the edge, or this tests nothing: {bad}"
    assert bad[3] <= 2, bad


@pytest.mark.parametrize("shift", [1, 2, 3, 5, 8])
def test_shift_max_is_a_square_max_filter(shift: int) -> None:
    """The doubling sliding maximum equals max-pooling over the (2s+1)^2 neighbourhood, border at -2."""
    from torch.nn import functional as F

    from scene_perception.pipelines.local_refinement import _shift_max

    scores = torch.rand(1, 9, 37, 53) * 2 - 1
    reference = F.max_pool2d(F.pad(scores, (shift,) * 4, value=-2.0), 2 * shift + 1, stride=1)
    assert torch.equal(_shift_max(scores, shift), reference)


def test_window_shift_acts_as_at_most_half_the_window() -> None:
    """A window shifted by more than its half-width no longer contains the pixel it scores."""
    edge, back, front = 90, 6.0, 14.0
    left, right = _step_pair(back, front, edge)
    start = _const(back)
    start[..., edge - 6:] = front
    capped, _ = refine_disparity_locally(left, right, start, _cfg(window=5, window_shift=2))
    larger, _ = refine_disparity_locally(left, right, start, _cfg(window=5, window_shift=6))
    torch.testing.assert_close(capped, larger, rtol=0, atol=0)


def test_fill_left_border_continues_the_first_matchable_disparity() -> None:
    nan = float("nan")
    d = torch.tensor([[5.0, 6.0, 2.0, 1.0, 7.0, 3.0],   # x - d < 0 at x = 0, 1 and at x = 4 (a gross error)
                      [nan, 0.5, 3.0, 2.0, 9.0, 9.0],   # NaN kept; x = 2 takes x = 3's value
                      [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]])[None, None]  # nothing matchable: row kept
    filled, mask = fill_left_border(d)
    expected = torch.tensor([[2.0, 2.0, 2.0, 1.0, 3.0, 3.0],
                             [nan, 0.5, 2.0, 2.0, 9.0, 9.0],
                             [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]])
    torch.testing.assert_close(filled[0, 0], expected, equal_nan=True)
    assert mask[0, 0].tolist() == [[True, True, False, False, True, False],
                                   [False, False, True, False, False, False],
                                   [False] * 6]


def test_fill_border_repairs_the_left_band_and_is_not_counted_as_a_correction() -> None:
    truth = 12.0
    left, right = _pair(truth, seed=8)
    start = _const(truth)
    start[..., :10] = truth + 6.0  # the network's guess where nothing can be matched (x < 12)
    off, _ = refine_disparity_locally(left, right, start, _cfg(fill_border=False))
    on, changed = refine_disparity_locally(left, right, start, _cfg(fill_border=True))
    assert ((off[0, 0, :, :10] - truth).abs() > 5).all(), "the search cannot reach that band"
    assert ((on[0, 0, :, :10] - truth).abs() < 0.5).all()
    assert not changed[0, 0, :, :10].any()  # so the pipeline does not shrink their std
    torch.testing.assert_close(on[..., 20:], off[..., 20:])


@pytest.mark.parametrize("kwargs", [{"radius": -1}, {"window": 4}, {"window": 1}, {"min_zncc": 1.5},
                                    {"min_texture": -0.1}, {"min_x_texture": -0.01}, {"min_x_share": 1.5},
                                    {"iterations": 0},
                                    {"propagation": -1}, {"window_shift": -1}, {"correction_std": -0.1},
                                    {"uncertainty_scale": 0.0}, {"uncertainty_scale": 1.5}])
def test_config_is_checked(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LocalRefinementConfig(**kwargs)


def test_shapes_are_checked() -> None:
    left, right = _pair(5.0)
    with pytest.raises(ValueError, match="disparity must be"):
        refine_disparity_locally(left, right, torch.zeros(1, 1, H, W - 1))
    with pytest.raises(ValueError, match="left and right"):
        refine_disparity_locally(left, right[..., 1:], _const(5.0))


def test_strips_give_the_one_pass_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row strips (for the CPU cache) change nothing but float rounding."""
    import scene_perception.pipelines.local_refinement as lr

    left, right = _pair(9.4, seed=6)
    start = _const(10.0)
    start[..., 30:36, :] = 17.0  # a horizontal band: propagation must reach across strip borders
    start[..., :, 90:95] = 3.0
    for cfg, tolerance in ((_cfg(iterations=1), 1e-3), (_cfg(), 0.5),
                           (_cfg(iterations=1, window_shift=3), 1e-3)):
        monkeypatch.setattr(lr, "STRIP_ROWS", 10**6)
        whole, whole_changed = refine_disparity_locally(left, right, start, cfg)
        monkeypatch.setattr(lr, "STRIP_ROWS", 16)  # 64 rows: 4 strips, borders inside the band's reach
        strips, strips_changed = refine_disparity_locally(left, right, start, cfg)
        # One round: rounding only.  Three: each round re-fits around the last, and rounding-level
        # differences at flat ZNCC peaks grow to tenths of a pixel at a few % of pixels, never more.
        assert (whole - strips).abs().max() < tolerance, cfg
        assert (whole_changed == strips_changed).float().mean() > 0.99


def test_zncc_is_the_textbook_form_to_the_bit() -> None:
    """The in-place, preallocated ZNCC of the inner loop computes exactly the plain formula: the same
    operations in the same order.  Why to the bit: the refinement is chaotic under rounding (near-tie
    candidates), and a fused multiply-add in the variance alone moved 10 % of a 320x240 frame's pixels by
    more than 0.01 px and 0.5 % by more than 0.5 px (docs/refinement.md, Cost), a change no speed-up may
    make silently."""
    import torch.nn.functional as F

    import scene_perception.pipelines.local_refinement as lr

    left, right = _pair(9.4, seed=3)
    grey_l, grey_r = lr._grey(left), lr._grey(right)
    mean_l, var_l = lr._window_mean_var(grey_l, 7)
    fields = 9.4 + torch.linspace(-4.0, 4.0, 9).view(9, 1, 1) + 0.3 * torch.rand(9, H, W)
    k = fields.shape[0]
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, W)
    ys = torch.arange(H, dtype=torch.float32).view(1, H, 1).expand(k, H, W)
    grid = torch.stack([(xs - fields) * (2.0 / (W - 1)) - 1.0, ys * (2.0 / (H - 1)) - 1.0], dim=-1)
    warped = F.grid_sample(grey_r.expand(k, 1, H, W), grid, mode="bilinear", padding_mode="border",
                           align_corners=True).view(1, k, H, W)
    stacked = torch.cat([warped, warped * warped, grey_l * warped], dim=1)
    mean_r, mean_rr, mean_lr = lr._box(stacked, 7).split(k, 1)
    var_r = (mean_rr - mean_r * mean_r).clamp_min(0.0)
    textbook = (mean_lr - mean_l * mean_r) / torch.sqrt(var_l * var_r + 1e-12)
    for shift in (0, 3):
        assert torch.equal(lr._zncc(grey_l, grey_r, mean_l, var_l, fields, 7, shift),
                           lr._shift_max(textbook, shift))


def test_a_candidate_repairs_gross_errors_no_search_reaches_and_a_wrong_one_is_refused() -> None:
    """The SGBM candidate in miniature: a 120 px wide block 15 px off, wider than propagation reaches in
    the default 3 rounds (8 px per round from each side)."""
    truth = 8.3
    left, right = _pair(truth, seed=5)
    start = _const(truth + 0.2)
    start[..., 30:150] = truth + 15.0
    without, _ = refine_disparity_locally(left, right, start, _cfg())
    assert ((without[0, 0, 4:-4, 60:120] - truth).abs() > 5).float().mean() > 0.9
    candidate = _const(truth)
    candidate[..., 100:] = float("nan")  # the other matcher has no answer there
    fixed, changed = refine_disparity_locally(left, right, start, _cfg(), candidate)
    assert ((fixed[0, 0, 4:-4, 40:95] - truth).abs() < 0.5).float().mean() > 0.95
    assert changed[0, 0, 4:-4, 40:95].all()
    # A candidate that is wrong everywhere does not replace a right answer.
    right_start = _const(truth)
    kept, _ = refine_disparity_locally(left, right, right_start, _cfg(), _const(truth + 9.0))
    assert ((kept[0, 0, 4:-4, 30:-4] - truth).abs() < 0.5).float().mean() > 0.98
    with pytest.raises(ValueError, match="candidate"):
        refine_disparity_locally(left, right, start, _cfg(), candidate[..., 1:])


def _periodic_pair(disparity: float, period: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A texture repeating every ``period`` px along x (a chessboard's squares in miniature), plus a little
    independent noise per view, as a camera adds: the right period and the next one score almost alike."""
    rng = np.random.default_rng(seed)
    tile = cv2.GaussianBlur(rng.random((H, period)).astype(np.float32), (0, 0), 1.2)
    tex = np.tile(tile, (1, (W + 64) // period + 2))
    return _tensors(*(v + rng.normal(0.0, 0.01, v.shape).astype(np.float32) for v in _views(tex, disparity)))


def test_a_far_candidate_must_win_by_the_margin_and_a_clear_one_still_does() -> None:
    """candidate_far_margin: on a repetitive texture SGBM's wrong period (here 24 px off) scores about as
    well as the right answer and, with any win enough, replaces it at many pixels; with the margin it does
    not, while a gross error the candidate fixes (a clear win) is still fixed."""
    truth, period = 6.4, 24
    left, right = _periodic_pair(truth, period)
    start, wrong = _const(truth), _const(truth + period)
    inside = (slice(None), slice(None), slice(4, -4), slice(period + 8, -8))
    any_win, _ = refine_disparity_locally(left, right, start, _cfg(iterations=1), wrong)
    assert ((any_win[inside] - truth).abs() > 5).float().mean() > 0.05
    far = _cfg(iterations=1, candidate_far_margin=0.2, candidate_far_px=8.0)
    kept, _ = refine_disparity_locally(left, right, start, far, wrong)
    assert ((kept[inside] - truth).abs() > 5).float().mean() < 0.005
    # Near candidates are not asked for the margin.
    near = dataclasses.replace(far, candidate_far_px=period + 1.0)
    near_win, _ = refine_disparity_locally(left, right, start, near, wrong)
    assert ((near_win[inside] - truth).abs() > 5).float().mean() > 0.05

    left, right = _pair(8.3, seed=5)
    block = _const(8.3 + 0.2)
    block[..., 30:150] = 8.3 + 15.0
    fixed, _ = refine_disparity_locally(left, right, block, far, _const(8.3))
    assert ((fixed[0, 0, 4:-4, 40:140] - 8.3).abs() < 0.5).float().mean() > 0.95


def test_the_far_candidate_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="candidate_far_margin"):
        LocalRefinementConfig(candidate_far_margin=-0.1)
    with pytest.raises(ValueError, match="candidate_far_px"):
        LocalRefinementConfig(candidate_far_px=-1.0)
