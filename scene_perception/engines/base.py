"""The inference-engine interface shared by the torch, ONNX Runtime and TensorRT backends.

Why one interface: the pipeline, the ROS node, the CLI and the benchmark must not care which runtime
executes the network. Every engine takes and returns named tensors (``left``, ``right`` ->
``disparity``, ``log_scale``), reports its input/output names and shapes, and accepts either numpy
arrays (host memory) or torch tensors (host or CUDA device memory, so a GPU pipeline never round-trips
through the host).

Compiled backends (ONNX Runtime with a static graph, TensorRT) are built for one input size;
:class:`PerResolutionEngine` hides that by building (through the on-disk cache) an engine for the first
frame's size and rebuilding when the camera resolution changes.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "Array",
    "BackendUnavailable",
    "EngineError",
    "EngineLoadError",
    "InferenceEngine",
    "PerResolutionEngine",
    "TensorSpec",
]

_LOG = logging.getLogger(__name__)

#: Tensor names of the stereo network, fixed so that every backend (and the ONNX graph) agrees.
INPUT_NAMES: tuple[str, str] = ("left", "right")
OUTPUT_NAMES: tuple[str, str] = ("disparity", "log_scale")

Array = np.ndarray | torch.Tensor


class EngineError(RuntimeError):
    """An engine could not be built, loaded or run (the message says which file and why)."""


class EngineLoadError(EngineError):
    """A serialized model/engine file is missing, corrupt, or not loadable by its runtime."""


class BackendUnavailable(EngineError):
    """The requested backend cannot run here (package not installed, no CUDA device, missing provider)."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one engine input/output; ``None`` in ``shape`` marks a dynamic axis."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    @property
    def is_static(self) -> bool:
        return all(d is not None for d in self.shape)

    def __str__(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}[{dims}] {self.dtype}"


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


