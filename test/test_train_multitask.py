"""Multi-task training: a 20-step run on tiny frames lowers the task losses, writes resumable checkpoints,
resumes exactly, and its weights load through the runtime loader; held-out seeds are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scene_perception.cli import main as cli_main
from scene_perception.data.scene_frames import SceneFrames, render_scene_frames
from scene_perception.losses.multitask import masked_l1, sampled_logit_cross_entropy
from scene_perception.models.multitask import CONFIGS, MultiTaskNet
from scene_perception.models.weights import load_scene_model
from scene_perception.training.checkpoints import find_latest_checkpoint
from scene_perception.training.multitask import SceneTrainConfig, make_batch, train_scene


@pytest.fixture(scope="module")
def frames() -> SceneFrames:
    return render_scene_frames([1000, 1001], 3, 32, 64, nuisance=False)


def _config(out_dir: Path, **kw) -> SceneTrainConfig:
    base = dict(model="tiny", height=32, width=64, steps=20, batch_size=4, lr=5e-3, lr_schedule="constant",
                warmup_steps=0, logit_samples=2, checkpoint_every=10, keep_checkpoints=2, num_threads=1,
                progress=False, device="cpu", out_dir=str(out_dir))
    base.update(kw)
    return SceneTrainConfig(**base)


def _task_losses(model: MultiTaskNet, frames: SceneFrames) -> dict[str, float]:
    batch = make_batch(frames, list(range(len(frames))), [False] * len(frames), torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        out = model(batch["image"])
        return {
            "semantic": sampled_logit_cross_entropy(out.semantic_logits, out.semantic_log_var,
                                                    batch["semantic"], samples=0).item(),
            "instance": masked_l1(out.offsets, batch["offsets"], batch["instance_mask"]).item(),
            "depth": masked_l1(out.inv_depth, batch["inv_depth"]).item(),
        }


@pytest.mark.slow
def test_short_run_learns_checkpoints_and_resumes(tmp_path, frames) -> None:
    cfg = _config(tmp_path / "a")
    torch.manual_seed(cfg.seed)
    before = _task_losses(MultiTaskNet(CONFIGS["tiny"]), frames)  # the run's own init (same seed)
    final = train_scene(cfg, frames)
    model, info = load_scene_model(weights=final)
    after = _task_losses(model, frames)
    assert info.trained
    assert after["semantic"] < before["semantic"]
    assert after["depth"] < before["depth"]
    assert sum(after.values()) < sum(before.values())

    latest = find_latest_checkpoint(tmp_path / "a")
    assert latest is not None and latest.name == "step_00000020.state.json"
    state = json.loads(latest.read_text())
    assert state["config"]["weighting"] == "learned" and len(state["recent"]) == 20
    ckpt = load_file(str(latest.with_name("step_00000020.safetensors")))
    assert "weighting.log_vars" in ckpt and any(k.startswith("model.") for k in ckpt)
    assert not torch.equal(ckpt["weighting.log_vars"], torch.zeros(3))  # the task sigmas learned
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["input_size"] == [32, 64] and card["training"]["steps"] == 20
    assert set(card["training"]["task_sigmas"]) == {"semantic", "instance", "depth"}

    # Resume 20 -> 24 equals an uninterrupted 24-step run.
    resumed = train_scene(_config(tmp_path / "a", steps=24), frames)
    straight = train_scene(_config(tmp_path / "b", steps=24), frames)
    ta, tb = load_file(str(resumed)), load_file(str(straight))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.allclose(ta[k].float(), tb[k].float(), atol=1e-5), k
    # A checkpoint from another weighting is refused, not silently mixed.
    with pytest.raises(ValueError, match="weighting"):
        train_scene(_config(tmp_path / "a", steps=30, weighting="sum"), frames)


def test_single_task_trains_only_its_task(tmp_path, frames) -> None:
    final = train_scene(_config(tmp_path / "s", steps=2, weighting="single", task="depth"), frames)
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["tasks"] == ["depth"] and card["training"]["task_weights"] == {"depth": 1.0}
    assert card["training"]["class_weights"] is None


def test_median_frequency_class_balance_is_recorded(tmp_path, frames) -> None:
    final = train_scene(_config(tmp_path / "m", steps=2, class_balance="median_freq"), frames)
    weights = json.loads(final.with_suffix(".json").read_text())["training"]["class_weights"]
    assert len(weights) == 9
    road, car = weights[1], weights[4]
    assert 0 < road < car  # the frequent class is down-weighted relative to the rarer one


def test_config_refuses_held_out_seeds_and_bad_fields(tmp_path) -> None:
    with pytest.raises(ValueError, match="held out"):
        _config(tmp_path, train_seeds="50:60").validate()
    with pytest.raises(ValueError, match="--task"):
        _config(tmp_path, weighting="single").validate()
    with pytest.raises(ValueError, match="multiples of 8"):
        _config(tmp_path, height=30).validate()


def test_cli_train_scene_renders_caches_and_writes_weights(tmp_path) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    rc = cli_main(["train", "scene", "--model", "tiny", "--height", "32", "--width", "64", "--steps", "2",
                   "--batch-size", "2", "--train-seeds", "1000:1001", "--frames-per-seed", "2",
                   "--cache-dir", str(cache), "--out-dir", str(out), "--no-progress", "--logit-samples", "2"])
    assert rc == 0
    assert (out / "scene.safetensors").is_file() and (out / "scene.json").is_file()
    assert len(list(cache.glob("world_1000-1000_*.safetensors"))) == 1
    assert cli_main(["train", "scene", "--train-seeds", "1:5", "--out-dir", str(out)]) == 2
