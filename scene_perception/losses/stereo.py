"""Losses for stereo disparity networks (pure torch).

Conventions: disparity maps are (B, 1, H, W) in pixels with ``d = x_left - x_right`` (a left pixel ``x``
matches the right pixel ``x - d``); images are (B, C, H, W) floats in [0, 1]; masks are bool (B, 1, H, W)
or broadcastable to it.  Every loss returns a scalar tensor; where a mask selects no pixel the result is a
zero that still depends on the prediction, so ``backward()`` and DDP gradient hooks keep working.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOG_SCALE_RANGE",
    "cost_volume_cross_entropy",
    "disparity_smoothness",
    "laplace_nll",
    "left_right_consistency",
    "left_right_visibility",
    "masked_mean",
    "photometric_loss",
    "smooth_l1_disparity",
    "ssim",
    "warp_horizontal",
    "warp_right_to_left",
]

# Clamp range of log(b) (b in px) for the Laplace likelihood: below ~0.007 px the 1/b term explodes the
# gradients of confident pixels early in training; above ~400 px the head could "give up" on hard pixels at
# a bounded cost.  Both bounds are far outside the useful range of disparity errors.
LOG_SCALE_RANGE = (-5.0, 6.0)


def masked_mean(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``values`` over ``mask`` (broadcast); zero (with a graph) when the mask is empty."""
    if mask is None:
        return values.mean()
    mask = mask.expand_as(values)
    count = mask.sum()
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / count.clamp(min=1).to(values.dtype)


def _safe_target(pred: Tensor, gt: Tensor, valid: Tensor | None) -> Tensor:
    """Replace the target outside ``valid`` by the (detached) prediction.

    Invalid ground truth is often NaN/inf; masking only the loss would still send ``0 * NaN = NaN`` through
    the backward pass, so the target itself is made harmless there.
    """
    if valid is None:
        return gt
    return torch.where(valid.expand_as(gt), gt, pred.detach())


def smooth_l1_disparity(pred: Tensor, gt: Tensor, valid: Tensor | None = None, beta: float = 1.0) -> Tensor:
    """Huber / smooth-L1 disparity loss over valid pixels (GC-Net, PSMNet style supervised objective).

    Smooth L1 keeps L2's well-behaved gradients for sub-pixel errors and L1's robustness to the large errors
    that occlusions and thin structures produce early in training.
    """
    gt = _safe_target(pred, gt, valid)
    err = F.smooth_l1_loss(pred, gt, reduction="none", beta=beta)
    return masked_mean(err, valid)


def laplace_nll(pred: Tensor, log_scale: Tensor, gt: Tensor, valid: Tensor | None = None) -> Tensor:
    """Heteroscedastic Laplace negative log-likelihood ``|y - y_hat| / b + log b`` (Kendall & Gal 2017).

    The network predicts ``log b`` (log of the Laplace scale, px) so that ``b > 0`` without a constraint;
    the per-pixel optimum is ``b = |y - y_hat|``, i.e. the head learns to predict its own error (aleatoric
    uncertainty, std = sqrt(2) b).  The constant ``log 2`` is dropped.  ``log_scale`` is clamped to
    :data:`LOG_SCALE_RANGE` for numerical stability (gradients stop outside the range).
    """
    log_b = log_scale.clamp(*LOG_SCALE_RANGE)
    err = (pred - _safe_target(pred, gt, valid)).abs()
    nll = err * torch.exp(-log_b) + log_b
    return masked_mean(nll, valid)


