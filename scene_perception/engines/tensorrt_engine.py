"""TensorRT backend: build a strongly typed engine from ONNX, run it on a CUDA stream (TensorRT 10.x + 11.x).

**Ported, not pinned.** TensorRT 11.0 removed weak typing: ``BuilderFlag.FP16`` / ``INT8`` (and BF16, FP8,
the precision-constraint flags), ``IBuilderConfig.int8_calibrator`` and the ``IInt8*Calibrator`` classes
are gone (NVIDIA's "Migrating from TensorRT 10.x to 11.x" guide; the 11.1 Python bindings no longer
define them). Every 11.x network is strongly typed: each tensor's type comes from the graph, and the
``STRONGLY_TYPED`` creation flag is kept only for compatibility and ignored. TensorRT 10.x has the same
strongly typed mode behind that flag (present in the 10.0 bindings; weak typing deprecated since 10.12).
So this module builds strongly typed on both majors and puts the precision into the ONNX graph, instead
of pinning ``tensorrt<11`` and keeping a path NVIDIA has already deleted: a pin would strand the backend
on 10.x, whose weak typing is deprecated, and Jetson/JetPack images move with NVIDIA's releases.

Why a graph we control is also the better numerics: weak typing let the builder pick fp16 for any
layer, the soft arg-min included; GC-Net's soft arg-min is an expectation over up to 192 hypotheses
and must stay fp32 (``models/layers.py``), as must the published disparity. Strong typing makes that a
property of the graph: :func:`mixed_fp16_onnx` rewrites the exported fp32 graph so that convolutions
run in fp16 and the soft arg-min, the upsampling and the refinement's residual sum, and graph I/O stay
fp32 (the policy mirrors what ``torch.autocast`` does in the torch backend; see :data:`MIXED_FP16_POLICY`).
The rewrite is plain ``onnx`` (no NVIDIA ModelOpt dependency) and is checked with ONNX Runtime on CPU
(``test/test_tensorrt.py``), which is the part of this backend that can be verified without a GPU.

Precisions: ``fp16`` = the mixed graph above; ``fp32`` = the exported graph as is (TensorRT's default
TF32 for convolutions on Ampere+ is left on, as before); ``int8`` = **explicit quantization only**: the
ONNX graph must already carry QuantizeLinear/DequantizeLinear nodes with their scales (e.g. from NVIDIA
ModelOpt's ONNX PTQ, fed by :func:`save_calibration_npz`), because implicit calibration was deprecated
in TensorRT 10.1 and removed in 11.0. A graph without Q/DQ is refused with a ValueError that says so.

Rest of the API, unchanged between 10.x and 11.x (checked against the 10.0 and 11.1 Python bindings):
``trt.Builder`` / ``create_network``, ``trt.OnnxParser``, ``build_serialized_network``,
``trt.Runtime.deserialize_cuda_engine``, and the name-based I/O of an ``IExecutionContext``
(``set_tensor_address`` + ``execute_async_v3(stream)``). Device memory and the stream come from torch
(``torch.cuda``), so no pycuda / cuda-python dependency and callers can pass CUDA tensors straight through.
Other majors are refused explicitly (:func:`unsupported_version_reason`): 8.x/9.x are not targeted (the
exported graphs use ONNX opset 18; see engines/onnx_export.py) and 12.x has not been checked.

UNVERIFIED on the development machine (no GPU; the ``tensorrt`` wheel cannot be installed here and
cannot be carried to the GPU machine): every code path that imports ``tensorrt`` is exercised only by
tests that skip with :data:`UNVERIFIED_REASON` there. The version checks, the fp16 graph rewrite, the
INT8 refusal and the calibration-data loader are pure Python and tested everywhere.

Engines are built for one static input shape (the ONNX graph is static), i.e. one engine per camera
resolution, which lets TensorRT pick the best tactics for exactly that cost-volume size.
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
    "MIXED_FP16_POLICY",
    "SUPPORTED_TENSORRT_MAJORS",
    "UNVERIFIED_REASON",
    "TensorRTEngine",
    "build_serialized_engine",
    "calibration_digest",
    "engine_key_extra",
    "gpu_name",
    "has_explicit_quantization",
    "load_calibration_pairs",
    "mixed_fp16_onnx",
    "save_calibration_npz",
    "tensorrt_major",
    "tensorrt_unavailable_reason",
    "tensorrt_version",
    "unsupported_version_reason",
]

_LOG = logging.getLogger(__name__)

#: The reason string of every skipped TensorRT test (and the README's "unverified" note).
UNVERIFIED_REASON = "requires tensorrt + CUDA GPU (unverified on this machine)"

#: Majors whose Python API this module is written against (strongly typed networks, name-based I/O).
SUPPORTED_TENSORRT_MAJORS: tuple[int, ...] = (10, 11)

#: Identity of the fp16 typing rules of :func:`mixed_fp16_onnx`. Part of the engine cache key (via
#: :func:`engine_key_extra`): an engine built from a graph typed under other rules must not be reused.
MIXED_FP16_POLICY = "mixed-fp16-v1:conv-fp16,softmax-reduce-fp32,io-fp32"

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"the tensorrt Python package is not installed ({exc})") from exc
    return trt


def tensorrt_major(version: str) -> int:
    """Major number of a TensorRT version string (``"10.3.0"`` -> 10, ``"11.1.0.106"`` -> 11).

    Raises:
        ValueError: not a dotted version starting with an integer.
    """
    head = str(version).strip().split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"cannot read a TensorRT major version from {version!r}")
    return int(head)


def unsupported_version_reason(version: str) -> str | None:
    """None when this module supports TensorRT ``version``, otherwise why not (for logs and errors).

    Explicit rather than "try and see": an unsupported major fails at build or load time with an
    AttributeError deep inside TensorRT's bindings, long after ``backend=auto`` chose it.
    """
    try:
        major = tensorrt_major(version)
    except ValueError as exc:
        return str(exc)
    if major in SUPPORTED_TENSORRT_MAJORS:
        return None
    supported = " and ".join(f"{m}.x" for m in SUPPORTED_TENSORRT_MAJORS)
    why = (
        "older releases are not targeted (the exported graphs use ONNX opset 18, and this backend the 10.x "
        "strongly typed build and name-based I/O API)"
        if major < min(SUPPORTED_TENSORRT_MAJORS)
        else "this backend has not been checked against its API"
    )
    return f"tensorrt {version} is installed, but the TensorRT backend supports {supported} only: {why}"


def tensorrt_unavailable_reason() -> str | None:
    """None when this process can build and run TensorRT engines, otherwise why not (for logs)."""
    try:
        trt = _import_tensorrt()
    except BackendUnavailable as exc:
        return str(exc)
    version_reason = unsupported_version_reason(str(getattr(trt, "__version__", "")))
    if version_reason is not None:
        return version_reason
    if not torch.cuda.is_available():
        build = torch.version.cuda or "CPU-only build"
        return f"tensorrt is installed but torch {torch.__version__} ({build}) sees no CUDA device"
    return None


def tensorrt_version() -> str:
    """Installed TensorRT version ("" when not installed), whether or not this module supports it."""
    try:
        return str(_import_tensorrt().__version__)
    except BackendUnavailable:
        return ""


def engine_key_extra(precision: str, calibration_sha256: str = "") -> str:
    """The ``extra`` field of a TensorRT engine's cache key: how the built graph was typed.

    Why: engines built by the old weakly typed code (``BuilderFlag.FP16``) and by this module have the
    same model, shape, precision name, GPU and TensorRT version, yet differ in which layers run in fp16.
    Naming the typing and the fp16 policy keeps a cached weakly typed engine from being served as if it
    were the strongly typed one (and a policy change from reusing engines built under the old rules).
    """
    graph = {"fp16": MIXED_FP16_POLICY, "fp32": "as-exported", "int8": "qdq"}.get(precision)
    if graph is None:
        raise ValueError(f"TensorRT precision must be fp16, fp32 or int8, got {precision!r}")
    extra = f"typing=strong;graph={graph}"
    return extra + (f";calibration={calibration_sha256}" if calibration_sha256 else "")


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


def save_calibration_npz(batches: Sequence[Mapping[str, np.ndarray]], path: str | Path) -> Path:
    """Write calibration pairs as one ``.npz`` with an array per input name, stacked along the batch axis.

    Why: INT8 is explicit quantization now (module docstring), so calibration happens where the Q/DQ
    graph is made, not in the TensorRT builder. This is the input layout ONNX post-training quantizers
    take (e.g. NVIDIA ModelOpt's ``--calibration_data``), produced by the same loader and preprocessing
    as the engine inputs (:func:`load_calibration_pairs`).

    Raises:
        ValueError: no batches, or batches with different input names.
    """
    if not batches:
        raise ValueError("no calibration batches to write")
    names = sorted(batches[0])
    if any(sorted(b) != names for b in batches):
        raise ValueError(f"every calibration batch must have the inputs {names}")
    arrays = {n: np.concatenate([np.asarray(b[n], dtype=np.float32) for b in batches], axis=0) for n in names}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # an open file: np.savez would append ".npz" to a path without it
        np.savez(fh, **arrays)
    return path


# ---------------------------------------------------------------------------------- fp16 graph rewrite
# Ops computed in fp16: the convolutions, which hold nearly all of GC-Net's FLOPs and memory traffic (the
# cost volume and every 3-D layer). Same as torch.autocast's fp16 list for this network.
_FP16_OPS = frozenset({"Conv", "ConvTranspose"})
# Ops computed in fp32 whatever their inputs: torch.autocast's fp32 list (softmax, sums, exp/log ...).
# Softmax + ReduceSum are the soft arg-min, whose expectation over up to 192 hypotheses loses sub-pixel
# resolution in fp16 (models/layers.py measured 0.42 px in bf16).
_FP32_OPS = frozenset(
    {
        "Softmax", "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceProd", "ReduceSumSquare", "ReduceL1",
        "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "CumSum", "Exp", "Log", "Pow", "Sqrt", "Reciprocal",
        "Erf", "Softplus",
    }
)  # fmt: skip
# Ops whose output type is set by the node itself, not by its inputs.
_FIXED_TYPE_OPS = frozenset(
    {
        "Cast", "Constant", "ConstantOfShape", "Shape", "Size", "EyeLike", "RandomNormal", "RandomUniform",
        "RandomNormalLike", "RandomUniformLike",
    }
)  # fmt: skip
# Float inputs that are not the op's data type and must keep their own type (ONNX operator schemas).
_NON_DATA_INPUTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2}),  # roi, scales (scales is float32 only)
    "Upsample": frozenset({1}),
}
# Already-quantized graphs are typed by their quantizer; rewriting their float parts is not ours to do.
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_FP16_MAX = float(np.finfo(np.float16).max)


def has_explicit_quantization(model: Any) -> bool:
    """True when an ``onnx.ModelProto`` carries Q/DQ nodes (explicit quantization, INT8 in TensorRT)."""
    return any(n.op_type in _QDQ_OPS for n in model.graph.node)


def mixed_fp16_onnx(model: Any) -> Any:
    """A copy of an fp32 ONNX graph typed for a strongly typed fp16 TensorRT engine.

    Typing rules (:data:`MIXED_FP16_POLICY`), applied node by node in graph order:

    * ``Conv`` / ``ConvTranspose`` compute in fp16: their inputs are cast to fp16, their weights and biases
      stored as fp16 initializers.
    * Softmax, the Reduce* ops, Exp/Log/Pow/Sqrt ... compute in fp32 (cast up where needed).
    * Every other op computes in the widest type among its non-constant float inputs (fp32 if any is
      fp32, else fp16), like torch's type promotion under autocast. Constants and initializers adopt that
      type (an fp16 copy where needed) instead of forcing fp32, so e.g. ``x * 0.1`` on fp16 ``x`` stays fp16.
    * Graph inputs and outputs stay fp32 (a Cast is appended to an output that would end up fp16).

    On GC-Net this gives fp16 for the feature tower, the cost volume and every 3-D conv (``Pad`` / ``Slice``
    / ``Concat`` between convs follow their fp16 inputs), and fp32 for the input normalisation, the soft
    arg-min (it starts at a Softmax), the bilinear upsampling of its result and the refinement's residual
    sum (``disparity + delta``: fp32 + fp16 promotes to fp32). One difference to the torch model under
    autocast: there ``delta`` is widened right after the refinement's last conv, here after scaling it
    by ``0.1 * max_disparity`` (one more fp16 rounding of a residual, ~1e-3 relative).

    Args:
        model: an ``onnx.ModelProto`` (not modified), or a path to one.

    Raises:
        ValueError: the graph has control-flow subgraphs or local functions, is already quantized (Q/DQ),
            or has a float32 constant that does not fit fp16.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    model = onnx.ModelProto.FromString(model.SerializeToString())  # deep copy
    graph = model.graph
    if model.functions:
        raise ValueError("mixed_fp16_onnx: the graph has local functions; inline them first")
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(
                f"mixed_fp16_onnx: {node.op_type} node {node.name!r} has a subgraph (unsupported)"
            )
    if has_explicit_quantization(model):
        raise ValueError(
            "mixed_fp16_onnx: the graph is already quantized (Q/DQ); its quantizer sets the types"
        )

    f32, f16 = TensorProto.FLOAT, TensorProto.FLOAT16
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    dtype: dict[str, int] = {}
    for v in (*inferred.input, *inferred.value_info, *inferred.output):
        dtype[v.name] = v.type.tensor_type.elem_type
    initializers = {t.name: t for t in graph.initializer}
    for name, t in initializers.items():
        dtype[name] = t.data_type
    weak = set(initializers)  # constants adopt the type of the data they meet
    taken = set(dtype) | {n.name for n in graph.node}
    new_nodes: list[Any] = []
    new_initializers: list[Any] = []
    converted: dict[tuple[str, int], str] = {}  # (tensor, type) -> the name of its copy / cast

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        return name

    def as_type(name: str, to: int) -> str:
        """``name`` as a tensor of type ``to``: an fp16 copy of an initializer, or a Cast node."""
        key = (name, to)
        if key in converted:
            return converted[key]
        if name in initializers and to == f16 and dtype[name] == f32:
            values = numpy_helper.to_array(initializers[name])
            finite = np.isfinite(values)
            if np.any(np.abs(values[finite]) > _FP16_MAX):
                raise ValueError(f"mixed_fp16_onnx: initializer {name!r} has values beyond fp16's range")
            out = fresh(f"{name}_fp16")
            new_initializers.append(numpy_helper.from_array(values.astype(np.float16), out))
        else:
            out = fresh(f"{name}_{'fp16' if to == f16 else 'fp32'}")
            new_nodes.append(helper.make_node("Cast", [name], [out], name=fresh(f"cast_{out}"), to=to))
        dtype[out] = to
        if name in weak:
            weak.add(out)
        converted[key] = out
        return out

    for node in graph.node:
        op = node.op_type
        floats = [
            i for i, name in enumerate(node.input)
            if name and dtype.get(name) in (f32, f16) and i not in _NON_DATA_INPUTS.get(op, frozenset())
        ]  # fmt: skip
        all_weak = all(name in weak for name in node.input if name)
        if op in _FIXED_TYPE_OPS or not floats:
            new_nodes.append(node)
            if all_weak:
                weak.update(node.output)
            continue
        if op in _FP16_OPS:
            target = f16
        elif op in _FP32_OPS:
            target = f32
        else:
            strong = {dtype[node.input[i]] for i in floats if node.input[i] not in weak}
            if not strong:  # constants only: nothing to decide, keep the exported types
                new_nodes.append(node)
                weak.update(node.output)
                continue
            target = f32 if f32 in strong else f16
        for i in floats:
            if dtype[node.input[i]] != target:
                node.input[i] = as_type(node.input[i], target)
        new_nodes.append(node)
        for name in node.output:
            if name and dtype.get(name) in (f32, f16):
                dtype[name] = target

    # Graph outputs keep their declared (fp32) type: the published disparity is never fp16.
    for out in graph.output:
        want = out.type.tensor_type.elem_type
        if out.name in dtype and dtype[out.name] != want:
            inner = fresh(f"{out.name}_{'fp16' if dtype[out.name] == f16 else 'fp32'}")
            for n in new_nodes:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if i == out.name else i for i in n.input]
            new_nodes.append(
                helper.make_node("Cast", [inner], [out.name], name=fresh(f"cast_{out.name}"), to=want)
            )
    used = {i for n in new_nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    dropped = set(initializers) - {t.name for t in kept}
    if dropped:  # old-style graphs also list initializers as inputs
        inputs = [v for v in graph.input if v.name not in dropped]
        del graph.input[:]
        graph.input.extend(inputs)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend([*kept, *(t for t in new_initializers if t.name in used)])
    del graph.value_info[:]  # stale types; the checker below and every consumer infer them again
    props = {p.key: p.value for p in model.metadata_props}
    props["scene_perception.precision"] = MIXED_FP16_POLICY
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model, full_check=True)
    return model


