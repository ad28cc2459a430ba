"""TensorRT backend, strongly typed (TensorRT 10.x + 11.x): the parts that can be checked without a GPU.

TensorRT 11 removed ``BuilderFlag.FP16`` / ``INT8`` and implicit calibration, so the engine's precision
now lives in the ONNX graph it parses (engines/tensorrt_engine.py). That graph is checked here on every
machine, with ONNX Runtime on CPU:

* **fp16 graph vs fp32 graph, shipped ``models/lite.safetensors``** with its card's config (regression
  window 2), procedural pairs seeds 1-6 at 64x128, per pair: median |disparity diff| <= 0.01 px, at
  most 2.5 % of pixels off by > 0.25 px, median |log_scale diff| <= 0.01, end-point error against the
  ground truth not worse by more than 0.03 px, and over the six pairs changed by <= 0.03 px either way;
  outputs float32. Checked for the rewritten graph as ONNX Runtime runs it and for
  :func:`fp16_storage_emulation` of it (every fp16 tensor rounded). Measured worst (emulation; the plain
  graph is closer), v10 weights: 0.0062 px, 1.9 %, EPE +0.0027 px per pair, 0.012 px pooled. Per pair the
  EPE may move more in the *good* direction: on seed 5 a near-tie region flipped to the right mode and EPE
  fell 6.029 -> 5.960 px (v8 weights moved it by 0.0097 px at most). No bound on the maximum,
  on purpose: where the cost volume is ambiguous (seeds 4-6: the window's mode at a near-tie, or two
  modes of similar mass) fp16's rounding legitimately moves a few pixels by 0.5-4 px (the reason
  ``models/gcnet.py``'s ``full_soft_argmin`` exists); seeds 1-3 stay within 0.06 px everywhere.
  TensorRT may also accumulate in fp16 inside a kernel (tactic-dependent), which nothing here
  reproduces, so the GPU test below uses the looser bar of test_engines.py (0.5 px max against fp32,
  on seeds 1-3).
* The typing rules on tiny graphs, the version checks, the INT8 refusal, the cache-key tag and the
  calibration ``.npz`` writer.

Tests that need tensorrt and a CUDA GPU skip with ``UNVERIFIED_REASON`` elsewhere; nothing here fakes
TensorRT. No ROS imports (test_engines.py holds the node-level TensorRT test).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.engines.base import BackendUnavailable
from scene_perception.engines.onnx_export import check_onnx, export_onnx, read_onnx_metadata
from scene_perception.engines.select import BackendChoice, create_engine
from scene_perception.engines.tensorrt_engine import (
    MIXED_FP16_POLICY,
    SUPPORTED_TENSORRT_MAJORS,
    UNVERIFIED_REASON,
    TensorRTEngine,
    build_serialized_engine,
    engine_key_extra,
    has_explicit_quantization,
    load_calibration_pairs,
    mixed_fp16_onnx,
    save_calibration_npz,
    tensorrt_major,
    tensorrt_unavailable_reason,
    tensorrt_version,
    unsupported_version_reason,
)
from scene_perception.models.gcnet import GCNet
from scene_perception.models.weights import load_stereo_model

ort = pytest.importorskip("onnxruntime")

SHIPPED_LITE = Path(__file__).resolve().parents[1] / "models" / "lite.safetensors"
H, W = 64, 128  # a multiple of lite's size_divisor (16)
SEEDS = tuple(range(1, 7))  # 5 and 6 have ambiguous regions where fp16 moves the soft arg-min (see top)
FP16_TOL = {
    "disparity_median": 0.01,
    "disparity_over_025": 0.025,
    "log_scale_median": 0.01,
    "epe_increase": 0.03,
}
POOLED_EPE_CHANGE = 0.03
TRT_MISSING = tensorrt_unavailable_reason()
needs_trt = pytest.mark.skipif(TRT_MISSING is not None, reason=UNVERIFIED_REASON)
F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


# --------------------------------------------------------------------------------------------- helpers
def _session(model: Path | onnx.ModelProto, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the CI machine's 2 cores are shared
    options.inter_op_num_threads = 1
    if not optimize:  # keep every Cast: they are the fp16 roundings being emulated
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def fp16_storage_emulation(mixed: onnx.ModelProto) -> onnx.ModelProto:
    """An fp32 graph that rounds every fp16 tensor of ``mixed`` to fp16 (``Cast`` to fp16 and back).

    Why: ONNX Runtime's CPU provider has no fp16 conv kernels here; it runs the fp16 region of ``mixed``
    in fp32 and drops most roundings in between (on lite 9 Casts survive its optimiser, for 141 fp16
    tensors), which checks little beyond fp16 *weights*. This graph makes every tensor TensorRT would
    hold in fp16 pass through fp16, with the same fp16-rounded weights. What stays TensorRT's own is the
    accumulation inside a kernel (and its tactic choice), hence the separate GPU test.
    """
    model = onnx.ModelProto.FromString(mixed.SerializeToString())
    graph = model.graph
    types = _types(model)
    for t in graph.initializer:
        if t.data_type == F16:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    nodes = []
    for node in graph.node:
        outs = [o for o in node.output if o and types.get(o) == F16]
        if node.op_type == "Cast" and outs:  # a cast to fp16 becomes fp32 here; the rounding follows
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = F32
        raw = {o: f"{o}__raw" for o in outs}
        node.output[:] = [raw.get(o, o) for o in node.output]
        nodes.append(node)
        for o in outs:
            nodes.append(helper.make_node("Cast", [raw[o]], [f"{o}__fp16"], to=F16))
            nodes.append(helper.make_node("Cast", [f"{o}__fp16"], [o], to=F32))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor (inputs, initializers, intermediates, outputs)."""
    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.value_info, *graph.output)}
    return types | {t.name: t.data_type for t in graph.initializer}


