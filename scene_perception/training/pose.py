"""Train PoseNet on one drive (a rosbag2 bag with images and GT poses), resumably.

``scene-perception train pose --bag DIR --loss homoscedastic|reprojection ...``

Why it looks like this:

* The whole drive is loaded once (:func:`~scene_perception.data.pose_frames.load_pose_frames`) and step
  ``k`` draws its batch, its photometric augmentation and its dropout masks from ``rng(seed, k)``: a run
  interrupted and resumed from a checkpoint is the same run, with no loader or RNG state to save.
* Only the training bag is ever read here.  PoseNet relocalises within *one* scene, so the held-out set
  is another drive through the same world (``scene-perception synth --trajectory-seed/--lateral-offset``);
  it is read only by the evaluation (``benchmarks/pose_accuracy.py``).
* ``--loss reprojection`` starts with ``reprojection_warmup_steps`` of the homoscedastic loss, as Kendall
  & Cipolla initialise the reprojection loss from a model trained with the basic loss (from a random start
  the projected points are far off, often behind the camera, and the loss barely trains).  The warm-up
  counts inside ``steps``, so both losses get the same budget.  At the switch Adam's moments restart and
  the learning rate re-warms, because the reprojection gradients are on another scale (pixels).
* Dropout is on while training (it is what MC sampling later samples), so the reprojection loss is
  minimised *under dropout noise*, where a rotation jitter costs many pixels; measured on the training
  drive, the homoscedastic model's reprojection loss is 11 px without dropout but 39 px with it, the
  reprojection-trained model's 19 / 24 px: it trades accuracy for robustness to its own dropout.
* Checkpoints (:mod:`scene_perception.training.checkpoints`) hold the network *and* the learned
  ``sx, sq``; the final weights (network only) go through
  :func:`~scene_perception.models.weights.save_model` with a model card recording the command, the data
  (the bag's synth settings), the steps and the training-set errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from scene_perception.data.bag_io import BagReadError
from scene_perception.data.pose_frames import PoseFrames, load_pose_frames
from scene_perception.geometry.rotations import mean_quaternion, quaternion_angle_deg
from scene_perception.losses.pose import HomoscedasticPoseLoss, reprojection_loss
from scene_perception.models.posenet import CONFIGS, PoseNet
from scene_perception.models.weights import save_model
from scene_perception.training.checkpoints import dataclass_parser, parse_cli, save_checkpoint, train_device
from scene_perception.training.loop import (
    begin_run,
    check_finite,
    checkpoint_due,
    learning_rate,
    optimizer_step,
    progress_bar,
    resume,
    run_record,
    set_learning_rate,
    validate_common,
)

__all__ = ["PoseTrainConfig", "build_parser", "main", "predict", "train_pose"]

_LOG = logging.getLogger(__name__)
_WINDOW = 50  # steps averaged for the reported final training loss
LOSSES = ("homoscedastic", "reprojection")


@dataclass
class PoseTrainConfig:
    """Everything that defines a PoseNet training run; stored in checkpoints and in the model card."""

    bag: str = field(default="", metadata={"help": "training bag (images, camera_info, /gt/pose, /gt/depth)"})
    loss: str = field(default="homoscedastic", metadata={"help": "homoscedastic | reprojection"})
    model: str = field(default="posenet", metadata={"help": "PoseNet config name (posenet | tiny)"})
    dropout: float | None = field(default=None, metadata={"help": "override the config's dropout"})
    steps: int = field(default=2000, metadata={"help": "total optimisation steps (resume counts on)"})
    batch_size: int = field(default=16, metadata={"help": "frames per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak Adam learning rate"})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine | step | constant"})
    warmup_steps: int = field(default=50, metadata={"help": "linear learning-rate warm-up steps"})
    weight_decay: float = field(default=1e-4, metadata={"help": "Adam L2 weight decay"})
    grad_clip: float = field(default=5.0, metadata={"help": "gradient norm clip (0 disables)"})
    reprojection_warmup_steps: int = field(
        default=500, metadata={"help": "reprojection loss: first steps use the homoscedastic loss (init)"})
    points_per_frame: int = field(default=256, metadata={"help": "scene points per frame (GT depth)"})
    max_point_depth: float = field(default=60.0, metadata={"help": "farther scene points are unused (m)"})
    clip_px: float = field(default=50.0, metadata={"help": "reprojection distance turns logarithmic here"})
    augment: bool = field(default=True, metadata={"help": "photometric gain/bias/gamma/noise per image"})
    max_frames: int | None = field(default=None, metadata={"help": "use only the first N frames of the bag"})
    seed: int = field(default=0, metadata={"help": "seed of the weights init, batches and augmentation"})
    out_dir: str = field(default="runs/pose", metadata={"help": "checkpoints and final weights go here"})
    output_name: str = field(default="posenet", metadata={"help": "final weights file stem"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    keep_checkpoints: int = field(default=3, metadata={"help": "checkpoints kept on disk (oldest deleted)"})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads (0: library default)"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda | cuda:N | auto"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def validate(self) -> None:
        """Fail before any work with a message naming the bad field."""
        if not self.bag:
            raise ValueError("--bag is required")
        validate_common(self)
        if self.model not in CONFIGS:
            raise ValueError(f"unknown model {self.model!r}; known: {sorted(CONFIGS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.loss == "reprojection" and self.points_per_frame < 1:
            raise ValueError("the reprojection loss needs points_per_frame >= 1")


def _augment(images: Tensor, rng: np.random.Generator) -> Tensor:
    """Per-image gain, bias, gamma and noise: lighting changes must not move the predicted pose."""
    b = images.shape[0]
    gain = torch.from_numpy(rng.uniform(0.7, 1.3, (b, 1, 1, 1)).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-0.08, 0.08, (b, 1, 1, 1)).astype(np.float32))
    gamma = torch.from_numpy(rng.uniform(0.8, 1.25, (b, 1, 1, 1)).astype(np.float32))
    noise = torch.from_numpy(rng.normal(0.0, 0.02, images.shape).astype(np.float32))
    return (images.clamp(0, 1) ** gamma * gain + bias + noise).clamp(0, 1)


def _batch(frames: PoseFrames, idx: np.ndarray, device: torch.device) -> dict[str, Tensor]:
    return {
        "image": torch.from_numpy(frames.images[idx]).permute(0, 3, 1, 2).float().div(255.0).to(device),
        "position": torch.from_numpy(frames.positions[idx]).float().to(device),
        "quaternion": torch.from_numpy(frames.quaternions[idx]).float().to(device),
        "points": torch.from_numpy(frames.points[idx]).to(device),
        "valid": torch.from_numpy(frames.points_valid[idx]).to(device),
    }


def _build_model(config: PoseTrainConfig, frames: PoseFrames) -> PoseNet:
    """The config's architecture with the output normalisation of this drive (and optional dropout)."""
    cfg = CONFIGS[config.model]
    mean = frames.positions.mean(0)
    # Per-axis spread, floored: the height varies by centimetres, and a tiny scale would amplify noise.
    scale = np.maximum(frames.positions.std(0), 0.1)
    changes: dict[str, Any] = {"position_mean": tuple(float(v) for v in mean),
                               "position_scale": tuple(float(v) for v in scale)}
    if config.dropout is not None:
        changes["dropout"] = float(config.dropout)
    model = PoseNet(dataclasses.replace(cfg, **changes))
    with torch.no_grad():  # start at the drive's mean orientation
        model.quaternion_head.bias.copy_(torch.from_numpy(mean_quaternion(frames.quaternions)).float())
    return model


