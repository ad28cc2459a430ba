"""Inference pipelines: numpy in, numpy out (pure; no ROS imports)."""
