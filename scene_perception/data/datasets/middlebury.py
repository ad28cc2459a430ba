"""Middlebury 2014 / 2021 / MiddEval3 and ETH3D two-view readers (one layout: ``im0.png im1.png`` per scene).

Per scene directory::

    im0.png, im1.png          left / right (rectified)
    disp0GT.pfm | disp0.pfm   left GT disparity, px at this resolution, inf = unknown (MiddEval3, ETH3D:
                              disp0GT.pfm; Middlebury 2014 / 2021 full-size scenes: disp0.pfm)
    mask0nocc.png             255 = non-occluded, 128 = occluded, 0 = unknown (MiddEval3, ETH3D)
    calib.txt                 cam0=[f 0 cx; 0 f cy; 0 0 1], cam1=..., doffs, baseline (mm), width, height,
                              ndisp (a conservative bound: search d = 0 .. ndisp-1), ...

Resolutions.  MiddEval3 ships each scene at full (``trainingF``), half (``trainingH``) and quarter
(``trainingQ``) size, and the GT PFM of each is already in px *of that resolution*.  Only the range bound
needs care: the bound is scaled by ``image width / calib width``, so a calib.txt that states the
full-resolution ``width`` and ``ndisp`` next to half-size images gives half the range, and one written for
the images' own size is used as it is (the camera is scaled the same way).  When a root holds several
resolutions, one is chosen (``resolution``; default H, the one the MiddEval3 table is usually quoted at)
so that no scene is scored three times.

ETH3D two-view: images in ``two_view_training/<scene>/`` and GT in ``two_view_training_gt/<scene>/`` (two
downloads); both in one folder works too.  Its ``ndisp`` is a loose bound (often about the image width), so
it is not used as the range.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from scene_perception.data.datasets.pfm import read_pfm
from scene_perception.data.datasets.sample import (
    DatasetError,
    DatasetSample,
    StereoDataset,
    read_png_unchanged,
    read_rgb,
    relative_name,
)
from scene_perception.geometry.stereo_camera import CameraModelError, StereoCamera

__all__ = ["ETH3DDataset", "MiddleburyCalib", "MiddleburyDataset", "parse_calib"]

log = logging.getLogger(__name__)

_RESOLUTION_DIR = re.compile(r"^(training|test)([FHQ])$")
_MAX_DEPTH = 6  # directory levels searched below the root


class MiddleburyCalib(NamedTuple):
    """The calib.txt fields this package uses (None where absent)."""

    cam0: np.ndarray | None
    cam1: np.ndarray | None
    baseline_mm: float | None
    width: int | None
    height: int | None
    ndisp: float | None
    fields: dict[str, str]

    def camera(self, width: int, height: int) -> StereoCamera | None:
        """The rectified camera for ``width`` x ``height`` images (scaled from the calib's own size), or
        None when calib.txt lacks cam0 / cam1 / baseline or they do not describe a rectified pair."""
        if self.cam0 is None or self.cam1 is None or not self.baseline_mm:
            return None
        cw, ch = self.width or width, self.height or height
        try:
            cam = StereoCamera(width=cw, height=ch, fx=float(self.cam0[0, 0]), fy=float(self.cam0[1, 1]),
                               cx=float(self.cam0[0, 2]), cy=float(self.cam0[1, 2]),
                               cx_right=float(self.cam1[0, 2]), baseline=self.baseline_mm / 1000.0)
            if (cw, ch) != (width, height):
                cam = cam.scaled(width / cw, height / ch)
        except CameraModelError as exc:
            log.warning("calib.txt camera unusable (%s); no camera for this scene", exc)
            return None
        return cam

    def max_disparity(self, width: int) -> float | None:
        """``ndisp`` in px of ``width``-wide images (scaled by width / calib width)."""
        if not self.ndisp:
            return None
        return float(self.ndisp) * (width / self.width if self.width else 1.0)


def _matrix(text: str) -> np.ndarray:
    rows = [r.split() for r in text.strip().strip("[]").split(";")]
    m = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"expected a 3x3 matrix, got {m.shape}")
    return m


def parse_calib(path: str | Path) -> MiddleburyCalib:
    """Read a Middlebury / ETH3D ``calib.txt`` (``key=value`` lines; unknown keys kept in ``fields``)."""
    fields: dict[str, str] = {}
    for line in Path(path).read_text(encoding="ascii", errors="replace").splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip()

    def number(key: str) -> float | None:
        if key not in fields:
            return None
        try:
            return float(fields[key])
        except ValueError as exc:
            raise DatasetError(f"{path}: {key}={fields[key]!r} is not a number") from exc

    try:
        cam0 = _matrix(fields["cam0"]) if "cam0" in fields else None
        cam1 = _matrix(fields["cam1"]) if "cam1" in fields else None
    except ValueError as exc:
        raise DatasetError(f"{path}: bad camera matrix ({exc})") from exc
    width, height = number("width"), number("height")
    return MiddleburyCalib(cam0, cam1, number("baseline"), int(width) if width else None,
                           int(height) if height else None, number("ndisp"), fields)


class _Scene(NamedTuple):
    directory: Path
    gt: Path | None
    mask: Path | None
    calib: Path | None
    resolution: str | None  # F, H, Q for MiddEval3 directories


def _gt_dirs(scene: Path, root: Path) -> list[Path]:
    """Where a scene's GT may be: its own directory, then ETH3D's parallel ``<tree>_gt`` directory."""
    dirs = [scene]
    rel = scene.relative_to(root).parts
    for i, part in enumerate(rel):
        dirs.append(root.joinpath(*rel[:i], part + "_gt", *rel[i + 1:]))
    dirs.append(root.parent.joinpath(root.name + "_gt", *rel))  # root = two_view_training itself
    return dirs


def _first(dirs: list[Path], names: tuple[str, ...]) -> Path | None:
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


class MiddleburyDataset(StereoDataset):
    """Scenes under ``root`` (any depth up to 6: a MiddEval3 tree, ``trainingH``, a 2014/2021 folder of
    scenes, or one scene directory).

    Args:
        root: the directory to search.
        resolution: ``F``, ``H`` or ``Q`` to keep only that MiddEval3 resolution; None: all when the root
            holds one, else H (or the first present of H, Q, F).
        require_gt: skip scenes without GT (the MiddEval3 ``test*`` scenes); False keeps them (GT None).
        use_ndisp: take ``max_disparity`` from calib.txt's ``ndisp`` (scaled to the images' width).
    """

    name = "middlebury"
    layout = ("scene directories with im0.png, im1.png and disp0GT.pfm or disp0.pfm (+ mask0nocc.png, "
              "calib.txt), e.g. MiddEval3/trainingH/<Scene>/ or a 2014 / 2021 scene folder")
    gt_names: tuple[str, ...] = ("disp0GT.pfm", "disp0.pfm")
    use_ndisp_default = True

    def __init__(self, root: str | Path, resolution: str | None = None, require_gt: bool = True,
                 use_ndisp: bool | None = None) -> None:
        super().__init__(root)
        self.use_ndisp = self.use_ndisp_default if use_ndisp is None else bool(use_ndisp)
        scenes = self._discover()
        without_gt = [s for s in scenes if s.gt is None]
        if require_gt and without_gt:
            log.info("%s: %d scene(s) without GT skipped (e.g. %s)", self.name, len(without_gt),
                     relative_name(without_gt[0].directory, self.root))
            scenes = [s for s in scenes if s.gt is not None]
        resolutions = sorted({s.resolution for s in scenes if s.resolution})
        if resolution is not None:
            resolution = resolution.upper()
            if resolution not in ("F", "H", "Q"):
                raise DatasetError(f"{self.name}: resolution must be F, H or Q, got {resolution!r}")
            scenes = [s for s in scenes if s.resolution in (resolution, None)]
        elif len(resolutions) > 1:
            chosen = next(r for r in ("H", "Q", "F") if r in resolutions)
            log.info("%s: %s holds resolutions %s; using %s (pass resolution=, or point --root at "
                     "training%s)", self.name, self.root, "/".join(resolutions), chosen, "F|H|Q")
            scenes = [s for s in scenes if s.resolution in (chosen, None)]
        self.resolution = resolution
        self._items = scenes
        if not self._items and without_gt and require_gt:
            raise DatasetError(f"{self.name}: the scenes under {self.root} have no GT "
                               f"({', '.join(self.gt_names)}); the test splits have none")
        self._require_items()

    def _discover(self) -> list[_Scene]:
        scenes: list[_Scene] = []
        root = self.root
        for dirpath, dirnames, filenames in os.walk(root):
            d = Path(dirpath)
            depth = len(d.relative_to(root).parts)
            dirnames.sort()
            if depth >= _MAX_DEPTH:
                dirnames[:] = []
            names = set(filenames)
            if not {"im0.png", "im1.png"} <= names:
                continue
            gt_dirs = _gt_dirs(d, root)
            res = next((m.group(2) for p in d.relative_to(root.parent).parts
                        if (m := _RESOLUTION_DIR.match(p))), None)
            scenes.append(_Scene(d, _first(gt_dirs, self.gt_names), _first(gt_dirs, ("mask0nocc.png",)),
                                 _first([d, *gt_dirs[1:]], ("calib.txt",)), res))
        return sorted(scenes, key=lambda s: s.directory.as_posix())

    def _name(self, item: Any) -> str:
        return relative_name(item.directory, self.root)

    def _load(self, item: Any) -> DatasetSample:
        scene: _Scene = item
        name = self._name(scene)
        left, right = read_rgb(scene.directory / "im0.png"), read_rgb(scene.directory / "im1.png")
        h, w = left.shape[:2]
        disparity = nonocc = None
        if scene.gt is not None:
            disparity = read_pfm(scene.gt)
            if disparity.ndim != 2:
                raise DatasetError(f"{scene.gt}: GT disparity must have one channel")
            disparity = disparity.copy()
            disparity[~np.isfinite(disparity)] = np.nan  # inf = unknown
        if scene.mask is not None:
            mask = read_png_unchanged(scene.mask)
            if mask.ndim == 3:
                mask = mask[:, :, 0]
            nonocc = mask == 255
        camera, max_disparity = None, None
        if scene.calib is not None:
            calib = parse_calib(scene.calib)
            camera = calib.camera(w, h)
            if self.use_ndisp:
                max_disparity = calib.max_disparity(w)
        return DatasetSample(name, left, right, disparity, nonocc, camera, max_disparity)


class ETH3DDataset(MiddleburyDataset):
    """ETH3D two-view (``two_view_training/<scene>/im0.png ...`` + ``two_view_training_gt/<scene>/``)."""

    name = "eth3d"
    layout = ("two_view_training/<scene>/im0.png, im1.png, calib.txt and two_view_training_gt/<scene>/"
              "disp0GT.pfm, mask0nocc.png (or all in one scene directory)")
    gt_names = ("disp0GT.pfm",)
    use_ndisp_default = False

    def _discover(self) -> list[_Scene]:
        # The GT tree itself holds no images, so it is never taken for scenes; skip it quickly anyway.
        return [s for s in super()._discover() if not s.directory.parent.name.endswith("_gt")]
