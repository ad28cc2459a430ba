"""SceneFlow readers (FlyingThings3D, Monkaa, Driving; Mayer et al. 2016).

Layout (each subset as downloaded; a root may hold several subsets)::

    <subset>/frames_cleanpass|frames_finalpass/<path>/left/<n>.png   (and .../right/<n>.png)
    <subset>/disparity/<path>/left/<n>.pfm                           left GT disparity, px

``<path>`` is ``TRAIN|TEST/A|B|C/<seq>`` in FlyingThings3D, ``<scene>`` in Monkaa and
``<focal>/<direction>/<speed>`` in Driving.  Every pixel has GT; the customary protocol (GC-Net, PSMNet,
GwcNet) searches 0..192 px and scores pixels with GT below 192, which ``max_disparity`` and
``max_evaluated_disparity`` carry.  Camera: fx 1050 px (Driving's ``15mm_focallength``: 450 px), principal
point at the image centre, baseline "1.0 unit" (the renders have no metric scale).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from scene_perception.data.datasets.pfm import read_pfm
from scene_perception.data.datasets.sample import (
    DatasetError,
    DatasetSample,
    StereoDataset,
    read_rgb,
    relative_name,
)
from scene_perception.geometry.stereo_camera import StereoCamera

__all__ = ["SCENEFLOW_MAX_DISPARITY", "SceneFlowDataset"]

#: The customary search range and scoring bound (px at 960x540).
SCENEFLOW_MAX_DISPARITY = 192.0
_IMAGE_SUFFIXES = (".png", ".webp", ".jpg")


class _Pair(NamedTuple):
    left: Path
    right: Path
    disparity: Path | None
    name: str
    focal: float


class SceneFlowDataset(StereoDataset):
    """SceneFlow pairs under ``root``.

    Args:
        root: a subset folder (``FlyingThings3D``), the folder holding subsets, or a ``frames_*pass`` dir.
        render_pass: ``clean`` or ``final``; None: ``final`` where a subset has it, else ``clean``.
        split: ``test`` (FlyingThings3D's TEST part), ``train`` (everything else) or ``all``; None: ``test``
            when any pair is under a ``TEST`` folder, else ``all``.
    """

    name = "sceneflow"
    layout = ("<subset>/frames_cleanpass|frames_finalpass/.../left/*.png with right/ beside and "
              "<subset>/disparity/.../left/*.pfm")

    def __init__(self, root: str | Path, render_pass: str | None = None, split: str | None = None,
                 require_gt: bool = True) -> None:
        super().__init__(root)
        if render_pass not in (None, "clean", "final"):
            raise DatasetError(f"sceneflow: render_pass must be clean or final, got {render_pass!r}")
        if split not in (None, "test", "train", "all"):
            raise DatasetError(f"sceneflow: split must be test, train or all, got {split!r}")
        pairs = [p for frames in self._frame_dirs(render_pass) for p in self._pairs(frames)]
        if require_gt:
            pairs = [p for p in pairs if p.disparity is not None]
        if split is None:
            split = "test" if any(_is_test(p.name) for p in pairs) else "all"
        if split == "test":
            pairs = [p for p in pairs if _is_test(p.name)]
        elif split == "train":
            pairs = [p for p in pairs if not _is_test(p.name)]
        self.split = split
        self._items = sorted(pairs, key=lambda p: p.name)
        self._require_items()

    def _frame_dirs(self, render_pass: str | None) -> list[Path]:
        """The ``frames_<pass>`` directories to read, one pass per subset."""
        found: dict[Path, dict[str, Path]] = {}
        if self.root.name.startswith("frames_"):
            candidates = [self.root]
        else:
            candidates = []
            for dirpath, dirnames, _ in os.walk(self.root):
                d = Path(dirpath)
                if len(d.relative_to(self.root).parts) >= 3:
                    dirnames[:] = []
                for n in list(dirnames):
                    if n in ("frames_cleanpass", "frames_finalpass"):
                        candidates.append(d / n)
                        dirnames.remove(n)  # do not walk 40 000 frames
        for c in candidates:
            found.setdefault(c.parent, {})[c.name.removeprefix("frames_").removesuffix("pass")] = c
        chosen = []
        for passes in found.values():
            want = render_pass or ("final" if "final" in passes else "clean")
            if want in passes:
                chosen.append(passes[want])
        return sorted(chosen)

    def _pairs(self, frames: Path) -> list[_Pair]:
        disparity_root = frames.parent / "disparity"
        pairs = []
        for dirpath, _, filenames in os.walk(frames):
            d = Path(dirpath)
            if d.name != "left":
                continue
            right_dir = d.parent / "right"
            rel = d.relative_to(frames)
            for f in sorted(filenames):
                if not f.endswith(_IMAGE_SUFFIXES) or not (right_dir / f).is_file():
                    continue
                disp = disparity_root / rel / (Path(f).stem + ".pfm")
                where = (rel.parent / Path(f).stem).as_posix()  # without the left/ folder
                name = f"{relative_name(frames.parent, self.root)}/{where}"
                focal = 450.0 if "15mm_focallength" in rel.parts else 1050.0
                pairs.append(_Pair(d / f, right_dir / f, disp if disp.is_file() else None, name, focal))
        return pairs

    def _name(self, item: Any) -> str:
        return item.name

    def _load(self, item: Any) -> DatasetSample:
        pair: _Pair = item
        left, right = read_rgb(pair.left), read_rgb(pair.right)
        h, w = left.shape[:2]
        disparity = None
        if pair.disparity is not None:
            disparity = read_pfm(pair.disparity)
            if disparity.ndim == 3:
                disparity = disparity[:, :, 0]
            disparity = disparity.copy()
            disparity[~np.isfinite(disparity)] = np.nan
        camera = StereoCamera(width=w, height=h, fx=pair.focal, fy=pair.focal, cx=(w - 1) / 2.0,
                              cy=(h - 1) / 2.0, cx_right=(w - 1) / 2.0, baseline=1.0)
        return DatasetSample(pair.name, left, right, disparity, None, camera,
                             max_disparity=SCENEFLOW_MAX_DISPARITY,
                             max_evaluated_disparity=SCENEFLOW_MAX_DISPARITY)


def _is_test(name: str) -> bool:
    return "/TEST/" in f"/{name}/"
