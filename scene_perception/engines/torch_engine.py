"""PyTorch backend: the reference implementation, on CPU or CUDA, fp32 / fp16 / bf16.

It accepts any input size that is a multiple of the model's ``size_divisor`` (no static shapes, no
build step), which is why it stays the default for development and the ground truth of the parity tests.

The engine runs its own eval-mode copy of the network, never the caller's module (a training loop or a
parity test may hold it): on CPU fp32 the BN-folded / oneDNN copy of
:mod:`~scene_perception.engines.torch_cpu`; on CUDA a copy with BatchNorm folded and, by default,
channels-last weights and activations (cuDNN's tensor-core kernels want NHWC / NDHWC), with
``cudnn.benchmark`` on. Optional per input size: a CUDA graph (``cuda_graphs``: one replay instead of
~100 kernel launches for lite, which is launch-bound at camera sizes) or ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from scene_perception.engines.base import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    Array,
    BackendUnavailable,
    InferenceEngine,
    TensorSpec,
    any_torch,
)
from scene_perception.engines.torch_cpu import fold_batchnorm, optimize_for_cpu
from scene_perception.models.gcnet import full_soft_argmin

_LOG = logging.getLogger(__name__)

__all__ = ["PRECISIONS", "TorchEngine"]

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_Graph = tuple[tuple[int, ...], "torch.cuda.CUDAGraph", tuple[Tensor, ...], tuple[Tensor, ...]]


def _channels_last_(module: nn.Module) -> None:
    """Channels-last (4-D) / channels-last-3d (5-D) parameters and buffers, in place.

    ``nn.Module.to(memory_format=channels_last)`` refuses 5-D tensors, and GC-Net's 3-D convs are the cost.
    """
    for t in (*module.parameters(), *module.buffers()):
        if t.dim() == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
        elif t.dim() == 5:
            t.data = t.data.contiguous(memory_format=torch.channels_last_3d)


class TorchEngine(InferenceEngine):
    """``model(left, right) -> (disparity, log_scale)`` behind the engine interface.

    Args:
        model: a stereo network with ``size_divisor`` (and ideally ``max_disparity``) attributes. Not
            modified: the engine runs a copy (``self.model`` stays this module, for exports and parity
            references).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` (CUDA only), ``bf16`` or ``auto`` (fp16 on CUDA, fp32 on CPU). bf16
            is allowed on CPU (autocast works there; fast only on CPUs with AMX) so its numerics can be
            checked without a GPU.
        input_hw: optional static (H, W); when set, :meth:`infer` checks it and :meth:`warmup` needs no size.
        cpu_rewrite: on CPU fp32, run the copy with BatchNorm folded and the 3-D convs on oneDNN
            (:mod:`scene_perception.engines.torch_cpu`: ~1.5x faster for GC-Net at camera sizes). The copy
            is checked against the plain model on one small input at construction and dropped, with a
            warning, if they disagree; :attr:`cpu_rewrite` says whether it is in use.
        channels_last: run in NHWC / NDHWC; None = on CUDA only (on CPU the oneDNN copy got slower with it).
        cuda_graphs: capture one CUDA graph per input size on the first call with that size and replay it
            afterwards (inputs are copied into the graph's static buffers, outputs copied out). For a fixed
            camera size; a new size captures again.
        compile: run the copy through ``torch.compile`` (first call per size compiles: seconds to minutes).
        cudnn_benchmark: on CUDA, set ``torch.backends.cudnn.benchmark`` (process-wide): cuDNN then times
            its algorithms once per input shape, which a fixed camera size repays on every frame.

    Mixed precision uses ``torch.autocast``, not ``model.half()``: convolutions (the cost) run in
    fp16/bf16 on tensor cores, while the soft arg-min, the upsampling and the refinement's residual stay
    fp32 inside the model (``models/layers.py``): the soft arg-min is an expectation over up to 192
    hypotheses, and bf16 would resolve a 100 px disparity only to 0.5 px. CPU fp16 is refused: CPU kernels
    for half are slow or missing, so it would only be a trap.
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
        channels_last: bool | None = None,
        cuda_graphs: bool = False,
        compile: bool = False,
        cudnn_benchmark: bool = True,
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
        if cuda_graphs and dev.type != "cuda":
            raise ValueError("cuda_graphs needs a CUDA device")
        if cuda_graphs and compile:
            raise ValueError("choose cuda_graphs or compile, not both (torch.compile has a graphs mode)")
        self.model = model
        self._device = dev
        self.device = str(dev)
        self.precision = precision
        self.channels_last = dev.type == "cuda" if channels_last is None else bool(channels_last)
        self.cuda_graphs = bool(cuda_graphs)
        self.compiled = bool(compile)
        self.size_divisor = int(getattr(model, "size_divisor", 1))
        md = getattr(model, "max_disparity", None)
        self.max_disparity = int(md) if md is not None else None
        step = getattr(model, "cost_stride", None)
        self.disparity_step = int(step) if step is not None else None
        multiple = getattr(model, "range_multiple", None)
        self.range_multiple = int(multiple) if multiple is not None else None
        h, w = input_hw if input_hw is not None else (None, None)
        self.inputs = tuple(TensorSpec(n, (1, 3, h, w)) for n in INPUT_NAMES)
        self.outputs = tuple(TensorSpec(n, (1, 1, h, w)) for n in OUTPUT_NAMES)
        if dev.type == "cuda" and cudnn_benchmark:
            torch.backends.cudnn.benchmark = True

        self._rewritten = False
        run: nn.Module | None = None
        if cpu_rewrite and dev.type == "cpu" and precision == "fp32" and not self.channels_last:
            run = self._try_cpu_rewrite()
        if run is None:
            run = copy.deepcopy(model).to(dev).eval()
            if dev.type == "cuda":  # on CPU the rewrite folds; without it this copy is the plain reference
                fold_batchnorm(run)
        if self.channels_last:
            _channels_last_(run)
            if hasattr(run, "inference_channels_last"):
                run.inference_channels_last = True
        for p in run.parameters():
            p.requires_grad_(False)
        self._run: nn.Module = run
        self._forward: Callable[..., tuple[Tensor, ...]] = (
            torch.compile(run, dynamic=False) if compile else run
        )
        # CUDA graph of the current input size: (shape, graph, static inputs, static outputs).
        self._graph: _Graph | None = None

    #: Largest disparity difference (px) the rewritten model may show against the original on the check
    #: input: float reassociation in folded BN / oneDNN gives ~1e-4 px; a wrong rewrite gives whole pixels.
    REWRITE_TOLERANCE_PX = 1e-2

    def _try_cpu_rewrite(self) -> nn.Module | None:
        """The BN-folded / oneDNN copy if it agrees with a plain eval copy on a small input, else None."""
        fast, stats = optimize_for_cpu(self.model)
        if not any(stats.values()):
            return None
        plain = copy.deepcopy(self.model).to("cpu").eval()
        side = max(2 * self.size_divisor, 32)
        height, width = side, 2 * side
        gen = torch.Generator().manual_seed(0)
        left = torch.rand(1, 3, height, width, generator=gen)
        right = torch.roll(left, shifts=-3, dims=3)
        with torch.inference_mode(), full_soft_argmin(plain, fast):
            want = plain(left, right)
            got = fast(left, right)
        worst = max(float((a - b).abs().max()) for a, b in zip(want, got, strict=True))
        if not worst <= self.REWRITE_TOLERANCE_PX:
            _LOG.warning(
                "CPU rewrite of the model disagrees with the original by %.3g (> %.3g); using the unmodified "
                "model (slower)", worst, self.REWRITE_TOLERANCE_PX,
            )
            return None
        self._rewritten = True
        return fast

    @property
    def runner(self) -> nn.Module:
        """The module inference runs: the engine's own copy of :attr:`model` (folded, rewritten, ...)."""
        return self._run

    @property
    def cpu_rewrite(self) -> bool:
        """True when inference runs the BN-folded / oneDNN CPU copy."""
        return self._rewritten

    def describe(self) -> str:
        text = super().describe()
        extras = [
            ("BN folded + oneDNN 3-D convs", self.cpu_rewrite),
            ("BN folded", self._device.type == "cuda"),
            ("channels-last", self.channels_last),
            ("CUDA graphs", self.cuda_graphs),
            ("torch.compile", self.compiled),
        ]
        return text + "".join(f", {name}" for name, on in extras if on)

    def set_max_disparity(self, value: int) -> None:
        """Widen (or narrow back) the range of the engine's copy; :attr:`model` keeps its own. The CUDA
        graph of the old range is dropped (its cost volume had another size)."""
        if self.range_multiple is None:
            super().set_max_disparity(value)
        if int(value) == self.max_disparity:
            return
        self._run.set_max_disparity(int(value))  # type: ignore[operator]
        self.max_disparity = int(value)
        self._graph = None

    def _to_device(self, x: Array) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        return t.to(self._device, torch.float32, non_blocking=True)

    def _eager(self, left: Tensor, right: Tensor) -> tuple[Tensor, ...]:
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        mixed = torch.autocast(self._device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with mixed:
            out = self._forward(left, right)
        return tuple(t.float() for t in out)

    def _replay(self, left: Tensor, right: Tensor) -> tuple[Tensor, ...]:
        """Run through the CUDA graph of this input size, capturing it first if the size is new.

        Capture follows the documented recipe: a few warm-up runs on a side stream (cuDNN autotuning and
        allocator growth must not happen during capture), then ``torch.cuda.graph``. Outputs are cloned:
        the next replay overwrites the static ones.
        """
        shape = (*left.shape, *right.shape)
        if self._graph is None or self._graph[0] != shape:
            self._graph = None  # frees the old graph's pool before capturing a new one
            static_in = (left.clone(), right.clone())
            side = torch.cuda.Stream(self._device)
            side.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._eager(*static_in)
            torch.cuda.current_stream(self._device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._eager(*static_in)
            self._graph = (shape, graph, static_in, static_out)
        _, graph, static_in, static_out = self._graph
        static_in[0].copy_(left)
        static_in[1].copy_(right)
        graph.replay()
        return tuple(t.clone() for t in static_out)

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.check_inputs(inputs)
        as_torch = any_torch(list(inputs.values()))
        left, right = (self._to_device(inputs[n]) for n in INPUT_NAMES)
        with torch.inference_mode():
            out = self._replay(left, right) if self.cuda_graphs else self._eager(left, right)
        result = dict(zip(OUTPUT_NAMES, out, strict=True))
        if as_torch:
            return result
        return {k: v.cpu().numpy() for k, v in result.items()}

    def close(self) -> None:
        self._graph = None