class InferenceEngine(ABC):
    """A loaded network that maps named input tensors to named output tensors.

    Subclasses set :attr:`backend`, :attr:`device`, :attr:`precision`, :attr:`inputs`, :attr:`outputs`,
    :attr:`size_divisor` and :attr:`max_disparity` and implement :meth:`infer`.

    Output type follows input type: numpy in -> numpy out (host float32); torch in -> torch out (on the
    engine's device), so callers that keep data on the GPU get GPU tensors back without a host copy.
    """

    backend: str = "?"
    device: str = "cpu"
    precision: str = "fp32"
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    #: Input H and W must be multiples of this (the caller pads); 1 when unknown.
    size_divisor: int = 1
    #: Disparity range of the network in input px (None when the engine does not know).
    max_disparity: int | None = None
    #: Input px between neighbouring disparity hypotheses where the soft arg-min regresses (lite 4, paper 1):
    #: the largest disparity the network can output is ``max_disparity - disparity_step``, and a pixel there
    #: is saturated (its true disparity may be anything larger). None when the engine does not know.
    disparity_step: int | None = None
    #: When set, :meth:`set_max_disparity` accepts multiples of this: the engine can search a wider range
    #: than it was trained with (torch; ONNX Runtime / TensorRT per resolution, which export a graph per
    #: range). None: the range is fixed (a graph built for one size has the cost volume's size baked in),
    #: and the pipeline shrinks the pair instead.
    range_multiple: int | None = None

    def set_max_disparity(self, value: int) -> None:
        """Search ``value`` px from the next :meth:`infer` on (a multiple of :attr:`range_multiple`).

        Raises:
            EngineError: this engine's range is fixed.
        """
        raise EngineError(f"the {self.backend} engine's disparity range is fixed at {self.max_disparity} px")

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """Static (H, W) of the inputs, or None for an engine that accepts any size."""
        if not self.inputs or not self.inputs[0].is_static:
            return None
        shape = self.inputs[0].shape
        return int(shape[-2]), int(shape[-1])  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for logs and diagnostics: backend, device, precision and I/O shapes."""
        io = ", ".join(str(s) for s in (*self.inputs, *self.outputs))
        return f"{self.backend} on {self.device} ({self.precision}): {io}"

    def prepare(self, input_hw: tuple[int, int]) -> None:
        """Make the engine ready for inputs of ``input_hw`` (H, W) before timing starts.

        A static engine only checks the size here (a clear error instead of a runtime's shape error deep
        inside ``infer``); :class:`PerResolutionEngine` builds or loads the engine for that size.
        """
        hw = self.input_hw
        if hw is not None and tuple(input_hw) != hw:
            raise ValueError(
                f"{self.backend} engine was built for {hw[1]}x{hw[0]} inputs but got {input_hw[1]}x"
                f"{input_hw[0]}; compiled engines have static shapes (use a PerResolutionEngine, which "
                "rebuilds per camera resolution)"
            )

    def check_inputs(self, inputs: Mapping[str, Array]) -> None:
        """Raise ValueError naming the problem when names or static dims do not match the engine."""
        missing = [n for n in self.input_names if n not in inputs]
        extra = [n for n in inputs if n not in self.input_names]
        if missing or extra:
            raise ValueError(
                f"{self.backend} engine inputs are {list(self.input_names)}; "
                f"missing {missing}, unexpected {extra}"
            )
        for spec in self.inputs:
            shape = tuple(inputs[spec.name].shape)
            ok = len(shape) == len(spec.shape) and all(
                want is None or want == got for want, got in zip(spec.shape, shape, strict=True)
            )
            if not ok:
                raise ValueError(f"input {spec.name!r} has shape {shape}, engine expects {spec}")

    @abstractmethod
    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Run the network once. Inputs are (1,3,H,W) float32 RGB in [0, 1]; see the class docstring."""

    def warmup(self, n: int = 2, input_hw: tuple[int, int] | None = None) -> list[float]:
        """Run ``n`` untimed-by-the-caller inferences on random inputs; return their latencies in ms.

        Why: the first calls pay for allocator growth, kernel selection (oneDNN primitives, cuDNN
        autotuning, TensorRT context set-up); a node should pay that at start-up, not on its first frame.
        """
        hw = self.input_hw or input_hw
        if hw is None:
            raise ValueError(f"{self.backend} engine has dynamic shapes: pass input_hw to warmup()")
        self.prepare(hw)
        rng = np.random.default_rng(0)
        batch = {name: rng.random((1, 3, hw[0], hw[1]), dtype=np.float32) for name in self.input_names}
        times = []
        for _ in range(max(0, int(n))):
            start = time.perf_counter()
            self.infer(batch)
            times.append((time.perf_counter() - start) * 1000.0)
        return times

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for engines without native resources
        """Release native resources (sessions, CUDA memory). The engine is unusable afterwards."""

    def __enter__(self) -> InferenceEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PerResolutionEngine(InferenceEngine):
    """A static-shape backend that follows the camera: one engine per input size, built on first use.

    Args:
        factory: ``factory((H, W)) -> InferenceEngine`` for padded sizes; expected to go through the
            engine cache, so returning to a size seen before loads from disk instead of rebuilding. With
            ``range_multiple``, ``factory((H, W), max_disparity)``: the graph is exported at that range.
        backend, device, precision: reported before the first engine exists.
        size_divisor, max_disparity: of the network (the pipeline pads to ``size_divisor``).
        range_multiple: when set, :meth:`set_max_disparity` takes multiples of it and the next frame gets an
            engine built for that range (the cost volume's size is part of the graph, like the input's).
        log: where "building engine for WxH" lines go (the ROS node passes its logger).

    Only the current engine is kept in memory: a robot's camera changes resolution rarely, and two TensorRT
    engines of the paper model would hold two sets of device buffers. A size whose build failed is not
    retried on every frame (a failing export costs seconds); the same error is raised again at once.
    """

    def __init__(
        self,
        factory: Callable[..., InferenceEngine],
        *,
        backend: str,
        device: str,
        precision: str,
        size_divisor: int,
        max_disparity: int | None = None,
        range_multiple: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._factory = factory
        self.backend, self.device, self.precision = backend, device, precision
        self.size_divisor = int(size_divisor)
        self.max_disparity = max_disparity
        self.range_multiple = range_multiple if range_multiple and max_disparity else None
        self._log = log or _LOG.info
        self._engine: InferenceEngine | None = None
        self._hw: tuple[int, int] | None = None
        self._range = max_disparity  # the range of the current engine
        self._failed: dict[tuple[int, int, int | None], EngineError] = {}
        self.builds = 0
        self.inputs = tuple(TensorSpec(n, (1, 3, None, None)) for n in INPUT_NAMES)
        self.outputs = tuple(TensorSpec(n, (1, 1, None, None)) for n in OUTPUT_NAMES)

    @property
    def current(self) -> InferenceEngine | None:
        """The engine for the current resolution (None before the first frame)."""
        return self._engine

    @property
    def input_hw(self) -> tuple[int, int] | None:
        return None  # accepts any size (multiple of size_divisor); each size gets its own engine

    def describe(self) -> str:
        if self._engine is None:
            return f"{self.backend} on {self.device} ({self.precision}): built per resolution on first frame"
        return self._engine.describe()

    def set_max_disparity(self, value: int) -> None:
        """The next frame's engine searches ``value`` px (built for it, or loaded from the cache)."""
        if self.range_multiple is None:
            super().set_max_disparity(value)
        value = int(value)
        if value <= 0 or value % self.range_multiple:
            raise ValueError(f"max_disparity must be a positive multiple of {self.range_multiple}, "
                             f"got {value}")
        self.max_disparity = value

    def prepare(self, input_hw: tuple[int, int]) -> None:
        hw = (int(input_hw[0]), int(input_hw[1]))
        rng = self.max_disparity
        if hw == self._hw and rng == self._range and self._engine is not None:
            return
        if (*hw, rng) in self._failed:
            raise self._failed[(*hw, rng)]
        if hw[0] % self.size_divisor or hw[1] % self.size_divisor:
            raise ValueError(f"input {hw[1]}x{hw[0]} is not a multiple of size_divisor={self.size_divisor}")
        at = f", {rng} px range" if self.range_multiple else ""
        if self._engine is not None:
            assert self._hw is not None
            was = f", {self._range} px range" if self.range_multiple else ""
            what = "input resolution or range" if self.range_multiple else "input resolution"
            self._log(
                f"{what} changed from {self._hw[1]}x{self._hw[0]}{was} to {hw[1]}x{hw[0]}{at} (padded): "
                f"switching to a {self.backend} engine for it (from the cache if built before)"
            )
            self._engine.close()
            self._engine, self._hw = None, None
        else:
            self._log(f"first frame: preparing the {self.backend} engine for {hw[1]}x{hw[0]} (padded) "
                      f"inputs{at}")
        start = time.perf_counter()
        try:
            engine = self._factory(hw, rng) if self.range_multiple else self._factory(hw)
        except EngineError as exc:
            self._failed[(*hw, rng)] = exc
            raise
        except (OSError, ValueError, RuntimeError) as exc:
            err = EngineError(f"building the {self.backend} engine for {hw[1]}x{hw[0]}{at} failed: {exc}")
            self._failed[(*hw, rng)] = err
            raise err from exc
        self._engine, self._hw, self._range = engine, hw, rng
        self.builds += 1
        self.precision = engine.precision
        self.inputs, self.outputs = engine.inputs, engine.outputs
        self._log(f"engine ready in {time.perf_counter() - start:.1f} s: {engine.describe()}")

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        first = inputs[INPUT_NAMES[0]] if INPUT_NAMES[0] in inputs else next(iter(inputs.values()))
        self.prepare((int(first.shape[-2]), int(first.shape[-1])))
        assert self._engine is not None
        return self._engine.infer(inputs)

    def warmup(self, n: int = 2, input_hw: tuple[int, int] | None = None) -> list[float]:
        if input_hw is None and self._hw is None:
            raise ValueError("a per-resolution engine needs input_hw for warmup() before its first frame")
        hw = input_hw or self._hw
        assert hw is not None
        self.prepare(hw)
        assert self._engine is not None
        return self._engine.warmup(n)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine, self._hw = None, None


def to_numpy(x: Array) -> np.ndarray:
    """Host float32 view/copy of a tensor (a no-copy view for contiguous CPU float32)."""
    if isinstance(x, torch.Tensor):
        return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
    return np.ascontiguousarray(x, dtype=np.float32)


def any_torch(values: Sequence[Any]) -> bool:
    """Whether callers passed torch tensors (and therefore get torch tensors back)."""
    return any(_is_torch(v) for v in values)