@torch.no_grad()
def predict(model: PoseNet, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (dropout off) poses of ``(N, H, W, 3)`` uint8 images at the model's input size."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pos, quat = [], []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2).float().div(255.0).to(device)
        p, q = model(x)
        pos.append(p.cpu().numpy())
        quat.append(q.cpu().numpy())
    model.train(was_training)
    return np.concatenate(pos).astype(np.float64), np.concatenate(quat).astype(np.float64)


def _training_errors(model: PoseNet, frames: PoseFrames) -> dict[str, float]:
    pos, quat = predict(model, frames.images)
    t_err = np.linalg.norm(pos - frames.positions, axis=1)
    r_err = quaternion_angle_deg(quat, frames.quaternions)
    return {"train_median_translation_m": float(np.median(t_err)),
            "train_median_rotation_deg": float(np.median(r_err))}


def train_pose(config: PoseTrainConfig, command: str | None = None) -> Path:
    """Train (or resume) and return the final ``.safetensors`` path (model card beside it)."""
    out_dir = begin_run(config)
    device = train_device(config.device)
    cfg = CONFIGS[config.model]
    t_load = time.perf_counter()
    frames = load_pose_frames(config.bag, (cfg.input_height, cfg.input_width), config.points_per_frame,
                              config.max_point_depth, seed=config.seed, max_frames=config.max_frames)
    _LOG.info("loaded %d frames from %s in %.1f s", len(frames), config.bag, time.perf_counter() - t_load)

    torch.manual_seed(config.seed)
    model = _build_model(config, frames).to(device)
    criterion = HomoscedasticPoseLoss().to(device)
    trainable = nn.ModuleDict({"net": model, "loss": criterion})  # sx, sq are trained and checkpointed
    optimizer = torch.optim.Adam(trainable.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    keys = ("bag", "loss", "model", "seed", "batch_size", "max_frames", "dropout")
    start, state = resume(out_dir, config, trainable, optimizer, keys)
    recent = [float(v) for v in (state or {}).get("recent_loss", [])]

    intrinsics = torch.from_numpy(frames.intrinsics).float().to(device)
    bar = progress_bar(config, start, f"train pose ({config.loss})")
    trainable.train()
    n = len(frames)
    step = start
    switch = config.reprojection_warmup_steps if config.loss == "reprojection" else None
    t0 = time.perf_counter()
    for step in range(start, config.steps):
        # Kept apart from the other loops (training/loop.py says why): this recipe defines the batches.
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, step, 0x9053]))
        torch.manual_seed(int(rng.integers(2**62)))  # dropout masks too: a resumed run is the same run
        idx = rng.choice(n, size=config.batch_size, replace=n < config.batch_size)
        batch = _batch(frames, idx, device)
        image = _augment(batch["image"], rng) if config.augment else batch["image"]
        lr = learning_rate(config, step)
        if switch is not None:
            if step == switch:
                # New loss, new gradient scale (pixels, not metres): Adam's second moments from the warm-up
                # adapt only over ~1/(1-beta2) = 1000 steps, so restart them and re-warm the learning rate.
                optimizer.state.clear()
            if step >= switch and config.warmup_steps > 0:
                lr *= min(1.0, (step - switch + 1) / config.warmup_steps)
        set_learning_rate(optimizer, lr)
        position, quaternion = model(image)
        if config.loss == "reprojection" and step >= config.reprojection_warmup_steps:
            loss, parts = reprojection_loss(position, quaternion, batch["position"], batch["quaternion"],
                                            batch["points"], intrinsics, batch["valid"], config.clip_px)
        else:
            loss, parts = criterion(position, quaternion, batch["position"], batch["quaternion"])
        optimizer_step(loss, optimizer, trainable.parameters(), config.grad_clip)
        value = loss.item()
        check_finite(value, step)
        recent = (recent + [value])[-_WINDOW:]
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.1e}", **{k: f"{v:.3f}" for k, v in parts.items()})
        done = step + 1
        if checkpoint_due(done, config.checkpoint_every, config.steps):
            extra = {"config": asdict(config), "recent_loss": recent, "sx": criterion.sx.item(),
                     "sq": criterion.sq.item()}
            save_checkpoint(out_dir, done, trainable, optimizer, {"config": config.model}, extra,
                            config.keep_checkpoints)
        step = done
    bar.close()
    train_seconds = time.perf_counter() - t0

    final_path = out_dir / f"{config.output_name}.safetensors"
    metrics = {"train_loss_window_mean": float(np.mean(recent)) if recent else float("nan"),
               **_training_errors(model, frames)}
    training = run_record(
        config, device, step, command or "scene-perception train pose " + " ".join(_as_argv(config)),
        data={"bag": str(config.bag), "frames": len(frames), "synth": frames.settings,
              "intrinsics_fx_fy_cx_cy": [float(v) for v in frames.intrinsics]},
        loss=config.loss, learned_sx=criterion.sx.item(), learned_sq=criterion.sq.item(),
        seconds_this_session=round(train_seconds, 1),
    )
    card = {"name": config.output_name, "architecture": "posenet", "trained": True, "training": training,
            "metrics": metrics}
    save_model(model, final_path, card)
    _LOG.info("wrote %s (train median errors %.2f m, %.2f deg)", final_path,
              metrics["train_median_translation_m"], metrics["train_median_rotation_deg"])
    return final_path


def _as_argv(config: PoseTrainConfig) -> list[str]:
    """The flags that reproduce ``config`` (non-default values only)."""
    out: list[str] = []
    default = PoseTrainConfig()
    for f in dataclasses.fields(PoseTrainConfig):
        value = getattr(config, f.name)
        if value == getattr(default, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            out += [flag, str(value)]
    return out


def build_parser(prog: str = "scene-perception train pose") -> argparse.ArgumentParser:
    """Argument parser generated from :class:`PoseTrainConfig`, so the CLI cannot drift from the config."""
    return dataclass_parser(PoseTrainConfig, prog, __doc__.split("\n\n")[0], choices={"loss": LOSSES},
                            required=("bag",))


def main(argv: Sequence[str] | None = None) -> int:
    """``scene-perception train pose ...``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    ns = parse_cli(build_parser(), args)
    config = PoseTrainConfig(**ns)
    try:
        path = train_pose(config, command="scene-perception train pose " + " ".join(args))
    except (ValueError, FloatingPointError, OSError, BagReadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