def _pair(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    sample = make_stereo_sample(seed, width=W, height=H, max_disparity=40.0)
    feeds = {
        name: np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255)
        for name, img in (("left", sample.left), ("right", sample.right))
    }
    return feeds, sample.disparity


def _tiny_conv_graph(tail: str = "mul") -> onnx.ModelProto:
    """x(fp32) -> Conv -> [Mul by a constant] -> y, plus a Softmax branch -> z."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(2, np.float32), "b"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])]
    if tail == "mul":
        nodes.append(helper.make_node("Mul", ["c", "half"], ["y"]))
    else:  # the conv's output is the graph output itself
        nodes[0].output[0] = "y"
    nodes.append(helper.make_node("Softmax", ["y"], ["z"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", F32, [1, 1, 4, 4])],
        [
            helper.make_tensor_value_info("y", F32, [1, 2, 4, 4]),
            helper.make_tensor_value_info("z", F32, [1, 2, 4, 4]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _qdq_graph() -> onnx.ModelProto:
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", F32, [1, 4])],
        [helper.make_tensor_value_info("y", F32, [1, 4])],
        [scale],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def shipped_graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shipped lite model exported at HxW (fp32), and its mixed-fp16 rewrite."""
    assert SHIPPED_LITE.is_file(), f"{SHIPPED_LITE} is shipped with the repository"
    model, info = load_stereo_model("lite", SHIPPED_LITE)
    assert info.trained
    out = tmp_path_factory.mktemp("trt_graphs")
    fp32 = out / "lite_fp32.onnx"
    export_onnx(model, fp32, H, W, model_sha256=info.sha256)
    fp16 = out / "lite_fp16.onnx"
    onnx.save(mixed_fp16_onnx(onnx.load(str(fp32))), str(fp16))
    return fp32, fp16


# ----------------------------------------------------------------------------------- fp16 graph (GC-Net)
@pytest.mark.slow
def test_mixed_fp16_graph_types_convs_fp16_soft_argmin_and_io_fp32(shipped_graphs) -> None:
    fp32, fp16 = shipped_graphs
    report = check_onnx(fp16)  # still static and inside TensorRT's op set (Cast is in it)
    assert report.ok, report.problems
    model = onnx.load(str(fp16))
    types = _types(model)
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == 27  # 25 Conv + 2 ConvTranspose in lite
    for node in convs:
        assert {types[i] for i in node.input if i} == {F16}, node.name
        assert types[node.output[0]] == F16
    for node in model.graph.node:
        if node.op_type in ("Softmax", "ReduceSum", "Resize"):  # soft arg-min and its upsampling
            assert types[node.output[0]] == F32, (node.op_type, node.name)
    for v in (*model.graph.input, *model.graph.output):
        assert v.type.tensor_type.elem_type == F32, v.name
    assert read_onnx_metadata(fp16)["precision"] == MIXED_FP16_POLICY
    assert read_onnx_metadata(fp16)["model_sha256"] == read_onnx_metadata(fp32)["model_sha256"]


