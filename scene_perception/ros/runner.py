"""Start perception nodes in one process without ``ros2 launch`` (the pip environment has no launch).

``scene-perception run --config config/perception.yaml`` and the per-node ``main()`` entry points both come
here.  The YAML is an ordinary ROS 2 parameters file (``<node_name>: ros__parameters: ...``), passed to rclpy
as ``--params-file`` so it means exactly what it means to ``ros2 run``/``ros2 launch``; its top-level node
names choose which nodes to start.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
import yaml
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from scene_perception.ros.allocator import tune_malloc

NodeSpec = tuple[str, type[Node], dict[str, Any]]


def node_types() -> dict[str, type[Node]]:
    """Node names a config file may use, mapped to their classes (imported lazily: torch is slow)."""
    from scene_perception.ros.pose_node import PoseNode
    from scene_perception.ros.scene_node import SceneNode
    from scene_perception.ros.sgbm_node import SGBMDepthNode
    from scene_perception.ros.stereo_depth_node import StereoDepthNode

    return {
        "stereo_depth": StereoDepthNode,
        "sgbm_depth": SGBMDepthNode,
        "scene": SceneNode,
        "pose": PoseNode,
    }


def nodes_from_config(path: str | Path) -> list[NodeSpec]:
    """Read which nodes a parameters file configures; unknown names are an error, ``/**`` is shared."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a ROS 2 parameters file (a mapping of node names)")
    known = node_types()
    specs: list[NodeSpec] = []
    for key in data:
        name = key.strip("/").split("/")[-1]
        if name == "**":
            continue
        if name not in known:
            raise ValueError(f"{path}: unknown node '{key}'; known nodes: {', '.join(sorted(known))}")
        specs.append((name, known[name], {}))
    if not specs:
        raise ValueError(
            f"{path}: no node sections found (expected e.g. 'stereo_depth: ros__parameters: ...')"
        )
    return specs


def autostart(node: Node) -> bool:
    """Configure then activate a lifecycle node; False (with the node's own error log) if either fails."""
    if not isinstance(node, LifecycleNode):
        return True
    from rclpy.lifecycle import TransitionCallbackReturn

    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return False
    return node.trigger_activate() == TransitionCallbackReturn.SUCCESS


def run_nodes(
    specs: Sequence[NodeSpec],
    argv: Sequence[str] | None = None,
    params_file: str | Path | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Create ``specs`` in one context, autostart them, spin until Ctrl-C/SIGTERM (or ``stop``), clean up.

    ``--no-autostart`` among the non-ROS arguments leaves lifecycle nodes unconfigured for an external
    lifecycle manager.  Returns a process exit code.
    """
    argv = list(argv or ["scene-perception"])
    ros_args = argv[1:]
    if params_file is not None:
        ros_args = ["--ros-args", "--params-file", str(params_file), *ros_args]
    do_autostart = "--no-autostart" not in remove_ros_args(argv)
    # Before any model is loaded: frame-sized buffers must go back to the OS (see ros/allocator.py).
    malloc_note = tune_malloc()
    context = Context()
    rclpy.init(args=["scene-perception", *ros_args], context=context)
    executor = MultiThreadedExecutor(num_threads=max(2, len(specs) + 1), context=context)
    nodes: list[Node] = []
    code = 0
    try:
        for name, cls, kwargs in specs:
            node = cls(name, context=context, **kwargs)
            if not nodes:
                node.get_logger().info(malloc_note)
            nodes.append(node)
            executor.add_node(node)
            if do_autostart and not autostart(node):
                node.get_logger().error("autostart failed: node left inactive (see the error above)")
                code = 1
        if stop is None:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        if context.ok():
            rclpy.shutdown(context=context)
    return code
