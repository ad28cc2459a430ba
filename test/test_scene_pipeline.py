"""ScenePipeline honours the scene-node contract: fields, dtypes and shapes at the input size, MC samples in
one batched forward pass, deterministic without MC, ValueError on bad input, weights loaded from a card."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scene_perception.data.world import CLASSES
from scene_perception.models.multitask import MultiTaskNet
from scene_perception.models.weights import save_scene_model
from scene_perception.pipelines.scene import ScenePipeline, SceneResult


@pytest.fixture(scope="module")
def pipeline() -> ScenePipeline:
    torch.manual_seed(1)
    return ScenePipeline(MultiTaskNet("tiny"), input_size=(32, 64))


def _image(h: int = 45, w: int = 70) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_contract(r: SceneResult, h: int, w: int, mc: bool) -> None:
    assert r.labels.shape == (h, w) and r.labels.dtype == np.uint8
    assert r.labels.max() < len(CLASSES)
    assert r.instances.shape == (h, w) and r.instances.dtype == np.uint16
    for name in ("depth", "depth_variance", "semantic_aleatoric"):
        arr = getattr(r, name)
        assert arr.shape == (h, w) and arr.dtype == np.float32, name
    assert (r.depth[np.isfinite(r.depth)] > 0).all()
    assert (r.semantic_aleatoric >= 0).all() and (r.semantic_aleatoric <= np.log(len(CLASSES)) + 1e-5).all()
    if mc:
        for name in ("semantic_epistemic", "depth_epistemic"):
            arr = getattr(r, name)
            assert arr is not None and arr.shape == (h, w) and arr.dtype == np.float32, name
        assert (r.semantic_epistemic >= 0).all()
    else:
        assert r.semantic_epistemic is None and r.depth_epistemic is None
    assert isinstance(r.latency_ms, float) and r.latency_ms > 0
    # Instances only on thing classes.
    assert not np.isin(r.labels[r.instances > 0], [0, 1, 2, 3, 7, 8]).any()


def test_contract_without_and_with_mc(pipeline: ScenePipeline) -> None:
    img = _image()
    pipeline.mc_samples = 0
    a = pipeline(img)
    _check_contract(a, 45, 70, mc=False)
    b = pipeline(img)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.depth, b.depth)  # deterministic
    pipeline.mc_samples = 6
    c = pipeline(img)
    _check_contract(c, 45, 70, mc=True)
    assert c.semantic_epistemic.max() > 0  # the samples really differ
    pipeline.mc_samples = 0
    assert len(pipeline.class_names) == len(pipeline.class_colors) == len(CLASSES)
    assert pipeline.class_names[4] == "car" and pipeline.class_colors[4] == (0, 0, 142)


def test_mc_samples_are_one_batched_forward(pipeline: ScenePipeline) -> None:
    calls: list[int] = []
    hook = pipeline.model.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    try:
        pipeline.mc_samples = 5
        pipeline(_image())
    finally:
        hook.remove()
        pipeline.mc_samples = 0
    assert calls == [5]


def test_native_size_and_no_input_size() -> None:
    torch.manual_seed(2)
    p = ScenePipeline(MultiTaskNet("tiny"))  # net size = image size rounded to 8
    r = p(_image(32, 48))
    _check_contract(r, 32, 48, mc=False)
    assert r.probabilities.shape == (9, 32, 48)


@pytest.mark.parametrize("bad", [
    np.zeros((10, 10), np.uint8),
    np.zeros((10, 10, 4), np.uint8),
    np.zeros((10, 10, 3), np.float32),
    np.zeros((0, 10, 3), np.uint8),
    [[1, 2, 3]],
])
def test_bad_input_raises_value_error(pipeline: ScenePipeline, bad) -> None:
    with pytest.raises(ValueError):
        pipeline(bad)


def test_bad_settings_raise(pipeline: ScenePipeline) -> None:
    pipeline.mc_samples = -1
    with pytest.raises(ValueError, match="mc_samples"):
        pipeline(_image())
    pipeline.mc_samples = 0
    with pytest.raises(ValueError, match="input_size"):
        ScenePipeline(MultiTaskNet("tiny"), input_size=(30, 64))


def test_from_weights_uses_card_input_size(tmp_path) -> None:
    torch.manual_seed(3)
    path = tmp_path / "s.safetensors"
    save_scene_model(MultiTaskNet("tiny"), path, {"input_size": [24, 40]})
    p = ScenePipeline.from_weights(path, mc_samples=2)
    assert p.input_size == (24, 40) and p.mc_samples == 2 and p.model_name == "s" and p.trained
    r = p(_image(50, 90))
    _check_contract(r, 50, 90, mc=True)
    assert r.probabilities.shape == (9, 24, 40)


def test_shipped_weights_load_and_segment_a_held_out_frame() -> None:
    """models/scene.safetensors: verified card, trained, and better than chance on a world it never saw."""
    from scene_perception.data.scene_frames import render_scene_frames

    p = ScenePipeline.from_weights(mc_samples=0)
    assert p.trained and p.model_name == "scene" and p.input_size == (96, 192)
    frames = render_scene_frames([7], 1, 96, 192)  # held-out seed (training uses >= 1000)
    r = p(frames.images[0])
    _check_contract(r, 96, 192, mc=False)
    assert (r.labels == frames.semantic[0]).mean() > 0.8
    road = frames.semantic[0] == 1
    gt_depth = 1.0 / frames.inv_depth[0][road]
    assert np.median(np.abs(r.depth[road] - gt_depth) / gt_depth) < 0.3
