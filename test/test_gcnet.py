"""GC-Net model, its building blocks, ONNX export and the safetensors weight loader."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from scene_perception.models import weights as weights_mod
from scene_perception.models.gcnet import CONFIGS, GCNet, GCNetConfig, full_soft_argmin
from scene_perception.models.layers import concat_cost_volume, soft_argmin, soft_argmin_with_expectation
from scene_perception.models.weights import (
    ModelLoadError,
    load_stereo_model,
    save_stereo_model,
    stereo_config,
)


@pytest.fixture(scope="module")
def lite() -> GCNet:
    torch.manual_seed(0)
    model = GCNet("lite").eval()
    # Give the (zero-initialised) log-scale output random weights so its path is actually exercised.
    with torch.no_grad():
        model.head.weight[1].normal_(0.0, 0.05)
    return model


def _pair(h: int, w: int, b: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g), torch.rand(b, 3, h, w, generator=g)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- architecture
def test_configs_and_size_divisor() -> None:
    paper, lite_cfg = CONFIGS["paper"], CONFIGS["lite"]
    assert (paper.max_disparity, paper.feature_stride, paper.volume_levels) == (192, 2, 96)
    assert paper.size_divisor == 2 * 2**4 == 32
    assert (lite_cfg.max_disparity, lite_cfg.feature_stride, lite_cfg.volume_levels) == (128, 4, 32)
    assert lite_cfg.size_divisor == 4 * 2**2 == 16
    assert GCNetConfig.from_dict(lite_cfg.to_dict()) == lite_cfg
    with pytest.raises(ValueError, match="max_disparity"):
        GCNetConfig(name="bad", max_disparity=100)


def test_param_counts() -> None:
    # Table 1 of the paper gives ~2.8-2.9 M parameters (3x3x3 convs dominate).
    paper = GCNet("paper")
    assert 2.8e6 <= _n_params(paper) <= 2.9e6
    assert paper.max_disparity == 192 and paper.size_divisor == 32
    lite = GCNet("lite")
    assert 0.08e6 <= _n_params(lite) <= 0.13e6
    assert lite.max_disparity == 128 and lite.size_divisor == 16


def test_lite_forward_shapes(lite: GCNet) -> None:
    left, right = _pair(48, 80, b=2)
    with torch.inference_mode():
        disp, log_scale = lite(left, right)
    assert disp.shape == log_scale.shape == (2, 1, 48, 80)
    assert disp.dtype == log_scale.dtype == torch.float32
    assert torch.isfinite(disp).all() and torch.isfinite(log_scale).all()
    assert disp.min() >= 0 and disp.max() <= lite.max_disparity


def test_return_cost_gives_the_volume_before_the_soft_argmin(lite: GCNet) -> None:
    left, right = _pair(48, 80)
    with torch.inference_mode():
        disp, log_scale = lite(left, right)
        disp2, log_scale2, cost = lite(left, right, return_cost=True)
    s = lite.cost_stride
    assert cost.shape == (1, lite.max_disparity // s, 48 // s, 80 // s)
    torch.testing.assert_close(disp2, disp)
    torch.testing.assert_close(log_scale2, log_scale)


def test_paper_forward_tiny() -> None:
    torch.manual_seed(0)
    model = GCNet("paper").eval()
    left, right = _pair(64, 128)
    with torch.inference_mode():
        disp, log_scale = model(left, right)
    assert disp.shape == log_scale.shape == (1, 1, 64, 128)
    assert torch.isfinite(disp).all() and torch.isfinite(log_scale).all()
    assert disp.min() >= 0 and disp.max() <= 191


def test_rejects_unpadded_input(lite: GCNet) -> None:
    left, right = _pair(50, 80)
    with pytest.raises(ValueError, match="size_divisor"):
        lite(left, right)


def test_eval_is_deterministic(lite: GCNet) -> None:
    left, right = _pair(32, 64, seed=3)
    with torch.inference_mode():
        a = lite(left, right)
        b = lite(left, right)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_gradients_flow() -> None:
    torch.manual_seed(0)
    model = GCNet("lite").train()
    left, right = _pair(32, 64, b=2, seed=1)
    disp, log_scale = model(left, right)
    target = torch.full_like(disp, 10.0)
    # Laplace NLL: exercises both heads the way training will.
    loss = ((disp - target).abs() * torch.exp(-log_scale) + log_scale).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert model.features[0][0].weight.grad.abs().sum() > 0  # reaches the first layer


def test_channels_last_training_computes_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training runs the convs channels-last (faster on oneDNN); outputs and gradients must not change."""
    torch.manual_seed(0)
    model = GCNet("lite").train()
    left, right = _pair(32, 64, b=2, seed=5)
    results = []
    for channels_last in (False, True):
        monkeypatch.setattr(GCNet, "channels_last", channels_last)
        model.zero_grad()
        disp, log_scale = model(left, right)
        (disp.mean() + log_scale.mean()).backward()
        results.append((disp.detach(), model.volume_convs[0][0].weight.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------- layers
def test_soft_argmin_exact_for_one_hot_cost() -> None:
    levels, target = 24, torch.tensor([[0, 5], [17, 23]])
    one_hot = torch.nn.functional.one_hot(target, levels).permute(2, 0, 1).unsqueeze(0).float()
    cost = 1e4 * (1.0 - one_hot)  # zero cost at the true level, huge elsewhere
    disp = soft_argmin(cost, dim=1)
    assert disp.shape == (1, 1, 2, 2)
    assert torch.equal(disp[0, 0], target.float())
    values = torch.arange(levels, dtype=torch.float32).view(1, levels, 1, 1).expand_as(cost) * 2.0
    disp2, expected = soft_argmin_with_expectation(cost, values, dim=1)
    assert torch.equal(disp2, disp) and torch.equal(expected[0, 0], 2.0 * target.float())


def test_soft_argmin_uniform_cost_is_mean() -> None:
    disp = soft_argmin(torch.zeros(1, 9, 1, 1))
    assert disp.item() == pytest.approx(4.0)


def _bimodal_cost(levels: int = 32, near: int = 5, far: int = 25, p_far: float = 0.4) -> torch.Tensor:
    """Cost whose softmax puts 1 - p_far on level ``near`` and p_far on level ``far`` (a depth edge)."""
    prob = torch.full((levels,), 1e-9)
    prob[near], prob[far] = 1.0 - p_far, p_far
    return -torch.log(prob / prob.sum()).view(1, levels, 1, 1)


def test_windowed_soft_argmin_stays_on_the_main_mode_at_a_depth_edge() -> None:
    cost = _bimodal_cost()
    values = torch.arange(32, dtype=torch.float32).view(1, 32, 1, 1) * 0.5
    plain, plain_values = soft_argmin_with_expectation(cost, values, dim=1)
    assert plain.item() == pytest.approx(0.6 * 5 + 0.4 * 25, abs=1e-3)  # 13: on neither surface
    windowed, windowed_values = soft_argmin_with_expectation(cost, values, dim=1, window=2)
    assert windowed.item() == pytest.approx(5.0, abs=1e-3)
    assert windowed_values.item() == pytest.approx(2.5, abs=1e-3)  # the values follow the chosen mode
    # Inside the window it is still a soft arg-min: sub-level estimates from neighbouring levels.
    prob = torch.zeros(32)
    prob[9], prob[10], prob[11], prob[20] = 0.2, 0.5, 0.1, 0.2
    cost2 = -torch.log(prob + 1e-12).view(1, 32, 1, 1)
    d, _ = soft_argmin_with_expectation(cost2, values, dim=1, window=1)
    assert d.item() == pytest.approx((9 * 0.2 + 10 * 0.5 + 11 * 0.1) / 0.8, abs=1e-4)
    # window 0 is the plain soft arg-min
    assert torch.equal(soft_argmin_with_expectation(cost2, values, dim=1, window=0)[0], soft_argmin(cost2))


def test_regression_window_in_the_config_model_and_card(lite: GCNet, isolated_models: Path) -> None:
    with pytest.raises(ValueError, match="regression_window"):
        GCNetConfig(name="x", regression_window=-1)
    card_config = CONFIGS["lite"].to_dict()
    del card_config["regression_window"]  # a card written before the field existed
    assert GCNetConfig.from_dict(card_config).regression_window == 0
    windowed = GCNet(GCNetConfig.from_dict({**card_config, "regression_window": 2})).eval()
    windowed.load_state_dict(lite.state_dict())
    left, right = _pair(32, 64, seed=3)
    with torch.no_grad():
        plain_disp, _ = lite(left, right)
        win_disp, _ = windowed(left, right)
        with full_soft_argmin(windowed):
            assert windowed.config.regression_window == 0
            torch.testing.assert_close(windowed(left, right)[0], plain_disp)
    assert windowed.config.regression_window == 2  # restored
    assert not torch.allclose(win_disp, plain_disp)  # an untrained net's spread-out costs: it matters
    # The card decides: the same weights file loads with the window its card names.
    path = isolated_models / "lite.safetensors"
    save_stereo_model(windowed, path, {"trained": True})
    loaded, _ = load_stereo_model("lite")
    assert loaded.config.regression_window == 2
    assert stereo_config("lite") == loaded.config  # what tools read without loading weights
    assert stereo_config("paper") == CONFIGS["paper"]  # no card: the built-in config
    with pytest.raises(ModelLoadError, match="unknown model"):
        stereo_config("nonexistent")
    with torch.no_grad():
        torch.testing.assert_close(loaded(left, right)[0], win_disp)
    # Gradients still reach the network through the kept probabilities.
    windowed.train()
    disp, log_scale = windowed(left, right)
    (disp.mean() + log_scale.mean()).backward()
    assert windowed.head.weight.grad is not None and windowed.head.weight.grad.abs().sum() > 0


def test_concat_cost_volume_semantics() -> None:
    g = torch.Generator().manual_seed(0)
    left, right = torch.randn(2, 3, 4, 10, generator=g), torch.randn(2, 3, 4, 10, generator=g)
    vol = concat_cost_volume(left, right, levels=6)
    assert vol.shape == (2, 6, 6, 4, 10)
    for d in range(6):
        assert torch.equal(vol[:, :3, d], left)
        # left(x) is paired with right(x - d); columns x < d see zero padding.
        assert torch.equal(vol[:, 3:, d, :, d:], right[..., : 10 - d])
        assert (vol[:, 3:, d, :, :d] == 0).all()


# ----------------------------------------------------------------------------- ONNX
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_onnx_export_matches_torch(lite: GCNet, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    left, right = _pair(48, 64, seed=5)
    path = tmp_path / "lite.onnx"
    torch.onnx.export(
        lite,
        (left, right),
        str(path),
        input_names=["left", "right"],
        output_names=["disparity", "log_scale"],
        dynamo=True,
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    disp_ort, ls_ort = session.run(None, {"left": left.numpy(), "right": right.numpy()})
    with torch.inference_mode():
        disp, log_scale = lite(left, right)
    assert disp_ort.shape == (1, 1, 48, 64)
    assert np.abs(disp_ort - disp.numpy()).max() < 1e-3
    assert np.abs(ls_ort - log_scale.numpy()).max() < 1e-3
    assert np.abs(log_scale.numpy()).max() > 0  # the uncertainty path was non-trivial


# ----------------------------------------------------------------------------- weights
@pytest.fixture
def isolated_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Search only an empty temporary directory, whatever lies in the repo's models/."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setattr(weights_mod, "model_search_dirs", lambda: [models])
    return models


def test_save_load_round_trip(lite: GCNet, isolated_models: Path) -> None:
    sha = save_stereo_model(lite, isolated_models / "lite.safetensors", {"metrics": {"epe": 1.5}})
    card = json.loads((isolated_models / "lite.json").read_text())
    assert card["sha256"] == sha and card["config"] == CONFIGS["lite"].to_dict() and card["trained"] is True
    assert card["metrics"] == {"epe": 1.5}

    model, info = load_stereo_model("lite")
    assert info.trained and info.sha256 == sha and info.config_name == "lite"
    assert info.weights_path == isolated_models / "lite.safetensors"
    assert not model.training
    for (k, a), b in zip(lite.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # The same file by explicit path (card found next to it).
    _, info2 = load_stereo_model("whatever", weights=isolated_models / "lite.safetensors")
    assert info2.sha256 == sha and info2.name == "lite"


def test_env_var_search_path(lite: GCNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = tmp_path / "deploy"
    save_stereo_model(lite, env_dir / "mymodel.safetensors", {"trained": True})
    monkeypatch.setenv(weights_mod.ENV_MODELS, str(env_dir))
    assert weights_mod.model_search_dirs()[0] == env_dir
    _, info = load_stereo_model("mymodel")
    assert info.name == "mymodel" and info.config_name == "lite"


def test_untrained_is_loud(isolated_models: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="scene_perception.models.weights"):
        model, info = load_stereo_model("lite")
    assert not info.trained and info.weights_path is None and info.sha256 is None
    assert isinstance(model, GCNet) and not model.training
    assert any("UNTRAINED weights" in r.getMessage() for r in caplog.records)


def test_card_says_untrained(lite: GCNet, isolated_models: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_stereo_model(lite, isolated_models / "lite.safetensors", {"trained": False})
    with caplog.at_level(logging.WARNING):
        _, info = load_stereo_model("lite")
    assert info.trained is False and info.weights_path is not None
    assert any("UNTRAINED" in r.getMessage() for r in caplog.records)


def test_sha_mismatch(lite: GCNet, isolated_models: Path) -> None:
    save_stereo_model(lite, isolated_models / "lite.safetensors")
    card_path = isolated_models / "lite.json"
    card = json.loads(card_path.read_text())
    card["sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_stereo_model("lite")


def test_truncated_file(lite: GCNet, isolated_models: Path) -> None:
    path = isolated_models / "lite.safetensors"
    save_stereo_model(lite, path)
    path.write_bytes(path.read_bytes()[:-1000])
    (isolated_models / "lite.json").unlink()  # without a card only the parser can notice
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_stereo_model("lite")


def test_wrong_shapes_and_config(lite: GCNet, isolated_models: Path) -> None:
    path = isolated_models / "lite.safetensors"
    save_stereo_model(lite, path)
    (isolated_models / "lite.json").unlink()
    renamed = isolated_models / "paper.safetensors"
    path.rename(renamed)
    # Saved from "lite", asked for as "paper": the file's metadata gives it away.
    with pytest.raises(ModelLoadError, match="config 'lite'"):
        load_stereo_model("paper")
    # A file without our metadata but with the wrong tensors: the shape check names the tensors.
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in lite.state_dict().items()}
    save_file(tensors, str(renamed))
    with pytest.raises(ModelLoadError, match="wrong shape"):
        load_stereo_model("paper")


def test_missing_files_and_bad_cards(isolated_models: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_stereo_model("lite", weights=isolated_models / "nope.safetensors")
    orphan = {"name": "orphan", "config": "lite", "sha256": ""}
    (isolated_models / "orphan.json").write_text(json.dumps(orphan))
    with pytest.raises(ModelLoadError, match="weights file .* is missing"):
        load_stereo_model("orphan")
    with pytest.raises(ModelLoadError, match="unknown model"):
        load_stereo_model("no_such_model")
    (isolated_models / "x.safetensors").write_bytes(b"\0" * 16)
    (isolated_models / "x.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_stereo_model("x")
    (isolated_models / "x.json").write_text(json.dumps({"name": "x", "config": "huge", "sha256": ""}))
    with pytest.raises(ModelLoadError, match="does not know"):
        load_stereo_model("x")


def test_refinement_starts_as_identity_and_warm_start_reuses_unrefined_weights(tmp_path: Path) -> None:
    """A zero-initialised refinement must not change a trained model's output until it is trained."""
    import dataclasses

    from safetensors.torch import save_file

    from scene_perception.training.checkpoints import warm_start

    torch.manual_seed(0)
    plain = GCNet(dataclasses.replace(CONFIGS["lite"], refine_channels=0)).eval()
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(path))
    refined = GCNet("lite").eval()
    assert refined.refine is not None
    warm_start(refined, path)  # what train_stereo calls for --init-weights
    left, right = torch.rand(1, 3, 32, 64), torch.rand(1, 3, 32, 64)
    with torch.inference_mode():
        d0, s0 = plain(left, right)
        d1, s1 = refined(left, right)
    torch.testing.assert_close(d1, d0)
    torch.testing.assert_close(s1, s0)
    # ... and the refinement is trainable: its output conv gets a gradient.
    refined.train()
    d, s = refined(left, right)
    (d.mean() + s.mean()).backward()
    assert refined.refine.out.weight.grad is not None and refined.refine.out.weight.grad.abs().sum() > 0
