"""Multi-task losses against known values and gradients: heteroscedastic NLL, sampled-logit cross-entropy,
homoscedastic uncertainty weighting (single / sum / learned)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from scene_perception.losses.multitask import (
    UncertaintyWeighting,
    heteroscedastic_nll,
    masked_l1,
    sampled_logit_cross_entropy,
)


def test_laplace_and_gaussian_nll_known_values() -> None:
    pred = torch.tensor([[1.0, 2.0]])
    target = torch.tensor([[3.0, 2.0]])
    log_b = torch.tensor([[math.log(2.0), 0.0]])
    # Laplace: |r|/b + log b -> (2/2 + log 2, 0 + 0) / 2
    got = heteroscedastic_nll(pred, log_b, target, log_scale_range=(-5, 5))
    assert got.item() == pytest.approx((1.0 + math.log(2.0)) / 2)
    # Gaussian: r^2/(2 s^2) + log s -> (4/8 + log 2, 0) / 2
    got = heteroscedastic_nll(pred, log_b, target, distribution="gaussian", log_scale_range=(-5, 5))
    assert got.item() == pytest.approx((0.5 + math.log(2.0)) / 2)
    with pytest.raises(ValueError):
        heteroscedastic_nll(pred, log_b, target, distribution="cauchy")


def test_nll_scale_gradient_vanishes_at_the_error() -> None:
    """The per-pixel optimum of the scale is b = |r|: the head learns to predict its error."""
    for dist in ("laplace", "gaussian"):
        log_b = torch.tensor([math.log(0.7)], requires_grad=True)
        heteroscedastic_nll(torch.tensor([0.0]), log_b, torch.tensor([0.7]), distribution=dist,
                            log_scale_range=(-5, 5)).backward()
        assert abs(log_b.grad.item()) < 1e-6
        log_b = torch.tensor([math.log(0.2)], requires_grad=True)
        heteroscedastic_nll(torch.tensor([0.0]), log_b, torch.tensor([0.7]), distribution=dist,
                            log_scale_range=(-5, 5)).backward()
        assert log_b.grad.item() < 0  # too confident -> push the scale up


def test_masks_exclude_pixels() -> None:
    pred = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[[1.0, 100.0]], [[1.0, 100.0]]]])
    mask = torch.tensor([[[[True, False]]]])
    assert masked_l1(pred, target, mask).item() == pytest.approx(1.0)
    assert masked_l1(pred, target, torch.zeros_like(mask)).item() == 0.0


def test_sampled_logit_ce_limits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 3, 4)
    target = torch.randint(0, 5, (2, 3, 4))
    ce = F.cross_entropy(logits, target)
    tiny_var = torch.full((2, 1, 3, 4), -18.0)
    assert sampled_logit_cross_entropy(logits, tiny_var, target, samples=0).item() == pytest.approx(ce.item())
    # sigma -> 0 (clamped at 0.01): the same as plain cross-entropy.
    got = sampled_logit_cross_entropy(logits, tiny_var, target, samples=8)
    assert got.item() == pytest.approx(ce.item(), abs=0.02)
    # Huge logit noise: the mean softmax tends to uniform, so the loss tends to log C whatever the logits.
    huge = torch.full((2, 1, 3, 4), 6.0)
    got = sampled_logit_cross_entropy(logits * 0.1, huge, target, samples=2000)
    assert got.item() == pytest.approx(math.log(5), abs=0.15)


def test_sampled_logit_ce_attenuates_wrong_confident_pixels() -> None:
    """A confidently wrong logit costs less with a larger predicted variance (loss attenuation)."""
    logits = torch.tensor([10.0, 0.0, 0.0]).view(1, 3, 1, 1)
    target = torch.tensor([1]).view(1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    low = sampled_logit_cross_entropy(logits, torch.full((1, 1, 1, 1), -6.0), target, 500, generator=gen)
    high = sampled_logit_cross_entropy(logits, torch.full((1, 1, 1, 1), 4.0), target, 500, generator=gen)
    assert high.item() < low.item() - 3.0
    log_var = torch.zeros(1, 1, 1, 1, requires_grad=True)
    sampled_logit_cross_entropy(logits, log_var, target, 200, generator=gen).backward()
    assert log_var.grad.item() < 0  # gradient descent raises the variance on this pixel


def test_uncertainty_weighting_values_and_optimum() -> None:
    losses = {"semantic": torch.tensor(0.8), "instance": torch.tensor(4.0), "depth": torch.tensor(0.02)}
    assert UncertaintyWeighting(list(losses), "sum")(losses).item() == pytest.approx(4.82)
    assert UncertaintyWeighting(list(losses), "single", task="depth")(losses).item() == pytest.approx(0.02)
    learned = UncertaintyWeighting(list(losses), "learned")
    # s = 0: classification L + 0, regression L/2 + 0.
    assert learned(losses).item() == pytest.approx(0.8 + 2.0 + 0.01)
    # Known value at s = log sigma^2 = (1, 2, -1).
    with torch.no_grad():
        learned.log_vars.copy_(torch.tensor([1.0, 2.0, -1.0]))
    expect = (math.exp(-1) * 0.8 + 0.5) + (0.5 * math.exp(-2) * 4.0 + 1.0) + (0.5 * math.exp(1) * 0.02 - 0.5)
    assert learned(losses).item() == pytest.approx(expect)
    # Stationary point: regression exp(s) = L, classification exp(s) = 2L.
    with torch.no_grad():
        learned.log_vars.copy_(torch.tensor([math.log(1.6), math.log(4.0), math.log(0.02)]))
    learned.zero_grad()
    learned(losses).backward()
    assert learned.log_vars.grad.abs().max().item() < 1e-6
    assert learned.weights()["depth"] == pytest.approx(0.5 / 0.02)
    # sum / single do not learn.
    assert not UncertaintyWeighting(list(losses), "sum").log_vars.requires_grad


def test_uncertainty_weighting_rejects_bad_setup() -> None:
    with pytest.raises(ValueError, match="weighting"):
        UncertaintyWeighting(["semantic"], "max")
    with pytest.raises(ValueError, match="single-task"):
        UncertaintyWeighting(["semantic", "depth"], "single", task="instance")
    with pytest.raises(KeyError):
        UncertaintyWeighting(["semantic", "depth"], "sum")({"semantic": torch.tensor(1.0)})


def test_median_frequency_weights_and_weighted_ce() -> None:
    from scene_perception.losses.multitask import median_frequency_weights

    # f = (0.5, 0.1, 0.01) -> median 0.1 -> weights (0.2, 1, 10); an unseen class gets 0.
    w = median_frequency_weights([50, 10, 1, 0], [100, 100, 100, 0])
    assert w == pytest.approx([0.2, 1.0, 10.0, 0.0])
    assert median_frequency_weights([50, 1], [100, 100], max_weight=5.0)[1] == 5.0
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 0] = 3.0  # pixel 0: confident class 0 (right); pixel 1: uniform scores, class 1
    target = torch.tensor([[[0, 1]]])
    nll = -torch.log_softmax(logits, 1)[0, :, 0, :]
    per_px = torch.stack([nll[0, 0], nll[1, 1]])
    weights = torch.tensor([1.0, 3.0])
    got = sampled_logit_cross_entropy(logits, torch.zeros(1, 1, 1, 2), target, 0, class_weights=weights)
    assert got.item() == pytest.approx(((per_px[0] + 3 * per_px[1]) / 4).item())
