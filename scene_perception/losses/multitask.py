"""Losses of the multi-task scene network (Kendall, Gal & Cipolla, CVPR 2018; Kendall & Gal, NeurIPS 2017).

* :func:`heteroscedastic_nll` -- per-pixel aleatoric regression: Laplace ``|y - f| / b + log b`` or
  Gaussian ``(y - f)^2 / (2 s^2) + log s``, the network predicting ``log b`` / ``log s``.
* :func:`sampled_logit_cross_entropy` -- classification with aleatoric logit noise: sample
  ``x_t = f + sigma * eps_t``, average the softmax over ``T`` samples, take ``-log`` of the true class'
  mean probability (Kendall & Gal 2017, eq. 12; computed with logsumexp for stability).
* :class:`UncertaintyWeighting` -- homoscedastic task weighting with a learned ``s_i = log sigma_i^2`` per
  task: regression ``L / (2 sigma^2) + log sigma``, classification ``L / sigma^2 + log sigma`` (the
  temperature-scaled softmax approximation of the 2018 paper).  Modes ``single`` / ``sum`` / ``learned``
  give the rows of the paper's Table 1.

Why the regression *task* losses fed to the weighting are plain L1 and the heteroscedastic NLLs train only
the aleatoric heads (on detached predictions): a Laplace NLL is unbounded below (``1 + log |r|`` at its
optimum), so ``NLL / (2 sigma^2)`` would let the learned task weight run away to infinity on a small
residual.  L1 is what the 2018 paper uses for the instance and depth tasks; the NLL then only teaches the
head to predict the error (as training/stereo.py does for the stereo head).  The semantic task loss *is*
the sampled-logit cross-entropy: it is a negative log-probability, hence >= 0, so the same weighting works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "INV_DEPTH_LOG_SCALE_RANGE",
    "LOGIT_LOG_VAR_RANGE",
    "OFFSET_LOG_SCALE_RANGE",
    "TASK_KINDS",
    "WEIGHTINGS",
    "UncertaintyWeighting",
    "heteroscedastic_nll",
    "masked_l1",
    "median_frequency_weights",
    "sampled_logit_cross_entropy",
]

# Clamp ranges of the predicted log-scales: outside them gradients stop, which keeps the 1/b term from
# exploding on early, over-confident pixels.  Offsets are px (b from 0.05 to 150 px); inverse depth is 1/m
# (b from 1e-4 to 0.37 /m); logit log-variance from sigma = 0.01 to sigma = 20.
OFFSET_LOG_SCALE_RANGE = (-3.0, 5.0)
INV_DEPTH_LOG_SCALE_RANGE = (-9.0, -1.0)
LOGIT_LOG_VAR_RANGE = (-9.0, 6.0)

TASK_KINDS: dict[str, str] = {"semantic": "classification", "instance": "regression", "depth": "regression"}
WEIGHTINGS = ("single", "sum", "learned")


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    mask = mask.expand_as(values)
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1).to(values.dtype)


def masked_l1(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute error over ``mask`` (broadcast over channels); 0 with a graph when the mask is empty."""
    diff = (pred - torch.where(mask.expand_as(target), target, pred.detach()) if mask is not None
            else pred - target)
    return _masked_mean(diff.abs(), mask)


def heteroscedastic_nll(pred: Tensor, log_scale: Tensor, target: Tensor, mask: Tensor | None = None, *,
                        distribution: str = "laplace",
                        log_scale_range: tuple[float, float] = OFFSET_LOG_SCALE_RANGE) -> Tensor:
    """Mean heteroscedastic negative log-likelihood (constants ``log 2`` / ``0.5 log 2 pi`` dropped).

    ``log_scale`` is ``log b`` (Laplace) or ``log s`` (Gaussian std), broadcast over ``pred``'s channels
    (one scale shared by the two offset components).  The per-pixel optimum is ``b = |r|`` (Laplace) or
    ``s = |r|`` (Gaussian): the head learns to predict its own error.
    """
    log_s = log_scale.clamp(*log_scale_range)
    safe = torch.where(mask.expand_as(target), target, pred.detach()) if mask is not None else target
    residual = pred - safe
    if distribution == "laplace":
        nll = residual.abs() * torch.exp(-log_s) + log_s
    elif distribution == "gaussian":
        nll = 0.5 * residual.square() * torch.exp(-2.0 * log_s) + log_s
    else:
        raise ValueError(f"distribution must be 'laplace' or 'gaussian', got {distribution!r}")
    return _masked_mean(nll, mask)


def median_frequency_weights(pixel_counts: Sequence[float], image_counts: Sequence[float],
                             max_weight: float = 10.0) -> list[float]:
    """Median frequency balancing (Eigen & Fergus 2015, as in SegNet / Bayesian SegNet): ``w_c =
    median(f) / f_c`` with ``f_c`` = pixels of class c / total pixels of the images where c occurs.

    ``pixel_counts[c]`` is the number of class-c pixels, ``image_counts[c]`` the pixel total of the images
    that contain c.  Classes never seen get weight 0 (they cannot be learned); weights are clipped to
    ``max_weight`` so a handful of pixels cannot dominate a batch.
    """
    freqs = [p / i if p > 0 and i > 0 else 0.0 for p, i in zip(pixel_counts, image_counts, strict=True)]
    seen = sorted(f for f in freqs if f > 0)
    if not seen:
        return [1.0] * len(freqs)
    median = float(np.median(seen))
    return [min(max_weight, median / f) if f > 0 else 0.0 for f in freqs]


