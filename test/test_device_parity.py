"""The device-parity contract of test_cuda.py (``device_parity.py``) checked on a CPU: it passes a pipeline
whose only change is rounding (the box filter as ``avg_pool2d``, the CUDA branch of ``_box``) and fails one
whose ZNCC lost precision (box sums at TF32's 10-bit mantissa)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from device_parity import CHAOS, one_round, pipeline_parity_failures, round_parity_failures

import scene_perception.pipelines.local_refinement as lr
from scene_perception.data.procedural import StereoSample, make_stereo_sample
from scene_perception.engines.torch_engine import TorchEngine
from scene_perception.models.weights import load_stereo_model
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline, StereoDepthResult

H, W = 256, 320  # test_cuda.py's pair


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, StereoSample, StereoDepthResult, torch.Tensor]:
    lite, info = load_stereo_model("lite")
    assert info.trained
    sample = make_stereo_sample(4242, width=W, height=H)
    reference = StereoDepthPipeline(TorchEngine(lite))(sample.left, sample.right)
    start = StereoDepthPipeline(TorchEngine(lite), local_refinement=None)(sample.left, sample.right).disparity
    return lite, sample, reference, torch.from_numpy(start)[None, None]


def _with_box(monkeypatch: pytest.MonkeyPatch, box, setup) -> tuple[list[str], list[str], np.ndarray]:
    lite, sample, reference, start = setup
    left, right = image_to_tensor(sample.left), image_to_tensor(sample.right)
    want = one_round(left, right, start)
    monkeypatch.setattr(lr, "_box", box)
    other = StereoDepthPipeline(TorchEngine(lite))(sample.left, sample.right)
    got = one_round(left, right, start)
    return pipeline_parity_failures(reference, other, sample), round_parity_failures(want, got), \
        np.abs(other.disparity - reference.disparity)


def test_a_change_of_rounding_passes(monkeypatch: pytest.MonkeyPatch, setup) -> None:
    pipeline, round_, diff = _with_box(monkeypatch, CHAOS.pool_box, setup)
    assert pipeline == [] and round_ == []
    # ... although the old pixel-wise bound would have failed it: the reason the contract changed.
    valid = np.isfinite(diff)
    assert float((diff[valid] <= 0.05).mean()) < 0.99


def test_a_zncc_at_tf32_precision_fails(monkeypatch: pytest.MonkeyPatch, setup) -> None:
    pipeline, round_, _ = _with_box(monkeypatch, CHAOS.tf32_box, setup)
    assert len(pipeline) >= 2, pipeline
    assert round_, "one round at TF32 precision must already differ"


def test_rounding_chaos_benchmark_smoke(tmp_path) -> None:
    """``benchmarks/rounding_chaos.py`` on one pair: rounding moves the typical pixel by nothing, TF32 by
    tenths of a pixel."""
    import json

    out = tmp_path / "chaos.json"
    assert CHAOS.main(["--seeds", "4242", "--threads", "1", "--json", str(out)]) == 0
    rows = {r["change"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"avg_pool2d box", "network +-1e-4 px", "TF32 box"}
    assert rows["avg_pool2d box"]["median_px"] < 0.01 < rows["TF32 box"]["median_px"]
    share = "one_round_within_0.01_pct"
    assert rows["TF32 box"][share] < 95.0 < rows["avg_pool2d box"][share]
