"""OpenCV StereoSGBM (3-way) baseline, with exactly the settings of the project notes' baseline table.

Why a module and not inline calls: the notes' numbers are only a baseline if every tool runs SGBM the
same way (block 5, P1 = 8*3*25, P2 = 32*3*25, uniqueness 10, speckle 100/2, 3-way mode) and converts its
output the same way (fixed-point /16, invalid -> NaN, half-resolution results upsampled and rescaled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["SGBMConfig", "SGBMMatcher", "num_disparities_for", "sgbm_disparity", "upsample_disparity"]


@dataclass(frozen=True)
class SGBMConfig:
    """SGBM parameters; the defaults are the notes' baseline and should not be tuned per data set.

    ``P1``/``P2`` follow OpenCV's recommended ``8 * channels * block**2`` and ``32 * channels * block**2``
    for 3-channel input (the smoothness penalties scale with the summed per-channel matching cost).
    """

    block_size: int = 5
    channels: int = 3
    uniqueness_ratio: int = 10
    speckle_window_size: int = 100
    speckle_range: int = 2
    # disp12MaxDiff: OpenCV's default (<= 0 disables the left-right check), as in the notes.
    # preFilterCap 63 (OpenCV samples' value; the notes do not list it): with it this module reproduces the
    # notes' full-resolution Aloe row exactly (EPE 1.25, bad-2 3.1 %, density 72 %, filled 15.5 %); the
    # create() default (0 -> internal 15) gives EPE 1.50 / bad-2 3.5 % instead.
    disp12_max_diff: int = 0
    pre_filter_cap: int = 63
    mode: int = cv2.STEREO_SGBM_MODE_SGBM_3WAY

    @property
    def p1(self) -> int:
        return 8 * self.channels * self.block_size**2

    @property
    def p2(self) -> int:
        return 32 * self.channels * self.block_size**2


def num_disparities_for(max_disparity: float) -> int:
    """Smallest multiple of 16 (OpenCV's requirement) covering disparities ``0 .. max_disparity``."""
    if not max_disparity > 0:
        raise ValueError(f"max_disparity must be > 0, got {max_disparity}")
    return 16 * max(1, math.ceil(float(max_disparity) / 16.0))


class SGBMMatcher:
    """A configured StereoSGBM for one disparity range and scale, reusable across pairs.

    Args:
        max_disparity: largest disparity to search, in px *of the input images* (full resolution).
        scale: 1.0 matches at input resolution; 0.5 matches on images resized to half size (INTER_AREA)
            and brings the disparity back to input size (see :meth:`__call__`).  The search range is
            scaled with the images, so ``max_disparity`` keeps its full-resolution meaning.
        config: SGBM parameters (default: the notes' baseline).
    """

    def __init__(self, max_disparity: float, scale: float = 1.0, config: SGBMConfig | None = None) -> None:
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        self.config = config or SGBMConfig()
        self.scale = float(scale)
        self.max_disparity = float(max_disparity)
        self.num_disparities = num_disparities_for(self.max_disparity * self.scale)
        c = self.config
        self._sgbm = cv2.StereoSGBM_create(
            minDisparity=0,
            numDisparities=self.num_disparities,
            blockSize=c.block_size,
            P1=c.p1,
            P2=c.p2,
            disp12MaxDiff=c.disp12_max_diff,
            preFilterCap=c.pre_filter_cap,
            uniquenessRatio=c.uniqueness_ratio,
            speckleWindowSize=c.speckle_window_size,
            speckleRange=c.speckle_range,
            mode=c.mode,
        )

    def match(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Disparity at the resolution of the given images (no rescaling), float32 px, NaN = no match.

        SGBM reports fixed-point disparities (x16) and ``(minDisparity - 1) * 16`` for pixels it rejects
        (uniqueness, speckle filter, the unsearchable left border); those become NaN so metrics and the
        hole filler see them as missing rather than as a disparity of -1.
        """
        if left.shape != right.shape:
            raise ValueError(f"left image is {left.shape} but right image is {right.shape}")
        if left.dtype != np.uint8 or right.dtype != np.uint8:
            raise ValueError(f"SGBM needs uint8 images, got {left.dtype} and {right.dtype}")
        if left.shape[1] <= self.num_disparities:
            # OpenCV does not check this: it segfaults or fails a huge allocation (opencv-python 4.x/5.0).
            raise ValueError(
                f"SGBM needs images wider than num_disparities={self.num_disparities}; got width "
                f"{left.shape[1]} (lower max_disparity or raise scale)"
            )
        raw = self._sgbm.compute(np.ascontiguousarray(left), np.ascontiguousarray(right))
        disp = raw.astype(np.float32) / np.float32(16.0)
        disp[raw < 0] = np.nan
        return disp

    def match_full_width(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """:meth:`match`, but with an answer possible in the first ``num_disparities`` columns too.

        SGBM leaves those columns empty because their full search range would reach left of the right
        image.  Here both images get ``num_disparities`` black columns on the left first, so each of
        those pixels is searched over the disparities that stay inside the real image (a match into the
        black band has no texture and loses), then the band is cut off again.  Used where SGBM's output
        is a candidate that is checked photometrically afterwards (the local refinement), not for the
        baseline's own numbers, which stay as the notes measured them.
        """
        if left.shape != right.shape:
            raise ValueError(f"left image is {left.shape} but right image is {right.shape}")
        pad = self.num_disparities

        def padded(img: np.ndarray) -> np.ndarray:
            return cv2.copyMakeBorder(np.ascontiguousarray(img), 0, 0, pad, 0, cv2.BORDER_CONSTANT, value=0)

        return self.match(padded(left), padded(right))[:, pad:]

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Disparity for the left image at the *input* resolution (float32 px, NaN where invalid).

        Channel order does not matter (the cost sums over channels), so RGB and BGR give the same result.
        At ``scale < 1`` the low-resolution disparity is upsampled (nearest, see
        :func:`upsample_disparity`) and multiplied by the width ratio, because disparities scale with image
        width.  Scoring then happens at full
        resolution, as in the notes.
        """
        if self.scale == 1.0:
            return self.match(left, right)
        h, w = left.shape[:2]
        size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
        small = self.match(
            cv2.resize(left, size, interpolation=cv2.INTER_AREA),
            cv2.resize(right, size, interpolation=cv2.INTER_AREA),
        )
        return upsample_disparity(small, (h, w))


def upsample_disparity(disparity: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a sparse disparity map (NaN = invalid) to ``shape`` (H, W), scaling values by the width ratio.

    Nearest-neighbour on purpose: it keeps SGBM's own values (no blending of foreground and background at
    depth edges, no NaN bleeding into neighbours, density unchanged) and it is what the notes' half-size
    baseline used -- bilinear variants measured on Aloe move bad-2 by about +-0.5 point.
    """
    h, w = shape
    disparity = np.asarray(disparity, dtype=np.float32)
    factor = np.float32(w / disparity.shape[1])
    out = cv2.resize(disparity, (w, h), interpolation=cv2.INTER_NEAREST) * factor
    return out.astype(np.float32, copy=False)


def sgbm_disparity(
    left: np.ndarray,
    right: np.ndarray,
    max_disparity: float,
    scale: float = 1.0,
    config: SGBMConfig | None = None,
) -> np.ndarray:
    """One-shot :class:`SGBMMatcher` call: float32 disparity at input resolution, NaN where invalid."""
    return SGBMMatcher(max_disparity, scale=scale, config=config)(left, right)
