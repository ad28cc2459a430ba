"""Procedural rectified stereo pairs with pixel-exact ground truth (pure numpy + OpenCV).

Why a renderer of our own: no stereo data set can be downloaded here, and the only real pairs with ground
truth (Middlebury *Aloe*) are reserved for evaluation.  Training the ``lite`` GC-Net and exercising the
pipelines therefore needs synthetic pairs whose disparity is *exactly* right, including occlusions.

How exactness is obtained
-------------------------
* The scene is a handful of 3-D planar primitives (a background plane, an optional ground plane,
  fronto-parallel and slanted rectangles, boxes made of six rectangles) in the left optical frame
  (x right, y down, z forward, metres).
* Both views are *ray cast* through a pinhole :class:`StereoCamera` (left centre at the origin, right centre
  at ``(B, 0, 0)``), with a z-buffer per view, so occlusions are geometric, not approximated by warping.
* Textures live on the surfaces: a pixel's colour is a function of the 3-D point it sees (plane coordinates
  and depth), never of the view, so a left pixel and its right correspondence get the same colour.
  Anti-aliasing uses a mip level chosen from the *depth* of the point and per-primitive constants, which are
  identical in both views (rectified cameras share the z axis), so filtering is view-consistent too.
* Disparity comes analytically from depth: ``d = fx * B / Z - doffs``.  A left pixel is marked
  non-occluded when the segment from the right camera centre to its 3-D point hits no other surface and it
  projects inside the right image; that is again ray casting, not a depth-map heuristic.

Photo textures may be mixed in from a user directory.  Never point it at images that come with stereo
ground truth (e.g. Middlebury Aloe): those are evaluation data only (see the project notes).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from scene_perception.data.augment import AugmentConfig, augment_pair
from scene_perception.geometry.stereo_camera import StereoCamera

__all__ = [
    "COVERAGE_REGIONS",
    "ProceduralStereoDataset",
    "SceneConfig",
    "StereoSample",
    "make_stereo_sample",
]

# Texture tile edge (texels) and number of mip levels kept per tile.  256 texels tiled on a surface keeps
# the repetition period far beyond typical disparities, and 8 levels (256..2 texels) cover the depth range of
# a ground plane receding to the background (a 50x range of footprints) without aliasing.
_TILE = 128
_LEVELS = 7
# A texel should cover about this many pixels at the chosen mip level: >= 1 keeps the bilinear texture
# band-limited with respect to the pixel grid, which is what makes the right-to-left warp reproduce the left
# image (the GT proof in the tests).
_LOD_BIAS = 2.0
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
# File-name prefixes of public images that ship with stereo / optical-flow ground truth (OpenCV samples,
# Middlebury).  They are evaluation data: using them as textures would leak the test set into training.
_EVALUATION_ONLY_PREFIXES = ("aloe", "rubberwhale", "basketball", "tsukuba", "teddy", "cones", "venus")
# The phenomena a pair can be rendered with (SceneConfig.<name>_probability) and scored on separately.
COVERAGE_REGIONS = ("sky", "thin", "textureless", "repetitive", "dark", "specular")


@dataclass
class StereoSample:
    """One rendered rectified pair and its exact ground truth (left view unless stated otherwise).

    ``disparity`` follows the matcher convention ``d = x_left - x_right`` (left pixel ``x`` matches right
    pixel ``x - d``).  ``nonoccluded`` is True where the left pixel's 3-D point is visible in the right
    image; occluded pixels still carry their true disparity (useful for dense supervision).
    """

    left: np.ndarray  # (H, W, 3) uint8 RGB
    right: np.ndarray  # (H, W, 3) uint8 RGB
    disparity: np.ndarray  # (H, W) float32 px, left view
    depth: np.ndarray  # (H, W) float32 m, left view
    nonoccluded: np.ndarray  # (H, W) bool
    camera: StereoCamera
    disparity_right: np.ndarray  # (H, W) float32 px, right view (right x matches left x + d)
    # Left-view masks of the pixels that show a phenomenon (keys of ``COVERAGE_REGIONS``: "sky", "thin",
    # "textureless", "repetitive", "dark", "specular"), present only when the pair has such pixels; lets a
    # benchmark score each phenomenon on its own pixels (``benchmarks/coverage.py``).
    regions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def occluded(self) -> np.ndarray:
        """Left pixels whose 3-D point is not visible in the right view (or falls outside it)."""
        return ~self.nonoccluded


@dataclass(frozen=True)
class SceneConfig:
    """Scene statistics; the defaults aim at indoor/outdoor-like layouts with 256x512 pairs.

    Kept separate from the image size so the dataset can vary scenes without touching the camera.
    """

    num_objects: tuple[int, int] = (3, 8)
    ground_probability: float = 0.7
    box_probability: float = 0.3
    slant_probability: float = 0.5
    max_slant_deg: float = 60.0
    object_size: tuple[float, float] = (0.08, 0.55)  # fraction of the image width
    background_disparity_fraction: float = 0.15  # bg disparity in [min, min + frac * (max - min)]
    photo_probability: float = 0.5  # share of surfaces using a photo texture when photos are given
    # Share of pairs whose background shows sky (infinitely far: disparity -doffs, depth inf) above a random
    # horizontal horizon; 0 (default) renders exactly the pairs of earlier versions (separate RNG stream).
    sky_probability: float = 0.0
    sky_horizon: tuple[float, float] = (0.15, 0.6)  # horizon row as a fraction of the height
    # What real scenes have and the base scenes lack (issue 22: "data that covers what real scenes have").
    # Each is drawn from its own RNG stream (``_coverage_rng``) and only when its probability is > 0, so with
    # all of them at 0 (default) a seed renders exactly the pair of earlier versions; with one of them on, the
    # rest of the scene (layout, textures, shading) is still that pair's, only the phenomenon is added.
    # Per pair: thin structures (poles, wires, branches) 1.5-5 px wide in front of the scene.
    thin_probability: float = 0.0
    thin_count: tuple[int, int] = (1, 6)
    thin_width_px: tuple[float, float] = (1.5, 5.0)
    # Per surface (object, background, ground): a flat colour (texture far below what can be matched) ...
    textureless_probability: float = 0.0
    # ... a fine periodic texture (stripes or a checkerboard with a period of 3-12 px: many equally good
    # matches within the disparity range) ...
    repetitive_probability: float = 0.0
    # ... a dark surface (8-30 % of its light: little signal, sensor noise dominates) ...
    dark_probability: float = 0.0
    # ... or a glossy one (Phong highlight that moves with the view, so the two views disagree there).
    specular_probability: float = 0.0


# ----------------------------------------------------------------------------------------- textures
def _tileable_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth periodic value noise: a random ``cells`` grid, wrap-padded and cubic-upsampled.

    Periodicity matters because tiles repeat on surfaces; a seam would be a spurious texture edge.
    """
    grid = rng.random((cells, cells), dtype=np.float32)
    pad = 2
    padded = np.pad(grid, pad, mode="wrap")
    scale = size // cells
    big = cv2.resize(padded, (scale * (cells + 2 * pad),) * 2, interpolation=cv2.INTER_CUBIC)
    return big[pad * scale: pad * scale + size, pad * scale: pad * scale + size]


