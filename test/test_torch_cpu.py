"""The CPU rewrite (BN folding, oneDNN 3-D convs, sub-pixel transposed conv) computes the same model."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from scene_perception.engines.torch_cpu import SubPixelDeconv3d, onednn_available, optimize_for_cpu
from scene_perception.engines.torch_engine import TorchEngine
from scene_perception.models.gcnet import GCNet, full_soft_argmin


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine terms, so folding them is actually exercised."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 4, 3, 5, 7), (2, 3, 4, 4, 6)])
def test_subpixel_deconv_equals_transposed_conv(bias: bool, shape: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    deconv = nn.ConvTranspose3d(shape[1], 5, 3, stride=2, padding=1, output_padding=1, bias=bias)
    x = torch.randn(*shape)
    sub = SubPixelDeconv3d(deconv)
    with torch.inference_mode():
        want = deconv(x)
        got = sub(x)
    assert got.shape == want.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3], 2 * shape[4])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_subpixel_refuses_other_transposed_convs() -> None:
    with pytest.raises(ValueError, match="stride 2"):
        SubPixelDeconv3d(nn.ConvTranspose3d(2, 2, 4, stride=2, padding=1))


@pytest.mark.parametrize("config", ["lite", pytest.param("paper", marks=pytest.mark.slow)])
def test_rewritten_gcnet_matches_eager(config: str) -> None:
    torch.manual_seed(0)
    model = GCNet(config).eval()
    _randomise_batchnorm(model)
    fast, stats = optimize_for_cpu(model)
    assert stats["batchnorm_folded"] > 10
    if onednn_available():
        assert stats["conv3d_rewritten"] >= 5
    left_bn = [m for m in fast.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d))]
    # Every GC-Net BN sits in a Sequential after its conv; only lite's refinement blocks keep theirs.
    assert len(left_bn) == (len(model.config.refine_dilations) if config == "lite" else 0)
    d = model.size_divisor
    left = torch.rand(1, 3, 2 * d, 3 * d)
    right = torch.roll(left, -5, dims=3)
    with torch.inference_mode():
        want = model(left, right)
        got = fast(left, right)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=2e-3)
    # The original is untouched (the rewrite works on a copy).
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.modules())


def test_torch_engine_uses_rewrite_and_can_opt_out() -> None:
    model = GCNet("lite").eval()
    _randomise_batchnorm(model, seed=3)
    fast = TorchEngine(model)
    slow = TorchEngine(model, cpu_rewrite=False)
    assert fast.cpu_rewrite and "oneDNN" in fast.describe()
    assert not slow.cpu_rewrite and "oneDNN" not in slow.describe()
    assert fast.model is model  # exports and parity references keep the original module
    x = torch.rand(1, 3, 64, 128).numpy()
    feeds = {"left": x, "right": x[..., ::-1].copy()}
    a, b = fast.infer(feeds), slow.infer(feeds)
    for k in a:
        assert abs(a[k] - b[k]).max() < 2e-3


def test_rewrite_is_kept_for_a_windowed_model() -> None:
    """The load-time check compares the plain soft arg-min (a near-tie may flip a windowed mode), so a
    model with a regression window still gets the fast copy, and the copy keeps the window."""
    from dataclasses import replace

    model = GCNet(replace(GCNet("lite").config, regression_window=2)).eval()
    _randomise_batchnorm(model, seed=4)
    engine = TorchEngine(model)
    assert engine.cpu_rewrite and model.config.regression_window == 2
    x = torch.rand(1, 3, 64, 128).numpy()
    feeds = {"left": x, "right": np.roll(x, -4, axis=3).copy()}
    got = engine.infer(feeds)["disparity"]
    want = TorchEngine(model, cpu_rewrite=False).infer(feeds)["disparity"]
    assert float(np.mean(np.abs(got - want) < 2e-3)) > 0.99  # identical but for rare near-ties


def test_torch_engine_falls_back_when_rewrite_disagrees(caplog: pytest.LogCaptureFixture) -> None:
    class Strict(TorchEngine):
        REWRITE_TOLERANCE_PX = -1.0  # nothing can pass: the engine must keep the original model

    with caplog.at_level(logging.WARNING):
        engine = Strict(GCNet("lite").eval())
    assert not engine.cpu_rewrite
    assert "disagrees with the original" in caplog.text


def test_engine_runs_a_copy_and_leaves_the_callers_model_alone() -> None:
    """The engine folds BatchNorm, rewrites convs and sets eval mode on its own copy: a training loop (or a
    parity reference) holding the module must find it exactly as it was."""
    model = GCNet("lite")
    _randomise_batchnorm(model, seed=2)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = TorchEngine(model)
    assert engine.cpu_rewrite and engine.model is model and engine.runner is not model
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())


def test_channels_last_and_bf16_keep_an_fp32_disparity() -> None:
    """The CUDA engine's layout (channels-last, set on its copy) and autocast, exercised on CPU: same
    network, and the soft arg-min and refinement residual stay fp32 under bf16 autocast."""
    model = GCNet("lite").eval()
    _randomise_batchnorm(model, seed=5)
    x = torch.rand(1, 3, 32, 64)
    feeds = {"left": x, "right": torch.roll(x, -3, dims=3)}
    nhwc = TorchEngine(model, channels_last=True)
    assert not nhwc.cpu_rewrite and nhwc.runner.inference_channels_last and not model.inference_channels_last
    with full_soft_argmin(nhwc.runner):
        got = nhwc.infer(feeds)
    with full_soft_argmin(model):
        want = TorchEngine(model, cpu_rewrite=False).infer(feeds)
    assert float((got["disparity"] - want["disparity"]).abs().max()) < 2e-3
    bf16 = TorchEngine(model, precision="bf16").infer(feeds)
    assert bf16["disparity"].dtype == torch.float32 and bf16["log_scale"].dtype == torch.float32
    assert torch.isfinite(bf16["disparity"]).all()
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        TorchEngine(model, cuda_graphs=True)
