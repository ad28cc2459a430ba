"""Every ROS parameter of the stereo depth node, declared in one place.

Why a table instead of scattered ``declare_parameter`` calls: the README, the YAML config, the node and
the tests all need the same names, defaults, ranges and "may this change at runtime?" answers.  Keeping
them in one list (as mgonzs13/yolo_ros does) makes the node's surface reviewable at a glance.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from scene_perception.geometry.rectification import RECTIFY_MODES
from scene_perception.pipelines.local_refinement_config import (
    DEFAULT_LOCAL_REFINEMENT,
    ONE_PASS_PIXELS,
    TWO_PASS_MEASURES,
    LocalRefinementConfig,
)
from scene_perception.pipelines.quality_thresholds import DEFAULT_THRESHOLDS
from scene_perception.pipelines.validity_defaults import (
    DEFAULT_EXTEND_RANGE,
    DEFAULT_FAR_PROBABILITY,
    DEFAULT_FAR_SIGMA,
)
from scene_perception.ros.image_input import IMAGE_TRANSPORTS

#: Why the code default (sensor_data) differs from config/perception.yaml (reliable).
_INPUT_QOS_WHY = (
    "The default, sensor_data (best effort), matches every publisher; the shipped config/perception.yaml "
    "sets reliable, which delivers camera-sized frames from reliable publishers (most drivers) far more "
    "completely but does not match a best-effort publisher (docs/transport.md)."
)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: default, human description, optional numeric range and whether it is live.

    ``dynamic`` parameters take effect on the next frame; the others are read on ``configure`` (a
    lifecycle cleanup + configure applies a change), as stereo_image_proc does for its model choice.
    """

    name: str
    default: Any
    description: str
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] = ()
    dynamic: bool = False
    step: int | None = None

    def descriptor(self) -> ParameterDescriptor:
        extra = ""
        if self.choices:
            extra = f" One of: {', '.join(self.choices)}."
        when = " Applied on the next frame." if self.dynamic else " Applied on configure."
        desc = ParameterDescriptor(name=self.name, description=self.description + extra + when)
        if self.min_value is not None and self.max_value is not None:
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                desc.integer_range = [
                    IntegerRange(
                        from_value=int(self.min_value), to_value=int(self.max_value), step=self.step or 0
                    )
                ]
            elif isinstance(self.default, float):
                desc.floating_point_range = [
                    FloatingPointRange(from_value=float(self.min_value), to_value=float(self.max_value))
                ]
        return desc


#: Model / backend parameters: only the GC-Net node has them.
_MODEL_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model", "lite", "GC-Net configuration name.", choices=("lite", "paper")),
    ParamSpec(
        "weights",
        "",
        "Path to a .safetensors weights file; empty = the shipped weights for `model`. Checked at configure: "
        "the .safetensors suffix (pickle formats are refused), a readable, non-empty regular file.",
    ),
    ParamSpec(
        "far_head_weights",
        "",
        "Path to the far head (.safetensors with its card) for far_probability; empty = <model>_far on the "
        "model search path. A head is used only with the stereo weights its card names (sha256); without "
        "one far_probability does nothing (said at configure).",
    ),
    ParamSpec(
        "backend",
        "torch",
        "Inference backend; auto = tensorrt > onnxruntime-cuda > torch-cuda > onnxruntime-cpu "
        "(the choice and why faster ones were unavailable are logged at configure).",
        choices=("auto", "torch", "onnxruntime", "tensorrt"),
    ),
    ParamSpec(
        "device",
        "auto",
        "Where the network runs: auto (cuda:0 when CUDA is available, else cpu), cpu, cuda or cuda:N.",
    ),
    ParamSpec(
        "engine_cache_dir",
        "~/.cache/scene_perception/engines",
        "Directory for exported ONNX graphs and TensorRT engines (onnxruntime / tensorrt backends); "
        "created (0700) if missing; must be writable by this user and not world-writable.",
    ),
    ParamSpec("num_threads", 0, "Torch intra-op threads; 0 keeps torch's default.", 0, 256),
)

#: History depth of the input subscriptions, shared by every node.
INPUT_DEPTH = ParamSpec(
    "input_depth",
    1,
    "Frames each input subscription keeps (QoS history depth). 1 = always the newest frame: a node slower "
    "than its camera skips stale frames instead of working through a backlog (latency stays one inference, "
    "not five). Raise it when every frame must be processed (bag replay at full speed, a node faster than "
    "the camera with bursty input).",
    1,
    100,
)

#: Input sync / QoS parameters shared by every stereo-input node (stereo_depth, sgbm_depth).
_SYNC_QOS_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("approximate_sync", False, "Use approximate-time instead of exact-time stereo sync."),
    ParamSpec("approximate_sync_tolerance_seconds", 0.01, "Slop for approximate sync (seconds).", 0.0, 1.0),
    ParamSpec("queue_size", 5, "Synchronizer queue size per input topic.", 1, 100),
    ParamSpec(
        "input_qos",
        "sensor_data",
        "QoS of the four input subscriptions. " + _INPUT_QOS_WHY,
        choices=("sensor_data", "reliable", "best_effort"),
    ),
    INPUT_DEPTH,
    ParamSpec(
        "output_qos",
        "reliable",
        "QoS of the output publishers.",
        choices=("sensor_data", "reliable", "best_effort"),
    ),
    ParamSpec(
        "image_transport",
        "raw",
        "How the images arrive: raw (sensor_msgs/Image on left/image_rect, right/image_rect) or compressed "
        "(sensor_msgs/CompressedImage on <image topic>/compressed, as image_transport publishes and most "
        "bags record; JPEG / PNG / TIFF).",
        choices=tuple(IMAGE_TRANSPORTS),
    ),
    ParamSpec(
        "rectify",
        "auto",
        "Rectify the images with their CameraInfo (D, K, R, P) as image_proc does: on = always (raw camera "
        "images), off = never (already rectified), auto = when the CameraInfo says the image is not "
        "rectified (D != 0, R != I or K != P) and the image topic is not an image_rect* topic (remap "
        "left/image_rect to a raw topic to rectify in the node).",
        choices=RECTIFY_MODES,
    ),
)

