"""Parameter values are checked the same way at start-up and live (issue 20, items 4 and 7).

A typo in a params file must not leave a node silently unconfigured with an "OK" diagnostic, nor kill the
process with a traceback; ``scene-perception run`` must exit non-zero saying which node and why; a change
to a parameter that is only read on configure must be refused while the node is configured instead of
being reported as applied. Real rclpy nodes, real Fast DDS (diagnostics, /rosout and the set_parameters
service are all received over the wire), no mocks.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State
from rcl_interfaces.msg import Log
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosutil import RosHarness, private_domain_id

from scene_perception.ros import params as P
from scene_perception.ros.runner import nodes_from_config, run_nodes
from scene_perception.ros.sgbm_node import SGBMDepthNode
from scene_perception.ros.stereo_depth_node import StereoDepthNode

CLI = [sys.executable, "-m", "scene_perception.cli"]
ALL_SPECS = (*P.STEREO_DEPTH_PARAMS, *P.SGBM_DEPTH_PARAMS, *P.SCENE_PARAMS, *P.POSE_PARAMS)
QOS_ERROR = (
    "parameter 'input_qos' = 'sensor-data' is invalid: not one of the allowed values "
    "(allowed: sensor_data, reliable, best_effort)"
)
ROSOUT_QOS = QoSProfile(
    depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class ArgsHarness(RosHarness):
    """A :class:`RosHarness` whose context is initialised with command-line ROS arguments (a params file)."""

    def __init__(self, args: list[str], domain_id: int) -> None:
        self.context = Context()
        rclpy.init(args=["test", *args], context=self.context, domain_id=domain_id)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list[Node] = []


class Listener(Node):
    """Receives /diagnostics and /rosout over DDS and calls other nodes' parameter services."""

    def __init__(self, context: Context) -> None:
        super().__init__("param_listener", context=context)
        self.diag: list[DiagnosticArray] = []
        self.logs: list[Log] = []
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diag.append, 50)
        self.create_subscription(Log, "/rosout", self.logs.append, ROSOUT_QOS)

    def statuses(self, node_name: str) -> list[DiagnosticStatus]:
        return [st for a in self.diag for st in a.status if st.hardware_id.rsplit("/", 1)[-1] == node_name]

    def log_lines(self, node_name: str, level: int) -> list[str]:
        return [m.msg for m in self.logs if m.name == node_name and m.level == level]


def remote_set(harness: RosHarness, listener: Listener, node: str, *params: Parameter) -> list:
    """``ros2 param set``: the node's set_parameters service, called over DDS; the per-parameter results."""
    client = AsyncParameterClient(listener, node)
    assert harness.spin_until(lambda: client.services_are_ready(), 10), f"{node} parameter services"
    future = client.set_parameters(list(params))
    assert harness.spin_until(future.done, 10), "set_parameters timed out"
    return list(future.result().results)


def wait_for(harness: RosHarness, what: Callable[[], bool], timeout: float = 10.0) -> bool:
    return harness.spin_until(what, timeout)


# ------------------------------------------------------------------------------------ the rules themselves
def test_every_default_is_valid_and_allowed_values_are_worded() -> None:
    for spec in ALL_SPECS:
        assert P.problem(spec, spec.default) == "", spec.name
        assert P.allowed(spec), spec.name


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("input_qos", "sensor-data", QOS_ERROR),
        ("queue_size", 0, "parameter 'queue_size' = 0 is invalid: out of range (allowed: integer 1..100)"),
        ("scale", 2.5, "parameter 'scale' = 2.5 is invalid: out of range (allowed: double 0.1..1.0)"),
        ("scale", float("nan"), "parameter 'scale' = nan is invalid: out of range"),
        ("scale", "half", "parameter 'scale' = 'half' is invalid: expected a double, got a string"),
        ("scale", 1, "expected a double, got an integer (write 1.0: ROS does not convert integers"),
        ("approximate_sync", "yes", "expected a bool, got a string (allowed: true, false)"),
        ("queue_size", True, "expected an integer, got a bool"),
        ("device", "banana", "'banana' is invalid: not a device name (allowed: auto, cpu, cuda, cuda:N)"),
        ("local_refinement.window", 6, "not on the step (allowed: integer 3..31 in steps of 2 from 3)"),
    ],
)
def test_invalid_values_are_named_with_what_is_allowed(name: str, value: object, message: str) -> None:
    spec = next(s for s in ALL_SPECS if s.name == name)
    why = P.problem(spec, value)
    assert why and message in P.invalid_message(spec, value, why)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3", " CUDA:1 "])
