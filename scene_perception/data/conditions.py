"""The evaluation conditions a rendered pair is scored under: how a camera would see it.

Why a module of its own: the benchmarks that choose settings on validation renders (the refinement rules,
the two-pass std rules) must render the same seed the same way, and they used to import one another's
scripts to share it.  Each condition is a function of the seed alone, so every benchmark that renders seed
``s`` in condition ``c`` gets the same pair.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from scene_perception.data.augment import rig_residual, view_effects_pair
from scene_perception.data.procedural import StereoSample, make_stereo_sample
from scene_perception.data.splits import held_out_seeds

__all__ = ["CONDITIONS", "RIG_RESIDUAL_PX", "condition_renders", "render_condition"]

#: ``exact``: the render as is; ``nuisance``: per-view gain, bias and sensor noise; ``camera``: nuisance,
#: then the camera effects of ``data/augment.py: VIEW_EFFECTS`` (rule_camera.md); ``rig`` (rule_pixel5.md):
#: ``camera`` plus a rig's sub-pixel rectification residual in the right view.
CONDITIONS = ("exact", "nuisance", "camera", "rig")
#: rule_pixel5.md: the residual's RMS per axis, px, from the opencv-doc chessboard rig (real, no GT): mean
#: rectified row error 0.2195 px x sqrt(pi / 2).
RIG_RESIDUAL_PX = 0.275


def render_condition(seed: int, width: int, height: int, max_disparity: float, condition: str
                     ) -> StereoSample:
    """One rendered pair (``make_stereo_sample(seed, ...)``) as ``condition`` (one of ``CONDITIONS``) sees
    it; the GT is the render's (for ``rig`` the views carry a residual the GT does not)."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    s = make_stereo_sample(seed, width=width, height=height, max_disparity=max_disparity,
                           nuisance=condition != "exact")
    if condition in ("camera", "rig"):
        left, right = view_effects_pair(seed, s.left, s.right)
        if condition == "rig":
            right = rig_residual(seed, right, RIG_RESIDUAL_PX)
        s = dataclasses.replace(s, left=left, right=right)
    return s


def condition_renders(split: str, conditions: Sequence[str], ranges: Sequence[float], pairs_per_range: int,
                      width: int, height: int) -> Iterator[tuple[str, float, int, StereoSample]]:
    """``(condition, max_disparity, seed, pair)`` per condition, per range, ``pairs_per_range`` seeds each.

    The settings rules draw ``held_out_seeds(pairs_per_range * len(ranges), split)`` once and give each
    range its own consecutive block of seeds, so a range never reuses another's scenes; every condition sees
    the same seeds.  One generator keeps that order identical across the scripts that fit and report them.
    """
    seeds = held_out_seeds(pairs_per_range * len(ranges), split)
    for condition in conditions:
        for j, rng in enumerate(ranges):
            for seed in seeds[j * pairs_per_range:(j + 1) * pairs_per_range]:
                yield condition, rng, seed, render_condition(seed, width, height, rng, condition)