_MIN_DISPARITY = ParamSpec(
    "min_disparity", 0.0, "Disparities at or below this (px) are invalid.", 0.0, 1000.0, dynamic=True
)

_MAX_UNCERTAINTY = ParamSpec(
    "max_uncertainty",
    0.0,
    "Invalidate pixels whose disparity std-dev (px) exceeds this; 0 = off.",
    0.0,
    1000.0,
    dynamic=True,
)

_MIN_TEXTURE = ParamSpec(
    "min_texture",
    0.0,
    "Invalidate pixels whose left-image grey-level std (0..1) over a 7x7 window is below this "
    "(stereo_image_proc's texture_threshold): nothing there to match, so the disparity is the network's "
    "unchecked guess (the lite network puts the sky a few metres away); 0 = off.",
    0.0,
    1.0,
    dynamic=True,
)

_FAR_SIGMA = ParamSpec(
    "far_sigma",
    DEFAULT_FAR_SIGMA,
    "Invalidate pixels whose disparity is within this many standard deviations of the disparity floor "
    "(min_disparity / max_depth / the automatic 1 px): their depth interval reaches past the farthest "
    "published depth, so nothing but 'far' is known there (the lite network's phantom sky sits 1-3 px "
    "above the floor with a wide std); 0 = off.",
    0.0,
    10.0,
    dynamic=True,
)

_FAR_PROBABILITY = ParamSpec(
    "far_probability",
    DEFAULT_FAR_PROBABILITY,
    "Invalidate pixels whose far-head probability that the true disparity is <= 1 px (beyond what the "
    "matcher resolves: the sky) exceeds this; the head reads the image around the pixel, so it tells the sky "
    "from far surfaces, which far_sigma cannot; 1 = off. Needs a far head for the loaded weights.",
    0.01,
    1.0,
    dynamic=True,
)

_DEPTH_INFINITIES = ParamSpec(
    "depth_infinities",
    True,
    "REP 117/118 special values in the depth image: +Inf where the far head puts the pixel beyond the "
    "matcher's range (the sky: a costmap can clear along the ray), -Inf where the disparity saturated at the "
    "top of the searched range (nearer than it reaches); false: NaN for every pixel without a depth.",
    dynamic=True,
)

_REFINE = DEFAULT_LOCAL_REFINEMENT