@pytest.mark.slow
def test_mixed_fp16_graph_matches_fp32_graph_on_shipped_lite(shipped_graphs) -> None:
    fp32, fp16 = shipped_graphs
    reference = _session(fp32)
    as_built = _session(fp16)  # the graph TensorRT parses: runs, float32 outputs
    emulated = _session(fp16_storage_emulation(onnx.load(str(fp16))), optimize=False)
    names = ["disparity", "log_scale"]
    epe: dict[str, list[float]] = {"fp32": [], "as_built": [], "emulated": []}
    for seed in SEEDS:
        feeds, gt = _pair(seed)
        want = dict(zip(names, reference.run(names, feeds), strict=True))
        epe["fp32"].append(float(np.abs(want["disparity"][0, 0] - gt).mean()))
        for kind, session in (("as_built", as_built), ("emulated", emulated)):
            got = dict(zip(names, session.run(names, feeds), strict=True))
            epe[kind].append(float(np.abs(got["disparity"][0, 0] - gt).mean()))
            for name in names:
                assert got[name].dtype == np.float32 and got[name].shape == (1, 1, H, W), name
            diff = np.abs(got["disparity"] - want["disparity"])
            stats = {
                "disparity_median": float(np.median(diff)),
                "disparity_over_025": float((diff > 0.25).mean()),
                "log_scale_median": float(np.median(np.abs(got["log_scale"] - want["log_scale"]))),
                "epe_increase": epe[kind][-1] - epe["fp32"][-1],
            }
            for key, value in stats.items():
                assert value <= FP16_TOL[key], (seed, kind, key, value)
    for kind in ("as_built", "emulated"):
        change = abs(float(np.mean(epe[kind]) - np.mean(epe["fp32"])))
        assert change <= POOLED_EPE_CHANGE, (kind, change)


# ----------------------------------------------------------------------------------- typing rules (tiny)
def test_constants_adopt_fp16_and_fp16_outputs_are_cast_back() -> None:
    for tail in ("mul", "conv"):
        src = _tiny_conv_graph(tail)
        model = mixed_fp16_onnx(src)
        types = _types(model)
        assert [o.name for o in model.graph.output] == ["y", "z"]
        assert all(o.type.tensor_type.elem_type == F32 for o in model.graph.output)
        assert types["z"] == F32 and types["x"] == F32
        by_op = {n.op_type: n for n in model.graph.node}
        assert types[by_op["Conv"].output[0]] == F16
        if tail == "mul":  # x * 0.5 on an fp16 tensor stays fp16: the constant adopts its type
            assert types[by_op["Mul"].output[0]] == F16
            assert not any(i == "half" for i in by_op["Mul"].input)
        # the source graph is not modified
        assert all(t.data_type == F32 for t in src.graph.initializer)
        x = np.random.default_rng(1).standard_normal((1, 1, 4, 4)).astype(np.float32)
        want = _run(src, x)
        got = _run(model, x)
        for a, b in zip(got, want, strict=True):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, atol=1e-2, rtol=1e-2)


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_mixed_fp16_refuses_quantized_graphs_and_subgraphs() -> None:
    qdq = _qdq_graph()
    assert has_explicit_quantization(qdq) and not has_explicit_quantization(_tiny_conv_graph())
    with pytest.raises(ValueError, match="Q/DQ"):
        mixed_fp16_onnx(qdq)
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [
        helper.make_tensor_value_info("t", F32, [1])])  # fmt: skip
    cond = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)
    graph = helper.make_graph(
        [cond],
        "if",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", F32, [1]),
        ],
        [helper.make_tensor_value_info("y", F32, [1])],
    )
    with pytest.raises(ValueError, match="subgraph"):
        mixed_fp16_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


# -------------------------------------------------------------------------------- versions / key / int8
def test_version_detection_is_explicit() -> None:
    assert tensorrt_major("10.3.0") == 10 and tensorrt_major("11.1.0.106") == 11
    with pytest.raises(ValueError):
        tensorrt_major("")
    assert SUPPORTED_TENSORRT_MAJORS == (10, 11)
    for ok in ("10.0.1", "10.16.1", "11.0.0", "11.4.1"):
        assert unsupported_version_reason(ok) is None, ok
    for old in ("8.6.1", "9.3.0"):
        reason = unsupported_version_reason(old)
        assert reason is not None and old in reason and "not targeted" in reason
    reason = unsupported_version_reason("12.0.0")
    assert reason is not None and "not been checked" in reason
    assert unsupported_version_reason("nonsense") is not None
    if TRT_MISSING is not None and tensorrt_version() == "":
        assert "not installed" in TRT_MISSING


