"""Multi-task scene network (Kendall, Gal & Cipolla, CVPR 2018), small enough to train on a CPU.

One shared encoder, three decoders:

* **semantics**: per-class logits plus a per-pixel *logit log-variance* ``log sigma^2``.  Training samples
  logits from ``N(f, sigma^2)`` and averages their softmax (Kendall & Gal, NeurIPS 2017), so ``sigma`` learns
  where labels are ambiguous (aleatoric);
* **instances**: a 2-channel offset field, the vector (px, at the network's input resolution) from each pixel
  to the centroid of its instance, plus a per-pixel Laplace log-scale ``log b`` (px).  Instances are
  recovered by clustering ``pixel + offset`` votes (:mod:`scene_perception.pipelines.instances`);
* **inverse depth** (1/m; 0 is the sky, at infinity, so every pixel has a target) plus a Laplace log-scale.

Epistemic uncertainty is Monte-Carlo dropout (Bayesian SegNet): :class:`MCDropout` layers sit after the
deepest encoder stage and in every decoder.  They are active in ``train()`` mode as usual, and in ``eval()``
mode only when switched on with :func:`set_mc_dropout` / :func:`mc_dropout` -- BatchNorm keeps using its
running statistics, so a batch of N copies of one image gives N independent posterior samples in one
forward pass, and plain ``eval()`` stays deterministic.

Why this size: the machine this is trained on has two shared CPU cores.  With the default config a
96x192 forward pass is ~0.3 GFLOP; the encoder reaches 1/8 resolution with dilated convolutions for
context (a car at 96x192 spans ~60 px, its centroid up to ~30 px away from its pixels).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from scene_perception.models.config_dict import config_from_dict

__all__ = [
    "CONFIGS",
    "MCDropout",
    "MultiTaskConfig",
    "MultiTaskNet",
    "MultiTaskOutput",
    "TASKS",
    "mc_dropout",
    "set_mc_dropout",
]

TASKS: tuple[str, ...] = ("semantic", "instance", "depth")

# Same normalisation as the stereo network: data independent, any camera.
_RGB_MEAN = (0.485, 0.456, 0.406)
_RGB_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MultiTaskConfig:
    """Architecture hyper-parameters, stored in full in the model card (see models/weights.py).

    Attributes:
        name: config name.
        num_classes: semantic classes (models/labels.py CLASSES has 9).
        encoder_channels: width of the three stride-2 encoder stages (1/2, 1/4, 1/8 resolution).
        context_dilations: dilations of the 3x3 context convs at 1/8 resolution.
        decoder_channels: width of each decoder at 1/4 and at 1/2 resolution.
        dropout: channel-dropout probability of the MC-dropout layers (Bayesian SegNet uses 0.5 on a far
            bigger net; a small net needs less to keep accuracy).
        offset_scale: the offset head's raw output is multiplied by this (px), so initial outputs are in
            the range of real offsets and the head's learning rate need not differ.
        inv_depth_max: largest inverse depth (1/m) the head can output (sigmoid * this); 2.0 is a 0.5 m
            near plane, closer than the synthetic world's clipping depth.
    """

    name: str = "scene"
    num_classes: int = 9
    encoder_channels: tuple[int, int, int] = (16, 32, 64)
    context_dilations: tuple[int, ...] = (2, 4)
    decoder_channels: tuple[int, int] = (32, 16)
    dropout: float = 0.2
    offset_scale: float = 8.0
    inv_depth_max: float = 2.0

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if len(self.encoder_channels) != 3 or len(self.decoder_channels) != 2:
            raise ValueError("encoder_channels needs 3 widths and decoder_channels 2")
        if min(*self.encoder_channels, *self.decoder_channels) < 1:
            raise ValueError("channel widths must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.offset_scale <= 0 or self.inv_depth_max <= 0:
            raise ValueError("offset_scale and inv_depth_max must be > 0")

    @property
    def size_divisor(self) -> int:
        """Input H and W must be multiples of this (three stride-2 stages)."""
        return 8

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("encoder_channels", "context_dilations", "decoder_channels"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultiTaskConfig:
        """Inverse of :meth:`to_dict` (``config_dict.config_from_dict``: a typo in a card is an error, not a
        default)."""
        return config_from_dict(cls, data)


CONFIGS: dict[str, MultiTaskConfig] = {
    "scene": MultiTaskConfig(),
    "tiny": MultiTaskConfig(name="tiny", encoder_channels=(8, 8, 16), context_dilations=(2,),
                            decoder_channels=(8, 8)),
}


class MultiTaskOutput(NamedTuple):
    """All heads at the input resolution (a tuple, so tracing/ONNX export sees plain tensors)."""

    semantic_logits: Tensor  # (B, C, H, W)
    semantic_log_var: Tensor  # (B, 1, H, W) log sigma^2 of the logits
    offsets: Tensor  # (B, 2, H, W) px (dx, dy) from the pixel to its instance centroid
    offset_log_scale: Tensor  # (B, 1, H, W) Laplace log b, px
    inv_depth: Tensor  # (B, 1, H, W) 1/m
    inv_depth_log_scale: Tensor  # (B, 1, H, W) Laplace log b, 1/m


class MCDropout(nn.Dropout2d):
    """Channel dropout that can stay on in eval mode (``mc = True``) for Monte-Carlo sampling."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.mc = False

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not (self.training or self.mc):
            return x
        return F.dropout2d(x, self.p, training=True)


