"""Scoring of recorded stereo outputs: the pixels at infinity that EPE cannot see are counted separately."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scene_perception.data.bag_io import read_stereo_bag
from scene_perception.data.synth import write_synthetic_bag
from scene_perception.evaluation.stereo_bag_eval import _score


def test_sky_published_as_valid_is_counted_and_does_not_touch_epe(tmp_path: Path) -> None:
    bag = write_synthetic_bag(tmp_path / "bag", 1, width=128, height=64, seed=5, storage="sqlite3")
    frame = next(iter(read_stereo_bag(bag)))
    gt = frame.gt["disparity"]
    sky = gt <= 0
    assert sky.sum() > 100, "the test world's first frame should show some sky"
    doffs = np.float32(frame.camera.doffs)
    # A perfect matcher that also invents a surface 5 px away in the top half of the sky columns.
    published = np.where(sky, np.float32(-1.0), gt + doffs).astype(np.float32)  # < min_disparity: invalid
    rows = np.nonzero(sky.any(axis=1))[0]
    invented = sky & (np.arange(gt.shape[0])[:, None] <= np.median(rows))
    published[invented] = 5.0
    result, _ = _score(frame, {"disparity": published, "min_disparity": 0.0})
    assert result.far["n_far"] == int(sky.sum())
    assert result.far["n_published"] == int(invented.sum())
    np.testing.assert_allclose(result.far["published"], 100.0 * invented.sum() / sky.sum())
    assert result.disparity["epe"] < 1e-5  # the sky never enters EPE: that is why it is counted here

    honest = np.where(sky, np.float32(-1.0), published)
    nothing, _ = _score(frame, {"disparity": honest, "min_disparity": 0.0})
    assert nothing.far["n_published"] == 0 and nothing.far["published"] == 0.0
