"""Evaluation: accuracy metrics (pure numpy / OpenCV, no ROS); the SGBM matcher is ``pipelines/sgbm.py``.

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

__all__ = [
    "BAD_THRESHOLDS",
    "depth_metrics",
    "disparity_metrics",
    "fill_holes_background",
    "pool_metrics",
]
