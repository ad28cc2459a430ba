"""Stereo losses: correct minima, masks that keep invalid ground truth out, warps in the right direction."""

from __future__ import annotations

import math

import pytest
import torch

from scene_perception.data import make_stereo_sample
from scene_perception.losses import (
    LOG_SCALE_RANGE,
    cost_volume_cross_entropy,
    disparity_smoothness,
    laplace_nll,
    left_right_consistency,
    photometric_loss,
    smooth_l1_disparity,
    warp_right_to_left,
)


def _pair(seed: int = 0):
    s = make_stereo_sample(seed, width=128, height=64, max_disparity=24.0)
    left = torch.from_numpy(s.left).permute(2, 0, 1)[None].float() / 255.0
    right = torch.from_numpy(s.right).permute(2, 0, 1)[None].float() / 255.0
    disp = torch.from_numpy(s.disparity)[None, None]
    disp_r = torch.from_numpy(s.disparity_right)[None, None]
    vis = torch.from_numpy(s.nonoccluded)[None, None]
    return left, right, disp, disp_r, vis


def test_smooth_l1_zero_at_perfect_prediction_and_ignores_invalid_nan() -> None:
    gt = torch.rand(2, 1, 8, 16) * 50
    assert smooth_l1_disparity(gt.clone(), gt).item() == 0.0
    valid = torch.ones_like(gt, dtype=torch.bool)
    valid[:, :, :2] = False
    gt_nan = gt.clone()
    gt_nan[~valid] = float("nan")
    pred = (gt + 0.5).requires_grad_(True)
    loss = smooth_l1_disparity(pred, gt_nan, valid)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(pred.grad).all()
    assert loss.item() == pytest.approx(0.5 * 0.5**2, rel=1e-5)  # smooth L1 (beta 1) of a 0.5 px error
    empty = smooth_l1_disparity(pred, gt_nan, torch.zeros_like(valid))
    assert empty.item() == 0.0 and empty.requires_grad


def test_laplace_nll_minimised_at_scale_equal_to_error() -> None:
    gt = torch.zeros(1, 1, 4, 4)
    for error in (0.3, 2.0, 7.0):
        pred = torch.full_like(gt, error)
        log_bs = torch.linspace(-3.0, 4.0, 701)
        nll = torch.stack([laplace_nll(pred, torch.full_like(gt, lb), gt) for lb in log_bs])
        best = log_bs[int(nll.argmin())].item()
        assert best == pytest.approx(math.log(error), abs=0.02)
        # And the gradient w.r.t. log b vanishes there.
        lb = torch.full_like(gt, math.log(error), requires_grad=True)
        laplace_nll(pred, lb, gt).backward()
        assert lb.grad.abs().max().item() < 1e-5
    # Clamping keeps a runaway head finite.
    huge = laplace_nll(torch.ones_like(gt), torch.full_like(gt, -100.0), gt)
    assert math.isfinite(huge.item())
    assert huge.item() == pytest.approx(math.exp(-LOG_SCALE_RANGE[0]) + LOG_SCALE_RANGE[0], rel=1e-4)


def test_warp_direction_on_a_constant_shift() -> None:
    """Right image = left shifted left by d (left x matches right x - d): the warp must undo it."""
    torch.manual_seed(0)
    left = torch.rand(1, 3, 8, 32)
    d = 5
    right = torch.zeros_like(left)
    right[..., : 32 - d] = left[..., d:]
    warped, in_bounds = warp_right_to_left(right, torch.full((1, 1, 8, 32), float(d)))
    assert torch.allclose(warped[..., d:], left[..., d:], atol=1e-5)
    assert not in_bounds[..., : d].any() and in_bounds[..., d:].all()


def test_photometric_loss_small_with_gt_larger_with_wrong_disparity() -> None:
    left, right, disp, _, vis = _pair(0)
    good, warped = photometric_loss(left, right, disp, mask=vis)
    assert warped.shape == left.shape
    assert good.item() < 0.05
    for wrong in (disp + 3.0, torch.zeros_like(disp), disp * 0.5):
        bad, _ = photometric_loss(left, right, wrong, mask=vis)
        assert bad.item() > 3 * good.item()
    identical, _ = photometric_loss(left, left, torch.zeros_like(disp))
    assert identical.item() == pytest.approx(0.0, abs=1e-6)


