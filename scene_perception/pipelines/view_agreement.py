"""GT-free measures of how well a rectified pair's two views agree, for the two-pass std factor.

Why: when the pipeline refines twice (the scene needs more range than the network's), the published std is
set by one factor per frame (``LocalRefinementConfig.two_pass_std_factor``).  A factor fitted on
photometrically exact renders is too small for a real camera's views (gain, bias, sensor noise), and a
factor fitted on noisy renders is too large for clean ones (issue 25,
``benchmarks/results/2026-12-06_cpu/two_pass_adaptive/rule.md``).  These measures let the factor follow the
frame: each is computed from the two images and the refined disparity alone, after the second refinement.

* ``photometric``: median of the live-quality residual (SSIM + L1, :func:`quality.photometric_residual`)
  over pixels in view of the right image;
* ``noise``: the views' sensor-noise std by Immerkaer's estimator (J. Immerkaer, "Fast noise variance
  estimation", CVIU 1996), the mean of left and right;
* ``zncc``: median of ``1 - ZNCC`` at the refined disparity over textured in-image pixels (the refinement's
  own window and texture threshold): what the refinement's evidence looked like.

:func:`two_pass_log_factor` sets the factor per frame from one measure (``rule_camera.md``), or per pixel
(``two_pass_std_pixel``) from the ZNCC map, the texture, the second pass's correction and the SGBM
candidate's verdict.  The shipped default is per pixel where the second refinement had an SGBM candidate
(``rule_pixel4.md``) and per frame where it had none.  The three-feature per-pixel form
(``rule_pixel{,2,3}.md``) never met the coverage goals in every validation condition and did not ship.

Images are (1, C, H, W) floats in 0..1 on any device, the disparity (1, 1, H, W) px.  A frame with nothing
to score gives NaN ("unknown"), which :func:`two_pass_factor` treats as "no adjustment".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from scene_perception.pipelines.local_refinement import zncc_at
from scene_perception.pipelines.local_refinement_config import TWO_PASS_MEASURES, LocalRefinementConfig
from scene_perception.pipelines.quality import photometric_residual

__all__ = ["MEASURES", "TWO_PASS_FACTOR_RANGE", "TWO_PASS_PIXEL_RANGE", "floored_log_scale", "measure",
           "noise_sigma", "one_pass_factor", "photometric_median", "pixel_features", "pixel_setting",
           "two_pass_factor", "two_pass_log_factor", "zncc_map", "zncc_residual"]

#: The measures :func:`measure` knows ("none" turns the adjustment off).
MEASURES = TWO_PASS_MEASURES
#: The per-frame factor is clipped to this range (the rule's form).
TWO_PASS_FACTOR_RANGE = (1.0, 6.0)
#: The per-pixel factor (``two_pass_std_pixel``) is clipped to this range (rule_pixel.md).
TWO_PASS_PIXEL_RANGE = (0.5, 8.0)

_LAPLACIAN_PAIR = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))
#: The first row of :func:`pixel_features` that is NaN where SGBM gave no disparity (the SGBM disagreement;
#: the frame's median of it, after it, is NaN when SGBM answered nowhere): such a term adds nothing.
_SGBM_DISAGREEMENT = 4


def _median(values: Tensor, mask: Tensor) -> float:
    picked = values[mask]
    return float(picked.median()) if picked.numel() else math.nan


def photometric_median(left: Tensor, right: Tensor, disparity: Tensor) -> float:
    """Median SSIM + L1 residual of the left view against the right warped by ``disparity``."""
    residual, in_view = photometric_residual(left.float().contiguous(), right.float().contiguous(),
                                             disparity.float().contiguous())
    return _median(residual, in_view)


def noise_sigma(image: Tensor) -> float:
    """Immerkaer's noise std of a (1, C, H, W) image's grey level: the difference of two Laplacians
    cancels smooth structure, the mean absolute response of white noise is ``6 sigma sqrt(2 / pi)``."""
    grey = image.float().mean(dim=1, keepdim=True)
    if grey.shape[-1] < 3 or grey.shape[-2] < 3:
        return math.nan
    kernel = torch.tensor(_LAPLACIAN_PAIR, dtype=grey.dtype, device=grey.device).view(1, 1, 3, 3)
    response = F.conv2d(grey, kernel)
    return float(response.abs().mean()) * math.sqrt(math.pi / 2.0) / 6.0


def zncc_map(left: Tensor, right: Tensor, disparity: Tensor, config: LocalRefinementConfig
             ) -> tuple[Tensor, Tensor, Tensor]:
    """Per pixel: ZNCC of the ``config.window`` box at ``disparity`` (-1 where the match leaves the right
    image or the disparity is not finite), the mask of pixels it scored, and the left box's grey variance
    (the refinement's texture measure, squared); each (1, 1, H, W)."""
    score, scored, var_l = zncc_at(left, right, disparity, config.window)
    return torch.where(scored, score, -1.0), scored, var_l


def _zncc_median(score: Tensor, scored: Tensor, var_l: Tensor, config: LocalRefinementConfig) -> float:
    return _median(1.0 - score, scored & (var_l >= config.min_texture ** 2))


def zncc_residual(left: Tensor, right: Tensor, disparity: Tensor, config: LocalRefinementConfig) -> float:
    """Median ``1 - ZNCC`` at ``disparity`` over in-image pixels with texture (``config.window`` box, grey
    std >= ``config.min_texture``); non-finite disparities are not scored."""
    return _zncc_median(*zncc_map(left, right, disparity, config), config)


def pixel_features(score: Tensor, var_l: Tensor, disparity: Tensor, before: Tensor,
                   candidate: Tensor | None = None, frame_disagreement: bool = False) -> Tensor:
    """Per-pixel features of the per-pixel two-pass factor (``two_pass_std_pixel``), (3, H, W): log(1 - ZNCC
    + 0.01), log(texture + 0.002) and log(|second-pass correction| + 0.05)
    (``benchmarks/results/2026-12-06_cpu/two_pass_adaptive/rule_pixel.md``); with the SGBM ``candidate`` the
    second refinement was offered, (5, H, W), adding 1 where SGBM gave no disparity (else 0) and
    log(|disparity - SGBM| + 0.05) where it gave one (NaN where not): SGBM checked its own answers
    (uniqueness, left-right, speckles), so its silence or its disagreement is evidence of a gross error,
    which the first three cannot single out (``rule_pixel4.md``).  With ``frame_disagreement`` (and a
    candidate), (6, H, W): a sixth, constant row, the frame's median of that log disagreement over the
    pixels SGBM answered (NaN when none): two matchers with independent errors part by about their own
    sub-pixel noise, which a render lacks and a real camera has, so the frame's typical parting reads that
    noise without GT (``rule_pixel7.md``)."""
    # ZNCC from box sums can leave [-1, 1] by rounding in weakly textured windows: clamp before the log.
    z = torch.log(1.0 - score.clamp(-1.0, 1.0) + 0.01)
    t = torch.log(var_l.clamp_min(0.0).sqrt() + 0.002)
    c = torch.log(torch.nan_to_num((disparity.float() - before.float()).abs(), nan=0.0) + 0.05)
    rows = [z, t, c]
    if candidate is not None:
        silent = ~torch.isfinite(candidate)
        g = torch.log((disparity.float() - candidate.float()).abs() + 0.05)
        rows += [silent.to(z.dtype), g]
        if frame_disagreement:
            answered = g[torch.isfinite(g)]
            level = answered.median() if answered.numel() else torch.tensor(math.nan, device=g.device)
            rows.append(torch.full_like(g, float(level)))
    return torch.cat(rows, dim=1)[0]


def measure(name: str, left: Tensor, right: Tensor, disparity: Tensor, config: LocalRefinementConfig
            ) -> float:
    """The named measure of one frame (NaN for ``none`` or when nothing could be scored)."""
    if name == "photometric":
        return photometric_median(left, right, disparity)
    if name == "noise":
        return 0.5 * (noise_sigma(left) + noise_sigma(right))
    if name == "zncc":
        return zncc_residual(left, right, disparity, config)
    if name == "none":
        return math.nan
    raise ValueError(f"unknown two-pass measure {name!r}; expected one of {MEASURES}")


def two_pass_factor(value: float, base: float, reference: float, exponent: float) -> float:
    """``clip(base * (value / reference) ** exponent, *TWO_PASS_FACTOR_RANGE)``; ``base`` itself when the
    exponent is 0 or the measure is unknown (NaN) or not positive."""
    if exponent == 0.0 or not (math.isfinite(value) and value > 0.0):
        return base
    lo, hi = TWO_PASS_FACTOR_RANGE
    return min(hi, max(lo, base * (value / reference) ** exponent))


def one_pass_factor(value: float, config: LocalRefinementConfig) -> float:
    """The one-pass std factor of a frame whose measure is ``value``: ``clip(one_pass_std_factor * (value /
    one_pass_std_reference) ** one_pass_std_exponent, one_pass_std_min_factor, 6)``, the power left out
    when the exponent is 0 or the measure is unknown (NaN) or not positive.  With the lower clip at 1 this
    is :func:`two_pass_factor` of the ``one_pass_std_*`` fields."""
    factor = config.one_pass_std_factor
    if config.one_pass_std_exponent != 0.0 and math.isfinite(value) and value > 0.0:
        factor *= (value / config.one_pass_std_reference) ** config.one_pass_std_exponent
    return min(TWO_PASS_FACTOR_RANGE[1], max(config.one_pass_std_min_factor, factor))


def pixel_setting(config: LocalRefinementConfig) -> tuple[float, float, tuple[float, ...], tuple[float, ...]]:
    """``(base, exponent, weights, centres)`` of a per-pixel ``two_pass_std_pixel``: the 6-number form
    takes base and exponent from the per-frame fields, the 12- and 14-number forms carry their own (so the
    per-frame fields stay the validated per-frame setting they fall back to)."""
    pixel = tuple(config.two_pass_std_pixel)
    if len(pixel) >= 12:
        base, exponent, rest = pixel[0], pixel[1], pixel[2:]
    else:
        base, exponent, rest = config.two_pass_std_factor, config.two_pass_std_exponent, pixel
    n = len(rest) // 2
    return base, exponent, rest[:n], rest[n:]


def two_pass_log_factor(config: LocalRefinementConfig, left: Tensor, right: Tensor, disparity: Tensor,
                        before: Tensor, candidate: Tensor | None = None) -> tuple[float | Tensor, float]:
    """The log of the factor for a two-refinement frame's std map and the frame's measure (NaN: none).

    Per frame (``two_pass_std_pixel`` empty, a measure other than ``zncc``, or the 12- or 14-number form
    without an SGBM ``candidate``): :func:`two_pass_factor` of the configured measure and the per-frame
    fields, a float.
    Per pixel: ``log f = log base + exponent log(m / reference) + w . (features - centres)`` over
    :func:`pixel_features` (:func:`pixel_setting`; a pixel SGBM left without a disparity adds nothing for
    the disagreement term), clipped to ``TWO_PASS_PIXEL_RANGE``, a (1, 1, H, W) tensor; ``before`` is the
    disparity the second refinement started from, ``candidate`` SGBM's disparity it was offered (NaN = no
    answer)."""
    cfg = config
    pixel = cfg.two_pass_std_pixel
    if not pixel or cfg.two_pass_std_measure != "zncc" or (len(pixel) >= 12 and candidate is None):
        value = measure(cfg.two_pass_std_measure, left, right, disparity, cfg)
        factor = two_pass_factor(value, cfg.two_pass_std_factor, cfg.two_pass_std_reference,
                                 cfg.two_pass_std_exponent)
        return math.log(factor), value
    base, exponent, weights, centres = pixel_setting(cfg)
    score, scored, var_l = zncc_map(left, right, disparity, cfg)
    value = _zncc_median(score, scored, var_l, cfg)
    log_f = math.log(base)
    if exponent and math.isfinite(value) and value > 0.0:
        log_f += exponent * math.log(value / cfg.two_pass_std_reference)
    feats = pixel_features(score, var_l, disparity, before, candidate if len(weights) >= 5 else None,
                           frame_disagreement=len(weights) == 6)
    per_pixel = torch.full_like(feats[0], log_f)
    for i, (w, centre) in enumerate(zip(weights, centres, strict=True)):
        term = w * (feats[i] - centre)
        per_pixel = per_pixel + (torch.nan_to_num(term, nan=0.0) if i >= _SGBM_DISAGREEMENT else term)
    lo, hi = TWO_PASS_PIXEL_RANGE
    per_pixel = torch.nan_to_num(per_pixel, nan=log_f)  # never a NaN std from a feature
    return per_pixel.clamp(math.log(lo), math.log(hi))[None, None], value


def floored_log_scale(log_scale: Tensor, floor: float) -> Tensor:
    """The Laplace log-scale of ``sqrt(std^2 + floor^2)`` (``std = sqrt(2) exp(log_scale)``): a floor under
    the std in quadrature (``two_pass_std_floor``); a zero std gets the floor, NaN stays NaN."""
    if floor <= 0.0:
        return log_scale
    floor_log_scale = torch.full_like(log_scale, 2.0 * math.log(floor) - math.log(2.0))
    return 0.5 * torch.logaddexp(2.0 * log_scale, floor_log_scale)
