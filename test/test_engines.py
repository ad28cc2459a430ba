"""Inference engines: ONNX export checks, ORT-vs-torch parity, the verified cache, backend choice, the node.

Tolerances (ONNX Runtime CPU vs torch eager, float32, same weights and inputs), stated once here:

* lite:  |disparity diff| <= 1e-3 px and |log_scale diff| <= 1e-3 (measured max ~3e-4 / ~4e-5);
* paper: |disparity diff| <= 2e-2 px (0.01 % of its 192 px range) and |log_scale diff| <= 2e-2
  (measured max ~5e-3 / ~4e-3: the 96-level softmax over 3-D features sums more float32 terms, in a
  different order after ONNX Runtime's conv fusions).

Batch-norm statistics and the aleatoric head are randomised before export, so the parity also covers BN
folding and a non-constant log-scale (a fresh model's log-scale head is zero, which would test nothing).

TensorRT / CUDA tests run only where tensorrt and a GPU exist; elsewhere they are skipped with the reason
"requires tensorrt + CUDA GPU (unverified on this machine)". Nothing here fakes a GPU.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rosutil import RosHarness, make_camera, shifted_pair, stereo_messages
from test_stereo_depth_node import Driver, send
from torch import nn

from scene_perception.engines.base import (
    BackendUnavailable,
    EngineError,
    EngineLoadError,
    PerResolutionEngine,
)
from scene_perception.engines.cache import (
    EngineCache,
    EngineKey,
    file_sha256,
    model_digest,
    prepare_cache_dir,
)
from scene_perception.engines.onnx_export import (
    TENSORRT_SUPPORTED_OPS,
    OnnxExportError,
    check_onnx,
    export_onnx,
    read_onnx_metadata,
)
from scene_perception.engines.ort_engine import OnnxRuntimeEngine
from scene_perception.engines.select import (
    CPU_FALLBACK_DEFAULT,
    ENV_CPU_BACKEND,
    Probe,
    choose_backend,
    create_engine,
    resolve_device,
)
from scene_perception.engines.tensorrt_engine import (
    UNVERIFIED_REASON,
    load_calibration_pairs,
    tensorrt_unavailable_reason,
)
from scene_perception.engines.torch_engine import TorchEngine
from scene_perception.models.gcnet import GCNet
from scene_perception.models.weights import load_stereo_model, save_stereo_model
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline
from scene_perception.ros.codec import image_to_numpy
from scene_perception.ros.stereo_depth_node import StereoDepthNode

LITE_TOL = {"disparity": 1e-3, "log_scale": 1e-3}
PAPER_TOL = {"disparity": 2e-2, "log_scale": 2e-2}
H, W = 48, 96  # the node test's frame size; a multiple of lite's size_divisor (16), so no padding
CLI = [sys.executable, "-m", "scene_perception.cli"]

TRT_MISSING = tensorrt_unavailable_reason()
needs_trt = pytest.mark.skipif(TRT_MISSING is not None, reason=UNVERIFIED_REASON)
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="requires a CUDA GPU (unverified on this machine)"
)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics and a live log-scale head (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        head = model.head  # type: ignore[attr-defined]
        head.weight.add_(torch.randn(head.weight.shape, generator=g) * 0.05)
    return model.eval()


def stereo_feeds(h: int, w: int, shift: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    """(1,3,H,W) float32 pair where right(x) = left(x + shift)."""
    rng = np.random.default_rng(seed)
    base = rng.random((1, 3, h, w + shift), dtype=np.float32)
    return {"left": base[..., :w].copy(), "right": base[..., shift : shift + w].copy()}


def assert_parity(got: dict, want: dict, tol: dict[str, float]) -> None:
    for name, atol in tol.items():
        a, b = np.asarray(got[name]), np.asarray(want[name])
        assert a.shape == b.shape and a.dtype == np.float32, (name, a.shape, b.shape, a.dtype)
        diff = float(np.abs(a - b).max())
        assert diff <= atol, f"{name}: max |ORT - torch| = {diff:.2e} > {atol:.0e}"


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def lite_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file (so the cache key is the file's sha256, shared by node, CLI and in-process tests)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "lite_engines.safetensors"
    save_stereo_model(randomize(GCNet("lite"), 0), path, {"trained": False})
    return path


@pytest.fixture(scope="module")
def lite(lite_weights: Path) -> tuple[nn.Module, str]:
    model, info = load_stereo_model("lite", lite_weights)
    return model, model_digest(model, info.sha256)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine_cache")


@pytest.fixture(scope="module")
def lite_ort(lite, cache_dir: Path) -> OnnxRuntimeEngine:
    """The lite graph at HxW, exported once through the cache (the node and CLI tests reuse it)."""
    model, digest = lite
    choice = choose_backend("onnxruntime", "cpu")
    engine = create_engine(choice, model, model_sha256=digest, cache_dir=cache_dir, input_hw=(H, W))
    assert isinstance(engine, OnnxRuntimeEngine)
    return engine


# ------------------------------------------------------------------------------------------- ONNX export
@pytest.mark.slow
def test_exported_graph_is_static_and_uses_only_tensorrt_ops(lite_ort: OnnxRuntimeEngine) -> None:
    report = check_onnx(lite_ort.path)
    assert report.ok, report.problems
    assert set(report.inputs) == {"left", "right"} and set(report.outputs) == {"disparity", "log_scale"}
    for dims in (*report.inputs.values(), *report.outputs.values()):
        assert all(isinstance(d, int) and d > 0 for d in dims), dims
    assert report.inputs["left"] == (1, 3, H, W) and report.outputs["disparity"] == (1, 1, H, W)
    assert set(report.op_counts) <= TENSORRT_SUPPORTED_OPS, set(report.op_counts) - TENSORRT_SUPPORTED_OPS
    assert {"Conv", "ConvTranspose", "Softmax"} <= set(report.op_counts)  # a real 3-D cost-volume network
    meta = read_onnx_metadata(lite_ort.path)
    assert meta["config"] == "lite" and meta["size_divisor"] == "16" and meta["input_hw"] == f"{H}x{W}"
    assert lite_ort.size_divisor == 16 and lite_ort.max_disparity == 128  # read back from the graph


def _tiny_graph(path: Path, op: str, dim: int | str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim])
    node = helper.make_node(op, ["x"], ["y"])
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)]
    )
    onnx.save(model, str(path))


def test_check_onnx_flags_dynamic_shapes_unsupported_ops_and_corrupt_files(tmp_path: Path) -> None:
    ok = tmp_path / "ok.onnx"
    _tiny_graph(ok, "Relu", 4)
    assert check_onnx(ok).ok
    dynamic = tmp_path / "dyn.onnx"
    _tiny_graph(dynamic, "Relu", "N")
    assert any("non-static shape" in p for p in check_onnx(dynamic).problems)
    unsupported = tmp_path / "hardmax.onnx"
    _tiny_graph(unsupported, "Hardmax", 4)  # "N" in TensorRT's ONNX operator matrix
    assert any("Hardmax" in p and "TensorRT" in p for p in check_onnx(unsupported).problems)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(OnnxExportError, match="corrupt"):
        check_onnx(corrupt)


def test_export_rejects_sizes_that_are_not_multiples_of_size_divisor(lite, tmp_path: Path) -> None:
    with pytest.raises(OnnxExportError, match="size_divisor=16.*pads to 112x64"):
        export_onnx(lite[0], tmp_path / "x.onnx", 61, 97)


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.slow
def test_ort_matches_torch_lite(lite, lite_ort: OnnxRuntimeEngine) -> None:
    model, _ = lite
    feeds = stereo_feeds(H, W, seed=1)
    want = TorchEngine(model).infer(feeds)
    got = lite_ort.infer(feeds)
    assert_parity(got, want, LITE_TOL)
    assert float(np.std(want["log_scale"])) > 0.01, (
        "log-scale head must be live for the parity to mean anything"
    )
    # torch tensors in -> torch tensors out, same values
    as_torch = lite_ort.infer({k: torch.from_numpy(v) for k, v in feeds.items()})
    assert isinstance(as_torch["disparity"], torch.Tensor)
    np.testing.assert_array_equal(as_torch["disparity"].numpy(), got["disparity"])


@pytest.mark.slow
def test_ort_matches_torch_paper_tiny(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = randomize(GCNet("paper"), 1)
    report = export_onnx(model, tmp_path / "paper.onnx", 64, 64)
    assert report.ok and set(report.op_counts) <= TENSORRT_SUPPORTED_OPS
    feeds = stereo_feeds(64, 64, seed=2)
    with OnnxRuntimeEngine(tmp_path / "paper.onnx", num_threads=2) as engine:
        assert_parity(engine.infer(feeds), TorchEngine(model).infer(feeds), PAPER_TOL)


@pytest.mark.slow
def test_ort_matches_torch_with_a_regression_window(lite, tmp_path: Path) -> None:
    """The windowed soft arg-min (ArgMax + mask) exports, stays inside TensorRT's op set and matches."""
    model = GCNet(replace(lite[0].config, regression_window=2)).eval()
    model.load_state_dict(lite[0].state_dict())
    report = export_onnx(model, tmp_path / "windowed.onnx", H, W)
    assert report.ok and "ArgMax" in report.op_counts
    assert set(report.op_counts) <= TENSORRT_SUPPORTED_OPS
    feeds = stereo_feeds(H, W, seed=1)
    heads: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda _m, _i, out: heads.append(out.detach()))
    want = TorchEngine(model, cpu_rewrite=False).infer(feeds)
    hook.remove()
    # Precondition: no pixel's two best modes are a rounding error apart, where either implementation
    # could legitimately pick either (see full_soft_argmin); then the outputs must agree everywhere.
    top2 = torch.softmax(-heads[0][:, 0], dim=1).topk(2, dim=1).values
    assert float((top2[:, 0] - top2[:, 1]).min()) > 1e-4
    with OnnxRuntimeEngine(tmp_path / "windowed.onnx", num_threads=2) as engine:
        assert_parity(engine.infer(feeds), want, LITE_TOL)
    plain = TorchEngine(lite[0], cpu_rewrite=False).infer(feeds)
    assert float(np.abs(plain["disparity"] - want["disparity"]).max()) > 0.1  # the window changed something