def test_left_right_consistency() -> None:
    const = torch.full((1, 1, 16, 32), 4.0)
    assert left_right_consistency(const, const.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # True left/right maps of a rendered scene agree except at occlusions; a wrong right map does not.
    _, _, disp, disp_r, _ = _pair(1)
    good = left_right_consistency(disp, disp_r).item()
    bad = left_right_consistency(disp, disp_r + 5.0).item()
    assert bad > 2 * good


def test_disparity_smoothness_is_edge_aware() -> None:
    img = torch.zeros(1, 3, 16, 32)
    img[..., 16:] = 1.0  # an image edge at x = 16
    assert disparity_smoothness(torch.full((1, 1, 16, 32), 3.0), img).item() == pytest.approx(0.0, abs=1e-7)
    step_at_edge = torch.full((1, 1, 16, 32), 2.0)
    step_at_edge[..., 16:] = 6.0
    step_elsewhere = torch.full((1, 1, 16, 32), 2.0)
    step_elsewhere[..., 8:] = 6.0
    assert disparity_smoothness(step_at_edge, img).item() < disparity_smoothness(step_elsewhere, img).item()


# ------------------------------------------------------------------------ cost-volume cross-entropy
def _flat_gt(levels: float, h: int = 2, w: int = 3, stride: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gt = torch.full((1, 1, h * stride, w * stride), levels * stride)
    return gt, torch.ones_like(gt, dtype=torch.bool)


def test_volume_cross_entropy_is_log_levels_for_a_uniform_cost_and_two_hot_otherwise() -> None:
    gt, valid = _flat_gt(2.25)
    cost = torch.zeros(1, 8, 2, 3)
    assert float(cost_volume_cross_entropy(cost, gt, valid, 4)) == pytest.approx(math.log(8), rel=1e-5)
    # Any distribution: the target is 0.75 on level 2 and 0.25 on level 3, whose expectation is 2.25.
    cost = torch.randn(1, 8, 2, 3, generator=torch.Generator().manual_seed(0))
    log_p = torch.log_softmax(-cost, dim=1)
    expected = -(0.75 * log_p[:, 2] + 0.25 * log_p[:, 3]).mean()
    assert float(cost_volume_cross_entropy(cost, gt, valid, 4)) == pytest.approx(float(expected), rel=1e-5)


def test_volume_cross_entropy_raises_the_right_level_and_lowers_a_wrong_mode() -> None:
    gt, valid = _flat_gt(5.0)
    cost = torch.zeros(1, 8, 2, 3)
    cost[:, 1] = -4.0  # a confident wrong mode at level 1
    cost.requires_grad_(True)
    cost_volume_cross_entropy(cost, gt, valid, 4).backward()
    # A descent step (-grad) lowers the right level's cost (more probable) and raises the wrong mode's.
    assert (cost.grad[:, 5] > 0).all() and (cost.grad[:, 1] < 0).all()


def test_volume_cross_entropy_skips_edges_invalid_and_out_of_range_blocks() -> None:
    gt, valid = _flat_gt(3.0)
    gt[..., 0:4, 0:4] = 4 * 3.0  # block (0, 0): flat, supervised
    gt[..., 0:4, 6] = 4 * 6.0  # block (0, 1): a depth edge inside (spread 3 levels)
    valid[..., 5, 9] = False  # block (1, 2): one invalid pixel
    gt[..., 4:8, 0:4] = 4 * 7.5  # block (1, 0): beyond the last level (7)
    base = torch.zeros(1, 8, 2, 3)
    ref = float(cost_volume_cross_entropy(base, gt, valid, 4))
    for y, x in ((0, 1), (1, 2), (1, 0)):
        moved = base.clone()
        moved[0, :, y, x] = torch.randn(8)
        assert float(cost_volume_cross_entropy(moved, gt, valid, 4)) == pytest.approx(ref, rel=1e-6), (y, x)
    moved = base.clone()
    moved[0, :, 0, 0] = torch.randn(8)
    assert float(cost_volume_cross_entropy(moved, gt, valid, 4)) != pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        cost_volume_cross_entropy(base, gt[..., :-4], valid[..., :-4], 4)
