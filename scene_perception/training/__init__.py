"""Training loops (pure torch; no ROS imports)."""

from scene_perception.training.stereo import TrainConfig, find_latest_checkpoint, main, train_stereo

__all__ = ["TrainConfig", "find_latest_checkpoint", "main", "train_stereo"]