def cost_volume_cross_entropy(cost: Tensor, gt: Tensor, valid: Tensor, stride: int) -> Tensor:
    """Cross-entropy of the matching distribution ``softmax(-cost)`` against the ground-truth level.

    Why: a loss on the regressed disparity only sees the distribution through its expectation (or, with a
    regression window, through the most probable mode), so where the network puts its main mode on a wrong
    surface the gradient mostly slides that mode instead of raising the right one.  Supervising the
    distribution itself (as AcfNet's and the stereo focal loss's cost-volume terms do) gives every level
    its own gradient: the wrong mode is pushed down and the right one up.

    Args:
        cost: (B, D, h, w) matching cost, one level per ``stride`` px of disparity and ``stride`` px of
            image (GC-Net's head before the soft arg-min).
        gt: (B, 1, H, W) disparity in px with H = h * stride, W = w * stride.
        valid: bool (B, 1, H, W) pixels with ground truth.
        stride: input px per cost-volume pixel and per disparity level.

    A cost pixel is supervised where all ``stride x stride`` pixels it covers are valid and their
    disparities lie within one level of each other (so depth edges, whose block mixes two surfaces, are
    left out) and their mean is inside the volume; the target is the two-hot split of that mean between
    its neighbouring levels, whose expectation is the mean itself.
    """
    b, levels, h, w = cost.shape
    if gt.shape[-2:] != (h * stride, w * stride):
        raise ValueError(f"gt {tuple(gt.shape[-2:])} does not match a {h}x{w} cost at stride {stride}")
    g = torch.where(valid, gt, torch.zeros_like(gt))
    all_valid = F.avg_pool2d(valid.to(cost.dtype), stride) > 1.0 - 1e-6
    mean = F.avg_pool2d(g, stride) / stride
    spread = (F.max_pool2d(g, stride) + F.max_pool2d(-g, stride)) / stride
    target = mean.clamp(0.0, levels - 1.0)
    keep = all_valid & (spread <= 1.0) & (mean <= levels - 1.0) & torch.isfinite(mean)
    lower = target.floor().clamp(max=levels - 2).long()
    upper_weight = target - lower.to(target.dtype)
    log_p = torch.log_softmax(-cost, dim=1)
    nll = -((1.0 - upper_weight) * log_p.gather(1, lower) + upper_weight * log_p.gather(1, lower + 1))
    return masked_mean(nll, keep)


