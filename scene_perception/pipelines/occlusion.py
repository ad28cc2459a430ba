"""Which left-view pixels the right camera cannot see, from a left disparity map alone (torch, any device).

Why here: the pipeline asks it of its own disparity (a pixel its estimate says is hidden has no photometric
evidence, so its std is widened: ``LocalRefinementConfig.occlusion_std_scale``), and the benchmarks ask it
of a GT map (``evaluation/occlusion.py``) to score the pixels the renders score.

The ordering constraint: a left pixel ``x`` with disparity ``d`` lands at ``x - d`` in the right image; it is
hidden when a pixel to its right in the same row lands more than ``tolerance`` px left of that point, since a
nearer surface then covers it (for a foreground object starting at ``a`` with disparity ``D`` in front of a
background at ``d``: the band ``[a - (D - d), a)``).  A surface whose disparity changes by less than 1 px per
px never hides itself.  A pixel landing left of the right image's first column is hidden too.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["occluded_by_ordering"]


def occluded_by_ordering(disparity: Tensor, tolerance: float = 0.5) -> Tensor:
    """Bool, shaped like ``disparity`` (..., H, W; px, ``d = x_left - x_right``, non-finite = unknown): left
    pixels hidden in the right view.  Unknown pixels are never marked and hide nothing (a hole may hide a
    foreground object: its band is then missed).  ``tolerance`` absorbs quantised values (whole-pixel GT)."""
    w = disparity.shape[-1]
    d = disparity.to(torch.float64)
    target = torch.arange(w, dtype=torch.float64, device=d.device) - d
    known = torch.isfinite(target)
    target = torch.where(known, target, torch.full_like(target, float("inf")))
    # For each x, the leftmost right-image position any pixel to its right lands on.
    suffix_min = target.flip(-1).cummin(dim=-1).values.flip(-1)
    right_of = torch.cat([suffix_min[..., 1:], torch.full_like(suffix_min[..., :1], float("inf"))], dim=-1)
    return known & ((right_of < target - tolerance) | (target < -tolerance))