@pytest.mark.slow
def test_pipeline_with_engine_matches_pipeline_with_module(lite, cache_dir: Path) -> None:
    """Odd frame sizes are padded, the per-resolution engine is built on demand and rebuilt on a change."""
    model, digest = lite
    engine = create_engine(
        choose_backend("onnxruntime", "cpu"), model, model_sha256=digest, cache_dir=cache_dir
    )
    assert isinstance(engine, PerResolutionEngine)
    pipe, ref = StereoDepthPipeline(engine), StereoDepthPipeline(model)
    for size in ((45, 90), (45, 90), (33, 70)):  # 45x90 pads to 48x96 (cached already), 33x70 -> 48x80
        left, right = shifted_pair(*size, 5, seed=3)
        got, want = pipe(left, right), ref(left, right)
        assert got.disparity.shape == size
        np.testing.assert_allclose(got.disparity, want.disparity, atol=LITE_TOL["disparity"])
        np.testing.assert_array_equal(got.valid, want.valid)
    assert engine.builds == 2, "one engine per padded size; a repeated size must not rebuild"


# ------------------------------------------------------------------------------------------------ cache
def test_cache_key_changes_with_each_field(tmp_path: Path) -> None:
    base = EngineKey("abc", (1, 3, 48, 96), "fp16", "NVIDIA H100", "10.3.0", "tensorrt", 18, "")
    cache = EngineCache(tmp_path)
    changed = {
        "model_sha256": "abd",
        "input_shape": (1, 3, 48, 112),
        "precision": "fp32",
        "gpu_name": "Orin",
        "tensorrt_version": "10.4.0",
        "artifact": "onnx",
        "opset": 17,
        "extra": "calib",
    }
    assert set(changed) == {f.name for f in fields(EngineKey)}, "every key field must be covered"
    paths = {cache.path_for(base)}
    for name, value in changed.items():
        other = replace(base, **{name: value})
        assert other.digest() != base.digest(), name
        paths.add(cache.path_for(other))
        assert any(name in d for d in base.differences(other))
    assert len(paths) == len(changed) + 1


