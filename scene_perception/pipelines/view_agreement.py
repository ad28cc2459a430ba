"""GT-free per-frame measures of how well a rectified pair's two views agree, for the two-pass std factor.

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

Images are (1, C, H, W) floats in 0..1 on any device, the disparity (1, 1, H, W) px.  A frame with nothing
to score gives NaN ("unknown"), which :func:`two_pass_factor` treats as "no adjustment".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from scene_perception.pipelines.local_refinement import _grey, _window_mean_var, _zncc
from scene_perception.pipelines.local_refinement_config import TWO_PASS_MEASURES, LocalRefinementConfig
from scene_perception.pipelines.quality import photometric_residual

__all__ = ["MEASURES", "TWO_PASS_FACTOR_RANGE", "measure", "noise_sigma", "photometric_median",
           "two_pass_factor", "zncc_residual"]

#: The measures :func:`measure` knows ("none" turns the adjustment off).
MEASURES = TWO_PASS_MEASURES
#: The per-frame factor is clipped to this range (the rule's form).
TWO_PASS_FACTOR_RANGE = (1.0, 6.0)

_LAPLACIAN_PAIR = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))


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
    grey = _grey(image.float())
    if grey.shape[-1] < 3 or grey.shape[-2] < 3:
        return math.nan
    kernel = torch.tensor(_LAPLACIAN_PAIR, dtype=grey.dtype, device=grey.device).view(1, 1, 3, 3)
    response = F.conv2d(grey, kernel)
    return float(response.abs().mean()) * math.sqrt(math.pi / 2.0) / 6.0


def zncc_residual(left: Tensor, right: Tensor, disparity: Tensor, config: LocalRefinementConfig) -> float:
    """Median ``1 - ZNCC`` at ``disparity`` over in-image pixels with texture (``config.window`` box, grey
    std >= ``config.min_texture``); non-finite disparities are not scored."""
    grey_l, grey_r = _grey(left.float()), _grey(right.float())
    mean_l, var_l = _window_mean_var(grey_l, config.window)
    d = disparity.float()
    finite = torch.isfinite(d)
    score, in_image = _zncc(grey_l, grey_r, mean_l, var_l, torch.where(finite, d, 0.0)[0], config.window)
    textured = var_l >= config.min_texture ** 2
    return _median(1.0 - score, finite & in_image & textured)


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
