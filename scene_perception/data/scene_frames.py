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
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SceneFrames", "load_scene_frames", "render_scene_frames", "seed_range"]

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
        if path.is_file():
            from safetensors.numpy import load_file

            z = load_file(str(path))
            return SceneFrames(z["images"], z["semantic"], z["instance"], z["inv_depth"], z["seeds"])
    frames = render_scene_frames(seeds, frames_per_seed, height, width, spacing_m=spacing_m,
                                 nuisance=nuisance, texture_dir=texture_dir, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        from safetensors.numpy import save_file

        tmp = path.with_name(path.name + ".tmp")
        save_file({"images": frames.images, "semantic": frames.semantic, "instance": frames.instance,
                   "inv_depth": frames.inv_depth, "seeds": frames.seeds}, str(tmp),
                  metadata={"key": json.dumps(key, sort_keys=True)})
        tmp.replace(path)
        _LOG.info("cached %d frames in %s", len(frames), path)
    return frames
