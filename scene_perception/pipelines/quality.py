"""GT-free live quality of a stereo disparity: photometric reprojection error, left-right consistency, a
per-pixel confidence, the vertical misalignment of the rectified pair (issue 26 items 1-2) and the share a
second matcher confirms (:func:`agreement`).

Why: geometry gives a free signal.  If the disparity is right, the right image sampled at ``x - d`` looks like
the left image (photometric reprojection error, the self-supervised training loss of
:mod:`scene_perception.losses.stereo`), and the right view's disparity agrees with the left's at the matching
pixel (left-right consistency).  Both need no labels, so a running robot can see that its depth went bad
(new lighting, a dirty lens, a de-calibrated rig, a scene unlike the training data).  They are *aids with
measured limits* (docs/live_quality.md): a textureless wall warps perfectly whatever its disparity, and a
consistent wrong answer passes the left-right check.

Everything here is pure torch on the caller's device, batched over (B, ...) tensors, no per-pixel Python.

Conventions: images (B, C, H, W) floats in [0, 1]; disparities (B, 1, H, W) px with ``d = x_left - x_right``
(the losses' convention); masks bool (B, 1, H, W).  A quantity that cannot be computed (no valid pixel, NaN
disparity everywhere) is NaN ("unknown"), never 0, so a monitor cannot mistake it for a perfect frame.

Vertical offset sign convention: ``+dy`` px means the right image's content lies ``dy`` px *lower* (larger
row index) than the left's, i.e. ``left(x, y) ~ right(x - d, y + dy)``.  A right camera tilted so that its
image moved down by one row reads ``+1``.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from scene_perception.losses.stereo import ssim, warp_right_to_left
from scene_perception.pipelines.image_tensor import image_to_tensor

#: Where the right view's disparity comes from: ``uniqueness`` forward-warps the left one (z-buffer, ~1 ms at
#: 512x256 on CPU; detects occlusions and geometrically impossible disparities only), ``network`` runs the
#: stereo pipeline a second time on the mirrored, swapped pair (the exact check, double the frame time).
LR_CHECKS = ("uniqueness", "network")
#: Matched corners below which the vertical offset and its spread are unknown (NaN).
MIN_CORNERS = 20

__all__ = [
    "LR_CHECKS",
    "FrameQuality",
    "QualityConfig",
    "QualityWindow",
    "agreement",
    "assess",
    "assess_arrays",
    "confidence_map",
    "corner_vertical_offsets",
    "flipped_pair",
    "left_right_check",
    "photometric_residual",
    "right_disparity_by_uniqueness",
    "right_disparity_from_flipped",
    "row_residual",
    "vertical_offset",
]


@dataclass(frozen=True)
class QualityConfig:
    """Settings of :func:`assess`.

    Attributes:
        alpha: SSIM weight of the residual ``alpha (1 - SSIM) / 2 + (1 - alpha) |L1|`` (Godard et al.;
            the training loss's value).
        lr_threshold_px, lr_relative: a left pixel is left-right consistent when the right view's disparity
            at its match agrees within ``max(lr_threshold_px, lr_relative * d)`` px (the training's
            occlusion check, :func:`~scene_perception.losses.stereo.left_right_visibility`).
        photometric_scale: residual at which the confidence's photometric factor is ``1/e``.
        lr_scale_px: left-right disagreement (px) at which the confidence's consistency factor is ``1/e``.
        vertical_range_px: integer row shifts ``-R .. R`` tried by :func:`vertical_offset` (the estimate is
            clamped to this range; a rig off by more reads ``+-R``).
        min_pixels: fewer valid pixels than this make every number unknown (NaN): a median of a handful of
            pixels is noise.
        agreement_px: a published disparity agrees with a second matcher's (``second_opinion``) within this
            many px (bad-2's threshold).
    """

    alpha: float = 0.85
    lr_threshold_px: float = 1.0
    lr_relative: float = 0.05
    photometric_scale: float = 0.1
    lr_scale_px: float = 2.0
    vertical_range_px: int = 2
    min_pixels: int = 64
    agreement_px: float = 2.0


@dataclass
class FrameQuality:
    """One frame's GT-free quality (NaN = unknown).

    Attributes:
        photometric_p50: median photometric residual over the scored pixels (valid, in view of the right
            image, not occluded according to the disparity itself).
        lr_consistent: share (0..1) of the valid in-view pixels the right view's disparity confirms.
        vertical_offset_px: estimated vertical misalignment (see the module's sign convention).
        scored_pixels: how many pixels the photometric median is over.
        confidence: (H, W) per-pixel confidence in 0..1 on the device (0 where invalid), or None when not
            asked for.
        sgbm_agreement: share (0..1) of the valid pixels where the second matcher (the pipeline's SGBM
            candidate) answered whose disparity it confirms within ``agreement_px`` (:func:`agreement`);
            NaN without a second opinion or with fewer than ``min_pixels`` such pixels.
        vertical_spread_px: how much the vertical misalignment varies over the frame (:func:`row_residual`,
            from the same corners as ``vertical_offset_px``): a rotation about the optical axis or a
            distortion left over, which the median offset does not see.
    """

    photometric_p50: float
    lr_consistent: float
    vertical_offset_px: float
    scored_pixels: int
    confidence: Tensor | None = None
    sgbm_agreement: float = math.nan
    vertical_spread_px: float = math.nan

    @property
    def known(self) -> bool:
        return math.isfinite(self.photometric_p50)


def photometric_residual(left: Tensor, right: Tensor, disparity: Tensor, alpha: float = 0.85
                         ) -> tuple[Tensor, Tensor]:
    """Per-pixel ``alpha (1 - SSIM) / 2 + (1 - alpha) |left - warp(right)|`` (B, 1, H, W), in-view mask.

    The per-pixel form of :func:`~scene_perception.losses.stereo.photometric_loss` (same warp, same SSIM);
    NaN disparities are warped as 0 and flagged out of view, so a NaN never reaches a statistic.
    """
    finite = torch.isfinite(disparity)
    warped, in_bounds = warp_right_to_left(right, torch.where(finite, disparity, torch.zeros_like(disparity)))
    l1 = (left - warped).abs().mean(1, keepdim=True)
    dssim = ((1.0 - ssim(left, warped)) / 2.0).mean(1, keepdim=True)
    return alpha * dssim + (1.0 - alpha) * l1, in_bounds & finite


def agreement(disparity: Tensor, valid: Tensor, second_opinion: Tensor, threshold_px: float = 2.0,
              min_pixels: int = 64) -> Tensor:
    """(B,) share of the ``valid`` pixels where ``second_opinion`` (another matcher's disparity of the same
    left view, NaN = no answer) answered that it confirms within ``threshold_px``; NaN below
    ``min_pixels`` such pixels.

    Why a second matcher: the photometric error and the left-right check judge a disparity by the images it
    was computed from, so a confident wrong match can pass both.  OpenCV SGBM errs elsewhere than the network
    (it checks its own answers: uniqueness, left-right, speckles) and, on a CPU, the local refinement has
    already computed it as a candidate.  Where the refinement adopted SGBM's answer the two agree by
    construction, so the share is a floor of how much the frame has in doubt, not an error rate.
    """
    answered = valid & torch.isfinite(second_opinion) & torch.isfinite(disparity)
    agree = answered & ((disparity - second_opinion).abs() <= threshold_px)
    n = answered.sum(dim=(1, 2, 3))
    share = agree.sum(dim=(1, 2, 3)).float() / n.clamp(min=1).float()
    return torch.where(n >= min_pixels, share, torch.full_like(share, float("nan")))


def flipped_pair(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pair whose left-view disparity is the right view's, mirrored: ``(flip(right), flip(left))``.

    Running the same network on it is the exact left-right check (what training does), at the cost of a
    second forward pass.
    """
    return np.ascontiguousarray(right[:, ::-1]), np.ascontiguousarray(left[:, ::-1])


def right_disparity_from_flipped(disparity_of_flipped: Tensor) -> Tensor:
    """The right view's disparity from the disparity of :func:`flipped_pair` (mirror it back)."""
    return torch.flip(disparity_of_flipped, dims=[-1])


def right_disparity_by_uniqueness(disparity: Tensor, valid: Tensor) -> Tensor:
    """The right view's disparity implied by the left one, by forward warping with a z-buffer (nearest wins).

    The cheap stand-in for a second forward pass: every valid left pixel ``x`` claims right pixel
    ``round(x - d)``; where several claim one, the largest disparity (the nearest surface) wins, as it would
    occlude the others.  Checking the left disparity against this map is the *uniqueness* constraint: a
    left pixel fails when its match is claimed by a nearer surface, i.e. where the disparity field is
    geometrically impossible (a wrong disparity that crosses another surface's, a background value smeared
    over a foreground edge) or where the pixel is honestly occluded.  It cannot see a wrong disparity that
    stays self-consistent (a smoothly wrong plane): measured limits in docs/live_quality.md.

    Returns (B, 1, H, W) with NaN where no left pixel lands.
    """
    b, _, h, w = disparity.shape
    d = torch.where(valid & torch.isfinite(disparity), disparity, torch.full_like(disparity, -1.0))
    xs = torch.arange(w, device=d.device, dtype=d.dtype).view(1, 1, 1, w)
    target = torch.round(xs - d)
    ok = (d >= 0) & (target >= 0) & (target <= w - 1)
    # Flat index of the target pixel in the (B, H, W) right map; invalid ones go to a dump slot at the end.
    rows = torch.arange(b * h, device=d.device).view(b, 1, h, 1) * w
    index = torch.where(ok, rows + target.long(), torch.full_like(rows + target.long(), b * h * w))
    out = torch.full((b * h * w + 1,), -1.0, device=d.device, dtype=d.dtype)
    out.scatter_reduce_(0, index.reshape(-1), d.reshape(-1), reduce="amax", include_self=True)
    right = out[:-1].view(b, 1, h, w)
    return torch.where(right >= 0, right, torch.full_like(right, float("nan")))


def left_right_check(disparity: Tensor, right_disparity: Tensor, threshold: float = 1.0,
                     relative: float = 0.05) -> tuple[Tensor, Tensor]:
    """Per left pixel: ``|d_L(x) - d_R(round(x - d_L(x)))|`` (NaN where unknown) and whether it is within
    ``max(threshold, relative * d_L)`` px (the training's occlusion test; False where unknown).

    Nearest, not bilinear (training's :func:`~scene_perception.losses.stereo.left_right_visibility`): the
    z-buffer map of :func:`right_disparity_by_uniqueness` has NaN holes (right pixels no left pixel claims,
    on surfaces foreshortened differently in the two views) that bilinear sampling would smear onto
    neighbours that did claim their own slot; with the threshold of 1 px the rounding costs nothing.
    """
    w = disparity.shape[-1]
    finite = torch.isfinite(disparity)
    d = torch.where(finite, disparity, torch.zeros_like(disparity))
    xs = torch.arange(w, device=d.device, dtype=d.dtype).view(1, 1, 1, w)
    target = torch.round(xs - d)
    inside = (target >= 0) & (target <= w - 1)
    right_in_left = right_disparity.gather(-1, target.clamp(0, w - 1).long())
    diff = torch.where(inside & finite, (disparity - right_in_left).abs(), torch.full_like(d, float("nan")))
    ok = diff <= (relative * d.abs()).clamp(min=threshold)
    return diff, ok & torch.isfinite(diff)


def _corner_strength(grey: Tensor) -> Tensor:
    """Shi-Tomasi corner strength (smaller eigenvalue of the 5x5 structure tensor) of (B, 1, H, W) images.

    A patch strong in both directions cannot be re-aligned by a horizontal shift: only there does a vertical
    misalignment show whatever the disparity did.
    """
    ix = F.pad(grey[..., :, 2:] - grey[..., :, :-2], (1, 1, 0, 0), mode="replicate") / 2
    iy = F.pad(grey[..., 2:, :] - grey[..., :-2, :], (0, 0, 1, 1), mode="replicate") / 2
    stacked = F.pad(torch.cat([ix * ix, iy * iy, ix * iy], 1), (2, 2, 2, 2), mode="replicate")
    jxx, jyy, jxy = F.avg_pool2d(stacked, 5, 1).split(1, dim=1)
    half_trace = (jxx + jyy) / 2
    return half_trace - torch.sqrt((half_trace * half_trace - (jxx * jyy - jxy * jxy)).clamp(min=0))


def vertical_offset(left: Tensor, right: Tensor, disparity: Tensor, mask: Tensor, range_px: int = 2,
                    corners: int = 500, patch: int = 7, dx_range: int = 4, min_zncc: float = 0.92,
                    min_corners: int = MIN_CORNERS) -> tuple[Tensor, Tensor]:
    """Estimated vertical misalignment (B,) px of the rectified pair, and how many corners it rests on (B,).

    The median of :func:`corner_vertical_offsets` over the matched corners; NaN below ``min_corners``.
    """
    offset, matched = corner_vertical_offsets(left, right, disparity, mask, range_px, corners, patch,
                                              dx_range, min_zncc)
    median, _ = _offset_stats(offset, matched, min_corners)
    return median, matched.sum(dim=1)


def _offset_stats(offset: Tensor, matched: Tensor, min_corners: int) -> tuple[Tensor, Tensor]:
    """Median and robust spread (1.4826 x MAD) (B,) of the matched corners' offsets; NaN below
    ``min_corners``."""
    count = matched.sum(dim=1)
    nan = torch.full_like(offset, float("nan"))
    median = torch.where(matched, offset, nan).nanmedian(dim=1, keepdim=True).values
    mad = torch.where(matched, (offset - median).abs(), nan).nanmedian(dim=1).values
    few = count < min_corners
    unknown = torch.full_like(mad, float("nan"))
    return torch.where(few, unknown, median[:, 0]), torch.where(few, unknown, 1.4826 * mad)


def row_residual(left: Tensor, right: Tensor, disparity: Tensor, mask: Tensor, range_px: int = 2,
                 corners: int = 500, patch: int = 7, dx_range: int = 4, min_zncc: float = 0.92,
                 min_corners: int = MIN_CORNERS) -> Tensor:
    """How much the vertical misalignment varies across the frame (B,) px: 1.4826 x the median absolute
    deviation of :func:`corner_vertical_offsets` over the matched corners (a robust standard deviation);
    NaN below ``min_corners``.

    Why: a rig's calibration and rectification leave a residual that varies over the image (lens distortion
    left over, a slightly wrong rotation); a constant vertical offset is what :func:`vertical_offset` reads,
    the part left after removing it is what no global correction fixes.  Its vertical half is measurable
    without GT (the match must lie on the same row); the horizontal half is not (it reads as disparity), and
    the published std can take the vertical half as the size of both (issue 25:
    ``benchmarks/results/2026-12-07_cpu/two_pass_row/rule.md``).  Exact
    renders read only the estimator's own spread (its parabola on integer row shifts).
    """
    offset, matched = corner_vertical_offsets(left, right, disparity, mask, range_px, corners, patch,
                                              dx_range, min_zncc)
    return _offset_stats(offset, matched, min_corners)[1]


def corner_vertical_offsets(left: Tensor, right: Tensor, disparity: Tensor, mask: Tensor, range_px: int = 2,
                            corners: int = 500, patch: int = 7, dx_range: int = 4, min_zncc: float = 0.92
                            ) -> tuple[Tensor, Tensor]:
    """Per-corner vertical offsets (B, K) px and which corners matched (B, K) bool.

    At the ``corners`` strongest, spread-out corners of the left image (valid pixels of ``mask``), a
    ``patch`` x ``patch`` window is compared by ZNCC with the right image at ``(x - d + dx, y + dy)`` for
    every integer ``dy`` in ``-R .. R`` and ``dx`` in ``-dx_range .. dx_range``; per corner the best ``dx``
    is kept for each ``dy`` and a parabola through the best ``dy`` and its neighbours gives the sub-pixel
    offset.  A corner counts as matched when its best ZNCC reaches ``min_zncc``.  A minimum at the end of the
    range is reported as the end ("this far or further").

    Why not simply the photometric error of the whole warp shifted by ``dy``: the disparity was computed on
    the misaligned pair, and along oblique edges a horizontal shift imitates a vertical one, so the network
    absorbs part of the offset; measured on held-out pairs, that estimate read a 1 px shift as 0.2-0.7 px.
    Corners cannot be re-aligned horizontally, the ``dx`` search frees the estimate from the disparity's
    errors, the ZNCC from exposure differences, and the ZNCC floor drops corners that found no match.
    Sign: see the module docstring.  Cost: one gather of ``corners * (2R+1) * (2 dx_range+1)`` patches.
    """
    grey_l, grey_r = left.mean(1, keepdim=True), right.mean(1, keepdim=True)
    b, _, h, w = grey_l.shape
    r = patch // 2
    finite = torch.isfinite(disparity)
    d = torch.where(finite, disparity, torch.zeros_like(disparity))
    ys = torch.arange(h, device=d.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=d.device).view(1, 1, 1, w)
    margin = r + range_px + 1
    inside = (ys >= margin) & (ys < h - margin) & (xs >= r) & (xs < w - r) & (xs - d - dx_range - r - 1 >= 0)
    strength = _corner_strength(grey_l)
    peak = strength == F.max_pool2d(strength, 5, 1, 2)  # one corner per 5x5 neighbourhood
    ok = mask & finite & inside & peak & (strength > 1e-5)
    score = torch.where(ok, strength, torch.full_like(strength, -1.0)).flatten(1)
    k = min(corners, score.shape[1])
    top, index = score.topk(k, dim=1)
    real = top > 0
    py, px = (index // w).to(d.dtype), (index % w).to(d.dtype)
    d_at = d.flatten(1).gather(1, index)
    offs = torch.arange(-r, r + 1, device=d.device, dtype=d.dtype)
    oy = offs.view(-1, 1).expand(patch, patch).reshape(1, 1, -1)
    ox = offs.view(1, -1).expand(patch, patch).reshape(1, 1, -1)
    flat = ((py[..., None] + oy) * w + px[..., None] + ox).long().clamp(0, h * w - 1)
    left_patch = grey_l.flatten(1).gather(1, flat.flatten(1)).view(b, 1, 1, k, -1)
    dys = torch.arange(-range_px, range_px + 1, device=d.device, dtype=d.dtype)
    dxs = torch.arange(-dx_range, dx_range + 1, device=d.device, dtype=d.dtype)
    gy = py.view(b, 1, 1, k, 1) + dys.view(1, -1, 1, 1, 1) + oy.view(1, 1, 1, 1, -1)
    gx = (px - d_at).view(b, 1, 1, k, 1) + dxs.view(1, 1, -1, 1, 1) + ox.view(1, 1, 1, 1, -1)
    gy, gx = torch.broadcast_tensors(gy, gx)
    grid = torch.stack((2.0 * gx / max(w - 1, 1) - 1.0, 2.0 * gy / max(h - 1, 1) - 1.0), dim=-1)
    right_patch = F.grid_sample(grey_r, grid.reshape(b, -1, patch * patch, 2), mode="bilinear",
                                padding_mode="border", align_corners=True).view(b, len(dys), len(dxs), k, -1)
    lc = left_patch - left_patch.mean(-1, keepdim=True)
    lc = lc / (lc.norm(dim=-1, keepdim=True) + 1e-6)  # normalised once, not per shift
    rc = right_patch - right_patch.mean(-1, keepdim=True)
    zncc = (lc * rc).sum(-1) / (rc.norm(dim=-1) + 1e-6)
    cost = (1.0 - zncc).amin(dim=2)  # (B, 2R+1, K): the best dx for each dy
    n = cost.shape[1]
    raw = cost.argmin(dim=1)
    best = raw.clamp(1, n - 2) if n >= 3 else raw
    offset = dys[best]
    if n >= 3:
        c_minus = cost.gather(1, (best - 1)[:, None])[:, 0]
        c_zero = cost.gather(1, best[:, None])[:, 0]
        c_plus = cost.gather(1, (best + 1)[:, None])[:, 0]
        curvature = c_minus - 2.0 * c_zero + c_plus
        step = torch.where(curvature > 0, 0.5 * (c_minus - c_plus) / curvature.clamp(min=1e-12),
                           torch.zeros_like(curvature))
        offset = torch.where((raw == 0) | (raw == n - 1), dys[raw], offset + step.clamp(-1.0, 1.0))
    return offset, real & (cost.amin(dim=1) <= 1.0 - min_zncc)


def confidence_map(residual: Tensor, lr_diff: Tensor | None, valid: Tensor, config: QualityConfig) -> Tensor:
    """Per-pixel confidence in 0..1: ``exp(-residual / s_p) * exp(-lr_diff / s_lr)``, 0 where invalid.

    A product of the two GT-free cues, each 1 for a perfect match and falling off smoothly; an unknown
    left-right disagreement (no right-view value there) counts as a large one.
    """
    conf = torch.exp(-residual.clamp(min=0) / config.photometric_scale)
    if lr_diff is not None:
        diff = torch.nan_to_num(lr_diff, nan=float("inf"))
        conf = conf * torch.exp(-diff / config.lr_scale_px)
    return torch.where(valid & torch.isfinite(conf), conf, torch.zeros_like(conf)).clamp(0.0, 1.0)


def _masked_median(values: Tensor, mask: Tensor) -> Tensor:
    """Median of ``values`` over ``mask`` per batch item (B,); NaN where the mask is empty."""
    flat = torch.where(mask, values, torch.full_like(values, float("nan"))).flatten(1)
    # nanmedian, not nanquantile: 5x faster on CPU (a selection, not a sort); all-NaN rows give NaN.
    return flat.nanmedian(dim=1).values


def assess(left: Tensor, right: Tensor, disparity: Tensor, valid: Tensor,
           right_disparity: Tensor | None = None, config: QualityConfig | None = None,
           want_confidence: bool = False, want_vertical: bool = True,
           second_opinion: Tensor | None = None) -> list[FrameQuality]:
    """The GT-free quality of each item of a batch (one :class:`FrameQuality` per item).

    Args:
        left, right: (B, 3, H, W) images in [0, 1] on the device.
        disparity: (B, 1, H, W) the published left disparity (px); ``valid`` (B, 1, H, W) its validity.
        right_disparity: the right view's disparity for the left-right check
            (:func:`right_disparity_from_flipped` of a second forward pass); None:
            :func:`right_disparity_by_uniqueness` of ``disparity`` (the uniqueness check, ~1 ms).
        want_confidence: also build the per-pixel map (the node publishes it only when asked).
        want_vertical: also estimate the vertical offset (:func:`vertical_offset`).
        second_opinion: (B, 1, H, W) another matcher's disparity of the left view (NaN = no answer) for
            :func:`agreement`; None: ``sgbm_agreement`` is NaN.

    Photometric scored pixels: valid, finite, in view of the right image and not occluded by the
    disparity's own geometry (the uniqueness check: an occluded pixel has no correct match, so its residual
    says nothing about the disparity).  The consistent share is over the valid in-view pixels.  Fewer
    than ``config.min_pixels`` scored pixels make the frame unknown.
    """
    config = config or QualityConfig()
    # image_to_tensor's (permuted, channels-last) layout makes every pool and warp ~20x slower on CPU.
    left, right, disparity = left.contiguous(), right.contiguous(), disparity.contiguous()
    with torch.inference_mode():
        valid = valid & torch.isfinite(disparity)
        residual, in_view = photometric_residual(left, right, disparity, config.alpha)
        base = valid & in_view
        # Occlusion by the published disparity's own geometry (z-buffer): the photometric error is scored
        # only where the match is not hidden by a nearer surface.  Not the network check's inconsistency:
        # that also removes the wrong pixels, and a bad frame would then score only its good ones.
        unique_diff, visible = left_right_check(disparity, right_disparity_by_uniqueness(disparity, valid),
                                                config.lr_threshold_px, config.lr_relative)
        lr_diff, consistent = unique_diff, visible
        if right_disparity is not None:
            lr_diff, consistent = left_right_check(disparity, right_disparity, config.lr_threshold_px,
                                                   config.lr_relative)
        n_base = base.sum(dim=(1, 2, 3)).float()
        n_consistent = (base & consistent).sum(dim=(1, 2, 3)).float()
        lr_rate = torch.where(n_base > 0, n_consistent / n_base.clamp(min=1),
                              torch.full_like(n_base, float("nan")))
        scored = base & visible
        count = scored.sum(dim=(1, 2, 3))
        p50 = _masked_median(residual, scored)
        vertical = spread = torch.full_like(p50, float("nan"))
        if want_vertical:  # one corner search for both numbers
            offsets, matched = corner_vertical_offsets(left, right, disparity, base, config.vertical_range_px)
            vertical, spread = _offset_stats(offsets, matched, MIN_CORNERS)
        confidence = confidence_map(residual, lr_diff, valid, config) if want_confidence else None
        agree = torch.full_like(p50, float("nan"))
        if second_opinion is not None:
            agree = agreement(disparity, valid, second_opinion.to(disparity.dtype), config.agreement_px,
                              config.min_pixels).to(p50.dtype)
        too_few = (count < config.min_pixels).cpu().tolist()
        stats = torch.stack([p50, lr_rate.to(p50.dtype), vertical.to(p50.dtype), agree, spread.to(p50.dtype)],
                            dim=1).cpu().tolist()
        counts = count.cpu().tolist()
    out = []
    for i, ((p, lr, v, a, sp), few) in enumerate(zip(stats, too_few, strict=True)):
        nan = float("nan")
        out.append(FrameQuality(
            photometric_p50=nan if few else float(p),
            lr_consistent=nan if few else float(lr),
            vertical_offset_px=nan if few else float(v),
            scored_pixels=int(counts[i]),
            confidence=None if confidence is None else confidence[i, 0],
            sgbm_agreement=a,
            vertical_spread_px=nan if few else float(sp),
        ))
    return out


def assess_arrays(left: np.ndarray, right: np.ndarray, disparity: np.ndarray, valid: np.ndarray,
                  device: torch.device | str = "cpu", right_disparity: np.ndarray | None = None,
                  config: QualityConfig | None = None, want_confidence: bool = False,
                  want_vertical: bool = True, second_opinion: np.ndarray | None = None) -> FrameQuality:
    """:func:`assess` of one frame given as the pipeline's host arrays (HxWx3 uint8 images, (H, W) maps).

    ``right_disparity`` None: the uniqueness check (:func:`right_disparity_by_uniqueness`).
    ``second_opinion``: e.g. ``StereoDepthResult.sgbm_disparity`` (:func:`agreement`).  What the node and
    the benchmark both call, so they measure the same thing.  The upload is two images and two maps (and
    the second opinion when given).
    """
    def to_device(a: np.ndarray, dtype: type) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)).to(device)[None, None]

    left_t = image_to_tensor(left, device)
    right_t = image_to_tensor(right, device)
    d, v = to_device(disparity, np.float32), to_device(valid, bool)
    d_right = None if right_disparity is None else to_device(right_disparity, np.float32)
    other = None if second_opinion is None else to_device(second_opinion, np.float32)
    return assess(left_t, right_t, d, v, d_right, config, want_confidence, want_vertical, other)[0]


class QualityWindow:
    """The last ``size`` frames' quality, summarised for /diagnostics (NaN = unknown).

    Medians for the photometric error and the vertical offset (a few bad frames, a passing truck, must not
    move them), mean for the consistent share; unknown frames are counted but never averaged in as 0.
    """

    def __init__(self, size: int = 30) -> None:
        self.frames: collections.deque[FrameQuality] = collections.deque(maxlen=max(1, int(size)))

    def resize(self, size: int) -> None:
        self.frames = collections.deque(self.frames, maxlen=max(1, int(size)))

    def add(self, quality: FrameQuality) -> None:
        self.frames.append(FrameQuality(quality.photometric_p50, quality.lr_consistent,
                                        quality.vertical_offset_px, quality.scored_pixels,
                                        sgbm_agreement=quality.sgbm_agreement,
                                        vertical_spread_px=quality.vertical_spread_px))

    def _values(self, name: str) -> np.ndarray:
        # tuple() copies the deque in one step: the node appends from its worker thread while the
        # diagnostics timer reads, and iterating a deque that changes raises.
        values = np.array([getattr(f, name) for f in tuple(self.frames)], dtype=np.float64)
        return values[np.isfinite(values)]

    @property
    def unknown_frames(self) -> int:
        return sum(1 for f in tuple(self.frames) if not f.known)

    def photometric_p50(self) -> float:
        v = self._values("photometric_p50")
        return float(np.median(v)) if v.size else float("nan")

    def lr_consistent(self) -> float:
        v = self._values("lr_consistent")
        return float(np.mean(v)) if v.size else float("nan")

    def vertical_offset_px(self) -> float:
        v = self._values("vertical_offset_px")
        return float(np.median(v)) if v.size else float("nan")

    def vertical_spread_px(self) -> float:
        v = self._values("vertical_spread_px")
        return float(np.median(v)) if v.size else float("nan")

    def sgbm_agreement(self) -> float:
        """Mean of the frames' :attr:`FrameQuality.sgbm_agreement` (frames without one left out)."""
        v = self._values("sgbm_agreement")
        return float(np.mean(v)) if v.size else float("nan")
