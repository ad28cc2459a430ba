"""GC-Net: end-to-end stereo regression with a 3-D cost-volume network (Kendall et al., ICCV 2017).

Two configurations:

* ``paper`` follows Table 1 of the paper: a 2-D residual feature tower at 1/2 resolution, a
  concatenation cost volume of D/2 levels, a 3-D encoder-decoder with four stride-2 levels and additive
  skips, a final transposed conv back to full resolution with D levels, and a soft arg-min. It is a GPU
  model: several seconds per 320x240 frame on two CPU cores.
* ``lite`` is the CPU fallback with the same structure scaled down: 16 channels, features at 1/4, D=128
  (32 levels at 1/4), two 3-D stride-2 levels, and the soft arg-min at 1/4 resolution followed by
  upsampling the disparity (regressing first and upsampling afterwards avoids upsampling the whole cost
  volume, which is the slow path on CPU).

Both add an aleatoric head: the last layer has 2 output channels, the matching cost and a per-hypothesis
log-scale feature ``u``; ``log_scale = sum_d softmax(-cost)_d * u_d`` is the log of the Laplace scale
``b`` (px), so a Laplace NLL can train it and ``std = sqrt(2) * b``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from scene_perception.models.config_dict import config_from_dict
from scene_perception.models.layers import (
    ResidualBlock2d,
    concat_cost_volume,
    conv2d_bn_relu,
    conv3d_bn_relu,
    deconv3d_bn_relu,
    init_weights,
    soft_argmin_with_expectation,
)
from scene_perception.models.refinement import DisparityRefinement

__all__ = ["CONFIGS", "GCNet", "GCNetConfig", "full_soft_argmin"]

# ImageNet statistics: a conventional, data-independent normalisation so the first conv sees
# zero-mean inputs whatever camera produced the image.
_RGB_MEAN = (0.485, 0.456, 0.406)
_RGB_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class GCNetConfig:
    """Architecture hyper-parameters; frozen so a config can be a dict key and cannot drift after build.

    Attributes:
        name: config name, stored in model cards.
        feature_channels: width of the 2-D feature tower (paper: 32).
        feature_stride: 2-D downsampling factor, a power of two; one stride-2 conv per factor of two
            (paper: 2, a single 5x5 stride-2 conv).
        residual_blocks: 2-D residual blocks of two 3x3 convs (paper: 8).
        max_disparity: disparity range in full-resolution px; hypotheses are 0 .. max_disparity-1.
        volume_channels: width of the two 3-D convs straight on the cost volume, and of the last skip.
        encoder_channels: width of each 3-D stride-2 level (paper: 64, 64, 64, 128).
        transposed_head: True: the head is a stride-2 transposed conv regressing at feature_stride/2
            (the paper: full resolution). False: a stride-1 3-D conv at the feature resolution, with the
            disparity upsampled afterwards (cheap on CPU).
        refine_channels: width of the image-guided refinement at input resolution (0 = none; the paper
            has none). See models/refinement.py for why the lite model wants one.
        refine_dilations: dilation of each refinement block (its receptive field).
        regression_window: 0 = soft arg-min over every hypothesis (the paper); k > 0 = over the k
            levels either side of the most probable one (see ``soft_argmin_with_expectation``: keeps
            depth edges on one surface instead of averaging foreground and background). An inference
            choice: the weights are the same, so a model card can switch it.
    """

    name: str
    feature_channels: int = 32
    feature_stride: int = 2
    residual_blocks: int = 8
    max_disparity: int = 192
    volume_channels: int = 32
    encoder_channels: tuple[int, ...] = (64, 64, 64, 128)
    transposed_head: bool = True
    refine_channels: int = 0
    refine_dilations: tuple[int, ...] = (1, 2, 4, 8, 1)
    regression_window: int = 0

    def __post_init__(self) -> None:
        stride = self.feature_stride
        if stride < 2 or stride & (stride - 1):
            raise ValueError(f"feature_stride must be a power of two >= 2, got {stride}")
        if self.regression_window < 0:
            raise ValueError(f"regression_window must be >= 0, got {self.regression_window}")
        if not self.encoder_channels:
            raise ValueError("encoder_channels must name at least one 3-D stride-2 level")
        levels, rem = divmod(self.max_disparity, stride)
        if rem or levels % (2 ** len(self.encoder_channels)):
            raise ValueError(
                f"max_disparity {self.max_disparity} must be a multiple of feature_stride * "
                f"2**len(encoder_channels) = {stride * 2 ** len(self.encoder_channels)}"
            )

    @property
    def size_divisor(self) -> int:
        """Input H and W must be multiples of this so every 3-D level halves cleanly and skips line up."""
        return self.feature_stride * 2 ** len(self.encoder_channels)

    @property
    def volume_levels(self) -> int:
        """Disparity hypotheses in the cost volume (at the feature resolution)."""
        return self.max_disparity // self.feature_stride

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists) for model cards."""
        d = asdict(self)
        d["encoder_channels"] = list(self.encoder_channels)
        d["refine_dilations"] = list(self.refine_dilations)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GCNetConfig:
        """Inverse of :meth:`to_dict` (``config_dict.config_from_dict``: a typo in a card is an error, not a
        default)."""
        return config_from_dict(cls, data)


