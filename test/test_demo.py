"""The README demo path end to end, small: synth bag -> live node over DDS -> recorded bag -> scores."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from scene_perception.data.bag_io import iter_messages
from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import save_stereo_model
from scene_perception.ros.demo import run_demo

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "lite_demo.safetensors"
    save_stereo_model(GCNet(CONFIGS["lite"]), path, {"trained": False})
    return path


def test_demo_replays_bag_records_outputs_and_scores(tmp_path: Path, weights: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert run_demo(out, frames=3, weights=str(weights), width=128, height=64, seed=3) == 0
    text = capsys.readouterr().out
    assert "| all (pooled) |" in text and "UNTRAINED" in text
    assert (out / "stereo.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "## Pooled over all frames" in report and "![sparsification.png]" in report
    assert (out / "sparsification.png").is_file()
    recorded = list(iter_messages(out / "outputs", ["/disparity", "/depth", "/depth/uncertainty"]))
    stamps = {m.stamp_ns for m in recorded}
    assert len(stamps) == 3 and len(recorded) == 9, "every frame's three outputs must be recorded"
    pooled_line = next(line for line in text.splitlines() if line.startswith("| all (pooled)"))
    epe = float(pooled_line.split("|")[2])
    assert math.isfinite(epe) and epe >= 0
    # A second run reuses the bag instead of rendering it again.
    assert run_demo(out, frames=3, weights=str(weights), width=128, height=64, seed=3) == 0
    assert "rendering" not in capsys.readouterr().out
