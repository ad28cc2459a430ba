"""AUSE must reward an uncertainty that ranks errors well and punish one that does not."""

from __future__ import annotations

import numpy as np

from scene_perception.evaluation.uncertainty import ause, sparsification


def test_oracle_uncertainty_has_zero_ause_and_random_is_worse() -> None:
    rng = np.random.default_rng(0)
    error = rng.exponential(1.0, 5000)
    perfect = ause(error, error)
    assert abs(perfect["ause"]) < 1e-9
    noisy = ause(error, error + rng.normal(0, 0.5, error.size))
    random = ause(error, rng.random(error.size))
    inverted = ause(error, -error)
    assert 0 < noisy["ause"] < random["ause"] < inverted["ause"]


def test_sparsification_curve_starts_at_one_and_falls_for_a_good_ranking() -> None:
    error = np.linspace(0.1, 10, 1000)
    fractions, curve = sparsification(error, error, steps=10)
    assert fractions[0] == 0 and abs(curve[0] - 1.0) < 1e-9
    assert np.all(np.diff(curve) < 0)
    _, flat = sparsification(np.ones(100), np.arange(100.0), steps=5)
    np.testing.assert_allclose(flat, 1.0)
