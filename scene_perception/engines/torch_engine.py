"""PyTorch eager backend: the reference implementation, CPU or CUDA, FP16 on CUDA.

It accepts any input size that is a multiple of the model's ``size_divisor`` (no static shapes, no
build step), which is why it stays the default for development and the ground truth of the parity tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from scene_perception.engines.base import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    Array,
    BackendUnavailable,
    InferenceEngine,
    TensorSpec,
    any_torch,
)
from scene_perception.engines.torch_cpu import optimize_for_cpu
from scene_perception.models.gcnet import full_soft_argmin

_LOG = logging.getLogger(__name__)

__all__ = ["TorchEngine"]

PRECISIONS = ("auto", "fp32", "fp16")


class TorchEngine(InferenceEngine):
    """Eager ``model(left, right) -> (disparity, log_scale)`` behind the engine interface.

    Args:
        model: a stereo network with ``size_divisor`` (and ideally ``max_disparity``) attributes.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` (CUDA only) or ``auto`` (fp16 on CUDA, fp32 on CPU).
        input_hw: optional static (H, W); when set, :meth:`infer` checks it and :meth:`warmup` needs no size.
        cpu_rewrite: on CPU fp32, run a copy with BatchNorm folded and the 3-D convs on oneDNN
            (:mod:`scene_perception.engines.torch_cpu`: ~1.5x faster for GC-Net at camera sizes). The copy
            is checked against the original on one small input at construction and dropped, with a
            warning, if they disagree; :attr:`cpu_rewrite` says whether it is in use. ``self.model``
            stays the original module either way (exports and parity references use it).

    FP16 uses ``torch.autocast`` rather than ``model.half()``: convolutions (the cost) run in fp16 on
    tensor cores, while autocast keeps softmax and reductions in fp32. The soft arg-min is an expectation
    over up to 192 hypotheses; summing it in fp16 would cost ~0.1 px of disparity for no speed gain.
    CPU fp16 is refused: CPU kernels for half are slow or missing, so it would only be a trap.
    """

    backend = "torch"

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        input_hw: tuple[int, int] | None = None,
        cpu_rewrite: bool = True,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"torch backend on {device} needs CUDA, but torch {torch.__version__} sees no CUDA device"
            )
        if precision == "auto":
            precision = "fp16" if dev.type == "cuda" else "fp32"
        if precision == "fp16" and dev.type != "cuda":
            raise ValueError("fp16 is only supported on CUDA devices for the torch backend")
        self.model = model.to(dev).eval()
        self._run: nn.Module = self.model  # the rewritten copy when the CPU rewrite is in use
        self._device = dev
        self.device = str(dev)
        self.precision = precision
        self.size_divisor = int(getattr(model, "size_divisor", 1))
        md = getattr(model, "max_disparity", None)
        self.max_disparity = int(md) if md is not None else None
        h, w = input_hw if input_hw is not None else (None, None)
        self.inputs = tuple(TensorSpec(n, (1, 3, h, w)) for n in INPUT_NAMES)
        self.outputs = tuple(TensorSpec(n, (1, 1, h, w)) for n in OUTPUT_NAMES)
        if cpu_rewrite and dev.type == "cpu" and precision == "fp32":
            self._try_cpu_rewrite()

    #: Largest disparity difference (px) the rewritten model may show against the original on the check
    #: input: float reassociation in folded BN / oneDNN gives ~1e-4 px; a wrong rewrite gives whole pixels.
    REWRITE_TOLERANCE_PX = 1e-2

    def _try_cpu_rewrite(self) -> None:
        fast, stats = optimize_for_cpu(self.model)
        if not any(stats.values()):
            return
        side = max(2 * self.size_divisor, 32)
        height, width = side, 2 * side
        gen = torch.Generator().manual_seed(0)
        left = torch.rand(1, 3, height, width, generator=gen)
        right = torch.roll(left, shifts=-3, dims=3)
        with torch.inference_mode(), full_soft_argmin(self.model, fast):
            want = self.model(left, right)
            got = fast(left, right)
        worst = max(float((a - b).abs().max()) for a, b in zip(want, got, strict=True))
        if not worst <= self.REWRITE_TOLERANCE_PX:
            _LOG.warning(
                "CPU rewrite of the model disagrees with the original by %.3g (> %.3g); using the unmodified "
                "model (slower)", worst, self.REWRITE_TOLERANCE_PX,
            )
            return
        self._run = fast

    @property
    def cpu_rewrite(self) -> bool:
        """True when inference runs the BN-folded / oneDNN copy rather than ``self.model``."""
        return self._run is not self.model

    def describe(self) -> str:
        text = super().describe()
        return text + (", BN folded + oneDNN 3-D convs" if self.cpu_rewrite else "")

    def _to_device(self, x: Array) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        return t.to(self._device, torch.float32, non_blocking=True)

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.check_inputs(inputs)
        as_torch = any_torch(list(inputs.values()))
        left, right = (self._to_device(inputs[n]) for n in INPUT_NAMES)
        with torch.inference_mode():
            if self.precision == "fp16":
                with torch.autocast(device_type="cuda", dtype=torch.float16):
                    out = self._run(left, right)
            else:
                out = self._run(left, right)
        result = {name: t.float() for name, t in zip(OUTPUT_NAMES, out, strict=True)}
        if as_torch:
            return dict(result)
        return {k: v.cpu().numpy() for k, v in result.items()}
