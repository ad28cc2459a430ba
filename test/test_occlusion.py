"""Occlusion from a left GT disparity (evaluation/occlusion.py): the ordering constraint, against geometry
built by hand and against the renderer's exact visibility."""

from __future__ import annotations

import numpy as np
import pytest

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.evaluation.occlusion import occluded_from_disparity


def test_a_foreground_block_hides_the_band_left_of_it() -> None:
    d = np.full((4, 100), 10.0)
    d[:, 60:80] = 25.0  # a nearer object: it covers 15 px of the background left of it in the right view
    occluded = occluded_from_disparity(d)
    expected = np.zeros(100, bool)
    expected[46:60] = True  # x = 45 lands exactly where x = 60 does: within the tolerance, not counted
    expected[:10] = True  # x - d < 0: left of the right image
    np.testing.assert_array_equal(occluded, np.tile(expected, (4, 1)))


def test_a_slanted_surface_and_unknown_pixels_hide_nothing() -> None:
    xs = np.arange(200, dtype=np.float64)
    slanted = np.tile(20.0 + 0.6 * xs / 10.0, (3, 1))  # 0.06 px per px
    slanted[1, 100:120] = np.nan  # a hole in the GT is neither hidden nor hides
    occluded = occluded_from_disparity(slanted)
    assert not occluded[:, 25:].any()
    assert not occluded[1, 100:120].any()


def test_whole_pixel_gt_needs_the_tolerance() -> None:
    """Aloe's GT is whole pixels: a 1 px step between neighbours is a slanted surface, not an occlusion."""
    staircase = np.tile(np.repeat(np.arange(30.0, 40.0), 3), (2, 1))  # +1 px every 3 px
    assert not occluded_from_disparity(staircase)[:, 30:].any()


@pytest.mark.parametrize("seed", [20000000, 20000002])
def test_agrees_with_the_renderers_visibility(seed: int) -> None:
    s = make_stereo_sample(seed, width=256, height=128, max_disparity=60.0)
    occluded = occluded_from_disparity(s.disparity)
    truth = ~s.nonoccluded
    assert truth.mean() > 0.03  # the pair has occlusions to find
    assert (occluded == truth).mean() > 0.98
    assert (occluded & truth).sum() > 0.9 * truth.sum()


def test_rejects_a_stack_of_maps() -> None:
    with pytest.raises(ValueError, match="H, W"):
        occluded_from_disparity(np.zeros((2, 3, 4)))
