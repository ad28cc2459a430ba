"""The real GT pairs' loaders on real files: fixtures in the fetched layouts (JPEG/PNG/npz written to disk),
the unknown-value conventions, refused pickles and truncated files, and the fetched data when present."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from scene_perception.data.datasets.real_pairs import (
    ALOE_FILES,
    MOTORCYCLE_FILES,
    load_aloe,
    load_motorcycle,
    load_real_pairs,
)
from scene_perception.data.datasets.sample import DatasetError

EVAL = Path(__file__).resolve().parents[1] / ".cache" / "eval"


def _images(d: Path, names: tuple[str, str], h: int = 20, w: int = 30) -> None:
    d.mkdir(parents=True, exist_ok=True)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = 200  # red in OpenCV's BGR: the loaders must return RGB
    for n in names:
        cv2.imwrite(str(d / n), img)


def test_aloe_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "middlebury_aloe"
    _images(d, ALOE_FILES[:2])
    gt = np.full((20, 30), 50, np.uint8)
    gt[0, 0] = 0
    cv2.imwrite(str(d / ALOE_FILES[2]), gt)
    pair = load_aloe(d)
    assert pair is not None and pair.name == "Aloe"
    assert np.isnan(pair.gt[0, 0]) and pair.gt[1, 1] == 50.0 and pair.gt.dtype == np.float32
    assert pair.left[0, 0, 0] > 150 and pair.left[0, 0, 2] < 50  # RGB
    assert load_aloe(tmp_path / "missing") is None
    # '' means "skip", even run from a directory that holds the files (Path('') is '.').
    monkeypatch.chdir(d)
    assert load_aloe("") is None and load_aloe(Path("")) is None
    assert load_aloe(Path(".").resolve()) is not None


def test_motorcycle_fixture_and_bad_files(tmp_path: Path) -> None:
    d = tmp_path / "middlebury_motorcycle"
    _images(d, MOTORCYCLE_FILES[:2])
    gt = np.full((20, 30), 12.5, np.float32)
    gt[0, 0], gt[0, 1], gt[0, 2] = np.inf, np.nan, 0.0
    np.savez(d / MOTORCYCLE_FILES[2], gt)
    pair = load_motorcycle(d)
    assert pair is not None and pair.gt[5, 5] == pytest.approx(12.5)
    assert np.isnan(pair.gt[0, :3]).all() and np.isfinite(pair.gt[1:]).all()
    assert [p.name for p in load_real_pairs(tmp_path)] == ["Motorcycle"]

    np.savez(d / MOTORCYCLE_FILES[2], np.array([{"a": 1}], dtype=object))  # a pickle: never loaded
    with pytest.raises(DatasetError, match="unreadable Motorcycle GT"):
        load_motorcycle(d)
    (d / MOTORCYCLE_FILES[2]).write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(DatasetError, match="unreadable"):
        load_motorcycle(d)
    np.savez(d / MOTORCYCLE_FILES[2], np.zeros((10, 10), np.float32))
    with pytest.raises(DatasetError, match="unexpected Motorcycle files"):
        load_motorcycle(d)


@pytest.mark.skipif(not (EVAL / "middlebury_motorcycle" / MOTORCYCLE_FILES[2]).is_file(),
                    reason="Motorcycle absent (bash tools/fetch_eval_data.sh)")
def test_fetched_motorcycle_matches_its_gt() -> None:
    """The stored values are image disparities with left(x) = right(x - d)."""
    pair = load_motorcycle(EVAL / "middlebury_motorcycle")
    assert pair is not None and pair.gt.shape == (500, 741)
    known = np.isfinite(pair.gt)
    assert 0.9 < known.mean() < 0.95 and 7 < np.nanmin(pair.gt) < np.nanmax(pair.gt) < 61
    left, right = (cv2.cvtColor(v, cv2.COLOR_RGB2GRAY).astype(np.float32) for v in (pair.left, pair.right))
    ys, xs = np.mgrid[0:500, 0:741].astype(np.float32)
    warped = cv2.remap(right, xs - np.nan_to_num(pair.gt), ys, cv2.INTER_LINEAR)
    assert np.median(np.abs(warped - left)[known]) < 0.25 * np.median(np.abs(right - left)[known])
