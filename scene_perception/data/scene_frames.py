"""Frames of the synthetic street world as multi-task training/evaluation arrays, cached as safetensors.

Why a cache: rendering one 96x192 frame takes ~40 ms, but every training variant and every benchmark sees
the same frames, and a cached set makes the "held-out" set an explicit, reproducible file.  The cache file
name encodes everything that defines the set (seeds, frames, size, spacing, textures, nuisance), so a
changed request never silently reuses an old file.  The cache is safetensors (numpy), not .npz: the
library never calls ``np.load`` (test_security scans for it), and the format cannot carry code.

Targets per frame (left view): ``semantic`` uint8 class ids, ``instance`` uint16 ids (0 = stuff),
``inv_depth`` float32 1/m (0 for the sky at infinity, so every pixel has a target).  Centroid offsets are
derived from ``instance`` on the fly (:func:`scene_perception.pipelines.instances.centroid_offsets`), so a
horizontal flip stays exact.

Frames of a downloaded dataset (:func:`dataset_scene_frames`, Cityscapes for ``train scene --dataset``) use
the same arrays with two unknown markers the synthetic frames never contain: ``semantic`` 255 (ignored
label) and ``inv_depth`` NaN (no depth: a hole of the dataset's disparity, or no disparity at all); their
``seeds`` are -1.  The loss masks those pixels out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SceneFrames", "concat_scene_frames", "dataset_scene_frames", "load_scene_frames",
           "render_scene_frames", "seed_range"]

_LOG = logging.getLogger(__name__)


@dataclass
class SceneFrames:
    """N frames: images (N, H, W, 3) uint8, semantic (N, H, W) uint8, instance (N, H, W) uint16,
    inv_depth (N, H, W) float32 1/m; ``seeds`` (N,) the world seed of each frame."""

    images: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    inv_depth: np.ndarray
    seeds: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])


def seed_range(spec: str) -> list[int]:
    """``"1000:1040"`` -> [1000 .. 1039]; ``"1,2,5"`` -> [1, 2, 5]."""
    spec = spec.strip()
    if ":" in spec:
        lo, hi = (int(v) for v in spec.split(":", 1))
        if hi <= lo:
            raise ValueError(f"empty seed range {spec!r}")
        return list(range(lo, hi))
    return [int(v) for v in spec.split(",") if v.strip()]


def render_scene_frames(seeds: Sequence[int], frames_per_seed: int, height: int, width: int, *,
                        spacing_m: float = 6.0, nuisance: bool = True, texture_dir: str | None = None,
                        progress: bool = False) -> SceneFrames:
    """Render ``frames_per_seed`` frames ``spacing_m`` metres apart from each world seed."""
    from scene_perception.data.world import generate_sequence

    if frames_per_seed < 1 or height < 1 or width < 1 or spacing_m <= 0:
        raise ValueError("frames_per_seed, height, width and spacing_m must be positive")
    speed = 8.0
    fps = speed / spacing_m
    n = len(seeds) * frames_per_seed
    images = np.zeros((n, height, width, 3), np.uint8)
    semantic = np.zeros((n, height, width), np.uint8)
    instance = np.zeros((n, height, width), np.uint16)
    inv_depth = np.zeros((n, height, width), np.float32)
    seed_of = np.zeros(n, np.int64)
    from tqdm import tqdm

    bar = tqdm(total=n, disable=not progress, desc="render", dynamic_ncols=True)
    i = 0
    for seed in seeds:
        for frame in generate_sequence(int(seed), frames_per_seed, width, height, fps=fps, speed=speed,
                                       nuisance=nuisance, texture_dir=texture_dir):
            images[i] = frame.left
            semantic[i] = frame.semantic
            instance[i] = frame.instance
            with np.errstate(divide="ignore"):
                inv = np.where(np.isfinite(frame.depth) & (frame.depth > 0), 1.0 / frame.depth, 0.0)
            inv_depth[i] = inv.astype(np.float32)
            seed_of[i] = int(seed)
            i += 1
            bar.update(1)
    bar.close()
    return SceneFrames(images, semantic, instance, inv_depth, seed_of)


def load_scene_frames(seeds: Sequence[int], frames_per_seed: int, height: int, width: int, *,
                      cache_dir: str | Path | None = "runs/scene_data", spacing_m: float = 6.0,
                      nuisance: bool = True, texture_dir: str | None = None,
                      progress: bool = False) -> SceneFrames:
    """:func:`render_scene_frames`, read from / written to ``cache_dir`` (None: no cache; rendering
    the default 2000 training frames at 96x192 takes a few minutes, the cache file is ~370 MB)."""
    key = {"seeds": [int(s) for s in seeds], "frames": int(frames_per_seed),
           "size": [int(height), int(width)], "spacing_m": float(spacing_m), "nuisance": bool(nuisance),
           "texture_dir": texture_dir, "format": 1}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = None
    if cache_dir is not None:
        lo, hi = min(key["seeds"]), max(key["seeds"])
        name = f"world_{lo}-{hi}_{len(seeds)}x{frames_per_seed}_{height}x{width}_{digest}.safetensors"
        path = Path(cache_dir) / name
    cached = _read_cache(path)
    if cached is not None:
        return cached
    frames = render_scene_frames(seeds, frames_per_seed, height, width, spacing_m=spacing_m,
                                 nuisance=nuisance, texture_dir=texture_dir, progress=progress)
    _write_cache(path, frames, key)
    return frames


def _cache_path(cache_dir: str | Path | None, prefix: str, key: dict[str, Any]) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{prefix}_{digest}.safetensors"


def _read_cache(path: Path | None) -> SceneFrames | None:
    if path is None or not path.is_file():
        return None
    from safetensors.numpy import load_file

    z = load_file(str(path))
    return SceneFrames(z["images"], z["semantic"], z["instance"], z["inv_depth"], z["seeds"])


def _write_cache(path: Path | None, frames: SceneFrames, key: dict[str, Any]) -> None:
    if path is None:
        return
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"images": frames.images, "semantic": frames.semantic, "instance": frames.instance,
               "inv_depth": frames.inv_depth, "seeds": frames.seeds}, str(tmp),
              metadata={"key": json.dumps(key, sort_keys=True)})
    tmp.replace(path)
    _LOG.info("cached %d frames in %s", len(frames), path)


def _centre_crop(shape: tuple[int, int], height: int, width: int) -> tuple[slice, slice]:
    """The largest centred window of ``shape`` with the aspect ratio ``width / height``: resizing it to the
    training size then scales both axes alike (no stretched objects)."""
    h, w = shape
    if w * height > h * width:  # too wide: cut the sides
        cw = max(1, round(h * width / height))
        x0 = (w - cw) // 2
        return slice(0, h), slice(x0, x0 + cw)
    ch = max(1, round(w * height / width))
    y0 = (h - ch) // 2
    return slice(y0, y0 + ch), slice(0, w)


def scene_targets(sample: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """(image, semantic, instance, inv_depth) of one :class:`~scene_perception.data.datasets.DatasetSample`
    at ``height`` x ``width``: centre-cropped to that aspect ratio, image resized with area averaging, labels
    and inverse depth with nearest neighbours (a blend of two classes or of a depth edge is neither).

    Inverse depth is ``d / (fx * baseline)`` (1/m) from the sample's disparity and camera, NaN where either
    is unknown, except sky pixels (semantic sky) without a disparity, which get 0 (at infinity) as in the
    synthetic frames.  No labels: semantic all 255; no instances: instance 0 (no object target).
    """
    import cv2

    from scene_perception.data.datasets.sample import IGNORE_LABEL
    from scene_perception.models.labels import SKY

    rows, cols = _centre_crop(sample.left.shape[:2], height, width)
    size = (width, height)
    image = cv2.resize(np.ascontiguousarray(sample.left[rows, cols]), size, interpolation=cv2.INTER_AREA)
    h0, w0 = sample.left.shape[:2]
    semantic = (sample.semantic if sample.semantic is not None
                else np.full((h0, w0), IGNORE_LABEL, np.uint8))
    instance = sample.instance if sample.instance is not None else np.zeros((h0, w0), np.uint16)
    inv = np.full((h0, w0), np.nan, np.float32)
    if sample.disparity is not None and sample.camera is not None:
        scale = float(sample.camera.fx) * float(sample.camera.baseline)
        with np.errstate(invalid="ignore"):
            d = np.where(sample.disparity >= 0, sample.disparity, np.nan)
        inv = (d / scale).astype(np.float32)
    inv[np.isnan(inv) & (semantic == SKY)] = 0.0

    def nearest(a: np.ndarray) -> np.ndarray:
        return cv2.resize(np.ascontiguousarray(a[rows, cols]), size, interpolation=cv2.INTER_NEAREST)

    return image, nearest(semantic), nearest(instance), nearest(inv)


def dataset_scene_frames(dataset: Any, height: int, width: int, *, cache_dir: str | Path | None = None,
                         progress: bool = False) -> SceneFrames:
    """Every sample of ``dataset`` (a :class:`~scene_perception.data.datasets.StereoDataset`) as scene
    training frames (:func:`scene_targets`), read from / written to ``cache_dir`` (None: no cache).

    The cache key holds the dataset's name, resolved root, split and item names and the size, so another
    download, split or size never reuses a file; reading 2975 Cityscapes frames at 2048x1024 takes minutes,
    the 96x192 cache a second.
    """
    names = [dataset.item_name(i) for i in range(len(dataset))]
    key = {"dataset": dataset.name, "root": str(Path(dataset.root).resolve()),
           "split": getattr(dataset, "split", None), "size": [int(height), int(width)],
           "items": hashlib.sha256("\n".join(names).encode()).hexdigest(), "count": len(names), "format": 1}
    path = _cache_path(cache_dir, f"{dataset.name}_{len(names)}_{height}x{width}", key)
    cached = _read_cache(path)
    if cached is not None:
        return cached
    n = len(names)
    images = np.zeros((n, height, width, 3), np.uint8)
    semantic = np.zeros((n, height, width), np.uint8)
    instance = np.zeros((n, height, width), np.uint16)
    inv_depth = np.zeros((n, height, width), np.float32)
    from tqdm import tqdm

    for i in tqdm(range(n), disable=not progress, desc=f"read {dataset.name}", dynamic_ncols=True):
        images[i], semantic[i], instance[i], inv_depth[i] = scene_targets(dataset[i], height, width)
    frames = SceneFrames(images, semantic, instance, inv_depth, np.full(n, -1, np.int64))
    _write_cache(path, frames, key)
    return frames


def concat_scene_frames(parts: Sequence[SceneFrames]) -> SceneFrames:
    """One :class:`SceneFrames` of several sets of the same size (frame ``i`` of part ``k`` at
    ``sum(len(parts[:k])) + i``)."""
    if not parts:
        raise ValueError("no frames to concatenate")
    if len({p.size for p in parts}) != 1:
        raise ValueError(f"frame sets differ in size: {[p.size for p in parts]}")
    return SceneFrames(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in ("images", "semantic", "instance", "inv_depth", "seeds")))
