"""The CUDA path: torch engine precisions, CUDA graphs, the whole stereo pipeline, MC dropout, training.

Collected everywhere, skipped without a CUDA device (with the reason). No ROS import: this module runs on the
GPU machine (``tools/gpu_run.sh``), which has torch + CUDA but no ROS and no ``rosbags``.

Tolerances, stated once (against the CPU fp32 engine on the shipped ``lite`` weights, a rendered 256x320
pair, the model as shipped, i.e. with its regression window):

* CUDA fp32: 99.9 % of pixels within :data:`FP32_PX` (float reassociation in cuDNN and folded BatchNorm;
  a pixel whose two best modes tie within rounding may legitimately choose the other mode, hence not 100 %).
* CUDA fp16 / bf16 (autocast convs, fp32 soft arg-min): mean |delta| <= :data:`MIXED_MEAN_PX` (the issue's
  goal) and 99 % of pixels within :data:`MIXED_P99_PX`.
* The whole pipeline (network + local refinement + validity + depth) on CUDA fp32 against CPU: the contract
  of ``device_parity.py`` (validity agrees on 99 %, EPE and bad-2 against the render's GT within 0.03 px and
  0.3 point, median |difference| <= 0.01 px), and one refinement round from the same start pixel by pixel
  (98 % within 0.01 px).  Not "99 % of pixels within 0.05 px" (the first H200 run: 84.7 %): the refinement is
  chaotic under rounding, and on a CPU the box filter summed in CUDA's order alone leaves 78-88 % there
  (``test_device_parity.py`` checks the contract on a CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from device_parity import one_round, pipeline_parity_failures, round_parity_failures

from scene_perception.data.procedural import StereoSample, make_stereo_sample
from scene_perception.engines.torch_engine import TorchEngine
from scene_perception.models.weights import load_stereo_model
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason="requires a CUDA GPU (tools/gpu_run.sh runs these)")

FP32_PX = 0.01
MIXED_MEAN_PX = 0.05
MIXED_P99_PX = 0.5
H, W = 256, 320


@pytest.fixture(scope="module")
def lite() -> torch.nn.Module:
    model, info = load_stereo_model("lite")
    assert info.trained, "the shipped lite weights must load"
    return model


@pytest.fixture(scope="module")
def sample() -> StereoSample:
    return make_stereo_sample(4242, width=W, height=H)


@pytest.fixture(scope="module")
def pair(sample: StereoSample) -> tuple[np.ndarray, np.ndarray]:
    return sample.left, sample.right


@pytest.fixture(scope="module")
def cpu_reference(lite: torch.nn.Module, pair: tuple[np.ndarray, np.ndarray]) -> dict[str, torch.Tensor]:
    feeds = {"left": image_to_tensor(pair[0], "cpu"), "right": image_to_tensor(pair[1], "cpu")}
    return TorchEngine(lite, cpu_rewrite=False).infer(feeds)


def _cuda_feeds(pair: tuple[np.ndarray, np.ndarray]) -> dict[str, torch.Tensor]:
    return {"left": image_to_tensor(pair[0], "cuda"), "right": image_to_tensor(pair[1], "cuda")}


def _abs_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.detach().cpu().float() - b.detach().cpu().float()).abs().flatten()


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_engine_matches_cpu_fp32(lite, pair, cpu_reference, precision: str) -> None:
    engine = TorchEngine(lite, device="cuda", precision=precision)
    out = engine.infer(_cuda_feeds(pair))
    assert out["disparity"].is_cuda and out["disparity"].dtype == torch.float32  # soft arg-min stays fp32
    diff = _abs_diff(out["disparity"], cpu_reference["disparity"])
    if precision == "fp32":
        assert float((diff <= FP32_PX).float().mean()) >= 0.999, f"max {float(diff.max()):.4f} px"
    else:
        assert float(diff.mean()) <= MIXED_MEAN_PX, f"{precision}: mean |delta| {float(diff.mean()):.4f} px"
        assert float(torch.quantile(diff, 0.99)) <= MIXED_P99_PX
    assert next(lite.parameters()).device.type == "cpu", "the caller's model must not be moved"


def test_engine_leaves_the_model_alone(lite) -> None:
    lite.train()
    try:
        before = {k: v.clone() for k, v in lite.state_dict().items()}
        engine = TorchEngine(lite, device="cuda", precision="fp16")
        assert engine.model is lite and engine.runner is not lite
        assert lite.training and all(p.device.type == "cpu" for p in lite.parameters())
        after = lite.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "BN folding must work on a copy"
    finally:
        lite.eval()


def test_cuda_graph_replay_equals_eager(lite) -> None:
    eager = TorchEngine(lite, device="cuda", precision="fp16")
    graphs = TorchEngine(lite, device="cuda", precision="fp16", cuda_graphs=True)
    for seed in (1, 2, 3):  # new inputs go through the graph's static buffers each time
        sample = make_stereo_sample(seed, width=W, height=H)
        feeds = _cuda_feeds((sample.left, sample.right))
        want, got = eager.infer(feeds), graphs.infer(feeds)
        for name in ("disparity", "log_scale"):
            assert float(_abs_diff(got[name], want[name]).max()) <= 1e-3, name
    small = make_stereo_sample(9, width=128, height=64)  # a new size captures a new graph
    got = graphs.infer(_cuda_feeds((small.left, small.right)))
    assert got["disparity"].shape == (1, 1, 64, 128)


def test_pipeline_on_cuda_matches_cpu(lite, sample, pair) -> None:
    import dataclasses

    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

    cpu = StereoDepthPipeline(lite)(pair[0], pair[1], sample.camera)
    # The same algorithm on both: a CPU pipeline offers the SGBM candidate by default, a GPU one only when
    # asked (``sgbm_on_accelerator``); without it the outputs differ by design, not by device.
    same = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, sgbm_on_accelerator=True)
    gpu_pipe = StereoDepthPipeline(TorchEngine(lite, device="cuda", precision="fp32"), local_refinement=same)
    gpu = gpu_pipe(pair[0], pair[1], sample.camera)
    assert gpu.inference_ms > 0 and gpu.refinement_ms > 0
    assert pipeline_parity_failures(cpu, gpu, sample) == []
    both = cpu.valid & gpu.valid
    np.testing.assert_allclose(gpu.depth[both], cpu.depth[both], rtol=0.02)
    assert gpu.points is not None and np.isnan(gpu.points[~gpu.valid]).all()
    # Mixed precision and CUDA graphs through the whole pipeline: same contract, close to fp32.
    # (bf16 moves the network by ~0.04 px on average; on a CPU, bf16 through the pipeline: 0.050 px mean.)
    fast = StereoDepthPipeline(TorchEngine(lite, device="cuda", precision="bf16", cuda_graphs=True),
                               local_refinement=same)
    res = fast(pair[0], pair[1], sample.camera)
    assert res.disparity.dtype == np.float32
    both = res.valid & gpu.valid
    assert float(np.mean(np.abs(res.disparity[both] - gpu.disparity[both]))) <= MIXED_MEAN_PX * 2


def test_one_refinement_round_on_cuda_matches_cpu(lite, pair) -> None:
    """One search round (no propagation, no candidate) from the CPU network's disparity: rounding alone
    separates the devices here, so nearly every pixel must agree (``device_parity.round_parity_failures``)."""
    start = StereoDepthPipeline(lite, local_refinement=None)(pair[0], pair[1]).disparity
    start_t = torch.from_numpy(start)[None, None]
    want = one_round(image_to_tensor(pair[0]), image_to_tensor(pair[1]), start_t)
    got = one_round(image_to_tensor(pair[0], "cuda"), image_to_tensor(pair[1], "cuda"), start_t.cuda())
    assert round_parity_failures(want, got) == []


def test_far_head_on_cuda_agrees_with_cpu() -> None:
    """The shipped far head on the CUDA pipeline (factory, torch fp32) flags the same sky as on the CPU."""
    from scene_perception.data.procedural import SceneConfig
    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    s = make_stereo_sample(4243, width=W, height=H, min_disparity=0.25,
                           scene=SceneConfig(sky_probability=1.0))
    results = []
    for device in ("cpu", "cuda"):
        setup = build_stereo_pipeline("lite", device=device, compute_points=False, far_probability=0.7)
        assert setup.far_head is not None, setup.far_note
        results.append(setup.pipeline(s.left, s.right))
    cpu, gpu = results
    assert cpu.far > 0.02 * H * W  # the pair shows sky and the head flags it
    assert abs(cpu.far - gpu.far) <= 0.01 * H * W
    assert float((cpu.valid == gpu.valid).mean()) >= 0.99


def test_two_pass_factor_on_cuda_agrees_with_cpu(lite, sample) -> None:
    """The per-frame two-pass std factor (view_agreement.py) on CUDA: the measure of the same tensors within
    0.5 % of the CPU's (avg_pool there, a depthwise conv here), and through the pipeline (SGBM candidate off
    on both, so both refine the same way) the same factor within 2 %."""
    import dataclasses

    from scene_perception.pipelines import view_agreement
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

    cfg = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, sgbm_candidate=False)
    disparity = torch.from_numpy(np.nan_to_num(sample.disparity, nan=0.0))[None, None].float()
    values = [view_agreement.measure("zncc", image_to_tensor(sample.left, dev),
                                     image_to_tensor(sample.right, dev), disparity.to(dev), cfg)
              for dev in ("cpu", "cuda")]
    assert values[1] == pytest.approx(values[0], rel=5e-3)
    factors = []
    for engine in (TorchEngine(lite, cpu_rewrite=False), TorchEngine(lite, device="cuda", precision="fp32")):
        pipe = StereoDepthPipeline(engine, local_refinement=cfg, max_disparity=192.0, compute_points=False)
        r = pipe(sample.left, sample.right)
        assert r.scale < 1 and np.isfinite(r.two_pass_measure)
        factors.append(r.two_pass_factor)
    assert factors[1] == pytest.approx(factors[0], rel=0.02)


def test_widened_range_on_cuda_with_graphs_matches_cpu(lite, sample) -> None:
    """extend_range on CUDA: the engine's copy widens to 192 px, its CUDA graph of the old range is dropped
    and captured again (a stale graph would replay the 128 px volume), and the disparity matches the CPU
    engine widened the same way."""
    from scene_perception.models.gcnet import full_soft_argmin

    feeds = {"left": image_to_tensor(sample.left, "cuda"), "right": image_to_tensor(sample.right, "cuda")}
    graphs = TorchEngine(lite, device="cuda", precision="fp32", cuda_graphs=True)
    cpu = TorchEngine(lite, cpu_rewrite=False)
    with full_soft_argmin(graphs.runner, cpu.runner):
        narrow = graphs.infer(feeds)["disparity"]
        graphs.set_max_disparity(192)
        cpu.set_max_disparity(192)
        wide = graphs.infer(feeds)["disparity"]
        want = cpu.infer({k: v.cpu() for k, v in feeds.items()})["disparity"]
    assert graphs.max_disparity == 192 and float(_abs_diff(wide, narrow).max()) > 0.0
    assert float((_abs_diff(wide, want) <= FP32_PX).float().mean()) >= 0.999


def test_one_pass_factor_on_cuda_agrees_with_cpu(lite, sample) -> None:
    """The default one-pass std factor (a frame refined once) on CUDA: the same factor within 2 % as on the
    CPU (SGBM candidate off on both, so both refine the same way)."""
    import dataclasses

    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

    cfg = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, sgbm_candidate=False)
    factors = []
    for engine in (TorchEngine(lite, cpu_rewrite=False), TorchEngine(lite, device="cuda", precision="fp32")):
        r = StereoDepthPipeline(engine, local_refinement=cfg, compute_points=False)(sample.left, sample.right)
        assert r.scale == 1.0 and np.isfinite(r.one_pass_measure)
        factors.append(r.one_pass_factor)
    assert factors[1] == pytest.approx(factors[0], rel=0.02)


def test_scene_mc_dropout_batched_on_cuda() -> None:
    from scene_perception.pipelines.scene import ScenePipeline

    sample = make_stereo_sample(77, width=W, height=H)
    det_cpu = ScenePipeline.from_weights(device="cpu")(sample.left)
    det_gpu = ScenePipeline.from_weights(device="cuda")(sample.left)
    assert float((det_cpu.labels == det_gpu.labels).mean()) >= 0.99
    mc = ScenePipeline.from_weights(device="cuda", mc_samples=32)(sample.left)
    assert mc.semantic_epistemic is not None and mc.depth_epistemic is not None
    assert np.isfinite(mc.semantic_epistemic).all() and (mc.semantic_epistemic >= 0).all()
    assert float((mc.labels == det_gpu.labels).mean()) >= 0.9  # dropout perturbs, it does not replace


def _training_helpers() -> object:
    sys.path.insert(0, str(Path(__file__).parent))
    import test_train_stereo

    return test_train_stereo


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_train_stereo_on_cuda_resumes_exactly(tmp_path: Path, amp: str) -> None:
    """20 steps straight vs 10 + resume 10 (tolerance: the measured run-to-run noise of CUDA's atomics,
    see ``run_train_and_resume``)."""
    _training_helpers().run_train_and_resume(tmp_path, device="cuda", amp=amp)


@pytest.mark.parametrize(("first", "second"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_checkpoint_resumes_across_devices(tmp_path: Path, first: str, second: str) -> None:
    _training_helpers().run_resume_across_devices(tmp_path, first, second)
