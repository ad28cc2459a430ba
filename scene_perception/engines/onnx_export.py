"""Export a GC-Net to ONNX at one static input size, and prove the graph is deployable.

Why static shapes: TensorRT (and ONNX Runtime's graph optimiser) generate far better kernels for known
shapes, and a GC-Net's cost volume has a data-independent but size-dependent layout. Every camera
resolution therefore gets its own graph (the engine cache keys on the shape).

Why check the graph after export: a graph that ONNX Runtime runs may still fail in TensorRT's ONNX parser
hours later on the robot. :func:`check_onnx` fails early instead: ``onnx.checker`` with full shape
inference, every graph input/output fully static, and every node an operator that TensorRT's ONNX parser
documents as supported, with the attribute values we rely on.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scene_perception.engines.base import INPUT_NAMES, OUTPUT_NAMES, EngineError

__all__ = [
    "DEFAULT_OPSET",
    "META_PREFIX",
    "TENSORRT_SUPPORTED_OPS",
    "OnnxCheckReport",
    "OnnxExportError",
    "check_onnx",
    "export_onnx",
    "padded_size",
    "read_onnx_metadata",
]

_LOG = logging.getLogger(__name__)

#: Opset of the exported graphs. 18 is the lowest torch 2.13's exporter emits natively (asking for 17
#: triggers a version conversion that fails on Pad); TensorRT 10.0+ parses opsets 9-20 (onnx-tensorrt
#: docs/operators.md for 10.x), so TensorRT 8.x (opset <= 17) is not a target.
DEFAULT_OPSET = 18

#: Keys of our entries in the ONNX ``metadata_props`` (the runtime needs them without the torch model).
META_PREFIX = "scene_perception."

# ONNX operators TensorRT's ONNX parser supports, from the "Operator Support Matrix" of onnx-tensorrt's
# docs/operators.md (every op below is "Y" without a data-dependent restriction since TensorRT 8.4 and
# stays so in the 10.x matrix; ops with extra conditions, e.g. Range, Einsum, are left out). Deliberately the
# subset a conv / cost-volume stereo network can plausibly produce, not the whole matrix: a new op showing
# up in our export is a reason to look at the matrix (and its restrictions) again, not to pass silently.
# Restrictions that matter to us are checked in _check_node_attributes: Conv/ConvTranspose 2-D or 3-D
# only with initializer weights; Resize modes nearest/linear with a supported coordinate transformation;
# Pad modes constant/reflect/edge.
TENSORRT_SUPPORTED_OPS: frozenset[str] = frozenset(
    {
        "Abs", "Add", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip",
        "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Elu", "Equal",
        "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "Gemm", "GlobalAveragePool",
        "GlobalMaxPool", "Greater", "Identity", "InstanceNormalization", "LeakyRelu", "Less", "Log",
        "LogSoftmax", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Pad", "Pow", "PRelu",
        "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape", "Resize",
        "Shape", "Sigmoid", "Slice", "Softmax", "Softplus", "Split", "Sqrt", "Squeeze", "Sub", "Sum",
        "Tanh", "Tile", "Transpose", "Unsqueeze", "Where",
    }
)  # fmt: skip

# Resize attribute values TensorRT documents as supported.
_TRT_RESIZE_MODES = frozenset({"nearest", "linear"})
_TRT_RESIZE_COORDS = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)
_TRT_PAD_MODES = frozenset({"constant", "reflect", "edge"})


class OnnxExportError(EngineError):
    """Export failed, or the exported graph is not static / not TensorRT-compatible."""


@dataclass
class OnnxCheckReport:
    """What :func:`check_onnx` found; ``problems`` empty means deployable."""

    path: Path
    opset: int
    inputs: dict[str, tuple[int | str, ...]]
    outputs: dict[str, tuple[int | str, ...]]
    op_counts: dict[str, int]
    metadata: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        io_text = ", ".join(f"{k}{list(v)}" for k, v in {**self.inputs, **self.outputs}.items())
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.op_counts.items()))
        status = "OK: static shapes, TensorRT-supported ops" if self.ok else "; ".join(self.problems)
        return f"{self.path} (opset {self.opset}): {io_text}\n  ops: {ops}\n  {status}"


def padded_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``divisor``: the size the pipeline's replicate padding produces."""
    return height + (-height) % divisor, width + (-width) % divisor


def _dims(value_info: Any) -> tuple[int | str, ...]:
    """Dims of an ``onnx.ValueInfoProto``: ints for static axes, the symbolic name (or "?") otherwise."""
    out: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return tuple(out)


