"""``train scene --dataset cityscapes:ROOT``: real labelled frames next to the synthetic world (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scene_perception.cli import main as cli_main
from scene_perception.data.datasets import open_dataset
from scene_perception.data.datasets.cityscapes import map_cityscapes_instances
from scene_perception.data.scene_frames import dataset_scene_frames, render_scene_frames, scene_targets
from scene_perception.models.labels import CAR, PERSON, POLE, SKY
from scene_perception.models.multitask import CONFIGS, MultiTaskNet
from scene_perception.training.multitask import (
    SceneTrainConfig,
    draw_mixed,
    make_batch,
    scene_losses,
    training_sets,
)

FX, BASELINE = 500.0, 0.2
H, W = 64, 128  # Cityscapes' 1:2 aspect, as the training size 32x64


def write_cityscapes(root: Path, split: str = "train", frames: int = 3) -> None:
    """A Cityscapes folder: sky on top (no disparity), a car instance and a person on a road, a pole."""
    rng = np.random.default_rng(0)
    for k in range(frames):
        city, stem = "aachen", f"aachen_000000_{k:06d}"

        def path(kind: str, suffix: str, city: str = city, stem: str = stem) -> Path:
            p = root / kind / split / city / f"{stem}_{suffix}"
            p.parent.mkdir(parents=True, exist_ok=True)
            return p

        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(path("leftImg8bit", "leftImg8bit.png")), img)
        cv2.imwrite(str(path("rightImg8bit", "rightImg8bit.png")), img)
        label = np.full((H, W), 7, np.uint8)  # road
        label[:16] = 23  # sky
        label[40:56, 10:40] = 26  # car
        label[30:60, 80:90] = 24  # person
        label[20:60, 110:113] = 17  # pole (no instances in Cityscapes)
        label[60:] = 1  # ego vehicle: ignored
        cv2.imwrite(str(path("gtFine", "gtFine_labelIds.png")), label)
        inst = label.astype(np.uint16)
        inst[40:56, 10:40] = 26000
        inst[30:60, 80:90] = 24003
        cv2.imwrite(str(path("gtFine", "gtFine_instanceIds.png")), inst)
        raw = np.zeros((H, W), np.uint16)
        raw[16:] = 1 + 256 * 10  # 10 px below the sky; the sky itself unknown (0)
        raw[16:24, :8] = 0  # a hole of SGM on the road
        cv2.imwrite(str(path("disparity", "disparity.png")), raw)
        cam = {"extrinsic": {"baseline": BASELINE},
               "intrinsic": {"fx": FX, "fy": FX, "u0": W / 2, "v0": H / 2}}
        path("camera", "camera.json").write_text(json.dumps(cam))


def test_cityscapes_instances_are_renumbered_things_only() -> None:
    ids = np.array([[26001, 26001, 7, 24005], [24005, 17, 26000, 33001], [26001, 26, 28002, 24005]])
    assert map_cityscapes_instances(ids).tolist() == [[1, 1, 0, 2], [2, 0, 3, 0], [1, 0, 4, 2]]
    # 33001 is a bicycle (no class of ours), 26 a car group without instance id, 17 a pole (stuff there).


def test_scene_targets_from_a_cityscapes_frame(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    sample = open_dataset("cityscapes", tmp_path, split="train")[0]
    assert sample.instance is not None and set(np.unique(sample.instance)) == {0, 1, 2}
    image, semantic, instance, inv = scene_targets(sample, 32, 64)
    assert image.shape == (32, 64, 3) and semantic.shape == instance.shape == inv.shape == (32, 64)
    assert semantic[0, 0] == SKY and inv[0, 0] == 0.0  # unknown sky depth -> at infinity
    # Ids in order of first appearance (raster order): the person starts higher than the car.
    assert semantic[20, 5] == CAR and instance[20, 5] == 2
    assert semantic[22, 42] == PERSON and instance[22, 42] == 1
    assert semantic[20, 55] == POLE and instance[20, 55] == 0  # no annotated object: no offset target
    assert (semantic[30:] == 255).all()  # ego vehicle ignored
    assert inv[12, 40] == pytest.approx(10.0 / (FX * BASELINE))  # d / (fx * B): 0.1 /m
    assert np.isnan(inv[9, 1])  # the SGM hole on the road stays unknown
    # Another aspect ratio: centre-cropped, not stretched (the sky band keeps its height share).
    _, sem_square, _, _ = scene_targets(sample, 32, 32)
    assert (sem_square[:8] == SKY).all() and sem_square[8, 16] != SKY


def test_dataset_frames_are_cached(tmp_path: Path) -> None:
    write_cityscapes(tmp_path / "cs")
    reader = open_dataset("cityscapes", tmp_path / "cs", split="train")
    first = dataset_scene_frames(reader, 32, 64, cache_dir=tmp_path / "cache")
    files = list((tmp_path / "cache").glob("cityscapes_3_32x64_*.safetensors"))
    assert len(files) == 1 and len(first) == 3 and (first.seeds == -1).all()
    second = dataset_scene_frames(reader, 32, 64, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.inv_depth, second.inv_depth)
    np.testing.assert_array_equal(first.semantic, second.semantic)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1  # read back, not rewritten


def test_draw_mixed_follows_the_weights() -> None:
    rng = np.random.default_rng(0)
    idx = np.concatenate([draw_mixed(rng, [5, 1000], [3.0, 1.0], 8) for _ in range(500)])
    assert idx.min() >= 0 and idx.max() < 1005
    assert abs(np.mean(idx < 5) - 0.75) < 0.03


def test_unknown_labels_and_depth_do_not_reach_the_loss(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    frames = dataset_scene_frames(open_dataset("cityscapes", tmp_path, split="train"), 32, 64)
    batch = make_batch(frames, [0, 1], [False, True], torch.device("cpu"))
    assert "semantic_mask" in batch and "depth_mask" in batch
    torch.manual_seed(0)
    model = MultiTaskNet(CONFIGS["tiny"])
    out = model(batch["image"])
    torch.manual_seed(1)
    losses, nlls = scene_losses(out, batch, ("semantic", "instance", "depth"), 4)
    assert all(torch.isfinite(v) for v in [*losses.values(), *nlls.values()])
    # The ignored pixels' logits get no gradient, the known ones do.
    grad = torch.autograd.grad(losses["semantic"], out.semantic_logits, retain_graph=True)[0]
    ignored = ~batch["semantic_mask"]
    assert ignored.any() and grad.abs().sum(1)[ignored].max() == 0 and grad.abs().sum() > 0
    grad_d = torch.autograd.grad(losses["depth"], out.inv_depth)[0]
    assert grad_d[~batch["depth_mask"]].abs().max() == 0
    # Synthetic frames have no unknowns: no masks, the losses of earlier versions.
    synth = render_scene_frames([1000], 1, 32, 64)
    assert not {"semantic_mask", "depth_mask"} & set(make_batch(synth, [0], [False], torch.device("cpu")))


def test_config_refuses_datasets_without_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no semantic labels"):
        SceneTrainConfig(dataset=f"kitti2015:{tmp_path}").validate()
    with pytest.raises(ValueError, match="synthetic_weight"):
        SceneTrainConfig(synthetic_weight=0.0).validate()
    SceneTrainConfig(dataset=f"cityscapes:{tmp_path}", synthetic_weight=0.0).validate()


def test_train_scene_on_cityscapes_with_and_without_the_synthetic_world(tmp_path: Path) -> None:
    write_cityscapes(tmp_path / "cs")
    common = ["train", "scene", "--model", "tiny", "--height", "32", "--width", "64", "--steps", "2",
              "--batch-size", "2", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "only"
    assert cli_main([*common, "--dataset", f"cityscapes:{tmp_path / 'cs'}", "--synthetic-weight", "0",
                     "--out-dir", str(out)]) == 0
    card = json.loads((out / "scene.json").read_text())
    assert card["training"]["data"].startswith(f"cityscapes:{tmp_path / 'cs'} (3 frames, split train")
    assert card["training"]["config"]["dataset"] == f"cityscapes:{tmp_path / 'cs'}"
    assert all(np.isfinite(v) for v in card["metrics"].values())
    mixed = tmp_path / "mixed"
    assert cli_main([*common, "--dataset", f"cityscapes:{tmp_path / 'cs'}:0.5", "--train-seeds", "1000:1001",
                     "--frames-per-seed", "2", "--out-dir", str(mixed)]) == 0
    data = json.loads((mixed / "scene.json").read_text())["training"]["data"]
    assert data.startswith("synthetic (2 frames, weight 1)") and "weight 0.5" in data
    # A checkpoint of another data mix is not resumed.
    with pytest.raises(ValueError, match="dataset"):
        sets = SceneTrainConfig(model="tiny", height=32, width=64, steps=3, out_dir=str(mixed),
                                train_seeds="1000:1001", frames_per_seed=2, cache_dir=str(tmp_path / "cache"))
        from scene_perception.training.multitask import train_scene

        train_scene(sets)
    assert len(training_sets(SceneTrainConfig(dataset=f"cityscapes:{tmp_path / 'cs'}", synthetic_weight=0.0,
                                              height=32, width=64, cache_dir=str(tmp_path / "cache"),
                                              progress=False))) == 1
