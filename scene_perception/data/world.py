"""A persistent synthetic street world seen by a moving rectified stereo rig, with exact per-frame GT.

Why: the single-pair generator (:mod:`scene_perception.data.procedural`) gives exact disparity but no
temporal context, no semantics and no poses.  Sequences from one fixed world give all of that at once:
every frame comes with disparity, depth, non-occluded mask, semantic class, instance id and the camera pose,
and because the world does not change between frames, a world point keeps its position, its texture and its
class over time (what odometry, tracking and temporal fusion tests need).

The world (``map`` frame: x along the street, y to the left, z up, metres; ground at z = 0)
-----------------------------------------------------------------------------------------------
* a road (two driving lanes and a parking strip on each side, dashed centre line and solid lane edges),
  raised sidewalks with curb faces, grass (terrain) behind the building line;
* buildings along both sides (boxes with window-grid or photo facades, random widths, heights, setbacks and
  gaps), a second row of taller buildings behind them and a wall closing the far end of the street;
* parked cars in the parking strips and a few standing in the oncoming lane (body, cabin, axles), people on
  the sidewalks (legs, torso, head), lamp poles at the curb, trees (trunk + canopy clusters), hedges;
* the sky at infinity: colour is a function of the viewing direction in the world (gradient + clouds),
  depth ``inf``, disparity ``-doffs`` (0 for the usual cameras with ``cx_right == cx``).

Things and stuff: ``car``, ``person`` and ``pole`` are *things* and each object gets an instance id, unique
over the whole world (hence over a whole sequence) and stable across frames.  Everything else (sky, road,
sidewalk, building, vegetation, terrain) is *stuff* with instance 0 -- as in the Cityscapes/KITTI panoptic
conventions (buildings and trees there are stuff too), so the labels are comparable with real data.

Exactness and disparity range come from :mod:`scene_perception.data.raycast` (ray casting, z-buffers, exact
segment occlusion tests, view-consistent texturing).  The camera path keeps its lane clear (every object is
at least about a metre to the side), and a near clipping depth ``z_near = fx * B / (max_disparity +
doffs)`` *guarantees* that no pixel exceeds ``max_disparity`` whatever the layout.

Photo textures may come from a directory (``tools/fetch_textures.sh`` fills ``.cache/textures``); without
one the world is fully procedural.  Images that come with stereo ground truth are evaluation data and are
refused as textures (see the project notes).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scene_perception.data.procedural import (
    _TILE,
    _build_atlas,
    _load_photos,
    _nuisance,
    _photo_texture,
    _procedural_texture,
    _tileable_noise,
    _to_uint8,
)
from scene_perception.data.raycast import (
    Quads,
    ViewWindows,
    cast_view,
    nonoccluded_left,
    texture_view,
    view_windows,
)
from scene_perception.geometry.stereo_camera import StereoCamera

# The label set is defined in models/labels.py (the network, the pipelines and the evaluations share it);
# these names stay importable from here, the world that renders them.
from scene_perception.models.labels import (
    BUILDING,
    CAR,
    CLASSES,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    THING_CLASSES,
    VEGETATION,
    SemanticClass,
    colourise_semantic,
)

__all__ = [
    "BUILDING",
    "CAR",
    "CLASSES",
    "PERSON",
    "POLE",
    "ROAD",
    "SIDEWALK",
    "SKY",
    "TERRAIN",
    "THING_CLASSES",
    "VEGETATION",
    "SemanticClass",
    "World",
    "WorldConfig",
    "WorldFrame",
    "colourise_semantic",
    "generate_sequence",
    "make_world",
    "street_trajectory",
    "world_camera",
]


@dataclass
class WorldFrame:
    """One rendered stereo frame and its exact ground truth (left view unless stated otherwise).

    ``disparity`` follows the matcher convention ``d = x_left - x_right``; pixels at infinity (sky) have
    ``depth = inf`` and ``disparity = -doffs`` (0 when ``cx_right == cx``, as for :func:`world_camera`).
    ``nonoccluded`` is True where the left pixel's point (or direction) is visible in the right image.
    ``pose`` is ``world_T_camera`` for the *left optical* frame (x right, y down, z forward).
    """

    index: int
    stamp_ns: int
    left: np.ndarray  # (H, W, 3) uint8 RGB
    right: np.ndarray  # (H, W, 3) uint8 RGB
    disparity: np.ndarray  # (H, W) float32 px
    depth: np.ndarray  # (H, W) float32 m, inf for sky
    nonoccluded: np.ndarray  # (H, W) bool
    semantic: np.ndarray  # (H, W) uint8 class id
    instance: np.ndarray  # (H, W) uint16, 0 = stuff
    camera: StereoCamera
    pose: np.ndarray  # (4, 4) float64 world_T_camera

    @property
    def occluded(self) -> np.ndarray:
        return ~self.nonoccluded


@dataclass(frozen=True)
class WorldConfig:
    """Street statistics (ranges are sampled uniformly per world or per object).

    Defaults describe a European-looking city street; all distances in metres.
    """

    lane_width: tuple[float, float] = (3.0, 3.5)
    parking_width: float = 2.3
    sidewalk_width: tuple[float, float] = (2.5, 4.5)
    curb_height: tuple[float, float] = (0.10, 0.16)
    building_width: tuple[float, float] = (6.0, 20.0)
    building_depth: tuple[float, float] = (8.0, 16.0)
    building_height: tuple[float, float] = (4.0, 16.0)
    building_gap_probability: float = 0.3
    building_gap: tuple[float, float] = (1.5, 7.0)
    parked_car_probability: float = 0.6
    oncoming_car_spacing: tuple[float, float] = (25.0, 70.0)
    people_per_100m: float = 8.0  # per side
    pole_spacing: tuple[float, float] = (18.0, 35.0)
    tree_spacing: tuple[float, float] = (8.0, 18.0)
    tree_probability: float = 0.6
    hedge_probability: float = 0.3
    photo_probability: float = 0.35  # share of facade / clothing / foliage tiles made from photos
    camera_height: float = 1.5
    behind: float = 30.0  # world extent behind the start of the trajectory


# ----------------------------------------------------------------------------------------- textures
def _pblur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with periodic borders (tiles repeat, so a seam would be a false texture edge)."""
    pad = int(math.ceil(3 * sigma)) + 1
    widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (img.ndim - 2)
    return cv2.GaussianBlur(np.pad(img, widths, mode="wrap"), (0, 0), sigma)[pad:-pad, pad:-pad]


