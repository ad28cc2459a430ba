"""CPU inference rewrites for the torch backend: fold BatchNorm, route every 3-D conv to oneDNN.

Why this exists: PyTorch picks a CPU convolution kernel with a size heuristic.  For batch 1 it uses oneDNN
(``mkldnn_convolution``) only when ``N*C*D*H > 20480``; below that it takes the native ``slow_conv3d`` /
``slow_conv_transpose3d`` loops, assuming they are faster for tiny inputs.  For GC-Net's coarse cost-volume
levels at camera resolutions (e.g. ``1x16x16x30x40`` at 320x240) that guess is wrong by ~10x (measured
9.6 ms native vs 0.9 ms oneDNN for one 16->16 3x3x3 conv on 2 cores), and those few layers were about 40 %
of the lite model's CPU latency.  Training (batch >= 2) already gets oneDNN; only inference needs this.

The rewrite is numerically the same model (checked at load time by :class:`TorchEngine` against the
original, and by the parity tests):

* Conv + BatchNorm pairs inside ``nn.Sequential`` are folded into one conv (``fuse_conv_bn_eval``), which
  removes a full pass over the 3-D volumes per layer.
* ``nn.Conv3d`` calls ``aten::mkldnn_convolution`` directly (the op the heuristic would pick for larger
  inputs).
* ``nn.ConvTranspose3d`` with kernel 3, stride 2, padding 1, output padding 1 (GC-Net's decoder) becomes a
  sub-pixel convolution: output voxel ``2m + p`` only sees input voxels ``m`` (phase 0: tap 1) and
  ``m, m+1`` (phase 1: taps 2 and 0) per axis, so one ordinary 2x2x2 conv with ``8 * C_out`` outputs over
  the input padded by one voxel at the far end, followed by a 3-D pixel shuffle, computes all eight output
  phases.  It does 8/27 * 8 = ~2.4x the MACs of the transposed conv, but on oneDNN that is still ~3x faster
  than the native transposed kernel.

Nothing here changes the module's parameters on disk: the rewrite works on a deep copy.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "onednn_available", "optimize_for_cpu"]

_CONV_TYPES = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN_TYPES = (nn.BatchNorm2d, nn.BatchNorm3d)


def onednn_available() -> bool:
    """True when this torch build has oneDNN and exposes its convolution op."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.aten.mkldnn_convolution  # noqa: B018 (resolving the op is the check)
    except (AttributeError, RuntimeError):
        return False
    return True


def _onednn_conv(x: Tensor, weight: Tensor, bias: Tensor | None, padding: list[int], stride: list[int],
                 dilation: list[int], groups: int) -> Tensor:
    return torch.ops.aten.mkldnn_convolution(x, weight, bias, padding, stride, dilation, groups)


class OneDnnConv3d(nn.Module):
    """A ``Conv3d`` that always runs on oneDNN for CPU float32 inference (falls back to ``F.conv3d``)."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        if isinstance(conv.padding, str):
            raise ValueError("string padding is not supported by the oneDNN rewrite")
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = conv.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.stride = list(conv.stride)
        self.padding = list(conv.padding)  # type: ignore[arg-type]
        self.dilation = list(conv.dilation)
        self.groups = conv.groups

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled():
            return _onednn_conv(x.contiguous(), self.weight, self.bias, self.padding, self.stride,
                                self.dilation, self.groups)
        return F.conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _is_gcnet_deconv(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.ConvTranspose3d)
        and tuple(m.kernel_size) == (3, 3, 3)
        and tuple(m.stride) == (2, 2, 2)
        and tuple(m.padding) == (1, 1, 1)
        and tuple(m.output_padding) == (1, 1, 1)
        and tuple(m.dilation) == (1, 1, 1)
        and m.groups == 1
    )


# Per axis: output phase p -> the transposed-conv kernel tap used by sub-pixel tap t (None = no tap).
_PHASE_TAPS: dict[int, tuple[int | None, int | None]] = {0: (1, None), 1: (2, 0)}


class SubPixelDeconv3d(nn.Module):
    """``ConvTranspose3d(k=3, s=2, p=1, output_padding=1)`` as one oneDNN conv + a 3-D pixel shuffle."""

    def __init__(self, deconv: nn.ConvTranspose3d) -> None:
        super().__init__()
        if not _is_gcnet_deconv(deconv):
            raise ValueError("only kernel 3, stride 2, padding 1, output_padding 1 transposed convs")
        w = deconv.weight.detach()  # (C_in, C_out, 3, 3, 3)
        c_in, c_out = w.shape[0], w.shape[1]
        kernel = torch.zeros(2, 2, 2, c_out, c_in, 2, 2, 2, dtype=w.dtype)
        for pd in (0, 1):
            for ph in (0, 1):
                for pw in (0, 1):
                    for td in (0, 1):
                        for th in (0, 1):
                            for tw in (0, 1):
                                kd, kh, kw = _PHASE_TAPS[pd][td], _PHASE_TAPS[ph][th], _PHASE_TAPS[pw][tw]
                                if kd is None or kh is None or kw is None:
                                    continue
                                kernel[pd, ph, pw, :, :, td, th, tw] = w[:, :, kd, kh, kw].t()
        self.c_out = c_out
        self.weight = nn.Parameter(kernel.reshape(8 * c_out, c_in, 2, 2, 2), requires_grad=False)
        bias = None
        if deconv.bias is not None:
            bias = deconv.bias.detach().repeat(8)  # phase-major, matching the kernel layout
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        padded = F.pad(x, (0, 1, 0, 1, 0, 1)).contiguous()
        if padded.device.type == "cpu" and padded.dtype == torch.float32 and not torch.is_grad_enabled():
            y = _onednn_conv(padded, self.weight, self.bias, [0, 0, 0], [1, 1, 1], [1, 1, 1], 1)
        else:
            y = F.conv3d(padded, self.weight, self.bias)
        b, _, d, h, w = y.shape
        y = y.view(b, 2, 2, 2, self.c_out, d, h, w).permute(0, 4, 5, 1, 6, 2, 7, 3)
        return y.reshape(b, self.c_out, 2 * d, 2 * h, 2 * w)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every (conv, BN) pair that is adjacent inside an ``nn.Sequential`` in place (eval-mode modules
    only: the running statistics become conv weights); returns how many.  The CUDA engine uses it too."""
    folded = 0
    for child in module.children():
        folded += fold_batchnorm(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, _CONV_TYPES) and isinstance(bn, _BN_TYPES) and bn.track_running_stats:
                transpose = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))
                module._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=transpose)
                module._modules[b] = nn.Identity()
                folded += 1
    return folded


def _swap_3d_convs(module: nn.Module) -> int:
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv3d) and not isinstance(child.padding, str):
            setattr(module, name, OneDnnConv3d(child))
            swapped += 1
        elif _is_gcnet_deconv(child):
            assert isinstance(child, nn.ConvTranspose3d)
            setattr(module, name, SubPixelDeconv3d(child))
            swapped += 1
        else:
            swapped += _swap_3d_convs(child)
    return swapped


def optimize_for_cpu(model: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """An eval-mode deep copy of ``model`` with BN folded and 3-D convs on oneDNN, plus rewrite counts.

    Attributes the engines read (``size_divisor``, ``max_disparity``, ``config``) survive the deep copy.
    Without oneDNN only the BN folding is applied.
    """
    fast = copy.deepcopy(model).eval()
    stats = {"batchnorm_folded": fold_batchnorm(fast), "conv3d_rewritten": 0}
    if onednn_available():
        stats["conv3d_rewritten"] = _swap_3d_convs(fast)
    return fast, stats
