"""Scene lifecycle node: one camera image in; semantics, instances, depth and their uncertainties out.

A thin adapter around :class:`~scene_perception.pipelines.scene.ScenePipeline` (the multi-task network of
Kendall, Gal & Cipolla, CVPR 2018, with Monte-Carlo dropout for epistemic uncertainty): ROS message ->
numpy -> pipeline -> ROS messages. The same pipeline runs offline in training, evaluation and the CLI.

Topics (all relative, remap as usual), every output stamped with the input's header:
  in:  left/image_rect (sensor_msgs/Image; rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1, 8UC3; no
       camera_info needed: the network sees pixels only)
  out: semantic/labels (mono8 class ids), semantic/color (rgb8: the image blended with the class colours,
       weight ``overlay_alpha``), semantic/label_info (scene_perception/LabelInfo: id, name, colour per
       class; transient-local depth 1, published on activate, so a late subscriber still gets it),
       instance/labels (16UC1, 0 = stuff), semantic/aleatoric (32FC1 expected softmax entropy, nats),
       semantic/uncertainty (32FC1 mutual information, nats: epistemic, only while ``mc_samples`` > 0),
       scene/depth (32FC1 m; REP 118: +inf beyond the model's max depth, e.g. sky, NaN invalid),
       scene/depth/variance (32FC1 m^2, aleatoric),
       scene/depth/epistemic (32FC1 m^2, only while ``mc_samples`` > 0), /diagnostics.

Input validation (encodings, truncated / oversized / empty buffers, stamps) and counted publishing are the
stereo nodes' own rules (:mod:`scene_perception.ros.image_input`), so a bad frame is reported under the same
problem kind whichever node receives it.

Lifecycle: configure loads the weights (missing / corrupt / mismatching weights fail the transition and leave
the node unconfigured, with the reason in the log and in /diagnostics at ERROR) and creates the publishers;
activate subscribes and publishes the label list; deactivate unsubscribes; cleanup releases the model.
``mc_samples`` and ``overlay_alpha`` are live: the next frame uses the new value.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from scene_perception.msg import LabelInfo, SemanticLabel
from scene_perception.ros import params as P
from scene_perception.ros.codec import numpy_to_image
from scene_perception.ros.diagnostics import ERROR, WARN, Health, diagnostic_array
from scene_perception.ros.image_input import InputRejected, StampGuard, decode_rgb, publish_counted
from scene_perception.ros.qos import latched_qos, qos_from_name

__all__ = ["INPUT_TOPIC", "LABEL_INFO_TOPIC", "OUTPUTS", "SceneNode", "main", "overlay_labels"]

INPUT_TOPIC = "left/image_rect"
LABEL_INFO_TOPIC = "semantic/label_info"

#: Image outputs: key -> relative topic (all sensor_msgs/Image). ``uncertainty`` and ``depth_epistemic``
#: exist only while MC dropout runs (``mc_samples`` > 0): without samples there is no epistemic estimate,
#: and publishing zeros would claim a certainty the model does not have.
OUTPUTS: dict[str, str] = {
    "labels": "semantic/labels",
    "color": "semantic/color",
    "instances": "instance/labels",
    "aleatoric": "semantic/aleatoric",
    "uncertainty": "semantic/uncertainty",
    "depth": "scene/depth",
    "depth_variance": "scene/depth/variance",
    "depth_epistemic": "scene/depth/epistemic",
}


def palette_array(colors: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """(256, 3) uint8 lookup table: class id -> RGB (ids beyond the model's classes black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = np.asarray(colors, np.uint8).reshape(-1, 3)
    return lut


def overlay_labels(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * palette[labels]``, rounded, as (H, W, 3) uint8 RGB.

    Blending (rather than publishing the bare colour map) keeps the scene recognisable in RViz, so a wrong
    label is seen against what it labels.
    """
    colours = palette[labels].astype(np.float32)
    blended = image.astype(np.float32) * np.float32(1.0 - alpha) + colours * np.float32(alpha)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


class SceneNode(LifecycleNode):
    """Multi-task scene understanding (semantics, instances, depth, uncertainty) as a managed node."""

    PARAM_SPECS = P.SCENE_PARAMS
    DESCRIPTION = "scene understanding"

    def __init__(self, node_name: str = "scene", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = P.declare(self, self.PARAM_SPECS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.health = Health(self.get_logger().warning, self.params["log_throttle_seconds"])
        self.pipeline: Any = None  # ScenePipeline once configured
        self.device = ""
        self._palette = np.zeros((256, 3), np.uint8)
        self._pubs: dict[str, Any] = {}
        self._label_info_pub: Any = None
        self._sub: Any = None
        self._stamps = StampGuard("image")
        self.invalid_inputs = 0
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        result = P.validate(self.PARAM_SPECS, changes)
        if result.successful:
            for change in changes:
                self.params[change.name] = change.value
                if change.name == "log_throttle_seconds":
                    self.health.throttle_seconds = float(change.value)
                elif change.name == "mc_samples" and self.pipeline is not None:
                    self.pipeline.mc_samples = int(change.value)
        return result

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self._load_pipeline():
            return TransitionCallbackReturn.FAILURE
        out_qos = qos_from_name(self.params["output_qos"])
        self._pubs = {key: self.create_lifecycle_publisher(Image, t, out_qos) for key, t in OUTPUTS.items()}
        self._label_info_pub = self.create_lifecycle_publisher(LabelInfo, LABEL_INFO_TOPIC, latched_qos(1))
        return TransitionCallbackReturn.SUCCESS

    def _load_pipeline(self) -> bool:
        """Build the pipeline from ``weights``; False (logged, counted as model_load_failed) on failure."""
        p = self.params
        log = self.get_logger()
        try:
            # Imported here so that a broken torch install or model module fails the transition with a
            # message instead of the node's import.
            import torch

            from scene_perception.engines.select import resolve_device
            from scene_perception.pipelines.scene import ScenePipeline

            if p["num_threads"] > 0:
                torch.set_num_threads(int(p["num_threads"]))
            device = resolve_device(str(p["device"]))
            pipeline = ScenePipeline.from_weights(
                p["weights"] or None, mc_samples=int(p["mc_samples"]), device=device
            )
        except (ImportError, OSError, ValueError, RuntimeError) as exc:
            # ModelLoadError is a RuntimeError: a missing, corrupt or mismatching file lands here.
            log.error(f"configure failed, node stays unconfigured: {exc}")
            self.health.problem("model_load_failed", str(exc))
            return False
        self.pipeline, self.device = pipeline, device
        self._palette = palette_array(tuple(pipeline.class_colors))
        if not getattr(pipeline, "trained", True):
            log.error(
                "UNTRAINED WEIGHTS: semantics, instances and depth are meaningless. Train with "
                "`scene-perception train scene` or pass `weights`."
            )
        log.info(
            f"model '{pipeline.model_name}' ({len(pipeline.class_names)} classes) on {device} from "
            f"{p['weights'] or 'the shipped weights'}; mc_samples={pipeline.mc_samples}"
        )
        return True

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._sub = self.create_subscription(
            Image, INPUT_TOPIC, self._on_image, qos_from_name(self.params["input_qos"])
        )
        self._stamps.reset()
        result = super().on_activate(state)  # activates the lifecycle publishers
        self._publish_label_info()
        self.get_logger().info(f"active: subscribed to {self.resolve_topic_name(INPUT_TOPIC)}")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscription()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_subscription()
        for pub in (*self._pubs.values(), self._label_info_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._pubs, self._label_info_pub = {}, None
        self.pipeline = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_cleanup(state)

    def _destroy_subscription(self) -> None:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
        self._sub = None

    def label_info(self) -> LabelInfo:
        """The running model's label set (what each id in semantic/labels means)."""
        assert self.pipeline is not None
        msg = LabelInfo(model=str(self.pipeline.model_name))
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.labels = [
            SemanticLabel(id=i, name=str(name), color=np.asarray(self._palette[i], np.uint8))
            for i, name in enumerate(self.pipeline.class_names)
        ]
        return msg

    def _publish_label_info(self) -> None:
        publish_counted({"label_info": self._label_info_pub}, {"label_info": self.label_info()}, self.health)

    # ------------------------------------------------------------------ processing
    def _reject(self, kind: str, message: str) -> None:
        self.invalid_inputs += 1
        self.health.problem(kind, message)

    def _on_image(self, msg: Image) -> None:
        t0 = time.perf_counter()
        self.health.count("input " + INPUT_TOPIC)
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
        publish_counted(self._pubs, messages, self.health)
        self.health.count("outputs")
        self.health.inference(float(result.latency_ms))
        self.health.latency((time.perf_counter() - t0) * 1e3)

    def _messages(self, result: Any, image: np.ndarray, header: Header) -> dict[str, Image]:
        """The output messages of one SceneResult, all with the input's header."""
        labels = np.asarray(result.labels, np.uint8)
        alpha = float(self.params["overlay_alpha"])
        messages = {
            "labels": numpy_to_image(labels, "mono8", header),
            "color": numpy_to_image(overlay_labels(image, labels, self._palette, alpha), "rgb8", header),
            "instances": numpy_to_image(np.asarray(result.instances, np.uint16), "16UC1", header),
            "aleatoric": numpy_to_image(np.asarray(result.semantic_aleatoric, np.float32), "32FC1", header),
            # As the pipeline gives it (not make_depth_image, which folds +inf into NaN): REP 118 keeps
            # "too far" (+inf, the sky) apart from "no measurement" (NaN).
            "depth": numpy_to_image(np.asarray(result.depth, np.float32), "32FC1", header),
            "depth_variance": numpy_to_image(np.asarray(result.depth_variance, np.float32), "32FC1", header),
        }
        if result.semantic_epistemic is not None:
            mi = np.asarray(result.semantic_epistemic, np.float32)
            messages["uncertainty"] = numpy_to_image(mi, "32FC1", header)
        if result.depth_epistemic is not None:
            var = np.asarray(result.depth_epistemic, np.float32)
            messages["depth_epistemic"] = numpy_to_image(var, "32FC1", header)
        return messages

    # ------------------------------------------------------------------ health
    def _backend_status(self) -> str:
        if self.pipeline is None:
            return f"requested torch ({self.params['device']})"
        import torch

        threads = torch.get_num_threads()
        return (
            f"torch {torch.__version__} on {self.device} ({threads} threads), "
            f"mc_samples {self.pipeline.mc_samples} (batched)"
        )

    def _publish_diagnostics(self) -> None:
        in_rate = self.health.rates.get("input " + INPUT_TOPIC)
        out_rate = self.health.rates.get("outputs")
        configured = self.pipeline is not None
        state = ("configured" if configured else "unconfigured") + (" (subscribed)" if self._sub else "")
        values = {
            "state": state,
            "input rate (Hz)": f"{in_rate.rate() if in_rate else 0.0:.2f}",
            "output rate (Hz)": f"{out_rate.rate() if out_rate else 0.0:.2f}",
            "dropped (sync) count": "n/a (single image input, no synchronizer)",
            "invalid input count": str(self.invalid_inputs),
            "backend": self._backend_status(),
            "model": str(self.pipeline.model_name) if configured else "none",
            "weights": str(self.params["weights"] or "shipped"),
            "mc_samples": str(self.params["mc_samples"]),
            "trained": str(bool(getattr(self.pipeline, "trained", False))),
        }
        level, message = None, ""
        if not configured and self.health.problems["model_load_failed"]:
            level, message = ERROR, "model failed to load: " + self.health.last_error
        elif configured and not getattr(self.pipeline, "trained", True):
            level, message = WARN, "UNTRAINED weights: outputs are meaningless"
        status = self.health.status(
            f"{self.get_name()}: {self.DESCRIPTION}", self.get_fully_qualified_name(), values, level, message
        )
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))


def main(argv: list[str] | None = None) -> None:
    """``ros2 run scene_perception scene_node``; configures + activates unless --no-autostart."""
    from scene_perception.ros.runner import run_nodes

    argv = sys.argv if argv is None else argv
    run_nodes([("scene", SceneNode, {})], argv=argv)


if __name__ == "__main__":
    main()