# ------------------------------------------------------------------------------------------------ build
def _typed_graph(onnx_path: Path, precision: str, calibration: Sequence[Any] | None) -> Any:
    """The ONNX graph TensorRT should parse for ``precision`` (pure: no TensorRT needed, so testable)."""
    import onnx

    if not onnx_path.is_file():
        raise EngineError(f"ONNX graph {onnx_path} does not exist")
    model = onnx.load(str(onnx_path))
    quantized = has_explicit_quantization(model)
    if precision == "int8":
        if not quantized:
            raise ValueError(
                f"INT8 needs an explicitly quantized graph, and {onnx_path} has no QuantizeLinear/"
                "DequantizeLinear nodes: TensorRT deprecated implicit INT8 calibration in 10.1 and "
                "removed it (BuilderFlag.INT8, int8_calibrator) in 11.0. Quantize the exported graph "
                "with Q/DQ first (e.g. NVIDIA ModelOpt's ONNX PTQ, calibration pairs written by "
                "save_calibration_npz) and build that graph; or use fp16, the recommended precision for "
                "GC-Net (docs/backends.md)"
            )
        if calibration:
            _LOG.warning(
                "INT8 from a Q/DQ graph: its scales come from the graph; the %d calibration pairs are unused",
                len(calibration),
            )
        return model
    if quantized:
        raise ValueError(f"{onnx_path} is explicitly quantized (Q/DQ nodes): build it with int8=True")
    return mixed_fp16_onnx(model) if precision == "fp16" else model


