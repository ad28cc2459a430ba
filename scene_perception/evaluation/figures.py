"""Figures for stereo results: one place so the demo, the evaluation and the benchmarks look alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def stereo_figure(
    path: str | Path,
    left: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray,
    std: np.ndarray | None,
    mask: np.ndarray | None,
    title: str,
) -> Path:
    """Left image, GT and predicted disparity, |error|, uncertainty (std-dev px) and bad-2 map, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = float(np.nanpercentile(gt if gt is not None else pred, 99.5))
    panels: list[tuple[np.ndarray, str, str | None, tuple[float, float] | None]] = [
        (left, "left image", None, None)
    ]
    if gt is not None:
        panels.append((gt, "ground-truth disparity (px)", "magma", (0, vmax)))
    panels.append((pred, "predicted disparity (px)", "magma", (0, vmax)))
    if gt is not None:
        m = np.isfinite(gt) if mask is None else (mask & np.isfinite(gt))
        err = np.where(m, np.abs(pred - gt), np.nan)
        panels.append((err, "|error| (px, non-occluded)", "inferno", (0, 5)))
    if std is not None:
        panels.append(
            (
                std,
                "disparity std-dev, aleatoric (px)",
                "viridis",
                (0, float(np.nanpercentile(std, 99)) or 1.0),
            )
        )
    if gt is not None:
        panels.append(
            (
                np.where(m, (np.abs(pred - gt) > 2).astype(np.float32), np.nan),
                "bad-2 pixels (white)",
                "gray",
                (0, 1),
            )
        )
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (img, name, cmap, lim) in zip(axes.ravel(), panels, strict=False):
        kwargs = {} if lim is None else {"vmin": lim[0], "vmax": lim[1]}
        im = ax.imshow(img, cmap=cmap, **kwargs)
        ax.set_title(name, fontsize=10)
        if cmap is not None:
            fig.colorbar(im, ax=ax, fraction=0.03)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
