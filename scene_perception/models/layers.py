"""Building blocks shared by the stereo networks (pure ``torch.nn``, no ROS).

Everything here is written so that a model built from it exports to ONNX with static shapes: no Python
loops over the batch, no data-dependent control flow, no in-place tricks the exporters cannot follow.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "ResidualBlock2d",
    "concat_cost_volume",
    "conv2d_bn_relu",
    "conv3d_bn_relu",
    "deconv3d_bn_relu",
    "init_weights",
    "soft_argmin",
    "soft_argmin_with_expectation",
]


def conv2d_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """2-D conv + BN + ReLU; the conv has no bias because BN's shift makes it redundant."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def conv3d_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3x3x3 conv + BN + ReLU over (disparity, height, width); stride 2 halves all three axes."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(out_ch),
        nn.ReLU(inplace=True),
    )


def deconv3d_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3x3 transposed conv, stride 2, + BN + ReLU.

    ``output_padding=1`` makes the output exactly twice the input on every axis, so the decoder lines up
    with the encoder's skip tensors whenever the input is a multiple of the model's ``size_divisor``.
    """
    return nn.Sequential(
        nn.ConvTranspose3d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm3d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResidualBlock2d(nn.Module):
    """Two 3x3 conv-BN-ReLU layers whose output is added to the block input (GC-Net Table 1, layers 2-4).

    The paper adds the features of "layer 1 and 3", i.e. the sum comes after the second ReLU and is not
    followed by another non-linearity; we keep that literal reading.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv2d_bn_relu(channels, channels), conv2d_bn_relu(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def concat_cost_volume(left: Tensor, right: Tensor, levels: int) -> Tensor:
    """Concatenation cost volume: ``out[:, :, d, y, x] = cat(left[:, :, y, x], right[:, :, y, x - d])``.

    Why concatenation rather than a dot product: GC-Net lets the 3-D convs learn the matching metric and
    keeps the absolute feature context (needed e.g. for occlusions). Right features with ``x - d < 0``
    come from zero padding. Built from ``levels`` static slices of one padded tensor and a single
    ``stack``, which is vectorised over batch, channels and pixels and exports to ONNX as plain Slice /
    Concat ops.

    Args:
        left, right: (B, C, H, W) feature maps.
        levels: number of disparity hypotheses D (in feature-map pixels, 0 .. D-1).

    Returns:
        (B, 2C, D, H, W) tensor.
    """
    b, c, h, w = left.shape
    padded = F.pad(right, (levels - 1, 0, 0, 0))
    start = levels - 1
    shifted = torch.stack([padded[:, :, :, start - d : start - d + w] for d in range(levels)], dim=2)
    return torch.cat([left.unsqueeze(2).expand(b, c, levels, h, w), shifted], dim=1)


def _disparity_values(cost: Tensor, dim: int) -> Tensor:
    """0 .. D-1 shaped to broadcast against ``cost`` along ``dim``."""
    levels = cost.shape[dim]
    shape = [1] * cost.dim()
    shape[dim] = levels
    return torch.arange(levels, dtype=cost.dtype, device=cost.device).reshape(shape)


def soft_argmin(cost: Tensor, dim: int = 1) -> Tensor:
    """Differentiable arg-min over disparity: ``sum_d d * softmax(-cost)_d`` (GC-Net eq. 1).

    Unlike a hard arg-min it is differentiable and gives sub-pixel estimates; low cost = good match.

    Args:
        cost: matching cost with the disparity hypotheses along ``dim`` (index = disparity in the
            volume's pixels).
        dim: disparity axis.

    Returns:
        Expected disparity with ``dim`` kept as a size-1 axis.
    """
    cost = cost.float()  # fp32 under autocast too: see soft_argmin_with_expectation
    prob = torch.softmax(-cost, dim=dim)
    return (prob * _disparity_values(cost, dim)).sum(dim=dim, keepdim=True)


def soft_argmin_with_expectation(
    cost: Tensor, values: Tensor, dim: int = 1, window: int = 0
) -> tuple[Tensor, Tensor]:
    """Soft arg-min plus the expectation of per-hypothesis ``values`` under the same distribution.

    Used by the aleatoric head: the network predicts a log-scale feature for every disparity hypothesis
    and the pixel's log-scale is its expectation, so the uncertainty follows the chosen match.

    Args:
        cost, values: same shape, disparity hypotheses along ``dim``.
        dim: disparity axis.
        window: 0 = the plain soft arg-min over all hypotheses (GC-Net eq. 1).  ``k > 0`` keeps only the
            hypotheses within ``k`` levels of the most probable one and renormalises.  Why: at a depth edge
            the distribution is bimodal (foreground and background), and the full expectation lands
            between the two modes, on neither surface; restricted to the main mode it picks one.  The mask
            is piecewise constant, so gradients still flow through the kept probabilities.

    Returns:
        (disparity, expected values), both with ``dim`` kept as a size-1 axis.
    """
    # fp32 whatever autocast ran the convs in: the expectation sums up to 192 hypotheses, and in bf16 (8-bit
    # mantissa) a disparity of ~100 px is only resolved to 0.5 px (measured: bf16 moved lite's disparity by
    # up to 0.42 px).  ``float()`` is a no-op on fp32 tensors, so fp32 graphs and exports are unchanged.
    cost, values = cost.float(), values.float()
    prob = torch.softmax(-cost, dim=dim)
    levels = _disparity_values(cost, dim)
    if window > 0:
        mode = prob.argmax(dim=dim, keepdim=True).to(cost.dtype)
        # "< window + 0.5" on integer levels is "<= window"; ONNX Less is in TensorRT's op set, LessOrEqual
        # is not in our checked list (engines/onnx_export.py).
        prob = prob * ((levels - mode).abs() < window + 0.5).to(cost.dtype)
        prob = prob / prob.sum(dim=dim, keepdim=True)
    disparity = (prob * levels).sum(dim=dim, keepdim=True)
    return disparity, (prob * values).sum(dim=dim, keepdim=True)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal init for convs followed by ReLU, identity BN.

    He init keeps activation variance roughly constant through ~40 conv layers, which matters for a
    network this deep trained from scratch with small batches.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
