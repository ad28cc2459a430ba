"""GT-free live quality (pipelines/quality.py): pairs rendered with a known disparity, then broken on purpose.

The pairs are a smooth random texture and its copy shifted by a known disparity field (a constant one and a
two-plane one with a real occlusion), so every expected value follows from the construction, not from a
previous run.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.quality import (
    FrameQuality,
    QualityConfig,
    QualityWindow,
    agreement,
    assess,
    assess_arrays,
    confidence_map,
    corner_vertical_offsets,
    flipped_pair,
    left_right_check,
    photometric_residual,
    right_disparity_by_uniqueness,
    right_disparity_from_flipped,
    row_residual,
    vertical_offset,
)
from scene_perception.pipelines.quality_thresholds import (
    DEFAULT_THRESHOLDS,
    QualityThresholds,
    degraded_reasons,
)
from scene_perception.ros.live_quality import SGBM_KEY, NodeQuality

H, W, D = 96, 160, 8


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """Smoothed RGB noise: textured at every scale the 3x3 SSIM and the row shifts look at."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (5, 5), 1.2)


def constant_pair(seed: int = 0, d: int = D) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """left(x) = right(x - d) everywhere: right(x) = tex(x + d), left(x) = tex(x)."""
    tex = texture(H, W + d, seed)
    left, right = np.ascontiguousarray(tex[:, :W]), np.ascontiguousarray(tex[:, d:])
    return left, right, np.full((H, W), float(d), np.float32)


