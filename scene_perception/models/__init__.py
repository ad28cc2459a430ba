"""Neural network models (pure torch; no ROS imports)."""
