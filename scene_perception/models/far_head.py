"""A learned "beyond the matcher's range" output for a stereo network: P(true disparity <= 1 px).

Why a separate head: the lite network puts the textureless sky 1-3 px away, just above the automatic 1 px
floor, with a wide std, and far street surfaces sit at the same disparities with similar stds, so no rule
on (d, std) separates the two (``far_sigma`` 0.5: sky 11 -> 5 % published nearer than 100 m, but 4 points
of the street lost).  The image around the pixel does: a smooth gradient above a skyline is sky, a textured
facade 2 px away is not.  This is a learned confidence measure in the manner of CCNN / LFN (Poggi and
Mattoccia): a small CNN that reads what the pipeline already has after the forward pass - the left image,
the disparity and its log-scale at the network's resolution - and outputs the logit of P(the true disparity
at that resolution is <= 1 px), i.e. the pixel is farther than the matcher can resolve.  The stereo weights
stay frozen, so the head changes no disparity and no std; the pipeline only invalidates pixels whose
probability exceeds ``far_probability``.  It runs on the engine's outputs in torch, whichever engine
(torch / ONNX Runtime / TensorRT) produced them.

The head is specific to the stereo weights it was trained on (their output statistics), so its card names
their sha256 and the factory uses it only with those weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from scene_perception.models.config_dict import config_from_dict

__all__ = ["FAR_CONFIGS", "FAR_DISPARITY_PX", "FarHead", "FarHeadConfig", "far_head_inputs", "far_labels"]

#: The head's positive class: GT disparity at or below this many px at the network's resolution.
FAR_DISPARITY_PX = 1.0
# ImageNet statistics, as the stereo network normalises its inputs.
_RGB_MEAN = (0.485, 0.456, 0.406)
_RGB_STD = (0.229, 0.224, 0.225)
#: Input channels: RGB, log1p(disparity), log-scale, log texture.
_IN_CHANNELS = 6
#: Box window (px) of the grey-level texture input (the pipeline's ``min_texture`` window).
_TEXTURE_WINDOW = 7


@dataclass(frozen=True)
class FarHeadConfig:
    """Architecture of :class:`FarHead` (frozen: a card's config cannot drift after build).

    Attributes:
        name: config name, stored in the card.
        channels: width of every layer.
        dilations: dilation of each 3x3 residual block at 1/4 resolution; their sum sets the context the
            head sees (sky is recognised from its surroundings, not from one pixel).
    """

    name: str
    channels: int = 16
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 1)

    def __post_init__(self) -> None:
        if self.channels <= 0 or not self.dilations or min(self.dilations) <= 0:
            raise ValueError(f"invalid far head config: channels {self.channels}, dilations {self.dilations}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FarHeadConfig:
        """Inverse of :meth:`to_dict` (``config_dict.config_from_dict``: a typo in a card is an error, not a
        default)."""
        return config_from_dict(cls, data)


FAR_CONFIGS: dict[str, FarHeadConfig] = {"far": FarHeadConfig(name="far")}


def _texture(grey: Tensor) -> Tensor:
    """Grey-level std over a box window, (B,1,H,W) in 0..1 (what ``min_texture`` thresholds)."""
    pad = _TEXTURE_WINDOW // 2
    padded = F.pad(grey, (pad, pad, pad, pad), mode="replicate")
    mean = F.avg_pool2d(padded, _TEXTURE_WINDOW, stride=1)
    mean_sq = F.avg_pool2d(padded * padded, _TEXTURE_WINDOW, stride=1)
    return (mean_sq - mean * mean).clamp(min=0.0).sqrt()


def far_head_inputs(left: Tensor, disparity: Tensor, log_scale: Tensor) -> Tensor:
    """The head's (B, 6, H, W) input from the left image (B,3,H,W in 0..1) and the network's (B,1,H,W)
    disparity (px) and log Laplace scale, all at the network's resolution.

    Disparity enters as ``log1p`` (its far end, 0-3 px, is where the decision is made), the texture as a log
    (the sky's is 1e-3, a facade's 1e-2 or more: a ratio, not a difference, matters)."""
    rgb = (left - left.new_tensor(_RGB_MEAN).view(1, 3, 1, 1)) / left.new_tensor(_RGB_STD).view(1, 3, 1, 1)
    grey = left.mean(dim=1, keepdim=True)
    d = torch.log1p(torch.nan_to_num(disparity, nan=0.0).clamp(min=0.0))
    s = torch.nan_to_num(log_scale, nan=0.0, posinf=5.0, neginf=-5.0).clamp(-5.0, 5.0)
    t = torch.log(_texture(grey) + 1e-3)
    return torch.cat([rgb, d, s, t], dim=1)


def far_labels(gt_disparity: Tensor) -> tuple[Tensor, Tensor]:
    """(target, known) for GT disparities (B,1,H,W px, sky 0 or negative, NaN / inf unknown): target 1
    where the true disparity is <= :data:`FAR_DISPARITY_PX` (sky included), 0 above; ``known`` masks
    pixels without GT out of the loss."""
    known = torch.isfinite(gt_disparity)
    target = (known & (gt_disparity <= FAR_DISPARITY_PX)).float()
    return target, known


class _Block(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class FarHead(nn.Module):
    """``forward(left, disparity, log_scale)`` -> (B,1,H,W) logit of P(true disparity <= 1 px).

    Two stride-2 convs bring the input to 1/4 resolution (where the lite network's cost volume lives), the
    dilated residual blocks gather context, and the logit is upsampled bilinearly; any H, W works (the
    input is padded by replication to a multiple of 4 and the output cropped).  No batch norm: the head is
    trained on cached outputs in small batches and runs one frame at a time.
    """

    def __init__(self, config: FarHeadConfig | str = "far") -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in FAR_CONFIGS:
                raise ValueError(f"unknown far head config {config!r}; known: {sorted(FAR_CONFIGS)}")
            config = FAR_CONFIGS[config]
        self.config = config
        c = config.channels
        self.stem = nn.Sequential(
            nn.Conv2d(_IN_CHANNELS, c, 5, stride=2, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*[_Block(c, d) for d in config.dilations])
        self.out = nn.Conv2d(c, 1, 1)

    def forward(self, left: Tensor, disparity: Tensor, log_scale: Tensor) -> Tensor:
        h, w = left.shape[-2:]
        x = far_head_inputs(left, disparity, log_scale)
        pad_h, pad_w = (-h) % 4, (-w) % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        logit = self.out(self.blocks(self.stem(x)))
        logit = F.interpolate(logit, scale_factor=4, mode="bilinear", align_corners=False)
        return logit[..., :h, :w]
