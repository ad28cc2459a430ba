"""A plain folder of rectified left/right pairs without ground truth (self-supervised training, demos).

Pairs are found below ``root`` (any depth up to 4) in three forms:

* ``.../left/<name>`` with ``.../right/<name>`` beside it;
* files whose name contains ``left`` / ``Left`` / ``LEFT`` with the ``right`` counterpart in the same
  folder (``left01.jpg`` + ``right01.jpg``, ``0001_left.png`` + ``0001_right.png``);
* ``im0.png`` + ``im1.png`` in one folder (Middlebury naming).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from scene_perception.data.datasets.sample import DatasetSample, StereoDataset, read_rgb, relative_name

__all__ = ["StereoFolder"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_MAX_DEPTH = 4


class _Pair(NamedTuple):
    left: Path
    right: Path
    name: str


def _right_name(name: str) -> str | None:
    for left, right in (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT")):
        i = name.rfind(left)
        if i >= 0:
            return name[:i] + right + name[i + len(left):]
    return None


class StereoFolder(StereoDataset):
    """Left/right pairs under ``root`` (see the module docstring); samples have no GT."""

    name = "folder"
    layout = "left/ + right/ folders with equal file names, *left*/*right* file pairs, or im0.png + im1.png"

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        pairs: dict[Path, _Pair] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            d = Path(dirpath)
            dirnames.sort()
            if len(d.relative_to(self.root).parts) >= _MAX_DEPTH:
                dirnames[:] = []
            images = sorted(f for f in filenames if f.lower().endswith(_IMAGE_SUFFIXES))
            right_dir = d.parent / (_right_name(d.name) or d.name)
            if d.name in ("left", "Left", "LEFT") and right_dir.is_dir():
                for f in images:
                    if (right_dir / f).is_file():
                        rel = relative_name(d.parent, self.root)
                        pairs[d / f] = _Pair(d / f, right_dir / f, f"{rel}/{Path(f).stem}")
                continue
            if "im0.png" in images and "im1.png" in images:
                pairs[d / "im0.png"] = _Pair(d / "im0.png", d / "im1.png", relative_name(d, self.root))
                continue
            for f in images:
                r = _right_name(f)
                if r is not None and r != f and (d / r).is_file():
                    stem = Path(f).stem
                    rel = d.relative_to(self.root).as_posix()
                    pairs[d / f] = _Pair(d / f, d / r, stem if rel == "." else f"{rel}/{stem}")
        self._items = sorted(pairs.values(), key=lambda p: p.name)
        self._require_items()

    def _name(self, item: Any) -> str:
        return item.name

    def _load(self, item: Any) -> DatasetSample:
        pair: _Pair = item
        return DatasetSample(pair.name, read_rgb(pair.left), read_rgb(pair.right))