def _network_flags(trt: Any) -> int:
    """``create_network`` flags for a strongly typed network on this TensorRT major.

    10.x: strong typing is opt-in through ``STRONGLY_TYPED`` (without it the network is weakly typed
    and an fp16 graph's casts would merely be hints). 11.x: every network is strongly typed and the flag is
    deprecated ("retained for API compatibility but ignored"), so none is passed.
    """
    if tensorrt_major(str(trt.__version__)) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_serialized_engine(
    onnx_path: str | Path,
    output_path: str | Path,
    *,
    fp16: bool = True,
    int8: bool = False,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    workspace_mb: int = 4096,
    device: str = "cuda:0",
) -> dict[str, Any]:
    """Parse ``onnx_path`` into a strongly typed network and write a serialized engine to ``output_path``.

    ``onnx_path`` is the exported fp32 graph. ``fp16`` builds from :func:`mixed_fp16_onnx` of it; neither
    flag builds it as is (fp32); ``int8`` requires a graph that already carries Q/DQ nodes and builds it
    as is (``fp16`` is then ignored: the quantizer chose the non-quantized layers' type). ``calibration``
    is accepted for the CLI's sake and unused: calibration belongs to the quantizer now.

    Returns build metadata (TensorRT version, typing, GPU, precision, I/O shapes) for the cache's JSON.

    Raises:
        ValueError: ``int8`` without Q/DQ nodes (the message explains the removed implicit calibration),
            or a Q/DQ graph without ``int8``; raised before TensorRT is touched, so on every machine.
        BackendUnavailable: no tensorrt, an unsupported TensorRT major, or no CUDA.
        EngineError: the parser rejects the graph (every parser error is listed), the build fails, or
            the network's inputs/outputs are not fp32.
    """
    onnx_path, output_path = Path(onnx_path), Path(output_path)
    precision = "int8" if int8 else ("fp16" if fp16 else "fp32")
    graph = _typed_graph(onnx_path, precision, calibration)
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"cannot build a TensorRT engine: {reason}")
    trt = _import_tensorrt()
    dev = torch.device(device)
    logger = trt.Logger(trt.Logger.WARNING)
    flags = _network_flags(trt)
    with torch.cuda.device(dev):
        builder = trt.Builder(logger)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        # ``path`` only resolves external weights; the exporter writes none, but a user's graph may.
        if not parser.parse(graph.SerializeToString(), str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineError(f"TensorRT's ONNX parser rejected {onnx_path}: " + " | ".join(errors))
        io_tensors = [network.get_input(i) for i in range(network.num_inputs)] + [
            network.get_output(i) for i in range(network.num_outputs)
        ]
        for t in io_tensors:
            shape = tuple(t.shape)
            if any(d < 0 for d in shape):
                raise EngineError(
                    f"{onnx_path} tensor {t.name} has dynamic shape {shape}; export one graph per resolution"
                )
            if t.dtype != trt.float32:
                raise EngineError(
                    f"{onnx_path} tensor {t.name} is {t.dtype}, not float32: the engine's inputs and the "
                    "published disparity must stay fp32"
                )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        # No precision flags: in a strongly typed network the graph's types are the precision (and the
        # FP16/INT8 flags no longer exist in 11.x).
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(
                f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)"
            )
        output_path.parent.mkdir(parents=True, exist_ok=True)
        output_path.write_bytes(bytes(serialized))
    io = {t.name: list(t.shape) for t in io_tensors}
    return {
        "tensorrt_version": str(trt.__version__),
        "typing": "strong",
        "network_flags": int(flags),
        "graph": engine_key_extra(precision),
        "gpu_name": gpu_name(device),
        "precision": precision,
        "fp16": precision == "fp16",
        "int8": precision == "int8",
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
