"""Camera pose metrics: accuracy (median errors) and calibration of the predicted covariance.

Calibration question: "is the truth inside the predicted 2-sigma ellipse as often as it should be?"  For a
d-dimensional Gaussian the region with the probability of +-2 sigma in one dimension (0.9545) is the
ellipsoid ``m^2 <= chi2_d^-1(0.9545)``, with ``m^2 = e^T Sigma^-1 e`` the squared Mahalanobis distance of
the error ``e``.  So the *2-sigma-equivalent* thresholds used here are

* 3 DoF (position alone, rotation alone): ``m^2 <= 8.0249`` (not ``m <= 2``, which holds only 73.9 % of
  a 3-D Gaussian's mass),
* 6 DoF (the full pose): ``m^2 <= 12.8488``,

and a calibrated predictor has a fraction inside of about 0.954; lower is over-confident, higher
under-confident.  The rotation error is the rotation vector taking the predicted orientation to the true
one in the map frame, the same layout as the covariance (geometry_msgs/PoseWithCovariance).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from scene_perception.geometry.rotations import quaternion_angle_deg, rotation_vector_between

__all__ = [
    "CHI2_2SIGMA_3DOF",
    "CHI2_2SIGMA_6DOF",
    "TWO_SIGMA_MASS",
    "apply_additive_floor",
    "fit_additive_floor",
    "fit_block_scale",
    "fit_covariance_scale",
    "format_metrics_table",
    "inside_fraction",
    "mahalanobis_sq",
    "pose_errors",
    "pose_metrics",
]

#: Probability mass within +-2 sigma of a 1-D Gaussian: erf(2 / sqrt(2)).
TWO_SIGMA_MASS = math.erf(2.0 / math.sqrt(2.0))
#: chi-square quantiles at TWO_SIGMA_MASS (closed-form CDFs for 3 and 6 DoF inverted; checked in the tests).
CHI2_2SIGMA_3DOF = 8.024881760266
CHI2_2SIGMA_6DOF = 12.848834791793
_THRESHOLDS = {3: CHI2_2SIGMA_3DOF, 6: CHI2_2SIGMA_6DOF}


def pose_errors(pred_position: np.ndarray, pred_quaternion: np.ndarray, gt_position: np.ndarray,
                gt_quaternion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: translation error (m), rotation angle error (deg) and the 6-D error vector
    ``[t_gt - t_pred, rotvec(q_pred -> q_gt)]`` in the covariance's layout."""
    pred_position = np.atleast_2d(np.asarray(pred_position, np.float64))
    gt_position = np.atleast_2d(np.asarray(gt_position, np.float64))
    dt = gt_position - pred_position
    dr = rotation_vector_between(np.atleast_2d(pred_quaternion), np.atleast_2d(gt_quaternion))
    return (np.linalg.norm(dt, axis=1), np.atleast_1d(quaternion_angle_deg(pred_quaternion, gt_quaternion)),
            np.concatenate([dt, dr], 1))


def mahalanobis_sq(errors: np.ndarray, covariances: np.ndarray, rel_floor: float = 1e-9) -> np.ndarray:
    """``e^T Sigma^-1 e`` per row of ``errors (N, d)`` with ``covariances (N, d, d)``.

    A tiny ridge keeps rank-deficient sample covariances (fewer MC samples than dimensions, a collapsed
    dropout) invertible: ``rel_floor`` x each variance on the diagonal (at least 1e-12).  Per variance, not
    a share of the trace: a pose covariance mixes m^2 and rad^2, and with the calibrated per-block scales the
    translation variances (~700 m^2) exceed the rotation ones (~1e-7 rad^2) by 1e10, so a trace-relative
    ridge outweighed the smallest eigenvalues and moved frames inside the ellipsoid.
    """
    errors = np.asarray(errors, np.float64)
    cov = np.asarray(covariances, np.float64)
    d = errors.shape[1]
    diagonal = np.diagonal(cov, axis1=1, axis2=2)
    ridge = np.maximum(np.abs(diagonal) * rel_floor, 1e-12)[:, :, None] * np.eye(d)
    solved = np.linalg.solve(cov + ridge, errors[..., None])[..., 0]
    return np.einsum("nd,nd->n", errors, solved)