def shift_down(image: np.ndarray, dy: float) -> np.ndarray:
    """The image content moved ``dy`` px down (bilinear for fractions): out(y) = image(y - dy)."""
    m = np.float32([[1, 0, 0], [0, 1, dy]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def tensors(left: np.ndarray, right: np.ndarray, disparity: np.ndarray) -> tuple[torch.Tensor, ...]:
    d = torch.from_numpy(disparity)[None, None]
    return (image_to_tensor(left).contiguous(), image_to_tensor(right).contiguous(), d,
            torch.isfinite(d) & (d > 0))


def test_true_disparity_warps_with_low_error_and_a_wrong_one_does_not() -> None:
    left, right, gt = constant_pair()
    lt, rt, d, valid = tensors(left, right, gt)
    residual, in_view = photometric_residual(lt, rt, d)
    assert in_view[..., D:].all() and not in_view[..., : D - 1].any()  # x - d < 0 has no source
    good = residual[in_view].median().item()
    wrong = photometric_residual(lt, rt, d + 3.0)[0][in_view].median().item()
    assert good < 0.01, good  # only uint8 rounding differs
    assert wrong > 10 * good and wrong > 0.02, (good, wrong)
    q_good = assess(lt, rt, d, valid)[0]
    q_wrong = assess(lt, rt, d + 3.0, valid)[0]  # a consistent wrong plane: only the photometry sees it
    assert q_good.photometric_p50 == pytest.approx(good, rel=0.05, abs=1e-4)
    assert q_wrong.photometric_p50 > 10 * q_good.photometric_p50


@pytest.mark.parametrize("dy", [0.0, 0.5, 1.0, -1.0, 2.0])
def test_vertical_offset_recovers_a_shifted_right_image_with_its_sign(dy: float) -> None:
    left, right, gt = constant_pair(seed=1)
    lt, rt, d, valid = tensors(left, shift_down(right, dy), gt)
    offset, corners = vertical_offset(lt, rt, d, valid, range_px=3)
    assert corners.item() >= 20
    assert offset.item() == pytest.approx(dy, abs=0.15)
    # The same through assess (the node's path), whose default range is 2 px.
    assert assess(lt, rt, d, valid)[0].vertical_offset_px == pytest.approx(dy, abs=0.15)


@pytest.mark.parametrize("dy", [2.6, 4.0, -4.0])
def test_vertical_offset_beyond_its_range_reads_as_the_end_or_unknown_never_small(dy: float) -> None:
    left, right, gt = constant_pair(seed=2)
    lt, rt, d, valid = tensors(left, shift_down(right, dy), gt)
    offset = vertical_offset(lt, rt, d, valid, range_px=2)[0].item()
    assert math.isnan(offset) or offset == pytest.approx(math.copysign(2.0, dy), abs=0.01), offset


def test_vertical_offset_survives_a_disparity_that_absorbed_part_of_it() -> None:
    """A disparity wrong by up to the dx search (here 3 px, noisy) does not pull the estimate to 0, and an
    exposure change of one camera (ZNCC) does not move it."""
    left, right, gt = constant_pair(seed=3)
    rng = np.random.default_rng(1)
    wrong = gt + rng.uniform(-3, 3, gt.shape).astype(np.float32)
    brighter = np.clip(shift_down(right, 1.0).astype(np.float32) * 1.5, 0, 255).astype(np.uint8)
    lt, rt, d, valid = tensors(left, brighter, wrong)
    assert vertical_offset(lt, rt, d, valid)[0].item() == pytest.approx(1.0, abs=0.15)


def two_planes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A background at disparity 4 and a foreground square at 14 in front of it; returns left, right, the
    left disparity and the non-occluded mask (background pixels the square hides in the right view)."""
    bg, fg = 4, 14
    tex_bg, tex_fg = texture(H, W + 40, 3), texture(H, W + 40, 4)
    ys, xs = np.mgrid[0:H, 0:W]
    square = (ys >= 30) & (ys < 70) & (xs >= 60) & (xs < 100)
    disparity = np.where(square, fg, bg).astype(np.float32)
    # Left x shows column x + d of its plane's texture, right x' column x' + 2d: left(x) = right(x - d).
    left = np.where(square[..., None], tex_fg[ys, xs + fg], tex_bg[ys, xs + bg]).astype(np.uint8)
    square_r = (ys >= 30) & (ys < 70) & (xs >= 60 - fg) & (xs < 100 - fg)
    right = np.where(square_r[..., None], tex_fg[ys, xs + 2 * fg], tex_bg[ys, xs + 2 * bg]).astype(np.uint8)
    # A background left pixel x is hidden in the right view when x - bg lands on the shifted square.
    target = xs - bg
    occluded = ~square & (ys >= 30) & (ys < 70) & (target >= 60 - fg) & (target < 100 - fg)
    return left, right, disparity, ~occluded


def test_consistency_is_full_for_the_true_disparity_and_flags_its_occlusion() -> None:
    left, right, gt, nonoccluded = two_planes()
    assert (~nonoccluded).sum() > 100  # the construction has an occluded band
    lt, rt, d, valid = tensors(left, right, gt)
    _, ok = left_right_check(d, right_disparity_by_uniqueness(d, valid))
    in_view = valid & (torch.arange(W).view(1, 1, 1, W) >= d)
    nonocc = torch.from_numpy(nonoccluded)[None, None]
    rate_visible = (ok & in_view & nonocc).sum() / (in_view & nonocc).sum()
    rate_occluded = (ok & in_view & ~nonocc).sum() / (in_view & ~nonocc).sum()
    assert rate_visible.item() > 0.99
    assert rate_occluded.item() < 0.1
    # Constant disparity: nothing occluded, everything in view is consistent.
    lt, rt, d, valid = tensors(*constant_pair())
    q = assess(lt, rt, d, valid, right_disparity_by_uniqueness(d, valid))[0]
    assert q.lr_consistent == pytest.approx(1.0, abs=1e-6)


def test_consistency_is_low_for_a_wrong_disparity() -> None:
    """Against the true right view's disparity (what the network check provides), a disparity that is
    wrong by noise of several px is mostly inconsistent; the uniqueness check catches the crossings."""
    left, right, gt = constant_pair()
    lt, rt, d, valid = tensors(left, right, gt)
    rng = np.random.default_rng(0)
    noisy = d + torch.from_numpy(rng.uniform(-6, 6, gt.shape).astype(np.float32))[None, None]
    q_true_right = assess(lt, rt, noisy, valid, d.clone())[0]  # right-view GT = d (constant)
    assert q_true_right.lr_consistent < 0.3
    q_unique = assess(lt, rt, noisy, valid)[0]
    assert q_unique.lr_consistent < 0.7
    # The photometric error is still scored where the wrong disparities are not self-occluded.
    assert q_unique.known and q_unique.photometric_p50 > 0.05


def test_flipped_pair_gives_the_right_views_disparity() -> None:
    left, right, gt = constant_pair()
    fl, fr = flipped_pair(left, right)
    # In the mirrored, swapped pair the same constant shift holds: fl(x) = fr(x - d).
    lt, rt, d, _ = tensors(fl, fr, gt)
    residual, in_view = photometric_residual(lt, rt, d)
    assert residual[in_view].median().item() < 0.01
    back = right_disparity_from_flipped(torch.arange(W, dtype=torch.float32).view(1, 1, 1, W))
    assert back[0, 0, 0, 0].item() == W - 1


def test_confidence_is_in_unit_range_high_where_right_and_zero_where_invalid() -> None:
    left, right, gt = constant_pair()
    lt, rt, d, valid = tensors(left, right, gt)
    valid[..., :20] = False
    d_bad = d.clone()
    d_bad[..., 80:] += 4.0
    q = assess(lt, rt, d_bad, valid, d.clone(), want_confidence=True)[0]
    conf = q.confidence
    assert conf is not None and conf.shape == (H, W)
    assert conf.min().item() >= 0.0 and conf.max().item() <= 1.0
    assert conf[:, :20].abs().max().item() == 0.0
    assert conf[:, 30:70].median().item() > 0.8 > conf[:, 90:].median().item() * 2
    residual, _ = photometric_residual(lt, rt, d)
    assert confidence_map(residual, None, valid, QualityConfig()).shape == (1, 1, H, W)


def test_nan_disparity_and_no_valid_pixels_are_unknown_not_zero() -> None:
    left, right, gt = constant_pair()
    lt, rt, d, valid = tensors(left, right, gt)
    nan = torch.full_like(d, float("nan"))
    for disparity, mask in ((nan, torch.ones_like(valid)), (d, torch.zeros_like(valid))):
        q = assess(lt, rt, disparity, mask, right_disparity_by_uniqueness(disparity, mask),
                   want_confidence=True)[0]
        assert not q.known
        assert math.isnan(q.photometric_p50) and math.isnan(q.lr_consistent)
        assert math.isnan(q.vertical_offset_px)
        assert q.scored_pixels == 0
        assert q.confidence is not None and q.confidence.abs().max().item() == 0.0
    # Partly NaN (a block: the 3x3 SSIM of its border pixels sees the block): the rest is still scored
    # and the NaNs never reach a statistic.
    partial = d.clone()
    partial[..., 20:60, 60:100] = float("nan")
    q = assess(lt, rt, partial, valid, right_disparity_by_uniqueness(partial, valid))[0]
    assert q.known and q.photometric_p50 < 0.01 and math.isfinite(q.vertical_offset_px)


def test_assess_batches_items_independently() -> None:
    left, right, gt = constant_pair()
    lt, rt, d, valid = tensors(left, right, gt)
    rt_shifted = image_to_tensor(shift_down(right, 1.0)).contiguous()
    batch = assess(torch.cat([lt, lt]), torch.cat([rt, rt_shifted]), torch.cat([d, d]),
                   torch.cat([valid, valid]))
    single = assess(lt, rt_shifted, d, valid)[0]
    assert batch[0].vertical_offset_px == pytest.approx(0.0, abs=0.15)
    assert batch[1].vertical_offset_px == pytest.approx(single.vertical_offset_px, abs=1e-4)
    assert batch[1].photometric_p50 == pytest.approx(single.photometric_p50, rel=1e-4)


def test_assess_arrays_matches_the_tensor_path() -> None:
    left, right, gt = constant_pair()
    valid = np.ones_like(gt, dtype=bool)
    q = assess_arrays(left, right, gt, valid)
    lt, rt, d, v = tensors(left, right, gt)
    expected = assess(lt, rt, d, v, right_disparity_by_uniqueness(d, v))[0]
    assert q.photometric_p50 == pytest.approx(expected.photometric_p50)
    assert q.lr_consistent == pytest.approx(expected.lr_consistent)


def test_window_summarises_known_frames_only() -> None:
    window = QualityWindow(3)
    nan = float("nan")
    assert math.isnan(window.photometric_p50()) and math.isnan(window.lr_consistent())
    for p, lr, v in ((0.1, 0.9, 0.0), (nan, nan, nan), (0.3, 0.7, 1.0), (0.2, 0.8, 2.0)):
        window.add(FrameQuality(p, lr, v, 0 if math.isnan(p) else 100))
    # The oldest frame (0.1) left the 3-frame window; the unknown one is counted, not averaged.
    assert len(window.frames) == 3 and window.unknown_frames == 1
    assert window.photometric_p50() == pytest.approx(0.25)
    assert window.lr_consistent() == pytest.approx(0.75)
    assert window.vertical_offset_px() == pytest.approx(1.5)
    window.resize(1)
    assert window.photometric_p50() == pytest.approx(0.2)


def test_agreement_counts_only_where_the_second_matcher_answered() -> None:
    left, right, gt = constant_pair()
    lt, rt, d, valid = tensors(left, right, gt)
    other = d.clone()
    other[..., :, :40] += 5.0  # a quarter of the columns contradicted by more than 2 px
    other[..., :, 40:60] += 1.5  # within 2 px: agrees
    other[..., :, 120:] = float("nan")  # no answer: neither agrees nor contradicts
    # Of the 120 answered columns, 40 disagree.
    expected = 80 / 120
    assert agreement(d, valid, other)[0].item() == pytest.approx(expected)
    q = assess(lt, rt, d, valid, second_opinion=other)[0]
    assert q.sgbm_agreement == pytest.approx(expected)
    assert assess_arrays(left, right, gt, np.ones_like(gt, dtype=bool),
                         second_opinion=other[0, 0].numpy()).sgbm_agreement == pytest.approx(expected)
    # Invalid published pixels are not scored: only the disagreeing columns valid -> 0 %.
    only_left = valid.clone()
    only_left[..., :, 40:] = False
    assert agreement(d, only_left, other)[0].item() == 0.0
    # Without a second opinion, or with fewer answered pixels than min_pixels: unknown, never 0 or 1.
    assert math.isnan(assess(lt, rt, d, valid)[0].sgbm_agreement)
    sparse = torch.full_like(d, float("nan"))
    sparse[..., :4, :10] = d[..., :4, :10]  # 40 answered pixels < 64
    assert math.isnan(agreement(d, valid, sparse)[0].item())


def test_sgbm_agreement_in_the_node_summary_and_its_warning() -> None:
    params = {"quality.enabled": True, "quality.publish_confidence": False, "quality.lr_check": "uniqueness",
              "quality.every": 1, "quality.window": 3, "quality.photometric_warn": 0.25,
              "quality.lr_consistent_warn": 65.0, "quality.vertical_offset_warn": 0.5,
              "quality.sgbm_agreement_warn": 70.0}
    network = NodeQuality(3, second_matcher=True)
    values, warning = network.status(params)
    assert values[SGBM_KEY] == "unknown" and warning == ""  # no frame with a candidate yet: not 0, no WARN
    for share in (0.9, float("nan"), 0.8):
        network.window.add(FrameQuality(0.01, 0.95, 0.0, 1000, sgbm_agreement=share))
    values, warning = network.status(params)
    assert values[SGBM_KEY] == "85.0" and warning == ""  # the mean of the frames that had one
    network.window.add(FrameQuality(0.01, 0.95, 0.0, 1000, sgbm_agreement=0.3))
    values, warning = network.status(params)
    assert values[SGBM_KEY] == "55.0" and "SGBM agrees with 55.0 %" in warning
    assert network.status({**params, "quality.sgbm_agreement_warn": 0.0})[1] == ""
    # Frames without a candidate (a GPU's default): the key says why instead of a bare "unknown".
    gpu = NodeQuality(3, second_matcher=True)
    gpu.window.add(FrameQuality(0.01, 0.95, 0.0, 1000))
    gpu.last_had_second_opinion = False
    assert gpu.status(params)[0][SGBM_KEY].startswith("n/a (no SGBM candidate")
    # The SGBM baseline has no second matcher: no such key.
    assert SGBM_KEY not in NodeQuality(3).status(params)[0]
    assert network.status({**params, "quality.enabled": False})[0][SGBM_KEY] == "off"


def test_degraded_reasons_name_each_crossed_threshold_and_ignore_unknowns() -> None:
    t = DEFAULT_THRESHOLDS
    assert degraded_reasons(t, 0.01, 95.0, 0.0, 95.0) == []
    reasons = degraded_reasons(t, 0.4, 50.0, -0.8, 60.0)
    assert [r.split(" ")[0] for r in reasons] == ["photometric", "left-right", "vertical", "SGBM"], reasons
    assert "-0.80 px" in reasons[2] and "check the calibration" in reasons[2]
    nan = float("nan")
    assert degraded_reasons(t, nan, nan, nan, nan) == []  # unknown is reported as unknown, not as a warning
    off = QualityThresholds(0.0, 0.0, 0.0, 0.0)
    assert degraded_reasons(off, 0.4, 50.0, -0.8, 60.0) == []  # 0 turns each off


def warp_rows(image: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The image content moved down by the per-pixel field ``dy`` (H, W) px: out(x, y) = image(x, y - dy)."""
    h, w = image.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, xs, ys - dy.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def test_row_residual_reads_a_varying_offset_and_ignores_a_constant_one() -> None:
    """Left half of the right image 0.6 px down, right half 0.6 px up: the offsets spread by about 0.6 px
    (their median is near 0, so vertical_offset alone would call the rig aligned); a constant 1 px shift
    moves the median, not the spread."""
    left, right, gt = constant_pair(seed=4)
    field = np.where(np.arange(W)[None, :] < W // 2, 0.6, -0.6) * np.ones((H, 1))
    lt, rt, d, valid = tensors(left, warp_rows(right, field), gt)
    varying = row_residual(lt, rt, d, valid).item()
    assert 0.35 < varying < 0.9, varying
    _, rt_const, _, _ = tensors(left, shift_down(right, 1.0), gt)
    constant = row_residual(lt, rt_const, d, valid).item()
    _, rt_none, _, _ = tensors(left, right, gt)
    aligned = row_residual(lt, rt_none, d, valid).item()
    assert constant < 0.15 and aligned < 0.1, (constant, aligned)
    offsets, matched = corner_vertical_offsets(lt, rt, d, valid)
    assert matched.sum().item() >= 20 and offsets.shape == matched.shape


def test_row_residual_is_unknown_without_enough_matched_corners() -> None:
    left, right, gt = constant_pair(seed=5)
    lt, rt, d, valid = tensors(left, right, gt)
    assert math.isnan(row_residual(lt, rt, d, torch.zeros_like(valid)).item())


def test_assess_reports_the_spread_of_a_rotation_that_the_median_offset_misses() -> None:
    """The right image turned about the image centre (0.6 degrees): the offsets vary along x by about +-0.8 px
    with a median near 0, so the vertical offset reads small and its spread does not; the aligned pair's
    spread stays small.  assess computes both from one corner search, as row_residual and vertical_offset
    do separately."""
    left, right, gt = constant_pair(seed=6)
    rot = cv2.getRotationMatrix2D((W / 2.0, H / 2.0), 0.6, 1.0)
    turned = cv2.warpAffine(right, rot, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lt, rt, d, valid = tensors(left, turned, gt)
    q = assess(lt, rt, d, valid)[0]
    assert abs(q.vertical_offset_px) < 0.25 and q.vertical_spread_px > 0.3, q
    assert q.vertical_spread_px == pytest.approx(row_residual(lt, rt, d, valid).item())
    assert q.vertical_offset_px == pytest.approx(vertical_offset(lt, rt, d, valid)[0].item())
    _, rt_aligned, _, _ = tensors(left, right, gt)
    assert assess(lt, rt_aligned, d, valid)[0].vertical_spread_px < 0.1
