"""The real stereo pairs with ground truth that ship inside registry packages, as fetched by
``tools/fetch_eval_data.sh`` (pure, no ROS).  **Evaluation only**: never trained on, tuned on or used as a
texture (they carry GT).

* Middlebury 2006 **Aloe** (Debian ``opencv-doc``): ``aloeL.jpg``, ``aloeR.jpg``, ``aloeGT.png`` at
  1282x1110; the PNG value is the disparity in px, 0 = unknown.
* Middlebury 2014 **Motorcycle** (bundled in the ``scikit-image`` wheel on PyPI, ``skimage/data``):
  ``motorcycle_left.png``, ``motorcycle_right.png``, ``motorcycle_disp.npz`` at 741x500, the benchmark's
  default exposure shrunk 4x by scikit-image; disparity 7-60 px, ``inf`` = unknown (7.3 %).  Its doffs
  (31.1 px) matters for depth only: the stored values are image disparities (checked: the right view
  warped by them matches the left with a median grey error of 2.9 against 21 unwarped).

Both follow :mod:`~scene_perception.data.datasets.sample`'s conventions: RGB uint8 images, ``d = x_left -
x_right``, NaN = unknown.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scene_perception.data.datasets.sample import DatasetError, read_png_unchanged, read_rgb

__all__ = ["ALOE_FILES", "MOTORCYCLE_FILES", "RANGE_FRACTION", "RealPair", "load_aloe", "load_motorcycle",
           "load_real_pairs", "range_from_width"]

#: The benchmarks' default search range of a real pair, as a fraction of its input width (never its GT).
RANGE_FRACTION = 0.2

ALOE_FILES = ("aloeL.jpg", "aloeR.jpg", "aloeGT.png")
MOTORCYCLE_FILES = ("motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz")


def range_from_width(width: int, fraction: float = RANGE_FRACTION) -> int:
    """A real pair's disparity search range from its input width alone (never the GT), rounded to SGBM's
    granularity of 16 px: the range every benchmark and the Aloe conversion use for these pairs."""
    return max(16, 16 * round(fraction * width / 16))


@dataclass(frozen=True)
class RealPair:
    """One real pair with GT: ``left``, ``right`` (H, W, 3) uint8 RGB; ``gt`` (H, W) px, NaN unknown."""

    name: str
    left: np.ndarray
    right: np.ndarray
    gt: np.ndarray


def _present(directory: Path, files: tuple[str, ...]) -> bool:
    """All ``files`` are in ``directory``; never for ``''``, which the benchmarks' ``--aloe-dir ''`` means as
    "skip" but ``Path('')`` turns into ``.`` (the working directory)."""
    return directory != Path("") and all((directory / n).is_file() for n in files)


def _checked(pair: RealPair, directory: Path) -> RealPair:
    if pair.left.shape != pair.right.shape or pair.left.shape[:2] != pair.gt.shape:
        raise DatasetError(f"unexpected {pair.name} files in {directory}: images {pair.left.shape} / "
                           f"{pair.right.shape}, GT {pair.gt.shape}")
    return pair


def load_aloe(directory: str | Path) -> RealPair | None:
    """Aloe from ``directory`` (``.cache/eval/middlebury_aloe``), or None when its files are absent or the
    directory is ``''`` (skip)."""
    d = Path(directory)
    if not _present(d, ALOE_FILES):
        return None
    gt = read_png_unchanged(d / ALOE_FILES[2]).astype(np.float32)
    if gt.ndim != 2:
        raise DatasetError(f"Aloe GT in {d} is not one channel: {gt.shape}")
    gt[gt == 0] = np.nan  # 0 = unknown in the Middlebury 2006 PNGs
    return _checked(RealPair("Aloe", read_rgb(d / ALOE_FILES[0]), read_rgb(d / ALOE_FILES[1]), gt), d)


def load_motorcycle(directory: str | Path) -> RealPair | None:
    """Motorcycle from ``directory`` (``.cache/eval/middlebury_motorcycle``), or None when absent."""
    d = Path(directory)
    if not _present(d, MOTORCYCLE_FILES):
        return None
    path = d / MOTORCYCLE_FILES[2]
    try:
        # An .npz is a zip of .npy members; read the one array with pickles refused (never np.load).
        with zipfile.ZipFile(path) as z:
            if z.namelist() != ["arr_0.npy"]:
                raise DatasetError(f"unexpected arrays {z.namelist()} in {path}")
            with z.open("arr_0.npy") as f:
                gt = np.asarray(np.lib.format.read_array(f, allow_pickle=False), dtype=np.float32)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:  # truncated, not a zip, a pickled array
        raise DatasetError(f"unreadable Motorcycle GT {path}: {exc}") from exc
    gt = np.where(np.isfinite(gt) & (gt > 0), gt, np.float32(np.nan)).astype(np.float32)
    return _checked(RealPair("Motorcycle", read_rgb(d / MOTORCYCLE_FILES[0]),
                             read_rgb(d / MOTORCYCLE_FILES[1]), gt), d)


def load_real_pairs(eval_dir: str | Path) -> list[RealPair]:
    """Every real GT pair present under ``eval_dir`` (``.cache/eval``): Aloe, then Motorcycle."""
    root = Path(eval_dir)
    found = (load_aloe(root / "middlebury_aloe"), load_motorcycle(root / "middlebury_motorcycle"))
    return [p for p in found if p is not None]
