"""Training-time augmentation of rectified stereo pairs: what real cameras do that the renderer does not.

The procedural renderer makes photometrically clean pairs (``nuisance`` adds only per-view gain/bias/noise).
Real pairs also differ in gamma and saturation between the two cameras, are blurred and JPEG-compressed, are
never perfectly rectified (sub-pixel vertical offsets) and contain regions one camera sees and the other does
not.  These are the usual robustness augmentations of stereo training (RAFT-Stereo's asymmetric chromatic,
y-jitter and eraser transforms, plus compression); they were chosen before looking at any real evaluation
image.
The ground-truth disparity is unchanged by all of them: they alter appearance, not geometry (the eraser and
y-jitter act on the right view only, so the left view's disparity still holds).

All functions take and return HxWx3 uint8 arrays and draw randomness only from the ``rng`` passed in, so a
dataset item stays a pure function of its index (exact resume of a training run).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CAMERA_EFFECTS", "VIEW_EFFECTS", "AugmentConfig", "augment_pair", "rig_residual",
           "view_effects_pair"]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each transform (defaults in the range RAFT-Stereo trains with)."""

    asymmetric_colour: float = 0.5  # probability that the two views get different colour transforms
    gamma: tuple[float, float] = (0.8, 1.25)
    saturation: tuple[float, float] = (0.7, 1.3)
    blur: float = 0.3  # probability of a Gaussian blur (same sigma for both views)
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    jpeg: float = 0.5  # probability of JPEG compression (each view its own quality)
    jpeg_quality: tuple[int, int] = (40, 95)
    y_jitter: float = 0.3  # probability of a vertical sub-pixel shift of the right view
    y_jitter_px: float = 1.0
    eraser: float = 0.5  # probability of 1-2 mean-coloured rectangles on the right view
    eraser_size: tuple[int, int] = (20, 60)
    # Camera effects between the two views (issue 22), off by default so ``--augment`` keeps drawing
    # exactly the transforms of earlier versions; ``CAMERA_EFFECTS`` turns them on
    # (``train stereo --camera-effects``).
    vignetting: float = 0.0  # probability; each view then gets its own radial fall-off
    vignetting_strength: tuple[float, float] = (0.1, 0.45)  # brightness lost in the corners
    white_balance: float = 0.0  # probability; each view then gets its own per-channel gains
    white_balance_gain: tuple[float, float] = (0.85, 1.15)


def _vignette(rng: np.random.Generator, img: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    """Radial fall-off ``1 - s * r^2`` around a centre near the image centre (r = 1 at the corners)."""
    h, w = img.shape[:2]
    strength = float(rng.uniform(*cfg.vignetting_strength))
    cy, cx = (h - 1) / 2 + rng.uniform(-0.1, 0.1) * h, (w - 1) / 2 + rng.uniform(-0.1, 0.1) * w
    y, x = np.ogrid[0:h, 0:w]
    r2 = ((x - cx) ** 2 + (y - cy) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    gain = (1.0 - strength * np.minimum(r2, 1.5)).astype(np.float32)
    return np.clip(img.astype(np.float32) * gain[..., None] + 0.5, 0, 255).astype(np.uint8)


def _white_balance(rng: np.random.Generator, img: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    gains = rng.uniform(*cfg.white_balance_gain, 3).astype(np.float32)
    return np.clip(img.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8)


def _colour_params(rng: np.random.Generator, cfg: AugmentConfig) -> tuple[float, float]:
    """(gamma, saturation): the two chromatic differences gain/bias (``nuisance``) cannot express."""
    return float(rng.uniform(*cfg.gamma)), float(rng.uniform(*cfg.saturation))


def _colour(img: np.ndarray, gamma: float, saturation: float) -> np.ndarray:
    x = np.power(img.astype(np.float32) / 255.0, np.float32(gamma))
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * np.float32(saturation)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _jpeg(rng: np.random.Generator, img: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        return img
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).reshape(img.shape)


def _shift_y(img: np.ndarray, dy: float) -> np.ndarray:
    m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, dy]], np.float32)
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def _erase(rng: np.random.Generator, img: np.ndarray, cfg: AugmentConfig) -> np.ndarray:
    out = img.copy()
    h, w = img.shape[:2]
    mean = img.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        eh, ew = (int(rng.integers(cfg.eraser_size[0], cfg.eraser_size[1] + 1)) for _ in range(2))
        eh, ew = min(eh, h), min(ew, w)
        y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
        out[y0:y0 + eh, x0:x0 + ew] = mean
    return out


