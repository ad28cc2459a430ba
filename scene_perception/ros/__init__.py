"""ROS 2 adapters: the only layer that imports rclpy."""
