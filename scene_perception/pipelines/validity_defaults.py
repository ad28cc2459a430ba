"""Defaults of the stereo pipeline's validity rules and range handling that the ROS parameters share.

A separate, import-light module (no torch, no OpenCV): ``ros/params.py`` is also loaded by the SGBM node,
which must start without torch, and one number must not live in two places.
"""

from __future__ import annotations

__all__ = ["DEFAULT_EXTEND_RANGE", "DEFAULT_FAR_PROBABILITY", "DEFAULT_FAR_SIGMA"]

#: ``far_sigma``: a pixel is invalid where ``d - far_sigma * std <= floor``.  Decided by the rule written
#: before it was measured, ``benchmarks/results/2026-12-05_cpu/far_sigma_rule.md``.
DEFAULT_FAR_SIGMA = 0.0

#: ``far_probability``: a pixel is invalid where the far head's P(true disparity <= 1 px) exceeds it; 1 = off.
#: Decided by ``benchmarks/results/2026-12-05_cpu/far_head/rule.md``, written before the head was trained:
#: 0.7 was chosen on validation streets 105-106, and all five clauses held on the scored data (sky nearer than
#: 100 m on streets 101-104: 10.7 -> 2.2 %, scene -0.3 point; models/lite_far.md).
DEFAULT_FAR_PROBABILITY = 0.7

#: ``extend_range``: for a scene whose ``max_disparity`` exceeds the network's range, widen the network's cost
#: volume instead of shrinking the pair.  Decided on validation renders by the rule written before scoring,
#: ``benchmarks/results/2026-12-07_cpu/range_extension/rule.md``.
DEFAULT_EXTEND_RANGE = False