#: Sub-pixel correction of the network's disparity (pipelines/local_refinement.py); live, like
#: stereo_image_proc's block-matching settings.  Defaults are the pipeline's: one source of truth.
LOCAL_REFINEMENT_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "local_refinement.enabled",
        True,
        "Correct the network disparity by ZNCC propagation and search at the input resolution (textured, "
        "unambiguous pixels only). Cheap on a GPU; on 2 CPU cores about as slow as the lite network itself "
        "(~1 us per pixel with the default 3 rounds).",
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.radius",
        _REFINE.radius,
        "Largest integer correction searched (px).",
        0,
        16,
        dynamic=True,
    ),
    ParamSpec("local_refinement.window", _REFINE.window, "ZNCC window side (px, odd).", 3, 31,
              dynamic=True, step=2),
    ParamSpec(
        "local_refinement.min_zncc",
        _REFINE.min_zncc,
        "A pixel is corrected only where the best ZNCC reaches this.",
        -1.0,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.min_texture",
        _REFINE.min_texture,
        "... and where the left window's grey-level std (0..1 intensities) reaches this.",
        0.0,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.min_x_texture",
        _REFINE.min_x_texture,
        "... and, when > 0, where the RMS horizontal grey derivative over the window reaches this: a window "
        "with only horizontal edges fixes no disparity (the aperture problem). 0 = off.",
        0.0,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.min_x_share",
        _REFINE.min_x_share,
        "... and, when > 0, where the horizontal share of the window's gradient energy reaches this: the "
        "same aperture test without contrast (isotropic texture about 0.5, a horizontal edge about 0). "
        "0 = off.",
        0.0,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.min_x_snr",
        _REFINE.min_x_snr,
        "... and, when > 0, where the window's RMS horizontal grey derivative reaches this many times the "
        "frame's noise std (estimated from the left image): in a noisy view a weakly textured window's ZNCC "
        "peak is noise. 0 = off.",
        0.0,
        1000.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.min_peak_curvature",
        _REFINE.min_peak_curvature,
        "A search correction is accepted only where the ZNCC scores around the best offset curve down by "
        "at least this (c(-1) - 2 c(0) + c(+1) <= -value): a flat peak (smooth shading, a flat surface with "
        "compression residue) fixes no shift. 0 = any maximum; 0.2 was chosen by refinement rule 4 "
        "(docs/refinement.md).",
        0.0,
        4.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.iterations",
        _REFINE.iterations,
        "Rounds of (propagation, search), each from the previous round's result; cost is linear in it.",
        1,
        8,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.propagation",
        _REFINE.propagation,
        "0 = off; p > 0: before each search every pixel tries the disparities of the pixels p and 2p px "
        "away (left, right, up, down) and keeps the best-matching one (undoes edge fattening).",
        0,
        64,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.window_shift",
        _REFINE.window_shift,
        "0 = centred ZNCC window; s > 0: each candidate scores by the best window whose centre is within "
        "s px (shiftable window: pixels next to a depth edge match by the window on their own side).",
        0,
        8,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.fill_border",
        _REFINE.fill_border,
        "Pixels whose disparity points outside the right image (x - d < 0: nothing to match) take the "
        "disparity of the nearest matchable pixel to their right in the row.",
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.uncertainty_scale",
        _REFINE.uncertainty_scale,
        "Multiplies the network's disparity std where the refinement changed the disparity (a verified "
        "correction is more accurate than the network predicted for its own estimate).",
        0.01,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.correction_std",
        _REFINE.correction_std,
        "Where the refinement moved the disparity by delta px, its std is at least this times |delta| "
        "before the frame's one-pass or two-pass factor (the network and the matching disagreed; 0 = off).",
        0.0,
        10.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_std_factor",
        _REFINE.two_pass_std_factor,
        "When the scene needs more disparity range than the network's and the pipeline refines twice, the "
        "frame's published disparity std is multiplied by this; with two_pass_std_measure, it is the factor "
        "at the reference value of the measure (fitted on validation pairs: docs/calibration.md). Per frame: "
        "used where the per-pixel factor (two_pass_std_per_pixel) does not apply.",
        0.1,
        10.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_std_measure",
        _REFINE.two_pass_std_measure,
        "GT-free measure of how well the views agree that the two-refinement factor follows per frame "
        "(zncc: median 1 - ZNCC at the refined disparity; none: the constant two_pass_std_factor).",
        choices=TWO_PASS_MEASURES,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_std_reference",
        _REFINE.two_pass_std_reference,
        "The measure's value at which the factor is two_pass_std_factor.",
        1e-6,
        1e3,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_std_exponent",
        _REFINE.two_pass_std_exponent,
        "factor = clip(two_pass_std_factor * (measure / reference) ** exponent, 1, 6); 0 = constant.",
        0.0,
        10.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_std_per_pixel",
        bool(_REFINE.two_pass_std_pixel),
        "With two_pass_std_measure zncc and the SGBM candidate on: the two-refinement factor is a map, per "
        "pixel also following 1 - ZNCC, texture, the second pass's correction and SGBM's verdict (no "
        "answer, disagreement), with the shipped weights (docs/calibration.md); false, or without the "
        "candidate: one factor per frame from two_pass_std_factor and _exponent.",
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_changed_scale",
        _REFINE.two_pass_changed_scale,
        "For frames refined twice: after the two-pass factor, multiplies the std where the second "
        "refinement changed the disparity (docs/calibration.md).",
        0.01,
        4.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_unchanged_scale",
        _REFINE.two_pass_unchanged_scale,
        "For frames refined twice: after the two-pass factor, multiplies the std where the second "
        "refinement left the disparity unchanged.",
        0.01,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_scale_exponent",
        _REFINE.two_pass_scale_exponent,
        "For frames refined twice: after the other two-pass steps the disparity std is multiplied by "
        "(s / two_pass_scale_reference)^this, s the scale the network ran at; 0 = off (docs/calibration.md).",
        0.0,
        5.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_scale_reference",
        _REFINE.two_pass_scale_reference,
        "The network scale at which two_pass_scale_exponent leaves the std alone.",
        0.01,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_row_floor",
        _REFINE.two_pass_row_floor,
        "For frames refined twice: a floor under the disparity std that follows the rig's GT-free row "
        "residual r (spread of matched corners' vertical offsets): sqrt(std^2 + (a sqrt(r^2 - r0^2))^2), "
        "a = this; 0 = off (docs/calibration.md).",
        0.0,
        10.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_row_noise",
        _REFINE.two_pass_row_noise,
        "px; r0 of two_pass_row_floor: the row residual's own estimator spread, subtracted in quadrature.",
        0.0,
        5.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.one_pass_std_measure",
        _REFINE.one_pass_std_measure,
        "For frames refined once (the network at full scale): the GT-free measure a per-frame std factor "
        "follows, factor = clip(one_pass_std_factor * (measure / one_pass_std_reference) ** "
        "one_pass_std_exponent, one_pass_std_min_factor, 6); none = off (docs/calibration.md).",
        choices=TWO_PASS_MEASURES,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.one_pass_std_reference",
        _REFINE.one_pass_std_reference,
        "The measure's value at which the one-pass factor is one_pass_std_factor.",
        1e-6,
        1e3,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.one_pass_std_factor",
        _REFINE.one_pass_std_factor,
        "The one-pass factor at the reference measure (before the clip to one_pass_std_min_factor..6).",
        1e-3,
        100.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.one_pass_std_exponent",
        _REFINE.one_pass_std_exponent,
        "How fast the one-pass factor grows with the measure (0 = constant one_pass_std_factor).",
        0.0,
        10.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.one_pass_std_pixels",
        _REFINE.one_pass_std_pixels,
        "Which pixels of a frame refined once the one-pass factor multiplies: all, or only those the "
        "refinement changed (docs/calibration.md).",
        choices=ONE_PASS_PIXELS,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.one_pass_std_min_factor",
        _REFINE.one_pass_std_min_factor,
        "The one-pass factor's lower clip (the upper is 6).",
        0.01,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.one_pass_unchanged_scale",
        _REFINE.one_pass_unchanged_scale,
        "Multiplies the std of the pixels a single refinement left unchanged (1 = as the network's).",
        0.01,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.occlusion_std_scale",
        _REFINE.occlusion_std_scale,
        "Multiplies the std where the refined disparity is hidden from the right camera (ordering "
        "constraint; 1 = off; docs/calibration.md).",
        1.0,
        100.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.max_view_residual",
        _REFINE.max_view_residual,
        "0 = off. Otherwise frames whose median 1 - ZNCC at the network's own disparity exceeds this are not "
        "refined: the network's output is published (through a camera's effects the refinement can add "
        "error; docs/refinement.md). Kept off by its rule: it also gates frames the refinement fixes.",
        0.0,
        2.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.two_pass_std_floor",
        _REFINE.two_pass_std_floor,
        "px; where the per-pixel two-pass factor applies, the published disparity std becomes "
        "sqrt((factor std)^2 + floor^2): your rig's sub-pixel rectification residual (about the rectified "
        "row error of its calibration, x 1.25); 0 = none (docs/calibration.md).",
        0.0,
        10.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.sgbm_candidate",
        _REFINE.sgbm_candidate,
        "Before the rounds, offer each pixel OpenCV SGBM's disparity (CPU, the network's range); it is "
        "taken where SGBM answered and its ZNCC beats the current value's (fixes the network's gross "
        "errors; ~25 ms at 512x256, ~22 ms at 320x240 on 2 cores).",
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.candidate_far_px",
        _REFINE.candidate_far_px,
        "px; an SGBM candidate further than this from the current disparity is far, and needs "
        "candidate_far_margin.",
        0.0,
        10000.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.candidate_far_margin",
        _REFINE.candidate_far_margin,
        "A far SGBM candidate is taken only where its ZNCC beats the current value's by at least this: on a "
        "repetitive pattern SGBM's wrong period scores about as well as the right one. 0 = off "
        "(docs/refinement.md).",
        0.0,
        2.0,
        dynamic=True,
    ),
    ParamSpec(
        "local_refinement.sgbm_on_accelerator",
        _REFINE.sgbm_on_accelerator,
        "Also run the SGBM candidate when the network runs on a GPU (it is CPU OpenCV: on an H200 it took "
        "96 of 110 ms per 960x576 frame, docs/gpu.md).",
        dynamic=True,
    ),
)


