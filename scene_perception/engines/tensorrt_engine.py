"""TensorRT backend (TensorRT 10 Python API): build a serialized engine from ONNX, run it on a CUDA stream.

Written against the documented TensorRT 10 API: ``trt.Builder`` / ``create_network(0)`` (explicit batch is
the only mode in 10.x), ``trt.OnnxParser``, ``IBuilderConfig`` with ``BuilderFlag.FP16`` / ``INT8`` and an
``IInt8EntropyCalibrator2``, ``build_serialized_network``, ``trt.Runtime.deserialize_cuda_engine``, and the
name-based I/O of an ``IExecutionContext`` (``set_tensor_address`` + ``execute_async_v3(stream)``).
Device memory and the stream come from torch (``torch.cuda``), so no pycuda / cuda-python dependency and
callers can pass CUDA tensors straight through.

UNVERIFIED on the development machine (no GPU, tensorrt not installed): the import-guarded code paths
here are exercised only by tests that skip with an explicit reason there. The calibration-data loader is
pure numpy/OpenCV and is tested everywhere.

Engines are built for one static input shape (the ONNX graph is static), i.e. one engine per camera
resolution, which lets TensorRT pick the best tactics for exactly that cost-volume size. INT8 uses implicit
quantization with entropy calibration (deprecated since TensorRT 10.1 in favour of explicit Q/DQ graphs,
still supported in 10.x); FP16 is the recommended precision for GC-Net: its soft arg-min is an expectation
over up to 192 hypotheses, which INT8 activations coarsen visibly.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scene_perception.engines.base import (
    INPUT_NAMES,
    Array,
    BackendUnavailable,
    EngineError,
    EngineLoadError,
    InferenceEngine,
    TensorSpec,
    any_torch,
)

__all__ = [
    "UNVERIFIED_REASON",
    "TensorRTEngine",
    "build_serialized_engine",
    "calibration_digest",
    "gpu_name",
    "load_calibration_pairs",
    "tensorrt_unavailable_reason",
    "tensorrt_version",
]

_LOG = logging.getLogger(__name__)

#: The reason string of every skipped TensorRT test (and the README's "unverified" note).
UNVERIFIED_REASON = "requires tensorrt + CUDA GPU (unverified on this machine)"

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"the tensorrt Python package is not installed ({exc})") from exc
    return trt


def tensorrt_unavailable_reason() -> str | None:
    """None when this process can build and run TensorRT engines, otherwise why not (for logs)."""
    try:
        _import_tensorrt()
    except BackendUnavailable as exc:
        return str(exc)
    if not torch.cuda.is_available():
        build = torch.version.cuda or "CPU-only build"
        return f"tensorrt is installed but torch {torch.__version__} ({build}) sees no CUDA device"
    return None


def tensorrt_version() -> str:
    """Installed TensorRT version ("" when not installed)."""
    try:
        return str(_import_tensorrt().__version__)
    except BackendUnavailable:
        return ""


def gpu_name(device: str = "cuda:0") -> str:
    """Marketing name of the CUDA device (engines are only valid on the GPU model that built them)."""
    if not torch.cuda.is_available():
        return ""
    return str(torch.cuda.get_device_name(torch.device(device)))


# ----------------------------------------------------------------------------------------- calibration
def _find_pairs(calib_dir: Path) -> list[tuple[Path, Path]]:
    """Pairs as ``left/<name>`` + ``right/<name>``, or ``*left*`` files next to their ``*right*`` twin."""
    left_dir, right_dir = calib_dir / "left", calib_dir / "right"
    pairs: list[tuple[Path, Path]] = []
    if left_dir.is_dir() and right_dir.is_dir():
        for left in sorted(left_dir.iterdir()):
            if left.suffix.lower() in _IMAGE_SUFFIXES and (right_dir / left.name).is_file():
                pairs.append((left, right_dir / left.name))
        return pairs
    for left in sorted(calib_dir.iterdir()):
        if left.suffix.lower() not in _IMAGE_SUFFIXES or "left" not in left.name:
            continue
        right = left.with_name(left.name.replace("left", "right"))
        if right.is_file():
            pairs.append((left, right))
    return pairs


def load_calibration_pairs(
    calib_dir: str | Path, height: int, width: int, limit: int = 64
) -> list[dict[str, np.ndarray]]:
    """Rectified stereo pairs from ``calib_dir`` as engine inputs ((1,3,H,W) float32 RGB in [0, 1]).

    Pairing: ``left/`` and ``right/`` sub-directories with equal file names, or files whose names contain
    ``left`` beside the same name with ``right`` (``left01.jpg`` / ``right01.jpg``). Images are resized to
    the engine size with area interpolation: calibration only needs the activation statistics, and those
    depend on texture and disparity distribution, not on exact pixel positions. Keep calibration images
    apart from evaluation data (project data rules).

    Raises:
        ValueError: no directory, no pairs, an unreadable image, or left/right sizes that differ.
    """
    import cv2

    calib_dir = Path(calib_dir)
    if not calib_dir.is_dir():
        raise ValueError(f"calibration directory {calib_dir} does not exist")
    pairs = _find_pairs(calib_dir)
    if not pairs:
        raise ValueError(
            f"no stereo pairs in {calib_dir}: expected left/ and right/ sub-directories with equal "
            "file names, "
            "or files named *left*.png next to *right*.png"
        )
    batches: list[dict[str, np.ndarray]] = []
    for left_path, right_path in pairs[: max(1, int(limit))]:
        images = []
        for p in (left_path, right_path):
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"calibration image {p} cannot be read")
            images.append(bgr)
        if images[0].shape != images[1].shape:
            raise ValueError(f"calibration pair {left_path.name} / {right_path.name} differ in size")
        batch = {}
        for name, bgr in zip(INPUT_NAMES, images, strict=True):
            rgb = cv2.cvtColor(
                cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
            )
            batch[name] = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(
                255
            )
        batches.append(batch)
    return batches


def calibration_digest(batches: Sequence[Mapping[str, np.ndarray]]) -> str:
    """sha256 of calibration inputs: part of the INT8 engine's cache key (other data, other scales)."""
    h = hashlib.sha256()
    for batch in batches:
        for name in sorted(batch):
            h.update(name.encode())
            h.update(np.ascontiguousarray(batch[name], dtype=np.float32).tobytes())
    return h.hexdigest()


