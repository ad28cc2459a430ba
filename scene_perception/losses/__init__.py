"""Training losses (pure torch; no ROS imports)."""

from scene_perception.losses.stereo import (
    LOG_SCALE_RANGE,
    cost_volume_cross_entropy,
    disparity_smoothness,
    laplace_nll,
    left_right_consistency,
    masked_mean,
    photometric_loss,
    smooth_l1_disparity,
    ssim,
    warp_horizontal,
    warp_right_to_left,
)

__all__ = [
    "LOG_SCALE_RANGE",
    "cost_volume_cross_entropy",
    "disparity_smoothness",
    "laplace_nll",
    "left_right_consistency",
    "masked_mean",
    "photometric_loss",
    "smooth_l1_disparity",
    "ssim",
    "warp_horizontal",
    "warp_right_to_left",
]
