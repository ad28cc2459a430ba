"""The shared training skeleton (training/loop.py): each step does what the three loops rely on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from scene_perception.training.checkpoints import save_checkpoint
from scene_perception.training.loop import (
    begin_run,
    check_finite,
    checkpoint_due,
    learning_rate,
    optimizer_step,
    resume,
    run_record,
    set_learning_rate,
)
from scene_perception.training.multitask import SceneTrainConfig
from scene_perception.training.pose import PoseTrainConfig
from scene_perception.training.stereo import TrainConfig

CONFIGS = [TrainConfig, SceneTrainConfig, lambda **kw: PoseTrainConfig(bag="some.bag", **kw)]


@pytest.mark.parametrize("make", CONFIGS, ids=["stereo", "scene", "pose"])
@pytest.mark.parametrize(("field", "value", "message"), [
    ("lr_schedule", "linear", "lr_schedule must be cosine, step or constant"),
    ("steps", 0, "steps must be > 0"),
    ("checkpoint_every", 0, "checkpoint_every must be > 0"),
    ("lr", 0.0, "lr must be > 0"),
    ("grad_clip", -1.0, "grad_clip must be >= 0"),
    ("warmup_steps", -5, "warmup_steps must be >= 0"),
])
def test_every_config_refuses_bad_shared_fields_alike(make, field: str, value: object, message: str,
                                                        tmp_path: Path) -> None:
    make().validate()  # the defaults are valid
    with pytest.raises(ValueError, match=message):
        begin_run(make(**{field: value, "out_dir": str(tmp_path / "run")}))
    assert not (tmp_path / "run").exists()  # refused before anything was created


def test_begin_run_creates_the_output_folder(tmp_path: Path) -> None:
    out = begin_run(SceneTrainConfig(out_dir=str(tmp_path / "a" / "b"), num_threads=0))
    assert out == tmp_path / "a" / "b" and out.is_dir()
    assert not begin_run(TrainConfig(out_dir=str(tmp_path / "c")), make_out_dir=False).exists()


def test_learning_rate_is_the_same_schedule_for_every_loop() -> None:
    for make in CONFIGS:
        cfg = make(lr=1e-3, steps=100, warmup_steps=10, lr_schedule="cosine")
        assert learning_rate(cfg, 0) == pytest.approx(1e-4)
        assert learning_rate(cfg, 10) == pytest.approx(1e-3)
        assert learning_rate(cfg, 100) == pytest.approx(2e-5)


def test_set_learning_rate_keeps_each_groups_scale() -> None:
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [a]}, {"params": [b], "lr_scale": 25.0}], lr=1.0)
    set_learning_rate(opt, 2e-3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-3, 5e-2])


def test_optimizer_step_clips_the_gradient_norm() -> None:
    w = nn.Parameter(torch.zeros(4))
    opt = torch.optim.SGD([w], lr=1.0)
    optimizer_step((w * torch.tensor([30.0, 40.0, 0.0, 0.0])).sum(), opt, [w], grad_clip=5.0)
    assert w.detach().tolist() == pytest.approx([-3.0, -4.0, 0.0, 0.0])  # gradient norm 50 -> 5
    optimizer_step((w * torch.tensor([30.0, 40.0, 0.0, 0.0])).sum(), opt, [w], grad_clip=0.0)
    assert w.detach().tolist() == pytest.approx([-33.0, -44.0, 0.0, 0.0])  # 0: unclipped


def test_a_disabled_grad_scaler_changes_nothing() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3)
    runs = []
    for scaler in (None, torch.amp.GradScaler("cpu", enabled=False)):
        torch.manual_seed(1)
        net = nn.Linear(3, 1)
        opt = torch.optim.Adam(net.parameters(), lr=0.1)
        for _ in range(3):
            optimizer_step(net(x).square().mean(), opt, net.parameters(), 0.5, scaler)
        runs.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_resume_restores_the_newest_checkpoint_and_refuses_another_run(tmp_path: Path) -> None:
    cfg = SceneTrainConfig(out_dir=str(tmp_path), steps=50)
    net = nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    assert resume(tmp_path, cfg, net, opt, ("model",)) == (0, None)
    optimizer_step(net(torch.ones(1, 2)).sum(), opt, net.parameters(), 0.0)
    save_checkpoint(tmp_path, 80, net, opt, None, {"config": {"model": "scene"}, "note": 7}, keep=2)
    fresh = nn.Linear(2, 2)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    start, state = resume(tmp_path, cfg, fresh, fresh_opt, ("model",))
    assert start == 50  # capped at the run's steps: a finished run only rewrites its weights
    assert state is not None and state["note"] == 7 and state["step"] == 80
    assert torch.equal(fresh.weight, net.weight)
    assert fresh_opt.state_dict()["state"][0]["exp_avg"].abs().sum() > 0
    with pytest.raises(ValueError, match="model='scene' but this run asks for 'tiny'"):
        resume(tmp_path, SceneTrainConfig(model="tiny"), fresh, fresh_opt, ("model",))


def test_check_finite_names_the_step() -> None:
    check_finite(1.5, 3)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(FloatingPointError, match="at step 12"):
            check_finite(bad, 12)


def test_checkpoint_due_every_n_and_at_the_end() -> None:
    assert [s for s in range(1, 26) if checkpoint_due(s, 10, 25)] == [10, 20, 25]


def test_run_record_has_the_shared_fields_then_the_loops_own() -> None:
    cfg = PoseTrainConfig(bag="x.bag", steps=7)
    record = run_record(cfg, torch.device("cpu"), 7, "scene-perception train pose --bag x.bag", loss="l")
    assert record["command"].endswith("--bag x.bag")
    assert record["config"]["bag"] == "x.bag" and record["config"]["steps"] == 7
    assert (record["steps"], record["device"], record["torch"], record["loss"]) == (7, "cpu",
                                                                                    torch.__version__, "l")