def _attr(node: Any, name: str, default: Any) -> Any:
    """Attribute ``name`` of an ``onnx.NodeProto`` (bytes decoded), or ``default`` when absent."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _check_node_attributes(node: Any, initializers: set[str], ranks: dict[str, int]) -> list[str]:
    """TensorRT restrictions on the ops we use (onnx-tensorrt operators.md, 'Restrictions' column)."""
    problems = []
    where = f"{node.op_type} node {node.name!r}"
    if node.op_type in ("Conv", "ConvTranspose"):
        if len(node.input) < 2 or node.input[1] not in initializers:
            problems.append(f"{where}: weights must be an initializer for TensorRT")
        rank = ranks.get(node.input[0])
        if rank is not None and rank not in (4, 5):
            problems.append(f"{where}: TensorRT supports 2-D or 3-D convolutions only (input rank {rank})")
    elif node.op_type == "Resize":
        mode = _attr(node, "mode", "nearest")
        coords = _attr(node, "coordinate_transformation_mode", "half_pixel")
        if mode not in _TRT_RESIZE_MODES:
            problems.append(f"{where}: mode {mode!r} unsupported by TensorRT ({sorted(_TRT_RESIZE_MODES)})")
        if coords not in _TRT_RESIZE_COORDS:
            problems.append(f"{where}: coordinate_transformation_mode {coords!r} unsupported by TensorRT")
        if _attr(node, "antialias", 0):
            problems.append(f"{where}: antialias is not supported by TensorRT")
    elif node.op_type == "Pad":
        mode = _attr(node, "mode", "constant")
        if mode not in _TRT_PAD_MODES:
            problems.append(f"{where}: pad mode {mode!r} unsupported by TensorRT ({sorted(_TRT_PAD_MODES)})")
    return problems


def check_onnx(
    path: str | Path, *, supported_ops: frozenset[str] = TENSORRT_SUPPORTED_OPS
) -> OnnxCheckReport:
    """Validate an ONNX file: checker (with shape inference), static I/O dims, TensorRT-supported ops.

    Returns a report; ``report.problems`` lists every violation (the caller decides whether to raise).

    Raises:
        OnnxExportError: the file is missing, unreadable, or fails ``onnx.checker``.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxExportError(f"ONNX file {path} does not exist")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError, DecodeError, InferenceError ...
        raise OnnxExportError(
            f"ONNX file {path} is not a valid ONNX model (corrupt or truncated?): {exc}"
        ) from exc

    graph = inferred.graph
    initializers = {t.name for t in graph.initializer}
    inputs = {v.name: _dims(v) for v in graph.input if v.name not in initializers}
    outputs = {v.name: _dims(v) for v in graph.output}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.input, *graph.value_info)}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = OnnxCheckReport(
        path=path,
        opset=int(opset),
        inputs=inputs,
        outputs=outputs,
        op_counts=dict(Counter(n.op_type for n in graph.node)),
        metadata={p.key: p.value for p in model.metadata_props},
    )
    for kind, tensors in (("input", inputs), ("output", outputs)):
        for name, dims in tensors.items():
            if not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
                report.problems.append(f"graph {kind} {name!r} has a non-static shape {list(dims)}")
    if model.functions:
        report.problems.append(
            f"graph contains local functions {[f.name for f in model.functions]} (not inlined for TensorRT)"
        )
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            report.problems.append(f"{node.op_type} node {node.name!r} is in custom domain {node.domain!r}")
        elif node.op_type not in supported_ops:
            report.problems.append(
                f"{node.op_type} node {node.name!r} is not in the TensorRT-supported op list"
            )
        else:
            report.problems.extend(_check_node_attributes(node, initializers, ranks))
    if not 9 <= report.opset <= 20:
        report.problems.append(f"opset {report.opset} is outside TensorRT 10's supported range 9-20")
    return report


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """Our ``scene_perception.*`` metadata entries (prefix stripped) of an exported graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def export_onnx(
    model: nn.Module,
    path: str | Path,
    height: int,
    width: int,
    *,
    model_sha256: str | None = None,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
) -> OnnxCheckReport:
    """Export ``model`` for (1,3,``height``,``width``) inputs to ``path`` and validate it.

    ``height``/``width`` must be multiples of ``model.size_divisor`` (use :func:`padded_size`). The graph
    gets metadata (config, size_divisor, max_disparity, model sha256) so ONNX Runtime / TensorRT users
    can pad and label outputs without the torch model. The file is written to a temporary name and
    renamed, so a crash never leaves a half-written graph where a cache would find it.

    Raises:
        OnnxExportError: bad size, exporter failure, or (with ``check``) a graph that is not static or
            uses an op TensorRT does not support.
    """
    import onnx

    div = int(getattr(model, "size_divisor", 1))
    if height <= 0 or width <= 0 or height % div or width % div:
        ph, pw = padded_size(max(height, 1), max(width, 1), div)
        raise OnnxExportError(
            f"export size {width}x{height} must be positive multiples of size_divisor={div} "
            f"(the pipeline pads to {pw}x{ph})"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Export a float32 CPU copy: the caller's model may live on a GPU or in fp16, and torch.export must
    # not leave traces on the caller's module.
    export_model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    example = tuple(torch.rand(1, 3, height, width, generator=gen) for _ in INPUT_NAMES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    noisy = [
        logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "torch._dynamo")
    ]
    levels = [lg.level for lg in noisy]
    try:
        for lg in noisy:
            lg.setLevel(logging.ERROR)
        # The exporter narrates progress on stdout and warns about unrelated torchvision ops; neither
        # belongs in a node's log or the CLI's output.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                export_model,
                example,
                str(tmp),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        onnx_model = onnx.load(str(tmp))
        config = getattr(model, "config", None)
        meta = {
            "config": getattr(config, "name", type(model).__name__),
            "size_divisor": str(div),
            "max_disparity": str(getattr(model, "max_disparity", "")),
            "input_hw": f"{height}x{width}",
            "model_sha256": model_sha256 or "",
            "torch_version": torch.__version__,
        }
        del onnx_model.metadata_props[:]
        for k, v in meta.items():
            onnx_model.metadata_props.add(key=META_PREFIX + k, value=v)
        onnx.save(onnx_model, str(tmp))
        os.replace(tmp, path)
    except OnnxExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter raises many unrelated error types
        raise OnnxExportError(
            f"ONNX export of {type(model).__name__} at {width}x{height} failed: {exc}"
        ) from exc
    finally:
        for lg, level in zip(noisy, levels, strict=True):
            lg.setLevel(level)
        tmp.unlink(missing_ok=True)

    report = check_onnx(path)
    if check and not report.ok:
        raise OnnxExportError(f"exported graph {path} is not deployable: " + "; ".join(report.problems))
    _LOG.debug("exported %s", report.summary())
    return report
