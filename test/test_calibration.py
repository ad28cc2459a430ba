"""Issue 25 item 1: the calibration metrics (evaluation/calibration.py) against numbers worked out by hand,
and one tiny run of benchmarks/calibration.py that checks what it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from evalutil import load_benchmark

from scene_perception.evaluation.calibration import (
    chi2_cdf,
    chi2_quantile,
    coverage,
    ellipsoid_coverage,
    expected_coverage,
    interval_reliability,
    nees_consistency,
    spearman,
    standardized_quantile,
    std_binned_reliability,
)
from scene_perception.evaluation.pose import CHI2_2SIGMA_3DOF, CHI2_2SIGMA_6DOF, TWO_SIGMA_MASS

REPO = Path(__file__).resolve().parents[1]


def exact_laplace_errors(b: np.ndarray) -> np.ndarray:
    """|errors| at the mid-quantiles of Laplace(0, b): ``-b ln(1 - u)``, u = (i + 0.5) / n, so the share
    inside any interval is the distribution's to within 1 / n (no sampling noise)."""
    u = (np.arange(b.size) + 0.5) / b.size
    return -b * np.log1p(-u)


# ----------------------------------------------------------------------------------------- 1-D
def test_expected_coverage_by_hand() -> None:
    assert expected_coverage(1.0, "laplace") == pytest.approx(1 - math.exp(-math.sqrt(2)))  # 75.7 %
    assert [round(expected_coverage(k, "laplace"), 3) for k in (1, 2, 3)] == [0.757, 0.941, 0.986]
    assert [round(expected_coverage(k, "gaussian"), 3) for k in (1, 2, 3)] == [0.683, 0.954, 0.997]
    assert expected_coverage(0.0) == 0.0
    with pytest.raises(ValueError):
        expected_coverage(1.0, "cauchy")


@pytest.mark.parametrize("distribution", ["laplace", "gaussian"])
def test_standardized_quantile_inverts_expected_coverage(distribution: str) -> None:
    for p in (0.1, 0.5, 0.9, 0.99):
        assert expected_coverage(standardized_quantile(p, distribution), distribution) == pytest.approx(p)
    assert standardized_quantile(0.6826894921, "gaussian") == pytest.approx(1.0, abs=1e-6)


def test_coverage_of_exact_laplace_errors_is_the_laplace_share() -> None:
    b = np.full(10_000, 0.7)
    e = exact_laplace_errors(b)
    std = math.sqrt(2) * b
    c = coverage(e, std)
    assert c["n"] == 10_000
    np.testing.assert_allclose(c["observed"], [0.7569, 0.9409, 0.9856], atol=2e-4)
    np.testing.assert_allclose(c["observed"], c["expected"], atol=1e-3)
    # The same errors judged as Gaussian: heavier tails than a Gaussian, so fewer inside 2 and 3 std.
    g = coverage(e, std, distribution="gaussian")
    assert g["observed"][1] < g["expected"][1] - 0.01
    # Half the std: over-confident, the share inside 1 std drops to 1 - exp(-sqrt(2) / 2) = 50.7 %.
    assert coverage(e, std / 2)["observed"][0] == pytest.approx(1 - math.exp(-math.sqrt(2) / 2), abs=2e-4)


def test_coverage_ignores_non_finite_pairs_and_checks_shapes() -> None:
    c = coverage(np.array([0.5, np.nan, 3.0, 1.0]), np.array([1.0, 1.0, np.inf, 0.5]), ks=[1.0])
    assert c["n"] == 2 and c["observed"] == [0.5]  # 0.5 <= 1 inside; 1.0 > 0.5 outside
    with pytest.raises(ValueError):
        coverage(np.zeros(3), np.zeros(4))


def test_interval_reliability_on_the_diagonal_only_when_calibrated() -> None:
    b = np.full(20_000, 1.3)
    e = exact_laplace_errors(b)
    ok = interval_reliability(e, math.sqrt(2) * b)
    assert ok["miscalibration_area"] < 1e-3
    wide = interval_reliability(e, 2 * math.sqrt(2) * b)
    assert all(o >= n for o, n in zip(wide["observed"], wide["nominal"], strict=True))
    assert wide["miscalibration_area"] > 0.05


