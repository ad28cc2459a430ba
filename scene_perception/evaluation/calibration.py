"""Is a published uncertainty honest?  Coverage, reliability diagrams, rank correlation and NEES.

Why this module: the package publishes a std-dev or covariance with every estimate (disparity, depth, pose)
and class probabilities with every label.  A planner can only take them at face value if the truth falls
inside ``k`` std as often as the distribution the head assumes says it should.  The ranking question ("are
the big errors where the std is big?") is answered by AUSE (:mod:`~scene_perception.evaluation.uncertainty`)
and the Spearman correlation here; the *scale* question by coverage:

* **1-D coverage** (:func:`coverage`): the share of ``|error| <= k * std``.  What it should be depends on
  the distribution: for a Laplace with std ``sqrt(2) b`` it is ``1 - exp(-k sqrt(2))`` (75.7 / 94.1 /
  98.6 % at k = 1 / 2 / 3), for a Gaussian ``erf(k / sqrt(2))`` (68.3 / 95.4 / 99.7 %).
* **Interval reliability** (:func:`interval_reliability`): the same for every nominal mass p, the central
  interval holding p of the assumed distribution against the share of errors inside it (Kuleshov et al.,
  ICML 2018); a calibrated predictor lies on the diagonal.
* **Binned std** (:func:`std_binned_reliability`): pixels in equal-count bins of predicted std, the RMS
  error of each bin against its root mean variance (Levi et al., 2019); distribution-free (a std is a std)
  and it shows *where* the std is wrong (small stds over-confident, large ones under-confident, ...).
* **d-D Gaussian** (:func:`ellipsoid_coverage`, :func:`nees_consistency`): the k-sigma ellipsoid is the
  region with the mass of a 1-D +-k sigma interval, ``m^2 <= chi2_d^-1(erf(k / sqrt(2)))`` with ``m^2``
  the squared Mahalanobis distance (the convention of :mod:`~scene_perception.evaluation.pose`); the
  normalised estimation error squared (NEES, the mean ``m^2``) is ``d`` for a consistent estimator, and its
  two-sided chi-square interval says whether a measured NEES could be chance (Bar-Shalom et al., 2001).

Semantic probabilities use :func:`~scene_perception.evaluation.scene_metrics.expected_calibration_error`,
sparsification :func:`~scene_perception.evaluation.uncertainty.ause`; nothing is re-implemented here.
Pure numpy (no scipy: the chi-square CDF is the incomplete gamma function, see :func:`chi2_cdf`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from scene_perception.evaluation.pose import mahalanobis_sq

__all__ = [
    "DISTRIBUTIONS",
    "chi2_cdf",
    "chi2_quantile",
    "coverage",
    "ellipsoid_coverage",
    "expected_coverage",
    "gaussian_sigma_mass",
    "interval_reliability",
    "nees_consistency",
    "spearman",
    "standardized_quantile",
    "std_binned_reliability",
]

#: Distributions a head can assume for its error; their std is what the package publishes.
DISTRIBUTIONS = ("laplace", "gaussian")
DEFAULT_KS = (1.0, 2.0, 3.0)


def _check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


def gaussian_sigma_mass(k: float) -> float:
    """Mass of a 1-D Gaussian within +-k sigma, ``erf(k / sqrt(2))`` (0.683, 0.954, 0.997 for 1, 2, 3)."""
    return math.erf(k / math.sqrt(2.0))


def expected_coverage(k: float, distribution: str = "laplace") -> float:
    """P(|e| <= k std) for a zero-mean error of the given distribution (the target of :func:`coverage`).

    Laplace(0, b): std = sqrt(2) b and P(|e| <= t) = 1 - exp(-t / b), so 1 - exp(-k sqrt(2)).
    """
    _check_distribution(distribution)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if distribution == "laplace":
        return 1.0 - math.exp(-k * math.sqrt(2.0))
    return gaussian_sigma_mass(k)


def _bisect(f: Any, lo: float, hi: float, target: float, iterations: int = 200) -> float:
    """x in [lo, hi] with f(x) = target for an increasing f (to float precision)."""
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, abs(hi)):
            break
    return 0.5 * (lo + hi)


def standardized_quantile(p: float, distribution: str = "laplace") -> float:
    """The k such that P(|e| <= k std) = p: the half-width, in std, of the central interval of mass p."""
    _check_distribution(distribution)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    if distribution == "laplace":
        return -math.log1p(-p) / math.sqrt(2.0)
    return _bisect(gaussian_sigma_mass, 0.0, 40.0, p)


def _valid_pairs(error: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|error| and std as flat float64 arrays, only where both are finite and std >= 0."""
    e = np.abs(np.asarray(error, np.float64)).ravel()
    s = np.asarray(std, np.float64).ravel()
    if e.shape != s.shape:
        raise ValueError(f"error {e.shape} and std {s.shape} differ in size")
    keep = np.isfinite(e) & np.isfinite(s) & (s >= 0)
    return e[keep], s[keep]


