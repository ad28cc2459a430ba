"""Readers of public stereo / scene datasets, all yielding one :class:`DatasetSample` (pure, no ROS).

============  =====================================================  =========================================
name          reader                                                 ground truth
============  =====================================================  =========================================
middlebury    :class:`~.middlebury.MiddleburyDataset` (2014, 2021,   disparity (PFM, inf unknown), non-occl.
              MiddEval3 F/H/Q)                                       mask (MiddEval3), calib.txt
eth3d         :class:`~.middlebury.ETH3DDataset` (two-view)          disparity, non-occluded mask, calib.txt
kitti2012     :class:`~.kitti.KittiDataset`                          disparity (uint16 / 256), noc, calib
kitti2015     :class:`~.kitti.KittiDataset`                          disparity (uint16 / 256), noc, calib
sceneflow     :class:`~.sceneflow.SceneFlowDataset`                  disparity (PFM), every pixel
cityscapes    :class:`~.cityscapes.CityscapesDataset`                SGM disparity (not GT), labels, camera
folder        :class:`~.folder.StereoFolder`                         none (self-supervised training, demos)
============  =====================================================  =========================================

These images are for evaluation (and for training only when a user chooses to train on a dataset they
downloaded, ``train stereo --dataset``): the package's shipped weights are never trained or tuned on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scene_perception.data.datasets.cityscapes import CityscapesDataset
from scene_perception.data.datasets.folder import StereoFolder
from scene_perception.data.datasets.kitti import KittiDataset
from scene_perception.data.datasets.middlebury import ETH3DDataset, MiddleburyDataset
from scene_perception.data.datasets.pfm import PFMError, read_pfm, write_pfm
from scene_perception.data.datasets.sample import (
    IGNORE_LABEL,
    DatasetError,
    DatasetSample,
    StereoDataset,
    read_png_unchanged,
    read_rgb,
)
from scene_perception.data.datasets.sceneflow import SceneFlowDataset

__all__ = [
    "DATASET_NAMES",
    "EVAL_DATASETS",
    "IGNORE_LABEL",
    "CityscapesDataset",
    "DatasetError",
    "DatasetSample",
    "ETH3DDataset",
    "KittiDataset",
    "MiddleburyDataset",
    "PFMError",
    "SceneFlowDataset",
    "StereoDataset",
    "StereoFolder",
    "open_dataset",
    "read_pfm",
    "read_png_unchanged",
    "read_rgb",
    "write_pfm",
]

#: Every reader name :func:`open_dataset` knows.
DATASET_NAMES: tuple[str, ...] = (
    "middlebury", "eth3d", "kitti2012", "kitti2015", "sceneflow", "cityscapes", "folder",
)
#: The names ``scene-perception eval --dataset`` accepts (the ones with disparity to score against).
EVAL_DATASETS: tuple[str, ...] = DATASET_NAMES[:-1]


def open_dataset(name: str, root: str | Path, **options: Any) -> StereoDataset:
    """The reader for ``name`` over ``root``; ``options`` go to its constructor (e.g. ``resolution="Q"``
    for middlebury, ``split="train"`` for sceneflow / cityscapes, ``require_gt=False``).

    Raises:
        DatasetError: unknown name, or nothing readable under ``root``.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key == "middlebury":
        return MiddleburyDataset(root, **options)
    if key == "eth3d":
        return ETH3DDataset(root, **options)
    if key in ("kitti2012", "kitti2015"):
        return KittiDataset(root, year=int(key[-4:]), **options)
    if key == "sceneflow":
        return SceneFlowDataset(root, **options)
    if key == "cityscapes":
        return CityscapesDataset(root, **options)
    if key == "folder":
        return StereoFolder(root, **options)
    raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
