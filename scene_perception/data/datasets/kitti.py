"""KITTI 2012 / 2015 stereo readers.

Layout (the ``training`` split; ``testing`` has no GT)::

    training/image_2/000000_10.png   left  (2015; 2012: colored_0/ in colour or image_0/ in grey)
    training/image_3/000000_10.png   right (2015; 2012: colored_1/ or image_1/)
    training/disp_occ_0/000000_10.png  all pixels with GT  (2012: disp_occ/)
    training/disp_noc_0/000000_10.png  non-occluded pixels (2012: disp_noc/)
    training/calib_cam_to_cam/000000.txt  (2015, separate download: P_rect_02 / P_rect_03)
    training/calib/000000.txt             (2012: P0..P3)

Disparity PNGs are uint16: ``d = value / 256``, value 0 = unknown.  Only the ``_10`` frames carry GT.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from scene_perception.data.datasets.sample import (
    DatasetError,
    DatasetSample,
    StereoDataset,
    read_png_unchanged,
    read_rgb,
)
from scene_perception.geometry.stereo_camera import CameraModelError, StereoCamera

__all__ = ["KittiDataset", "kitti_camera", "parse_kitti_calib", "read_kitti_disparity"]

log = logging.getLogger(__name__)

# (left dir, right dir, projection matrix keys of that camera pair), most preferred first.
_CAMERAS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("image_2", "image_3", ("P_rect_02", "P2"), ("P_rect_03", "P3")),
    ("colored_0", "colored_1", ("P2", "P_rect_02"), ("P3", "P_rect_03")),
    ("image_0", "image_1", ("P0", "P_rect_00"), ("P1", "P_rect_01")),
)


def read_kitti_disparity(path: str | Path) -> np.ndarray:
    """float32 px from a KITTI uint16 disparity PNG (value / 256), NaN where the value is 0 (unknown)."""
    raw = read_png_unchanged(path)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(f"{path}: KITTI disparity must be a 16-bit single-channel PNG, got "
                           f"{raw.dtype} {raw.shape}")
    disp = raw.astype(np.float32) / np.float32(256.0)
    disp[raw == 0] = np.nan
    return disp


def parse_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """``KEY: v1 v2 ...`` lines of a KITTI calibration file as float arrays (3x4 for 12 values)."""
    out: dict[str, np.ndarray] = {}
    for line in Path(path).read_text(encoding="ascii", errors="replace").splitlines():
        key, sep, values = line.partition(":")
        if not sep:
            continue
        try:
            arr = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError:
            continue  # e.g. calib_time: 09-Jan-2012 13:57:47
        out[key.strip()] = arr.reshape(3, 4) if arr.size == 12 else arr
    return out


def kitti_camera(p_left: np.ndarray, p_right: np.ndarray, width: int, height: int,
                 source: str = "") -> StereoCamera | None:
    """The rectified pair of two KITTI projection matrices.  Built from the entries rather than with
    ``StereoCamera.from_projection_matrices``: KITTI's colour cameras P2 / P3 carry small Ty / Tz terms
    (their offset from the reference camera 0), which that ROS-convention check refuses; the baseline is
    ``(P_left[0,3] - P_right[0,3]) / fx`` as there."""
    pl, pr = np.asarray(p_left, np.float64).reshape(3, 4), np.asarray(p_right, np.float64).reshape(3, 4)
    try:
        return StereoCamera(width=int(width), height=int(height), fx=float(pl[0, 0]), fy=float(pl[1, 1]),
                            cx=float(pl[0, 2]), cy=float(pl[1, 2]), cx_right=float(pr[0, 2]),
                            baseline=float((pl[0, 3] - pr[0, 3]) / pl[0, 0]))
    except CameraModelError as exc:
        log.warning("%s: calibration unusable (%s)", source, exc)
        return None


class _Frame(NamedTuple):
    stem: str
    left: Path
    right: Path
    disp_occ: Path | None
    disp_noc: Path | None
    calib: Path | None
    p_keys: tuple[tuple[str, ...], tuple[str, ...]]


class KittiDataset(StereoDataset):
    """KITTI stereo ``_10`` frames with GT under ``root`` (the dataset folder holding ``training/``, or
    ``training/`` itself).  ``year`` only names the reader; both layouts are recognised."""

    layout = ("training/{image_2,colored_0,image_0}/*_10.png, the matching right folder "
              "{image_3,colored_1,image_1} and disp_occ[_0]/, disp_noc[_0]/ uint16 PNGs")

    def __init__(self, root: str | Path, year: int = 2015, split: str = "training",
                 require_gt: bool = True) -> None:
        super().__init__(root)
        self.name = f"kitti{year}"
        base = self.root / split if (self.root / split).is_dir() else self.root
        self.base = base
        for left_dir, right_dir, pl, pr in _CAMERAS:  # noqa: B007 (the matching entry is used below)
            if (base / left_dir).is_dir() and (base / right_dir).is_dir():
                break
        else:
            raise DatasetError(f"{self.name}: no left/right image folders under {base}; "
                               f"expected {self.layout}")
        occ = next((base / d for d in ("disp_occ_0", "disp_occ") if (base / d).is_dir()), None)
        noc = next((base / d for d in ("disp_noc_0", "disp_noc") if (base / d).is_dir()), None)
        calib_dir = next((base / d for d in ("calib_cam_to_cam", "calib") if (base / d).is_dir()), None)
        frames = []
        for left in sorted((base / left_dir).glob("*_10.png")):
            right = base / right_dir / left.name
            if not right.is_file():
                continue
            stem = left.name[: -len("_10.png")]
            d_occ = occ / left.name if occ is not None and (occ / left.name).is_file() else None
            d_noc = noc / left.name if noc is not None and (noc / left.name).is_file() else None
            if require_gt and d_occ is None and d_noc is None:
                continue
            calib = calib_dir / f"{stem}.txt" if calib_dir is not None else None
            frames.append(_Frame(stem, left, right, d_occ, d_noc,
                                 calib if calib is not None and calib.is_file() else None, (pl, pr)))
        self._items = frames
        self._require_items()

    def _name(self, item: Any) -> str:
        return f"{item.stem}_10"

    def _load(self, item: Any) -> DatasetSample:
        frame: _Frame = item
        left, right = read_rgb(frame.left), read_rgb(frame.right)
        h, w = left.shape[:2]
        occ = read_kitti_disparity(frame.disp_occ) if frame.disp_occ is not None else None
        noc = read_kitti_disparity(frame.disp_noc) if frame.disp_noc is not None else None
        disparity = occ if occ is not None else noc
        nonocc = np.isfinite(noc) if noc is not None else None
        camera = None
        if frame.calib is not None:
            mats = parse_kitti_calib(frame.calib)
            pl = next((mats[k] for k in frame.p_keys[0] if k in mats), None)
            pr = next((mats[k] for k in frame.p_keys[1] if k in mats), None)
            if pl is not None and pr is not None:
                camera = kitti_camera(pl, pr, w, h, str(frame.calib))
        return DatasetSample(self._name(frame), left, right, disparity, nonocc, camera)
