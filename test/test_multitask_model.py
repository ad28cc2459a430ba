"""Multi-task scene network: output shapes at the input size, MC dropout that samples only when asked, and
weights that round-trip through the safetensors + model-card loader."""

from __future__ import annotations

import json

import pytest
import torch

from scene_perception.models.multitask import (
    CONFIGS,
    MCDropout,
    MultiTaskConfig,
    MultiTaskNet,
    mc_dropout,
    set_mc_dropout,
)
from scene_perception.models.weights import ModelLoadError, load_scene_model, save_scene_model


@pytest.fixture(scope="module")
def net() -> MultiTaskNet:
    torch.manual_seed(0)
    model = MultiTaskNet("tiny")
    # A few training-mode steps so BatchNorm statistics and weights are not at their symmetric init.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        out = model(torch.rand(2, 3, 32, 64))
        loss = sum(t.square().mean() for t in out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_output_shapes_and_ranges(net: MultiTaskNet) -> None:
    out = net(torch.rand(3, 3, 40, 72))
    assert out.semantic_logits.shape == (3, 9, 40, 72)
    assert out.semantic_log_var.shape == (3, 1, 40, 72)
    assert out.offsets.shape == (3, 2, 40, 72)
    assert out.offset_log_scale.shape == (3, 1, 40, 72)
    assert out.inv_depth.shape == (3, 1, 40, 72)
    assert out.inv_depth_log_scale.shape == (3, 1, 40, 72)
    assert (out.inv_depth > 0).all() and (out.inv_depth < net.config.inv_depth_max).all()


def test_input_not_multiple_of_divisor_is_refused(net: MultiTaskNet) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.rand(1, 3, 30, 64))


def test_eval_is_deterministic_and_mc_dropout_samples(net: MultiTaskNet) -> None:
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        a, b = net(x), net(x)
        assert torch.equal(a.semantic_logits, b.semantic_logits)
        assert torch.equal(a.inv_depth, b.inv_depth)
        with mc_dropout(net):
            batch = net(x.expand(4, -1, -1, -1))
        c = net(x)
    # Every batch element draws its own masks: the samples differ from each other and from eval mode.
    assert not torch.allclose(batch.semantic_logits[0], batch.semantic_logits[1])
    assert not torch.allclose(batch.inv_depth[0], a.inv_depth[0])
    # The context manager restored deterministic eval; BatchNorm stayed in eval mode throughout.
    assert torch.equal(c.semantic_logits, a.semantic_logits)
    assert not net.training
    assert all(not m.mc for m in net.modules() if isinstance(m, MCDropout))


def test_set_mc_dropout_counts_layers(net: MultiTaskNet) -> None:
    n = set_mc_dropout(net, True)
    assert n == 1 + 3 * 2  # encoder + two per decoder
    set_mc_dropout(net, False)


def test_config_round_trip_and_validation() -> None:
    cfg = CONFIGS["scene"]
    assert MultiTaskConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown MultiTaskConfig fields"):
        MultiTaskConfig.from_dict({**cfg.to_dict(), "typo": 1})
    with pytest.raises(ValueError, match="dropout"):
        MultiTaskConfig(dropout=1.0)


def test_weights_round_trip_through_card(tmp_path, net: MultiTaskNet) -> None:
    path = tmp_path / "scene_test.safetensors"
    sha = save_scene_model(net, path, {"training": {"steps": 3}, "input_size": [32, 64]})
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == sha and card["config"]["name"] == "tiny" and card["input_size"] == [32, 64]
    loaded, info = load_scene_model(weights=path)
    assert info.sha256 == sha and info.trained
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x).semantic_logits, net(x).semantic_logits)
    # A stereo card or a tampered file is refused, not half-loaded.
    card["sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_scene_model(weights=path)