def local_refinement_config(values: dict[str, Any]) -> LocalRefinementConfig | None:
    """The pipeline setting the ``local_refinement.*`` parameters describe (None when disabled)."""
    if not values["local_refinement.enabled"]:
        return None
    prefix = "local_refinement."
    fields = {
        name[len(prefix):]: values[name]
        for name in (s.name for s in LOCAL_REFINEMENT_PARAMS)
        if name != "local_refinement.enabled"
    }
    # A switch, not the weights: they are fitted together with the base and exponent (rule_pixel4.md).
    per_pixel = fields.pop("two_pass_std_per_pixel")
    fields["two_pass_std_pixel"] = _REFINE.two_pass_std_pixel if per_pixel else ()
    return LocalRefinementConfig(**fields)


#: The stereo nodes' GT-free live quality (pipelines/quality.py, ros/live_quality.py, issue 26;
#: docs/live_quality.md), in ``stereo_depth`` and ``sgbm_depth`` alike: an aid with measured limits, not a
#: guarantee.  All live.  ``quality.lr_check`` choices are
#: ``pipelines.quality.LR_CHECKS`` (spelled out here so this table does not import torch).
QUALITY_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "quality.enabled",
        False,
        "Compute the GT-free quality of each published disparity (photometric reprojection error of the "
        "right image warped by it, left-right consistency, vertical misalignment of the rectified pair) and "
        "report it in /diagnostics ('photometric error p50', 'left-right consistent %', 'vertical offset "
        "(px)', 'vertical offset spread (px)'; stereo_depth also 'SGBM-agreeing %'). Off by default: on 2 "
        "CPU cores it adds ~10 % to a 512x256 frame (benchmarks/live_quality.py).",
        dynamic=True,
    ),
    ParamSpec(
        "quality.window",
        30,
        "Frames the diagnostics summarise (median photometric error, vertical offset and its spread, mean "
        "consistent share over the last N assessed frames).",
        1,
        10000,
        dynamic=True,
    ),
    ParamSpec(
        "quality.every",
        1,
        "Assess every n-th published frame (1 = all): the quality drifts over seconds, not frames, so a "
        "slow CPU can spread the cost.",
        1,
        1000,
        dynamic=True,
    ),
    ParamSpec(
        "quality.lr_check",
        "uniqueness",
        "Where the right view's disparity comes from: uniqueness = forward-warp the published disparity "
        "(z-buffer; ~1 ms; flags occlusions and geometrically impossible disparities only), network = run "
        "the matcher (the network; SGBM in sgbm_depth) again on the mirrored, swapped pair (the exact "
        "check; doubles the frame time).",
        choices=("uniqueness", "network"),
        dynamic=True,
    ),
    ParamSpec(
        "quality.photometric_warn",
        DEFAULT_THRESHOLDS.photometric,
        "WARN in /diagnostics when the window's photometric error p50 (0.85 (1 - SSIM) / 2 + 0.15 L1, "
        "intensities 0..1) exceeds this; 0 = never. The default (twice the 95th percentile of clean "
        "validation frames with camera noise) is permissive: set about twice your rig's clean value.",
        0.0,
        1.0,
        dynamic=True,
    ),
    ParamSpec(
        "quality.lr_consistent_warn",
        DEFAULT_THRESHOLDS.lr_consistent_pct,
        "WARN when the window's left-right consistent share (%) falls below this; 0 = never. Chosen for the "
        "network check (clean validation 5th percentile minus 10 points, rounded down to 5: 75.6 % -> 65 % "
        "with the 2026-12-07 pipeline; 55 % before); the uniqueness check's share is about 100 % minus the "
        "occluded share and rarely falls this low.",
        0.0,
        100.0,
        dynamic=True,
    ),
    ParamSpec(
        "quality.vertical_offset_warn",
        DEFAULT_THRESHOLDS.vertical_offset_px,
        "WARN when the estimated vertical misalignment of the rectified views (|px|, window median) exceeds "
        "this: the rig has lost its calibration; 0 = never.",
        0.0,
        10.0,
        dynamic=True,
    ),
    ParamSpec(
        "quality.vertical_range",
        2,
        "Row shifts -R..R tried by the vertical offset estimate (2R+1 warps per assessed frame; larger "
        "offsets read as +-R).",
        1,
        8,
        dynamic=True,
    ),
    ParamSpec(
        "quality.publish_confidence",
        False,
        "Publish depth/confidence (32FC1, 0..1 per pixel, 0 where invalid: exp(-photometric residual / 0.1) "
        "x exp(-left-right disagreement / 2 px)). Assesses every frame while on, whatever quality.every.",
        dynamic=True,
    ),
)