def _fractal(rng: np.random.Generator, size: int, cells: int, octaves: int, persistence: float = 0.55
             ) -> np.ndarray:
    """Periodic fractal value noise in [0, 1] with an explicit coarsest scale (``cells`` per tile)."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        out += amp * _tileable_noise(rng, size, min(cells * 2**k, size // 4))
        total += amp
        amp *= persistence
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _grain(rng: np.random.Generator, size: int, sigma: float = 0.7) -> np.ndarray:
    """Periodic unit-variance grain at about a texel: the pixel-scale detail stereo matching relies on."""
    g = _pblur(rng.normal(0.0, 1.0, (size, size)).astype(np.float32), sigma)
    return g / max(float(g.std()), 1e-6)


def _streaks(rng: np.random.Generator, size: int, max_freq: int) -> np.ndarray:
    """Periodic 1-D noise along x (columns), in [0, 1]: vertical streaks for bark and metal."""
    x = np.arange(size, dtype=np.float32)
    out = np.zeros(size, np.float32)
    for k in range(1, max_freq + 1):
        out += rng.normal() / k**0.7 * np.sin(2 * np.pi * k * x / size + rng.uniform(0, 2 * np.pi))
    out = (out - out.min()) / max(float(out.max() - out.min()), 1e-6)
    return np.broadcast_to(out[None, :], (size, size))


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) * (1 + rng.uniform(-amount, amount, 3)), 0, 1).astype(
        np.float32)


_T = _TILE


def _asphalt(rng: np.random.Generator) -> np.ndarray:
    base = _jitter(rng, [rng.uniform(0.2, 0.34)] * 3, 0.05)
    img = base * (0.85 + 0.3 * _fractal(rng, _T, 4, 4))[..., None]
    img += 0.03 * _grain(rng, _T, 0.6)[..., None]
    speckle = _pblur((rng.random((_T, _T)) < 0.03).astype(np.float32), 0.6)
    img += 0.5 * speckle[..., None]
    return img


def _paving(rng: np.random.Generator) -> np.ndarray:
    """Running-bond slabs with dark joints (per-slab brightness jitter): strong, regular texture."""
    colours = [(0.62, 0.6, 0.57), (0.7, 0.66, 0.6), (0.58, 0.38, 0.32), (0.5, 0.5, 0.52)]
    colour = _jitter(rng, colours[int(rng.integers(len(colours)))], 0.05)
    k = int(rng.choice([2, 4, 4, 8]))
    slab = _T // k
    yy, xx = np.mgrid[0:_T, 0:_T]
    row = yy // slab
    xs = (xx + (row % 2) * (slab // 2)) % _T
    jitter = 1 + 0.07 * rng.normal(size=(k, k)).astype(np.float32)
    slab_gain = jitter[row, xs // slab]
    joint = ((xs % slab) < 2) | ((yy % slab) < 2)
    shade = _pblur(np.where(joint, 0.55, 1.0).astype(np.float32), 0.6)
    img = colour * (slab_gain * shade * (0.9 + 0.2 * _fractal(rng, _T, 8, 3)))[..., None]
    return img + 0.03 * _grain(rng, _T)[..., None]


def _concrete(rng: np.random.Generator) -> np.ndarray:
    base = _jitter(rng, [rng.uniform(0.5, 0.7)] * 3, 0.04)
    img = base * (0.88 + 0.24 * _fractal(rng, _T, 8, 3))[..., None]
    return img + 0.035 * _grain(rng, _T)[..., None]


def _grass(rng: np.random.Generator) -> np.ndarray:
    dark = _jitter(rng, (0.12, 0.2, 0.06), 0.2)
    light = _jitter(rng, (0.35, 0.48, 0.18), 0.2)
    t = _fractal(rng, _T, 16, 3)
    img = dark + t[..., None] * (light - dark)
    return img + 0.05 * _grain(rng, _T, 0.6)[..., None]


def _facade(rng: np.random.Generator, wall_photo: np.ndarray | None) -> np.ndarray:
    """One window bay (tile = one storey x one bay): wall, framed window with reflections, sill."""
    walls = [(0.82, 0.76, 0.64), (0.7, 0.7, 0.7), (0.6, 0.32, 0.25), (0.9, 0.89, 0.86), (0.52, 0.46, 0.4),
             (0.78, 0.62, 0.46), (0.62, 0.66, 0.7)]
    wall_c = _jitter(rng, walls[int(rng.integers(len(walls)))], 0.06)
    wall = wall_c * (0.9 + 0.2 * _fractal(rng, _T, 4, 3))[..., None]
    if wall_photo is not None:
        # Photo structure, tinted towards a plausible wall colour so facades do not look like posters.
        lum = wall_photo.mean(axis=-1, keepdims=True)
        wall = 0.5 * wall_photo + 0.5 * wall_c * (0.6 + 0.8 * lum)
    elif rng.random() < 0.3:  # brick courses
        course = int(rng.choice([4, 8]))
        yy, xx = np.mgrid[0:_T, 0:_T]
        brick = 4 * course
        xs = (xx + ((yy // course) % 2) * (brick // 2)) % brick
        mortar = ((yy % course) == 0) | (xs == 0)
        wall = wall * np.where(mortar, 1.25, 1.0).astype(np.float32)[..., None]
    img = wall.astype(np.float32)
    ww, wh = int(rng.integers(40, 84)), int(rng.integers(44, 86))
    x0 = (_T - ww) // 2
    y0 = int(rng.integers(12, _T - wh - 8))
    glass_c = _jitter(rng, (0.12, 0.16, 0.22), 0.4)
    refl = _fractal(rng, _T, 2, 3)[..., None]
    grad = np.linspace(1.3, 0.7, _T, dtype=np.float32)[:, None, None]
    glass = glass_c * grad + 0.25 * refl * np.array([0.6, 0.7, 0.8], np.float32)
    frame_c = np.array([0.92, 0.92, 0.9] if rng.random() < 0.6 else [0.15, 0.14, 0.13], np.float32)
    f = int(rng.integers(2, 5))
    img[y0:y0 + wh, x0:x0 + ww] = frame_c
    img[y0 + f:y0 + wh - f, x0 + f:x0 + ww - f] = glass[y0 + f:y0 + wh - f, x0 + f:x0 + ww - f]
    if rng.random() < 0.5:  # mullion
        img[y0:y0 + wh, _T // 2 - 1:_T // 2 + 1] = frame_c
    sill = min(_T - 1, y0 + wh + 3)
    img[y0 + wh:sill, max(0, x0 - 3):min(_T, x0 + ww + 3)] = frame_c * 0.9
    img = _pblur(img, 0.5)  # keep window edges resolvable at the chosen mip level
    return img + 0.02 * _grain(rng, _T)[..., None]


def _paint(rng: np.random.Generator) -> np.ndarray:
    colours = [(0.9, 0.9, 0.9), (0.06, 0.06, 0.07), (0.62, 0.63, 0.65), (0.35, 0.36, 0.38), (0.6, 0.07, 0.07),
               (0.1, 0.2, 0.5), (0.1, 0.28, 0.16), (0.75, 0.68, 0.52), (0.85, 0.55, 0.1)]
    c = _jitter(rng, colours[int(rng.integers(len(colours)))], 0.05)
    img = c * (0.9 + 0.2 * _fractal(rng, _T, 2, 3))[..., None]
    return img + 0.02 * _grain(rng, _T)[..., None]


def _glass(rng: np.random.Generator) -> np.ndarray:
    c = _jitter(rng, (0.1, 0.12, 0.15), 0.3)
    img = c + 0.3 * _fractal(rng, _T, 2, 4)[..., None] * np.array([0.55, 0.62, 0.7], np.float32)
    return img + 0.015 * _grain(rng, _T)[..., None]


def _rubber(rng: np.random.Generator) -> np.ndarray:
    c = np.full(3, rng.uniform(0.05, 0.1), np.float32)
    return c * (0.85 + 0.3 * _fractal(rng, _T, 8, 2))[..., None] + 0.015 * _grain(rng, _T)[..., None]


def _skin(rng: np.random.Generator) -> np.ndarray:
    tones = [(0.95, 0.8, 0.7), (0.85, 0.65, 0.5), (0.6, 0.42, 0.3), (0.4, 0.27, 0.2)]
    c = _jitter(rng, tones[int(rng.integers(len(tones)))], 0.05)
    return c * (0.92 + 0.16 * _fractal(rng, _T, 4, 3))[..., None] + 0.015 * _grain(rng, _T)[..., None]


def _metal(rng: np.random.Generator) -> np.ndarray:
    c = _jitter(rng, [rng.uniform(0.3, 0.7)] * 3, 0.05)
    img = c * (0.8 + 0.25 * _streaks(rng, _T, 24) + 0.1 * _fractal(rng, _T, 4, 2))[..., None]
    return img + 0.02 * _grain(rng, _T)[..., None]


def _bark(rng: np.random.Generator) -> np.ndarray:
    c = _jitter(rng, (0.32, 0.24, 0.17), 0.15)
    img = c * (0.6 + 0.5 * _streaks(rng, _T, 40) + 0.2 * _fractal(rng, _T, 8, 3))[..., None]
    return img + 0.03 * _grain(rng, _T)[..., None]


def _foliage(rng: np.random.Generator, photo: np.ndarray | None) -> np.ndarray:
    """Leaf clusters and dark gaps in greens; from a photo, its luminance drives the same green palette."""
    dark = _jitter(rng, (0.04, 0.09, 0.03), 0.3)
    light = _jitter(rng, (0.25, 0.42, 0.12), 0.25)
    if photo is not None:
        lum = photo.mean(axis=-1)
        t = (lum - lum.min()) / max(float(lum.max() - lum.min()), 1e-6)
    else:
        t = np.clip((_fractal(rng, _T, 16, 3) - 0.3) / 0.4, 0.0, 1.0)
    tone = (0.8 + 0.4 * _fractal(rng, _T, 4, 2))[..., None]
    img = dark + t[..., None] * (light * tone - dark)
    return img + 0.04 * _grain(rng, _T, 0.6)[..., None]


def _line_paint(rng: np.random.Generator) -> np.ndarray:
    c = np.full(3, rng.uniform(0.78, 0.9), np.float32)
    return c * (0.88 + 0.2 * _fractal(rng, _T, 8, 3))[..., None] + 0.03 * _grain(rng, _T)[..., None]


def _sky_texture(rng: np.random.Generator, width: int = 1024, height: int = 256) -> np.ndarray:
    """Sky colour over (elevation 0..90 deg) x (azimuth 0..360 deg): gradient plus fractal clouds.

    A function of world direction only, so both views and every frame agree on it.  One texel is about
    0.35 degrees, a few pixels for usual cameras, so bilinear sampling stays band-limited.  One wrapped
    column is padded on each side for the azimuth seam.
    """
    horizon = _jitter(rng, (0.82, 0.86, 0.9), 0.06)
    zenith = _jitter(rng, (0.3, 0.5, 0.82), 0.12)
    el = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None] ** 0.6
    base = horizon + el * (zenith - horizon)
    clouds = _fractal(rng, width, 4, 6, 0.5)[:height]
    cover = float(rng.uniform(0.0, 0.6))
    c = np.clip((clouds - (1.0 - cover)) / 0.2, 0.0, 1.0)[..., None]
    cloud_col = np.float32(rng.uniform(0.85, 1.0)) * (0.8 + 0.2 * clouds[..., None])
    sky = (base * (1 - c) + cloud_col * c).astype(np.float32)
    return np.pad(np.clip(sky, 0, 1), ((0, 0), (1, 1), (0, 0)), mode="wrap")


# File names of public images that come with stereo / flow ground truth, beyond procedural's prefix list:
# the OpenCV chessboard stereo pairs (left01.jpg ... right14.jpg).
_EVAL_PATTERN = re.compile(r"^(left|right)\d+\.", re.IGNORECASE)


def _photos(texture_dir: str | Path | None) -> tuple[np.ndarray, ...]:
    """Photo tiles source; empty (procedural only) without a directory or when it holds no images."""
    if texture_dir is None:
        return ()
    tex_dir = Path(texture_dir).resolve()
    if not tex_dir.is_dir():
        raise FileNotFoundError(f"texture directory {tex_dir} does not exist (run tools/fetch_textures.sh?)")
    for path in tex_dir.iterdir():
        if _EVAL_PATTERN.match(path.name):
            raise ValueError(f"{path} looks like a stereo evaluation image: it must never be a texture")
    try:
        return _load_photos(str(tex_dir), tex_dir.stat().st_mtime_ns)  # also refuses evaluation images
    except FileNotFoundError:
        warnings.warn(f"no images in texture directory {tex_dir}; using procedural textures only",
                      stacklevel=3)
        return ()


class _Tiles:
    """Texture tiles grouped by material; the world refers to them by pool name and random index."""

    def __init__(self, rng: np.random.Generator, photos: tuple[np.ndarray, ...], photo_p: float) -> None:
        self.tiles: list[np.ndarray] = []
        self.pools: dict[str, list[int]] = {}

        def photo() -> np.ndarray | None:
            if photos and rng.random() < photo_p:
                return _photo_texture(rng, photos, _T)
            return None

        def clothing() -> np.ndarray:
            p = photo()
            return p if p is not None else _procedural_texture(rng, _T)

        makers = {
            "asphalt": (1, lambda: _asphalt(rng)),
            "line": (1, lambda: _line_paint(rng)),
            "paving": (2, lambda: _paving(rng)),
            "concrete": (1, lambda: _concrete(rng)),
            "grass": (1, lambda: _grass(rng)),
            "facade": (12, lambda: _facade(rng, photo())),
            "paint": (8, lambda: _paint(rng)),
            "glass": (2, lambda: _glass(rng)),
            "rubber": (1, lambda: _rubber(rng)),
            "clothing": (10, clothing),
            "skin": (3, lambda: _skin(rng)),
            "metal": (2, lambda: _metal(rng)),
            "bark": (2, lambda: _bark(rng)),
            "foliage": (5, lambda: _foliage(rng, photo())),
        }
        for name, (count, make) in makers.items():
            self.pools[name] = []
            for _ in range(count):
                self.pools[name].append(len(self.tiles))
                self.tiles.append(np.clip(make(), 0.0, 1.0).astype(np.float32))

    def pick(self, rng: np.random.Generator, pool: str) -> int:
        p = self.pools[pool]
        return p[int(rng.integers(len(p)))]


# ----------------------------------------------------------------------------------------- geometry
_DOWN = np.array([0.0, 0.0, -1.0])
_UP = np.array([0.0, 0.0, 1.0])


@dataclass
class _Builder:
    """Accumulates world quads with appearance, semantic label and instance id."""

    rng: np.random.Generator
    sun: np.ndarray
    ambient: float
    rows: list[tuple] = field(default_factory=list)

    def quad(self, origin: Sequence[float], e1: Sequence[float], e2: Sequence[float],
             bounds: tuple[float, float, float, float], *, tile: int, texel: float, label: int,
             instance: int = 0, tint: Sequence[float] = (1.0, 1.0, 1.0),
             offset: tuple[float, float] = (0.0, 0.0)) -> None:
        e1a, e2a = np.asarray(e1, np.float64), np.asarray(e2, np.float64)
        n = np.cross(e1a, e2a)
        # Lambertian shading under a fixed sun: a property of the surface, so constant over frames.
        shade = self.ambient + (1.0 - self.ambient) * max(0.0, float(n @ self.sun))
        self.rows.append((np.asarray(origin, np.float64), e1a, e2a, bounds, tile, texel,
                          (offset[0] % _T, offset[1] % _T), np.asarray(tint, np.float32) * shade, label,
                          instance))

    def box(self, centre: Sequence[float], size: Sequence[float], yaw: float, *, tile: int, texel: float,
            label: int, instance: int = 0, tint: Sequence[float] = (1.0, 1.0, 1.0),
            faces: str = "+x-x+y-y+z", top_tile: int | None = None, align: bool = False) -> None:
        """An upright box (bottom centre ``centre``, ``size`` = length, width, height, rotated by ``yaw``).

        ``faces`` lists the faces to emit (local axes; hidden ones are left out to save render time).
        ``align`` starts the texture at each vertical face's bottom-left corner (facades: storeys sit on
        the ground); otherwise one random offset is shared by the box's faces.
        """
        cx, cy, cz = (float(v) for v in centre)
        lx, ly, lz = (float(v) for v in size)
        u = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        w = np.array([-math.sin(yaw), math.cos(yaw), 0.0])
        mid = np.array([cx, cy, cz + lz / 2])
        rand_off = (float(self.rng.uniform(0, _T)), float(self.rng.uniform(0, _T)))
        for name, axis, half_n, half_w in (("+x", u, lx / 2, ly / 2), ("-x", -u, lx / 2, ly / 2),
                                           ("+y", w, ly / 2, lx / 2), ("-y", -w, ly / 2, lx / 2)):
            if name not in faces:
                continue
            # e2 points down so texture rows run top to bottom; e1 = e2 x n keeps e1 x e2 = n (outward).
            e1 = np.cross(_DOWN, axis)
            off = (half_w / texel, -lz / 2 / texel) if align else rand_off
            self.quad(mid + axis * half_n, e1, _DOWN, (-half_w, half_w, -lz / 2, lz / 2), tile=tile,
                      texel=texel, label=label, instance=instance, tint=tint, offset=off)
        if "+z" in faces:
            self.quad((cx, cy, cz + lz), u, w, (-lx / 2, lx / 2, -ly / 2, ly / 2),
                      tile=top_tile if top_tile is not None else tile, texel=texel, label=label,
                      instance=instance, tint=tint, offset=rand_off)

    def build(self) -> Quads:
        cols = list(zip(*self.rows, strict=True))
        return Quads(origin=np.array(cols[0]), e1=np.array(cols[1]), e2=np.array(cols[2]),
                     bounds=np.array(cols[3], np.float64), cull=np.ones(len(self.rows), bool),
                     tile=np.array(cols[4], np.int32), texel=np.array(cols[5], np.float64),
                     tex_offset=np.array(cols[6], np.float64), tint=np.array(cols[7], np.float32),
                     label=np.array(cols[8], np.uint8), instance=np.array(cols[9], np.uint16))


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


class _StreetLayout:
    """Places everything; keeps the camera corridor (the right driving lane) free of objects."""

    def __init__(self, rng: np.random.Generator, cfg: WorldConfig, tiles: _Tiles, x_min: float, x_max: float
                 ) -> None:
        self.rng, self.cfg, self.tiles = rng, cfg, tiles
        self.x_min, self.x_max = x_min, x_max
        sun_el, sun_az = math.radians(rng.uniform(25, 65)), rng.uniform(0, 2 * math.pi)
        sun = np.array([math.cos(sun_el) * math.cos(sun_az), math.cos(sun_el) * math.sin(sun_az),
                        math.sin(sun_el)])
        self.b = _Builder(rng, sun, float(rng.uniform(0.45, 0.7)))
        self.lane = _u(rng, cfg.lane_width)
        self.road_half = self.lane + cfg.parking_width
        self.curb = _u(rng, cfg.curb_height)
        self.next_instance = 1
        self.instance_class: dict[int, int] = {}
        self.occupied: list[tuple[float, float, float]] = []  # (x, y, radius) of sidewalk objects

    def _instance(self, label: int) -> int:
        i = self.next_instance
        if i > np.iinfo(np.uint16).max:
            raise ValueError("too many object instances for uint16 ids; use a shorter world")
        self.next_instance += 1
        self.instance_class[i] = label
        return i

    def _free(self, x: float, y: float, r: float) -> bool:
        return all((x - ox) ** 2 + (y - oy) ** 2 > (r + orad) ** 2 for ox, oy, orad in self.occupied)

    def build(self) -> Quads:
        self._ground()
        for side in (-1.0, 1.0):
            line = self.road_half + _u(self.rng, self.cfg.sidewalk_width)
            self._sidewalk(side, line)
            self._buildings(side, line)
            self._poles(side)
            self._trees(side)
            self._people(side, line)
            self._parked_cars(side)
        self._oncoming_cars()
        return self.b.build()

    # -- surfaces
    def _ground(self) -> None:
        rng, b, t = self.rng, self.b, self.tiles
        length = self.x_max - self.x_min
        xm = 0.5 * (self.x_min + self.x_max)
        b.quad((xm, 0.0, 0.0), (1, 0, 0), (0, 1, 0),
               (-length / 2, length / 2, -self.road_half, self.road_half), tile=t.pick(rng, "asphalt"),
               texel=0.015, label=ROAD,
               offset=(float(rng.uniform(0, _T)), float(rng.uniform(0, _T))))
        line_tile = t.pick(rng, "line")
        # Markings are real (thin) geometry a few millimetres above the asphalt, not texture: their position
        # is independent of the tiling, and dashes are separate quads with asphalt between them.
        for y in (-self.lane, self.lane):
            b.quad((xm, y, 0.004), (1, 0, 0), (0, 1, 0), (-length / 2, length / 2, -0.06, 0.06),
                   tile=line_tile, texel=0.01, label=ROAD)
        dash, period = float(rng.uniform(2.5, 4.0)), float(rng.uniform(6.0, 10.0))
        x = self.x_min + float(rng.uniform(0, period))
        while x + dash < self.x_max:
            b.quad((x + dash / 2, 0.0, 0.004), (1, 0, 0), (0, 1, 0), (-dash / 2, dash / 2, -0.06, 0.06),
                   tile=line_tile, texel=0.01, label=ROAD)
            x += period

    def _sidewalk(self, side: float, line: float) -> None:
        rng, b, t = self.rng, self.b, self.tiles
        length = self.x_max - self.x_min
        xm = 0.5 * (self.x_min + self.x_max)
        n = np.array([0.0, -side, 0.0])  # curb face looks at the road
        b.quad((xm, side * self.road_half, self.curb / 2), np.cross(_DOWN, n), _DOWN,
               (-length / 2, length / 2, -self.curb / 2, self.curb / 2), tile=t.pick(rng, "concrete"),
               texel=0.008, label=SIDEWALK)
        inner, outer = self.road_half, line + 2.0  # 2 m beyond the building line covers setbacks
        b.quad((xm, side * (inner + outer) / 2, self.curb), (1, 0, 0), (0, 1, 0),
               (-length / 2, length / 2, -(outer - inner) / 2, (outer - inner) / 2),
               tile=t.pick(rng, "paving"), texel=float(rng.uniform(0.008, 0.014)), label=SIDEWALK)
        far = line + 45.0
        b.quad((xm, side * (outer + far) / 2, self.curb), (1, 0, 0), (0, 1, 0),
               (-length / 2, length / 2, -(far - outer) / 2, (far - outer) / 2), tile=t.pick(rng, "grass"),
               texel=0.015, label=TERRAIN)

    def _facade_box(self, x0: float, width: float, y_front: float, side: float, depth: float, height: float,
                    faces: str) -> None:
        rng = self.rng
        bay = float(rng.uniform(2.6, 3.8))
        tint = 1.0 + rng.uniform(-0.08, 0.08, 3)
        self.b.box((x0 + width / 2, y_front + side * depth / 2, 0.0), (width, depth, height), 0.0,
                   tile=self.tiles.pick(rng, "facade"), texel=bay / _T, label=BUILDING, tint=tint,
                   faces=faces, align=True)

    def _buildings(self, side: float, line: float) -> None:
        rng, cfg = self.rng, self.cfg
        front = "-y" if side > 0 else "+y"
        x = self.x_min - 10.0
        while x < self.x_max + 10.0:
            width = _u(rng, cfg.building_width)
            if rng.random() < cfg.building_gap_probability:
                gap = _u(rng, cfg.building_gap)
                if rng.random() < cfg.hedge_probability * 2:
                    self._hedge(x + gap / 2, side * (line + 1.0), gap * 0.8)
                x += gap
            setback = float(rng.uniform(0.0, 1.5)) if rng.random() < 0.5 else 0.0
            self._facade_box(x, width, side * (line + setback), side, _u(rng, cfg.building_depth),
                             _u(rng, cfg.building_height), front + "+x-x")
            if rng.random() < cfg.hedge_probability / 2:
                hedge = width * float(rng.uniform(0.3, 0.8))
                self._hedge(x + width / 2, side * (line + setback - 0.5), hedge)
            x += width
        # A taller second row fills the gaps, and a wall closes the far end of the street.
        x = self.x_min - 10.0
        while x < self.x_max + 10.0:
            width = float(rng.uniform(15.0, 40.0))
            self._facade_box(x, width, side * (line + float(rng.uniform(18.0, 28.0))), side, 15.0,
                             float(rng.uniform(6.0, 22.0)), front + "+x-x")
            x += width
        if side > 0:
            span = line + 60.0
            self.b.box((self.x_max + 10.0, 0.0, 0.0), (10.0, 2 * span, float(rng.uniform(8.0, 20.0))), 0.0,
                       tile=self.tiles.pick(rng, "facade"), texel=3.2 / _T, label=BUILDING, faces="-x",
                       align=True)

    # -- objects
    def _hedge(self, x: float, y: float, length: float) -> None:
        rng = self.rng
        if length < 0.8:
            return
        depth = float(rng.uniform(0.6, 1.0))
        self.b.box((x, y, self.curb), (length, depth, float(rng.uniform(0.6, 1.3))), 0.0,
                   tile=self.tiles.pick(rng, "foliage"), texel=0.012, label=VEGETATION)

    def _poles(self, side: float) -> None:
        rng, b, t, cfg = self.rng, self.b, self.tiles, self.cfg
        y = side * (self.road_half + 0.45)
        x = self.x_min + _u(rng, cfg.pole_spacing) / 2
        while x < self.x_max:
            inst = self._instance(POLE)
            height = float(rng.uniform(4.5, 8.0))
            tile = t.pick(rng, "metal")
            thick = float(rng.uniform(0.12, 0.2))
            b.box((x, y, self.curb), (thick, thick, height), 0.0, tile=tile, texel=0.008, label=POLE,
                  instance=inst)
            arm = float(rng.uniform(1.2, 2.2))
            z_arm = self.curb + height - 0.3
            b.box((x, y - side * arm / 2, z_arm), (0.08, arm, 0.08), 0.0, tile=tile, texel=0.008, label=POLE,
                  instance=inst)
            b.box((x, y - side * arm, z_arm - 0.12), (0.5, 0.26, 0.14), 0.0, tile=tile, texel=0.008,
                  label=POLE, instance=inst)
            self.occupied.append((x, y, 0.5))
            x += _u(rng, cfg.pole_spacing)

    def _trees(self, side: float) -> None:
        rng, b, t, cfg = self.rng, self.b, self.tiles, self.cfg
        x = self.x_min + float(rng.uniform(0, cfg.tree_spacing[1]))
        while x < self.x_max:
            y = side * (self.road_half + float(rng.uniform(0.9, 1.3)))
            if rng.random() < cfg.tree_probability and self._free(x, y, 1.0):
                trunk_h = float(rng.uniform(2.0, 3.2))
                thick = float(rng.uniform(0.2, 0.35))
                b.box((x, y, self.curb), (thick, thick, trunk_h), float(rng.uniform(0, math.pi)),
                      tile=t.pick(rng, "bark"), texel=0.008, label=VEGETATION)
                leaves = t.pick(rng, "foliage")
                for _ in range(int(rng.integers(2, 5))):
                    sx, sy = rng.uniform(1.2, 2.6, 2)
                    ox, oy = rng.uniform(-0.6, 0.6, 2)
                    b.box((x + ox, y + oy, self.curb + trunk_h - 0.3 + float(rng.uniform(0, 0.8))),
                          (sx, sy, float(rng.uniform(1.2, 2.2))), float(rng.uniform(0, math.pi)), tile=leaves,
                          texel=float(rng.uniform(0.008, 0.015)), label=VEGETATION)
                self.occupied.append((x, y, 1.0))
            x += _u(rng, cfg.tree_spacing)

    def _people(self, side: float, line: float) -> None:
        rng, b, t = self.rng, self.b, self.tiles
        count = int(rng.poisson(self.cfg.people_per_100m * (self.x_max - self.x_min) / 100.0))
        for _ in range(count):
            x = float(rng.uniform(self.x_min, self.x_max))
            y = side * float(rng.uniform(self.road_half + 0.5, line - 0.3))
            if not self._free(x, y, 0.4):
                continue
            inst = self._instance(PERSON)
            yaw = float(rng.uniform(0, 2 * math.pi))
            legs, torso = float(rng.uniform(0.72, 0.92)), float(rng.uniform(0.52, 0.68))
            z = self.curb
            b.box((x, y, z), (0.3, 0.2, legs), yaw, tile=t.pick(rng, "clothing"), texel=0.006, label=PERSON,
                  instance=inst)
            b.box((x, y, z + legs), (0.44, 0.26, torso), yaw, tile=t.pick(rng, "clothing"), texel=0.006,
                  label=PERSON, instance=inst)
            b.box((x, y, z + legs + torso), (0.2, 0.2, 0.24), yaw, tile=t.pick(rng, "skin"), texel=0.004,
                  label=PERSON, instance=inst)
            self.occupied.append((x, y, 0.4))

    def _car(self, x: float, y: float, yaw: float, length: float) -> None:
        """One car (body, cabin, two axles) centred at (x, y)."""
        rng, b, t = self.rng, self.b, self.tiles
        inst = self._instance(CAR)
        width = float(rng.uniform(1.7, 1.9))
        paint, glass, rubber = t.pick(rng, "paint"), t.pick(rng, "glass"), t.pick(rng, "rubber")
        c, s = math.cos(yaw), math.sin(yaw)
        for ax in (-1.0, 1.0):
            d = ax * (length / 2 - 0.8)
            b.box((x + c * d, y + s * d, 0.0), (0.62, width - 0.1, 0.62), yaw, tile=rubber, texel=0.008,
                  label=CAR, instance=inst)
        b.box((x, y, 0.3), (length, width, 0.6), yaw, tile=paint, texel=0.012, label=CAR, instance=inst)
        cab = length * float(rng.uniform(0.45, 0.6))
        d = float(rng.uniform(-0.4, 0.1))
        b.box((x + c * d, y + s * d, 0.9), (cab, width - 0.12, float(rng.uniform(0.4, 0.55))), yaw,
              tile=glass, top_tile=paint, texel=0.012, label=CAR, instance=inst)

    def _parked_cars(self, side: float) -> None:
        rng, cfg = self.rng, self.cfg
        y0 = side * (self.road_half - cfg.parking_width / 2)
        x = self.x_min + float(rng.uniform(0, 5))
        while x < self.x_max:
            if rng.random() < cfg.parked_car_probability:
                yaw = (0.0 if side < 0 else math.pi) + math.radians(float(rng.uniform(-3, 3)))
                length = float(rng.uniform(3.8, 4.9))
                self._car(x + length / 2, y0 + float(rng.uniform(-0.15, 0.15)), yaw, length)
                x += length + float(rng.uniform(0.6, 3.0))
            else:
                x += float(rng.uniform(3.0, 8.0))

    def _oncoming_cars(self) -> None:
        rng = self.rng
        x = self.x_min + _u(rng, self.cfg.oncoming_car_spacing)
        while x < self.x_max:
            self._car(x, self.lane / 2, math.pi + math.radians(float(rng.uniform(-2, 2))),
                      float(rng.uniform(3.8, 4.9)))
            x += _u(rng, self.cfg.oncoming_car_spacing)


# ----------------------------------------------------------------------------------------- world
@dataclass
class World:
    """A fixed street scene; :meth:`render` draws it from any pose with exact ground truth.

    ``lane_y`` is the centre of the (object-free) right driving lane and ``camera_height`` the rig height
    the layout was made for; :func:`street_trajectory` uses both.  ``instance_class`` maps every instance
    id to its class.
    """

    seed: int
    config: WorldConfig
    quads: Quads
    atlas: np.ndarray
    x_offsets: np.ndarray
    sky: np.ndarray
    lane_y: float
    x_range: tuple[float, float]
    instance_class: dict[int, int]

    @property
    def camera_height(self) -> float:
        return self.config.camera_height

    def _sky_colour(self, rotation: np.ndarray, cam: StereoCamera, cx: float, mask: np.ndarray) -> np.ndarray:
        """Sky colours for the ``mask`` pixels of a view: a function of the world direction only."""
        vs, us = np.nonzero(mask)
        d = np.stack([(us - cx) / cam.fx, (vs - cam.cy) / cam.fy, np.ones(len(us))], axis=1) @ rotation.T
        az = np.arctan2(d[:, 1], d[:, 0])
        el = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))
        hs, ws = self.sky.shape[0], self.sky.shape[1] - 2
        mx = (np.mod(az / (2 * np.pi), 1.0) * ws + 0.5).astype(np.float32)  # +1 pad, -0.5 texel centre
        my = (np.clip(el / (np.pi / 2), 0.0, 1.0) * (hs - 1)).astype(np.float32)
        # remap needs 2-D maps under 32k columns: fold the list of pixels into rows of 1024.
        k = len(us)
        cols = 1024
        rows = max(1, -(-k // cols))
        mxp = np.zeros(rows * cols, np.float32)
        myp = np.zeros(rows * cols, np.float32)
        mxp[:k], myp[:k] = mx, my
        col = cv2.remap(self.sky, mxp.reshape(rows, cols), myp.reshape(rows, cols), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        return col.reshape(-1, 3)[:k]

    def _view(self, quads: Quads, rotation: np.ndarray, cam: StereoCamera, centre_x: float, cx: float,
              z_near: float) -> tuple[ViewWindows, np.ndarray, np.ndarray, np.ndarray]:
        """Cast and colour one view (sky included); returns its windows, depth, quad ids and float image."""
        vw = view_windows(quads, cam, centre_x, cx, z_near)
        depth, pid, ca, cb = cast_view(quads, cam, centre_x, cx, z_near, vw)
        img = texture_view(quads, self.atlas, self.x_offsets, cam, centre_x, cx, depth, pid, ca, cb)
        sky = pid < 0
        if sky.any():
            img[sky] = self._sky_colour(rotation, cam, cx, sky)
        return vw, depth, pid, img

    def render(self, pose: np.ndarray, camera: StereoCamera, stamp_ns: int = 0, index: int = 0, *,
               max_disparity: float | None = None, nuisance: bool = False) -> WorldFrame:
        """Render the stereo pair whose left optical frame is at ``pose`` (world_T_camera, 4x4).

        ``max_disparity`` (px, default ``96 * width / 512``) sets the near clipping depth, so no pixel's
        disparity exceeds it.  ``nuisance`` adds per-view gain/bias/noise seeded by (world seed, index), so
        re-rendering a frame gives the same images.
        """
        pose = np.asarray(pose, np.float64)
        if pose.shape != (4, 4):
            raise ValueError(f"pose must be a 4x4 world_T_camera matrix, got shape {pose.shape}")
        rot, trans = pose[:3, :3], pose[:3, 3]
        max_d = float(max_disparity) if max_disparity is not None else 96.0 * camera.width / 512.0
        if max_d + camera.doffs <= 0:
            raise ValueError(f"max_disparity {max_d} must exceed -doffs = {-camera.doffs}")
        z_near = camera.focal_baseline / (max_d + camera.doffs)
        quads = self.quads.transformed(rot, trans)
        _, depth_l, pid_l, img_l = self._view(quads, rot, camera, 0.0, camera.cx, z_near)
        vw_r, depth_r, _, img_r = self._view(quads, rot, camera, camera.baseline, camera.cx_right, z_near)
        nonocc = nonoccluded_left(quads, camera, depth_l, pid_l, z_near, vw_r, depth_r)
        if nuisance:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 0x4E55]))
            img_l, img_r = _nuisance(rng, img_l), _nuisance(rng, img_r)
        with np.errstate(divide="ignore"):
            disparity = np.float32(camera.focal_baseline) / depth_l - np.float32(camera.doffs)
        hit = pid_l >= 0
        idx = np.maximum(pid_l, 0)
        semantic = np.where(hit, self.quads.label[idx], np.uint8(SKY)).astype(np.uint8)
        instance = np.where(hit, self.quads.instance[idx], np.uint16(0)).astype(np.uint16)
        return WorldFrame(index=int(index), stamp_ns=int(stamp_ns), left=_to_uint8(img_l),
                          right=_to_uint8(img_r), disparity=disparity.astype(np.float32),
                          depth=depth_l.astype(np.float32), nonoccluded=nonocc,
                          semantic=semantic, instance=instance, camera=camera, pose=pose.copy())


def make_world(seed: int, length: float = 200.0, texture_dir: str | Path | None = None,
               config: WorldConfig | None = None) -> World:
    """Build the street world for ``seed`` (same arguments -> identical world).

    Args:
        seed: any non-negative int; layout, textures and sky all derive from it.
        length: metres of street ahead of x = 0 (the trajectory start); add the distance the camera should
            still see at the last frame.  ``config.behind`` metres are added behind x = 0.
        texture_dir: optional photo directory (see :func:`_photos`); None gives procedural textures only.
        config: street statistics (:class:`WorldConfig`).
    """
    if length <= 0:
        raise ValueError(f"world length must be > 0 metres, got {length}")
    cfg = config or WorldConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x3D57]))
    tiles = _Tiles(rng, _photos(texture_dir), cfg.photo_probability)
    atlas, x_offsets = _build_atlas(tiles.tiles)
    sky = _sky_texture(rng)
    x_min, x_max = -float(cfg.behind), float(length)
    layout = _StreetLayout(rng, cfg, tiles, x_min, x_max)
    quads = layout.build()
    return World(seed=int(seed), config=cfg, quads=quads, atlas=atlas, x_offsets=x_offsets, sky=sky,
                 lane_y=-layout.lane / 2, x_range=(x_min, x_max), instance_class=dict(layout.instance_class))


# ----------------------------------------------------------------------------------------- camera / path
# Camera optical axes expressed in the world at zero yaw/pitch: x right = -y_w, y down = -z_w, z fwd = x_w.
_OPTICAL_IN_WORLD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _pose(x: float, y: float, z: float, yaw: float, pitch: float) -> np.ndarray:
    """world_T_camera for a level rig at (x, y, z) heading ``yaw`` (about z_w), pitched down by ``pitch``."""
    cz, sz = math.cos(yaw), math.sin(yaw)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    cp, sp = math.cos(pitch), math.sin(pitch)
    # Rotation about the camera x axis taking the optical z (forward) towards +y (down): pitch down.
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    pose = np.eye(4)
    pose[:3, :3] = rz @ _OPTICAL_IN_WORLD @ rx
    pose[:3, 3] = (x, y, z)
    return pose


def street_trajectory(frames: int, fps: float = 10.0, speed: float = 8.0, seed: int = 0, *,
                      start_x: float = 0.0, lane_y: float = -1.6, height: float = 1.5, sway: float = 0.25,
                      yaw_deg: float = 2.0, pitch_deg: float = 0.5) -> list[np.ndarray]:
    """Smooth forward drive along +x_w: ``frames`` poses (world_T_camera, left optical frame) at ``fps``.

    Lateral sway (two slow sinusoids, total amplitude ``sway`` m), heading that follows the path plus a
    gentle yaw oscillation (``yaw_deg``), a slight downward pitch (``pitch_deg``, with a 0.3 degree wobble)
    and a centimetre of bounce: enough rotation to exercise pose handling, smooth enough to be a car.
    ``speed`` is in m/s (0 gives a rig that only sways in place).
    """
    if frames < 0 or fps <= 0 or speed < 0:
        raise ValueError(f"need frames >= 0, fps > 0, speed >= 0; got {frames}, {fps}, {speed}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7A1]))
    w1, w2, w3, w4, w5 = (2 * math.pi / float(rng.uniform(*p)) for p in
                          ((6.0, 12.0), (2.5, 5.0), (3.0, 7.0), (1.5, 4.0), (0.5, 1.2)))
    p1, p2, p3, p4, p5 = rng.uniform(0, 2 * math.pi, 5)
    a1 = 0.7 * sway
    a2 = 0.3 * sway
    poses = []
    for k in range(frames):
        t = k / fps
        y = lane_y + a1 * math.sin(w1 * t + p1) + a2 * math.sin(w2 * t + p2)
        y_dot = a1 * w1 * math.cos(w1 * t + p1) + a2 * w2 * math.cos(w2 * t + p2)
        heading = math.atan2(y_dot, speed) if speed > 0 else 0.0
        yaw = heading + math.radians(yaw_deg) * math.sin(w3 * t + p3)
        pitch = math.radians(pitch_deg + 0.3 * math.sin(w4 * t + p4))
        z = height + 0.01 * math.sin(w5 * t + p5)
        poses.append(_pose(start_x + speed * t, y, z, yaw, pitch))
    return poses


def world_camera(width: int = 512, height: int = 256, fx: float | None = None, baseline: float = 0.12,
                 frame_id: str = "world_left_optical") -> StereoCamera:
    """The rig the sequences use: square pixels, centred principal points (doffs = 0), fx = 0.8 * width
    by default (about 64 degrees horizontal field of view, as in :mod:`procedural`)."""
    f = float(fx) if fx is not None else 0.8 * width
    return StereoCamera(width=int(width), height=int(height), fx=f, fy=f, cx=(width - 1) / 2.0,
                        cy=(height - 1) / 2.0, cx_right=(width - 1) / 2.0, baseline=float(baseline),
                        frame_id=frame_id)


def generate_sequence(seed: int, frames: int, width: int = 512, height: int = 256, fps: float = 10.0,
                      texture_dir: str | Path | None = None, baseline: float = 0.12, fx: float | None = None,
                      *, speed: float = 8.0, max_disparity: float | None = None, nuisance: bool = False,
                      start_ns: int = 0, view_distance: float = 150.0, config: WorldConfig | None = None,
                      trajectory_seed: int | None = None, lateral_offset: float = 0.0, start_x: float = 0.0,
                      sway: float = 0.25, world_length: float | None = None) -> Iterator[WorldFrame]:
    """Lazily render ``frames`` frames of a drive through the world of ``seed``.

    The world is made long enough for the drive plus ``view_distance`` metres of street ahead of the last
    frame; stamps are ``start_ns + round(i * 1e9 / fps)``.  See :meth:`World.render` for ``max_disparity``
    and ``nuisance``.

    Several drives through *one* world (what camera relocalisation trains and tests on): the layout depends
    on the world's length, so give every drive the same ``world_length`` (metres ahead of x = 0) and vary
    the trajectory with ``trajectory_seed`` (sway/yaw phases; default ``seed``), ``lateral_offset`` (metres
    added to the lane centre, +y = left), ``start_x``, ``speed``, ``fps`` and ``sway`` (lateral amplitude).
    """
    cam = world_camera(width, height, fx, baseline)
    drive_end = start_x + speed * frames / fps
    if world_length is None:
        length = drive_end + view_distance
    elif world_length < drive_end:
        raise ValueError(f"world_length {world_length} m is shorter than the drive (ends at x = {drive_end})")
    else:
        length = float(world_length)
    world = make_world(seed, length=length, texture_dir=texture_dir, config=config)
    poses = street_trajectory(frames, fps, speed, seed if trajectory_seed is None else trajectory_seed,
                              start_x=start_x, lane_y=world.lane_y + lateral_offset,
                              height=world.camera_height, sway=sway)
    for i, pose in enumerate(poses):
        yield world.render(pose, cam, stamp_ns=int(start_ns) + round(i * 1e9 / fps), index=i,
                           max_disparity=max_disparity, nuisance=nuisance)
