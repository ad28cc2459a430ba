"""ONNX Runtime backend: CPU execution provider, plus CUDA / TensorRT providers when the installed
onnxruntime build exposes them.

Why ONNX Runtime at all when torch is there: it runs the same static graph that TensorRT gets (so the
parity test of ONNX vs torch also covers the export), it is a much smaller deployment dependency than
torch, and with the CUDA provider it is the next-best GPU path when TensorRT is not installed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scene_perception.engines.base import (
    Array,
    BackendUnavailable,
    EngineError,
    EngineLoadError,
    InferenceEngine,
    TensorSpec,
    any_torch,
    to_numpy,
)

__all__ = ["OnnxRuntimeEngine", "available_providers"]

_LOG = logging.getLogger(__name__)

#: Graphs larger than this (bytes, i.e. mostly weights) count as "large": CPU memory arena off by default.
LARGE_MODEL_BYTES = 4 * 2**20

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime ([] when onnxruntime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def _parse_device(device: str) -> tuple[str, int]:
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"onnxruntime engine supports cpu or cuda[:N] devices, got {device!r}")
    return dev.type, (dev.index or 0)


class OnnxRuntimeEngine(InferenceEngine):
    """An ``onnxruntime.InferenceSession`` on one static-shape graph.

    Args:
        onnx_path: exported graph (see :func:`scene_perception.engines.onnx_export.export_onnx`).
        device: ``cpu`` or ``cuda[:N]`` (CUDA provider, falling back to CPU only for unsupported nodes).
        use_tensorrt_provider: on CUDA, put ORT's TensorRT provider first when it is available; its
            engines go to ``tensorrt_cache_dir`` (ORT manages and validates those itself).
        fp16: let ORT's TensorRT provider build FP16 engines (ignored by the CPU/CUDA providers).
        num_threads: intra-op threads (0: ORT's default, one per physical core).
        enable_cpu_mem_arena: ORT's CPU arena keeps the peak of every intermediate mapped for the session's
            lifetime; with the paper model's 3-D cost volumes it exhausted memory at 384x1248. ``None``
            (default) decides by model size: off for graphs over :data:`LARGE_MODEL_BYTES` (the paper
            model, 11 MB), on for small ones (lite: measured ~7 % faster with the arena at 320x240).
        size_divisor, max_disparity: override the values read from the graph's metadata.

    Raises:
        EngineLoadError: missing, corrupt or truncated ONNX file (with the runtime's message).
        BackendUnavailable: onnxruntime not installed, or a CUDA device requested from a CPU-only build.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        device: str = "cpu",
        use_tensorrt_provider: bool = False,
        fp16: bool = True,
        tensorrt_cache_dir: str | Path | None = None,
        num_threads: int = 0,
        enable_cpu_mem_arena: bool | None = None,
        size_divisor: int | None = None,
        max_disparity: int | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed: {exc}") from exc
        path = Path(onnx_path)
        if not path.is_file():
            raise EngineLoadError(f"ONNX file {path} does not exist")
        kind, index = _parse_device(device)
        available = ort.get_available_providers()
        providers: list[Any] = []
        if kind == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailable(
                    f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (available: {available}); "
                    "install onnxruntime-gpu"
                )
            if use_tensorrt_provider and "TensorrtExecutionProvider" in available:
                trt_opts: dict[str, Any] = {"device_id": index, "trt_fp16_enable": bool(fp16)}
                if tensorrt_cache_dir is not None:
                    trt_opts.update(
                        trt_engine_cache_enable=True, trt_engine_cache_path=str(tensorrt_cache_dir)
                    )
                providers.append(("TensorrtExecutionProvider", trt_opts))
            providers.append(("CUDAExecutionProvider", {"device_id": index}))
        providers.append("CPUExecutionProvider")

        opts = ort.SessionOptions()
        if num_threads > 0:
            opts.intra_op_num_threads = int(num_threads)
            opts.inter_op_num_threads = 1
        if enable_cpu_mem_arena is None:
            enable_cpu_mem_arena = path.stat().st_size <= LARGE_MODEL_BYTES
        opts.enable_cpu_mem_arena = bool(enable_cpu_mem_arena)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: ORT's warnings about provider fallbacks are logged below
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises InvalidProtobuf, Fail, InvalidGraph, ...
            raise EngineLoadError(
                f"onnxruntime cannot load ONNX file {path} (corrupt, truncated or not an ONNX graph?): {exc}"
            ) from exc
        active = self.session.get_providers()
        if kind == "cuda" and active[0] == "CPUExecutionProvider":
            # ORT silently drops a provider whose libraries (CUDA, cuDNN) fail to load.
            raise BackendUnavailable(
                f"onnxruntime could not initialise CUDA for {path} (session providers: {active}); "
                "check the CUDA/cuDNN libraries onnxruntime-gpu needs"
            )
        self.providers = active
        self._kind, self._index = kind, index
        self.device = "cpu" if kind == "cpu" else f"cuda:{index}"
        self.path = path
        self.precision = "fp16" if (fp16 and active[0] == "TensorrtExecutionProvider") else "fp32"

        meta = self.session.get_modelmeta().custom_metadata_map
        prefix = "scene_perception."
        self.metadata = {k[len(prefix) :]: v for k, v in meta.items() if k.startswith(prefix)}
        self.size_divisor = int(size_divisor or self.metadata.get("size_divisor") or 1)
        md = max_disparity or self.metadata.get("max_disparity")
        self.max_disparity = int(md) if md else None
        self.inputs = tuple(self._spec(a) for a in self.session.get_inputs())
        self.outputs = tuple(self._spec(a) for a in self.session.get_outputs())

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
        return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))

    def describe(self) -> str:
        return super().describe() + f" [providers: {', '.join(self.providers)}]"

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        self.check_inputs(inputs)
        values = list(inputs.values())
        if self._kind == "cuda" and any(isinstance(v, torch.Tensor) and v.is_cuda for v in values):
            return self._infer_cuda_tensors(inputs)
        feeds = {name: to_numpy(x) for name, x in inputs.items()}
        try:
            out = self.session.run(list(self.output_names), feeds)
        except Exception as exc:  # noqa: BLE001 - ORT's RuntimeException types are not importable portably
            raise EngineError(f"onnxruntime inference failed: {exc}") from exc
        result = dict(zip(self.output_names, out, strict=True))
        if any_torch(values):
            target = next(v.device for v in values if isinstance(v, torch.Tensor))
            return {k: torch.from_numpy(v).to(target) for k, v in result.items()}
        return result

    def _infer_cuda_tensors(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Zero-copy path for CUDA torch tensors: bind device pointers with ORT's IOBinding.

        Outputs are allocated by torch on the same device and bound too, so nothing crosses the PCIe bus.
        Torch's current stream is synchronised first because ORT runs on its own stream.
        """
        device = torch.device(self.device)
        binding = self.session.io_binding()
        keep: list[torch.Tensor] = []
        for spec in self.inputs:
            t = inputs[spec.name]
            t = (t if isinstance(t, torch.Tensor) else torch.from_numpy(np.asarray(t))).to(
                device, torch.float32
            )
            t = t.contiguous()
            keep.append(t)
            binding.bind_input(
                name=spec.name,
                device_type="cuda",
                device_id=self._index,
                element_type=np.float32,
                shape=tuple(t.shape),
                buffer_ptr=t.data_ptr(),
            )
        outputs: dict[str, torch.Tensor] = {}
        for spec in self.outputs:
            shape = tuple(int(d) for d in spec.shape if d is not None)
            if len(shape) != len(spec.shape):
                raise EngineError(f"output {spec} is not static; the CUDA binding path needs static shapes")
            outputs[spec.name] = torch.empty(shape, dtype=torch.float32, device=device)
            binding.bind_output(
                name=spec.name,
                device_type="cuda",
                device_id=self._index,
                element_type=np.float32,
                shape=shape,
                buffer_ptr=outputs[spec.name].data_ptr(),
            )
        torch.cuda.current_stream(device).synchronize()
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"onnxruntime (CUDA, IOBinding) inference failed: {exc}") from exc
        del keep
        return dict(outputs)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
