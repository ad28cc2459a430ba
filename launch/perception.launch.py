"""Launch the scene_perception nodes on a ROS 2 install (after `colcon build`).

    ros2 launch scene_perception perception.launch.py namespace:=stereo \
        config:=/path/to/perception.yaml autostart:=true rviz:=true

``rviz:=true`` also starts rviz2 with ``rviz/perception.rviz`` (point cloud coloured by RGB, depth,
depth uncertainty, the left image, and the scene node's semantic overlay and semantic uncertainty) in the
same namespace and with the same remaps, so its relative topics find the nodes'. The ``scene`` node starts
when the parameters file has a ``scene`` section (``config/perception.yaml`` has a commented one); the
``left_image`` remap applies to it too. Likewise the ``pose`` node (PoseNet, ``pose`` topic and TF
``map`` -> camera) with a ``pose`` section.

The pip environment has no ``launch``; there, ``scene-perception run --config config/perception.yaml``
starts the same nodes with the same parameters file.
"""

from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchDescription

#: Node sections a parameters file may have -> their executables (as ``scene-perception run`` knows them).
EXECUTABLES = {
    "stereo_depth": "stereo_depth_node",
    "sgbm_depth": "sgbm_depth_node",
    "scene": "scene_node",
    "pose": "pose_node",
}


def _configured_nodes(config: str) -> list[str]:
    """Node names with a section in the parameters file (``/**`` is shared); unknown names are an error."""
    data = yaml.safe_load(Path(config).read_text()) or {}
    names = [key.strip("/").split("/")[-1] for key in data]
    names = [n for n in names if n != "**"]
    unknown = sorted(set(names) - set(EXECUTABLES))
    if unknown or not names:
        raise RuntimeError(f"{config}: unknown or no node sections {unknown}; known: {sorted(EXECUTABLES)}")
    return names


def _truthy(context, name: str) -> bool:
    return LaunchConfiguration(name).perform(context).lower() in ("1", "true", "yes")


def _nodes(context, *args, **kwargs):
    config = LaunchConfiguration("config").perform(context)
    autostart = _truthy(context, "autostart")
    remappings = [
        ("left/image_rect", LaunchConfiguration("left_image")),
        ("right/image_rect", LaunchConfiguration("right_image")),
        ("left/camera_info", LaunchConfiguration("left_info")),
        ("right/camera_info", LaunchConfiguration("right_info")),
    ]
    actions = [
        LifecycleNode(
            package="scene_perception",
            executable=EXECUTABLES[name],
            name=name,
            namespace=LaunchConfiguration("namespace"),
            parameters=[config],
            arguments=[] if autostart else ["--no-autostart"],
            remappings=remappings,
            output="screen",
        )
        for name in _configured_nodes(config)
    ]
    if _truthy(context, "rviz"):
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                namespace=LaunchConfiguration("namespace"),
                arguments=["-d", LaunchConfiguration("rviz_config").perform(context)],
                remappings=remappings,
                output="screen",
            )
        )
    return actions


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
            DeclareLaunchArgument(
                "rviz", default_value="false", description="also start rviz2 with rviz_config"
            ),
            DeclareLaunchArgument(
                "rviz_config",
                default_value=str(share / "rviz" / "perception.rviz"),
                description="RViz2 configuration file",
            ),
            DeclareLaunchArgument("left_image", default_value="left/image_rect"),
            DeclareLaunchArgument("right_image", default_value="right/image_rect"),
            DeclareLaunchArgument("left_info", default_value="left/camera_info"),
            DeclareLaunchArgument("right_info", default_value="right/camera_info"),
            OpaqueFunction(function=_nodes),
        ]
    )