def coverage(error: np.ndarray, std: np.ndarray, ks: Sequence[float] = DEFAULT_KS,
             distribution: str = "laplace") -> dict[str, Any]:
    """Observed share of ``|error| <= k * std`` for each k, next to what ``distribution`` predicts.

    Returns ``{"n", "distribution", "k": [...], "observed": [...], "expected": [...]}`` (shares in 0..1;
    observed NaN when no finite pair is left).  ``observed < expected`` means over-confident.
    """
    e, s = _valid_pairs(error, std)
    observed = [float(np.mean(e <= k * s)) if e.size else float("nan") for k in ks]
    return {"n": int(e.size), "distribution": distribution, "k": [float(k) for k in ks],
            "observed": observed, "expected": [expected_coverage(float(k), distribution) for k in ks]}


def interval_reliability(error: np.ndarray, std: np.ndarray, distribution: str = "laplace",
                         levels: Sequence[float] | None = None) -> dict[str, Any]:
    """Nominal mass p of the central interval ``+-q_p * std`` against the observed share inside it.

    ``levels`` default to 0.05 .. 0.95 in steps of 0.05 and 0.99.  ``miscalibration_area`` is the mean
    ``|observed - nominal|`` over the levels (0 = on the diagonal), a one-number summary of the diagram.
    """
    e, s = _valid_pairs(error, std)
    if levels is None:
        levels = [*np.round(np.arange(0.05, 0.951, 0.05), 2).tolist(), 0.99]
    nominal = [float(p) for p in levels]
    observed = [float(np.mean(e <= standardized_quantile(p, distribution) * s)) if e.size else float("nan")
                for p in nominal]
    gaps = np.abs(np.asarray(observed) - np.asarray(nominal))
    return {"distribution": distribution, "nominal": nominal, "observed": observed,
            "miscalibration_area": float(np.mean(gaps)) if e.size else float("nan")}


def std_binned_reliability(error: np.ndarray, std: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Equal-count bins of the predicted std: per bin the root mean variance (RMV, what the std claims) and
    the RMS error (what happened).  Calibrated: RMSE = RMV in every bin, whatever the distribution.

    ``ence`` (expected normalised calibration error) is the mean ``|RMV - RMSE| / RMV`` over the bins.
    Bins with zero RMV are left out of ``ence``.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    e, s = _valid_pairs(error, std)
    if e.size == 0:
        return {"rmv": [], "rmse": [], "count": [], "ence": float("nan")}
    order = np.argsort(s, kind="stable")
    groups = np.array_split(order, min(bins, e.size))
    rmv = [float(np.sqrt(np.mean(s[g] ** 2))) for g in groups]
    rmse = [float(np.sqrt(np.mean(e[g] ** 2))) for g in groups]
    ratios = [abs(v - r) / v for v, r in zip(rmv, rmse, strict=True) if v > 0]
    return {"rmv": rmv, "rmse": rmse, "count": [int(g.size) for g in groups],
            "ence": float(np.mean(ratios)) if ratios else float("nan")}


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank (what Spearman's coefficient needs)."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0 + 1.0, counts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray, max_samples: int | None = 1_000_000, seed: int = 0) -> float:
    """Spearman rank correlation of ``a`` and ``b`` (finite pairs only; ties get average ranks).

    ``max_samples`` caps the pairs used (a fixed random subset) so millions of pixels stay cheap; the
    coefficient of a million-pixel subset differs from the full one in the third decimal at most.
    """
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"a {x.shape} and b {y.shape} differ in size")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if max_samples is not None and x.size > max_samples:
        pick = np.random.default_rng(seed).choice(x.size, max_samples, replace=False)
        x, y = x[pick], y[pick]
    if x.size < 2:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(np.dot(rx, rx)) * float(np.dot(ry, ry)))
    return float(np.dot(rx, ry) / denom) if denom > 0 else float("nan")