def sampled_logit_cross_entropy(logits: Tensor, log_var: Tensor, target: Tensor, samples: int = 10,
                                mask: Tensor | None = None, generator: torch.Generator | None = None,
                                class_weights: Tensor | None = None) -> Tensor:
    """``-log (1/T sum_t softmax(f + sigma eps_t)[y])``, eps ~ N(0, I) per pixel, class and sample.

    Args:
        logits: (B, C, H, W) ``f``.
        log_var: (B, 1, H, W) or (B, C, H, W) ``log sigma^2`` of the logits.
        target: (B, H, W) int64 class ids.
        samples: ``T``; ``T = 0`` gives the plain cross-entropy of ``f`` (no aleatoric term).
        mask: optional (B, H, W) bool pixels that count.
        class_weights: optional (C,) per-class weights; the loss is then ``sum w_y nll / sum w_y``.
    """
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    tgt = target.clamp(0, logits.shape[1] - 1).unsqueeze(1)
    if samples == 0:
        nll = -torch.log_softmax(logits, 1).gather(1, tgt)[:, 0]
        return _weighted_mean(nll, tgt[:, 0], mask, class_weights)
    sigma = torch.exp(0.5 * log_var.clamp(*LOGIT_LOG_VAR_RANGE))
    shape = (samples, *logits.shape)
    eps = torch.randn(shape, generator=generator, device=logits.device, dtype=logits.dtype) if generator \
        else torch.randn(shape, device=logits.device, dtype=logits.dtype)
    x = logits.unsqueeze(0) + sigma.unsqueeze(0) * eps  # (T, B, C, H, W)
    log_p = torch.log_softmax(x, 2).gather(2, tgt.unsqueeze(0).expand(samples, -1, -1, -1, -1))[:, :, 0]
    log_mean_p = torch.logsumexp(log_p, 0) - math.log(samples)  # (B, H, W)
    return _weighted_mean(-log_mean_p, tgt[:, 0], mask, class_weights)


def _weighted_mean(nll: Tensor, target: Tensor, mask: Tensor | None, class_weights: Tensor | None) -> Tensor:
    if class_weights is None:
        return _masked_mean(nll, mask)
    w = class_weights.to(nll.dtype)[target]
    if mask is not None:
        w = torch.where(mask, w, torch.zeros_like(w))
    return (w * nll).sum() / w.sum().clamp_min(1e-12)


class UncertaintyWeighting(nn.Module):
    """Combine task losses: ``single`` (one task), ``sum`` (unweighted) or ``learned`` (homoscedastic).

    ``learned`` holds one ``s_i = log sigma_i^2`` per task (init 0: all weights start as in ``sum``):
    regression ``0.5 exp(-s) L + 0.5 s``, classification ``exp(-s) L + 0.5 s`` -- both ``L / (k sigma^2) +
    log sigma``.  Learning ``s`` instead of ``sigma`` keeps the weight positive and the optimisation
    stable (the paper's choice).
    """

    def __init__(self, tasks: Sequence[str], mode: str = "learned", task: str | None = None) -> None:
        super().__init__()
        if mode not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {mode!r}")
        unknown = [t for t in tasks if t not in TASK_KINDS]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; known: {sorted(TASK_KINDS)}")
        if mode == "single":
            if task not in tasks:
                raise ValueError(f"single-task weighting needs task in {list(tasks)}, got {task!r}")
            tasks = [task]
        self.mode = mode
        self.tasks = tuple(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)), requires_grad=mode == "learned")

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise KeyError(f"task losses missing: {missing}")
        total = torch.zeros((), device=self.log_vars.device)
        for i, name in enumerate(self.tasks):
            loss = losses[name]
            if self.mode != "learned":
                total = total + loss
                continue
            s = self.log_vars[i]
            k = 1.0 if TASK_KINDS[name] == "classification" else 0.5
            total = total + k * torch.exp(-s) * loss + 0.5 * s
        return total

    def weights(self) -> dict[str, float]:
        """Effective multiplier of each task loss (1 for ``sum``/``single``)."""
        out = {}
        for i, name in enumerate(self.tasks):
            k = 1.0 if TASK_KINDS[name] == "classification" else 0.5
            out[name] = float(k * torch.exp(-self.log_vars[i].detach())) if self.mode == "learned" else 1.0
        return out

    def sigmas(self) -> dict[str, float]:
        """``sigma_i = exp(s_i / 2)`` per task (the learned homoscedastic task noise)."""
        return {name: float(torch.exp(0.5 * self.log_vars[i].detach())) for i, name in enumerate(self.tasks)}
