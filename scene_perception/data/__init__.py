"""Data sources for training and tests (pure numpy/torch; no ROS imports)."""

from scene_perception.data.procedural import (
    ProceduralStereoDataset,
    SceneConfig,
    StereoSample,
    make_stereo_sample,
)

__all__ = ["ProceduralStereoDataset", "SceneConfig", "StereoSample", "make_stereo_sample"]
