"""Launch the scene_perception nodes on a ROS 2 install (after `colcon build`).

    ros2 launch scene_perception perception.launch.py namespace:=stereo \
        config:=/path/to/perception.yaml autostart:=true rviz:=true

One lifecycle node per node section of the parameters file (``config/perception.yaml`` starts
``stereo_depth``; its commented ``sgbm_depth``, ``scene`` and ``pose`` sections start those nodes too), all
with the same input remaps (``left_image:=...`` etc.). ``rviz:=true`` also starts rviz2 with
``rviz/perception.rviz`` in the same namespace and with the same remaps, so its relative topics find the
nodes'.

A thin wrapper: what to start is decided by ``scene_perception.ros.launch_plan.plan_nodes`` (tested without
``launch``, which is not on PyPI); this file only declares the arguments and builds the launch_ros actions.
The pip environment has no ``launch``; there, ``scene-perception run --config config/perception.yaml``
starts the same nodes with the same parameters file.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchDescription
from scene_perception.ros import launch_plan

#: Node sections a parameters file may have -> their executables (as ``scene-perception run`` knows them).
EXECUTABLES = {
    "stereo_depth": "stereo_depth_node",
    "sgbm_depth": "sgbm_depth_node",
    "scene": "scene_node",
    "pose": "pose_node",
}

ARGUMENTS = (
    "namespace",
    "config",
    "autostart",
    "rviz",
    "rviz_config",
    "left_image",
    "right_image",
    "left_info",
    "right_info",
)


def _nodes(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    actions = []
    for node in launch_plan.plan_nodes(values, EXECUTABLES):
        if node.package == "rviz2":
            actions.append(
                Node(
                    package="rviz2",
                    executable="rviz2",
                    name=node.name,
                    namespace=values["namespace"],
                    arguments=["-d", values["rviz_config"]],
                    remappings=list(node.remappings),
                    output="screen",
                )
            )
            continue
        actions.append(
            LifecycleNode(
                package=node.package,
                executable=node.executable,
                name=node.name,
                namespace=values["namespace"],
                parameters=list(node.parameters),
                arguments=list(node.arguments),
                remappings=list(node.remappings),
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
                description="ROS 2 parameters file; its node sections choose the nodes",
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
