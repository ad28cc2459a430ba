"""Evaluation: accuracy metrics and the classical SGBM baseline (pure numpy / OpenCV, no ROS).

Kept apart from training so that the numbers reported against evaluation data (Middlebury Aloe, held-out
synthetic seeds) come from code that never feeds back into fitting.
"""

from scene_perception.evaluation.metrics import (
    BAD_THRESHOLDS,
    depth_metrics,
    disparity_metrics,
    fill_holes_background,
    pool_metrics,
)
from scene_perception.evaluation.sgbm import SGBMConfig, SGBMMatcher, num_disparities_for, sgbm_disparity

__all__ = [
    "BAD_THRESHOLDS",
    "SGBMConfig",
    "SGBMMatcher",
    "depth_metrics",
    "disparity_metrics",
    "fill_holes_background",
    "num_disparities_for",
    "pool_metrics",
    "sgbm_disparity",
]