def test_device_names_resolve_device_accepts_pass(device: str) -> None:
    spec = next(s for s in P.STEREO_DEPTH_PARAMS if s.name == "device")
    assert P.problem(spec, device) == ""


# ------------------------------------------------------------------------------------ start-up values
@pytest.mark.ros
def test_typo_in_params_file_leaves_node_unconfigured_with_error_diagnostic(tmp_path: Path) -> None:
    """``input_qos: sensor-data`` and ``approximate_synk``: no crash, one ERROR line naming the value, a WARN
    naming the closest parameter, configure refused, /diagnostics ERROR; a valid value then recovers."""
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(
        "/**/sgbm_bad_qos:\n  ros__parameters:\n    input_qos: sensor-data\n    approximate_synk: true\n"
        "    diagnostics_period: 0.2\n"
    )
    harness = ArgsHarness(["--ros-args", "--params-file", str(cfg)], private_domain_id())
    try:
        listener = harness.add(Listener(harness.context))
        node = harness.add(SGBMDepthNode("sgbm_bad_qos", context=harness.context))
        assert node.get_parameter("input_qos").value == "sensor_data"  # the default, never the bad value
        assert node.parameter_errors == {"input_qos": QOS_ERROR}

        assert wait_for(harness, lambda: QOS_ERROR in listener.log_lines("sgbm_bad_qos", Log.ERROR))
        assert wait_for(
            harness,
            lambda: any(
                "'approximate_synk'" in m and "did you mean 'approximate_sync'" in m
                for m in listener.log_lines("sgbm_bad_qos", Log.WARN)
            ),
        )

        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.lifecycle_state() == "unconfigured" and node.matcher is None
        assert node.start_error == QOS_ERROR

        def error_diagnostic() -> bool:
            return any(
                st.level == DiagnosticStatus.ERROR and st.message == QOS_ERROR
                and {kv.key: kv.value for kv in st.values}.get("invalid parameters") == "input_qos"
                for st in listener.statuses("sgbm_bad_qos")
            )

        assert wait_for(harness, error_diagnostic), [
            (st.level, st.message) for st in listener.statuses("sgbm_bad_qos")
        ]
        # Fixed live (the node is unconfigured, so a configure-time parameter may change): it starts.
        (result,) = remote_set(harness, listener, "sgbm_bad_qos", Parameter("input_qos", value="reliable"))
        assert result.successful, result.reason
        assert not node.parameter_errors
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        listener.diag.clear()
        assert wait_for(
            harness,
            lambda: any(st.level != DiagnosticStatus.ERROR for st in listener.statuses("sgbm_bad_qos")),
        )
    finally:
        harness.shutdown()


@pytest.mark.ros
def test_out_of_range_and_wrong_type_overrides_do_not_raise() -> None:
    """rclpy raises InvalidParameterValueException / InvalidParameterTypeException at declare time for these;
    the node must be created anyway, unconfigurable, with every bad value named."""
    harness = RosHarness(private_domain_id())
    try:
        overrides = [
            Parameter("queue_size", value=0),
            Parameter("scale", value="half"),
            Parameter("max_disparity", value=5000),
            Parameter("min_disparity", value=1),  # an int for a double
        ]
        node = harness.add(SGBMDepthNode("sgbm_bad_range", context=harness.context,
                                         parameter_overrides=overrides))
        assert sorted(node.parameter_errors) == ["max_disparity", "min_disparity", "queue_size", "scale"]
        assert node.params["queue_size"] == 5 and node.params["scale"] == 1.0
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        for text in ("'queue_size' = 0", "'scale' = 'half'", "'max_disparity' = 5000", "'min_disparity' = 1"):
            assert text in node.start_error
    finally:
        harness.shutdown()