def inside_fraction(errors: np.ndarray, covariances: np.ndarray) -> float:
    """Fraction of ``errors`` inside the 2-sigma-equivalent ellipsoid of their covariance (3 or 6 DoF)."""
    d = errors.shape[1]
    if d not in _THRESHOLDS:
        raise ValueError(f"thresholds are defined for 3 or 6 dimensions, got {d}")
    return float(np.mean(mahalanobis_sq(errors, covariances) <= _THRESHOLDS[d]))


def fit_covariance_scale(errors: np.ndarray, covariances: np.ndarray) -> np.ndarray:
    """Per-axis std multipliers ``s`` (6,) such that, on *these* errors, each axis' 1-D 2-sigma interval
    ``|e_i| <= 2 s_i sigma_i`` holds for 95.45 % of the frames: ``s_i = q_0.9545(|e_i| / sigma_i) / 2``.

    Fit it on a validation drive, never on the frames it is then evaluated on.  Per axis because MC dropout
    is not uniformly wrong: along-track position can be under-confident while lateral is over-confident.
    """
    sigma = np.sqrt(np.maximum(np.diagonal(np.asarray(covariances, np.float64), axis1=1, axis2=2), 1e-24))
    z = np.abs(np.asarray(errors, np.float64)) / sigma
    return np.maximum(np.quantile(z, TWO_SIGMA_MASS, axis=0) / 2.0, 1e-6)


#: The two 3-DoF blocks of the 6x6 pose covariance (translation, rotation).
BLOCKS = (slice(0, 3), slice(3, 6))


def _ellipsoid_quantile(errors: np.ndarray, covariances: np.ndarray, mass: float) -> float:
    """The ``mass`` quantile of the squared Mahalanobis distance of 3-DoF ``errors``."""
    return float(np.quantile(mahalanobis_sq(errors, covariances), mass))


def fit_block_scale(errors: np.ndarray, covariances: np.ndarray, mass: float = TWO_SIGMA_MASS
                    ) -> np.ndarray:
    """One std multiplier per 3-DoF block (translation, rotation), as a per-axis (6,) vector, such that on
    *these* errors ``mass`` of the frames fall inside each block's 2-sigma ellipsoid:
    ``c = sqrt(q_mass(m^2) / chi2_3^-1(mass))``.

    Why per block instead of per axis: the goal counts frames inside the 3-D ellipsoid, and per-axis 1-D
    quantiles (:func:`fit_covariance_scale`) ignore how the axes combine (and the correlations), so they
    can hit 95 % on every axis and still leave a 3-D ellipsoid that holds far fewer frames.  The vector is
    what the pipeline and the card already apply (``cov * outer(s, s)``).
    """
    errors = np.asarray(errors, np.float64)
    cov = np.asarray(covariances, np.float64)
    threshold = _THRESHOLDS[3] if math.isclose(mass, TWO_SIGMA_MASS) else None
    if threshold is None:
        from scene_perception.evaluation.calibration import chi2_quantile

        threshold = chi2_quantile(mass, 3)
    out = np.ones(6)
    for sl in BLOCKS:
        q = _ellipsoid_quantile(errors[:, sl], cov[:, sl, sl], mass)
        out[sl] = max(math.sqrt(q / threshold), 1e-6)
    return out


