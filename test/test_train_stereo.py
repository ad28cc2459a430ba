"""Stereo training loop: runs end to end on tiny crops, checkpoints, resumes exactly, and its final weights
load through the runtime loader."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scene_perception.models.weights import load_stereo_model
from scene_perception.training.stereo import (
    DATA_DESCRIPTION,
    TrainConfig,
    find_latest_checkpoint,
    learning_rate,
    main,
    train_stereo,
)


def _tiny(out_dir: Path, **overrides) -> TrainConfig:
    base = {
        "model": "lite",
        "steps": 3,
        "batch_size": 2,
        "crop_height": 64,
        "crop_width": 128,
        "max_disparity": 24.0,
        "checkpoint_every": 2,
        "num_threads": 1,
        "progress": False,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "out_dir": str(out_dir),
    }
    base.update(overrides)
    return TrainConfig(**base)


def test_supervised_train_checkpoint_resume_and_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    final = train_stereo(_tiny(out))
    assert final == out / "lite.safetensors" and final.is_file()
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("step_*.state.json"))
    assert ckpts == ["step_00000002.state.json", "step_00000003.state.json"]
    state = json.loads((out / "checkpoints" / "step_00000003.state.json").read_text())
    assert state["step"] == 3 and state["seed"] == 0 and state["config"]["mode"] == "supervised"

    # Resume to 5 steps: must start from the step-3 checkpoint and do only 2 more steps.
    with caplog.at_level(logging.INFO, logger="scene_perception.training.stereo"):
        train_stereo(_tiny(out, steps=5))
    assert any("at step 3" in r.getMessage() for r in caplog.records)
    latest = find_latest_checkpoint(out)
    assert latest is not None and latest.name == "step_00000005.state.json"
    # A checkpoint's weights load on their own: its resume state is not mistaken for a model card.
    model, info = load_stereo_model("lite", out / "checkpoints" / "step_00000005.safetensors")
    assert info.weights_path is not None

    # Exactness of resume: 3 + 2 steps equals 5 uninterrupted steps (same data per step, Adam state restored).
    straight = train_stereo(_tiny(tmp_path / "straight", steps=5))
    a, b = load_file(str(out / "lite.safetensors")), load_file(str(straight))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")

    model, info = load_stereo_model("lite", weights=final)
    assert info.trained and info.config_name == "lite" and info.weights_path == final
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["training"]["data"] == DATA_DESCRIPTION
    assert card["training"]["steps"] == 5
    assert math.isfinite(card["metrics"]["train_epe_px"])
    with torch.no_grad():
        disp, log_scale = model(torch.rand(1, 3, 64, 128), torch.rand(1, 3, 64, 128))
    assert disp.shape == log_scale.shape == (1, 1, 64, 128)


def test_self_supervised_runs_without_labels(tmp_path: Path) -> None:
    final = train_stereo(_tiny(tmp_path, mode="self_supervised", steps=2, checkpoint_every=10))
    _, info = load_stereo_model("lite", weights=final)
    assert info.trained
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["training"]["mode"] == "self_supervised"


def test_volume_loss_trains_and_is_recorded(tmp_path: Path) -> None:
    final = train_stereo(_tiny(tmp_path, steps=2, checkpoint_every=10, volume_weight=0.5))
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["training"]["config"]["volume_weight"] == 0.5
    # The volume term changes the update: the same run without it ends at other weights.
    plain = train_stereo(_tiny(tmp_path / "plain", steps=2, checkpoint_every=10))
    a, b = load_file(str(final)), load_file(str(plain))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_mode(tmp_path: Path) -> None:
    train_stereo(_tiny(tmp_path, steps=1))
    with pytest.raises(ValueError, match="mode"):
        train_stereo(_tiny(tmp_path, steps=2, mode="self_supervised"))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="size_divisor"):
        _tiny(Path("unused"), crop_height=60).validate()
    with pytest.raises(ValueError, match="mode"):
        _tiny(Path("unused"), mode="magic").validate()
    with pytest.raises(ValueError, match="max_disparity"):
        _tiny(Path("unused"), max_disparity=500.0).validate()
    with pytest.raises(ValueError, match="volume_weight"):
        _tiny(Path("unused"), volume_weight=-1.0).validate()
    with pytest.raises(ValueError, match="sky_probability"):
        _tiny(Path("unused"), sky_probability=1.5).validate()


def test_sky_pairs_are_trained_on_and_recorded(tmp_path: Path) -> None:
    """--sky-probability reaches the data (the run differs from one without sky) and the card."""
    final = train_stereo(_tiny(tmp_path, steps=2, checkpoint_every=10, sky_probability=1.0))
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["training"]["config"]["sky_probability"] == 1.0
    plain = train_stereo(_tiny(tmp_path / "plain", steps=2, checkpoint_every=10))
    a, b = load_file(str(final)), load_file(str(plain))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_learning_rate_schedules() -> None:
    cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=10)
    assert learning_rate(cfg, 0) == pytest.approx(1e-4)
    assert learning_rate(cfg, 10) == pytest.approx(1e-3)
    assert learning_rate(cfg, 99) < 1e-4
    step_cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=0, lr_schedule="step")
    assert [learning_rate(step_cfg, s) for s in (0, 60, 90)] == pytest.approx([1e-3, 5e-4, 2.5e-4])


def test_cli_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--steps", "1", "--batch-size", "1", "--crop-height", "64", "--crop-width", "128",
            "--max-disparity", "24", "--num-threads", "1", "--no-progress", "--no-nuisance",
            "--out-dir", str(tmp_path), "--output-name", "cli_lite"]
    assert main(args) == 0
    assert (tmp_path / "cli_lite.safetensors").is_file()
    assert str(tmp_path / "cli_lite.safetensors") in capsys.readouterr().out
    assert main(args[:-2] + ["--crop-height", "50"]) == 2


def test_torchrun_ddp_on_cpu_with_gloo(tmp_path: Path) -> None:
    """Two ranks under torchrun (gloo on CPU, the same code path as NCCL on GPUs): the run finishes, rank 0
    alone writes the checkpoints and a card that records world size 2, and the weights load as trained."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "scene_perception.cli", "train", "stereo", "--steps", "2", "--batch-size", "1",
           "--crop-height", "64", "--crop-width", "128", "--max-disparity", "24", "--num-threads", "1",
           "--no-progress", "--no-nuisance", "--checkpoint-every", "1", "--out-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    card = json.loads((out / "lite.json").read_text())
    assert card["training"]["world_size"] == 2 and card["training"]["steps"] == 2
    assert sorted(p.name for p in (out / "checkpoints").glob("*.state.json")) == [
        "step_00000001.state.json", "step_00000002.state.json"]
    _, info = load_stereo_model("lite", weights=out / "lite.safetensors")
    assert info.trained
