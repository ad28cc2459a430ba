"""What every perception lifecycle node shares, whatever its input: parameters, health, stamps, diagnostics.

The stereo nodes (:mod:`~scene_perception.ros.stereo_node_base`) and the single-image nodes
(:mod:`~scene_perception.ros.image_node_base`) declare and validate their parameters, count rejected inputs
and report through /diagnostics the same way; this root holds that once so the two families cannot drift
apart (a monitor reading ``invalid input count`` or ``problem <kind>`` must not care which node it reads).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from scene_perception.ros import params as P
from scene_perception.ros.diagnostics import ERROR, Health, diagnostic_array
from scene_perception.ros.image_input import StampGuard
from scene_perception.ros.worker import NewestWorker

__all__ = ["PerceptionNodeBase"]

#: rclpy's transition states -> the transition's name in log lines.
_TRANSITIONS: dict[int, str] = {
    State.TRANSITION_STATE_CONFIGURING: "configure",
    State.TRANSITION_STATE_CLEANINGUP: "cleanup",
    State.TRANSITION_STATE_SHUTTINGDOWN: "shutdown",
    State.TRANSITION_STATE_ACTIVATING: "activate",
    State.TRANSITION_STATE_DEACTIVATING: "deactivate",
    State.TRANSITION_STATE_ERRORPROCESSING: "error processing",
}

TransitionCallback = Callable[[LifecycleState], TransitionCallbackReturn]


class PerceptionNodeBase(LifecycleNode):
    """Lifecycle node root: declared + validated parameters, Health, stamp rules, /diagnostics publisher.

    Subclasses set ``PARAM_SPECS`` (a tuple from :mod:`scene_perception.ros.params` including the shared
    health parameters), ``DESCRIPTION`` and ``STAMPED_INPUT`` (what one input is called in stamp messages),
    and implement :meth:`_publish_diagnostics` and :meth:`_destroy_subscriptions`.

    Parameter rules (issue 20), the same whether a value comes from a params file, ``-p``,
    ``parameter_overrides`` or ``ros2 param set``:

    * an invalid value (wrong type, out of range, not a choice, not a device) is refused with one line
      naming the parameter, the value and what is allowed. At start-up the parameter keeps its default,
      the line is logged at ERROR, /diagnostics reports ERROR with it, and ``configure`` fails until the
      parameter is set to a valid value; the process never dies of it.
    * a parameter that is not ``dynamic`` is applied on configure, so it may change only while the node is
      unconfigured; in any other state a change is refused with the reason (never "successful" without
      effect). Setting it to its current value is accepted (``ros2 param load`` of an unchanged file).
    * an override naming no parameter of the node (a typo) is logged at WARN with the closest name.
    """

    #: Non-dynamic parameters that are timer periods, and the attribute holding their timer: the timers run
    #: in every lifecycle state, so a new period is applied as soon as it is accepted (unconfigured).
    PERIOD_TIMERS: ClassVar[dict[str, str]] = {
        "diagnostics_period": "_diag_timer",
        "input_check_period": "_check_timer",
    }

    PARAM_SPECS: ClassVar[tuple[P.ParamSpec, ...]]
    #: Human description used in the DiagnosticStatus name (``<node>: <DESCRIPTION>``).
    DESCRIPTION: ClassVar[str]
    #: What one input is called in the stamp problems ("image", "stereo set").
    STAMPED_INPUT: ClassVar[str]

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declared = P.declare_checked(self, self.PARAM_SPECS)
        self.params = declared.values
        #: parameter name -> why its initial value was refused; configure fails while any is left.
        self.parameter_errors: dict[str, str] = declared.errors
        #: why the last configure / activate failed ("" once one succeeds): the runner's exit line.
        self.start_error = ""
        log = self.get_logger()
        for message in declared.errors.values():
            log.error(message)
        for name, closest in declared.unknown.items():
            log.warning(P.unknown_message(name, closest))
        self._spec_by_name = {s.name: s for s in self.PARAM_SPECS}
        self._guard_transitions()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.health = Health(self.get_logger().warning, self.params["log_throttle_seconds"])
        self._stamps = StampGuard(self.STAMPED_INPUT)
        self.invalid_inputs = 0
        self._pubs: dict[str, Any] = {}  # output key -> lifecycle publisher (created at configure)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics)
        # Inference off the executor thread (ros/worker.py): services, parameters and diagnostics answer
        # during a frame. Subclasses submit inputs from their callbacks and start / stop it with their
        # subscriptions.
        self._worker = NewestWorker(self._process_input, lambda: self.health.count("skipped (busy)"),
                                    self._worker_failed, name=f"{node_name}_inference")

    # ------------------------------------------------------------------ subclass interface
    def _publish_diagnostics(self) -> None:
        """Publish this node's DiagnosticStatus (see :meth:`_publish_status`); runs on a timer."""
        raise NotImplementedError

    def _destroy_subscriptions(self) -> None:
        """Unsubscribe from every input (deactivate / cleanup)."""
        raise NotImplementedError

    def _process_input(self, item: Any) -> None:
        """Validate, compute and publish one input; runs on the worker thread."""
        raise NotImplementedError

    def _worker_failed(self, exc: BaseException) -> None:
        self.health.problem("inference_error", f"processing an input failed: {type(exc).__name__}: {exc}")

    def destroy_node(self) -> None:
        """Also end the worker thread (a node destroyed without a lifecycle cleanup, e.g. at Ctrl-C):
        a frame in progress gets a few seconds to finish, then the thread is left to end with it."""
        self._worker.stop(timeout=5.0)
        super().destroy_node()

    def _on_parameter_changed(self, change: Parameter) -> None:
        """Hook for live parameters a subclass applies itself (called after ``self.params`` is updated)."""

    # ------------------------------------------------------------------ parameters
    def lifecycle_state(self) -> str:
        """The lifecycle state's label (``unconfigured``, ``inactive``, ``active``, ``configuring`` ...).

        rclpy has no public getter for a node's own state; ``_state_machine`` is what its ``trigger_*``
        methods read.
        """
        return str(self._state_machine.current_state[1])

    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        """Refuse invalid values in every state, and changes to non-dynamic parameters unless unconfigured
        (they would report success and apply only after a cleanup + configure); apply the rest."""
        result = P.validate(self.PARAM_SPECS, changes)
        if not result.successful:
            return result
        state = self.lifecycle_state()
        if state != "unconfigured":
            for change in changes:
                spec = self._spec_by_name.get(change.name)
                if spec is not None and not spec.dynamic and change.value != self.params.get(change.name):
                    return SetParametersResult(
                        successful=False, reason=P.applied_on_configure_reason(change.name, state)
                    )
        for change in changes:
            if change.name not in self._spec_by_name:
                continue  # rclpy's own parameters (use_sim_time ...)
            self.params[change.name] = change.value
            if self.parameter_errors.pop(change.name, None) is not None:
                self.get_logger().info(
                    f"parameter '{change.name}' = {change.value!r} accepted"
                    + (
                        f"; still invalid: {', '.join(self.parameter_errors)}"
                        if self.parameter_errors
                        else "; the node can be configured"
                    )
                )
            if change.name == "log_throttle_seconds":
                self.health.throttle_seconds = float(change.value)
            timer = getattr(self, self.PERIOD_TIMERS.get(change.name, ""), None)
            if timer is not None:
                timer.timer_period_ns = int(float(change.value) * 1e9)
                timer.reset()
            self._on_parameter_changed(change)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle
    def _guard_transitions(self) -> None:
        """Wrap rclpy's transition callbacks: refuse ``configure`` while a parameter is invalid, and turn an
        exception in any transition into one ERROR line and a failed transition.

        Why here and not in ``on_configure``: subclasses override ``on_configure`` without calling the
        base, and rclpy catches an exception from a transition callback without logging anything (the
        node just drops back to unconfigured), which left "see the error above" with no error above.
        rclpy registers the bound callbacks in ``LifecycleNode._callbacks`` (state id -> callback).
        """
        callbacks = getattr(self, "_callbacks", None)
        if not isinstance(callbacks, dict):
            self.get_logger().warning(
                "rclpy's lifecycle callbacks were not found: invalid parameters and exceptions in "
                "transitions are not reported by the transition itself"
            )
            return
        for state_id, callback in list(callbacks.items()):
            callbacks[state_id] = self._guarded(_TRANSITIONS.get(state_id, str(state_id)), callback)

    def _guarded(self, transition: str, callback: TransitionCallback) -> TransitionCallback:
        def run(state: LifecycleState) -> TransitionCallbackReturn:
            log = self.get_logger()
            if transition == "configure" and self.parameter_errors:
                self.start_error = "; ".join(self.parameter_errors.values())
                # The full lines were logged at start-up and are in /diagnostics; name the parameters only.
                log.error(
                    "configure refused, node stays unconfigured: invalid parameter "
                    f"{', '.join(self.parameter_errors)} (set a valid value, then configure again)"
                )
                return TransitionCallbackReturn.FAILURE
            try:
                result = callback(state)
            except Exception as exc:  # noqa: BLE001 -- rclpy would swallow it silently
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                self.start_error = (
                    f"{transition} raised {type(exc).__name__}: {exc} "
                    f"(at {Path(frame.filename).name}:{frame.lineno})"
                )
                log.error(f"{self.start_error}; the node drops back to unconfigured")
                return TransitionCallbackReturn.ERROR
            if transition in ("configure", "activate"):
                if result == TransitionCallbackReturn.SUCCESS:
                    self.start_error = ""
                else:  # the subclass logged and counted why (model_load_failed: ...)
                    self.start_error = self.health.last_error or f"{transition} failed (see the log)"
            return result

        return run

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """After an exception in a transition: release whatever was set up, so that the unconfigured state
        rclpy moves to really holds no publishers, subscriptions or model (a later configure starts clean).
        """
        try:
            self.on_cleanup(state)
        except Exception as exc:  # noqa: BLE001 -- best effort: we are already handling an error
            self.get_logger().error(f"cleanup after a failed transition raised {type(exc).__name__}: {exc}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscriptions()
        return super().on_deactivate(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_cleanup(state)

    def _destroy_publishers(self) -> None:
        """Destroy the lifecycle publishers in ``self._pubs`` (cleanup)."""
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}

    # ------------------------------------------------------------------ input / health
    def _reject(self, kind: str, message: str) -> None:
        """Drop an input: count it as invalid input and under its own problem kind."""
        self.invalid_inputs += 1
        self.health.problem(kind, message)

    def _publish_status(self, values: dict[str, str], level: Any, message: str) -> None:
        """Publish one DiagnosticStatus named ``<node>: <DESCRIPTION>`` (``level`` None: from Health).

        ERROR whatever the subclass says while an initial parameter value is invalid (the node cannot be
        configured: a monitor must not read "OK"), and while a failed start left the node unconfigured.
        """
        if self.parameter_errors:
            values = {**values, "invalid parameters": ", ".join(self.parameter_errors)}
            level, message = ERROR, "; ".join(self.parameter_errors.values())
        elif self.start_error and level != ERROR and self.lifecycle_state() == "unconfigured":
            level, message = ERROR, self.start_error
        status = self.health.status(
            f"{self.get_name()}: {self.DESCRIPTION}", self.get_fully_qualified_name(), values, level, message
        )
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))