CONFIGS: dict[str, GCNetConfig] = {
    "paper": GCNetConfig(name="paper"),
    "lite": GCNetConfig(
        name="lite",
        feature_channels=16,
        feature_stride=4,
        residual_blocks=3,
        max_disparity=128,
        volume_channels=16,
        encoder_channels=(16, 16),
        transposed_head=False,
        refine_channels=12,
    ),
}


class GCNet(nn.Module):
    """GC-Net with an aleatoric (Laplace) uncertainty head.

    ``forward(left, right)`` takes (B,3,H,W) RGB in [0,1] with H, W multiples of :attr:`size_divisor`
    (the pipeline pads) and returns ``(disparity, log_scale)``, both (B,1,H,W) at the input resolution;
    disparity is in px with ``left(x) ~ right(x - d)``.
    """

    #: In training, run the convolutions on channels-last tensors (NHWC / NDHWC). Why: oneDNN's training
    #: kernels for these narrow layers (12-32 channels) are much faster in that layout: on 2 CPU cores a
    #: 12-channel refinement conv at 2x256x512 forward+backward took 50-75 ms -> 21-28 ms, the first 3-D
    #: conv on the cost volume 311 -> 196 ms, a whole lite training step 1.49 -> 1.12 s. Not at inference:
    #: the CPU engine's rewritten copy (engines/torch_cpu.py) got slower with it (320x256: 82 -> 113 ms).
    #: Same numbers up to float rounding either way.
    channels_last: bool = True
    #: Also at inference. Off by default for the reason above; the torch engine turns it on for its own copy
    #: on CUDA, where cuDNN's fp16/bf16 tensor-core kernels want NHWC / NDHWC.
    inference_channels_last: bool = False

    def __init__(self, config: GCNetConfig | str = "lite") -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in CONFIGS:
                raise ValueError(f"unknown GC-Net config {config!r}; known: {sorted(CONFIGS)}")
            config = CONFIGS[config]
        self.config = config
        self.max_disparity = config.max_disparity
        self._trained_max = config.max_disparity  # set_max_disparity changes the former only
        self.size_divisor = config.size_divisor

        self.register_buffer("rgb_mean", torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(_RGB_STD).view(1, 3, 1, 1), persistent=False)

        fc = config.feature_channels
        n_down = int(math.log2(config.feature_stride))
        # Layer 1: 5x5 stride-2 conv; extra stride-2 3x3 convs for a coarser tower (lite).
        tower: list[nn.Module] = [conv2d_bn_relu(3, fc, kernel=5, stride=2)]
        tower += [conv2d_bn_relu(fc, fc, stride=2) for _ in range(n_down - 1)]
        tower += [ResidualBlock2d(fc) for _ in range(config.residual_blocks)]
        # Layer 18: plain conv, no BN/ReLU, so the unary features are not clipped at zero before matching.
        tower.append(nn.Conv2d(fc, fc, 3, padding=1))
        self.features = nn.Sequential(*tower)

        vc = config.volume_channels
        enc = config.encoder_channels
        # Layers 20-21: two 3-D convs on the cost volume; their output is the outermost skip.
        self.volume_convs = nn.Sequential(conv3d_bn_relu(2 * fc, vc), conv3d_bn_relu(vc, vc))
        # Layers 22-33: each stride-2 level takes the previous level's *downsampled* tensor (in the paper
        # layers 22, 25, 28, 31 chain directly) and its two 3x3x3 convs produce that level's skip.
        self.down = nn.ModuleList()
        self.level_convs = nn.ModuleList()
        in_ch = 2 * fc
        for ch in enc:
            self.down.append(conv3d_bn_relu(in_ch, ch, stride=2))
            self.level_convs.append(nn.Sequential(conv3d_bn_relu(ch, ch), conv3d_bn_relu(ch, ch)))
            in_ch = ch
        # Layers 34-37: transposed convs back up, each added to the skip of the same resolution.
        skip_channels = [vc, *enc[:-1]]
        self.up = nn.ModuleList()
        for i in reversed(range(len(enc))):
            self.up.append(deconv3d_bn_relu(enc[i], skip_channels[i]))
        # Layer 38: 2 outputs (cost, log-scale feature); no BN/ReLU, the cost must be free to be negative.
        if config.transposed_head:
            self.head: nn.Module = nn.ConvTranspose3d(vc, 2, 3, stride=2, padding=1, output_padding=1)
        else:
            self.head = nn.Conv3d(vc, 2, 3, padding=1)
        # Disparity regressed at this many input px per output px; upsampled afterwards when > 1.
        self._regress_stride = config.feature_stride // 2 if config.transposed_head else config.feature_stride

        self.refine: DisparityRefinement | None = None
        if config.refine_channels:
            self.refine = DisparityRefinement(
                config.refine_channels, config.refine_dilations, config.max_disparity
            )

        init_weights(self)
        self._init_head(vc)
        if self.refine is not None:
            self.refine.reset_output()

    def _init_head(self, in_channels: int) -> None:
        """Unit-variance cost logits and a constant log-scale (b = 1 px) at initialisation.

        The head has no BN after it, so its scale matters: too large and the untrained softmax is a hard
        arg-min (vanishing gradients), and a random log-scale feature would give absurd ``exp`` values.
        A transposed stride-2 conv sees on average 1/8 of its kernel per output voxel, hence the fan-in.
        """
        fan_in = in_channels * 27 / (8 if self.config.transposed_head else 1)
        head = self.head
        assert isinstance(head, (nn.Conv3d, nn.ConvTranspose3d)) and head.bias is not None
        with torch.no_grad():
            head.weight.normal_(0.0, 1.0 / math.sqrt(fan_in))
            uncertainty_out = (slice(None), 1) if self.config.transposed_head else (1,)
            head.weight[uncertainty_out].zero_()  # ConvTranspose weights are (in, out, ...)
            head.bias.zero_()

    @property
    def trained_max_disparity(self) -> int:
        """The range the weights were trained with (the refinement's residual stays scaled by it)."""
        return self._trained_max

    @property
    def range_multiple(self) -> int:
        """:meth:`set_max_disparity` takes multiples of this (every 3-D level must halve cleanly)."""
        return self.config.size_divisor  # the same product of strides as the input's

    def set_max_disparity(self, value: int) -> None:
        """Search ``value`` px instead of the configured range, with the same weights.

        An inference setting: save a model only at its trained range, since the card records ``config``.

        Why this works: the 3-D convolutions slide along the disparity axis and the soft arg-min is an
        expectation over whatever levels there are, so no weight depends on the number of levels. A scene
        with larger disparities can then run at its own resolution instead of being shrunk to fit (the
        pipeline's ``extend_range``). The refinement keeps the trained range as its residual's unit.

        Raises:
            ValueError: ``value`` is not a positive multiple of :attr:`range_multiple`.
        """
        value = int(value)
        if value <= 0:
            raise ValueError(f"max_disparity must be positive, got {value}")
        self.config = replace(self.config, max_disparity=value)  # validates the multiple
        self.max_disparity = value

    @property
    def cost_stride(self) -> int:
        """Input px per pixel and per disparity level of the cost that ``return_cost`` gives."""
        return self._regress_stride

    def forward(
        self, left: Tensor, right: Tensor, return_cost: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """Disparity (px) and log Laplace scale (log px) of the left image, both (B,1,H,W).

        With ``return_cost`` (training only: the cost-volume loss), also the (B, D, H/s, W/s) matching
        cost before the soft arg-min, s = :attr:`cost_stride`; exported graphs keep the two outputs.
        """
        b, _, h, w = left.shape
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f"input {h}x{w} is not a multiple of size_divisor={self.size_divisor}; pad it first"
            )
        # Siamese tower: one pass over both images in a single batch (shared weights, better GEMM use).
        images = (torch.cat([left, right], dim=0) - self.rgb_mean) / self.rgb_std
        channels_last = self.channels_last and (self.training or self.inference_channels_last)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.features(images)
        f_left, f_right = feats[:b], feats[b:]

        volume = concat_cost_volume(f_left, f_right, self.config.volume_levels)
        if channels_last:
            volume = volume.contiguous(memory_format=torch.channels_last_3d)
        skips = [self.volume_convs(volume)]
        x = volume
        for down, convs in zip(self.down, self.level_convs, strict=True):
            x = down(x)
            skips.append(convs(x))
        x = skips.pop()
        for up in self.up:
            x = up(x) + skips.pop()
        out = self.head(x)  # (B, 2, D', H', W')

        disparity, log_scale = soft_argmin_with_expectation(
            out[:, 0], out[:, 1], dim=1, window=self.config.regression_window
        )
        s = self._regress_stride
        if s > 1:
            # Bilinear upsampling of a disparity map: values scale with the resolution, and the Laplace
            # scale b scales the same way, hence + log(s) on its log.
            disparity = F.interpolate(disparity, scale_factor=s, mode="bilinear", align_corners=False) * s
            log_scale = F.interpolate(log_scale, scale_factor=s, mode="bilinear", align_corners=False)
            log_scale = log_scale + math.log(s)
        if self.refine is not None:
            disparity, log_scale = self.refine(disparity, log_scale, images[:b], channels_last)
        if return_cost:
            return disparity, log_scale, out[:, 0]
        return disparity, log_scale


@contextmanager
def full_soft_argmin(*models: nn.Module) -> Iterator[None]:
    """Temporarily regress with the plain soft arg-min (``regression_window`` 0) in these models.

    For parity checks between two implementations of the same network (a rewritten CPU copy, an exported
    graph): with a window, a pixel whose two best modes are within rounding error of each other may pick
    either mode in either implementation, a legitimate jump of several px that says nothing about whether
    the networks agree. The plain expectation is continuous in the cost volume, so it compares the part
    that can differ. Models without a GC-Net config are left alone.
    """
    saved = []
    for m in models:
        config = getattr(m, "config", None)
        if isinstance(config, GCNetConfig) and config.regression_window:
            saved.append((m, config.regression_window))
            m.config = replace(config, regression_window=0)
    try:
        yield
    finally:
        # Only the window goes back: a range widened inside (set_max_disparity) stays widened.
        for m, window in saved:
            m.config = replace(m.config, regression_window=window)
