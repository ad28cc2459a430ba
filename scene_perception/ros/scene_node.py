"""Scene lifecycle node: one camera image in; semantics, instances, depth and their uncertainties out.

A thin adapter around :class:`~scene_perception.pipelines.scene.ScenePipeline` (the multi-task network of
Kendall, Gal & Cipolla, CVPR 2018, with Monte-Carlo dropout for epistemic uncertainty): ROS message ->
numpy -> pipeline -> ROS messages. The same pipeline runs offline in training, evaluation and the CLI.

Topics (all relative, remap as usual), every output stamped with the input's header:
  in:  left/image_rect (sensor_msgs/Image; rgb8, bgr8, rgba8, bgra8, mono8, mono16, 8UC1, 8UC3; no
       camera_info needed: the network sees pixels only)
  out: semantic/labels (mono8 class ids), semantic/color (rgb8: the image blended with the class colours,
       weight ``overlay_alpha``), semantic/label_info (vision_msgs/LabelInfo when vision_msgs is installed,
       else scene_perception/LabelInfo, the same fields: class_map of (class_id, class_name) per class,
       threshold 0; transient-local depth 1, published on activate, so a late subscriber still gets it;
       the class colours are not in it, they are the pipeline's palette used by semantic/color),
       instance/labels (16UC1, 0 = stuff), semantic/aleatoric (32FC1 expected softmax entropy, nats),
       semantic/uncertainty (32FC1 mutual information, nats: epistemic, only while ``mc_samples`` > 0),
       scene/depth (32FC1 m; REP 118: +inf beyond the model's max depth, e.g. sky, NaN invalid),
       scene/depth/variance (32FC1 m^2, aleatoric),
       scene/depth/epistemic (32FC1 m^2, only while ``mc_samples`` > 0), /diagnostics.

Input validation (encodings, truncated / oversized / empty buffers, stamps) and counted publishing are the
stereo nodes' own rules (:mod:`scene_perception.ros.image_input`), so a bad frame is reported under the same
problem kind whichever node receives it; the single-image lifecycle, weights loading and diagnostics summary
are shared with the pose node (:mod:`scene_perception.ros.image_node_base`).

Lifecycle: configure loads the weights (missing / corrupt / mismatching weights fail the transition and leave
the node unconfigured, with the reason in the log and in /diagnostics at ERROR) and creates the publishers;
activate subscribes and publishes the label list; deactivate unsubscribes; cleanup releases the model.
``mc_samples`` and ``overlay_alpha`` are live: the next frame uses the new value.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from scene_perception.ros import params as P
from scene_perception.ros.codec import numpy_to_image
from scene_perception.ros.diagnostics import WARN
from scene_perception.ros.image_input import publish_counted
from scene_perception.ros.image_node_base import INPUT_TOPIC, ImageNodeBase
from scene_perception.ros.messages import LABEL_INFO_TYPE, make_label_info
from scene_perception.ros.qos import latched_qos

__all__ = [
    "INPUT_TOPIC", "LABEL_INFO_TOPIC", "LABEL_INFO_TYPE", "OUTPUTS", "SceneNode", "main", "overlay_labels"
]

# LABEL_INFO_TYPE (re-exported): vision_msgs/LabelInfo when vision_msgs is installed, else our
# scene_perception/LabelInfo with the same fields (see scene_perception.ros.messages).
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


class SceneNode(ImageNodeBase):
    """Multi-task scene understanding (semantics, instances, depth, uncertainty) as a managed node."""

    PARAM_SPECS = P.SCENE_PARAMS
    DESCRIPTION = "scene understanding"

    def __init__(self, node_name: str = "scene", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._palette = np.zeros((256, 3), np.uint8)
        self._label_info_pub: Any = None

    # ------------------------------------------------------------------ lifecycle
    def _build_pipeline(self, device: str) -> Any:
        from scene_perception.pipelines.scene import ScenePipeline

        p = self.params
        return ScenePipeline.from_weights(
            p["weights"] or None, mc_samples=int(p["mc_samples"]), device=device
        )

    def _pipeline_loaded(self) -> None:
        pipeline, log = self.pipeline, self.get_logger()
        self._palette = palette_array(tuple(pipeline.class_colors))
        if not getattr(pipeline, "trained", True):
            log.error(
                "UNTRAINED WEIGHTS: semantics, instances and depth are meaningless. Train with "
                "`scene-perception train scene` or pass `weights`."
            )
        log.info(
            f"model '{pipeline.model_name}' ({len(pipeline.class_names)} classes) on {self.device} from "
            f"{self.params['weights'] or 'the shipped weights'}; mc_samples={pipeline.mc_samples}"
        )

    def _create_publishers(self, out_qos: QoSProfile) -> None:
        self._pubs = {key: self.create_lifecycle_publisher(Image, t, out_qos) for key, t in OUTPUTS.items()}
        self._label_info_pub = self.create_lifecycle_publisher(
            LABEL_INFO_TYPE, LABEL_INFO_TOPIC, latched_qos(1)
        )

    def _release_publishers(self) -> None:
        if self._label_info_pub is not None:
            self.destroy_lifecycle_publisher(self._label_info_pub)
        self._label_info_pub = None

    def _activated(self) -> None:
        self._publish_label_info()

    def label_info(self) -> Any:
        """The running model's label set (what each id in semantic/labels means): a LABEL_INFO_TYPE."""
        assert self.pipeline is not None
        # threshold 0: every pixel gets its arg-max class, no confidence cut. The model's name is in
        # /diagnostics (``model``), its colours in semantic/color: vision_msgs' layout has neither.
        return make_label_info(
            self.pipeline.class_names, stamp=self.get_clock().now().to_msg(), threshold=0.0
        )

    def _publish_label_info(self) -> None:
        publish_counted({"label_info": self._label_info_pub}, {"label_info": self.label_info()}, self.health)

    # ------------------------------------------------------------------ processing
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
    def _diagnostic_extra(self) -> tuple[dict[str, str], Any, str]:
        configured = self.pipeline is not None
        values = {
            "model": str(self.pipeline.model_name) if configured else "none",
            "weights": str(self.params["weights"] or "shipped"),
            "mc_samples": str(self.params["mc_samples"]),
            "trained": str(bool(getattr(self.pipeline, "trained", False))),
        }
        if configured and not getattr(self.pipeline, "trained", True):
            return values, WARN, "UNTRAINED weights: outputs are meaningless"
        return values, None, ""


def main(argv: list[str] | None = None) -> None:
    """``ros2 run scene_perception scene_node``; configures + activates unless --no-autostart."""
    from scene_perception.ros.runner import run_nodes

    argv = sys.argv if argv is None else argv
    raise SystemExit(run_nodes([("scene", SceneNode, {})], argv=argv))


if __name__ == "__main__":
    main()
