"""PyTorch eager backend: the reference implementation, CPU or CUDA, FP16 on CUDA.

It accepts any input size that is a multiple of the model's ``size_divisor`` (no static shapes, no
build step), which is why it stays the default for development and the ground truth of the parity tests.
"""

from __future__ import annotations

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

__all__ = ["TorchEngine"]

PRECISIONS = ("auto", "fp32", "fp16")


class TorchEngine(InferenceEngine):
    """Eager ``model(left, right) -> (disparity, log_scale)`` behind the engine interface.

    Args:
        model: a stereo network with ``size_divisor`` (and ideally ``max_disparity``) attributes.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` (CUDA only) or ``auto`` (fp16 on CUDA, fp32 on CPU).
        input_hw: optional static (H, W); when set, :meth:`infer` checks it and :meth:`warmup` needs no size.

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
        self._device = dev
        self.device = str(dev)
        self.precision = precision
        self.size_divisor = int(getattr(model, "size_divisor", 1))
        md = getattr(model, "max_disparity", None)
        self.max_disparity = int(md) if md is not None else None
        h, w = input_hw if input_hw is not None else (None, None)
        self.inputs = tuple(TensorSpec(n, (1, 3, h, w)) for n in INPUT_NAMES)
        self.outputs = tuple(TensorSpec(n, (1, 1, h, w)) for n in OUTPUT_NAMES)

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
                    out = self.model(left, right)
            else:
                out = self.model(left, right)
        result = {name: t.float() for name, t in zip(OUTPUT_NAMES, out, strict=True)}
        if as_torch:
            return dict(result)
        return {k: v.cpu().numpy() for k, v in result.items()}
