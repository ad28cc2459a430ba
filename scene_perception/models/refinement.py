"""Image-guided disparity refinement at the input resolution (StereoNet-style, Khamis et al. ECCV 2018).

Why: the lite GC-Net regresses disparity at 1/4 resolution, where one cost-volume level is 4 px and thin
structures (leaves, poles) are a fraction of a feature pixel.  Bilinear upsampling then blurs every depth
edge across the object boundary.  A small dilated residual CNN that sees the upsampled disparity *and* the
full-resolution left image learns to snap edges back to image edges and to correct sub-pixel bias, at a
cost linear in pixels (~1 GMAC at 320x240 with 16 channels) instead of the cost volume's cubic one.

The last conv starts at zero, so a refinement added to a trained model initially changes nothing and
fine-tuning starts from the unrefined model's accuracy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class _DilatedBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.leaky_relu(self.bn(self.conv(x)), 0.2)


class DisparityRefinement(nn.Module):
    """Predicts residuals for disparity (px) and log-scale from (disparity, log-scale, normalised RGB)."""

    def __init__(self, channels: int, dilations: tuple[int, ...], max_disparity: float) -> None:
        super().__init__()
        self.max_disparity = float(max_disparity)
        self.stem = nn.Sequential(
            nn.Conv2d(5, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.LeakyReLU(0.2)
        )
        self.blocks = nn.Sequential(*(_DilatedBlock(channels, d) for d in dilations))
        self.out = nn.Conv2d(channels, 2, 3, padding=1)
        self.reset_output()

    def reset_output(self) -> None:
        """Zero the last conv (called again after the model's global init, which would overwrite it)."""
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, disparity: Tensor, log_scale: Tensor, image: Tensor, channels_last: bool = False
    ) -> tuple[Tensor, Tensor]:
        scale = self.max_disparity
        x = torch.cat([disparity / scale, log_scale, image], dim=1)
        if channels_last:  # see GCNet.channels_last: ~2x faster narrow convs on oneDNN
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        # fp32 residuals: under autocast the convs run in fp16/bf16, but the published disparity must not
        # inherit their 8- or 11-bit mantissa (the soft arg-min gave an fp32 disparity).
        delta = self.out(self.blocks(x)).float()
        # Residual in units of the disparity range keeps the conv's output O(1) whatever the range is.
        refined = F.relu(disparity + delta[:, :1] * scale * 0.1)
        return refined, log_scale + delta[:, 1:]
