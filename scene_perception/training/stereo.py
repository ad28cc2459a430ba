"""Train a GC-Net stereo model on procedural pairs (supervised or self-supervised), resumably.

Why it looks like this:

* Data are rendered on the fly by :mod:`scene_perception.data.procedural` with an index-seeded dataset, so
  step ``k`` always sees the same batch: a run interrupted and resumed from a checkpoint follows the same
  trajectory (up to floating-point non-determinism) without saving any data-loader state.
* Checkpoints are safetensors (no pickles: a checkpoint may come from a shared drive) plus a small JSON
  with the step, seed, config and optimizer hyper-parameters.  The JSON is written last, so its presence
  marks a complete checkpoint and a crash mid-save is ignored at resume time.
* The final weights go through :func:`scene_perception.models.weights.save_stereo_model`, which writes the
  model card (sha256, config, training record) the runtime loader verifies.
* Multi-GPU is plain torchrun DDP: with ``WORLD_SIZE > 1`` in the environment each rank draws its own
  disjoint samples and rank 0 alone writes files.

Supervised objective: smooth-L1 on disparity + ``nll_weight`` * Laplace NLL for the uncertainty head
(+ ``volume_weight`` * cross-entropy of the cost-volume distribution against the ground-truth level).
Self-supervised objective (no labels): SSIM+L1 photometric reprojection in both views, edge-aware
smoothness and left-right consistency, with the right view's disparity obtained from the same network on
horizontally flipped, swapped images; the uncertainty head learns to predict the left-right disagreement.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from scene_perception.data.procedural import ProceduralStereoDataset, SceneConfig
from scene_perception.losses.stereo import (
    cost_volume_cross_entropy,
    disparity_smoothness,
    laplace_nll,
    left_right_consistency,
    masked_mean,
    photometric_loss,
    smooth_l1_disparity,
    warp_horizontal,
)
from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import save_stereo_model
from scene_perception.training.checkpoints import (
    check_resume_config,
    dataclass_parser,
    find_latest_checkpoint,
    load_checkpoint,
    parse_cli,
    save_checkpoint,
    schedule_lr,
    warm_start,
)

__all__ = ["TrainConfig", "build_parser", "find_latest_checkpoint", "main", "train_stereo"]

_LOG = logging.getLogger(__name__)

DATA_DESCRIPTION = "procedural synthetic (scene_perception.data.procedural)"
_EPE_WINDOW = 50  # steps averaged for the reported "final train EPE"


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in checkpoints and in the model card."""

    model: str = field(default="lite", metadata={"help": "GC-Net config name (lite | paper)"})
    mode: str = field(default="supervised", metadata={"help": "supervised | self_supervised"})
    steps: int = field(default=2000, metadata={"help": "total optimisation steps (resume counts on)"})
    batch_size: int = field(default=2, metadata={"help": "pairs per step (per process under DDP)"})
    crop_height: int = field(default=256, metadata={"help": "training crop height (x size_divisor)"})
    crop_width: int = field(default=512, metadata={"help": "training crop width (x size_divisor)"})
    image_height: int | None = field(default=None, metadata={"help": "rendered height (default: crop)"})
    image_width: int | None = field(default=None, metadata={"help": "rendered width (default: crop)"})
    lr: float = field(default=1e-3, metadata={"help": "peak Adam learning rate"})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine | step | constant"})
    warmup_steps: int = field(default=50, metadata={"help": "linear learning-rate warm-up steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "Adam L2 weight decay"})
    grad_clip: float = field(default=5.0, metadata={"help": "gradient norm clip (0 disables)"})
    nll_weight: float = field(default=0.1, metadata={"help": "weight of the Laplace NLL (uncertainty) term"})
    volume_weight: float = field(
        default=0.0,
        metadata={"help": "supervised: weight of the cross-entropy of the cost-volume distribution against "
                          "the ground-truth level (losses.stereo.cost_volume_cross_entropy); 0 disables"},
    )
    smoothness_weight: float = field(default=1e-3, metadata={"help": "self-supervised: edge-aware smoothing"})
    lr_consistency_weight: float = field(
        default=1.0, metadata={"help": "self-supervised: left-right consistency (on disparity / width)"}
    )
    photometric_alpha: float = field(default=0.85, metadata={"help": "self-supervised: SSIM share"})
    max_disparity: float = field(default=96.0, metadata={"help": "largest disparity rendered (px)"})
    min_disparity: float = field(default=2.0, metadata={"help": "smallest disparity rendered (px)"})
    nuisance: bool = field(default=True, metadata={"help": "per-view gain/bias/noise on the rendered pairs"})
    sky_probability: float = field(
        default=0.0,
        metadata={"help": "share of pairs with sky (at infinity, disparity 0) above a horizon, so the "
                          "network learns that flat sky is far instead of guessing a few px"},
    )
    augment: bool = field(
        default=False,
        metadata={"help": "real-camera augmentation (asymmetric gamma/saturation, blur, JPEG, y-jitter, "
                          "eraser on the right view; scene_perception.data.augment)"},
    )
    texture_dir: str | None = field(
        default=None, metadata={"help": "optional photo textures (never images with stereo ground truth)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the weights init and of the data"})
    init_weights: str | None = field(
        default=None,
        metadata={"help": "warm start from these .safetensors weights (tensors whose name and shape match; "
                          "new layers, e.g. a refinement stage, keep their init); ignored when resuming"},
    )
    out_dir: str = field(default="runs/stereo", metadata={"help": "checkpoints and final weights go here"})
    output_name: str | None = field(
        default=None, metadata={"help": "final weights file stem (default: the model config name)"}
    )
    checkpoint_every: int = field(default=100, metadata={"help": "steps between checkpoints"})
    keep_checkpoints: int = field(default=3, metadata={"help": "checkpoints kept on disk (oldest deleted)"})
    num_threads: int = field(default=0, metadata={"help": "torch/OpenCV CPU threads (0: library default)"})
    num_workers: int = field(default=0, metadata={"help": "data-loader worker processes"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def validate(self) -> None:
        """Fail before any work with a message naming the bad field."""
        if self.model not in CONFIGS:
            raise ValueError(f"unknown model {self.model!r}; known: {sorted(CONFIGS)}")
        if self.mode not in ("supervised", "self_supervised"):
            raise ValueError(f"mode must be 'supervised' or 'self_supervised', got {self.mode!r}")
        if self.lr_schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"lr_schedule must be cosine, step or constant, got {self.lr_schedule!r}")
        if self.volume_weight < 0:
            raise ValueError(f"volume_weight must be >= 0, got {self.volume_weight}")
        for name in ("steps", "batch_size", "crop_height", "crop_width", "checkpoint_every",
                     "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        div = CONFIGS[self.model].size_divisor
        if self.crop_height % div or self.crop_width % div:
            raise ValueError(
                f"crop {self.crop_height}x{self.crop_width} must be a multiple of the {self.model!r} model's "
                f"size_divisor {div}"
            )
        h, w = self.render_size
        if h < self.crop_height or w < self.crop_width:
            raise ValueError(
                f"rendered size {h}x{w} is smaller than the crop {self.crop_height}x{self.crop_width}"
            )
        if not 0 < self.min_disparity < self.max_disparity:
            raise ValueError(
                f"need 0 < min_disparity < max_disparity, got {self.min_disparity}, {self.max_disparity}"
            )
        if not 0.0 <= self.sky_probability <= 1.0:
            raise ValueError(f"sky_probability must be in [0, 1], got {self.sky_probability}")
        if self.max_disparity >= CONFIGS[self.model].max_disparity:
            raise ValueError(
                f"max_disparity {self.max_disparity} must be below the {self.model!r} model's range "
                f"{CONFIGS[self.model].max_disparity}"
            )

    @property
    def render_size(self) -> tuple[int, int]:
        """(height, width) the pairs are rendered at before cropping."""
        return (self.image_height or self.crop_height, self.image_width or self.crop_width)

    @property
    def final_name(self) -> str:
        return self.output_name or self.model


# ------------------------------------------------------------------------------------------- helpers
def learning_rate(config: TrainConfig, step: int) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine down to 2 % (or x0.5 at 50 % and 75 %).

    A pure function of the step (instead of a scheduler object) so resuming needs no scheduler state.
    """
    return schedule_lr(config.lr, step, config.steps, config.warmup_steps, config.lr_schedule)


def _save_checkpoint(out_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                     config: TrainConfig, recent_epe: list[float], keep: int) -> Path:
    extra = {"seed": config.seed, "config": asdict(config), "recent_epe": recent_epe[-_EPE_WINDOW:]}
    return save_checkpoint(out_dir, step, model, optimizer, {"config": config.model}, extra, keep)


def _load_checkpoint(state_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     config: TrainConfig, device: torch.device) -> tuple[int, list[float]]:
    check_resume_config(state_path, config, ("model", "mode"))
    state = load_checkpoint(state_path, model, optimizer, device)
    return int(state["step"]), [float(v) for v in state.get("recent_epe", [])]


def _setup_distributed(config: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); initialises the process group under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if config.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(config.device)
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _flip(x: Tensor) -> Tensor:
    return torch.flip(x, dims=[3])


def _supervised_loss(config: TrainConfig, disp: Tensor, log_scale: Tensor, gt: Tensor, valid: Tensor
                     ) -> tuple[Tensor, dict[str, float]]:
    """Smooth L1 + weighted Laplace NLL.

    The NLL sees a detached disparity: the smooth-L1 term alone shapes the disparity, so the uncertainty
    head cannot lower the loss by down-weighting hard pixels' disparity gradients (loss attenuation); it
    only learns to predict the error.
    """
    l1 = smooth_l1_disparity(disp, gt, valid)
    nll = laplace_nll(disp.detach(), log_scale, gt, valid)
    return l1 + config.nll_weight * nll, {"l1": l1.item(), "nll": nll.item()}


def _self_supervised_loss(config: TrainConfig, model: nn.Module, left: Tensor, right: Tensor
                          ) -> tuple[Tensor, Tensor, dict[str, float]]:
    """Photometric + smoothness + left-right consistency; returns (loss, left disparity, parts).

    The right view's disparity comes from the same network on ``(flip(right), flip(left))``: mirrored,
    the right image becomes a "left" image whose matches lie at ``x - d``.  Both passes run as one batch
    (one forward per step keeps DDP's gradient bookkeeping simple and is faster).
    """
    b, _, _, w = left.shape
    disp_all, logs_all = model(torch.cat([left, _flip(right)]), torch.cat([right, _flip(left)]))
    disp_l, disp_r_flipped = disp_all[:b], disp_all[b:]
    log_scale_l = logs_all[:b]
    disp_r = _flip(disp_r_flipped)
    alpha = config.photometric_alpha
    photo_l, _ = photometric_loss(left, right, disp_l, alpha)
    photo_r, _ = photometric_loss(_flip(right), _flip(left), disp_r_flipped, alpha)
    smooth = disparity_smoothness(disp_l, left) + disparity_smoothness(disp_r_flipped, _flip(right))
    # On disparity / width (Godard et al.'s units) so the weight does not depend on the image size.
    lr_term = left_right_consistency(disp_l / w, disp_r / w)
    # Uncertainty without labels: learn to predict the left-right disagreement, an error proxy.
    target = warp_horizontal(disp_r, disp_l, -1.0).detach()
    nll = laplace_nll(disp_l.detach(), log_scale_l, target)
    loss = (photo_l + photo_r + config.smoothness_weight * smooth + config.lr_consistency_weight * lr_term
            + config.nll_weight * nll)
    parts = {"photo": (photo_l + photo_r).item() / 2, "smooth": smooth.item(), "lrc": lr_term.item(),
             "nll": nll.item()}
    return loss, disp_l, parts


# ------------------------------------------------------------------------------------------- training
def train_stereo(config: TrainConfig) -> Path:
    """Train (or resume) and return the path of the final ``.safetensors`` weights (with model card).

    Resumes from the newest complete checkpoint in ``config.out_dir/checkpoints`` when there is one; a
    run whose checkpoint already reached ``config.steps`` only (re)writes the final weights.
    """
    config.validate()
    if config.num_threads > 0:
        import cv2

        torch.set_num_threads(config.num_threads)
        cv2.setNumThreads(config.num_threads)
    rank, world, device = _setup_distributed(config)
    out_dir = Path(config.out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    model = GCNet(CONFIGS[config.model]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start, recent_epe = 0, []
    latest = find_latest_checkpoint(out_dir)
    if latest is not None:
        start, recent_epe = _load_checkpoint(latest, model, optimizer, config, device)
        if rank == 0:
            _LOG.info("resuming from %s at step %d", latest, start)
    elif config.init_weights:
        warm_start(model, Path(config.init_weights), log=rank == 0)
    start = min(start, config.steps)

    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    h, w = config.render_size
    per_step = config.batch_size * world
    dataset = ProceduralStereoDataset(
        length=max(1, config.steps * per_step), width=w, height=h, max_disparity=config.max_disparity,
        min_disparity=config.min_disparity, seed=config.seed, crop=(config.crop_height, config.crop_width),
        nuisance=config.nuisance, texture_dir=config.texture_dir, augment=config.augment,
        scene=SceneConfig(sky_probability=config.sky_probability),
    )
    # Sample index = (step * world + rank) * batch + i: deterministic per step, disjoint across ranks.
    indices = [(s * world + rank) * config.batch_size + i for s in range(start, config.steps)
               for i in range(config.batch_size)]
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=indices,
                        num_workers=config.num_workers, pin_memory=device.type == "cuda", drop_last=False)

    from tqdm import tqdm

    bar = tqdm(total=config.steps, initial=start, disable=not config.progress or rank != 0,
               desc=f"train {config.model} ({config.mode})", dynamic_ncols=True)
    net.train()
    step = start
    last_loss = float("nan")
    for batch in loader:
        left = batch["left"].to(device, non_blocking=True)
        right = batch["right"].to(device, non_blocking=True)
        gt = batch["disparity"].to(device, non_blocking=True)
        valid = batch["valid"].to(device, non_blocking=True) & (gt < model.max_disparity)
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr

        if config.mode == "supervised" and config.volume_weight > 0:
            disp, log_scale, cost = net(left, right, return_cost=True)
            loss, parts = _supervised_loss(config, disp, log_scale, gt, valid)
            volume = cost_volume_cross_entropy(cost, gt, valid, model.cost_stride)
            loss = loss + config.volume_weight * volume
            parts["volume"] = volume.item()
        elif config.mode == "supervised":
            disp, log_scale = net(left, right)
            loss, parts = _supervised_loss(config, disp, log_scale, gt, valid)
        else:
            loss, disp, parts = _self_supervised_loss(config, net, left, right)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

        with torch.no_grad():  # monitoring only: labels never enter the self-supervised loss
            epe = float(masked_mean((disp.detach() - torch.where(valid, gt, disp.detach())).abs(), valid))
        last_loss = loss.item()
        if not math.isfinite(last_loss):
            raise FloatingPointError(f"loss became {last_loss} at step {step}; lower lr or check the data")
        recent_epe = (recent_epe + [epe])[-_EPE_WINDOW:]
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.3f}", epe=f"{epe:.2f}", lr=f"{lr:.1e}",
                        **{k: f"{v:.3f}" for k, v in parts.items()})
        if rank == 0 and (step % config.checkpoint_every == 0 or step == config.steps):
            _save_checkpoint(out_dir, step, model, optimizer, config, recent_epe, config.keep_checkpoints)
    bar.close()

    final_epe = float(sum(recent_epe) / len(recent_epe)) if recent_epe else float("nan")
    final_path = out_dir / f"{config.final_name}.safetensors"
    if rank == 0:
        if latest is None or step > start:
            _LOG.info("trained %d steps; mean train EPE over the last %d steps: %.3f px", step - start,
                      len(recent_epe), final_epe)
        training = {
            "config": asdict(config),
            "data": DATA_DESCRIPTION,
            "mode": config.mode,
            "steps": step,
            "world_size": world,
            "device": str(device),
            "torch": torch.__version__,
        }
        metrics = {"train_epe_px": final_epe, "train_epe_window_steps": len(recent_epe)}
        card = {"name": config.final_name, "trained": True, "training": training, "metrics": metrics}
        save_stereo_model(model, final_path, card)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return final_path


# ------------------------------------------------------------------------------------------- CLI
def build_parser(prog: str = "scene-perception train stereo") -> argparse.ArgumentParser:
    """Argument parser generated from :class:`TrainConfig`, so the CLI cannot drift from the config."""
    return dataclass_parser(TrainConfig, prog, __doc__.split("\n\n")[0])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``scene-perception train stereo ...`` delegates here); returns the exit code."""
    ns = parse_cli(build_parser(), sys.argv[1:] if argv is None else argv)
    config = TrainConfig(**ns)
    try:
        path = train_stereo(config)
    except (ValueError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