#: Live quality that only ``stereo_depth`` has: the SGBM candidate's verdict on the network's disparity.
STEREO_QUALITY_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "quality.sgbm_agreement_warn",
        DEFAULT_THRESHOLDS.sgbm_agreement_pct,
        "WARN when the window's SGBM-agreeing share (%) falls below this: of the valid pixels where the "
        "local refinement's SGBM candidate answered, those within 2 px of it; 0 = never. Reported only "
        "where the frame had an SGBM candidate (the CPU default; local_refinement.sgbm_on_accelerator on a "
        "GPU). The default: clean validation frames with camera noise, 5th percentile (84.1 %) minus 10 "
        "points, rounded down to 5 (benchmarks/results/2026-12-07_cpu/live_quality_sgbm/rule.md).",
        0.0,
        100.0,
        dynamic=True,
    ),
)


#: Output and health parameters shared by every stereo-input node.
_OUTPUT_HEALTH_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "delta_d",
        0.0625,
        "Smallest disparity increment reported in DisparityImage (px).",
        1e-4,
        1.0,
        dynamic=True,
    ),
    ParamSpec("publish_points", True, "Publish the organized PointCloud2 on `points`.", dynamic=True),
    ParamSpec(
        "max_input_pixels",
        4096 * 4096,
        "Frames larger than this (w*h) are rejected as malformed.",
        1,
        1 << 28,
        dynamic=True,
    ),
    ParamSpec("diagnostics_period", 1.0, "Seconds between DiagnosticArray messages.", 0.05, 60.0),
    ParamSpec(
        "input_check_period",
        5.0,
        "Warn when some inputs arrive but a stereo set never completes "
        "within this many seconds (e.g. camera_info missing).",
        0.5,
        600.0,
    ),
    ParamSpec(
        "log_throttle_seconds",
        5.0,
        "Minimum seconds between repeated warnings of one kind.",
        0.0,
        600.0,
        dynamic=True,
    ),
)

#: The range and size limits of the GC-Net node (pipelines/stereo_depth.py applies them).
_RANGE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "max_disparity",
        0.0,
        "The scene's largest disparity (px at the input resolution: near objects); 0 = the network's range "
        "(lite, paper: 128, 192). Above the network's range the network runs on the pair shrunk to fit and "
        "the disparity is scaled back and refined at full size. Pixels at the top of the searched range "
        "(saturated) are invalid and counted ('saturated pixels'); no published disparity exceeds it.",
        0.0,
        4096.0,
        dynamic=True,
    ),
    ParamSpec(
        "max_depth",
        0.0,
        "Pixels farther than this (m) are invalid in depth, points and disparity alike (a disparity floor "
        "of f*B/max_depth). 0 = auto: disparities at or below 1 px are invalid (their error is as large as "
        "the value: no phantom depths of hundreds of km). Set a large value (1e9) to keep everything.",
        0.0,
        1e9,
        dynamic=True,
    ),
    ParamSpec(
        "max_network_pixels",
        1280 * 720,
        "The network runs on at most this many pixels: larger frames are shrunk for it and the disparity is "
        "scaled back and refined at full size. Bounds memory on large frames (CPU, lite, default "
        "refinement: ~0.75 GB per network megapixel; docs/benchmarks.md). 0 = no limit. With extend_range "
        "it counts pixels x levels / the trained levels, the cost volume's size.",
        0,
        1 << 28,
        dynamic=True,
    ),
    ParamSpec(
        "extend_range",
        DEFAULT_EXTEND_RANGE,
        "When max_disparity exceeds the network's range: true widens the network's cost volume to cover it "
        "and runs at the input resolution (same weights; ONNX Runtime / TensorRT export and cache a graph "
        "per resolution and range); false shrinks the pair to fit and refines twice. Costs "
        "about max_disparity / range x the network's time per pixel (docs/refinement.md).",
        dynamic=True,
    ),
)

