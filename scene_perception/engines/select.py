"""Choosing a backend (``auto``) and building engines for a model through the cache.

``backend="auto"`` takes the first available of, in this order (issue 4):

1. ``tensorrt`` on CUDA (FP16): fastest on NVIDIA GPUs, incl. Jetson.
2. ``onnxruntime`` with the CUDA execution provider.
3. ``torch`` on CUDA (FP16 via autocast).
4. The CPU fallback: ``onnxruntime`` CPU by default, as the issue specifies.

The CPU fallback is a documented, overridable choice. Which CPU backend is faster depends on the machine:
the project notes measured torch ~80 ms vs ORT ~100 ms for ``lite`` at 320x240 on an idle 2-core machine,
and ``benchmarks/engines.py`` on the same 2 cores with a training run occupying one of them measured
torch 164 ms vs ORT 215 ms with 1 thread, but torch 1314 ms vs ORT 271 ms with 2 threads (torch's OpenMP
threads spin against the other process; ORT's pool degrades gracefully). ORT is the more robust default
on a robot whose CPU is shared with other nodes. Override it with ``cpu_fallback="torch"`` or the
environment variable ``SCENE_PERCEPTION_CPU_BACKEND=torch``; either backend can also be named explicitly.
The choice and the reason each better backend was skipped are logged, so "why is this robot running on
the CPU" is answered by the log.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scene_perception.engines.base import BackendUnavailable, InferenceEngine, PerResolutionEngine
from scene_perception.engines.onnx_export import DEFAULT_OPSET

__all__ = [
    "BACKENDS",
    "CPU_FALLBACK_DEFAULT",
    "ENV_CPU_BACKEND",
    "BackendChoice",
    "Probe",
    "choose_backend",
    "create_engine",
    "probe",
    "resolve_device",
]

_LOG = logging.getLogger(__name__)

#: Values of the ``backend`` parameter / ``--backend`` option.
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
#: CPU backend of ``auto`` when no GPU path is available (issue 4: "... > ORT-CPU").
CPU_FALLBACK_DEFAULT = "onnxruntime"
#: Environment override of the CPU fallback (``torch`` or ``onnxruntime``).
ENV_CPU_BACKEND = "SCENE_PERCEPTION_CPU_BACKEND"


@dataclass(frozen=True)
class Probe:
    """What this process can use; each ``*_reason`` is None when available, else why not."""

    cuda_reason: str | None
    gpu_name: str
    tensorrt_reason: str | None
    ort_reason: str | None
    ort_cuda_reason: str | None
    onnx_export_reason: str | None


def probe() -> Probe:
    """Inspect torch/CUDA, tensorrt, onnxruntime (+ its providers) and the ONNX exporter's dependencies."""
    from scene_perception.engines.ort_engine import available_providers
    from scene_perception.engines.tensorrt_engine import gpu_name, tensorrt_unavailable_reason

    cuda_reason = None
    if not torch.cuda.is_available():
        cuda_reason = (
            f"torch {torch.__version__} ({torch.version.cuda or 'CPU-only build'}) sees no CUDA device"
        )
    try:
        import onnxruntime as ort

        ort_reason = None
        providers = available_providers()
        ort_cuda_reason = (
            None
            if "CUDAExecutionProvider" in providers
            else f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
            f"(providers: {', '.join(providers)})"
        )
    except ImportError as exc:
        ort_reason = ort_cuda_reason = f"onnxruntime is not installed ({exc})"
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    export_reason = f"ONNX export needs {' and '.join(missing)} (pip install)" if missing else None
    if export_reason and ort_reason is None:
        ort_reason = export_reason
    if ort_cuda_reason is None and cuda_reason is not None:
        ort_cuda_reason = cuda_reason
    trt_reason = tensorrt_unavailable_reason() or export_reason
    return Probe(
        cuda_reason=cuda_reason,
        gpu_name=gpu_name() if cuda_reason is None else "",
        tensorrt_reason=trt_reason,
        ort_reason=ort_reason,
        ort_cuda_reason=ort_cuda_reason,
        onnx_export_reason=export_reason,
    )


