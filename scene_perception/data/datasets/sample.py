"""The one sample every dataset reader yields, the base reader class and the image/PNG helpers they share.

Conventions (so the evaluation and the training code need no per-dataset cases):

* ``left`` / ``right``: (H, W, 3) uint8 **RGB** (grey datasets are replicated to three channels).
* ``disparity``: (H, W) float32 px of the left view at the images' resolution, ``d = x_left - x_right``,
  **NaN = unknown** (Middlebury/ETH3D ``inf``, KITTI/Cityscapes 0); None when the dataset has no GT.
* ``nonoccluded``: (H, W) bool, True where the pixel is visible in both views (the dataset's own mask:
  Middlebury/ETH3D ``mask0nocc.png`` == 255, KITTI ``disp_noc`` known); None where the dataset has none.
* ``camera``: :class:`~scene_perception.geometry.stereo_camera.StereoCamera` for the images' size when the
  dataset ships a calibration, else None.
* ``max_disparity``: the dataset's own bound on the disparity range at this resolution (Middlebury
  ``ndisp`` scaled by the width ratio; SceneFlow's customary 192); None when it gives none.
* ``max_evaluated_disparity``: GT above this is not scored (SceneFlow's customary ``< 192`` protocol);
  None = every known pixel.
* ``semantic``: (H, W) uint8 ids of :data:`scene_perception.models.labels.CLASSES`, 255 = ignore (Cityscapes).
* ``instance``: (H, W) uint16 object ids 1..K of the *thing* classes
  (:data:`~scene_perception.models.labels.THING_CLASSES`), 0 = stuff or no annotated object (Cityscapes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scene_perception.geometry.stereo_camera import StereoCamera

__all__ = [
    "IGNORE_LABEL",
    "DatasetError",
    "DatasetSample",
    "StereoDataset",
    "read_png_unchanged",
    "read_rgb",
]

log = logging.getLogger(__name__)

#: Semantic label of pixels that are not scored / trained on.
IGNORE_LABEL = 255


class DatasetError(ValueError):
    """A dataset root that cannot be read (nothing found in the expected layout, a malformed file)."""


@dataclass
class DatasetSample:
    """One stereo pair with whatever ground truth its dataset has (see the module docstring)."""

    name: str
    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray | None = None
    nonoccluded: np.ndarray | None = None
    camera: StereoCamera | None = None
    max_disparity: float | None = None
    max_evaluated_disparity: float | None = None
    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.left.shape != self.right.shape:
            raise DatasetError(f"{self.name}: left image is {self.left.shape} but right is "
                               f"{self.right.shape}")
        size = self.left.shape[:2]
        for field in ("disparity", "nonoccluded", "semantic", "instance"):
            value = getattr(self, field)
            if value is not None and value.shape != size:
                raise DatasetError(f"{self.name}: {field} is {value.shape[:2]} but the images are {size}")

    @property
    def has_gt(self) -> bool:
        return self.disparity is not None


def read_png_unchanged(path: str | Path) -> np.ndarray:
    """The PNG's stored values (16-bit stays uint16, no colour conversion), as OpenCV's IMREAD_UNCHANGED."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot read {path} (missing, or not an image OpenCV decodes)")
    return img


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any image file OpenCV reads: grey is replicated, alpha dropped, 16-bit
    images scaled to 8 bits."""
    img = read_png_unchanged(path)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DatasetError(f"{path}: image dtype {img.dtype}, expected 8- or 16-bit")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class StereoDataset(Sequence[DatasetSample]):
    """Base of the readers: a sorted list of items found at construction, each loaded on access.

    Subclasses fill ``self._items`` (anything :meth:`_load` understands) and set :attr:`name`; loading is
    lazy so a reader over 40 000 SceneFlow pairs costs nothing until iterated, and the same object works as
    a ``torch.utils.data.Dataset`` (``len`` + integer indexing).
    """

    #: The ``--dataset`` name.
    name = "dataset"
    #: Layout description for the error raised when nothing is found.
    layout = ""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"{self.name}: root {self.root} is not a directory")
        self._items: list[Any] = []

    def _require_items(self) -> None:
        if not self._items:
            raise DatasetError(f"{self.name}: nothing found under {self.root}; expected {self.layout}")

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> DatasetSample:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("slice a dataset with .subset(n) / itertools.islice, not [a:b]")
        return self._load(self._items[index])

    def __iter__(self) -> Iterator[DatasetSample]:
        for item in self._items:
            yield self._load(item)

    def _load(self, item: Any) -> DatasetSample:
        raise NotImplementedError

    def item_name(self, index: int) -> str:
        """The sample name of ``index`` without loading its images."""
        return self._name(self._items[index])

    def _name(self, item: Any) -> str:
        raise NotImplementedError

    def subset(self, limit: int | None) -> StereoDataset:
        """This reader limited to its first ``limit`` items (None or <= 0: all)."""
        if limit is not None and limit > 0:
            self._items = self._items[:limit]
        return self

    def describe(self) -> str:
        return f"{self.name} at {self.root}: {len(self)} pairs"


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with '/' separators ('.' becomes the root's own name, a path outside
    the root its own name)."""
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:  # above the root (a SceneFlow root that is a frames_* folder): its own name
        return path.name
    return root.name if rel in ("", ".") else rel
