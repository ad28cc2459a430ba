"""benchmarks/gt_resolution.py: what a whole-pixel GT does to disparity coverage, and the std-matched
estimate of it (issue 25), on synthetic errors whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from evalutil import load_benchmark

from scene_perception.evaluation.calibration import expected_coverage

N = 200_000


def _pair(rng: np.random.Generator, std_scale: float, error_scale: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float GT, disparity, published std): Laplace errors of std ``error_scale`` x the published one."""
    std = std_scale * rng.lognormal(0.0, 0.5, N)
    gt = rng.uniform(10.0, 60.0, N)
    err = rng.laplace(0.0, error_scale * std / np.sqrt(2.0))
    return gt, gt + err, std


def test_whole_pixel_gt_lowers_coverage_and_the_cell_convolution_undoes_it_only_for_an_honest_std() -> None:
    gr = load_benchmark("gt_resolution")
    rng = np.random.default_rng(0)
    nominal = [100.0 * expected_coverage(k) for k in gr.KS]
    gt, d, std = _pair(rng, 0.3, 1.0)  # honest std
    exact, coarse = gr.covered(d - gt, std), gr.covered(d - np.round(gt), std)
    np.testing.assert_allclose(exact, nominal, atol=0.5)
    assert coarse[1] < exact[1] - 3.0  # rounding the GT alone costs points at 2 std
    np.testing.assert_allclose(gr.cell_coverage(d - np.round(gt), std, -0.5), nominal, atol=0.6)
    np.testing.assert_allclose(gr.cell_coverage(d - np.floor(gt), std, 0.0), nominal, atol=0.6)
    gt, d, std = _pair(rng, 0.3, 1.6)  # over-confident std: the convolution overstates its coverage
    assert gr.cell_coverage(d - np.round(gt), std, -0.5)[1] > gr.covered(d - gt, std)[1] + 2.0


@pytest.mark.parametrize("quantise", [np.round, np.floor])
def test_std_matched_loss_recovers_the_float_gt_coverage_of_another_pair(quantise) -> None:
    """The control pair (float GT) lends its per-stratum loss to a pair with another std spread and only a
    coarse GT; measured + loss lands on that pair's float-GT coverage."""
    gr = load_benchmark("gt_resolution")
    rng = np.random.default_rng(1)
    gc, dc, sc = _pair(rng, 0.3, 1.3)
    gt, d, std = _pair(rng, 0.6, 1.3)
    edges = gr.std_edges(sc, std)
    for i, k in enumerate(gr.KS):
        loss = gr.transferred_loss(gr.stratum_loss(dc - gc, dc - quantise(gc), sc, edges, k), std, edges)
        estimate = gr.covered(d - quantise(gt), std)[i] + loss
        assert loss > 0.0 and estimate == pytest.approx(gr.covered(d - gt, std)[i], abs=0.8)