@dataclass(frozen=True)
class BackendChoice:
    """The resolved backend, where it runs, and why (for logs and the node's diagnostics)."""

    backend: str
    device: str
    precision: str
    requested: str
    reason: str
    skipped: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        head = (
            f"backend {self.backend} on {self.device} ({self.precision}); "
            f"requested {self.requested}: {self.reason}"
        )
        if not self.skipped:
            return head
        return head + "; skipped: " + "; ".join(f"{k}: {v}" for k, v in self.skipped.items())


def resolve_device(device: str, cuda_available: bool | None = None) -> str:
    """``auto`` -> ``cuda:0`` when CUDA is available else ``cpu``; ``cuda`` -> ``cuda:0``; validated.

    Raises:
        ValueError: anything that is not cpu / cuda / cuda:N / auto.
    """
    text = str(device).strip().lower()
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if text == "auto":
        return "cuda:0" if cuda_available else "cpu"
    try:
        dev = torch.device(text)
    except RuntimeError as exc:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return "cpu" if dev.type == "cpu" else f"cuda:{dev.index or 0}"


def _cpu_fallback(cpu_fallback: str | None) -> str:
    value = cpu_fallback or os.environ.get(ENV_CPU_BACKEND, "") or CPU_FALLBACK_DEFAULT
    if value not in ("torch", "onnxruntime"):
        raise ValueError(
            f"CPU fallback backend must be torch or onnxruntime, got {value!r} ({ENV_CPU_BACKEND}?)"
        )
    return value