def test_model_digest_separates_random_inits_and_follows_the_weights_file() -> None:
    torch.manual_seed(0)
    a = GCNet("lite")
    torch.manual_seed(1)
    b = GCNet("lite")
    assert model_digest(a) != model_digest(b)
    assert model_digest(a) == model_digest(a)
    # A weights file's sha256, plus the config: the card can change the graph with the same weights.
    assert model_digest(a, "ABC").startswith("abc+config:")
    assert model_digest(a, "ABC") == model_digest(b, "abc")  # same file, same config
    a.config = replace(a.config, regression_window=2)
    assert model_digest(a, "ABC") != model_digest(b, "abc")


def test_cache_rebuilds_corrupt_stale_unverifiable_and_unloadable_artifacts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Generic get-or-build with a trivial artifact, so every failure mode is cheap to exercise."""
    cache = EngineCache(tmp_path)
    key = EngineKey("w", (1, 3, 16, 16), "fp32")
    builds: list[Path] = []

    def build(p: Path) -> dict:
        builds.append(p)
        p.write_bytes(b"artifact v1")
        return {"note": "test"}

    def load(p: Path) -> bytes:
        data = p.read_bytes()
        if not data.startswith(b"artifact"):
            raise ValueError("runtime refuses this file")
        return data

    caplog.set_level(logging.INFO, logger="scene_perception.engines")
    obj, path = cache.get_or_build(key, build, load, label="t")
    assert obj == b"artifact v1" and len(builds) == 1
    meta = json.loads(cache.metadata_path(path).read_text())
    assert meta["artifact_sha256"] == file_sha256(path) and meta["key"]["model_sha256"] == "w"
    cache.get_or_build(key, build, load, label="t")
    assert len(builds) == 1 and "sha256 verified" in caplog.text

    def rebuilt_because(fragment: str) -> None:
        n = len(builds)
        caplog.clear()
        assert cache.get_or_build(key, build, load, label="t")[0] == b"artifact v1"
        assert len(builds) == n + 1, f"expected a rebuild ({fragment})"
        assert fragment in caplog.text and "rebuilding" in caplog.text, caplog.text
        assert any(r.levelno == logging.WARNING for r in caplog.records)

    path.write_bytes(b"artifact v1 but truncated or overwritten")
    rebuilt_because("corrupt")
    meta = json.loads(cache.metadata_path(path).read_text())
    meta["key"]["tensorrt_version"] = "9.0"
    cache.metadata_path(path).write_text(json.dumps(meta))
    rebuilt_because("stale")
    cache.metadata_path(path).unlink()
    rebuilt_because("unverifiable")
    # A file whose recorded sha256 matches but that the runtime refuses: still rebuilt, never trusted.
    path.write_bytes(b"garbage")
    cache.write_metadata(key, path)
    rebuilt_because("failed to load")


@pytest.mark.slow
def test_corrupt_cached_onnx_is_reexported(lite, cache_dir: Path, tmp_path: Path, caplog) -> None:
    model, digest = lite
    shutil.copytree(cache_dir, tmp_path / "c")
    [onnx_file] = sorted((tmp_path / "c").glob(f"lite_{H}x{W}_fp32_*.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])  # truncated copy
    caplog.set_level(logging.INFO, logger="scene_perception.engines")
    engine = create_engine(
        choose_backend("onnxruntime", "cpu"),
        model,
        model_sha256=digest,
        cache_dir=tmp_path / "c",
        input_hw=(H, W),
    )
    assert "corrupt" in caplog.text and "rebuilding" in caplog.text
    assert "built ONNX graph" in caplog.text
    assert check_onnx(engine.path).ok
    feeds = stereo_feeds(H, W, seed=4)
    assert_parity(engine.infer(feeds), TorchEngine(model).infer(feeds), LITE_TOL)


def test_onnxruntime_reports_a_corrupt_onnx_file_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(EngineLoadError, match=r"bad\.onnx.*corrupt"):
        OnnxRuntimeEngine(bad)
    with pytest.raises(EngineLoadError, match="does not exist"):
        OnnxRuntimeEngine(tmp_path / "missing.onnx")


def test_prepare_cache_dir_validates(tmp_path: Path) -> None:
    assert prepare_cache_dir(tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        prepare_cache_dir(blocker)
    with pytest.raises(ValueError, match="empty"):
        prepare_cache_dir("  ")


# -------------------------------------------------------------------------------------------- selection
def _probe(**available: bool) -> Probe:
    def r(name: str) -> str | None:
        return None if available.get(name) else f"{name} unavailable (test)"

    return Probe(
        r("cuda"), "Test GPU" if available.get("cuda") else "", r("tensorrt"), r("ort"), r("ort_cuda"), None
    )


def test_auto_on_this_machine_picks_the_documented_cpu_backend(caplog, monkeypatch) -> None:
    if torch.cuda.is_available() or TRT_MISSING is None:
        pytest.skip("this machine has a GPU backend; the CPU-fallback expectation does not apply")
    monkeypatch.delenv(ENV_CPU_BACKEND, raising=False)
    caplog.set_level(logging.INFO, logger="scene_perception.engines")
    choice = choose_backend("auto", "auto")
    assert (choice.backend, choice.device, choice.precision) == (CPU_FALLBACK_DEFAULT, "cpu", "fp32")
    assert set(choice.skipped) == {"tensorrt-cuda", "onnxruntime-cuda", "torch-cuda"}
    assert "tensorrt" in choice.skipped["tensorrt-cuda"]
    assert "CUDA" in choice.skipped["onnxruntime-cuda"] and "CUDA" in choice.skipped["torch-cuda"]
    log = caplog.text
    assert "backend onnxruntime on cpu" in log and "tensorrt" in log and "no CUDA device" in log
    # The documented override.
    monkeypatch.setenv(ENV_CPU_BACKEND, "torch")
    assert choose_backend("auto", "auto").backend == "torch"
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        choose_backend("tensorrt", "auto")


def test_auto_order_and_device_narrowing_with_probed_availability() -> None:
    everything = _probe(cuda=True, tensorrt=True, ort=True, ort_cuda=True)
    assert choose_backend("auto", probe_result=everything).backend == "tensorrt"
    no_trt = _probe(cuda=True, ort=True, ort_cuda=True)
    assert (
        choose_backend("auto", probe_result=no_trt).backend,
        choose_backend("auto", probe_result=no_trt).device,
    ) == (
        "onnxruntime",
        "cuda:0",
    )
    torch_cuda = choose_backend("auto", probe_result=_probe(cuda=True, ort=True))
    assert (torch_cuda.backend, torch_cuda.precision) == ("torch", "fp16")
    cpu = choose_backend("auto", "cpu", probe_result=everything, cpu_fallback="torch")
    assert (cpu.backend, cpu.device) == ("torch", "cpu") and "device=cpu" in cpu.describe()
    assert choose_backend("auto", "cuda:1", probe_result=everything).device == "cuda:1"
    no_ort = choose_backend("auto", probe_result=_probe())
    assert no_ort.backend == "torch" and "onnxruntime-cpu" in no_ort.skipped
    with pytest.raises(BackendUnavailable, match="device=cpu"):
        choose_backend("tensorrt", "cpu", probe_result=everything)
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend("openvino")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")


def test_per_resolution_engine_logs_switches_and_does_not_retry_failures(lite) -> None:
    model, _ = lite
    calls: list[tuple[int, int]] = []
    lines: list[str] = []

    def factory(hw: tuple[int, int]) -> TorchEngine:
        calls.append(hw)
        if hw == (64, 64):
            raise EngineError("simulated build failure")
        return TorchEngine(model, input_hw=hw)

    engine = PerResolutionEngine(
        factory, backend="x", device="cpu", precision="fp32", size_divisor=16, log=lines.append
    )
    engine.infer(stereo_feeds(32, 48))
    engine.infer(stereo_feeds(32, 48))
    engine.infer(stereo_feeds(48, 48))
    assert calls == [(32, 48), (48, 48)]
    assert any("first frame" in s for s in lines) and any("resolution changed" in s for s in lines)
    for _ in range(2):
        with pytest.raises(EngineError, match="simulated"):
            engine.infer(stereo_feeds(64, 64))
    assert calls.count((64, 64)) == 1
    with pytest.raises(ValueError, match="size_divisor"):
        engine.prepare((40, 48))


@pytest.mark.slow
def test_static_engine_names_a_size_mismatch(lite_ort: OnnxRuntimeEngine) -> None:
    with pytest.raises(ValueError, match="static shapes"):
        lite_ort.prepare((64, 96))
    assert len(lite_ort.warmup(1)) == 1


# ---------------------------------------------------------------------------------------- calibration
def test_calibration_pairs_both_layouts(tmp_path: Path) -> None:
    left, right = shifted_pair(30, 40, 3, seed=5)
    flat = tmp_path / "flat"
    flat.mkdir()
    cv2.imwrite(str(flat / "left01.png"), left)
    cv2.imwrite(str(flat / "right01.png"), right)
    cv2.imwrite(str(flat / "left02.png"), left)  # no partner: ignored
    nested = tmp_path / "nested"
    (nested / "left").mkdir(parents=True)
    (nested / "right").mkdir()
    for i in range(3):
        cv2.imwrite(str(nested / "left" / f"{i}.png"), left)
        cv2.imwrite(str(nested / "right" / f"{i}.png"), right)
    assert len(load_calibration_pairs(flat, 32, 48)) == 1
    batches = load_calibration_pairs(nested, 32, 48, limit=2)
    assert len(batches) == 2
    b = batches[0]
    assert b["left"].shape == (1, 3, 32, 48) and b["left"].dtype == np.float32
    assert 0.0 <= b["right"].min() and b["right"].max() <= 1.0
    with pytest.raises(ValueError, match="no stereo pairs"):
        load_calibration_pairs(tmp_path / "flat" / "..", 32, 48)


# ----------------------------------------------------------------------------------------------- node
def _node(harness: RosHarness, weights: Path, cache: Path, backend: str, name: str) -> StereoDepthNode:
    return harness.add(
        StereoDepthNode(
            name,
            context=harness.context,
            parameter_overrides=[
                Parameter("weights", value=str(weights)),
                Parameter("backend", value=backend),
                Parameter("device", value="cpu"),
                Parameter("engine_cache_dir", value=str(cache)),
                Parameter("log_throttle_seconds", value=0.0),
                Parameter("input_depth", value=10),  # tests publish bursts and need every message
            ],
        )
    )


@pytest.mark.ros
def test_node_with_onnxruntime_matches_torch(lite_weights: Path, cache_dir: Path, lite_ort) -> None:
    harness = RosHarness()
    try:
        node = _node(harness, lite_weights, cache_dir, "onnxruntime", "stereo_depth")
        driver = harness.add(Driver(harness.context))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.backend_choice.backend == "onnxruntime"
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
        left, right = shifted_pair(H, W, 6, seed=1)
        camera = make_camera(W, H)
        assert send(harness, driver, stereo_messages(left, right, camera, 1_000_000_000), timeout=30)
        d = image_to_numpy(driver.got["disparity"][-1].image)
        model, _ = load_stereo_model("lite", lite_weights)
        offline = StereoDepthPipeline(model)(left, right, camera)
        valid = d > driver.got["disparity"][-1].min_disparity
        np.testing.assert_array_equal(valid, offline.valid)
        np.testing.assert_allclose(d[valid], offline.disparity[valid], atol=LITE_TOL["disparity"])
        depth = image_to_numpy(driver.got["depth"][-1])
        np.testing.assert_allclose(depth[valid], offline.depth[valid], rtol=1e-4)
        assert "onnxruntime on cpu" in node._backend_status()
    finally:
        harness.shutdown()


@pytest.mark.ros
def test_node_fails_configure_cleanly_for_unusable_backend_or_cache(
    lite_weights: Path, tmp_path: Path
) -> None:
    harness = RosHarness()
    try:
        blocker = tmp_path / "not_a_dir"
        blocker.write_text("x")
        node = _node(harness, lite_weights, blocker, "onnxruntime", "stereo_depth_badcache")
        assert node.trigger_configure() != TransitionCallbackReturn.SUCCESS
        assert node.pipeline is None and "not a directory" in node.health.last_error
        if TRT_MISSING is not None:
            node.set_parameters([Parameter("backend", value="tensorrt")])
            assert node.trigger_configure() != TransitionCallbackReturn.SUCCESS
            assert node.pipeline is None and "tensorrt" in node.health.last_error
        bad = node.set_parameters([Parameter("backend", value="openvino")])[0]
        assert not bad.successful and "backend" in bad.reason
    finally:
        harness.shutdown()


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_export_onnx_build_engine_and_depth_backends(
    lite_weights: Path, cache_dir: Path, tmp_path: Path, lite_ort
) -> None:
    out = tmp_path / "lite.onnx"
    proc = subprocess.run(
        [*CLI, "export-onnx", "--model", "lite", "--weights", str(lite_weights), "--height", "40",
         "--width", "90", "--output", str(out)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "padded to 96x48" in proc.stdout and "TensorRT-supported ops" in proc.stdout
    report = check_onnx(out)
    assert report.ok and report.inputs["left"] == (1, 3, 48, 96)

    proc = subprocess.run(
        [*CLI, "build-engine", "--onnx", str(out), "--fp16", "--output", str(tmp_path / "lite.engine")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if TRT_MISSING is not None:
        assert proc.returncode != 0
        assert "build-engine needs the tensorrt Python package and a CUDA GPU" in proc.stderr
        assert not (tmp_path / "lite.engine").exists()
    else:
        assert proc.returncode == 0, proc.stderr

    left, right = shifted_pair(H, W, 5, seed=7)
    cv2.imwrite(str(tmp_path / "l.png"), cv2.cvtColor(left, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "r.png"), cv2.cvtColor(right, cv2.COLOR_RGB2BGR))
    results = {}
    for backend in ("torch", "onnxruntime"):
        npy = tmp_path / f"{backend}.npy"
        proc = subprocess.run(
            [*CLI, "depth", "--left", str(tmp_path / "l.png"), "--right", str(tmp_path / "r.png"), "--output",
             str(npy), "--weights", str(lite_weights), "--backend", backend, "--device", "cpu",
             "--engine-cache-dir", str(cache_dir)],
            capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        results[backend] = np.load(npy)
    assert "using cached ONNX graph" in proc.stderr, "the CLI must reuse the graph the tests exported"
    np.testing.assert_allclose(results["onnxruntime"], results["torch"], atol=LITE_TOL["disparity"])


# ---------------------------------------------------------------------------------------- GPU (skipped)
@needs_trt
def test_tensorrt_fp16_engine_matches_torch_and_is_cached(lite, cache_dir: Path, caplog) -> None:
    model, digest = lite
    choice = choose_backend("tensorrt", "cuda:0")
    caplog.set_level(logging.INFO, logger="scene_perception.engines")
    engine = create_engine(choice, model, model_sha256=digest, cache_dir=cache_dir, input_hw=(H, W))
    feeds = stereo_feeds(H, W, seed=8)
    want = TorchEngine(model).infer(feeds)
    got = engine.infer(feeds)
    # FP16 accumulation over 32 hypotheses: sub-pixel agreement is the meaningful bar.
    assert float(np.abs(got["disparity"] - want["disparity"]).max()) < 0.5
    cuda_in = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    out = engine.infer(cuda_in)
    assert out["disparity"].is_cuda
    engine.close()
    caplog.clear()
    engine = create_engine(choice, model, model_sha256=digest, cache_dir=cache_dir, input_hw=(H, W))
    assert "using cached TensorRT engine" in caplog.text
    [plan] = sorted(cache_dir.glob(f"lite_{H}x{W}_fp16_*.engine"))
    engine.close()
    plan.write_bytes(plan.read_bytes()[:1000])
    caplog.clear()
    engine = create_engine(choice, model, model_sha256=digest, cache_dir=cache_dir, input_hw=(H, W))
    assert "corrupt" in caplog.text and "rebuilding" in caplog.text
    engine.close()


@needs_cuda
def test_torch_cuda_fp16_close_to_fp32(lite) -> None:
    model, _ = lite
    feeds = stereo_feeds(H, W, seed=9)
    want = TorchEngine(model).infer(feeds)
    got = TorchEngine(model, device="cuda:0", precision="auto").infer(feeds)
    assert float(np.abs(got["disparity"] - want["disparity"]).max()) < 0.5
    model.to("cpu")
