"""Stereo training loop: runs end to end on tiny crops, checkpoints, resumes exactly (also with mixed
precision, loader workers, several crops per pair, a time budget, and across devices), and its final weights
load through the runtime loader.

:func:`run_train_and_resume` and :func:`run_resume_across_devices` take the device as an argument, so
``test/test_cuda.py`` imports them for the CUDA variants (``sys.path`` gets ``test/``; pytest's rootdir
conftest does not make this module a package).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from scene_perception.data.procedural import ProceduralStereoDataset
from scene_perception.models.gcnet import GCNet
from scene_perception.models.weights import load_stereo_model
from scene_perception.training.checkpoints import checkpoint_paths, load_checkpoint, read_state
from scene_perception.training.stereo import (
    DATA_DESCRIPTION,
    LOG_NAME,
    MultiCropStereoDataset,
    TrainConfig,
    build_parser,
    default_num_workers,
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


@pytest.mark.slow
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
    with caplog.at_level(logging.INFO, logger="scene_perception.training"):
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
    with pytest.raises(ValueError, match="amp"):
        _tiny(Path("unused"), amp="fp8").validate()
    with pytest.raises(ValueError, match="minutes"):
        _tiny(Path("unused"), minutes=-1.0).validate()
    with pytest.raises(ValueError, match="multiple of crops_per_pair"):
        _tiny(Path("unused"), crops_per_pair=3, image_height=128, image_width=256).validate()
    with pytest.raises(ValueError, match="every crop is the same"):
        _tiny(Path("unused"), crops_per_pair=2).validate()


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
    card = json.loads((tmp_path / "cli_lite.json").read_text())
    assert card["training"]["command"] == "scene-perception train stereo " + " ".join(args)
    assert main(args[:-2] + ["--crop-height", "50"]) == 2


@pytest.mark.slow
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


# ------------------------------------------------------------------------------- exact resume, any device
def _small(out_dir: Path, device: str, **overrides: Any) -> TrainConfig:
    """A run small enough for bf16 on a CPU without bf16 instructions (~1 s a step there): 32x64 crops.

    A cosine schedule with warm-up, so resuming must also land on the same learning rate; ``log_every`` 3
    so host syncs fall inside the halves, not only at their ends.
    """
    cuda = torch.device(device).type == "cuda"
    base: dict[str, Any] = {
        "model": "lite", "device": device, "steps": 20, "batch_size": 2, "crop_height": 32, "crop_width": 64,
        "max_disparity": 24.0, "lr_schedule": "cosine", "warmup_steps": 2, "checkpoint_every": 1000,
        "log_every": 3, "progress": False, "out_dir": str(out_dir),
        # CUDA: two workers exercise the persistent, pinned, prefetching loader without a long start-up;
        # fixed conv algorithms (no benchmark) keep the run-to-run noise low.
        "num_threads": 0 if cuda else 1, "num_workers": 2 if cuda else 0, "cudnn_benchmark": False,
    }
    base.update(overrides)
    return TrainConfig(**base)


def _max_abs_diff(a_path: Path, b_path: Path) -> float:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def run_train_and_resume(tmp_path: Path, device: str, amp: str, *, steps: int = 20,
                         **overrides: Any) -> dict[str, float]:
    """Train ``steps`` steps straight, and ``steps // 2`` + resume to ``steps``; assert the weights agree.

    The first half ends through ``stop_at`` (like an interrupted run: the learning-rate schedule spans all
    ``steps`` in both runs, and the stop writes a checkpoint and a card at a step that is not a multiple of
    ``checkpoint_every``); the second run, same config without ``stop_at``, resumes from it.

    Tolerance.  CPU: bit-exact (``torch.equal``; same kernels, same thread count, index-seeded data, Adam
    moments and step counters, BatchNorm statistics and for fp16 the loss scale restored).  CUDA: two
    *uninterrupted* runs already differ, because some backward kernels accumulate with atomics in a
    scheduling-dependent order (bilinear upsampling of the 1/4-res disparity, cuDNN's 3-D weight gradients)
    and Adam carries the rounding differences forward.  So a third, straight run measures that noise and
    the resumed run must be within max(10 x noise, 1e-5): a broken resume (lost moments, wrong step counter
    or learning rate, other data) moves weights by about the learning rate (1e-3) per step, orders of
    magnitude more.  With deterministic kernels the noise is 0 and the test asks for (nearly) bit-exactness.
    Returns the measured numbers: ``max_abs_diff``, ``noise`` (CUDA only, else 0) and ``tolerance``.
    """
    half = steps // 2
    cfg = _small(tmp_path / "resumed", device, amp=amp, steps=steps, **overrides)
    first = train_stereo(dataclasses.replace(cfg, stop_at=half))
    card = json.loads(first.with_suffix(".json").read_text())
    assert card["training"]["steps"] == half and card["training"]["steps_this_run"] == half
    assert card["training"]["amp"] == amp and card["training"]["stopped_by_budget"] is False
    latest = find_latest_checkpoint(cfg.out_dir)
    assert latest is not None and read_state(latest)["step"] == half
    resumed = train_stereo(cfg)
    card = json.loads(resumed.with_suffix(".json").read_text())
    assert card["training"]["steps"] == steps and card["training"]["steps_this_run"] == steps - half
    straight = train_stereo(dataclasses.replace(cfg, out_dir=str(tmp_path / "straight")))

    diff = _max_abs_diff(resumed, straight)
    if torch.device(device).type == "cpu":
        a, b = load_file(str(resumed)), load_file(str(straight))
        bad = [k for k in a if not torch.equal(a[k], b[k])]
        assert not bad, f"resume not bit-exact on CPU (max |diff| {diff:.3g}) in {bad[:5]}"
        # The per-step EPE stream stored in the checkpoints matches too: the same data in the same steps.
        assert (read_state(checkpoint_paths(Path(cfg.out_dir), steps)["state"])["recent_epe"]
                == read_state(checkpoint_paths(tmp_path / "straight", steps)["state"])["recent_epe"])
        return {"max_abs_diff": diff, "noise": 0.0, "tolerance": 0.0}
    again = train_stereo(dataclasses.replace(cfg, out_dir=str(tmp_path / "straight_again")))
    noise = _max_abs_diff(again, straight)
    tolerance = max(10.0 * noise, 1e-5)
    assert diff <= tolerance, (
        f"resumed vs straight max |diff| {diff:.3g} > {tolerance:.3g} (noise {noise:.3g})"
    )
    return {"max_abs_diff": diff, "noise": noise, "tolerance": tolerance}


def run_resume_across_devices(tmp_path: Path, first: str, second: str) -> None:
    """A checkpoint written on ``first`` resumes on ``second`` (e.g. cpu -> cuda, cuda -> cpu).

    After :func:`load_checkpoint` Adam's ``step`` counters are CPU float32 tensors (where torch keeps them
    for a non-capturable, non-fused Adam; on a GPU they would cost a host sync per parameter per step), the
    moments sit on the parameters' device with exactly the saved values, and training then continues there.
    """
    cfg = _small(tmp_path / "x", first, steps=4, stop_at=2)
    train_stereo(cfg)
    latest = find_latest_checkpoint(cfg.out_dir)
    assert latest is not None
    saved = load_file(str(checkpoint_paths(Path(cfg.out_dir), 2)["optim"]))
    model = GCNet("lite").to(second)
    optimizer = torch.optim.Adam(model.parameters())
    load_checkpoint(latest, model, optimizer, second)
    for idx, param in enumerate(model.parameters()):
        state = optimizer.state[param]
        assert state["step"].device.type == "cpu" and state["step"].dtype == torch.float32
        assert float(state["step"]) == 2.0
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].device == param.device and state[key].dtype == param.dtype
            assert torch.equal(state[key].cpu(), saved[f"state.{idx}.{key}"])
    final = train_stereo(dataclasses.replace(cfg, device=second, stop_at=0))
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["training"]["steps"] == 4 and card["training"]["device"].startswith(second.split(":")[0])


@pytest.mark.slow
def test_resume_is_bit_exact_on_cpu(tmp_path: Path) -> None:
    run_train_and_resume(tmp_path, device="cpu", amp="none")


def test_resume_is_bit_exact_on_cpu_with_bf16_autocast(tmp_path: Path) -> None:
    # Few steps: this CPU has no bf16 instructions, autocast bf16 is ~7x slower than fp32 here.
    run_train_and_resume(tmp_path, device="cpu", amp="bf16", steps=4, batch_size=1)


@pytest.mark.slow
def test_resume_is_bit_exact_on_cpu_with_fp16_and_grad_scaler(tmp_path: Path) -> None:
    run_train_and_resume(tmp_path, device="cpu", amp="fp16", steps=4, batch_size=1)
    state = read_state(checkpoint_paths(tmp_path / "resumed", 2)["state"])
    assert state["grad_scaler"]["scale"] > 0  # the loss scale is checkpointed with the optimizer


@pytest.mark.slow
def test_resume_is_bit_exact_with_workers_and_crops_per_pair(tmp_path: Path) -> None:
    """Loader workers (persistent, prefetching) and two crops per rendered pair keep resume exact."""
    run_train_and_resume(tmp_path, device="cpu", amp="none", steps=4, num_workers=1, prefetch_factor=2,
                         crops_per_pair=2, image_height=48, image_width=96)


def test_resume_across_devices_keeps_adam_step_on_cpu(tmp_path: Path) -> None:
    run_resume_across_devices(tmp_path, "cpu", "cpu")


def test_amp_changes_the_run_and_none_is_plain_fp32(tmp_path: Path) -> None:
    """bf16 autocast really runs (other weights than fp32); amp none leaves the default run unchanged."""
    plain = train_stereo(_small(tmp_path / "default", "cpu", steps=2))
    none = train_stereo(_small(tmp_path / "none", "cpu", steps=2, amp="none"))
    bf16 = train_stereo(_small(tmp_path / "bf16", "cpu", steps=2, amp="bf16"))
    assert _max_abs_diff(plain, none) == 0.0
    assert _max_abs_diff(plain, bf16) > 0.0


def test_time_budget_stops_cleanly_then_resumes(tmp_path: Path) -> None:
    """A budget shorter than the start-up stops after the first step (checked after every step), writes a
    checkpoint at that step, the weights and a card that records the budget; a second run continues."""
    out = tmp_path / "budget"
    cfg = _small(out, "cpu", steps=5, minutes=1e-4)
    final = train_stereo(cfg)
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["training"]["stopped_by_budget"] is True
    assert card["training"]["steps"] == 1 and card["training"]["steps_planned"] == 5
    assert card["training"]["minutes_budget"] == 1e-4
    assert read_state(find_latest_checkpoint(out))["step"] == 1  # type: ignore[arg-type]
    final = train_stereo(dataclasses.replace(cfg, minutes=0.0))
    card = json.loads(final.with_suffix(".json").read_text())
    assert card["training"]["steps"] == 5 and card["training"]["stopped_by_budget"] is False
    assert card["metrics"]["samples_per_s"] > 0
    rows = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 3, 5]  # log_every 3, and at each run's last step
    assert all(r["samples_per_s"] > 0 and 0.0 <= r["data_wait_frac"] <= 1.0 for r in rows)
    assert {"loss", "epe", "l1", "nll", "lr", "pairs_per_s"} <= rows[-1].keys()


def test_multi_crop_items_are_windows_of_one_rendered_pair() -> None:
    base = ProceduralStereoDataset(length=4, width=96, height=48, max_disparity=24.0, crop=(32, 64), seed=3)
    data = MultiCropStereoDataset(base, 3)
    item = data[1]
    assert item["left"].shape == (3, 3, 32, 64) and item["valid"].shape == (3, 1, 32, 64)
    full = base.sample(1)
    left = torch.from_numpy(full.left).permute(2, 0, 1).float().div(255.0)
    disp = torch.from_numpy(full.disparity)
    windows = []
    for c in range(3):
        hits = [(y, x) for y in range(48 - 32 + 1) for x in range(96 - 64 + 1)
                if torch.equal(left[:, y:y + 32, x:x + 64], item["left"][c])
                and torch.equal(disp[y:y + 32, x:x + 64], item["disparity"][c, 0])]
        assert hits, f"crop {c} is not a window of the rendered pair"
        windows.append(hits[0])
    assert len(set(windows)) > 1  # random windows, not one crop repeated
    again = data[1]
    assert all(torch.equal(again[k], item[k]) for k in item)  # index-seeded: the same in every worker


def test_default_num_workers() -> None:
    assert default_num_workers(torch.device("cpu"), cores=16) == 0
    assert default_num_workers(torch.device("cuda"), cores=16, local_ranks=1) == 14
    assert default_num_workers(torch.device("cuda"), cores=16, local_ranks=2) == 6
    assert default_num_workers(torch.device("cuda"), cores=2, local_ranks=1) == 1


def test_cli_flags_reach_the_config() -> None:
    ns = vars(build_parser().parse_args([
        "--amp", "fp16", "--minutes", "2.5", "--num-workers", "14", "--prefetch-factor", "2",
        "--crops-per-pair", "4", "--stop-at", "7", "--log-every", "25", "--no-cudnn-benchmark"]))
    ns.pop("log_level")
    cfg = TrainConfig(**ns)
    assert (cfg.amp, cfg.minutes, cfg.num_workers, cfg.prefetch_factor, cfg.crops_per_pair, cfg.stop_at,
            cfg.log_every, cfg.cudnn_benchmark) == ("fp16", 2.5, 14, 2, 4, 7, 25, False)
    defaults = TrainConfig()
    assert (defaults.amp, defaults.num_workers, defaults.crops_per_pair, defaults.minutes) == (
        "none", None, 1, 0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--amp", "fp8"])