#: Online self-supervised adaptation of the stereo network (training/adapt.py, issue 26; docs/adaptation.md):
#: off by default; it helped on one real rig, not on synthetic periodic textures.  Read on configure, except
#: ``adapt.every`` and ``adapt.serve``.  The defaults of the others are those of
#: ``training.adapt.AdaptConfig``.
ADAPT_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "adapt.enabled",
        False,
        "Fine-tune the stereo network on the incoming frames with the self-supervised loss, in a background "
        "process at the lowest priority (never delays the outputs); an accepted version (held-out "
        "photometric error lower by adapt.min_improvement, anchor EPE not up by more than "
        "adapt.max_anchor_rise) is saved with a model card in adapt.out_dir and "
        "served. Needs trained weights from a file; the adapter trains on the CPU.",
    ),
    ParamSpec("adapt.out_dir", "adapt", "Where accepted versions (adapted_vNNNN.safetensors + card) go."),
    ParamSpec("adapt.every", 5, "Offer every Nth frame to the adapter.", 1, 1000, dynamic=True),
    ParamSpec("adapt.steps_per_round", 20, "Training steps per round (2 crops each).", 1, 10000),
    ParamSpec("adapt.lr", 2e-5, "Adam learning rate of the rounds.", 1e-8, 1e-2),
    ParamSpec(
        "adapt.min_improvement",
        0.02,
        "Relative drop of the held-out photometric error a round needs to be accepted.",
        0.0,
        1.0,
    ),
    ParamSpec(
        "adapt.min_holdout_frames",
        8,
        "Held-out frames (every 4th usable frame offered) the adapter waits for before its first round: a "
        "decision on one or two frames is noise.",
        1,
        16,
    ),
    ParamSpec(
        "adapt.anchor_pairs",
        8,
        "Rendered validation pairs of the training domain (GT known, never trained on) whose EPE vetoes a "
        "candidate that forgot how to match; 0 = no veto (the photometric gate alone can be fooled).",
        0,
        64,
    ),
    ParamSpec(
        "adapt.max_anchor_rise",
        0.03,
        "Largest relative rise of the anchor EPE an accepted round may cause.",
        0.0,
        1.0,
    ),
    ParamSpec(
        "adapt.max_sgbm_drop",
        -1.0,
        "Largest fall of the held-out frames' SGBM agreement (share 0..1 of the network's disparities "
        "that OpenCV SGBM confirms within 2 px where it answers) an accepted round may cause: a second "
        "matcher's veto; -1 = off (the default: on periodic textures it let a worse network through, "
        "docs/adaptation.md).",
        -1.0,
        1.0,
    ),
    ParamSpec(
        "adapt.serve",
        True,
        "Serve each accepted version (swapped in between two frames); false keeps the configured weights "
        "and only saves the versions.",
        dynamic=True,
    ),
)

STEREO_DEPTH_PARAMS: tuple[ParamSpec, ...] = (
    *_MODEL_PARAMS,
    *_SYNC_QOS_PARAMS,
    *_RANGE_PARAMS,
    _MIN_DISPARITY,
    _MAX_UNCERTAINTY,
    _MIN_TEXTURE,
    _FAR_SIGMA,
    _FAR_PROBABILITY,
    _DEPTH_INFINITIES,
    *LOCAL_REFINEMENT_PARAMS,
    *QUALITY_PARAMS,
    *STEREO_QUALITY_PARAMS,
    *ADAPT_PARAMS,
    *_OUTPUT_HEALTH_PARAMS,
)

#: The SGBM baseline node: same inputs, outputs and health parameters, plus OpenCV's search range. The SGBM
#: cost settings themselves are fixed (``pipelines/sgbm.py``: the project's baseline, not tuned per scene).
SGBM_DEPTH_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "max_disparity",
        128,
        "Largest disparity searched (px of the input images); rounded up to a multiple of 16 "
        "(at scale 1) as StereoSGBM requires. 128 matches the lite GC-Net's range.",
        1,
        1024,
    ),
    ParamSpec(
        "scale",
        1.0,
        "Match on images resized by this factor (INTER_AREA) and upsample the disparity back "
        "(0.5 = the project's half-resolution baseline; about 4x faster).",
        0.1,
        1.0,
    ),
    ParamSpec(
        "num_threads",
        0,
        "OpenCV threads (cv2.setNumThreads, process-wide); 0 keeps OpenCV's default.",
        0,
        256,
    ),
    *_SYNC_QOS_PARAMS,
    _MIN_DISPARITY,
    *_OUTPUT_HEALTH_PARAMS,
    *QUALITY_PARAMS,
)

_QOS_CHOICES = ("sensor_data", "reliable", "best_effort")
_HEALTH_BY_NAME = {s.name: s for s in _OUTPUT_HEALTH_PARAMS}

#: The single-image scene node (multi-task semantics / instances / depth, issue 5). No sync, no camera_info;
#: the input checks and health parameters mean what they mean in the stereo nodes.
SCENE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "weights",
        "",
        "Path to the multi-task model's .safetensors file; empty = the shipped models/scene.safetensors. "
        "Checked at configure (suffix, readable non-empty regular file, sha256 against its model card).",
    ),
    ParamSpec(
        "device",
        "auto",
        "Where the network runs: auto (cuda:0 when CUDA is available, else cpu), cpu, cuda or cuda:N.",
    ),
    ParamSpec(
        "mc_samples",
        0,
        "Monte-Carlo dropout samples per frame (one batched forward pass); 0 = off. > 0 adds the epistemic "
        "outputs semantic/uncertainty (mutual information) and scene/depth/epistemic.",
        0,
        64,
        dynamic=True,
    ),
    ParamSpec(
        "overlay_alpha",
        0.5,
        "Weight of the class colours in semantic/color (0 = the camera image, 1 = pure class colours).",
        0.0,
        1.0,
        dynamic=True,
    ),
    ParamSpec("input_qos", "sensor_data", "QoS of the image subscription. " + _INPUT_QOS_WHY,
              choices=_QOS_CHOICES),
    INPUT_DEPTH,
    ParamSpec("output_qos", "reliable", "QoS of the image outputs.", choices=_QOS_CHOICES),
    ParamSpec("num_threads", 0, "Torch intra-op threads; 0 keeps torch's default.", 0, 256),
    _HEALTH_BY_NAME["max_input_pixels"],
    _HEALTH_BY_NAME["diagnostics_period"],
    _HEALTH_BY_NAME["log_throttle_seconds"],
)


