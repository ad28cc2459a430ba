"""Stereo depth pipeline: rectified uint8 image pair in, disparity / uncertainty / depth / points out.

Pure numpy + torch (no ROS), so the ROS node, offline tools and tests all share exactly one code path for
padding, validity masking and the disparity -> depth conversion.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from scene_perception.engines.base import InferenceEngine
from scene_perception.engines.torch_engine import TorchEngine
from scene_perception.geometry.stereo_camera import StereoCamera
from scene_perception.pipelines import view_agreement
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.local_refinement import refine_disparity_locally, window_std
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT, LocalRefinementConfig
from scene_perception.pipelines.occlusion import occluded_by_ordering
from scene_perception.pipelines.quality import row_residual
from scene_perception.pipelines.sgbm import SGBMMatcher
from scene_perception.pipelines.validity_defaults import (
    DEFAULT_EXTEND_RANGE,
    DEFAULT_FAR_PROBABILITY,
    DEFAULT_FAR_SIGMA,
)

__all__ = [
    "AUTO_MIN_DISPARITY_PX",
    "DEFAULT_EXTEND_RANGE",
    "DEFAULT_LOCAL_REFINEMENT",
    "DeviceTimer",
    "StereoDepthPipeline",
    "StereoDepthResult",
    "scale_for_range",
]


#: SGBM candidate's search range (px) when the engine does not report its network's (lite and paper: 128).
FALLBACK_MAX_DISPARITY = 128.0
#: Window (px) of the texture measure behind ``min_texture`` (the refinement's default ZNCC window).
TEXTURE_WINDOW = 7
#: With ``max_depth`` 0 (auto), disparities at or below this (px at the input resolution) are invalid: a
#: sub-pixel disparity's error is as large as the value itself, so its depth (f*B/d: hundreds of metres up
#: to "300 km") says nothing; one pixel is the depth resolution limit a user would expect.
AUTO_MIN_DISPARITY_PX = 1.0
#: Hypothesis spacing assumed for engines that do not report ``disparity_step`` (lite's: the coarser one).
FALLBACK_DISPARITY_STEP = 4


def scale_for_range(network_max_disparity: float, wanted_max_disparity: float | None) -> float:
    """Image scale factor (<= 1) that brings ``wanted_max_disparity`` inside the network's range.

    Disparity values scale with image width: shrinking both images by ``network / wanted`` makes every
    disparity of the scene fit, and the result is scaled back.  Smaller wanted ranges need nothing.
    """
    if not wanted_max_disparity or wanted_max_disparity <= network_max_disparity:
        return 1.0
    return float(network_max_disparity) / float(wanted_max_disparity)


@dataclass
class StereoDepthResult:
    """Per-pixel outputs for the left image, all (H, W) at the input resolution.

    Attributes:
        disparity: px, float32 (raw network output, also where invalid; use ``valid``).
        disparity_std: px, float32, ``sqrt(2) * b`` of the predicted Laplace distribution.
        valid: bool mask of pixels worth publishing.
        depth: metres, float32, NaN where invalid; None without a camera.
        depth_std: metres, float32, first-order propagation of ``disparity_std``; None without a camera.
        points: (H, W, 3) float32 XYZ in the left optical frame, NaN where invalid; None without a camera
            or with ``compute_points=False``.
        inference_ms: wall time of the network forward pass alone (not pre/post-processing), so it can
            be compared across machines and with benchmark numbers.
        refinement_ms: wall time of the local refinement, its SGBM candidate included (0 when it is off);
            with the candidate overlapped (``overlap_sgbm``) only the part of SGBM's time that outlasted
            the forward pass counts here.  The far head (when on) runs in the same interval, so its time
            is included here too (0 reported when the refinement is off).
        saturated: pixels invalidated because the network's disparity sat at the top of its range (the
            true disparity may be anything larger: a near object beyond the range, never to be published
            as farther than it is).
        far: pixels the far head put beyond the matcher's range (``far_probability``; 0 when it is off).
        max_disparity: the largest disparity searched, px at the input resolution (the network's range
            divided by the scale it ran at); no valid disparity exceeds it.
        min_disparity: the effective lower bound: valid disparities are above it (``min_disparity``, raised
            by ``max_depth``).
        scale: the scale the network ran at (< 1 when the range or ``max_network_pixels`` asked for it).
        two_pass_factor: the two-pass factor the std map was multiplied by after the second refinement
            (1.0 when the pipeline refined once or not at all; its median over the frame when it is per
            pixel); the split, the floors and the scale term (``two_pass_scale_exponent``) come on top.
        two_pass_measure: the view-agreement measure that factor followed (``two_pass_std_measure``);
            NaN when none was computed.
        two_pass_per_pixel: the factor was a map, one value per pixel (``two_pass_std_pixel``), rather than
            one per frame.
        one_pass_factor: the factor the std map was multiplied by after a single refinement
            (``one_pass_std_measure``; 1.0 when it is off, or the frame was refined twice or not at all).
        one_pass_measure: the view-agreement measure that factor followed; NaN when none was computed.
        view_residual: the frame's median 1 - ZNCC at the network's disparity, at the network's resolution
            (``max_view_residual``'s measure); NaN when that gate is off.
        refinement_gated: the gate kept the network's own output: ``view_residual`` was above
            ``max_view_residual``, so nothing was refined and no std factor applied.
        far_mask: bool (H, W), the pixels the far head put beyond the matcher's range (None without a
            head): the depth image may carry them as +Inf (REP 117 "too far") instead of NaN.
        saturated_mask: bool (H, W), the pixels whose disparity sat at the top of the searched range
            (nearer than the range reaches: REP 117's -Inf "too near").
        sgbm_disparity: float32 (H, W), OpenCV SGBM's disparity at the input resolution, NaN where it gave
            no answer: the candidate the last refinement was offered (None when the frame had none: the
            candidate off, as by default on an accelerator, or the refinement off or gated).  An independent
            matcher's verdict, so live quality can score the published disparity against it
            (``quality.assess``'s ``second_opinion``).
    """

    disparity: np.ndarray
    disparity_std: np.ndarray
    valid: np.ndarray
    depth: np.ndarray | None
    depth_std: np.ndarray | None
    points: np.ndarray | None
    inference_ms: float
    refinement_ms: float = 0.0
    saturated: int = 0
    far: int = 0
    max_disparity: float = math.inf
    min_disparity: float = 0.0
    scale: float = 1.0
    two_pass_factor: float = 1.0
    two_pass_measure: float = math.nan
    two_pass_per_pixel: bool = False
    one_pass_factor: float = 1.0
    one_pass_measure: float = math.nan
    view_residual: float = math.nan
    refinement_gated: bool = False
    far_mask: np.ndarray | None = None
    saturated_mask: np.ndarray | None = None
    sgbm_disparity: np.ndarray | None = None


class DeviceTimer:
    """Wall times between :meth:`mark` calls of work queued on ``device``, without forcing a sync per mark.

    On CUDA, kernels run asynchronously: ``perf_counter`` around a call would time the launches, not the
    work.  There each mark records a CUDA event on the current stream and :meth:`elapsed_ms` (called after
    the frame's download, which waits for the device anyway) reads the event pairs.  On CPU the work is
    done when the call returns, so ``perf_counter`` is the measure.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._marks: list[float | torch.cuda.Event] = []
        self.mark()

    def mark(self) -> None:
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def elapsed_ms(self) -> list[float]:
        """Milliseconds between consecutive marks (waits for the last CUDA event)."""
        pairs = zip(self._marks, self._marks[1:], strict=False)
        if self._cuda:
            self._marks[-1].synchronize()  # type: ignore[union-attr]
            return [float(a.elapsed_time(b)) for a, b in pairs]  # type: ignore[union-attr,arg-type]
        return [(float(b) - float(a)) * 1000.0 for a, b in pairs]  # type: ignore[arg-type]


def _check_image(img: np.ndarray, side: str) -> np.ndarray:
    """Return an HxWx3 uint8 view; grey HxW (or HxWx1) is replicated, since the network expects RGB."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f"{side} image must be a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"{side} image must be uint8 (rgb8 / mono8), got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{side} image must be HxWx3 RGB or HxW grey, got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{side} image is empty: shape {img.shape}")
    return img


class StereoDepthPipeline:
    """Runs a stereo network (GC-Net style: ``model(left, right) -> (disparity, log_scale)``) on one pair.

    Args:
        model: either a network with a ``size_divisor`` attribute (put in eval mode, moved to ``device``
            and run eagerly in fp32, as before engines existed), or an
            :class:`~scene_perception.engines.base.InferenceEngine` (torch / ONNX Runtime / TensorRT),
            which brings its own device and precision. Static-shape engines must match the padded frame
            size; a :class:`~scene_perception.engines.base.PerResolutionEngine` builds one per size.
        device: torch device string for an ``nn.Module``; ignored for an engine (it has its own).
        min_disparity: disparities at or below this are invalid (too far to be trusted; 0 = infinity).
        max_depth: metres; pixels farther than this are invalid (needs the camera: the disparity floor is
            ``f*B / max_depth - doffs``). 0 = auto: disparities at or below :data:`AUTO_MIN_DISPARITY_PX`
            are invalid. The larger of the two floors applies.
        max_disparity: the scene's largest disparity (px at the input resolution); None or 0 = the
            network's range. When it exceeds the network's range the network runs on the pair shrunk by
            ``network / max_disparity`` (:func:`scale_for_range`) and the disparity is scaled back, then
            refined once more at the input resolution (validation pairs with disparities up to 192 px at
            512x256, run at 2/3 scale: non-occluded EPE 6.35 -> 5.86 px, bad-2 14.7 -> 12.7 %).
        max_network_pixels: the network runs on at most this many pixels (the pair shrunk as for the
            range, scaled back the same way): bounds the cost volume's memory on large frames. 0 = no limit.
            With a widened range (``extend_range``) it counts pixels x levels / the trained levels, so a
            frame never builds a larger cost volume than shrinking would.
        extend_range: when ``max_disparity`` exceeds the network's trained range and the engine can
            (``engine.range_multiple``: torch, and ONNX Runtime / TensorRT built per resolution), widen the
            network's cost volume to cover it (rounded up to the multiple) and run at the input resolution
            instead of shrinking the pair.
            Same weights (:meth:`GCNet.set_max_disparity` says why that works); costs about
            ``max_disparity / trained range`` x the network's time per pixel. Engines built for one fixed
            input size have a fixed range too and shrink as before.
        max_uncertainty: pixels whose disparity std (px) exceeds this are invalid.
        min_texture: pixels whose left-image grey-level std (0..1) over a :data:`TEXTURE_WINDOW` box is
            below this are invalid, as stereo_image_proc's ``texture_threshold`` does: with nothing to
            match, the disparity there is the network's guess and nothing checks it (on the lite network:
            the sky, which it puts a few metres away).  0 = off.
        far_sigma: pixels whose disparity is within this many published standard deviations of the
            disparity floor in effect (``min_disparity`` / ``max_depth`` / the automatic floor) are invalid:
            ``d - far_sigma * std <= floor``.  Their depth interval reaches past the farthest depth the node
            publishes, so the depth is not known, only "far".  This is the rule against the lite network's
            phantom sky, which it puts 1-3 px away (just above the 1 px floor) with a wide std.  0 = off.
        far_head: the learned "far" head of the stereo weights (:class:`~scene_perception.models.far_head.
            FarHead`, run on the engine's outputs at the network's resolution, before the refinement), or
            None.  Without one ``far_probability`` does nothing.
        far_probability: pixels whose far-head probability that the true disparity is <= 1 px (at the
            network's resolution) exceeds this are invalid: the sky and what else is beyond the matcher's
            range, told apart from far surfaces by the image around them.  1 = off.
        compute_points: also back-project to XYZ (skipped when no consumer needs a cloud: it costs
            a few ms at VGA).
        local_refinement: settings of the sub-pixel correction by local photometric matching
            (:mod:`~scene_perception.pipelines.local_refinement`), applied to the network's disparity on
            the engine's device; None turns it off.  Its SGBM candidate (``sgbm_candidate``) runs OpenCV
            on the CPU over ``0 .. engine.max_disparity`` (:data:`FALLBACK_MAX_DISPARITY` when the engine
            does not say), over the full width (``SGBMMatcher.match_full_width``).
        overlap_sgbm: run that SGBM candidate in a worker thread while the network runs (OpenCV and the
            engines release the GIL).  None (default) turns it on where the engine is on an accelerator:
            the CPU then idles during the forward pass and SGBM's time is hidden.  On a CPU engine the two
            would share the same cores (measured on 2 cores: no gain), so it stays off there.  The
            outputs are the same either way.

    Thread count is deliberately not set here: that is a process-wide decision for the node/tool.
    """

    def __init__(
        self,
        model: nn.Module | InferenceEngine,
        *,
        device: str = "cpu",
        min_disparity: float = 0.0,
        max_depth: float = 0.0,
        max_disparity: float | None = None,
        max_network_pixels: int = 0,
        extend_range: bool = DEFAULT_EXTEND_RANGE,
        max_uncertainty: float = float("inf"),
        min_texture: float = 0.0,
        far_sigma: float = DEFAULT_FAR_SIGMA,
        far_head: nn.Module | None = None,
        far_probability: float = DEFAULT_FAR_PROBABILITY,
        compute_points: bool = True,
        local_refinement: LocalRefinementConfig | None = DEFAULT_LOCAL_REFINEMENT,
        overlap_sgbm: bool | None = None,
    ) -> None:
        if isinstance(model, InferenceEngine):
            self.engine = model
            self.model: nn.Module | None = getattr(model, "model", None)
            # Inputs are built where the engine wants them: CUDA engines get device tensors (no host trip).
            self.device = torch.device(model.device)
        else:
            self.device = torch.device(device)
            self.model = model.to(self.device).eval()
            self.engine = TorchEngine(self.model, device=str(self.device), precision="fp32")
        self.size_divisor = int(self.engine.size_divisor)
        self.min_disparity = float(min_disparity)
        self.max_depth = float(max_depth)
        self.max_disparity = float(max_disparity) if max_disparity else None
        self.max_network_pixels = int(max_network_pixels)
        self.extend_range = bool(extend_range)
        # The trained range: engine.max_disparity follows set_max_disparity, this does not.
        self._trained_max = float(getattr(self.engine, "max_disparity", None) or FALLBACK_MAX_DISPARITY)
        self.max_uncertainty = float(max_uncertainty)
        self.min_texture = float(min_texture)
        if not far_sigma >= 0.0:
            raise ValueError(f"far_sigma must be >= 0, got {far_sigma}")
        self.far_sigma = float(far_sigma)
        self.far_head = None if far_head is None else far_head.to(self.device).float().eval()
        self.far_probability = float(far_probability)
        self.compute_points = bool(compute_points)
        self.local_refinement = local_refinement
        self.overlap_sgbm = self.device.type != "cpu" if overlap_sgbm is None else bool(overlap_sgbm)
        self._sgbm: dict[int, SGBMMatcher] = {}  # by search range: built once, reused every frame
        # One worker, made on first use; its thread ends when the pipeline is garbage-collected.
        self._sgbm_worker: ThreadPoolExecutor | None = None

    @property
    def far_probability(self) -> float:
        return self._far_probability

    @far_probability.setter
    def far_probability(self, value: float) -> None:
        # Checked on every assignment: the ROS node sets it live from a parameter.
        if not 0.0 < value <= 1.0:
            raise ValueError(f"far_probability must be in (0, 1] (1 = off), got {value}")
        self._far_probability = float(value)

    def _far(self, left: torch.Tensor, disparity: torch.Tensor, log_scale: torch.Tensor
             ) -> torch.Tensor | None:
        """The far head's verdict (bool, like ``disparity``) on the network's outputs, or None when off."""
        if self.far_head is None or self._far_probability >= 1.0:
            return None
        p = self._far_probability
        return self.far_head(left, disparity, log_scale) > math.log(p / (1.0 - p))

    @property
    def _wants_candidate(self) -> bool:
        cfg = self.local_refinement
        if cfg is None or not cfg.sgbm_candidate:
            return False
        return self.device.type == "cpu" or cfg.sgbm_on_accelerator

    def _sgbm_disparity(self, left: np.ndarray, right: np.ndarray, max_disparity: float | None) -> np.ndarray:
        """SGBM's disparity for the candidate (float32 (H, W), NaN = no answer), on the CPU.  Called from
        the worker thread when overlapped; the caller waits for that result before anything else uses
        the matchers, so one matcher never runs twice at once."""
        if max_disparity is None:
            max_disparity = float(getattr(self.engine, "max_disparity", None) or FALLBACK_MAX_DISPARITY)
        key = int(math.ceil(max_disparity))
        matcher = self._sgbm.get(key)
        if matcher is None:
            matcher = self._sgbm[key] = SGBMMatcher(float(key))
        return matcher.match_full_width(left, right)

    def _start_candidate(self, left: np.ndarray, right: np.ndarray) -> Future[np.ndarray] | None:
        """Start the SGBM candidate in the worker thread when it is to overlap the forward pass."""
        if not (self.overlap_sgbm and self._wants_candidate):
            return None
        if self._sgbm_worker is None:
            self._sgbm_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgbm_candidate")
        return self._sgbm_worker.submit(self._sgbm_disparity, left, right, None)

    def _candidate(
        self, left: np.ndarray, right: np.ndarray, max_disparity: float | None,
        started: Future[np.ndarray] | None = None,
    ) -> tuple[torch.Tensor | None, np.ndarray | None]:
        """SGBM's disparity as a (1, 1, H, W) device tensor for the refinement (from ``started`` when
        :meth:`_start_candidate` began it) and as the host array it came from; (None, None) when the
        setting has no SGBM candidate."""
        if not self._wants_candidate:
            return None, None
        sgbm = started.result() if started is not None else self._sgbm_disparity(left, right, max_disparity)
        return torch.from_numpy(sgbm).to(self.device)[None, None], sgbm

    def _refine(
        self, left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor, log_scale: torch.Tensor,
        candidate: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The local refinement (if on) of (1, 1, H, W) disparity and log-scale tensors on the device, with
        the mask of the pixels it changed (None when off)."""
        cfg = self.local_refinement
        if cfg is None:
            return disparity, log_scale, None
        refined, changed = refine_disparity_locally(left, right, disparity, cfg, candidate)
        if cfg.uncertainty_scale != 1.0:
            log_scale = torch.where(changed, log_scale + math.log(cfg.uncertainty_scale), log_scale)
        if cfg.correction_std > 0:
            # std = sqrt(2) * exp(log_scale) >= correction_std * |delta|; 0 (or NaN) delta sets no floor.
            floor = torch.nan_to_num(cfg.correction_std * (refined - disparity).abs(), nan=0.0)
            log_scale = torch.maximum(log_scale, torch.log(floor / math.sqrt(2.0)))
        return refined, log_scale, changed

    def _two_pass_std(
        self, log_scale: torch.Tensor, left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor,
        before: torch.Tensor, candidate: torch.Tensor | None = None, changed: torch.Tensor | None = None,
        scale: float = 1.0,
    ) -> tuple[torch.Tensor, float, float, bool]:
        """The frame's log-scale after the second refinement, times the two-pass factor (in log), with the
        factor (its median over the frame when it is per pixel), the view-agreement measure it followed
        (NaN when none) and whether the factor was per pixel.

        Only the two-refinement path (network below full scale) calls this: each refinement shrinks the
        std of the pixels it changed, so there most pixels get ``uncertainty_scale`` twice and the std is
        over-confident.  One factor per frame restores its size without reordering it (AUSE and Spearman
        unchanged within the frame); with ``two_pass_std_measure`` it follows a GT-free measure of how well
        the views agree, with ``two_pass_std_pixel`` also what the matching shows at each pixel
        (``view_agreement.py``; ``before`` is the disparity the second refinement started from,
        ``candidate`` the SGBM disparity it was offered).  Then the split by the second refinement's
        ``changed`` mask (:meth:`_two_pass_split`), the floors, and last the scale term ``(scale /
        two_pass_scale_reference)^two_pass_scale_exponent`` (``scale`` the network's).  Factor 1, no
        split, no floor and no scale term return the input itself."""
        cfg = self.local_refinement
        if cfg is None:
            return log_scale, 1.0, math.nan, False
        log_factor, value = view_agreement.two_pass_log_factor(cfg, left, right, disparity, before,
                                                                   candidate)
        if changed is not None:
            log_scale = self._two_pass_split(log_scale, changed)
        per_pixel = isinstance(log_factor, torch.Tensor)
        # The constant floor belongs to the per-pixel form (rule_pixel5); the row floor to both.
        constant_floor = cfg.two_pass_std_floor if per_pixel else 0.0
        floor = math.hypot(constant_floor, self._row_floor(left, right, disparity))
        if per_pixel or log_factor != 0.0:
            log_scale = log_scale + log_factor
        log_scale = view_agreement.floored_log_scale(log_scale, floor)
        if cfg.two_pass_scale_exponent != 0.0:
            term = cfg.two_pass_scale_exponent * math.log(scale / cfg.two_pass_scale_reference)
            log_scale = log_scale + term
        factor = float(torch.exp(log_factor.median())) if per_pixel else math.exp(log_factor)
        return log_scale, factor, value, per_pixel

    def _row_floor(self, left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor) -> float:
        """The std floor (px) of a frame refined twice that follows its GT-free row residual ``r``
        (``quality.row_residual`` at the refined ``disparity``): ``a * sqrt(max(r^2 - r0^2, 0))`` with ``a``
        = ``two_pass_row_floor``, ``r0`` = ``two_pass_row_noise``; 0 when off or ``r`` is unknown."""
        cfg = self.local_refinement
        if cfg is None or cfg.two_pass_row_floor <= 0.0:
            return 0.0
        finite = torch.isfinite(disparity)
        r = float(row_residual(left.contiguous(), right.contiguous(), disparity, finite)[0])
        if not math.isfinite(r):
            return 0.0
        return cfg.two_pass_row_floor * math.sqrt(max(r * r - cfg.two_pass_row_noise ** 2, 0.0))

    def _two_pass_split(self, log_scale: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        """The two-pass log-scale with ``two_pass_changed_scale`` where the second refinement changed the
        pixel (``changed``) and ``two_pass_unchanged_scale`` elsewhere; both 1: the input itself."""
        cfg = self.local_refinement
        if cfg is None or (cfg.two_pass_changed_scale == 1.0 and cfg.two_pass_unchanged_scale == 1.0):
            return log_scale
        return log_scale + torch.where(changed, math.log(cfg.two_pass_changed_scale),
                                       math.log(cfg.two_pass_unchanged_scale))

    def _view_gate(self, left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor
                   ) -> tuple[float, bool]:
        """(the frame's view residual, whether to skip the refinement) by ``max_view_residual``: the median
        1 - ZNCC at the network's own disparity (``view_agreement.zncc_residual``).  Off, or not measurable
        (NaN): (NaN or the value, False)."""
        cfg = self.local_refinement
        if cfg is None or cfg.max_view_residual <= 0.0:
            return math.nan, False
        value = view_agreement.zncc_residual(left, right, disparity, cfg)
        return value, bool(value > cfg.max_view_residual)

    def _one_pass_std(
        self, log_scale: torch.Tensor, left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor,
        changed: torch.Tensor,
    ) -> tuple[torch.Tensor, float, float]:
        """The frame's log-scale after its single refinement, with the one-pass factor (in log) on every
        pixel or, with ``one_pass_std_pixels`` ``changed``, on the ``changed`` ones only, and
        ``one_pass_unchanged_scale`` on the pixels the refinement left alone; returns it with the factor
        and the measure it followed (NaN when none).  The factor is one number per frame
        (``view_agreement.one_pass_factor``), so in the ``all`` form without an unchanged scale the order of
        the pixels within the frame (AUSE) is unchanged.  Factor and scale 1: the input itself."""
        cfg = self.local_refinement
        if cfg is None:
            return log_scale, 1.0, math.nan
        factor, value = 1.0, math.nan
        if cfg.one_pass_std_measure != "none":
            value = view_agreement.measure(cfg.one_pass_std_measure, left, right, disparity, cfg)
            factor = view_agreement.one_pass_factor(value, cfg)
        unchanged = cfg.one_pass_unchanged_scale
        if cfg.one_pass_std_pixels == "all":
            if factor != 1.0:
                log_scale = log_scale + math.log(factor)
        elif factor != 1.0:  # changed pixels only
            log_scale = torch.where(changed, log_scale + math.log(factor), log_scale)
        if unchanged != 1.0:
            log_scale = torch.where(changed, log_scale, log_scale + math.log(unchanged))
        return log_scale, factor, value

    def _occlusion_std(self, log_scale: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
        """``occlusion_std_scale`` (in log) where the refined ``disparity`` is hidden from the right camera
        (``pipelines/occlusion.py``); the input itself when the refinement is off or the scale is 1."""
        cfg = self.local_refinement
        if cfg is None or cfg.occlusion_std_scale == 1.0:
            return log_scale
        hidden = occluded_by_ordering(disparity)
        return torch.where(hidden, log_scale + math.log(cfg.occlusion_std_scale), log_scale)

    def refine(
        self, left: np.ndarray, right: np.ndarray, disparity: np.ndarray, disparity_std: np.ndarray,
        max_disparity: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply this pipeline's local refinement to a disparity estimated elsewhere (e.g. at a lower
        resolution and scaled up), with its std treated as the network's; returns float32 (H, W) arrays.
        ``max_disparity`` is the SGBM candidate's search range at this resolution (default: the
        engine's).  Without a refinement setting the inputs come back unchanged."""
        left, right = _check_image(left, "left"), _check_image(right, "right")
        size = left.shape[:2]
        if right.shape != left.shape or disparity.shape != size or disparity_std.shape != size:
            raise ValueError(f"refine needs equal-sized images and maps, got {left.shape}, {right.shape}, "
                             f"{disparity.shape}, {disparity_std.shape}")

        def to_device(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)[None, None]

        with torch.inference_mode():
            log_scale = torch.log(to_device(disparity_std) / math.sqrt(2.0))  # std 0 -> -inf -> std 0 again
            left_t, right_t = image_to_tensor(left, self.device), image_to_tensor(right, self.device)
            candidate, _ = self._candidate(left, right, max_disparity)
            d, log_scale, _ = self._refine(left_t, right_t, to_device(disparity), log_scale, candidate)
            out_std = math.sqrt(2.0) * torch.exp(log_scale)
            return d[0, 0].cpu().numpy(), out_std[0, 0].cpu().numpy()

    def __call__(
        self, left: np.ndarray, right: np.ndarray, camera: StereoCamera | None = None
    ) -> StereoDepthResult:
        """Estimate disparity (and, with a camera, depth and points) for the left image.

        Raises:
            ValueError: wrong dtype / channels, left and right shapes differ, or the camera's image size
                does not match (use ``camera.scaled`` when running on resized images).
        """
        left = _check_image(left, "left")
        right = _check_image(right, "right")
        if left.shape != right.shape:
            raise ValueError(
                f"left and right images differ in size: {left.shape[1]}x{left.shape[0]} vs "
                f"{right.shape[1]}x{right.shape[0]} (a rectified pair must match)"
            )
        h, w = left.shape[:2]
        if camera is not None and (camera.width, camera.height) != (w, h):
            raise ValueError(
                f"camera is for {camera.width}x{camera.height} images but the pair is {w}x{h}; "
                "use camera.scaled(sx, sy) for resized images"
            )

        scale, network_range = self.network_plan(h, w)
        if getattr(self.engine, "range_multiple", None) and self.engine.max_disparity != network_range:
            self.engine.set_max_disparity(int(network_range))
        two_pass_factor, two_pass_measure, two_pass_per_pixel = 1.0, math.nan, False
        one_pass_factor, one_pass_measure = 1.0, math.nan
        sgbm: np.ndarray | None = None
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            left_n = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
            right_n = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
        else:
            left_n, right_n = left, right
        hn, wn = left_n.shape[:2]
        factor = w / wn  # input px per network px (1.0 unscaled)
        network_max = float(network_range)
        searched_max = network_max * factor

        div = self.size_divisor
        pad_h, pad_w = (-hn) % div, (-wn) % div
        with torch.inference_mode():
            pair = torch.cat([image_to_tensor(left_n, self.device), image_to_tensor(right_n, self.device)])
            if pad_h or pad_w:
                # Replicate, not zeros: a black border would be matched as a strong (false) edge and
                # pull the disparity of the last real columns/rows.
                pair = F.pad(pair, (0, pad_w, 0, pad_h), mode="replicate")
            # Compiled engines build/load for a new size here, outside the timed region.
            self.engine.prepare((hn + pad_h, wn + pad_w))
            started = self._start_candidate(left_n, right_n)
            timer = DeviceTimer(self.device)
            out = self.engine.infer({"left": pair[:1], "right": pair[1:]})
            timer.mark()  # the forward pass
            disparity_t = torch.as_tensor(out["disparity"])[:, :, :hn, :wn].float().to(pair.device)
            log_scale_t = torch.as_tensor(out["log_scale"])[:, :, :hn, :wn].float().to(pair.device)
            # At the top of the range the soft arg-min is saturated: the true disparity may be larger.
            step = float(getattr(self.engine, "disparity_step", None) or FALLBACK_DISPARITY_STEP)
            saturated_t = disparity_t >= network_max - 1.5 * step
            left_t, right_t = pair[:1, :, :hn, :wn], pair[1:, :, :hn, :wn]
            far_t = self._far(left_t, disparity_t, log_scale_t)
            view_residual, gated = self._view_gate(left_t, right_t, disparity_t)
            if not gated:  # a gated frame drops its SGBM candidate (a started one finishes unused)
                candidate, sgbm = self._candidate(left_n, right_n, None, started)
                disparity_t, log_scale_t, changed_t = self._refine(left_t, right_t, disparity_t, log_scale_t,
                                                                   candidate)
            if scale < 1.0:
                disparity_t, log_scale_t, saturated_t = _upsample(disparity_t, log_scale_t, saturated_t, h, w)
                if far_t is not None:
                    far_t = _upsample_mask(far_t, h, w)
                left_t, right_t = image_to_tensor(left, self.device), image_to_tensor(right, self.device)
                if self.local_refinement is not None and not gated:
                    # Scaling up multiplies the sub-pixel error by 1 / scale: refine once more at full size.
                    candidate, sgbm = self._candidate(left, right, searched_max)
                    before = disparity_t
                    disparity_t, log_scale_t, changed_t = self._refine(left_t, right_t, disparity_t,
                                                                       log_scale_t, candidate)
                    log_scale_t, two_pass_factor, two_pass_measure, two_pass_per_pixel = self._two_pass_std(
                        log_scale_t, left_t, right_t, disparity_t, before, candidate, changed_t, scale)
            elif not gated:
                log_scale_t, one_pass_factor, one_pass_measure = self._one_pass_std(
                    log_scale_t, left_t, right_t, disparity_t, changed_t)
            if not gated:
                log_scale_t = self._occlusion_std(log_scale_t, disparity_t)
            timer.mark()  # the local refinement, its SGBM candidate (or the part not overlapped) included
            min_disparity = self.effective_min_disparity(camera)
            outputs = self._finish(disparity_t[0, 0], log_scale_t[0, 0], saturated_t[0, 0], left_t, camera,
                                   min_disparity, searched_max, None if far_t is None else far_t[0, 0])
            # The only host transfer of the frame (the first copy waits for the device to finish).
            host = {k: None if v is None else v.cpu().numpy() for k, v in outputs.items()}
            inference_ms, refinement_ms = timer.elapsed_ms()
        return StereoDepthResult(
            host["disparity"], host["disparity_std"], host["valid"], host["depth"], host["depth_std"],
            host["points"], inference_ms, refinement_ms if self.local_refinement else 0.0,
            saturated=int(host["saturated"].sum()), far=0 if host["far"] is None else int(host["far"].sum()),
            max_disparity=searched_max, min_disparity=min_disparity,
            scale=scale, two_pass_factor=two_pass_factor, two_pass_measure=two_pass_measure,
            two_pass_per_pixel=two_pass_per_pixel, one_pass_factor=one_pass_factor,
            one_pass_measure=one_pass_measure, view_residual=view_residual, refinement_gated=gated,
            far_mask=host["far"], saturated_mask=host["saturated"],
            sgbm_disparity=sgbm if sgbm is None or sgbm.shape == (h, w) else None,
        )

    @property
    def network_max_disparity(self) -> float:
        """The network's trained disparity range in px at the resolution it runs at."""
        return self._trained_max

    def network_scale(self, height: int, width: int) -> float:
        """The scale (<= 1) the network runs at for a ``height`` x ``width`` pair (:meth:`network_plan`)."""
        return self.network_plan(height, width)[0]

    def network_plan(self, height: int, width: int) -> tuple[float, int]:
        """(scale <= 1, range in network px) the network runs with for a ``height`` x ``width`` pair.

        Without a widened range: the trained range, at the scale the scene's ``max_disparity`` needs,
        lowered further to keep within ``max_network_pixels``. With ``extend_range`` (and an engine that
        can): the range rounded up to cover ``max_disparity`` at full size; if that volume (pixels x
        levels / trained levels) exceeds the budget, the pair shrinks by ``s`` with the range shrinking
        along (volume ~ s^3), down to the trained range, below which only pixels shrink (~ s^2).
        """
        trained = self._trained_max
        budget = float(self.max_network_pixels)
        pixels = float(height * width)
        multiple = getattr(self.engine, "range_multiple", None)
        wanted = self.max_disparity or trained
        if self.extend_range and multiple and wanted > trained:

            def cover(value: float) -> int:
                return max(int(trained), int(math.ceil(value / multiple - 1e-9)) * multiple)

            scale = 1.0
            if budget > 0 and pixels * cover(wanted) / trained > budget:
                scale = (budget * trained / (pixels * wanted)) ** (1.0 / 3.0)
            if wanted * scale > trained:  # else the budget allows no more than the trained range: shrink
                # Rounding the range up to the multiple may overshoot the budget: shrink a little more.
                while budget > 0 and pixels * scale * scale * cover(wanted * scale) / trained > budget:
                    scale *= 0.99
                return scale, cover(wanted * scale)
        scale = scale_for_range(trained, self.max_disparity)
        if budget > 0 and pixels * scale * scale > budget:
            scale = math.sqrt(budget / pixels)
        return scale, int(trained)

    def effective_min_disparity(self, camera: StereoCamera | None) -> float:
        """The disparity floor in effect (px): ``min_disparity``, raised by ``max_depth``."""
        floor = self.min_disparity
        if self.max_depth == 0.0:
            floor = max(floor, AUTO_MIN_DISPARITY_PX)
        elif camera is not None and math.isfinite(self.max_depth) and self.max_depth > 0:
            floor = max(floor, camera.focal_baseline / self.max_depth - camera.doffs)
        return floor

    def _finish(
        self, disparity: torch.Tensor, log_scale: torch.Tensor, saturated: torch.Tensor, left: torch.Tensor,
        camera: StereoCamera | None, min_disparity: float, max_disparity: float,
        far: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Std-dev, validity, depth and points from the (H, W) disparity and log-scale, on their device."""
        w = disparity.shape[-1]
        disparity_std = math.sqrt(2.0) * torch.exp(log_scale)
        columns = torch.arange(w, dtype=torch.float32, device=disparity.device)
        # d > x would match a pixel left of the right image's first column: an extrapolation.
        valid = (
            torch.isfinite(disparity)
            & (disparity > min_disparity)
            & (disparity <= columns)
            & (disparity <= max_disparity)
            & ~saturated
            & (disparity_std <= self.max_uncertainty)
        )
        if self.far_sigma > 0:
            valid &= disparity - self.far_sigma * disparity_std > min_disparity
        if self.min_texture > 0:
            valid &= window_std(left, TEXTURE_WINDOW)[0, 0] >= self.min_texture
        if far is not None:
            valid &= ~far
        depth = depth_std = points = None
        if camera is not None:
            masked = torch.where(valid, disparity, float("nan"))
            depth = camera.disparity_to_depth(masked, min_disparity)
            # The camera may reject more (d + doffs <= 0): keep valid, depth and points consistent.
            valid &= torch.isfinite(depth)
            masked = torch.where(valid, disparity, float("nan"))
            depth_std = camera.depth_std(masked, disparity_std, min_disparity)
            if self.compute_points:
                points = camera.points(masked, min_disparity)
        return {"disparity": disparity, "disparity_std": disparity_std, "valid": valid, "depth": depth,
                "depth_std": depth_std, "points": points, "saturated": saturated, "far": far}


def _upsample(
    disparity: torch.Tensor, log_scale: torch.Tensor, saturated: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1, 1, h, w) network-scale maps to the input size: disparity values (and the Laplace scale) grow
    with the width; saturation is a per-pixel flag (nearest)."""
    factor = width / disparity.shape[-1]
    size = (height, width)
    disparity = F.interpolate(disparity, size=size, mode="bilinear", align_corners=False) * factor
    log_scale = F.interpolate(log_scale, size=size, mode="bilinear", align_corners=False) + math.log(factor)
    return disparity, log_scale, _upsample_mask(saturated, height, width)


def _upsample_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A (1, 1, h, w) per-pixel flag at the input size (nearest: a flag is not interpolated)."""
    return F.interpolate(mask.float(), size=(height, width), mode="nearest") > 0.5