def _multiscale_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Fractal value noise in [0, 1]; random start octave and persistence vary the texture's scale."""
    start = int(rng.integers(1, 5))  # 2^start cells at the coarsest octave
    octaves = int(rng.integers(2, 6))
    persistence = float(rng.uniform(0.45, 0.8))
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        cells = min(2 ** (start + k), size // 4)
        out += amp * _tileable_noise(rng, size, cells)
        total += amp
        amp *= persistence
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    """Periodic (integer frequency) oriented stripes, from sinusoidal to nearly square waves."""
    kx, ky = (int(v) for v in rng.integers(-12, 13, size=2))
    if kx == 0 and ky == 0:
        kx = 3
    x = np.arange(size, dtype=np.float32)
    phase = 2 * np.pi * (kx * x[None, :] + ky * x[:, None]) / size + rng.uniform(0, 2 * np.pi)
    sharp = float(rng.uniform(0.5, 4.0))
    return (0.5 + 0.5 * np.tanh(sharp * np.sin(phase)) / np.tanh(sharp)).astype(np.float32)


def _blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random colour patches (discs, ellipses, rectangles), drawn with wrap-around so the tile is periodic."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.random(3, dtype=np.float32)
    for _ in range(int(rng.integers(6, 40))):
        colour = tuple(float(c) for c in rng.random(3))
        cx, cy = (int(v) for v in rng.integers(0, size, 2))
        ax = int(rng.integers(3, size // 5))
        ay = int(rng.integers(3, size // 5))
        angle = float(rng.uniform(0, 180))
        rect = rng.random() < 0.35
        for ox in (-size, 0, size):
            for oy in (-size, 0, size):
                if rect:
                    cv2.rectangle(img, (cx + ox - ax, cy + oy - ay), (cx + ox + ax, cy + oy + ay), colour, -1,
                                  cv2.LINE_AA)
                else:
                    cv2.ellipse(img, (cx + ox, cy + oy), (ax, ay), angle, 0, 360, colour, -1, cv2.LINE_AA)
    # Soften edges to about a texel so that a texture edge stays resolvable at the chosen mip level.
    # (OpenCV filters do not support BORDER_WRAP, hence the explicit periodic padding.)
    pad = 4
    blurred = cv2.GaussianBlur(np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="wrap"), (0, 0), 0.8)
    return blurred[pad:-pad, pad:-pad]


def _colourise(rng: np.random.Generator, pattern: np.ndarray) -> np.ndarray:
    """Map a scalar pattern between two random colours with a random contrast (low contrast included)."""
    base = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    contrast = float(rng.choice([rng.uniform(0.03, 0.15), rng.uniform(0.15, 0.5), rng.uniform(0.5, 1.0)]))
    direction = rng.normal(size=3).astype(np.float32)
    direction = 0.6 * direction / (np.linalg.norm(direction) + 1e-6) + 0.4  # bias towards luminance change
    c0 = base - 0.5 * contrast * direction
    c1 = base + 0.5 * contrast * direction
    return c0 + pattern[..., None] * (c1 - c0)


def _procedural_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One (size, size, 3) float32 RGB tile in [0, 1] mixing noise, stripes and colour patches."""
    kind = rng.choice(["noise", "noise", "stripes", "blobs", "mix"])
    if kind == "noise":
        tex = _colourise(rng, _multiscale_noise(rng, size))
    elif kind == "stripes":
        tex = _colourise(rng, _stripes(rng, size))
        tex *= (0.85 + 0.3 * _multiscale_noise(rng, size))[..., None]
    elif kind == "blobs":
        tex = _blobs(rng, size)
        tex = 0.5 + (tex - 0.5) * float(rng.uniform(0.2, 1.0))
    else:
        a = _colourise(rng, _multiscale_noise(rng, size))
        b = _blobs(rng, size) if rng.random() < 0.5 else _colourise(rng, _stripes(rng, size))
        w = _multiscale_noise(rng, size)[..., None]
        tex = a * w + b * (1 - w)
    if rng.random() < 0.5:
        # Fine grain (about one texel): real surfaces have detail at the pixel scale that matching relies on.
        pad = 3
        grain = rng.normal(0.0, 1.0, (size + 2 * pad, size + 2 * pad)).astype(np.float32)
        grain[:pad], grain[-pad:] = grain[size:size + pad], grain[pad:2 * pad]
        grain[:, :pad], grain[:, -pad:] = grain[:, size:size + pad], grain[:, pad:2 * pad]
        grain = cv2.GaussianBlur(grain, (0, 0), 0.7)[pad:-pad, pad:-pad]
        tex = tex + float(rng.uniform(0.02, 0.12)) * grain[..., None]
    return np.clip(tex, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _flat_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A uniform colour with faint grain (std 0.2-0.8 % of the range): painted walls, road, water."""
    colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    grain = rng.normal(0.0, float(rng.uniform(0.002, 0.008)), (size, size)).astype(np.float32)
    return np.clip(colour[None, None, :] + grain[..., None], 0.0, 1.0)


def _repetitive_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stripes or a checkerboard with a period of 3-12 texels (integer frequencies keep the tile periodic):
    fences, tiles, grilles, facades, where many disparities in range match equally well."""
    k = rng.integers(size // 12, size // 3 + 1, size=2)
    x = np.arange(size, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    if rng.random() < 0.5:
        kx, ky = int(k[0]) * int(rng.choice([-1, 1])), int(k[1]) if rng.random() < 0.3 else 0
        wave = np.sin(2 * np.pi * (kx * x[None, :] + ky * x[:, None]) / size + phase[0])
        pattern = 0.5 + 0.5 * np.tanh(3.0 * wave) / np.tanh(3.0)
    else:
        sx = np.sign(np.sin(2 * np.pi * int(k[0]) * x / size + phase[0]))
        sy = np.sign(np.sin(2 * np.pi * int(k[1]) * x / size + phase[1]))
        pattern = 0.5 + 0.5 * sy[:, None] * sx[None, :]
    a, b = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    tex = a[None, None, :] + (b - a)[None, None, :] * pattern[..., None]
    return tex.astype(np.float32)


def _load_photos(directory: str, mtime_ns: int) -> tuple[np.ndarray, ...]:
    """Photos from a user directory as float32 RGB, decoded once per process (datasets call this often).

    ``mtime_ns`` (the directory's modification time) is part of the cache key so that adding or removing
    files is noticed.
    """
    photos = []
    for path in sorted(Path(directory).iterdir()):
        if path.suffix.lower() not in _IMAGE_EXTS:
            continue
        if path.name.lower().startswith(_EVALUATION_ONLY_PREFIXES):
            raise ValueError(
                f"{path} looks like a stereo/flow evaluation image (it has ground truth); evaluation images "
                "must never be used as textures or training data"
            )
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None or min(img.shape[:2]) < 16:
            continue
        photos.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)
    if not photos:
        raise FileNotFoundError(
            f"no readable images ({', '.join(_IMAGE_EXTS)}) in texture directory {directory}"
        )
    return tuple(photos)


def _photo_texture(rng: np.random.Generator, photos: tuple[np.ndarray, ...], size: int) -> np.ndarray:
    """A random square crop of a random photo, resized to a tile (INTER_AREA to avoid aliasing)."""
    img = photos[int(rng.integers(len(photos)))]
    h, w = img.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = img[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return np.clip(cv2.resize(crop, (size, size), interpolation=interp), 0.0, 1.0)


def _build_atlas(tiles: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pack every tile's mip chain into one image so each view is textured with two ``cv2.remap`` calls.

    Layout: tile ``i`` occupies rows ``i*(T+2) ..``; mip level ``l`` occupies a column block starting at
    ``x_offsets[l]``.  Each level is wrap-padded by one texel so bilinear sampling across the tile border
    sees the periodic neighbour.
    """
    widths = [(_TILE >> lev) + 2 for lev in range(_LEVELS)]
    x_offsets = np.cumsum([0] + widths[:-1]).astype(np.float32)
    atlas = np.zeros((len(tiles) * (_TILE + 2), int(sum(widths)), 3), np.float32)
    for i, tile in enumerate(tiles):
        level = tile
        for lev in range(_LEVELS):
            if lev:
                half = (level.shape[1] // 2, level.shape[0] // 2)
                level = cv2.resize(level, half, interpolation=cv2.INTER_AREA)
            n = level.shape[0] + 2
            y0, x0 = i * (_TILE + 2), int(x_offsets[lev])
            atlas[y0:y0 + n, x0:x0 + n] = np.pad(level, ((1, 1), (1, 1), (0, 0)), mode="wrap")
    return atlas, x_offsets


# ----------------------------------------------------------------------------------------- geometry
@dataclass
class _Plane:
    """A (possibly unbounded) planar rectangle with a texture mapping.

    Points are ``origin + a * e1 + b * e2`` with ``a0 <= a <= a1`` and ``b0 <= b <= b1``; ``normal`` is
    the unit normal (``e1 x e2``) and ``offset = normal . origin`` so the plane is ``normal . X = offset``.
    ``outward`` is the outward normal of a box face (for back-face culling) or None for open surfaces.
    """

    origin: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    bounds: tuple[float, float, float, float]
    tile: int = 0
    texel: float = 0.01  # metres per level-0 texel
    tex_offset: tuple[float, float] = (0.0, 0.0)
    shade: float = 1.0
    lod_scale: float = 1.0  # lod = log2(lod_scale * Z): a per-primitive constant times depth
    outward: np.ndarray | None = None
    group: int = 0  # surfaces of one object share a texture tile
    ref_point: np.ndarray | None = None  # a typical visible point: sets texel size and mip constant

    @functools.cached_property
    def normal(self) -> np.ndarray:
        return np.cross(self.e1, self.e2)

    @functools.cached_property
    def offset(self) -> float:
        return float(self.normal @ self.origin)

    @property
    def bounded(self) -> bool:
        return all(math.isfinite(v) for v in self.bounds)

    def corners(self) -> np.ndarray:
        a0, a1, b0, b1 = self.bounds
        return np.array([self.origin + a * self.e1 + b * self.e2 for a in (a0, a1) for b in (b0, b1)])


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Random rotation with angles up to ``max_deg`` about each axis (3x3)."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _plane_from_normal(normal: np.ndarray, point: np.ndarray) -> _Plane:
    """Unbounded plane through ``point`` with unit ``normal``; in-plane axes chosen stably."""
    n = normal / np.linalg.norm(normal)
    helper = np.array([0.0, 1.0, 0.0]) if abs(n[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(helper, n)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    inf = math.inf
    return _Plane(origin=point.astype(np.float64), e1=e1, e2=e2, bounds=(-inf, inf, -inf, inf))


class _Scene:
    """Random scene whose every surface point has disparity in ``[min_d, max_d]`` (by construction)."""

    def __init__(self, rng: np.random.Generator, cam: StereoCamera, min_d: float, max_d: float,
                 cfg: SceneConfig) -> None:
        self.cam = cam
        self.fb = cam.fx * cam.baseline
        self.min_d, self.max_d = min_d, max_d
        self.planes: list[_Plane] = []
        self.z_near = self._depth(max_d)
        w, h = cam.width, cam.height
        # Background: a slightly tilted plane.  Its disparity is affine in (u, v); bounding the gradient so
        # the four image corners stay inside the band keeps every background pixel inside it.
        band = min_d + cfg.background_disparity_fraction * (max_d - min_d)
        d_centre = float(rng.uniform(min_d, band))
        reach = min(d_centre - min_d, band - d_centre)  # |gx| * w/2 + |gy| * h/2 must stay within this
        split = float(rng.uniform(0, 1))
        gx = reach * split * float(rng.choice([-1, 1])) / ((w - 1) / 2.0)
        gy = reach * (1 - split) * float(rng.choice([-1, 1])) / ((h - 1) / 2.0)
        d_corners = [d_centre + gx * (u - (w - 1) / 2.0) + gy * (v - (h - 1) / 2.0)
                     for u, v in ((0.0, 0.0), (w - 1.0, 0.0), (0.0, h - 1.0))]
        pts = np.array([self._ray(u, v) * self._depth(d) for (u, v), d in
                        zip(((0.0, 0.0), (w - 1.0, 0.0), (0.0, h - 1.0)), d_corners, strict=True)])
        normal = np.cross(pts[1] - pts[0], pts[2] - pts[0])
        if normal[2] > 0:
            normal = -normal
        bg = _plane_from_normal(normal, pts[0])
        centre_ray = self._ray(cam.cx, cam.cy)
        bg.ref_point = centre_ray * self._plane_depth_at(bg, centre_ray)
        self.planes.append(bg)
        self.object_min_d = band
        self.groups = 1

        # Ground plane: y-down frame, so the ground is "below" with a normal near (0, -1, 0).  Its height is
        # set so the nearest visible ground row reaches a random fraction of max_d.
        if rng.random() < cfg.ground_probability:
            tilt = _rotation(rng, 6.0)
            n = tilt @ np.array([0.0, -1.0, 0.0])
            bottom = [self._ray(u, h - 1.0) for u in (0.0, w - 1.0)]
            nr = max(-float(n @ r) for r in bottom)  # n.r < 0 for rays that hit a ground below
            if nr > 1e-3:
                d_bottom = float(rng.uniform(0.3, 1.0)) * max_d
                height = self.fb * nr / (d_bottom + cam.doffs)  # n.X = -height, X = Z r, Z = fB / (d+doffs)
                ground = _plane_from_normal(n, -height * n)
                ray = self._ray(cam.cx, h - 1.0)
                z = self._plane_depth_at(ground, ray)
                ground.ref_point = ray * (z if 0 < z < math.inf else self.z_near)
                ground.group = self.groups
                self.groups += 1
                self.planes.append(ground)

        n_obj = int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))
        for _ in range(n_obj):
            if rng.random() < cfg.box_probability:
                self._add_box(rng, cfg)
            else:
                self._add_rect(rng, cfg)

    # -- helpers
    def _depth(self, d: float) -> float:
        return self.fb / (d + self.cam.doffs)

    def _ray(self, u: float, v: float) -> np.ndarray:
        c = self.cam
        return np.array([(u - c.cx) / c.fx, (v - c.cy) / c.fy, 1.0])

    @staticmethod
    def _plane_depth_at(p: _Plane, ray: np.ndarray) -> float:
        nr = float(p.normal @ ray)
        return p.offset / nr if abs(nr) > 1e-12 else math.inf

    def _fits(self, corners: np.ndarray) -> bool:
        """All corners in front of the near limit: depth is affine on a rectangle, so corners bound it."""
        return bool(np.all(corners[:, 2] >= self.z_near * 1.0005))

    def _random_centre(self, rng: np.random.Generator, margin: float) -> tuple[np.ndarray, float]:
        """A 3-D point projecting inside the (slightly enlarged) image at a disparity in the object band."""
        c = self.cam
        u = rng.uniform(-margin * c.width, (1 + margin) * c.width)
        v = rng.uniform(-margin * c.height, (1 + margin) * c.height)
        d = float(rng.uniform(self.object_min_d, self.max_d))
        z = self._depth(d)
        return self._ray(u, v) * z, z

    def _add_rect(self, rng: np.random.Generator, cfg: SceneConfig) -> None:
        for attempt in range(6):
            centre, z = self._random_centre(rng, 0.1)
            size = rng.uniform(*cfg.object_size, 2) * self.cam.width * z / self.cam.fx
            size = size * (0.7 ** attempt)
            rot = np.eye(3)
            if rng.random() < cfg.slant_probability and attempt < 4:
                rot = _rotation(rng, cfg.max_slant_deg)
            e1, e2 = rot[:, 0], rot[:, 1]
            bounds = (-size[0] / 2, size[0] / 2, -size[1] / 2, size[1] / 2)
            p = _Plane(origin=centre, e1=e1, e2=e2, bounds=bounds, group=self.groups, ref_point=centre)
            if self._fits(p.corners()):
                self.planes.append(p)
                self.groups += 1
                return

    def _add_box(self, rng: np.random.Generator, cfg: SceneConfig) -> None:
        for attempt in range(6):
            centre, z = self._random_centre(rng, 0.05)
            half = 0.5 * rng.uniform(*cfg.object_size, 3) * self.cam.width * z / self.cam.fx
            half *= 0.7 ** attempt
            half[2] = min(half[2], 0.4 * z)
            rot = _rotation(rng, 45.0) if attempt < 4 else np.eye(3)
            corners = np.array([centre + rot @ (half * np.array(s)) for s in
                                np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T])
            if not self._fits(corners):
                continue
            for axis in range(3):
                j, k = (axis + 1) % 3, (axis + 2) % 3
                for sign in (-1.0, 1.0):
                    outward = sign * rot[:, axis]
                    origin = centre + outward * half[axis]
                    e1, e2 = rot[:, j], rot[:, k]
                    if sign < 0:  # keep e1 x e2 == outward
                        e1, e2 = e2, e1
                    hj, hk = (half[j], half[k]) if sign > 0 else (half[k], half[j])
                    self.planes.append(_Plane(origin=origin, e1=e1, e2=e2, bounds=(-hj, hj, -hk, hk),
                                              outward=outward, group=self.groups, ref_point=centre))
            self.groups += 1
            return

    def add_thin(self, rng: np.random.Generator, cfg: SceneConfig) -> list[_Plane]:
        """Thin fronto-parallel strips (poles, wires, branches) in the object band, each its own group.

        A strip is ``thin_width_px`` wide at its own depth and 0.3-1.2 image heights long, vertical (poles),
        near horizontal (wires) or at any angle (branches).  Returns the planes added.
        """
        added = []
        for _ in range(int(rng.integers(cfg.thin_count[0], cfg.thin_count[1] + 1))):
            for _attempt in range(6):
                centre, z = self._random_centre(rng, 0.0)
                width = float(rng.uniform(*cfg.thin_width_px)) * z / self.cam.fx
                length = float(rng.uniform(0.3, 1.2)) * self.cam.height * z / self.cam.fy
                kind = rng.random()
                if kind < 0.4:  # pole
                    angle = math.pi / 2 + float(rng.uniform(-0.1, 0.1))
                elif kind < 0.75:  # wire
                    angle = float(rng.uniform(-0.3, 0.3))
                else:  # branch
                    angle = float(rng.uniform(0, math.pi))
                e1 = np.array([math.cos(angle), math.sin(angle), 0.0])
                e2 = np.array([-math.sin(angle), math.cos(angle), 0.0])
                p = _Plane(origin=centre, e1=e1, e2=e2,
                           bounds=(-length / 2, length / 2, -width / 2, width / 2),
                           group=self.groups, ref_point=centre)
                if self._fits(p.corners()):
                    self.planes.append(p)
                    added.append(p)
                    self.groups += 1
                    break
        return added

    def assign_appearance(self, rng: np.random.Generator, planes: list[_Plane] | None = None) -> None:
        """Texture scale, mip constant and Lambertian shade per surface (all view independent).

        The first call (``planes`` None) draws the light and does every surface; surfaces added later (thin
        structures, from their own RNG stream) are passed in and share that light.
        """
        cam = self.cam
        if planes is None:
            light = rng.normal(size=3)
            light[2] = -abs(light[2])  # light comes from the camera side
            light /= np.linalg.norm(light)
            self.light, self.ambient = light, float(rng.uniform(0.35, 0.8))
            planes = self.planes
        light, ambient = self.light, self.ambient
        group_texel: dict[int, float] = {}
        group_offset: dict[int, tuple[float, float]] = {}
        for p in planes:
            ref = p.ref_point if p.ref_point is not None else p.origin
            z_ref = max(float(ref[2]), self.z_near)
            # Texel size: a random number of pixels per texel at the object's typical depth (shared by the
            # faces of a box so its texture is continuous in scale).
            texel = group_texel.setdefault(p.group, float(rng.uniform(0.5, 2.5)) * z_ref / cam.fx)
            p.texel = texel
            p.tile = p.group
            p.tex_offset = group_offset.setdefault(p.group, (float(rng.uniform(0, _TILE)),
                                                             float(rng.uniform(0, _TILE))))
            # Horizontal footprint of one pixel on the plane per unit depth, from the left camera at the
            # reference point: |dX/du| = (Z / fx) * |e_x - X * n_x / offset|.  A per-surface constant, so the
            # mip level stays a function of the 3-D point alone (view consistent).
            n, off = p.normal, p.offset
            slant = 1.0
            if abs(off) > 1e-9:
                slant = float(np.linalg.norm(np.array([1.0, 0.0, 0.0]) - ref * n[0] / off))
            p.lod_scale = _LOD_BIAS * min(slant, 8.0) / (cam.fx * p.texel)
            p.shade = ambient + (1 - ambient) * abs(float(n @ light))


# ----------------------------------------------------------------------------------------- rendering
def _window(p: _Plane, cam: StereoCamera, centre_x: float, cx: float) -> tuple[int, int, int, int]:
    """Pixel bounding box (u0, u1, v0, v1) of a primitive in one view; full image for unbounded planes."""
    if not p.bounded:
        return 0, cam.width, 0, cam.height
    c = p.corners()
    z = c[:, 2]
    u = cam.fx * (c[:, 0] - centre_x) / z + cx
    v = cam.fy * c[:, 1] / z + cam.cy
    u0 = max(0, int(math.floor(u.min())) - 1)
    u1 = min(cam.width, int(math.ceil(u.max())) + 2)
    v0 = max(0, int(math.floor(v.min())) - 1)
    v1 = min(cam.height, int(math.ceil(v.max())) + 2)
    return u0, u1, v0, v1


def _render_view(planes: list[_Plane], cam: StereoCamera, centre_x: float, cx: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ray cast one view: returns depth Z (inf = nothing), primitive index, plane coords (a, b).

    Rays are ``C + t * r`` with ``r = ((u - cx)/fx, (v - cy)/fy, 1)`` so the ray parameter ``t`` *is* the
    depth.  Everything is separable in (u, v), so the per-primitive work is a few broadcast operations over
    its bounding box.
    """
    h, w = cam.height, cam.width
    f32 = np.float32
    rx_all = ((np.arange(w, dtype=np.float64) - cx) / cam.fx).astype(f32)
    ry_all = ((np.arange(h, dtype=np.float64) - cam.cy) / cam.fy).astype(f32)
    zbuf = np.full((h, w), np.inf, f32)
    pid = np.full((h, w), -1, np.int32)
    coord_a = np.zeros((h, w), f32)
    coord_b = np.zeros((h, w), f32)
    centre = np.array([centre_x, 0.0, 0.0])
    for i, p in enumerate(planes):
        if p.outward is not None and float(p.outward @ (p.origin - centre)) >= 0:
            continue  # back face of a closed box: never the first hit
        u0, u1, v0, v1 = _window(p, cam, centre_x, cx)
        if u0 >= u1 or v0 >= v1:
            continue
        rx, ry = rx_all[u0:u1], ry_all[v0:v1]
        n = p.normal
        num = p.offset - float(n @ centre)
        denom = (f32(n[0]) * rx + f32(n[2]))[None, :] + (f32(n[1]) * ry)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = f32(num) / denom
        zwin = zbuf[v0:v1, u0:u1]
        hit = (t > 0) & (t < zwin)
        co = centre - p.origin
        a = t * ((f32(p.e1[0]) * rx + f32(p.e1[2]))[None, :] + (f32(p.e1[1]) * ry)[:, None]) + f32(co @ p.e1)
        b = t * ((f32(p.e2[0]) * rx + f32(p.e2[2]))[None, :] + (f32(p.e2[1]) * ry)[:, None]) + f32(co @ p.e2)
        if p.bounded:
            a0, a1, b0, b1 = p.bounds
            hit &= (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)
        zwin[hit] = t[hit]
        pid[v0:v1, u0:u1][hit] = i
        coord_a[v0:v1, u0:u1][hit] = a[hit]
        coord_b[v0:v1, u0:u1][hit] = b[hit]
    return zbuf, pid, coord_a, coord_b


def sample_atlas_trilinear(atlas: np.ndarray, x_offsets: np.ndarray, ta: np.ndarray, tb: np.ndarray,
                           lod: np.ndarray, tile_y: np.ndarray) -> np.ndarray:
    """Trilinear (two mip levels, bilinear in each) lookup of per-pixel texel coordinates in the atlas.

    ``ta``/``tb`` are level-0 texel coordinates (wrapped here with the tile period), ``lod`` the mip level
    (float), ``tile_y`` the atlas row of each pixel's tile and ``x_offsets`` the column where each level
    starts. Shared by the plane renderer here and the ray caster (data/raycast.py) so both views of both
    renderers sample the same continuous texture function. Returns float32 RGB, shape ``lod.shape + (3,)``.
    """
    f32 = np.float32
    lod = np.clip(lod, f32(0.0), f32(_LEVELS - 1.0))
    lev0 = np.minimum(lod.astype(np.int32), _LEVELS - 2)
    frac = (lod - lev0.astype(f32))[..., None]
    xoff_lut = np.append(x_offsets, 0).astype(f32) + f32(1.0)
    ty = tile_y.astype(f32) + f32(1.0)
    tile, inv_tile = f32(_TILE), f32(1.0 / _TILE)
    out = np.zeros((*lod.shape, 3), f32)
    for k in (0, 1):
        lev = lev0 + k
        scale = np.ldexp(f32(1.0), -lev)  # 2^-level: exact and much cheaper than pow or a gather
        # Level-l texel j averages level-0 texels [2^l j, 2^l (j+1)): its centre is 2^l j + (2^l - 1) / 2.
        # (x mod T) * s == (x * s) mod (T * s), so wrapping is done at level 0 with a scalar period.
        shift = f32(0.5) / scale - f32(0.5)
        mx = ta - shift
        mx -= np.floor(mx * inv_tile) * tile
        mx *= scale
        mx += xoff_lut[lev]
        my = tb - shift
        my -= np.floor(my * inv_tile) * tile
        my *= scale
        my += ty
        col = cv2.remap(atlas, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out += col * (frac if k else f32(1.0) - frac)
    return out


def _shade_view(planes: list[_Plane], atlas: np.ndarray, x_offsets: np.ndarray, depth: np.ndarray,
                pid: np.ndarray, coord_a: np.ndarray, coord_b: np.ndarray) -> np.ndarray:
    """Colour a view from the texture atlas with trilinear mip filtering; float32 RGB in [0, 1].

    Every quantity used here (plane coords, depth, per-primitive constants) is a property of the 3-D
    point, so the two views sample the same continuous texture function.
    """
    f32 = np.float32
    inv_texel = np.array([1.0 / p.texel for p in planes], f32)
    off_a = np.array([p.tex_offset[0] for p in planes], f32)
    off_b = np.array([p.tex_offset[1] for p in planes], f32)
    tile_y = np.array([p.tile * (_TILE + 2) for p in planes], f32)
    lod_scale = np.array([p.lod_scale for p in planes], f32)
    shade = np.array([p.shade for p in planes], f32)
    idx = np.maximum(pid, 0)
    ta = coord_a * inv_texel[idx] + off_a[idx]
    tb = coord_b * inv_texel[idx] + off_b[idx]
    lod = np.log2(np.maximum(lod_scale[idx] * np.where(np.isfinite(depth), depth, f32(1.0)), f32(1.0)))
    out = sample_atlas_trilinear(atlas, x_offsets, ta, tb, lod, tile_y[idx])
    out *= shade[idx][..., None]
    out[pid < 0] = 0.0
    return out


def _visible_in_right(planes: list[_Plane], cam: StereoCamera, depth: np.ndarray, pid: np.ndarray
                      ) -> np.ndarray:
    """Left pixels whose 3-D point is seen by the right camera (exact segment-vs-primitive tests).

    For each left point P the segment ``C_r + s (P - C_r)``, ``0 < s < 1`` must not cross another surface,
    and P must project inside the right image.
    """
    h, w = depth.shape
    f32 = np.float32
    bl = cam.baseline
    u = np.arange(w, dtype=f32)
    disp = f32(cam.fx * bl) / depth - f32(cam.doffs)
    ur = u[None, :] - disp
    visible = np.isfinite(depth) & (ur >= 0) & (ur <= w - 1)
    rx = ((u - f32(cam.cx)) / f32(cam.fx))[None, :]
    ry = ((np.arange(h, dtype=f32) - f32(cam.cy)) / f32(cam.fy))[:, None]
    dx = depth * rx - f32(bl)  # direction P - C_r
    dy = depth * ry
    dz = depth
    centre = np.array([bl, 0.0, 0.0])
    max_d = float(np.nanmax(np.where(np.isfinite(disp), disp, 0.0))) if disp.size else 0.0
    for i, p in enumerate(planes):
        if p.outward is not None and float(p.outward @ (p.origin - centre)) >= 0:
            continue  # a back face is never the first surface crossed
        u0, u1, v0, v1 = _window(p, cam, bl, cam.cx_right)
        # Left pixels on these rows that can project into the right-view window: u = u_r + d, 0 <= d <= max.
        u1 = min(w, int(u1 + math.ceil(max_d) + 1))
        if u0 >= u1 or v0 >= v1:
            continue
        sl = (slice(v0, v1), slice(u0, u1))
        n = p.normal
        ddx, ddy, ddz = dx[sl], dy[sl], dz[sl]
        denom = f32(n[0]) * ddx + f32(n[1]) * ddy + f32(n[2]) * ddz
        with np.errstate(divide="ignore", invalid="ignore"):
            s = f32(p.offset - float(n @ centre)) / denom
        block = (s > 0) & (s < 1 - 1e-3) & (pid[sl] != i)
        if p.bounded:
            co = centre - p.origin
            a = s * (f32(p.e1[0]) * ddx + f32(p.e1[1]) * ddy + f32(p.e1[2]) * ddz) + f32(co @ p.e1)
            b = s * (f32(p.e2[0]) * ddx + f32(p.e2[1]) * ddy + f32(p.e2[2]) * ddz) + f32(co @ p.e2)
            a0, a1, b0, b1 = p.bounds
            block &= (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)
        visible[sl] &= ~block
    return visible


def _nuisance(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Per-view gain/bias (per channel) and sensor noise: real pairs never match photometrically."""
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.96, 1.04, 3)
    bias = rng.uniform(-0.05, 0.05) + rng.uniform(-0.01, 0.01, 3)
    noise = float(rng.uniform(0.0, 0.02))
    out = img * gain.astype(np.float32) + bias.astype(np.float32)
    if noise > 0:
        out += rng.normal(0.0, noise, img.shape).astype(np.float32)
    return out


def _sky_colour(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float sky: a vertical gradient between two sky tones plus faint, wide cloud shading.

    A function of the pixel alone, so both rectified views (same ``cx``) see the same sky at the same
    pixel, as they must for points at infinity.  Its texture is far below what can be matched (grey-level
    std in a 7x7 window ~0.001-0.003, like the street world's sky): the network has to learn that such a
    region is far, not read a disparity off it.
    """
    top = np.array([rng.uniform(0.25, 0.55), rng.uniform(0.45, 0.7), rng.uniform(0.75, 1.0)], np.float32)
    if rng.random() < 0.3:  # overcast: grey-white
        top = np.full(3, rng.uniform(0.6, 0.9), np.float32)
    bottom = np.clip(top + np.float32(rng.uniform(0.05, 0.25)), 0.0, 1.0)
    t = (np.arange(height, dtype=np.float32) / max(1, height - 1))[:, None, None]
    img = top * (1 - t) + bottom * t
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    shade = np.sin(u / (width * rng.uniform(0.2, 0.5)) + phase[0]) * np.sin(v / (height * 0.3) + phase[1])
    return (img + np.float32(rng.uniform(0.0, 0.03)) * shade[:, :, None]).astype(np.float32)


def _add_sky(seed: int, cfg: SceneConfig, views: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
             ) -> tuple[np.ndarray, np.ndarray] | None:
    """With ``cfg.sky_probability``, replace the background plane (id 0) above a horizontal horizon by
    sky, in place, in both views; returns the (left, right) sky masks, or None for a pair without sky.

    A horizontal horizon keeps the pair consistent: a scene point has the same row in both rectified
    views, so "background above row v0" removes the same part of the background plane in each.
    """
    if cfg.sky_probability <= 0:
        return None
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5C1E5]))
    if rng.random() >= cfg.sky_probability:
        return None
    height, width = views[0][0].shape
    horizon = int(rng.uniform(*cfg.sky_horizon) * height)
    colour = _sky_colour(rng, height, width)
    above = (np.arange(height) < horizon)[:, None]
    masks = []
    for depth, pid, img in views:
        sky = (pid == 0) & above
        depth[sky] = np.inf
        img[sky] = colour[sky]
        masks.append(sky)
    return masks[0], masks[1]


def _coverage_rng(seed: int) -> np.random.Generator:
    """The RNG stream of the coverage phenomena: separate so that turning them on changes nothing else."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0FE]))


@dataclass
class _Coverage:
    """Which surfaces (groups) of one pair show which phenomenon, and the glossy ones' Phong parameters."""

    groups: dict[str, set[int]] = field(default_factory=dict)
    # group -> (strength, shininess, unit direction to its light)
    specular: dict[int, tuple[float, float, np.ndarray]] = field(default_factory=dict)


#: The coverage phenomena that restyle a whole surface group (the others add geometry: thin, sky).
_SURFACE_STYLES = ("textureless", "repetitive", "dark", "specular")


def _add_coverage(seed: int, cfg: SceneConfig, sc: _Scene, tiles: list[np.ndarray]) -> _Coverage:
    """Add thin structures (planes, tiles) and restyle surfaces per ``cfg``, drawing only from the coverage
    stream; ``tiles`` (one per group) is extended and edited in place."""
    cov = _Coverage()
    if not any(getattr(cfg, f"{name}_probability") > 0 for name in COVERAGE_REGIONS if name != "sky"):
        return cov
    rng = _coverage_rng(seed)
    if cfg.thin_probability > 0 and rng.random() < cfg.thin_probability:
        first = sc.groups
        thin = sc.add_thin(rng, cfg)
        tiles.extend(_procedural_texture(rng, _TILE) for _ in range(sc.groups - first))
        sc.assign_appearance(rng, thin)
        cov.groups["thin"] = {p.group for p in thin}
    # Per surface group, in this order (the draw order is part of the data: each pair must stay the same).
    probability = {name: getattr(cfg, f"{name}_probability") for name in _SURFACE_STYLES}
    for name in _SURFACE_STYLES:
        cov.groups.setdefault(name, set())
    for group in range(sc.groups):
        hit = {name: q > 0 and rng.random() < q for name, q in probability.items()}
        if hit["textureless"]:
            tiles[group] = _flat_texture(rng, _TILE)
            cov.groups["textureless"].add(group)
        elif hit["repetitive"]:
            tiles[group] = _repetitive_texture(rng, _TILE)
            cov.groups["repetitive"].add(group)
        if hit["dark"]:
            factor = float(rng.uniform(0.08, 0.3))
            for p in sc.planes:
                if p.group == group:
                    p.shade *= factor
            cov.groups["dark"].add(group)
        if hit["specular"]:
            cov.specular[group] = (float(rng.uniform(0.25, 0.7)), float(rng.uniform(8.0, 60.0)),
                                   _highlight_light(rng, [p for p in sc.planes if p.group == group]))
            cov.groups["specular"].add(group)
    return cov


def _highlight_light(rng: np.random.Generator, planes: list[_Plane]) -> np.ndarray:
    """A light direction that puts the highlight near a visible point of the surface (a face centre, or
    where the centre ray meets an open plane), as seen from the left camera: a random light direction would
    mostly reflect away from both cameras and no highlight would show."""
    p = planes[int(rng.integers(len(planes)))]
    point = p.origin if p.bounded else (p.ref_point if p.ref_point is not None else p.origin)
    view = -point / max(float(np.linalg.norm(point)), 1e-9)
    n = p.normal / np.linalg.norm(p.normal)
    n = n if float(n @ view) >= 0 else -n
    light = 2.0 * float(n @ view) * n - view  # the mirror direction of the view: highlight centred here
    light = light + rng.normal(0.0, 0.15, 3)  # ... give or take
    return light / max(float(np.linalg.norm(light)), 1e-9)


def _add_highlights(img: np.ndarray, planes: list[_Plane], pid: np.ndarray, cam: StereoCamera, cx: float,
                    specular: dict[int, tuple[float, float, np.ndarray]]) -> np.ndarray | None:
    """Phong highlights on the glossy surfaces of one view, in place; returns the highlight added (or None).

    The highlight depends on the direction from the surface point to *this* view's centre, so unlike the
    texture it is not a function of the 3-D point alone: the two views disagree there, as on real glossy
    surfaces (the highlight's apparent disparity is not the surface's).
    """
    if not specular:
        return None
    added = np.zeros(pid.shape, np.float32)
    for i, p in enumerate(planes):
        if p.group not in specular:
            continue
        vs, us = np.nonzero(pid == i)
        if vs.size == 0:
            continue
        strength, shininess, light = specular[p.group]
        ray = np.stack([(us - cx) / cam.fx, (vs - cam.cy) / cam.fy, np.ones(us.size)], axis=1)
        view = -ray / np.linalg.norm(ray, axis=1, keepdims=True)  # towards this camera's centre
        n = p.normal / np.linalg.norm(p.normal)
        n = n if float(n @ view.mean(axis=0)) >= 0 else -n  # the side facing the camera
        nl = float(n @ light)
        if nl <= 0:
            continue  # lit from behind: no highlight
        reflected = 2.0 * nl * n - light
        spec = (strength * np.clip(view @ reflected, 0.0, 1.0) ** shininess).astype(np.float32)
        img[vs, us] += spec[:, None]
        added[vs, us] = spec
    return added


# A glossy pixel counts as "specular" where the left view's highlight adds at least this much (of 1.0).
_HIGHLIGHT_MIN = 0.03


def _region_masks(planes: list[_Plane], pid: np.ndarray, cov: _Coverage, sky: np.ndarray | None,
                  highlight: np.ndarray | None) -> dict[str, np.ndarray]:
    """Left-view masks of each phenomenon present (sky pixels belong to the sky only; "specular" is where
    a highlight is visible, not the whole glossy surface)."""
    regions: dict[str, np.ndarray] = {}
    if sky is not None and sky.any():
        regions["sky"] = sky
    if cov.groups:
        group_of = np.array([p.group for p in planes] + [-1], np.int64)[pid]  # pid -1 -> the last entry
        for name, groups in cov.groups.items():
            if groups:
                mask = np.isin(group_of, sorted(groups))
                if name == "specular":
                    mask &= highlight is not None and highlight >= _HIGHLIGHT_MIN
                if sky is not None:
                    mask &= ~sky
                if mask.any():
                    regions[name] = mask
    return regions


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def make_stereo_sample(
    seed: int,
    width: int = 512,
    height: int = 256,
    max_disparity: float = 96.0,
    min_disparity: float = 2.0,
    fx: float | None = None,
    baseline: float = 0.12,
    nuisance: bool = False,
    texture_dir: str | Path | None = None,
    scene: SceneConfig | None = None,
) -> StereoSample:
    """Render one random rectified pair; the same arguments always give the same pair.

    Args:
        seed: any non-negative int; all randomness derives from it.
        width, height: image size in px.
        max_disparity, min_disparity: every pixel's true disparity lies in this range (px), except the
            sky's (``scene.sky_probability``), which is at infinity.
        fx: focal length in px (default ``0.8 * width``, about 64 degrees horizontal field of view).
        baseline: metres; with ``fx`` it only sets the metric scale (disparity range is what matters).
        nuisance: per-view gain/bias and noise (off gives photometrically exact pairs up to rounding).
        texture_dir: optional directory of photos mixed in as surface textures (never GT stereo images).
        scene: scene statistics (:class:`SceneConfig`).
    """
    if not (0 < min_disparity < max_disparity):
        raise ValueError(f"need 0 < min_disparity < max_disparity, got {min_disparity}, {max_disparity}")
    if width < 8 or height < 8:
        raise ValueError(f"image size {width}x{height} is too small")
    cfg = scene or SceneConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E5E]))
    f = float(fx) if fx is not None else 0.8 * width
    cam = StereoCamera(width=int(width), height=int(height), fx=f, fy=f, cx=(width - 1) / 2.0,
                       cy=(height - 1) / 2.0, cx_right=(width - 1) / 2.0, baseline=float(baseline),
                       frame_id="procedural_left")
    sc = _Scene(rng, cam, float(min_disparity), float(max_disparity), cfg)

    photos: tuple[np.ndarray, ...] = ()
    if texture_dir is not None:
        tex_dir = Path(texture_dir).resolve()
        if not tex_dir.is_dir():
            raise FileNotFoundError(f"texture directory {tex_dir} does not exist")
        photos = _load_photos(str(tex_dir), tex_dir.stat().st_mtime_ns)
    tiles = []
    for _ in range(sc.groups):
        if photos and rng.random() < cfg.photo_probability:
            tiles.append(_photo_texture(rng, photos, _TILE))
        else:
            tiles.append(_procedural_texture(rng, _TILE))
    sc.assign_appearance(rng)
    cov = _add_coverage(seed, cfg, sc, tiles)
    atlas, x_offsets = _build_atlas(tiles)

    views, highlights = [], []
    for centre_x, cx in ((0.0, cam.cx), (cam.baseline, cam.cx_right)):
        depth, pid, ca, cb = _render_view(sc.planes, cam, centre_x, cx)
        img = _shade_view(sc.planes, atlas, x_offsets, depth, pid, ca, cb)
        highlights.append(_add_highlights(img, sc.planes, pid, cam, cx, cov.specular))
        views.append((depth, pid, img))
    # Visibility of the finite surfaces first (the sky, at infinity, never occludes anything).
    nonocc = _visible_in_right(sc.planes, cam, views[0][0], views[0][1])
    sky = _add_sky(seed, cfg, views)
    if sky is not None:
        # A point at infinity shows at the same pixel in both views: seen iff nothing covers it there.
        nonocc = np.where(sky[0], sky[1], nonocc)
    (depth_l, pid_l, img_l), (depth_r, _, img_r) = views
    if nuisance:
        img_l, img_r = _nuisance(rng, img_l), _nuisance(rng, img_r)

    fb = np.float32(cam.fx * cam.baseline)
    disparity = (fb / depth_l - np.float32(cam.doffs)).astype(np.float32)
    disparity_right = (fb / depth_r - np.float32(cam.doffs)).astype(np.float32)
    return StereoSample(left=_to_uint8(img_l), right=_to_uint8(img_r), disparity=disparity,
                        depth=depth_l.astype(np.float32), nonoccluded=nonocc, camera=cam,
                        disparity_right=disparity_right,
                        regions=_region_masks(sc.planes, pid_l, cov, None if sky is None else sky[0],
                                              highlights[0]))


class ProceduralStereoDataset(Dataset):
    """Map-style dataset of procedural pairs; item ``i`` is always the same pair for a given ``seed``.

    Deterministic indexing (rather than a stream) makes training resumable and reproducible: a run that
    restarts at step ``k`` sees exactly the samples it would have seen.

    Items are dicts of tensors: ``left``/``right`` (3, H, W) float32 in [0, 1], ``disparity`` (1, H, W)
    float32 px, ``valid`` (1, H, W) bool (finite GT inside ``[0, max_disparity]``) and ``nonoccluded``
    (1, H, W) bool.  With ``crop`` the pair is rendered at ``(height, width)`` and a random
    ``(crop_h, crop_w)`` window is cut, so crops keep the full-image disparity statistics.  With
    ``augment`` the (cropped) pair then goes through :func:`scene_perception.data.augment.augment_pair`,
    seeded from the index like everything else.
    """

    def __init__(
        self,
        length: int,
        width: int = 512,
        height: int = 256,
        max_disparity: float = 96.0,
        min_disparity: float = 2.0,
        seed: int = 0,
        crop: tuple[int, int] | None = None,
        nuisance: bool = True,
        texture_dir: str | Path | None = None,
        scene: SceneConfig | None = None,
        augment: bool | AugmentConfig = False,
        **camera: Any,
    ) -> None:
        if length <= 0:
            raise ValueError(f"dataset length must be > 0, got {length}")
        if crop is not None and (crop[0] > height or crop[1] > width):
            raise ValueError(f"crop {crop} is larger than the rendered size {(height, width)}")
        self.length = int(length)
        self.width, self.height = int(width), int(height)
        self.max_disparity, self.min_disparity = float(max_disparity), float(min_disparity)
        self.seed = int(seed)
        self.crop = crop
        self.nuisance = nuisance
        self.texture_dir = texture_dir
        self.scene = scene
        self.augment = bool(augment)
        # True: the default transforms; an AugmentConfig: those it sets (e.g. augment.CAMERA_EFFECTS).
        self.augment_config = augment if isinstance(augment, AugmentConfig) else None
        self.camera_kwargs = camera

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> StereoSample:
        """The raw :class:`StereoSample` behind item ``index`` (uncropped)."""
        # Mix seed and index through SeedSequence so neighbouring seeds do not give correlated scenes.
        item_seed = int(np.random.SeedSequence([self.seed, int(index)]).generate_state(1)[0])
        return make_stereo_sample(item_seed, width=self.width, height=self.height,
                                  max_disparity=self.max_disparity, min_disparity=self.min_disparity,
                                  nuisance=self.nuisance, texture_dir=self.texture_dir, scene=self.scene,
                                  **self.camera_kwargs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for dataset of length {self.length}")
        s = self.sample(index)
        left, right, disp, nonocc = s.left, s.right, s.disparity, s.nonoccluded
        if self.crop is not None:
            ch, cw = self.crop
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 1]))
            y0 = int(rng.integers(0, self.height - ch + 1))
            x0 = int(rng.integers(0, self.width - cw + 1))
            win = (slice(y0, y0 + ch), slice(x0, x0 + cw))
            left, right, disp, nonocc = left[win], right[win], disp[win], nonocc[win]
            # Cropping both views with the same window keeps x_l - x_r unchanged, so GT needs no offset.
        if self.augment:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 2]))
            left, right = augment_pair(rng, left, right, self.augment_config)
        valid = np.isfinite(disp) & (disp >= 0) & (disp <= self.max_disparity)
        return {
            "left": torch.from_numpy(np.ascontiguousarray(left.transpose(2, 0, 1))).float().div_(255.0),
            "right": torch.from_numpy(np.ascontiguousarray(right.transpose(2, 0, 1))).float().div_(255.0),
            "disparity": torch.from_numpy(np.ascontiguousarray(disp))[None],
            "valid": torch.from_numpy(np.ascontiguousarray(valid))[None],
            "nonoccluded": torch.from_numpy(np.ascontiguousarray(nonocc))[None],
        }