def set_mc_dropout(model: nn.Module, enabled: bool) -> int:
    """Switch MC sampling on/off in every :class:`MCDropout` of ``model``; returns how many layers."""
    count = 0
    for m in model.modules():
        if isinstance(m, MCDropout):
            m.mc = bool(enabled)
            count += 1
    return count


@contextmanager
def mc_dropout(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """``with mc_dropout(model): ...`` samples dropout masks even in eval mode, and restores afterwards."""
    previous = [(m, m.mc) for m in model.modules() if isinstance(m, MCDropout)]
    set_mc_dropout(model, enabled)
    try:
        yield model
    finally:
        for m, flag in previous:
            m.mc = flag


def _conv(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class _Decoder(nn.Module):
    """1/8 -> 1/4 (+ skip) -> 1/2 (+ skip) -> 1x1 head; the caller upsamples the head to full size."""

    def __init__(self, enc: tuple[int, int, int], dec: tuple[int, int], out_ch: int, p: float) -> None:
        super().__init__()
        self.up1 = _conv(enc[2] + enc[1], dec[0])
        self.drop1 = MCDropout(p)
        self.up2 = _conv(dec[0] + enc[0], dec[1])
        self.drop2 = MCDropout(p)
        self.head = nn.Conv2d(dec[1], out_ch, 1)

    def forward(self, deep: Tensor, skip4: Tensor, skip2: Tensor) -> Tensor:
        x = F.interpolate(deep, size=skip4.shape[-2:], mode="bilinear", align_corners=False)
        x = self.drop1(self.up1(torch.cat([x, skip4], 1)))
        x = F.interpolate(x, size=skip2.shape[-2:], mode="bilinear", align_corners=False)
        x = self.drop2(self.up2(torch.cat([x, skip2], 1)))
        return self.head(x)


class MultiTaskNet(nn.Module):
    """Shared encoder + semantic / instance-offset / inverse-depth decoders with aleatoric heads.

    ``forward(image)`` takes RGB in [0, 1], (B, 3, H, W) with H, W multiples of
    :attr:`MultiTaskConfig.size_divisor`, and returns a :class:`MultiTaskOutput` at (H, W).
    """

    def __init__(self, config: MultiTaskConfig | str = "scene") -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in CONFIGS:
                raise ValueError(f"unknown multitask config {config!r}; known: {sorted(CONFIGS)}")
            config = CONFIGS[config]
        self.config = config
        c1, c2, c3 = config.encoder_channels
        self.register_buffer("rgb_mean", torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(_RGB_STD).view(1, 3, 1, 1), persistent=False)
        self.enc1 = nn.Sequential(_conv(3, c1, 2), _conv(c1, c1))
        self.enc2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.enc3 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3),
                                  *[_conv(c3, c3, dilation=d) for d in config.context_dilations])
        self.enc_drop = MCDropout(config.dropout)
        enc, dec, p = config.encoder_channels, config.decoder_channels, config.dropout
        self.semantic = _Decoder(enc, dec, config.num_classes + 1, p)
        self.instance = _Decoder(enc, dec, 3, p)
        self.depth = _Decoder(enc, dec, 2, p)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Heads start small: uniform class scores, zero offsets, mid-range inverse depth, and
        # log-variance / log-scale biases at plausible values so the first NLL steps are tame.
        for dec in (self.semantic, self.instance, self.depth):
            nn.init.normal_(dec.head.weight, std=1e-3)
        with torch.no_grad():
            self.semantic.head.bias[-1] = -2.0  # logit sigma ~ 0.37
            self.instance.head.bias[2] = 1.0  # b ~ 2.7 px
            self.depth.head.bias[0] = -2.0  # inverse depth ~ 0.24 / m
            self.depth.head.bias[1] = -4.0  # b ~ 0.02 / m

    @property
    def size_divisor(self) -> int:
        return self.config.size_divisor

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, image: Tensor) -> MultiTaskOutput:
        h, w = image.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(f"input {h}x{w} must be a multiple of {self.size_divisor} in both axes")
        x = (image - self.rgb_mean) / self.rgb_std
        s2 = self.enc1(x)
        s4 = self.enc2(s2)
        deep = self.enc_drop(self.enc3(s4))

        def full(t: Tensor) -> Tensor:
            return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)

        sem = full(self.semantic(deep, s4, s2))
        ins = full(self.instance(deep, s4, s2))
        dep = full(self.depth(deep, s4, s2))
        c = self.num_classes
        return MultiTaskOutput(
            semantic_logits=sem[:, :c],
            semantic_log_var=sem[:, c:],
            offsets=ins[:, :2] * self.config.offset_scale,
            offset_log_scale=ins[:, 2:3],
            inv_depth=torch.sigmoid(dep[:, :1]) * self.config.inv_depth_max,
            inv_depth_log_scale=dep[:, 1:2],
        )
