"""data/conditions.py: every benchmark renders seed s in condition c as the same pair."""

from __future__ import annotations

import numpy as np
import pytest

from scene_perception.data.conditions import CONDITIONS, condition_renders, render_condition
from scene_perception.data.procedural import make_stereo_sample
from scene_perception.data.splits import held_out_seeds


def test_exact_is_the_render_and_each_condition_is_a_function_of_the_seed() -> None:
    exact = render_condition(20_000_001, 128, 64, 24.0, "exact")
    plain = make_stereo_sample(20_000_001, width=128, height=64, max_disparity=24.0)
    np.testing.assert_array_equal(exact.left, plain.left)
    np.testing.assert_array_equal(exact.right, plain.right)
    rendered = {c: render_condition(20_000_001, 128, 64, 24.0, c) for c in CONDITIONS}
    for c, s in rendered.items():
        again = render_condition(20_000_001, 128, 64, 24.0, c)
        np.testing.assert_array_equal(s.right, again.right)
        np.testing.assert_array_equal(s.disparity, plain.disparity)  # the GT is the render's in every one
        if c != "exact":
            assert not np.array_equal(s.right, plain.right), c
    assert not np.array_equal(rendered["camera"].right, rendered["rig"].right)


def test_an_unknown_condition_is_refused() -> None:
    with pytest.raises(ValueError, match="condition must be one of"):
        render_condition(1, 64, 32, 16.0, "foggy")


def test_condition_renders_gives_each_range_its_own_seeds_and_every_condition_the_same() -> None:
    """The order the settings rules were fitted in: conditions outermost, then ranges, each range a block."""
    got = list(condition_renders("validation", ("exact", "rig"), (20.0, 30.0), 2, 64, 32))
    seeds = held_out_seeds(4, "validation")
    expected = [(c, r, sd) for c in ("exact", "rig")
                for j, r in enumerate((20.0, 30.0)) for sd in seeds[2 * j:2 * j + 2]]
    assert [(c, r, sd) for c, r, sd, _ in got] == expected
    c, r, sd, pair = got[-1]
    np.testing.assert_array_equal(pair.right, render_condition(sd, 64, 32, r, c).right)
