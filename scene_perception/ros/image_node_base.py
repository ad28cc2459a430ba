"""What every single-image node shares: one subscription, a torch pipeline with MC dropout, health.

``scene`` and ``pose`` both take one camera image, run a torch pipeline with live ``mc_samples`` and report
the same /diagnostics summary; only their outputs differ. So the subscription, the weights loading (a
failure leaves the node unconfigured, reason in the log and in /diagnostics at ERROR), the per-frame
validate -> infer -> publish path and the diagnostics skeleton live here once, and a node says how it builds
its pipeline, which publishers it has and which messages one result becomes.

Input validation, stamp rules and counted publishing are those of every image node
(:mod:`scene_perception.ros.image_input`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from scene_perception.ros.diagnostics import ERROR
from scene_perception.ros.image_input import InputRejected, decode_rgb, publish_counted
from scene_perception.ros.node_base import PerceptionNodeBase
from scene_perception.ros.qos import qos_from_name

__all__ = ["INPUT_TOPIC", "ImageNodeBase"]

INPUT_TOPIC = "left/image_rect"


class ImageNodeBase(PerceptionNodeBase):
    """Lifecycle node skeleton: validated camera image in; a torch pipeline's messages out; health.

    Subclasses set ``PARAM_SPECS`` (with ``weights``, ``device``, ``num_threads``, ``mc_samples``,
    ``max_input_pixels`` and the shared QoS / health parameters) and ``DESCRIPTION``, and implement
    :meth:`_build_pipeline`, :meth:`_create_publishers`, :meth:`_messages` and :meth:`_diagnostic_extra`.
    """

    STAMPED_INPUT: ClassVar[str] = "image"

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.pipeline: Any = None  # the node's pipeline once configured
        self.device = ""
        self._sub: Any = None

    # ------------------------------------------------------------------ subclass interface
    def _build_pipeline(self, device: str) -> Any:
        """The pipeline from ``self.params`` on ``device``; ImportError / OSError / ValueError /
        RuntimeError (ModelLoadError) fail the configure transition."""
        raise NotImplementedError

    def _pipeline_loaded(self) -> None:
        """Hook after ``self.pipeline`` / ``self.device`` are set (log what was loaded)."""

    def _create_publishers(self, out_qos: QoSProfile) -> None:
        """Create the lifecycle publishers (at least ``self._pubs``) once the pipeline is loaded."""
        raise NotImplementedError

    def _release_publishers(self) -> None:
        """Hook for publishers kept outside ``self._pubs`` (destroyed on cleanup)."""

    def _activated(self) -> None:
        """Hook after the lifecycle publishers are activated (e.g. a latched message)."""

    def _messages(self, result: Any, image: Any, header: Header) -> dict[str, Any]:
        """The output messages of one pipeline result, keyed as ``self._pubs``."""
        raise NotImplementedError

    def _publish(self, result: Any, messages: Mapping[str, Any], header: Header) -> None:
        """Publish one frame's messages (override to send more, e.g. TF)."""
        publish_counted(self._pubs, messages, self.health)

    def _diagnostic_extra(self) -> tuple[dict[str, str], Any, str]:
        """Model key/values (after the summary keys), a forced level (or None) and its message."""
        return {}, None, ""

    # ------------------------------------------------------------------ parameters
    def _on_parameter_changed(self, change: Parameter) -> None:
        if change.name == "mc_samples" and self.pipeline is not None:
            self.pipeline.mc_samples = int(change.value)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._load_pipeline():
            return TransitionCallbackReturn.FAILURE
        self._create_publishers(qos_from_name(self.params["output_qos"]))
        return TransitionCallbackReturn.SUCCESS

    def _load_pipeline(self) -> bool:
        """Build the pipeline from ``weights``; False (logged, counted as model_load_failed) on failure."""
        p = self.params
        try:
            # Imported here so that a broken torch install or model module fails the transition with a
            # message instead of the node's import.
            import torch

            from scene_perception.engines.select import resolve_device

            if p["num_threads"] > 0:
                torch.set_num_threads(int(p["num_threads"]))
            device = resolve_device(str(p["device"]))
            pipeline = self._build_pipeline(device)
        except (ImportError, OSError, ValueError, RuntimeError) as exc:
            # ModelLoadError is a RuntimeError: missing, corrupt, mismatching or absent weights land here.
            self.get_logger().error(f"configure failed, node stays unconfigured: {exc}")
            self.health.problem("model_load_failed", str(exc))
            return False
        self.pipeline, self.device = pipeline, device
        self._pipeline_loaded()
        return True

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        in_qos = qos_from_name(self.params["input_qos"], depth=int(self.params["input_depth"]))
        self._sub = self.create_subscription(Image, INPUT_TOPIC, self._on_image, in_qos)
        self._stamps.reset()
        self._worker.capacity = int(self.params["input_depth"])
        self._worker.start()
        result = super().on_activate(state)  # activates the lifecycle publishers
        self._activated()
        self.get_logger().info(f"active: subscribed to {self.resolve_topic_name(INPUT_TOPIC)}")
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscriptions()
        self._destroy_publishers()
        self._release_publishers()
        self.pipeline = None
        return TransitionCallbackReturn.SUCCESS

    def _destroy_subscriptions(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
        self._sub = None
        # The frame in progress finishes (and publishes) before deactivate/cleanup releases the pipeline.
        self._worker.stop()

    # ------------------------------------------------------------------ processing
    def _on_image(self, msg: Image) -> None:
        """Subscription callback (executor thread): count the image and hand it to the worker."""
        self.health.count("input " + INPUT_TOPIC)
        if self.pipeline is not None:
            self._worker.submit((msg, time.perf_counter()))

    def _process_input(self, item: tuple[Image, float]) -> None:
        """Validate, infer and publish one image (worker thread)."""
        msg, t0 = item
        if self.pipeline is None:
            return
        try:
            stamp_ns = self._stamps.check(msg.header, self.health)
            image = decode_rgb("input", msg, int(self.params["max_input_pixels"]))
        except InputRejected as exc:
            self._reject(exc.kind, str(exc))
            return
        self._stamps.accept(stamp_ns)
        try:
            result = self.pipeline(image)
            # Inside the try: a result that does not fit its encoding must cost this frame, not the node
            # (an exception escaping a callback would stop the executor).
            messages = self._messages(result, image, msg.header)
        except (RuntimeError, ValueError) as exc:
            self.health.problem("inference_error", f"pipeline failed on frame {stamp_ns}: {exc}")
            return
        self._publish(result, messages, msg.header)
        self.health.count("outputs")
        self.health.inference(float(result.latency_ms))
        self.health.latency((time.perf_counter() - t0) * 1e3)

    # ------------------------------------------------------------------ health
    def _backend_status(self) -> str:
        if self.pipeline is None:
            return f"requested torch ({self.params['device']})"
        import torch

        return (
            f"torch {torch.__version__} on {self.device} ({torch.get_num_threads()} threads), "
            f"mc_samples {self.pipeline.mc_samples} (batched)"
        )

    def _publish_diagnostics(self) -> None:
        in_rate = self.health.rates.get("input " + INPUT_TOPIC)
        out_rate = self.health.rates.get("outputs")
        configured = self.pipeline is not None
        state = ("configured" if configured else "unconfigured") + (" (subscribed)" if self._sub else "")
        extra, level, message = self._diagnostic_extra()
        values = {
            "state": state,
            "input rate (Hz)": f"{in_rate.rate() if in_rate else 0.0:.2f}",
            "output rate (Hz)": f"{out_rate.rate() if out_rate else 0.0:.2f}",
            "dropped (sync) count": "n/a (single image input, no synchronizer)",
            "invalid input count": str(self.invalid_inputs),
            "backend": self._backend_status(),
            **extra,
        }
        if not configured and self.health.problems["model_load_failed"]:
            level, message = ERROR, "model failed to load: " + self.health.last_error
        self._publish_status(values, level, message)
