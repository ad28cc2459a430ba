"""Start perception nodes in one process without ``ros2 launch`` (the pip environment has no launch).

``scene-perception run --config config/perception.yaml`` and the per-node ``main()`` entry points both come
here.  The YAML is an ordinary ROS 2 parameters file (``<node_name>: ros__parameters: ...``), passed to rclpy
as ``--params-file`` so it means exactly what it means to ``ros2 run``/``ros2 launch``; its top-level node
names choose which nodes to start.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
import rclpy.logging
from rclpy.context import Context
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from scene_perception.ros.allocator import tune_malloc
from scene_perception.ros.dds import configure as configure_dds
from scene_perception.ros.launch_plan import configured_nodes

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
    """Read which nodes a parameters file configures; unknown names are an error, ``/**`` is shared.

    The section rules live once, in :func:`~scene_perception.ros.launch_plan.configured_nodes`, which the
    launch file uses too (without importing the nodes, i.e. torch)."""
    known = node_types()
    return [(name, known[name], {}) for name in configured_nodes(path, known)]


def autostart_error(node: Node) -> str:
    """Configure then activate a lifecycle node; "" on success, else one line saying which step failed
    and why (the node's own reason where it records one: ``start_error`` of the perception nodes)."""
    if not isinstance(node, LifecycleNode):
        return ""
    from rclpy.lifecycle import TransitionCallbackReturn

    for step, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
        if trigger() != TransitionCallbackReturn.SUCCESS:
            reason = str(getattr(node, "start_error", "") or "see the node's log")
            return f"node '{node.get_name()}' failed to {step}: {reason}"
    return ""


def autostart(node: Node) -> bool:
    """Configure then activate a lifecycle node; False (with the node's own error log) if either fails."""
    return not autostart_error(node)


def run_nodes(
    specs: Sequence[NodeSpec],
    argv: Sequence[str] | None = None,
    params_file: str | Path | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Create ``specs`` in one context, autostart them, spin until Ctrl-C/SIGTERM (or ``stop``), clean up.

    ``--no-autostart`` among the non-ROS arguments leaves lifecycle nodes unconfigured for an external
    lifecycle manager.  Returns a process exit code: 0 after a normal stop; 1, at once and after one ERROR
    line naming the node and the reason, when a node cannot be created (an unreadable parameter) or fails
    to configure or activate at autostart. A robot that starts with one perception node silently down is
    worse than one that does not start: the other nodes are stopped too, so a supervisor (systemd,
    ``ros2 launch`` with ``on_exit``) sees the failure. With ``--no-autostart`` nothing is started here, so
    a node that later fails a transition keeps the process up (its lifecycle manager decides).
    """
    argv = list(argv or ["scene-perception"])
    ros_args = argv[1:]
    if params_file is not None:
        ros_args = ["--ros-args", "--params-file", str(params_file), *ros_args]
    do_autostart = "--no-autostart" not in remove_ros_args(argv)
    log = rclpy.logging.get_logger("scene-perception")
    # Before any model is loaded: frame-sized buffers must go back to the OS (see ros/allocator.py).
    malloc_note = tune_malloc()
    if stop is None:  # this call owns the process (as for the signal handlers): its Fast DDS transports
        configure_dds(logger=log)  # docs/transport.md: UDP only, so drivers' frames are not lost in SHM
    context = Context()
    try:
        rclpy.init(args=["scene-perception", *ros_args], context=context)
    except _rclpy.RCLError as exc:  # e.g. rcl cannot parse the params file (mixed-type list, empty value)
        log.error(f"cannot start: {str(exc).split(', at ')[0]}")
        return 1
    executor = MultiThreadedExecutor(num_threads=max(2, len(specs) + 1), context=context)
    nodes: list[Node] = []
    code = 0
    try:
        for name, cls, kwargs in specs:
            try:
                node = cls(name, context=context, **kwargs)
            except ParameterException as exc:  # rclpy's own parameters (use_sim_time: "yes" ...)
                log.error(f"node '{name}' cannot be created: {exc}; exiting with status 1")
                return 1
            if not nodes:
                node.get_logger().info(malloc_note)
            nodes.append(node)
            executor.add_node(node)
            error = autostart_error(node) if do_autostart else ""
            if error:
                log.error(f"{error}; stopping all nodes, exit status 1")
                return 1
        if stop is None:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Callbacks already handed to the executor's threads finish BEFORE anything is destroyed: destroying
        # a node (or the executor's guard condition) under a running callback made that callback raise
        # InvalidHandle, printed at exit as "The following exception was never retrieved: cannot use
        # Destroyable because destruction was requested" (issue 21, item 5).
        _finish_callbacks(executor, log)
        executor.shutdown()
        for node in nodes:
            executor.remove_node(node)
            node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    return code


def _finish_callbacks(executor: MultiThreadedExecutor, log: Any, timeout_sec: float = 10.0) -> None:
    """Wait (at most ``timeout_sec``) for the callbacks the executor's thread pool is running or has queued,
    and log the exception of any that failed instead of leaving it to the "never retrieved" print at exit.

    ``Executor.shutdown`` does not do this in rclpy 9 (Kilted): its wait for outstanding work is skipped (it
    tests ``_is_shutdown`` after setting it), so it destroys its guard condition while callbacks still
    run. The futures are the executor's own list (``_futures``, the ones ``spin_once`` submitted): no new
    ones appear once the loop above stopped calling ``spin_once``. Another rclpy without the list: no-op.
    """
    futures = list(getattr(executor, "_futures", ()))
    deadline = time.monotonic() + timeout_sec
    for future in futures:
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.005)
    for future in futures:
        if future.done() and future.exception() is not None:
            log.error(f"a callback failed during shutdown: {future.exception()!r}")
