"""Cityscapes reader: stereo pair, SGM disparity, camera and fine labels mapped to this package's classes.

Layout (``<split>`` = train | val | test, one folder per city)::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    rightImg8bit/<split>/<city>/<city>_<seq>_<frame>_rightImg8bit.png
    disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png   uint16, d = (v - 1) / 256, 0 = unknown
    camera/<split>/<city>/<city>_<seq>_<frame>_camera.json        extrinsic.baseline (m), intrinsic fx..v0
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png   (optional) labelId * 1000 + k

**The disparity is not ground truth**: Cityscapes computed it with semi-global matching, so scoring a
matcher against it measures agreement with SGM (with SGM's holes and errors), not accuracy.  The labels are
real annotations; :data:`CITYSCAPES_TO_CLASSES` maps them to :data:`scene_perception.models.labels.CLASSES`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from scene_perception.data.datasets.sample import (
    IGNORE_LABEL,
    DatasetError,
    DatasetSample,
    StereoDataset,
    read_png_unchanged,
    read_rgb,
)
from scene_perception.geometry.stereo_camera import CameraModelError, StereoCamera
from scene_perception.models.labels import (
    BUILDING,
    CAR,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    THING_CLASSES,
    VEGETATION,
)

__all__ = ["CITYSCAPES_TO_CLASSES", "CityscapesDataset", "map_cityscapes_instances", "map_cityscapes_labels",
           "read_cityscapes_disparity"]

log = logging.getLogger(__name__)

#: Cityscapes ``labelIds`` -> our class id; every id not listed is ignored (255).  Choices: wall joins
#: building (both "construction" walls in the street world); rider joins person; truck, bus, caravan and
#: trailer join car (our only vehicle); pole group joins pole.  Ignored because no class of ours fits
#: them: parking, rail track, fence, guard rail, bridge, tunnel, traffic light / sign, train, motorcycle,
#: bicycle, and the void ids 0-6.
CITYSCAPES_TO_CLASSES: dict[int, int] = {
    7: ROAD, 8: SIDEWALK, 11: BUILDING, 12: BUILDING, 17: POLE, 18: POLE, 21: VEGETATION, 22: TERRAIN,
    23: SKY, 24: PERSON, 25: PERSON, 26: CAR, 27: CAR, 28: CAR, 29: CAR, 30: CAR,
}
_LUT = np.full(256, IGNORE_LABEL, np.uint8)
for _k, _v in CITYSCAPES_TO_CLASSES.items():
    _LUT[_k] = _v


def map_cityscapes_labels(label_ids: np.ndarray) -> np.ndarray:
    """(H, W) Cityscapes labelIds -> (H, W) uint8 ids of our classes, 255 = ignore."""
    ids = np.asarray(label_ids)
    if ids.dtype != np.uint8:
        ids = np.where((ids >= 0) & (ids < 256), ids, 0).astype(np.uint8)
    return _LUT[ids]


def map_cityscapes_instances(instance_ids: np.ndarray) -> np.ndarray:
    """(H, W) Cityscapes instanceIds -> (H, W) uint16 object ids 1..K, 0 elsewhere.

    Cityscapes stores ``labelId * 1000 + k`` on pixels of an annotated object and the bare ``labelId``
    elsewhere (stuff, and crowds such as a car group).  An object is kept when its label maps to one of our
    *thing* classes (car, person; poles have no instances in Cityscapes, so pole pixels are 0 = no target,
    never "stuff"); ids are renumbered 1..K in order of first appearance in raster order.
    """
    ids = np.asarray(instance_ids).astype(np.int64)
    labels = np.where(ids >= 1000, ids // 1000, 0)
    mapped = _LUT[np.clip(labels, 0, 255)]
    keep = (ids >= 1000) & np.isin(mapped, sorted(THING_CLASSES))
    out = np.zeros(ids.shape, np.uint16)
    if keep.any():
        _, first, inverse = np.unique(ids[keep], return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first))  # value index -> its order of first appearance
        out[keep] = (rank[inverse.ravel()] + 1).astype(np.uint16)
    return out


def read_cityscapes_disparity(path: str | Path) -> np.ndarray:
    """float32 px from a Cityscapes disparity PNG: ``(v - 1) / 256`` for v > 0, NaN for v = 0."""
    raw = read_png_unchanged(path)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(f"{path}: Cityscapes disparity must be a 16-bit single-channel PNG")
    disp = (raw.astype(np.float32) - 1.0) / np.float32(256.0)
    disp[raw == 0] = np.nan
    return disp


class _Frame(NamedTuple):
    stem: str  # <city>_<seq>_<frame>
    city: str
    left: Path
    right: Path
    disparity: Path | None
    camera: Path | None
    labels: Path | None
    instances: Path | None


class CityscapesDataset(StereoDataset):
    """Cityscapes frames of one ``split`` (default ``val``, the one with public labels not used for training)
    under ``root`` (the folder holding ``leftImg8bit/``)."""

    name = "cityscapes"
    layout = "leftImg8bit/<split>/<city>/*_leftImg8bit.png with rightImg8bit/, disparity/, camera/, gtFine/"

    def __init__(self, root: str | Path, split: str = "val", require_gt: bool = True) -> None:
        super().__init__(root)
        self.split = split
        left_root = self.root / "leftImg8bit" / split
        frames = []
        for left in sorted(left_root.glob("*/*_leftImg8bit.png")):
            city = left.parent.name
            stem = left.name[: -len("_leftImg8bit.png")]

            def path(kind: str, suffix: str, city: str = city, stem: str = stem) -> Path | None:
                p = self.root / kind / split / city / f"{stem}_{suffix}"
                return p if p.is_file() else None

            right = path("rightImg8bit", "rightImg8bit.png")
            if right is None:
                continue
            frame = _Frame(stem, city, left, right, path("disparity", "disparity.png"),
                           path("camera", "camera.json"), path("gtFine", "gtFine_labelIds.png"),
                           path("gtFine", "gtFine_instanceIds.png"))
            if require_gt and frame.disparity is None and frame.labels is None:
                continue
            frames.append(frame)
        self._items = frames
        self._require_items()

    def _name(self, item: Any) -> str:
        return f"{item.city}/{item.stem}"

    def _load(self, item: Any) -> DatasetSample:
        frame: _Frame = item
        left, right = read_rgb(frame.left), read_rgb(frame.right)
        h, w = left.shape[:2]
        disparity = read_cityscapes_disparity(frame.disparity) if frame.disparity is not None else None
        semantic = None
        if frame.labels is not None:
            ids = read_png_unchanged(frame.labels)
            semantic = map_cityscapes_labels(ids if ids.ndim == 2 else ids[:, :, 0])
        instance = None
        if frame.instances is not None:
            raw = read_png_unchanged(frame.instances)
            instance = map_cityscapes_instances(raw if raw.ndim == 2 else raw[:, :, 0])
        camera = None
        if frame.camera is not None:
            try:
                cam = json.loads(frame.camera.read_text(encoding="utf-8"))
                intr, extr = cam["intrinsic"], cam["extrinsic"]
                camera = StereoCamera(width=w, height=h, fx=float(intr["fx"]), fy=float(intr["fy"]),
                                      cx=float(intr["u0"]), cy=float(intr["v0"]), cx_right=float(intr["u0"]),
                                      baseline=float(extr["baseline"]))
            except (KeyError, ValueError, TypeError, CameraModelError) as exc:
                log.warning("%s: camera unusable (%s)", frame.camera, exc)
        return DatasetSample(self._name(frame), left, right, disparity, None, camera, semantic=semantic,
                             instance=instance)
