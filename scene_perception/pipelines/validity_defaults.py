"""Defaults of the stereo pipeline's validity rules that the ROS parameters share.

A separate, import-light module (no torch, no OpenCV): ``ros/params.py`` is also loaded by the SGBM node,
which must start without torch, and one number must not live in two places.
"""

from __future__ import annotations

__all__ = ["DEFAULT_FAR_PROBABILITY", "DEFAULT_FAR_SIGMA"]

#: ``far_sigma``: a pixel is invalid where ``d - far_sigma * std <= floor``.  Decided by the rule written
#: before it was measured, ``benchmarks/results/2026-12-05_cpu/far_sigma_rule.md``.
DEFAULT_FAR_SIGMA = 0.0

#: ``far_probability``: a pixel is invalid where the far head's P(true disparity <= 1 px) exceeds it; 1 = off.
#: Decided by ``benchmarks/results/2026-12-05_cpu/far_head/rule.md``, written before the head was trained.
DEFAULT_FAR_PROBABILITY = 1.0
