"""`scene-perception eval --bag`: a GT bag replayed through the node in a subprocess, report on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scene_perception.data.synth import write_synthetic_bag
from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import save_stereo_model

pytestmark = pytest.mark.slow


@pytest.mark.ros
def test_eval_command_writes_report_for_a_bag(tmp_path: Path) -> None:
    bag = write_synthetic_bag(tmp_path / "gt_bag", 2, width=128, height=64, seed=5, storage="sqlite3")
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_stereo_model(GCNet(CONFIGS["lite"]), weights, {"trained": False})
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scene_perception.cli",
            "eval",
            "--bag",
            str(bag),
            "--out",
            str(out),
            "--weights",
            str(weights),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = (out / "report.md").read_text()
    assert "2 frames, 0 without output" in report
    assert "| sky valid % |" in report  # the pixels at infinity that EPE cannot see
    assert (out / "outputs" / "metadata.yaml").is_file()


def test_eval_command_rejects_a_non_bag(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scene_perception.cli", "eval", "--bag", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "not a rosbag2 directory" in proc.stderr
