"""What every perception lifecycle node shares, whatever its input: parameters, health, stamps, diagnostics.

The stereo nodes (:mod:`~scene_perception.ros.stereo_node_base`) and the single-image nodes
(:mod:`~scene_perception.ros.image_node_base`) declare and validate their parameters, count rejected inputs
and report through /diagnostics the same way; this root holds that once so the two families cannot drift
apart (a monitor reading ``invalid input count`` or ``problem <kind>`` must not care which node it reads).
"""

from __future__ import annotations

from typing import Any, ClassVar

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from scene_perception.ros import params as P
from scene_perception.ros.diagnostics import Health, diagnostic_array
from scene_perception.ros.image_input import StampGuard

__all__ = ["PerceptionNodeBase"]


class PerceptionNodeBase(LifecycleNode):
    """Lifecycle node root: declared + validated parameters, Health, stamp rules, /diagnostics publisher.

    Subclasses set ``PARAM_SPECS`` (a tuple from :mod:`scene_perception.ros.params` including the shared
    health parameters), ``DESCRIPTION`` and ``STAMPED_INPUT`` (what one input is called in stamp messages),
    and implement :meth:`_publish_diagnostics` and :meth:`_destroy_subscriptions`.
    """

    PARAM_SPECS: ClassVar[tuple[P.ParamSpec, ...]]
    #: Human description used in the DiagnosticStatus name (``<node>: <DESCRIPTION>``).
    DESCRIPTION: ClassVar[str]
    #: What one input is called in the stamp problems ("image", "stereo set").
    STAMPED_INPUT: ClassVar[str]

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = P.declare(self, self.PARAM_SPECS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.health = Health(self.get_logger().warning, self.params["log_throttle_seconds"])
        self._stamps = StampGuard(self.STAMPED_INPUT)
        self.invalid_inputs = 0
        self._pubs: dict[str, Any] = {}  # output key -> lifecycle publisher (created at configure)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics)

    # ------------------------------------------------------------------ subclass interface
    def _publish_diagnostics(self) -> None:
        """Publish this node's DiagnosticStatus (see :meth:`_publish_status`); runs on a timer."""
        raise NotImplementedError

    def _destroy_subscriptions(self) -> None:
        """Unsubscribe from every input (deactivate / cleanup)."""
        raise NotImplementedError

    def _on_parameter_changed(self, change: Parameter) -> None:
        """Hook for live parameters a subclass applies itself (called after ``self.params`` is updated)."""

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        result = P.validate(self.PARAM_SPECS, changes)
        if result.successful:
            for change in changes:
                self.params[change.name] = change.value
                if change.name == "log_throttle_seconds":
                    self.health.throttle_seconds = float(change.value)
                self._on_parameter_changed(change)
        return result

    # ------------------------------------------------------------------ lifecycle
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
        """Publish one DiagnosticStatus named ``<node>: <DESCRIPTION>`` (``level`` None: from Health)."""
        status = self.health.status(
            f"{self.get_name()}: {self.DESCRIPTION}", self.get_fully_qualified_name(), values, level, message
        )
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))
