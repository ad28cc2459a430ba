"""Pure-numpy camera geometry (no ROS imports), shared by the pipelines, the ROS nodes and the tools."""

from scene_perception.geometry.stereo_camera import CameraModelError, StereoCamera, camera_info_matrices

__all__ = ["CameraModelError", "StereoCamera", "camera_info_matrices"]