def warp_right_to_left(right: Tensor, disparity: Tensor) -> tuple[Tensor, Tensor]:
    """Resample ``right`` at ``x - d`` so it lines up with the left view; also return the in-bounds mask.

    Bilinear ``grid_sample`` keeps the warp differentiable in the disparity (what self-supervision trains).
    ``align_corners=True`` maps pixel centres 0 and W-1 to -1 and 1, i.e. integer pixel coordinates, which
    is the convention of the disparity.  Samples falling outside the right image are zero-padded and
    flagged False in the mask.
    """
    b, _, h, w = right.shape
    xs = torch.arange(w, device=right.device, dtype=right.dtype).view(1, 1, w).expand(b, h, w)
    ys = torch.arange(h, device=right.device, dtype=right.dtype).view(1, h, 1).expand(b, h, w)
    x_src = xs - disparity[:, 0]
    grid = torch.stack((2.0 * x_src / max(w - 1, 1) - 1.0, 2.0 * ys / max(h - 1, 1) - 1.0), dim=-1)
    warped = F.grid_sample(right, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    in_bounds = ((x_src >= 0) & (x_src <= w - 1)).unsqueeze(1)
    return warped, in_bounds


def ssim(x: Tensor, y: Tensor, c1: float = 0.01 ** 2, c2: float = 0.03 ** 2) -> Tensor:
    """Per-pixel SSIM on 3x3 windows (as in Godard et al. 2017), (B, C, H, W), reflection padded."""
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = F.avg_pool2d(x, 3, 1)
    mu_y = F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x * mu_x
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y * mu_y
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
    return (num / den).clamp(-1.0, 1.0)


def photometric_loss(
    left: Tensor,
    right: Tensor,
    disparity: Tensor,
    alpha: float = 0.85,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Reprojection loss ``alpha (1 - SSIM) / 2 + (1 - alpha) |I_l - warp(I_r)|`` (Godard et al. 2017).

    SSIM compares local structure and is insensitive to the per-camera gain/bias that real pairs have, the
    L1 term anchors absolute intensities.  Pixels whose source falls outside the right image carry no
    information and are excluded (as is anything outside ``mask`` when given).

    Returns ``(loss, warped_right)``.
    """
    warped, in_bounds = warp_right_to_left(right, disparity)
    l1 = (left - warped).abs().mean(1, keepdim=True)
    dssim = ((1.0 - ssim(left, warped)) / 2.0).mean(1, keepdim=True)
    per_pixel = alpha * dssim + (1.0 - alpha) * l1
    valid = in_bounds if mask is None else in_bounds & mask
    return masked_mean(per_pixel, valid), warped


def warp_horizontal(src: Tensor, disparity: Tensor, sign: float) -> Tensor:
    """Sample ``src`` at ``x + sign * d`` along rows (bilinear, border padded).

    ``sign=-1`` brings a right-view map into the left view using the left disparity; ``sign=+1`` brings
    a left-view map into the right view using the right disparity.  Border padding rather than zeros
    because a disparity map has no natural "outside" value.
    """
    b, _, h, w = src.shape
    xs = torch.arange(w, device=src.device, dtype=src.dtype).view(1, 1, w).expand(b, h, w)
    ys = torch.arange(h, device=src.device, dtype=src.dtype).view(1, h, 1).expand(b, h, w)
    x_src = xs + sign * disparity[:, 0]
    grid = torch.stack((2.0 * x_src / max(w - 1, 1) - 1.0, 2.0 * ys / max(h - 1, 1) - 1.0), dim=-1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)


def left_right_consistency(disp_left: Tensor, disp_right: Tensor) -> Tensor:
    """Mean ``|d_L(x) - d_R(x - d_L(x))| + |d_R(x) - d_L(x + d_R(x))|`` (Godard et al. 2017).

    ``disp_right`` is the right view's disparity (right pixel ``x`` matches left ``x + d_R``).  Both terms
    are used so that neither view's prediction can drift to satisfy the other.  Occluded pixels do violate
    consistency; the term is a soft prior weighted by the caller.
    """
    right_in_left = warp_horizontal(disp_right, disp_left, -1.0)
    left_in_right = warp_horizontal(disp_left, disp_right, 1.0)
    return (disp_left - right_in_left).abs().mean() + (disp_right - left_in_right).abs().mean()


def left_right_visibility(disp_left: Tensor, disp_right: Tensor, threshold: float = 1.0,
                          relative: float = 0.05) -> tuple[Tensor, Tensor]:
    """Occlusion masks from the left-right check: bool (B, 1, H, W) per view, False where occluded.

    A left pixel is taken as visible in the right view when the right view's disparity at its match
    ``x - d_L`` agrees with ``d_L`` within ``max(threshold, relative * d_L)`` px; likewise a right pixel with
    the left disparity at ``x + d_R``.  Where a surface is hidden in the other view its match lands on the
    occluder, whose disparity differs, so the check fails there (and where either prediction is wrong).
    :func:`photometric_loss` already leaves out pixels whose match falls outside the image; this mask is for
    its ``mask`` argument, so occluded pixels, which have no correct match, do not pull the disparity towards
    a wrong one.  Computed without gradients (a mask, not a loss).
    """
    with torch.no_grad():
        right_in_left = warp_horizontal(disp_right, disp_left, -1.0)
        left_in_right = warp_horizontal(disp_left, disp_right, 1.0)
        ok_left = (disp_left - right_in_left).abs() <= (relative * disp_left.abs()).clamp(min=threshold)
        ok_right = (disp_right - left_in_right).abs() <= (relative * disp_right.abs()).clamp(min=threshold)
    return ok_left, ok_right


def disparity_smoothness(disp: Tensor, image: Tensor, normalize: bool = True) -> Tensor:
    """Edge-aware first-order smoothness ``|dx d| e^{-|dx I|} + |dy d| e^{-|dy I|}``.

    Disparity edges usually coincide with image edges, so gradients are penalised less where the image has
    them.  With ``normalize`` the disparity is divided by its per-image mean (Godard et al. 2019) so the
    penalty does not push the whole scene towards zero disparity (shrinking d also shrinks its gradients).
    """
    if normalize:
        disp = disp / (disp.mean(dim=(2, 3), keepdim=True).abs() + 1e-7)
    grad_dx = (disp[:, :, :, :-1] - disp[:, :, :, 1:]).abs()
    grad_dy = (disp[:, :, :-1, :] - disp[:, :, 1:, :]).abs()
    img_dx = (image[:, :, :, :-1] - image[:, :, :, 1:]).abs().mean(1, keepdim=True)
    img_dy = (image[:, :, :-1, :] - image[:, :, 1:, :]).abs().mean(1, keepdim=True)
    return (grad_dx * torch.exp(-img_dx)).mean() + (grad_dy * torch.exp(-img_dy)).mean()
