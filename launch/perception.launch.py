"""Launch the scene_perception nodes on a ROS 2 install (after `colcon build`).

    ros2 launch scene_perception perception.launch.py namespace:=stereo \
        config:=/path/to/perception.yaml autostart:=true

The pip environment has no ``launch``; there, ``scene-perception run --config config/perception.yaml``
starts the same nodes with the same parameters file.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from launch import LaunchDescription


def _nodes(context, *args, **kwargs):
    config = LaunchConfiguration("config").perform(context)
    autostart = LaunchConfiguration("autostart").perform(context).lower() in ("1", "true", "yes")
    return [
        LifecycleNode(
            package="scene_perception",
            executable="stereo_depth_node",
            name="stereo_depth",
            namespace=LaunchConfiguration("namespace"),
            parameters=[config],
            arguments=[] if autostart else ["--no-autostart"],
            remappings=[
                ("left/image_rect", LaunchConfiguration("left_image")),
                ("right/image_rect", LaunchConfiguration("right_image")),
                ("left/camera_info", LaunchConfiguration("left_info")),
                ("right/camera_info", LaunchConfiguration("right_info")),
            ],
            output="screen",
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("scene_perception"))
    return LaunchDescription(
        [
            DeclareLaunchArgument("namespace", default_value="", description="namespace of all nodes"),
            DeclareLaunchArgument(
                "config",
                default_value=str(share / "config" / "perception.yaml"),
                description="ROS 2 parameters file",
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="configure and activate the lifecycle nodes at start",
            ),
            DeclareLaunchArgument("left_image", default_value="left/image_rect"),
            DeclareLaunchArgument("right_image", default_value="right/image_rect"),
            DeclareLaunchArgument("left_info", default_value="left/camera_info"),
            DeclareLaunchArgument("right_info", default_value="right/camera_info"),
            OpaqueFunction(function=_nodes),
        ]
    )
