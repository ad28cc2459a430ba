"""What ``launch/perception.launch.py`` starts, decided here so it is tested without ``launch``.

``launch`` and ``launch_ros`` are not on PyPI, so the launch file cannot run in the pip environment (or in
CI). It is therefore a thin wrapper: it declares its arguments, performs them to strings and hands them to
:func:`plan_nodes`, then turns each :class:`NodeLaunch` into a ``launch_ros`` action. Everything that can be
wrong (which nodes a parameters file asks for, unknown sections, the ``--no-autostart`` flag, the input
remaps, the RViz config) is decided here, in plain Python.

Which nodes start follows ``scene-perception run`` exactly: the node sections of the parameters file, read
with the rules of :func:`scene_perception.ros.runner.nodes_from_config` (``test/test_launch_file.py`` checks
that both agree). This module does not call that function because it imports every node class, i.e. torch
(about 4 s and 225 MB), and ``ros2 launch`` keeps its process alive as long as the nodes run. Nothing here
imports rclpy, torch or launch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PACKAGE = "scene_perception"

#: The input topics the nodes subscribe to (relative), each with the launch argument that remaps it.
INPUT_REMAP_ARGUMENTS: tuple[tuple[str, str], ...] = (
    ("left/image_rect", "left_image"),
    ("right/image_rect", "right_image"),
    ("left/camera_info", "left_info"),
    ("right/camera_info", "right_info"),
)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class NodeLaunch:
    """One process to start: ``ros2 run <package> <executable> <arguments> --ros-args ...``."""

    package: str
    executable: str
    name: str
    lifecycle: bool
    parameters: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()
    remappings: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def truthy(value: str, argument: str = "") -> bool:
    """A boolean launch argument: 1/true/yes/on or 0/false/no/off (any case); anything else is an error
    (``autostart:=ture`` must not silently mean false)."""
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"launch argument {argument or 'value'}:={value!r} is not a boolean (true/false)")


def configured_nodes(config: str | Path, known: Iterable[str]) -> list[str]:
    """The node names with a section in the ROS 2 parameters file ``config``, in file order.

    The rules (and the messages) of ``runner.nodes_from_config``: the last ``/``-separated part of each
    top-level key names the node (``/**/stereo_depth`` -> ``stereo_depth``), ``/**`` alone is a section
    shared by all nodes, an unknown name or no node section at all is an error (ValueError).
    """
    known = sorted(set(known))
    path = Path(config)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{config}: cannot read the parameters file: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{config}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{config}: expected a ROS 2 parameters file (a mapping of node names)")
    names: list[str] = []
    for key in data:
        name = str(key).strip("/").split("/")[-1]
        if name == "**":
            continue
        if name not in known:
            raise ValueError(f"{config}: unknown node '{key}'; known nodes: {', '.join(known)}")
        names.append(name)
    if not names:
        raise ValueError(
            f"{config}: no node sections found (expected e.g. 'stereo_depth: ros__parameters: ...')"
        )
    return names


def input_remappings(arguments: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``(input topic, target)`` for each camera input, from the launch arguments of
    :data:`INPUT_REMAP_ARGUMENTS` (missing arguments keep the topic's own name)."""
    return tuple((topic, str(arguments.get(arg, topic))) for topic, arg in INPUT_REMAP_ARGUMENTS)


def plan_nodes(arguments: Mapping[str, str], executables: Mapping[str, str]) -> list[NodeLaunch]:
    """The processes the launch file starts for these (performed, i.e. string) launch arguments.

    ``arguments``: ``config`` (parameters file), ``autostart`` and ``rviz`` (booleans), ``rviz_config`` and
    the remap arguments of :data:`INPUT_REMAP_ARGUMENTS`. ``executables``: node section name -> executable
    (the launch file's ``EXECUTABLES``). One lifecycle node per node section of ``config``, each with the
    whole file as its parameters (a section for another node does not apply to it) and ``--no-autostart``
    unless ``autostart``; rviz2 with ``-d rviz_config`` when ``rviz``. All get the same input remaps, so
    RViz's relative topics find the nodes' inputs too.
    """
    config = str(arguments["config"])
    autostart = truthy(arguments.get("autostart", "true"), "autostart")
    remaps = input_remappings(arguments)
    nodes = [
        NodeLaunch(
            package=PACKAGE,
            executable=executables[name],
            name=name,
            lifecycle=True,
            parameters=(config,),
            arguments=() if autostart else ("--no-autostart",),
            remappings=remaps,
        )
        for name in configured_nodes(config, executables)
    ]
    if truthy(arguments.get("rviz", "false"), "rviz"):
        rviz_config = str(arguments["rviz_config"])
        if not Path(rviz_config).is_file():
            raise ValueError(f"rviz_config:={rviz_config}: no such file")
        nodes.append(
            NodeLaunch(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                lifecycle=False,
                arguments=("-d", rviz_config),
                remappings=remaps,
            )
        )
    return nodes
