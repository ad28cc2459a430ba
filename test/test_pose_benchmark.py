"""benchmarks/pose_accuracy.py: scores only a held-out drive of the training world, fits calibration on a
third drive, and records what it measured in a model card without touching the weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from evalutil import load_benchmark

from scene_perception.data.synth import write_synthetic_bag
from scene_perception.models.posenet import CONFIGS, PoseNet
from scene_perception.models.weights import file_sha256, load_pose_model, save_model

pytestmark = pytest.mark.slow

WORLD = {"world_length": 120.0}


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pose_bench")
    drives = {
        "train": {"trajectory_seed": 1000, "speed": 8.0},
        "heldout": {"trajectory_seed": 1, "speed": 6.0, "lateral_offset": 0.3},
        "val": {"trajectory_seed": 2, "speed": 7.0, "lateral_offset": -0.3},
        "other_world": {"trajectory_seed": 3},
    }
    out = {}
    for name, drive in drives.items():
        seed = 1001 if name == "other_world" else 1000
        out[name] = write_synthetic_bag(root / name, frames=5, width=64, height=32, fps=2.0, seed=seed,
                                        trajectory={**WORLD, **drive})
    return out


def test_refuses_anything_but_another_drive_through_the_training_world(bags: dict[str, Path]) -> None:
    bench = load_benchmark("pose_accuracy")
    with pytest.raises(SystemExit, match="not the training world"):
        bench.main(["--train-bag", str(bags["train"]), "--heldout-bag", str(bags["other_world"])])
    with pytest.raises(SystemExit, match="training trajectory itself"):
        bench.main(["--train-bag", str(bags["train"]), "--heldout-bag", str(bags["train"])])


def test_scores_baseline_and_model_calibrates_on_a_third_drive_and_updates_the_card(
        bags: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "p.safetensors"
    sha = save_model(PoseNet(CONFIGS["tiny"]), weights, {"architecture": "posenet"})
    card = weights.with_suffix(".json")
    results = load_benchmark("pose_accuracy").main([
        "--train-bag", str(bags["train"]), "--heldout-bag", str(bags["heldout"]),
        "--calibration-bag", str(bags["val"]), "--weights", f"m={weights}", "--mc-samples", "8",
        "--update-card", f"m={card}",
    ])
    out = capsys.readouterr().out
    assert "| constant mean pose |" in out and "| m |" in out and "| m calibrated |" in out
    rows = results["rows"]
    assert rows["m"]["frames"] == 5 and 0 <= rows["m"]["inside_2sigma_pose"] <= 1
    assert rows["m calibrated"]["median_translation_m"] == rows["m"]["median_translation_m"]
    written = json.loads(card.read_text())
    assert written["sha256"] == sha == file_sha256(weights)
    assert written["metrics"]["heldout"]["heldout_bag_synth"]["trajectory_seed"] == 1
    assert written["config"]["covariance_scale"] == rows["m calibrated"]["covariance_scale"]
    model, _ = load_pose_model(weights=weights)  # the updated card still loads (config + sha256)
    assert list(model.config.covariance_scale) == written["config"]["covariance_scale"]