@pytest.mark.ros
def test_run_nodes_returns_1_promptly_naming_node_and_parameters(tmp_path: Path) -> None:
    """The runner with a params file and ``-p`` (both are overrides): returns 1 without a stop request."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text('/**/sgbm_depth:\n  ros__parameters:\n    scale: "half"\n')
    codes: list[int] = []
    stop = threading.Event()
    argv = ["scene-perception", "--ros-args", "-p", "queue_size:=0"]
    runner = threading.Thread(
        target=lambda: codes.append(run_nodes(nodes_from_config(cfg), argv=argv, params_file=cfg, stop=stop))
    )
    runner.start()
    runner.join(60)
    stop.set()  # only matters when the runner wrongly kept spinning
    runner.join(10)
    assert codes == [1]


def _run_cli(cfg: Path) -> subprocess.CompletedProcess[str]:
    start = time.monotonic()
    proc = subprocess.run([*CLI, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=90)
    assert time.monotonic() - start < 90
    return proc


@pytest.mark.ros
@pytest.mark.slow
def test_cli_run_exits_nonzero_with_one_clear_line(tmp_path: Path) -> None:
    """``scene-perception run --config bad.yaml``: exit status 1, no traceback, the node and the reason."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("/**/sgbm_depth:\n  ros__parameters:\n    input_qos: sensor-data\n")
    proc = _run_cli(cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    final = [line for line in out.splitlines() if "failed to configure" in line]
    assert len(final) == 1 and "node 'sgbm_depth'" in final[0] and QOS_ERROR in final[0], out

    cfg.write_text("/**/sgbm_depth:\n  ros__parameters:\n    queue_size: 0\n")  # rclpy used to raise here
    proc = _run_cli(cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert "parameter 'queue_size' = 0 is invalid: out of range (allowed: integer 1..100)" in out


# ------------------------------------------------------------------------------------ live changes
@pytest.mark.ros
def test_configure_time_parameters_are_refused_while_configured_and_accepted_when_unconfigured() -> None:
    """``approximate_sync``, ``input_qos``, ``queue_size`` on an active node: refused with the reason, value
    unchanged; a dynamic parameter still applies live; after deactivate + cleanup the change is accepted and
    used by the next activation."""
    harness = RosHarness(private_domain_id())
    try:
        listener = harness.add(Listener(harness.context))
        node = harness.add(SGBMDepthNode("sgbm_live", context=harness.context))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        changes = {"approximate_sync": True, "input_qos": "reliable", "queue_size": 7, "scale": 0.5}
        for name, value in changes.items():
            (result,) = remote_set(harness, listener, "sgbm_live", Parameter(name, value=value))
            assert not result.successful, name
            assert result.reason == (
                f"'{name}' is applied on configure: deactivate and clean up the node first (lifecycle; "
                "it is active now), then set it"
            )
            assert node.get_parameter(name).value != value and node.params[name] != value
        # The same value again (``ros2 param load`` of the file the node started with): nothing to apply.
        (same,) = remote_set(harness, listener, "sgbm_live", Parameter("input_qos", value="sensor_data"))
        assert same.successful, same.reason
        # Dynamic parameters still apply on the next frame.
        (live,) = remote_set(harness, listener, "sgbm_live", Parameter("min_disparity", value=2.0))
        assert live.successful and node.params["min_disparity"] == 2.0
        # Inactive (configured) is not enough: the backend was built from the old values.
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        (inactive,) = remote_set(harness, listener, "sgbm_live", Parameter("scale", value=0.5))
        assert not inactive.successful and "it is inactive now" in inactive.reason
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        results = remote_set(
            harness, listener, "sgbm_live", *(Parameter(k, value=v) for k, v in changes.items())
        )
        assert all(r.successful for r in results), [r.reason for r in results]
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.matcher is not None and node.matcher.scale == 0.5
        assert type(node._sync).__name__ == "ApproximateTimeSynchronizer"
        assert node._subs[0].sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    finally:
        harness.shutdown()


@pytest.mark.ros
def test_diagnostics_period_set_while_unconfigured_is_applied() -> None:
    """Not dynamic, but its timer runs in every state: accepted while unconfigured means applied at once."""
    harness = RosHarness(private_domain_id())
    try:
        node = harness.add(SGBMDepthNode("sgbm_period", context=harness.context))
        assert node.set_parameters([Parameter("diagnostics_period", value=0.25)])[0].successful
        assert node._diag_timer.timer_period_ns == 250_000_000
        assert node.set_parameters([Parameter("input_check_period", value=2.0)])[0].successful
        assert node._check_timer.timer_period_ns == 2_000_000_000
    finally:
        harness.shutdown()


@pytest.mark.ros
def test_invalid_device_is_refused_in_every_state() -> None:
    """``device: banana`` used to be accepted live; now refused with the reason, unconfigured, inactive and
    active alike, and a valid device is refused only while configured."""
    harness = RosHarness(private_domain_id())
    try:
        listener = harness.add(Listener(harness.context))
        node = harness.add(StereoDepthNode(
            "stereo_device", context=harness.context,
            parameter_overrides=[Parameter("device", value="cpu"), Parameter("num_threads", value=1)],
        ))
        steps = [
            ("unconfigured", None), ("inactive", node.trigger_configure), ("active", node.trigger_activate)
        ]
        for state, step in steps:
            if step is not None:
                assert step() == TransitionCallbackReturn.SUCCESS, state
            (bad,) = remote_set(harness, listener, "stereo_device", Parameter("device", value="banana"))
            assert not bad.successful, state
            assert bad.reason == (
                "parameter 'device' = 'banana' is invalid: not a device name "
                "(allowed: auto, cpu, cuda, cuda:N)"
            )
            assert node.get_parameter("device").value == "cpu" and node.params["device"] == "cpu"
        (valid,) = remote_set(harness, listener, "stereo_device", Parameter("device", value="cuda:1"))
        assert not valid.successful and "'device' is applied on configure" in valid.reason
        (backend,) = remote_set(harness, listener, "stereo_device", Parameter("backend", value="auto"))
        assert not backend.successful and node.params["backend"] == "torch"
    finally:
        harness.shutdown()


# ------------------------------------------------------------------------------------ failing transitions
class RaisingActivateNode(SGBMDepthNode):
    """An SGBM node whose activation raises (a real bug in a subclass): rclpy itself logs nothing."""

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        raise RuntimeError("subscription setup exploded")


@pytest.mark.ros
def test_exception_in_a_transition_is_logged_reported_and_cleaned_up() -> None:
    harness = RosHarness(private_domain_id())
    try:
        listener = harness.add(Listener(harness.context))
        node = harness.add(RaisingActivateNode(
            "sgbm_raises", context=harness.context,
            parameter_overrides=[Parameter("diagnostics_period", value=0.2)],
        ))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node._pubs
        assert node.trigger_activate() != TransitionCallbackReturn.SUCCESS
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert "activate raised RuntimeError: subscription setup exploded" in node.start_error
        assert not node._pubs and node.matcher is None  # on_error released what configure had set up
        assert wait_for(
            harness,
            lambda: any(
                "subscription setup exploded" in m for m in listener.log_lines("sgbm_raises", Log.ERROR)
            ),
        )
        assert wait_for(
            harness,
            lambda: any(
                st.level == DiagnosticStatus.ERROR and "subscription setup exploded" in st.message
                for st in listener.statuses("sgbm_raises")
            ),
        )
    finally:
        harness.shutdown()