def test_engine_cache_key_names_strong_typing_and_fp16_policy() -> None:
    fp16, fp32 = engine_key_extra("fp16"), engine_key_extra("fp32")
    assert "typing=strong" in fp16 and MIXED_FP16_POLICY in fp16
    assert "typing=strong" in fp32 and fp16 != fp32
    assert engine_key_extra("int8", "abc").endswith("calibration=abc")
    with pytest.raises(ValueError):
        engine_key_extra("bf16")


def test_int8_needs_an_explicitly_quantized_graph(tmp_path: Path) -> None:
    """Refused before TensorRT is imported, so the message is the same on every machine."""
    plain = tmp_path / "plain.onnx"
    onnx.save(_tiny_conv_graph(), str(plain))
    with pytest.raises(ValueError, match=r"removed it .*in 11\.0") as info:
        build_serialized_engine(plain, tmp_path / "x.engine", int8=True)
    assert "QuantizeLinear" in str(info.value) and "save_calibration_npz" in str(info.value)
    qdq = tmp_path / "qdq.onnx"
    onnx.save(_qdq_graph(), str(qdq))
    with pytest.raises(ValueError, match="int8=True"):
        build_serialized_engine(qdq, tmp_path / "x.engine", fp16=True)
    if TRT_MISSING is not None:  # a Q/DQ graph passes the checks and reaches the TensorRT requirement
        with pytest.raises(BackendUnavailable):
            build_serialized_engine(qdq, tmp_path / "x.engine", int8=True)
    assert not (tmp_path / "x.engine").exists()


def test_create_engine_refuses_tensorrt_int8_up_front(tmp_path: Path) -> None:
    choice = BackendChoice("tensorrt", "cuda:0", "int8", "tensorrt", "test")
    with pytest.raises(ValueError, match="Q/DQ"):
        create_engine(choice, GCNet("lite"), model_sha256="x", cache_dir=tmp_path, input_hw=(H, W))
    assert not any(tmp_path.iterdir()), "nothing is exported or built for a refused precision"


def test_calibration_pairs_to_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for side in ("left", "right"):
        (tmp_path / "pairs" / side).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(
                str(tmp_path / "pairs" / side / f"{i}.png"), rng.integers(0, 256, (40, 60, 3), np.uint8)
            )
    batches = load_calibration_pairs(tmp_path / "pairs", 32, 48)
    path = save_calibration_npz(batches, tmp_path / "calib")  # no ".npz" appended behind our back
    assert path == tmp_path / "calib" and path.is_file()
    with np.load(path) as data:
        assert sorted(data.files) == ["left", "right"]
        assert data["left"].shape == (3, 3, 32, 48) and data["left"].dtype == np.float32
        np.testing.assert_array_equal(data["right"][1:2], batches[1]["right"])
    with pytest.raises(ValueError):
        save_calibration_npz([], tmp_path / "empty.npz")


# ---------------------------------------------------------------------------------- GPU (skipped here)
@pytest.mark.slow
@needs_trt
def test_strongly_typed_fp16_engine_on_shipped_lite(shipped_graphs, tmp_path: Path) -> None:
    fp32, _ = shipped_graphs
    assert unsupported_version_reason(tensorrt_version()) is None
    meta = build_serialized_engine(fp32, tmp_path / "lite.engine", fp16=True)
    assert meta["typing"] == "strong" and meta["precision"] == "fp16"
    engine = TensorRTEngine(tmp_path / "lite.engine")
    assert all(spec.dtype == "float32" for spec in (*engine.inputs, *engine.outputs))
    reference = _session(fp32)
    for seed in SEEDS[:3]:  # well-posed pairs: a max bound means something there (module docstring)
        feeds, _ = _pair(seed)
        want = reference.run(["disparity"], feeds)[0]
        got = engine.infer(feeds)["disparity"]
        assert got.dtype == np.float32
        assert float(np.abs(got - want).max()) < 0.5  # fp16 accumulation: the bar of test_engines.py
        cuda = engine.infer({k: torch.from_numpy(v).cuda() for k, v in feeds.items()})
        assert cuda["disparity"].is_cuda and cuda["disparity"].dtype == torch.float32
    engine.close()