def augment_pair(
    rng: np.random.Generator, left: np.ndarray, right: np.ndarray, cfg: AugmentConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the transforms of ``cfg`` to a uint8 RGB pair; the disparity of ``left`` stays valid."""
    cfg = cfg or AugmentConfig()
    for name, img in (("left", left), ("right", right)):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{name} must be HxWx3 uint8, got {img.dtype} {img.shape}")
    if left.shape != right.shape:
        raise ValueError(f"left {left.shape} and right {right.shape} differ")
    asymmetric = rng.random() < cfg.asymmetric_colour
    params = _colour_params(rng, cfg)
    left = _colour(left, *params)
    if asymmetric:  # else the same transform on both views
        params = _colour_params(rng, cfg)
    right = _colour(right, *params)
    if rng.random() < cfg.blur:
        sigma = float(rng.uniform(*cfg.blur_sigma))
        left = cv2.GaussianBlur(left, (0, 0), sigma)
        right = cv2.GaussianBlur(right, (0, 0), sigma)
    if rng.random() < cfg.jpeg:
        left, right = _jpeg(rng, left, cfg), _jpeg(rng, right, cfg)
    if rng.random() < cfg.y_jitter:
        right = _shift_y(right, float(rng.uniform(-cfg.y_jitter_px, cfg.y_jitter_px)))
    if rng.random() < cfg.eraser:
        right = _erase(rng, right, cfg)
    # New transforms draw only when enabled, so the pairs of earlier configurations stay bit-identical.
    if cfg.white_balance > 0 and rng.random() < cfg.white_balance:
        left, right = _white_balance(rng, left, cfg), _white_balance(rng, right, cfg)
    if cfg.vignetting > 0 and rng.random() < cfg.vignetting:
        left, right = _vignette(rng, left, cfg), _vignette(rng, right, cfg)
    return np.ascontiguousarray(left), np.ascontiguousarray(right)


# ``--augment`` plus per-view vignetting and white balance on half the pairs each.
CAMERA_EFFECTS = AugmentConfig(vignetting=0.5, white_balance=0.5)
#: What a camera does to the views and nothing else: ``CAMERA_EFFECTS`` without the eraser (which paints over
#: the right view to teach occlusions).  Evaluation renders "as a camera would see them" use it.
VIEW_EFFECTS = AugmentConfig(eraser=0.0, vignetting=0.5, white_balance=0.5)


def view_effects_pair(seed: int, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``augment_pair`` with :data:`VIEW_EFFECTS`, its generator seeded by ``seed`` alone: the same pair comes
    out of every benchmark that renders seed ``seed`` "through a camera"."""
    return augment_pair(np.random.default_rng([seed, 0x7A3E]), left, right, VIEW_EFFECTS)


def rig_residual(seed: int, image: np.ndarray, sigma: float, grid: tuple[int, int] = (4, 8)) -> np.ndarray:
    """``image`` (the right view) warped by a smooth random displacement field, horizontal and vertical, each
    of RMS ``sigma`` px: the sub-pixel residual a real rig keeps after calibration and rectification.

    **An evaluation effect, not a training augmentation, and unlike everything above it moves geometry**: a
    pair with it, scored against the ideal rig's GT, is off by the field's horizontal part, as a real rig's
    disparity is against GT measured another way (issue 25, ``rule_pixel5.md``: the floor under the
    two-pass std).  Per axis: Gaussian noise on a ``grid`` (rows, columns), seeded by ``seed`` alone,
    upsampled bicubically to the image and scaled to RMS ``sigma``."""
    rng = np.random.default_rng([seed, 0x51D])
    h, w = image.shape[:2]
    fields = []
    for _ in range(2):
        coarse = rng.standard_normal(grid).astype(np.float32)
        field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        rms = float(np.sqrt(np.mean(field ** 2)))
        fields.append(field * (sigma / rms) if rms > 0 else np.zeros_like(field))
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, xs + fields[0], ys + fields[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