def choose_backend(
    requested: str = "auto",
    device: str = "auto",
    *,
    cpu_fallback: str | None = None,
    probe_result: Probe | None = None,
    log: Callable[[str], None] | None = None,
) -> BackendChoice:
    """Resolve ``requested`` (one of :data:`BACKENDS`) and ``device`` to something that can run here.

    ``device`` narrows ``auto``: ``cpu`` considers only CPU backends, ``cuda[:N]`` only GPU ones,
    ``auto`` both (GPU first). An explicitly requested backend that cannot run raises instead of silently
    running something else, because a deployment that asked for TensorRT wants to know it did not get it.

    Raises:
        ValueError: unknown backend / device name.
        BackendUnavailable: explicit backend (or device) not available; the message says why.
    """
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {requested!r}")
    pr = probe_result or probe()
    want = str(device).strip().lower()
    resolved = resolve_device(want, cuda_available=pr.cuda_reason is None)
    gpu = resolved if resolved.startswith("cuda") else "cuda:0"
    gpu_ok = want != "cpu"
    cpu_ok = want in ("auto", "cpu")
    fallback = _cpu_fallback(cpu_fallback)
    reasons = {
        ("tensorrt", "cuda"): pr.tensorrt_reason,
        ("onnxruntime", "cuda"): pr.ort_cuda_reason,
        ("torch", "cuda"): pr.cuda_reason,
        ("onnxruntime", "cpu"): pr.ort_reason,
        ("torch", "cpu"): None,
    }
    precision = {"tensorrt": "fp16", "onnxruntime": "fp32", "torch": "fp16"}
    gpu_order = [("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("torch", "cuda")]
    other = "torch" if fallback == "onnxruntime" else "onnxruntime"
    cpu_order = [(fallback, "cpu"), (other, "cpu")]
    if requested == "auto":
        candidates = (gpu_order if gpu_ok else []) + (cpu_order if cpu_ok else [])
    else:
        candidates = [c for c in gpu_order + cpu_order if c[0] == requested]
        candidates = [c for c in candidates if (c[1] == "cuda" and gpu_ok) or (c[1] == "cpu" and cpu_ok)]
        if requested == "tensorrt" and not gpu_ok:
            raise BackendUnavailable("backend tensorrt needs a CUDA device, but device=cpu was requested")
    skipped: dict[str, str] = {}
    if requested == "auto" and not gpu_ok:
        skipped["GPU backends (tensorrt, onnxruntime-cuda, torch-cuda)"] = f"not considered: device={device}"
    for name, kind in candidates:
        reason = reasons[(name, kind)]
        label = f"{name}-{kind}"
        if reason is not None:
            skipped[label] = reason
            continue
        dev = gpu if kind == "cuda" else "cpu"
        prec = precision[name] if kind == "cuda" else "fp32"
        if requested == "auto":
            why = (
                "best available GPU backend"
                if kind == "cuda"
                else f"no GPU backend available; CPU fallback {name}"
                + (" (default, set by issue 4)" if name == CPU_FALLBACK_DEFAULT and not cpu_fallback else "")
            )
        else:
            why = "explicitly requested"
        choice = BackendChoice(name, dev, prec, requested, why, skipped)
        (log or _LOG.info)(choice.describe())
        return choice
    detail = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or f"device={device}"
    raise BackendUnavailable(f"backend {requested} cannot run here ({detail})")


# ------------------------------------------------------------------------------------------ building
def _range_extra(model: nn.Module, max_disparity: int | None) -> str:
    """The cache key's mark of a widened range ('' at the model's own: keys of earlier versions stay)."""
    own = getattr(model, "max_disparity", None)
    return "" if max_disparity is None or max_disparity == own else f"max_disparity={int(max_disparity)}"


def _at_range(model: nn.Module, max_disparity: int | None) -> nn.Module:
    """``model`` itself, or a copy searching ``max_disparity`` px (``GCNet.set_max_disparity``)."""
    if not _range_extra(model, max_disparity):
        return model
    widened = copy.deepcopy(model)
    widened.set_max_disparity(int(max_disparity))  # type: ignore[operator]
    return widened


def _onnx_for(
    cache: Any, model: nn.Module, model_sha256: str, hw: tuple[int, int], label: str,
    max_disparity: int | None = None,
) -> tuple[Path, str]:
    """Path of the verified (re-exported when missing/stale/corrupt) ONNX graph for one input size (and a
    widened range, when ``max_disparity`` differs from the model's)."""
    from scene_perception.engines.cache import EngineKey
    from scene_perception.engines.onnx_export import check_onnx, export_onnx

    key = EngineKey(model_sha256, (1, 3, *hw), "fp32", artifact="onnx", opset=DEFAULT_OPSET,
                    extra=_range_extra(model, max_disparity))

    def build(tmp: Path) -> dict[str, Any]:
        report = export_onnx(_at_range(model, max_disparity), tmp, hw[0], hw[1], model_sha256=model_sha256)
        return {"op_counts": report.op_counts, "opset": report.opset}

    def load(path: Path) -> Path:
        report = check_onnx(path)  # raises on a file that hashes right but onnx cannot parse
        if not report.ok:
            raise ValueError("; ".join(report.problems))
        return path

    path, _ = cache.get_or_build(key, build, load, label=label, what="ONNX graph")
    return path, key.digest()


def create_engine(
    choice: BackendChoice,
    model: nn.Module,
    *,
    model_sha256: str,
    cache_dir: str | Path | None = None,
    input_hw: tuple[int, int] | None = None,
    num_threads: int = 0,
    int8_calibration: Sequence[dict[str, np.ndarray]] | None = None,
    logger: Any = None,
) -> InferenceEngine:
    """An engine for ``model`` on the chosen backend.

    torch engines accept any size at once. ONNX Runtime / TensorRT engines have static shapes: with
    ``input_hw`` (padded (H, W)) the engine is built now; without, a :class:`PerResolutionEngine` builds
    one on the first frame and again when the resolution changes, always through the cache in
    ``cache_dir`` (required for those backends).

    ``logger`` (``info``/``warning`` methods; default this module's logger) receives the build, cache and
    resolution-change lines, so a ROS node can route them to its own log.

    TensorRT engines are strongly typed (engines/tensorrt_engine.py): ``fp16`` builds from the exported
    graph rewritten with fp16 convolutions and an fp32 soft arg-min, ``fp32`` from the graph as exported.
    ``int8`` is refused here: TensorRT 11 builds INT8 only from an explicitly quantized (Q/DQ) graph, and
    this function exports a plain float graph; ``int8_calibration`` is kept for API compatibility only.

    Raises:
        BackendUnavailable / EngineError: the backend cannot run or the build failed.
        ValueError: missing or unusable ``cache_dir``; a TensorRT ``int8`` choice.
    """
    from scene_perception.engines.torch_engine import TorchEngine

    if choice.backend == "tensorrt" and choice.precision == "int8":
        # Refused before any export or build, so it fails at start-up rather than on the first frame.
        raise ValueError(
            "TensorRT INT8 needs an explicitly quantized (Q/DQ) ONNX graph: implicit calibration was "
            "deprecated in TensorRT 10.1 and removed in 11.0, and create_engine exports a plain float graph. "
            "Build an INT8 engine with tensorrt_engine.build_serialized_engine from a Q/DQ graph, or use fp16"
        )
    if choice.backend == "torch":
        return TorchEngine(model, device=choice.device, precision=choice.precision, input_hw=input_hw)
    if cache_dir is None:
        raise ValueError(f"backend {choice.backend} needs an engine cache directory")
    from scene_perception.engines.cache import EngineCache, EngineKey

    logger = logger or _LOG
    cache = EngineCache(cache_dir, logger=logger)
    config = getattr(model, "config", None)
    label = str(getattr(config, "name", "model"))
    size_divisor = int(getattr(model, "size_divisor", 1))
    max_disp = getattr(model, "max_disparity", None)
    max_disparity = int(max_disp) if max_disp is not None else None

    def build_ort(hw: tuple[int, int], rng: int | None = max_disparity) -> InferenceEngine:
        from scene_perception.engines.ort_engine import OnnxRuntimeEngine

        onnx_path, _ = _onnx_for(cache, model, model_sha256, hw, label, rng)
        return OnnxRuntimeEngine(
            onnx_path,
            device=choice.device,
            num_threads=num_threads,
            size_divisor=size_divisor,
            max_disparity=rng,
        )

    def build_trt(hw: tuple[int, int], rng: int | None = max_disparity) -> InferenceEngine:
        from scene_perception.engines.tensorrt_engine import (
            TensorRTEngine,
            build_serialized_engine,
            engine_key_extra,
            gpu_name,
            tensorrt_version,
        )

        onnx_path, onnx_digest = _onnx_for(cache, model, model_sha256, hw, label, rng)
        # TensorRT version + typing (strong) + fp16 policy in the key: an engine built by another TensorRT,
        # or by the old weakly typed code with the same precision name, is stale, not reusable.
        key = EngineKey(
            model_sha256,
            (1, 3, *hw),
            choice.precision,
            gpu_name=gpu_name(choice.device),
            tensorrt_version=tensorrt_version(),
            artifact="tensorrt",
            opset=DEFAULT_OPSET,
            extra=";".join(filter(None, (engine_key_extra(choice.precision), _range_extra(model, rng)))),
        )

        def build(tmp: Path) -> dict[str, Any]:
            meta = build_serialized_engine(
                onnx_path, tmp, fp16=choice.precision == "fp16", int8=False, device=choice.device
            )
            return {"build": meta, "onnx_key_digest": onnx_digest}

        def load(path: Path) -> InferenceEngine:
            return TensorRTEngine(
                path,
                device=choice.device,
                precision=choice.precision,
                size_divisor=size_divisor,
                max_disparity=rng,
            )

        engine, _ = cache.get_or_build(key, build, load, label=label, what="TensorRT engine")
        return engine

    factory = build_ort if choice.backend == "onnxruntime" else build_trt
    engine: InferenceEngine
    if input_hw is not None:
        engine = factory((int(input_hw[0]), int(input_hw[1])))
    else:
        engine = PerResolutionEngine(
            factory,
            backend=choice.backend,
            device=choice.device,
            precision=choice.precision,
            size_divisor=size_divisor,
            max_disparity=max_disparity,
            range_multiple=getattr(model, "range_multiple", None),
            log=logger.info,
        )
    step = getattr(model, "cost_stride", None)  # not in the exported graph: the model knows it
    engine.disparity_step = int(step) if step is not None else None
    return engine