def _make_calibrator(
    trt: Any, batches: Sequence[Mapping[str, np.ndarray]], device: torch.device, cache: Path | None
) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` from torch-owned device buffers."""

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # required by the pybind11 trampoline (documented)
            self._batches = list(batches)
            self._index = 0
            self._device_buffers: dict[str, torch.Tensor] = {}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._index >= len(self._batches):
                return None
            batch = self._batches[self._index]
            self._index += 1
            ptrs = []
            for name in names:
                t = torch.from_numpy(np.ascontiguousarray(batch[name], dtype=np.float32)).to(device)
                self._device_buffers[name] = t  # keep alive until the next get_batch
                ptrs.append(int(t.data_ptr()))
            torch.cuda.synchronize(device)
            return ptrs

        def read_calibration_cache(self) -> bytes | None:
            if cache is not None and cache.is_file():
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, data: Any) -> None:
            if cache is not None:
                cache.write_bytes(bytes(data))

    return _Calibrator()


# ------------------------------------------------------------------------------------------------ build
def build_serialized_engine(
    onnx_path: str | Path,
    output_path: str | Path,
    *,
    fp16: bool = True,
    int8: bool = False,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    calibration_cache: str | Path | None = None,
    workspace_mb: int = 4096,
    device: str = "cuda:0",
) -> dict[str, Any]:
    """Parse ``onnx_path`` and write a serialized TensorRT engine to ``output_path``.

    Returns build metadata (TensorRT version, GPU, precision flags, I/O shapes) for the cache's JSON.

    Raises:
        BackendUnavailable: no tensorrt / no CUDA.
        EngineError: the parser rejects the graph (every parser error is listed) or the build fails.
        ValueError: ``int8`` without calibration data.
    """
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"cannot build a TensorRT engine: {reason}")
    trt = _import_tensorrt()
    if int8 and not calibration and calibration_cache is None:
        raise ValueError("INT8 needs calibration pairs (--calib-dir) or an existing calibration cache")
    onnx_path, output_path = Path(onnx_path), Path(output_path)
    dev = torch.device(device)
    logger = trt.Logger(trt.Logger.WARNING)
    with torch.cuda.device(dev):
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineError(f"TensorRT's ONNX parser rejected {onnx_path}: " + " | ".join(errors))
        for i in range(network.num_inputs):
            shape = tuple(network.get_input(i).shape)
            if any(d < 0 for d in shape):
                raise EngineError(
                    f"{onnx_path} input {network.get_input(i).name} has dynamic shape {shape}; "
                    "export one graph per resolution"
                )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if int8:
            config.set_flag(trt.BuilderFlag.INT8)
            cache = Path(calibration_cache) if calibration_cache is not None else None
            config.int8_calibrator = _make_calibrator(trt, calibration or [], dev, cache)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(
                f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)"
            )
        output_path.parent.mkdir(parents=True, exist_ok=True)
        output_path.write_bytes(bytes(serialized))
    io = {network.get_input(i).name: list(network.get_input(i).shape) for i in range(network.num_inputs)} | {
        network.get_output(i).name: list(network.get_output(i).shape) for i in range(network.num_outputs)
    }
    return {
        "tensorrt_version": str(trt.__version__),
        "gpu_name": gpu_name(device),
        "fp16": bool(fp16),
        "int8": bool(int8),
        "calibration_pairs": len(calibration or []),
        "io": io,
        "onnx": str(onnx_path),
    }


# ------------------------------------------------------------------------------------------------- run
_TORCH_DTYPES = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.bool_): torch.bool,
}


class TensorRTEngine(InferenceEngine):
    """A deserialized TensorRT engine with one execution context and its own CUDA stream.

    Inputs may be numpy arrays (copied to the device) or torch tensors (CUDA tensors are used in place).
    Output tensors are allocated by torch per call (cheap with torch's caching allocator) so a result
    returned to the caller is never overwritten by the next frame. The engine's stream waits for the
    caller's current stream before running and the caller's stream waits for the engine's afterwards, so
    ordering with surrounding torch work is correct without a host synchronisation.

    Raises:
        BackendUnavailable: no tensorrt / no CUDA.
        EngineLoadError: the file is missing or TensorRT refuses it (other TensorRT version / GPU, corrupt).
    """

    backend = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        device: str = "cuda:0",
        precision: str = "fp16",
        size_divisor: int = 1,
        max_disparity: int | None = None,
    ) -> None:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"cannot run a TensorRT engine: {reason}")
        trt = _import_tensorrt()
        path = Path(engine_path)
        if not path.is_file():
            raise EngineLoadError(f"TensorRT engine {path} does not exist")
        self._device = torch.device(device)
        self.device = str(self._device)
        self.precision = precision
        self.size_divisor = int(size_divisor)
        self.max_disparity = max_disparity
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self._device):
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise EngineLoadError(
                    f"TensorRT {trt.__version__} could not deserialize {path} (built by another TensorRT "
                    "version "
                    "or for another GPU, or corrupt)"
                )
            self._engine = engine
            self._context = engine.create_execution_context()
            if self._context is None:
                raise EngineLoadError(f"TensorRT could not create an execution context for {path}")
            self._stream = torch.cuda.Stream(device=self._device)
        inputs, outputs = [], []
        self._dtypes: dict[str, torch.dtype] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineLoadError(
                    f"{path}: tensor {name} has a dynamic shape {shape}; build one engine per size"
                )
            np_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self._dtypes[name] = _TORCH_DTYPES[np_dtype]
            spec = TensorSpec(name, shape, str(np_dtype))
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self.path = path

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.check_inputs(inputs)
        as_torch = any_torch(list(inputs.values()))
        dev = self._device
        with torch.cuda.device(dev):
            caller = torch.cuda.current_stream(dev)
            feeds: list[torch.Tensor] = []
            for spec in self.inputs:
                x = inputs[spec.name]
                t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
                t = t.to(dev, self._dtypes[spec.name], non_blocking=True).contiguous()
                feeds.append(t)
                self._context.set_tensor_address(spec.name, t.data_ptr())
            outs = {
                spec.name: torch.empty(spec.shape, dtype=self._dtypes[spec.name], device=dev)  # type: ignore[arg-type]
                for spec in self.outputs
            }
            for name, t in outs.items():
                self._context.set_tensor_address(name, t.data_ptr())
            self._stream.wait_stream(caller)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise EngineError(f"TensorRT execute_async_v3 failed for {self.path}")
            # Tell the caching allocator these tensors are in use on our stream, then hand back ordering.
            for t in (*feeds, *outs.values()):
                t.record_stream(self._stream)
            caller.wait_stream(self._stream)
        result = {k: v.float() for k, v in outs.items()}
        if as_torch:
            return dict(result)
        return {k: v.cpu().numpy() for k, v in result.items()}

    def close(self) -> None:
        # Context before engine before runtime: TensorRT objects must die in reverse creation order.
        self._context = None
        self._engine = None
        self._runtime = None