#: The camera pose (PoseNet) node: one image in, geometry_msgs/PoseWithCovarianceStamped (+ TF) out.
POSE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "weights",
        "",
        "Path to the PoseNet .safetensors file; empty = the shipped models/posenet.safetensors (trained for "
        "ONE synthetic street: PoseNet relocalises only in the scene it was trained in). Checked at "
        "configure (suffix, readable non-empty regular file, sha256 against its model card); missing "
        "weights leave the node unconfigured.",
    ),
    ParamSpec(
        "device",
        "auto",
        "Where the network runs: auto (cuda:0 when CUDA is available, else cpu), cpu, cuda or cuda:N.",
    ),
    ParamSpec(
        "mc_samples",
        32,
        "Monte-Carlo dropout samples per frame (one batched pass); the pose is their mean and the 6x6 "
        "covariance their spread (x, y, z, rotX, rotY, rotZ).",
        2,
        512,
        dynamic=True,
    ),
    ParamSpec(
        "map_frame",
        "map",
        "header.frame_id of the published pose: the frame the model was trained in (the synthetic "
        "world's map).",
        dynamic=True,
    ),
    ParamSpec(
        "camera_frame",
        "",
        "Child frame of the TF broadcast map_frame -> camera; empty = the input image's header.frame_id.",
        dynamic=True,
    ),
    ParamSpec(
        "publish_tf",
        True,
        "Broadcast map_frame -> camera_frame on /tf when tf2_ros is importable (it is not on PyPI: the "
        "pip environment logs that once and publishes only the pose topic).",
        dynamic=True,
    ),
    ParamSpec("input_qos", "sensor_data", "QoS of the image subscription. " + _INPUT_QOS_WHY,
              choices=_QOS_CHOICES),
    INPUT_DEPTH,
    ParamSpec("output_qos", "reliable", "QoS of the pose publisher.", choices=_QOS_CHOICES),
    ParamSpec("num_threads", 0, "Torch intra-op threads; 0 keeps torch's default.", 0, 256),
    _HEALTH_BY_NAME["max_input_pixels"],
    _HEALTH_BY_NAME["diagnostics_period"],
    _HEALTH_BY_NAME["log_throttle_seconds"],
)


#: Checks beyond type / range / choices, by parameter name: value -> why it is invalid ("" when valid).
#: ``device`` follows :func:`scene_perception.engines.select.resolve_device` (without importing torch here:
#: a typo must be refused by the parameter layer, long before a model is loaded).
_DEVICE_RE = re.compile(r"(auto|cpu|cuda(:\d+)?)")
_DEVICE_ALLOWED = "auto, cpu, cuda, cuda:N"

#: ROS's names for the parameter types, as ``ros2 param describe`` prints them.
_TYPE_NAMES = {
    Parameter.Type.BOOL: "bool",
    Parameter.Type.INTEGER: "integer",
    Parameter.Type.DOUBLE: "double",
    Parameter.Type.STRING: "string",
}


def _type_name(value: Any) -> str:
    try:
        kind = Parameter.Type.from_parameter_value(value)
    except TypeError:
        return type(value).__name__
    return _TYPE_NAMES.get(kind, kind.name.lower().replace("_", " "))


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _number(value: float) -> str:
    """A range bound as a user would type it (``1``, ``0.1``, ``268435456``)."""
    return f"{value:g}" if isinstance(value, float) and not float(value).is_integer() else str(value)


def allowed(spec: ParamSpec) -> str:
    """What ``spec`` accepts, in words, for error messages (``sensor_data, reliable, best_effort``, ...)."""
    if spec.choices:
        return ", ".join(spec.choices)
    if spec.name == "device":
        return _DEVICE_ALLOWED
    kind = _type_name(spec.default)
    if isinstance(spec.default, bool):
        return "true, false"
    if spec.min_value is not None and spec.max_value is not None and isinstance(spec.default, (int, float)):
        if isinstance(spec.default, int):
            lo, hi = int(spec.min_value), int(spec.max_value)
            steps = f" in steps of {spec.step} from {lo}" if spec.step else ""
            return f"{kind} {lo}..{hi}{steps}"
        return f"{kind} {_number(float(spec.min_value))}..{_number(float(spec.max_value))}"
    return f"any {kind}"


def problem(spec: ParamSpec, value: Any) -> str:
    """Why ``value`` is not acceptable for ``spec`` ("" when it is).

    The one rule set for every way a value arrives: a params file, ``parameter_overrides``,
    ``--ros-args -p`` and a live ``ros2 param set``. It repeats what rclpy enforces from the descriptor
    (type, range, step) because rclpy *raises* on those at declare time, and adds what a descriptor cannot
    say (choices, device names).
    """
    want = Parameter.Type.from_parameter_value(spec.default)
    try:
        got = Parameter.Type.from_parameter_value(value)
    except TypeError:
        got = None
    if got != want:
        hint = ""
        if want == Parameter.Type.DOUBLE and got == Parameter.Type.INTEGER:
            hint = f" (write {value}.0: ROS does not convert integers to doubles)"
        return f"expected {_a(_TYPE_NAMES[want])}, got {_a(_type_name(value))}{hint}"
    if spec.choices and value not in spec.choices:
        return "not one of the allowed values"
    if spec.name == "device" and not _DEVICE_RE.fullmatch(str(value).strip().lower()):
        return "not a device name"
    if spec.min_value is not None and spec.max_value is not None and isinstance(value, (int, float)):
        if isinstance(value, bool):
            return ""
        lo, hi = spec.min_value, spec.max_value
        if isinstance(value, float):
            edge = math.isclose(value, lo, rel_tol=_REL_TOL) or math.isclose(value, hi, rel_tol=_REL_TOL)
            if not edge and not lo < value < hi:  # NaN fails this too, as it does in rclpy
                return "out of range"
        else:
            if not lo <= value <= hi:
                return "out of range"
            if spec.step and value not in (lo, hi) and (value - int(lo)) % spec.step:
                return "not on the step"
    return ""


