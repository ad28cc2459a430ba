"""PoseNet training from a synthetic bag: learns, checkpoints, resumes exactly, writes a loadable card;
drives through one world (the relocalisation split) share the layout and differ in the path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scene_perception.cli import main as cli_main
from scene_perception.data.pose_frames import bag_synth_settings, load_pose_frames
from scene_perception.data.synth import write_synthetic_bag
from scene_perception.data.world import generate_sequence
from scene_perception.models.weights import load_pose_model
from scene_perception.training.checkpoints import find_latest_checkpoint
from scene_perception.training.pose import PoseTrainConfig, predict, train_pose

DRIVE = {"trajectory_seed": 1000, "speed": 8.0, "sway": 1.0, "world_length": 200.0}


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bags") / "train"
    write_synthetic_bag(out, frames=12, width=64, height=32, fps=5.0, seed=1000, trajectory=DRIVE)
    return out


def _config(bag: Path, out: Path, **overrides) -> PoseTrainConfig:
    base = {"bag": str(bag), "model": "tiny", "steps": 30, "batch_size": 6, "lr": 3e-3, "warmup_steps": 0,
            "checkpoint_every": 10, "out_dir": str(out), "progress": False, "num_threads": 1,
            "points_per_frame": 64}
    base.update(overrides)
    return PoseTrainConfig(**base)


def test_drives_share_the_world_and_differ_in_the_path():
    a = next(iter(generate_sequence(1000, 1, 64, 32, world_length=200.0, trajectory_seed=1)))
    b = next(iter(generate_sequence(1000, 1, 64, 32, world_length=200.0, trajectory_seed=1)))
    c = next(iter(generate_sequence(1000, 1, 64, 32, world_length=200.0, trajectory_seed=1,
                                    lateral_offset=0.5)))
    assert np.array_equal(a.left, b.left)
    assert np.isclose(c.pose[1, 3] - a.pose[1, 3], 0.5) and not np.array_equal(a.left, c.left)
    with pytest.raises(ValueError, match="shorter than the drive"):
        next(iter(generate_sequence(1000, 100, 64, 32, world_length=10.0)))


def test_frames_carry_poses_and_scene_points_seen_by_the_camera(bag: Path):
    frames = load_pose_frames(bag, (32, 64), points_per_frame=64)
    assert len(frames) == 12 and frames.images.shape == (12, 32, 64, 3)
    assert np.allclose(np.linalg.norm(frames.quaternions, axis=1), 1.0)
    assert (frames.quaternions[:, 3] >= 0).all()
    assert frames.points_valid.mean() > 0.9
    assert bag_synth_settings(bag)["trajectory_seed"] == 1000
    # Every scene point projects back into the image through the GT pose (it was seen there).
    from scene_perception.losses.pose import project_points

    pos, quat = torch.from_numpy(frames.positions).float(), torch.from_numpy(frames.quaternions).float()
    k = torch.from_numpy(frames.intrinsics).float()
    uv = project_points(pos, quat, torch.from_numpy(frames.points), k)
    valid = frames.points_valid
    assert (uv[..., 0].numpy()[valid] > -1).all() and (uv[..., 0].numpy()[valid] < 64).all()
    assert (uv[..., 1].numpy()[valid] > -1).all() and (uv[..., 1].numpy()[valid] < 32).all()


@pytest.mark.parametrize("loss", ["homoscedastic", "reprojection"])
def test_training_lowers_the_error_and_writes_a_verified_card(bag: Path, tmp_path: Path, loss: str):
    cfg = _config(bag, tmp_path / loss, loss=loss, steps=60, reprojection_warmup_steps=20, augment=False,
                  dropout=0.0)
    path = train_pose(cfg)
    model, info = load_pose_model(weights=path)
    frames = load_pose_frames(bag, (32, 64), points_per_frame=0)
    pos, _ = predict(model, frames.images)
    trained = np.median(np.linalg.norm(pos - frames.positions, axis=1))
    # The untrained network answers (about) the drive's mean position for every frame.
    at_mean = np.median(np.linalg.norm(frames.positions - frames.positions.mean(0), axis=1))
    assert trained < 0.7 * at_mean, (trained, at_mean)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == info.sha256 and card["architecture"] == "posenet"
    assert card["training"]["loss"] == loss and card["training"]["steps"] == 60
    assert card["training"]["data"]["synth"]["trajectory_seed"] == 1000
    assert card["metrics"]["train_median_translation_m"] == pytest.approx(trained, rel=1e-4)


def test_resume_is_the_same_run(bag: Path, tmp_path: Path):
    """Interrupted after step 20 of 30 (checkpoint 30 and the final weights lost), resumed: same weights."""
    cfg = _config(bag, tmp_path / "run", loss="reprojection", reprojection_warmup_steps=15)
    straight = {k: v.clone() for k, v in load_file(str(train_pose(cfg))).items()}
    ckpt = tmp_path / "run" / "checkpoints"
    for f in ckpt.glob("step_00000030*"):
        f.unlink()
    (tmp_path / "run" / "posenet.safetensors").unlink()
    assert find_latest_checkpoint(tmp_path / "run").name == "step_00000020.state.json"
    resumed = load_file(str(train_pose(cfg)))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.allclose(straight[key], resumed[key], atol=1e-5), key
    with pytest.raises(ValueError, match="loss"):
        train_pose(_config(bag, tmp_path / "run", loss="homoscedastic", steps=40))


def test_cli_trains_pose(bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = cli_main(["train", "pose", "--bag", str(bag), "--model", "tiny", "--steps", "3", "--batch-size",
                     "2", "--out-dir", str(tmp_path / "cli"), "--no-progress", "--output-name", "p"])
    assert code == 0
    card = json.loads((tmp_path / "cli" / "p.json").read_text())
    assert card["training"]["command"].startswith("scene-perception train pose --bag")
    assert cli_main(["train", "pose", "--bag", str(tmp_path / "nothing"), "--steps", "1", "--out-dir",
                     str(tmp_path / "x"), "--no-progress"]) == 2


def test_synth_cli_writes_a_second_drive_through_the_same_world(tmp_path: Path):
    from scene_perception.data.synth import synth_main

    out = tmp_path / "heldout"
    argv = ["--out", str(out), "--frames", "2", "--width", "64", "--height", "32", "--seed", "1000",
            "--trajectory-seed", "1", "--lateral-offset", "0.3", "--speed", "3.1", "--start-x", "2",
            "--sway", "0.25", "--world-length", "200"]
    assert synth_main(argv) == 0
    settings = bag_synth_settings(out)
    assert settings["seed"] == 1000 and settings["world_length"] == 200.0
    assert (settings["trajectory_seed"], settings["lateral_offset"], settings["speed"]) == (1, 0.3, 3.1)
    frames = load_pose_frames(out, (32, 64), points_per_frame=0)
    assert np.isclose(frames.positions[0, 0], 2.0)