def _regularized_gamma_p(a: float, x: float) -> float:
    """P(a, x), the regularised lower incomplete gamma function, to double precision: its power series
    below ``x = a + 1``, the continued fraction of Q = 1 - P above (Numerical Recipes, 2nd ed., 6.2), each
    converging in O(sqrt(a)) terms there, so a NEES sum over thousands of frames stays cheap."""
    if x <= 0.0:
        return 0.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(100_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return min(1.0, total * math.exp(log_prefix))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-16:
            break
    return max(0.0, 1.0 - math.exp(log_prefix) * h)


def chi2_cdf(x: float, dof: float) -> float:
    """CDF of the chi-square distribution with ``dof`` degrees of freedom at ``x``: ``P(dof/2, x/2)``."""
    if not dof > 0:
        raise ValueError(f"dof must be > 0, got {dof}")
    return _regularized_gamma_p(0.5 * dof, 0.5 * x) if x > 0 else 0.0


def chi2_quantile(p: float, dof: float) -> float:
    """Inverse of :func:`chi2_cdf` (bisection): the x with ``chi2_cdf(x, dof) = p``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    hi = float(dof) + 10.0 * math.sqrt(2.0 * dof) + 50.0
    while chi2_cdf(hi, dof) < p:
        hi *= 2.0
    return _bisect(lambda v: chi2_cdf(v, dof), 0.0, hi, p)


def ellipsoid_coverage(errors: np.ndarray, covariances: np.ndarray,
                       ks: Sequence[float] = DEFAULT_KS) -> dict[str, Any]:
    """Share of ``errors (N, d)`` inside the k-sigma-equivalent ellipsoid of ``covariances (N, d, d)``.

    The k-sigma ellipsoid holds ``erf(k / sqrt(2))`` of a d-D Gaussian (as +-k sigma does in 1-D):
    ``m^2 <= chi2_d^-1(erf(k / sqrt(2)))``, so the expected shares are 68.3 / 95.4 / 99.7 % in any
    dimension.  Returns ``k``, ``threshold`` (the m^2 bound), ``observed``, ``expected`` and ``n``.
    """
    e = np.atleast_2d(np.asarray(errors, np.float64))
    d = e.shape[1]
    m2 = mahalanobis_sq(e, covariances)
    expected = [gaussian_sigma_mass(float(k)) for k in ks]
    thresholds = [chi2_quantile(p, d) for p in expected]
    finite = np.isfinite(m2)
    observed = [float(np.mean(m2[finite] <= t)) if finite.any() else float("nan") for t in thresholds]
    return {"n": int(finite.sum()), "dof": d, "k": [float(k) for k in ks], "threshold": thresholds,
            "observed": observed, "expected": expected}


def nees_consistency(errors: np.ndarray, covariances: np.ndarray, confidence: float = 0.95
                     ) -> dict[str, Any]:
    """Mean NEES (mean squared Mahalanobis distance) and its two-sided chi-square acceptance interval.

    For N independent errors of a consistent d-D Gaussian estimator, ``N * mean NEES ~ chi2(N d)``; the
    mean should be d and lies in ``[chi2^-1(a/2), chi2^-1(1 - a/2)] / N`` with probability ``confidence``.
    ``consistent`` says whether it does; ``ratio`` = mean NEES / d (> 1: over-confident, the covariance too
    small; its square root is roughly the factor the std-devs are off by).  Frames of one drive are
    correlated, so treat the interval as a lower bound on the real one.
    """
    e = np.atleast_2d(np.asarray(errors, np.float64))
    d = e.shape[1]
    m2 = mahalanobis_sq(e, covariances)
    m2 = m2[np.isfinite(m2)]
    n = int(m2.size)
    if n == 0:
        return {"n": 0, "dof": d, "mean_nees": float("nan"), "median_nees": float("nan"),
                "interval": [float("nan"), float("nan")], "consistent": False, "ratio": float("nan")}
    alpha = 1.0 - confidence
    lo = chi2_quantile(alpha / 2.0, n * d) / n
    hi = chi2_quantile(1.0 - alpha / 2.0, n * d) / n
    mean = float(np.mean(m2))
    return {"n": n, "dof": d, "mean_nees": mean, "median_nees": float(np.median(m2)), "interval": [lo, hi],
            "consistent": bool(lo <= mean <= hi), "ratio": mean / d}
