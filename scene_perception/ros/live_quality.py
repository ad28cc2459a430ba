"""The stereo nodes' GT-free live quality (``quality.*``): one place for both matchers.

``stereo_depth`` (the network) and ``sgbm_depth`` (the OpenCV baseline) publish the same diagnostics keys,
so a user can watch both matchers degrade on the same stream with the same numbers
(:mod:`scene_perception.pipelines.quality`, docs/live_quality.md).  What differs per node is only where the
right view's disparity of the exact left-right check comes from (a second pass of the same matcher on the
mirrored, swapped pair) and on which device the assessment runs; the node hands those in.

torch (behind :mod:`scene_perception.pipelines.quality`) is imported on first use, not with this module:
the OpenCV-only ``sgbm_depth`` must not load it while its quality is off.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from scene_perception.pipelines.quality_thresholds import QualityThresholds, degraded_reasons, shown

if TYPE_CHECKING:
    from scene_perception.pipelines.quality import QualityWindow

__all__ = ["NodeQuality"]

#: The summary keys in /diagnostics ("off" while the quality is off).
KEYS = ("photometric error p50", "left-right consistent %", "vertical offset (px)",
        "vertical offset spread (px)")
#: ``stereo_depth`` only: the share of its valid pixels that the SGBM candidate confirms within 2 px.
SGBM_KEY = "SGBM-agreeing %"


class NodeQuality:
    """The window of assessed frames, the per-frame assessment and the /diagnostics summary of one node."""

    def __init__(self, window: int, second_matcher: bool = False) -> None:
        """``second_matcher``: the node's frames may come with a second matcher's disparity (the network
        node's SGBM candidate), reported as :data:`SGBM_KEY`."""
        self._size = int(window)
        self.second_matcher = bool(second_matcher)
        #: Whether the last assessed frame came with a second matcher's disparity (None before any frame).
        self.last_had_second_opinion: bool | None = None
        self._window: QualityWindow | None = None
        self.ms: collections.deque[float] = collections.deque(maxlen=100)
        self.frames = 0  # frames offered (for quality.every)

    @property
    def window(self) -> QualityWindow:
        """The assessed frames (created, and torch imported, on first use)."""
        if self._window is None:
            from scene_perception.pipelines.quality import QualityWindow

            self._window = QualityWindow(self._size)
        return self._window

    def resize(self, size: int) -> None:
        self._size = int(size)
        if self._window is not None:
            self._window.resize(self._size)

    @staticmethod
    def active(params: dict[str, Any]) -> bool:
        return bool(params["quality.enabled"]) or bool(params["quality.publish_confidence"])

    def frame(self, node: Any, left: np.ndarray, right: np.ndarray, disparity: np.ndarray, valid: np.ndarray,
              device: Any, right_disparity: Callable[[], np.ndarray], second_opinion: np.ndarray | None = None
              ) -> dict[str, np.ndarray]:
        """Assess one published frame when due; returns ``{"confidence": map}`` when it is to be published.

        ``right_disparity`` is called only for ``quality.lr_check: network`` (the matcher's second pass;
        NaN where invalid).  ``second_opinion``: another matcher's disparity of the frame (NaN = no
        answer), or None.  A failure is a ``quality_error`` problem of ``node``, never an exception."""
        p = node.params
        publish = bool(p["quality.publish_confidence"])
        if not self.active(p):
            return {}
        self.frames += 1
        if not publish and (self.frames - 1) % int(p["quality.every"]):
            return {}
        from scene_perception.pipelines.quality import QualityConfig, assess_arrays

        t0 = time.perf_counter()
        try:
            d_right = right_disparity() if p["quality.lr_check"] == "network" else None
            config = QualityConfig(vertical_range_px=int(p["quality.vertical_range"]))
            quality = assess_arrays(left, right, disparity, valid, device, d_right, config,
                                    want_confidence=publish, second_opinion=second_opinion)
        except (RuntimeError, ValueError) as exc:
            node.health.problem("quality_error", f"live quality failed on frame {node._last_stamp_ns}: {exc}")
            return {}
        self.ms.append((time.perf_counter() - t0) * 1e3)
        self.last_had_second_opinion = second_opinion is not None
        self.window.add(quality)
        if not quality.known:
            # Not a problem of the node (a blank or saturated view has nothing to score): counted, and said
            # once in a while, never averaged in as a perfect 0.
            node.health.count("quality unknown frames")
            node.get_logger().warning(
                f"live quality unknown for frame {node._last_stamp_ns}: only {quality.scored_pixels} pixels "
                "to score (valid, finite disparity, in view of the right image, left-right consistent)",
                throttle_duration_sec=max(float(p["log_throttle_seconds"]), 1e-3),
            )
        if publish and quality.confidence is not None:
            return {"confidence": quality.confidence.cpu().numpy()}
        return {}

    def status(self, params: dict[str, Any]) -> tuple[dict[str, str], str]:
        """The quality keys for /diagnostics and the WARN message ("" when within every threshold)."""
        p = params
        keys = KEYS + (SGBM_KEY,) if self.second_matcher else KEYS
        if not self.active(p):
            return {"live quality": "off (quality.enabled)", **dict.fromkeys(keys, "off")}, ""
        window = self.window
        photometric, consistent = window.photometric_p50(), window.lr_consistent() * 100.0
        vertical = window.vertical_offset_px()

        values = {
            "live quality": f"on ({p['quality.lr_check']} left-right check, every {p['quality.every']} "
                            f"frame(s), window {p['quality.window']})",
            KEYS[0]: shown(photometric, ".4f"),
            KEYS[1]: shown(consistent, ".1f"),
            KEYS[2]: shown(vertical, "+.2f"),
            KEYS[3]: shown(window.vertical_spread_px(), ".2f"),
            "quality frames": f"{len(window.frames)} ({window.unknown_frames} unknown)",
        }
        agreeing = window.sgbm_agreement() * 100.0
        if self.second_matcher:
            # Unknown, not 0, while no frame had an SGBM candidate; why, when the frames come without one.
            if not math.isfinite(agreeing) and self.last_had_second_opinion is False:
                values[SGBM_KEY] = ("n/a (no SGBM candidate: off on a GPU unless "
                                    "local_refinement.sgbm_on_accelerator; none with the refinement off or "
                                    "skipped)")
            else:
                values[SGBM_KEY] = shown(agreeing, ".1f")
        if self.ms:
            values["quality p50 (ms)"] = f"{float(np.median(self.ms)):.1f}"
        thresholds = QualityThresholds(
            photometric=float(p["quality.photometric_warn"]),
            lr_consistent_pct=float(p["quality.lr_consistent_warn"]),
            vertical_offset_px=float(p["quality.vertical_offset_warn"]),
            sgbm_agreement_pct=(float(p.get("quality.sgbm_agreement_warn", 0.0)) if self.second_matcher
                                else 0.0),
        )
        reasons = degraded_reasons(thresholds, photometric, consistent, vertical, agreeing)
        return values, ("depth quality degraded: " + "; ".join(reasons)) if reasons else ""
