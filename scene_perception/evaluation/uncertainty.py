"""Is the predicted uncertainty any good?  Sparsification curves and AUSE (Ilg et al., ECCV 2018).

Why measure it: an uncertainty image is only useful if removing the pixels it calls uncertain removes the
large errors first.  The sparsification curve does exactly that; the *oracle* curve removes pixels by their
true error, so the area between the two (AUSE) is 0 for a perfect ranking and grows as the ranking gets
worse.  A random ranking gives a flat curve.
"""

from __future__ import annotations

import numpy as np


def sparsification(
    error: np.ndarray, uncertainty: np.ndarray, steps: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """Mean error of the pixels left after removing the most-uncertain fraction f, for f in [0, 1).

    Returns ``(fractions, curve)``; the curve is normalised by the mean error of all pixels, so curves of
    different images or methods are comparable.
    """
    error = np.asarray(error, dtype=np.float64).ravel()
    uncertainty = np.asarray(uncertainty, dtype=np.float64).ravel()
    keep = np.isfinite(error) & np.isfinite(uncertainty)
    error, uncertainty = error[keep], uncertainty[keep]
    fractions = np.linspace(0.0, 1.0, steps, endpoint=False)
    if error.size == 0 or error.mean() == 0:
        return fractions, np.full(steps, np.nan)
    order = np.argsort(-uncertainty, kind="stable")  # most uncertain first
    cumulative = np.cumsum(error[order][::-1])[::-1]  # sum of errors from position i to the end
    n = error.size
    starts = np.minimum((fractions * n).astype(int), n - 1)
    curve = cumulative[starts] / (n - starts)
    return fractions, curve / error.mean()


def ause(error: np.ndarray, uncertainty: np.ndarray, steps: int = 20) -> dict[str, float]:
    """AUSE and the areas under the model and oracle sparsification curves (normalised; lower is better)."""
    fractions, model = sparsification(error, uncertainty, steps)
    _, oracle = sparsification(error, error, steps)
    width = 1.0 / steps
    area_model = float(np.sum(model) * width)
    area_oracle = float(np.sum(oracle) * width)
    return {"ause": area_model - area_oracle, "area_model": area_model, "area_oracle": area_oracle}
