"""Training on downloaded datasets (``train stereo --dataset NAME:ROOT[:WEIGHT],...``) mixed with the
procedural synthetic world, index-seeded like the synthetic data so resuming and DDP stay exact.

* :class:`DatasetCrops`: item ``i`` of a reader (:mod:`scene_perception.data.datasets`) as a training crop.
  Only augmentation that keeps the GT right: the *same* window in both views (``x_l - x_r`` unchanged, no
  horizontal flip, which would turn the pair into a right-to-left one), a uniform shrink when the pair's
  disparities exceed the training range (images area-resized, GT nearest-sampled and multiplied by the same
  factor), padding of pairs smaller than the crop (padded GT invalid), and with ``augment`` the photometric
  / right-view nuisance of :func:`scene_perception.data.augment.augment_pair`, as for synthetic pairs.
* :class:`MixedStereoDataset`: item ``i`` is drawn from component ``k`` with probability ``weight_k / sum``
  (a draw seeded by ``(seed, i)``), then that component's item ``i``: the sampler in ``training/stereo.py``
  already hands each rank disjoint indices per step, so torchrun DDP needs nothing else.

This is the user's choice for the datasets they downloaded; the package's shipped weights are trained on the
procedural world only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from scene_perception.data.augment import augment_pair
from scene_perception.data.datasets import DATASET_NAMES, DatasetError, StereoDataset, open_dataset

__all__ = ["DatasetCrops", "DatasetSpec", "MixedStereoDataset", "parse_dataset_specs"]


@dataclass(frozen=True)
class DatasetSpec:
    """One ``NAME:ROOT[:WEIGHT]`` entry."""

    name: str
    root: str
    weight: float = 1.0


def parse_dataset_specs(text: str | None) -> list[DatasetSpec]:
    """``NAME:ROOT[:WEIGHT]`` entries separated by ``,`` (or ``;``); WEIGHT (default 1) is the sampling
    proportion.  Raises ValueError naming the bad entry."""
    specs: list[DatasetSpec] = []
    for raw in (text or "").replace(";", ",").split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, rest = entry.partition(":")
        if not sep or not rest:
            raise ValueError(f"dataset {entry!r}: expected NAME:ROOT[:WEIGHT]")
        root, weight = rest, 1.0
        head, sep2, tail = rest.rpartition(":")
        if sep2 and head:
            try:
                weight = float(tail)
                root = head
            except ValueError:
                pass  # a ':' inside the path
        if name not in DATASET_NAMES:
            raise ValueError(f"dataset {entry!r}: unknown name {name!r}; known: {', '.join(DATASET_NAMES)}")
        if not weight > 0:
            raise ValueError(f"dataset {entry!r}: weight must be > 0, got {weight}")
        specs.append(DatasetSpec(name, root, weight))
    return specs


def _tensors(left: np.ndarray, right: np.ndarray, disparity: np.ndarray, nonoccluded: np.ndarray,
             max_disparity: float) -> dict[str, torch.Tensor]:
    """The item layout of :class:`~scene_perception.data.procedural.ProceduralStereoDataset` (unknown GT
    is 0 and invalid, so no NaN reaches a loss)."""
    valid = np.isfinite(disparity) & (disparity >= 0) & (disparity <= max_disparity)
    disparity = np.where(valid, disparity, 0.0).astype(np.float32)
    return {
        "left": torch.from_numpy(np.ascontiguousarray(left.transpose(2, 0, 1))).float().div_(255.0),
        "right": torch.from_numpy(np.ascontiguousarray(right.transpose(2, 0, 1))).float().div_(255.0),
        "disparity": torch.from_numpy(np.ascontiguousarray(disparity))[None],
        "valid": torch.from_numpy(np.ascontiguousarray(valid))[None],
        "nonoccluded": torch.from_numpy(np.ascontiguousarray(nonoccluded & valid))[None],
    }


class DatasetCrops(Dataset):
    """Crops of a reader's pairs: item ``i`` is pair ``i mod len(reader)``, cut, shrunk and augmented with
    draws seeded by ``(seed, i)`` (see the module docstring).

    Args:
        reader: any :class:`~scene_perception.data.datasets.StereoDataset` (pairs without GT give all-invalid
            GT: usable by the self-supervised mode only).
        crop: (height, width) of every item.
        max_disparity: the training range (px); pairs whose GT exceeds it are shrunk to fit.
        seed: data seed.
        augment: photometric / right-view augmentation (:func:`augment_pair`).
        length: nominal length (indices wrap around the reader).
    """

    def __init__(self, reader: StereoDataset, crop: tuple[int, int], max_disparity: float, seed: int = 0,
                 augment: bool = False, length: int | None = None) -> None:
        if len(reader) == 0:
            raise DatasetError(f"{reader.name}: no pairs to train on")
        self.reader = reader
        self.crop = (int(crop[0]), int(crop[1]))
        self.max_disparity = float(max_disparity)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.length = int(length) if length else len(reader)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for dataset of length {self.length}")
        s = self.reader[index % len(self.reader)]
        left, right = s.left, s.right
        h, w = left.shape[:2]
        gt = s.disparity if s.disparity is not None else np.full((h, w), np.nan, np.float32)
        nonocc = s.nonoccluded if s.nonoccluded is not None else np.ones((h, w), bool)
        top = float(np.nanmax(gt)) if np.isfinite(gt).any() else 0.0
        if top > self.max_disparity:
            # Shrink the pair uniformly so its largest disparity fits: disparities scale with the width.
            f = self.max_disparity / top
            size = (max(1, round(w * f)), max(1, round(h * f)))
            left = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
            right = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
            fx = size[0] / w
            gt = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST) * np.float32(fx)
            nonocc = cv2.resize(nonocc.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
            h, w = left.shape[:2]
        ch, cw = self.crop
        if h < ch or w < cw:
            # Pad bottom / right (replicated images, invalid GT): a shift-free window for both views.
            ph, pw = max(0, ch - h), max(0, cw - w)
            left = cv2.copyMakeBorder(left, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
            right = cv2.copyMakeBorder(right, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
            gt = np.pad(gt, ((0, ph), (0, pw)), constant_values=np.nan)
            nonocc = np.pad(nonocc, ((0, ph), (0, pw)), constant_values=False)
            h, w = left.shape[:2]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 21]))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        win = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        left, right, gt, nonocc = left[win], right[win], gt[win], nonocc[win]
        if self.augment:
            aug_rng = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 22]))
            left, right = augment_pair(aug_rng, left, right)
        return _tensors(left, right, gt, nonocc, self.max_disparity)


class MixedStereoDataset(Dataset):
    """Item ``i`` from one of ``components`` ((dataset, weight) pairs), chosen with probability
    ``weight / sum`` by a draw seeded by ``(seed, i)``; then that component's item ``i mod its length``."""

    def __init__(self, components: list[tuple[Dataset, float]], length: int, seed: int = 0) -> None:
        components = [(d, float(w)) for d, w in components if w > 0]
        if not components:
            raise ValueError("a mix needs at least one component with weight > 0")
        self.components = components
        weights = np.array([w for _, w in components], np.float64)
        self.cumulative = np.cumsum(weights / weights.sum())
        self.length = int(length)
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def component_of(self, index: int) -> int:
        u = np.random.default_rng(np.random.SeedSequence([self.seed, int(index), 20])).random()
        return int(min(np.searchsorted(self.cumulative, u, side="right"), len(self.components) - 1))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for dataset of length {self.length}")
        data = self.components[self.component_of(index)][0]
        return data[index % len(data)]  # type: ignore[arg-type]


def mixed_training_data(specs: list[DatasetSpec], synthetic: Dataset, synthetic_weight: float,
                        crop: tuple[int, int], max_disparity: float, seed: int, augment: bool,
                        length: int) -> MixedStereoDataset:
    """The mix ``train stereo --dataset`` trains on: the synthetic dataset at ``synthetic_weight`` and one
    :class:`DatasetCrops` per spec (training splits: SceneFlow ``train``, Cityscapes ``train``)."""
    components: list[tuple[Dataset, float]] = [(synthetic, synthetic_weight)]
    for spec in specs:
        options: dict[str, Any] = {"split": "train"} if spec.name in ("sceneflow", "cityscapes") else {}
        reader = open_dataset(spec.name, spec.root, **options)
        components.append((DatasetCrops(reader, crop, max_disparity, seed, augment, length), spec.weight))
    return MixedStereoDataset(components, length, seed)