#: rclpy's tolerance at the ends of a floating-point range (``Node.PARAM_REL_TOL``).
_REL_TOL = 1e-6


def invalid_message(spec: ParamSpec, value: Any, why: str) -> str:
    """The one line every refusal uses: names the parameter, the value, why and what is allowed."""
    return f"parameter '{spec.name}' = {value!r} is invalid: {why} (allowed: {allowed(spec)})"


@dataclass
class Declared:
    """What :func:`declare_checked` found.

    ``values``: the parameters' current values (an invalid override is replaced by the default, so the
    node never holds a value it cannot use); ``errors``: parameter name -> the :func:`invalid_message` of
    its rejected initial value (the node must not configure while any is left); ``unknown``: overrides
    that name no parameter of the node, with the closest known name ("" when nothing is close).
    """

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)


def _overrides(node: Node) -> dict[str, Parameter]:
    """The initial values rclpy will apply at declare time (params files, ``-p``, ``parameter_overrides``).

    rclpy keeps them in ``Node._parameter_overrides`` and has no public getter; without them a typo'd name
    cannot be reported at all (ROS ignores undeclared overrides silently), and an invalid value can only be
    caught through the exception rclpy raises, which does not carry the value.
    """
    overrides = getattr(node, "_parameter_overrides", None)
    return dict(overrides) if isinstance(overrides, dict) else {}


def declare_checked(node: Node, specs: tuple[ParamSpec, ...]) -> Declared:
    """Declare ``specs`` on ``node``, validating initial values with the live-change rules; never raises
    for a bad value.

    Why not let rclpy raise: an out-of-range or wrongly typed value in a params file would kill the whole
    process with a traceback (every node of ``scene-perception run``), and a bad choice (``input_qos:
    sensor-data``) would pass declaration and fail later in a lifecycle callback, where rclpy swallows the
    exception. Here each bad value is recorded in :attr:`Declared.errors`, the parameter keeps its default,
    and the node decides (:class:`~scene_perception.ros.node_base.PerceptionNodeBase` refuses to
    configure and reports ERROR).
    """
    overrides = _overrides(node)
    out = Declared(values={})
    for spec in specs:
        desc = spec.descriptor()
        given = overrides.get(spec.name)
        why = problem(spec, given.value) if given is not None else ""
        if not why:
            try:
                node.declare_parameter(spec.name, spec.default, desc)
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                # Only reached if rclpy's rules and problem() disagree, or the overrides were not readable.
                why = str(exc)
            else:
                value = node.get_parameter(spec.name).value
                why = problem(spec, value)
                if why:  # overrides unreadable: the bad value got in; put the default back
                    given = Parameter(spec.name, value=value)
                    node.undeclare_parameter(spec.name)
        if why:
            shown = given.value if given is not None else "?"
            out.errors[spec.name] = invalid_message(spec, shown, why)
            node.declare_parameter(spec.name, spec.default, desc, ignore_override=True)
        out.values[spec.name] = node.get_parameter(spec.name).value
    for name in overrides:
        if node.has_parameter(name) or name.startswith("qos_overrides."):
            continue  # rclpy's own parameters (use_sim_time, ...) and QoS overrides are declared elsewhere
        close = difflib.get_close_matches(name, [s.name for s in specs], n=1, cutoff=0.6)
        out.unknown[name] = close[0] if close else ""
    return out


def unknown_message(name: str, closest: str) -> str:
    """The warning for an override that names no parameter of the node (ROS itself ignores it silently)."""
    hint = f"; did you mean '{closest}'?" if closest else ""
    return f"parameter '{name}' is set but this node has no such parameter: ignored{hint}"


def declare(node: Node, specs: tuple[ParamSpec, ...]) -> dict[str, Any]:
    """Declare ``specs`` on ``node`` and return their current values (see :func:`declare_checked`, which
    also returns the rejected initial values; here they are silently replaced by the defaults)."""
    return declare_checked(node, specs).values


def applied_on_configure_reason(name: str, state: str) -> str:
    """Why a non-dynamic parameter cannot change while the node is ``state`` (not unconfigured); matches
    the descriptor's "Applied on configure."."""
    return (
        f"'{name}' is applied on configure: deactivate and clean up the node first (lifecycle; it is "
        f"{state} now), then set it"
    )


def validate(specs: tuple[ParamSpec, ...], params: list[Parameter]) -> SetParametersResult:
    """Check a set-parameters request against :func:`problem` (the declare-time rules).

    rclpy checks type and range from the descriptors before this runs; choices and device names are only
    checked here. Parameters not in ``specs`` (rclpy's own) pass.
    """
    by_name = {s.name: s for s in specs}
    for param in params:
        spec = by_name.get(param.name)
        if spec is None:
            continue
        why = problem(spec, param.value)
        if why:
            return SetParametersResult(successful=False, reason=invalid_message(spec, param.value, why))
    return SetParametersResult(successful=True)