def test_std_binned_reliability_hand_values() -> None:
    s = np.repeat([0.5, 1.0, 2.0, 4.0], 100)
    e = s * np.where(np.arange(s.size) % 2, 1.0, -1.0)  # |e| = s: RMS error equals the std in every bin
    exact = std_binned_reliability(e, s, bins=4)
    np.testing.assert_allclose(exact["rmv"], [0.5, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(exact["rmse"], exact["rmv"])
    assert exact["ence"] == pytest.approx(0.0)
    assert exact["count"] == [100] * 4
    # Std twice too large: |RMV - RMSE| / RMV = |2s - s| / 2s = 0.5 in every bin.
    assert std_binned_reliability(e, 2 * s, bins=4)["ence"] == pytest.approx(0.5)


def test_spearman_hand_values() -> None:
    x = np.arange(50, dtype=float)
    assert spearman(x, np.exp(x / 10)) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    # Ties: ranks a = 1, 2.5, 2.5, 4 and b = 1, 3, 2, 4 -> 4.5 / sqrt(4.5 * 5).
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(spearman(np.array([1.0]), np.array([2.0])))
    rng = np.random.default_rng(0)
    assert abs(spearman(rng.random(20_000), rng.random(20_000))) < 0.03


# ----------------------------------------------------------------------------------------- d-D Gaussian
def test_chi2_cdf_closed_forms_and_the_pose_constants() -> None:
    for x in (0.3, 1.0, 4.0, 9.0):
        assert chi2_cdf(x, 2) == pytest.approx(1 - math.exp(-x / 2))
        assert chi2_cdf(x, 1) == pytest.approx(math.erf(math.sqrt(x / 2)))
        # dof 3: erf(sqrt(x/2)) - sqrt(2x/pi) exp(-x/2)
        assert chi2_cdf(x, 3) == pytest.approx(math.erf(math.sqrt(x / 2))
                                               - math.sqrt(2 * x / math.pi) * math.exp(-x / 2))
    assert chi2_quantile(0.95, 1) == pytest.approx(3.841459, abs=1e-5)
    assert chi2_quantile(TWO_SIGMA_MASS, 3) == pytest.approx(CHI2_2SIGMA_3DOF, abs=1e-9)
    assert chi2_quantile(TWO_SIGMA_MASS, 6) == pytest.approx(CHI2_2SIGMA_6DOF, abs=1e-9)
    # Many degrees of freedom (N frames x d): the median is close to dof (1 - 2/(9 dof))^3 x dof.
    assert chi2_quantile(0.5, 3000) == pytest.approx(3000 * (1 - 2 / 27000) ** 3, rel=1e-4)
    with pytest.raises(ValueError):
        chi2_cdf(1.0, 0)


def test_calibrated_gaussian_gives_nees_d_and_sigma_coverage() -> None:
    rng = np.random.default_rng(1)
    cov = np.array([[4.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    n = 40_000
    e = rng.standard_normal((n, 3)) @ np.linalg.cholesky(cov).T
    covs = np.broadcast_to(cov, (n, 3, 3))
    c = ellipsoid_coverage(e, covs)
    np.testing.assert_allclose(c["expected"], [0.6827, 0.9545, 0.9973], atol=1e-4)
    np.testing.assert_allclose(c["observed"], c["expected"], atol=0.01)
    assert c["threshold"][1] == pytest.approx(CHI2_2SIGMA_3DOF)
    nees = nees_consistency(e, covs)
    assert nees["mean_nees"] == pytest.approx(3.0, abs=0.05)
    assert nees["interval"][0] < 3.0 < nees["interval"][1]
    assert nees["consistent"] and nees["ratio"] == pytest.approx(1.0, abs=0.02)
    # Covariance 4x too small (std 2x): NEES ~ 12, rejected; the 2-sigma ellipsoid holds only
    # P(chi2_3 <= 8.02 / 4) = 42.8 %.
    small = nees_consistency(e, covs / 4)
    assert small["mean_nees"] == pytest.approx(12.0, rel=0.03) and not small["consistent"]
    assert ellipsoid_coverage(e, covs / 4)["observed"][1] == pytest.approx(chi2_cdf(CHI2_2SIGMA_3DOF / 4, 3),
                                                                          abs=0.01)


# ----------------------------------------------------------------------------------------- benchmark
def test_refined_std_mirrors_the_pipeline_rule() -> None:
    """The benchmark's numpy std update: scale where changed, floor of c x |delta| everywhere."""
    bench = load_benchmark("calibration")
    std = np.array([1.0, 1.0, 1.0, 1.0])
    changed = np.array([True, False, True, False])
    delta = np.array([0.0, 0.0, 4.0, np.nan])
    np.testing.assert_allclose(bench.refined_std(std, changed, delta, 0.25, 0.3), [0.25, 1.0, 1.2, 1.0])


@pytest.mark.slow
def test_calibration_benchmark_smoke(tmp_path: Path) -> None:
    """Every section on a tiny setting: JSON keys, shares in 0..1, the Laplace targets, small figures."""
    from scene_perception.data.synth import write_synthetic_bag

    bag = write_synthetic_bag(tmp_path / "pose", 4, width=192, height=96, fps=2.0, seed=1000,
                              trajectory={"trajectory_seed": 1, "speed": 3.1, "world_length": 260})
    bench = load_benchmark("calibration")
    out = tmp_path / "calibration.json"
    figures = tmp_path / "figures"
    results = bench.main(["--quick", "--pose-bag", str(bag), "--scene-cache-dir", str(tmp_path / "scene"),
                          "--json", str(out), "--figures", str(figures)])
    data = json.loads(out.read_text())
    assert set(data) >= {"command", "split", "disparity", "semantic", "scene_depth", "pose", "figures"}
    syn = data["disparity"]["synthetic"]
    assert syn["std_update_check"]["max_rel_std_diff"] < 1e-4  # numpy update == the pipeline's
    # ... and with the one-pass step (changed and unchanged pixels apart) the whole published map
    assert syn["std_update_check"]["max_rel_std_diff_whole_pipeline"] < 1e-4
    assert syn["std_update_check"]["max_disparity_diff"] == 0.0
    for key in ("network", "pipeline", "depth_network", "depth_pipeline"):
        s = syn[key]
        assert s["pixels"] > 1000
        assert all(0.0 <= v <= 1.0 for v in s["coverage"]["observed"])
        assert s["coverage"]["observed"] == sorted(s["coverage"]["observed"])  # nested intervals
        np.testing.assert_allclose(s["coverage"]["expected"], [0.757, 0.941, 0.986], atol=1e-3)
        assert -1.0 <= s["spearman"] <= 1.0 and math.isfinite(s["ause"])
    for key in ("single", "mc"):
        assert 0.0 <= data["semantic"][key]["ece"] <= 1.0
    for key in ("aleatoric", "total", "inverse_depth_head"):
        assert data["scene_depth"][key]["pixels"] > 0
    pose = data["pose"]
    assert pose["frames"] == 4
    for name in ("raw", "published"):
        for part, dof in (("translation", 3), ("rotation", 3), ("pose", 6)):
            block = pose[name][part]
            assert block["nees"]["dof"] == dof and block["nees"]["mean_nees"] > 0
            assert all(0.0 <= v <= 1.0 for v in block["coverage"]["observed"])
    # The published covariance is the raw one scaled up by the card (all scales > 0): NEES changes.
    assert pose["raw"]["pose"]["nees"]["mean_nees"] != pose["published"]["pose"]["nees"]["mean_nees"]
    assert 1 <= len(data["figures"]) <= 6
    for f in data["figures"]:
        assert Path(f).stat().st_size < 150_000
    assert results["split"] == "test"


@pytest.mark.slow
def test_calibration_scores_motorcycle_at_native_input(tmp_path: Path) -> None:
    """Motorcycle (a rendered stand-in in the fetched layout: two PNGs, an npz with inf = unknown) goes
    through ``load_motorcycle`` into an Aloe-shaped block at its native input, shows in the report, and is
    never scored on the validation split."""
    from evalutil import write_motorcycle_standin

    from scene_perception.evaluation.occlusion import occluded_from_disparity
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT
    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    moto = tmp_path / "moto"
    s = write_motorcycle_standin(moto, seed=7)
    bench = load_benchmark("calibration")
    pipe = build_stereo_pipeline("lite", None, backend="torch", device="cpu", compute_points=False,
                                 local_refinement=None).pipeline
    args = bench.parse_args(["--sections", "disparity", "--motorcycle-dir", str(moto), "--aloe-dir", ""])
    assert bench.run_aloe(args, pipe, DEFAULT_LOCAL_REFINEMENT) is None
    m = bench.run_motorcycle(args, pipe, DEFAULT_LOCAL_REFINEMENT)
    assert m is not None and m["size"] == [96, 160]
    assert set(m) == {"size", "pixels", "occluded_share", "native"}
    native = m["native"]
    assert native["input"] == [96, 160] and native["range"] == 32 and native["refinements"] == 1
    for key in ("network", "pipeline"):
        assert native[key]["pixels"] == int(np.isfinite(s.disparity).sum())
        assert all(0.0 <= v <= 1.0 for v in native[key]["coverage"]["observed"])
    # The non-occluded row scores the GT's own visible pixels: fewer, and as many as the ordering leaves.
    hidden = occluded_from_disparity(s.disparity)
    assert 0.0 < m["occluded_share"] < 0.5
    assert native["pipeline_nonoccluded"]["pixels"] == int((np.isfinite(s.disparity) & ~hidden).sum())
    assert pipe.max_disparity is None  # restored for whatever runs next
    text = "\n".join(bench.real_pair_lines("Middlebury 2014 Motorcycle", m))
    assert "Middlebury 2014 Motorcycle 160x96" in text and "160x96 input, range 32, 1 refinement" in text
    assert "non-occluded pixels only" in text
    val = bench.parse_args(["--split", "validation", "--motorcycle-dir", str(moto)])
    assert val.motorcycle_dir == Path("") and val.aloe_dir == Path("")
    val.motorcycle_dir = moto  # even pointed at the data, a validation run never loads it
    assert bench.run_motorcycle(val, pipe, DEFAULT_LOCAL_REFINEMENT) is None
