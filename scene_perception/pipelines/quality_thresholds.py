"""When live quality calls a depth map degraded: the WARN thresholds and the reasons, in one place.

An import-light module (no torch): the stereo nodes' parameters (``ros/params.py``, also loaded by the
OpenCV-only ``sgbm_depth``), their /diagnostics summary (``ros/live_quality.py``) and the offline check of
``scene-perception depth --quality`` all use these numbers and words, so a single pair on the command line
and a running node judge the same way (docs/live_quality.md).

Each default was chosen on validation frames by a rule written before the run, never on the test split or on
a pair with ground truth: see :data:`DEFAULT_THRESHOLDS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_THRESHOLDS", "QualityThresholds", "degraded_reasons", "shown"]


@dataclass(frozen=True)
class QualityThresholds:
    """WARN thresholds of the GT-free quality numbers; 0 turns one off.

    Attributes:
        photometric: the photometric error p50 above which the depth is suspect.
        lr_consistent_pct: the left-right consistent share (%) below which it is suspect.
        vertical_offset_px: the |vertical misalignment| (px) of the rectified views above which the rig has
            lost its calibration.
        sgbm_agreement_pct: the share (%) of valid pixels the SGBM candidate confirms below which the depth is
            suspect (``stereo_depth`` only).
    """

    photometric: float = 0.25
    lr_consistent_pct: float = 65.0
    vertical_offset_px: float = 0.5
    sgbm_agreement_pct: float = 70.0


#: The defaults, each by its rule on validation frames with a camera's noise
#: (``benchmarks/live_quality.py --split validation --nuisance --pairs 12``):
#: photometric = twice the clean frames' 95th percentile (2026-12-05: 0.128 -> 0.25; 0.256 again on
#: 2026-12-07); lr_consistent = the clean frames' 5th percentile of the network check minus 10 points, rounded
#: down to 5 (2026-12-07: 75.6 -> 65 %); vertical offset 0.5 px (the clean frames' largest |offset| was
#: 0.025 px); sgbm_agreement = the same rule as lr_consistent (84.1 -> 70 %,
#: ``benchmarks/results/2026-12-07_cpu/live_quality_sgbm/rule.md``).
DEFAULT_THRESHOLDS = QualityThresholds()


def degraded_reasons(thresholds: QualityThresholds, photometric: float, consistent_pct: float,
                     vertical_px: float, agreeing_pct: float = math.nan) -> list[str]:
    """Why the numbers say the depth is degraded (empty: no threshold crossed).  An unknown (NaN) number
    crosses nothing: "unknown" is reported as such, never as a warning or as fine."""
    t = thresholds
    reasons = []
    if t.photometric > 0 and photometric > t.photometric:
        reasons.append(f"photometric error p50 {photometric:.3f} > {t.photometric:g}")
    if t.lr_consistent_pct > 0 and consistent_pct < t.lr_consistent_pct:
        reasons.append(f"left-right consistent {consistent_pct:.1f} % < {t.lr_consistent_pct:g} %")
    if t.vertical_offset_px > 0 and abs(vertical_px) > t.vertical_offset_px:
        reasons.append(f"vertical offset {vertical_px:+.2f} px (|.| > {t.vertical_offset_px:g}): check the "
                       "calibration")
    if t.sgbm_agreement_pct > 0 and agreeing_pct < t.sgbm_agreement_pct:
        reasons.append(f"SGBM agrees with {agreeing_pct:.1f} % of the valid pixels it answered "
                       f"(< {t.sgbm_agreement_pct:g} %)")
    return reasons


def shown(value: float, spec: str, unit: str = "") -> str:
    """A quality number as the nodes and the CLI print it: ``format(value, spec) + unit``, or ``unknown`` for
    NaN (never a 0 that reads as a perfect frame)."""
    return format(value, spec) + unit if math.isfinite(value) else "unknown"