def apply_additive_floor(covariances: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """``cov + diag(a_t^2 I_3, a_r^2 I_3)`` for ``floor = (a_t, a_r)`` (m, rad): an error MC dropout never
    sees (the along-track bias of a relocaliser) does not scale with its spread, so a constant may bound it
    where a multiplier cannot."""
    cov = np.array(covariances, np.float64, copy=True)
    add = np.repeat(np.asarray(floor, np.float64) ** 2, 3)
    idx = np.arange(6)
    cov[:, idx, idx] += add
    return cov


def fit_additive_floor(errors: np.ndarray, covariances: np.ndarray, mass: float = TWO_SIGMA_MASS
                       ) -> np.ndarray:
    """``(a_t, a_r)`` of :func:`apply_additive_floor` such that ``mass`` of *these* frames fall inside each
    block's 2-sigma ellipsoid (bisection; the share inside grows with ``a``).  0 where the raw covariance
    already holds ``mass``."""
    errors = np.asarray(errors, np.float64)
    cov = np.asarray(covariances, np.float64)
    out = np.zeros(2)
    eye = np.eye(3)
    for b, sl in enumerate(BLOCKS):
        e, c = errors[:, sl], cov[:, sl, sl]

        def share(a: float, e: np.ndarray = e, c: np.ndarray = c) -> float:
            return float(np.mean(mahalanobis_sq(e, c + a * a * eye) <= _THRESHOLDS[3]))

        if share(0.0) >= mass:
            continue
        lo, hi = 0.0, max(float(np.max(np.abs(e))), 1e-9) * 10.0
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if share(mid) >= mass else (mid, hi)
        out[b] = hi
    return out


def pose_metrics(pred_position: np.ndarray, pred_quaternion: np.ndarray, covariance: np.ndarray | None,
                 gt_position: np.ndarray, gt_quaternion: np.ndarray) -> dict[str, float]:
    """Median / mean errors and (with ``covariance (N, 6, 6)``) the 2-sigma inside fractions.

    Keys: ``median_translation_m``, ``median_rotation_deg``, ``mean_translation_m``, ``mean_rotation_deg``,
    ``frames`` and, with a covariance, ``inside_2sigma_translation`` / ``_rotation`` / ``_pose`` (3, 3 and
    6 DoF, chi-square thresholds above) and ``median_predicted_std_translation_m`` /
    ``median_predicted_std_rotation_deg`` (square roots of the mean diagonal variance of each block).
    """
    t_err, r_err, e = pose_errors(pred_position, pred_quaternion, gt_position, gt_quaternion)
    out: dict[str, float] = {
        "frames": float(len(t_err)),
        "median_translation_m": float(np.median(t_err)),
        "median_rotation_deg": float(np.median(r_err)),
        "mean_translation_m": float(np.mean(t_err)),
        "mean_rotation_deg": float(np.mean(r_err)),
    }
    if covariance is not None:
        cov = np.asarray(covariance, np.float64)
        out["inside_2sigma_translation"] = inside_fraction(e[:, :3], cov[:, :3, :3])
        out["inside_2sigma_rotation"] = inside_fraction(e[:, 3:], cov[:, 3:, 3:])
        out["inside_2sigma_pose"] = inside_fraction(e, cov)
        diag = np.diagonal(cov, axis1=1, axis2=2)
        out["median_predicted_std_translation_m"] = float(np.median(np.sqrt(diag[:, :3].mean(1))))
        out["median_predicted_std_rotation_deg"] = float(np.degrees(np.median(np.sqrt(diag[:, 3:].mean(1)))))
    return out


def format_metrics_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table of :func:`pose_metrics` results, one row per method."""
    cols = [("median_translation_m", "median t err (m)", "{:.2f}"),
            ("median_rotation_deg", "median R err (deg)", "{:.2f}"),
            ("inside_2sigma_translation", "t in 2σ", "{:.2f}"),
            ("inside_2sigma_rotation", "R in 2σ", "{:.2f}"),
            ("inside_2sigma_pose", "pose in 2σ (6-DoF)", "{:.2f}"),
            ("median_predicted_std_translation_m", "pred. std t (m)", "{:.2f}")]
    lines = ["| method | " + " | ".join(c[1] for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, m in rows.items():
        cells = [fmt.format(m[key]) if key in m else "n/a" for key, _, fmt in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
