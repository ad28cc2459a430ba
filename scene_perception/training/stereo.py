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
* For a timed run on a GPU (docs/training.md): ``amp`` runs the convolutions under autocast (bf16, or fp16
  with a gradient scaler whose state is checkpointed) while the regression and the losses stay fp32;
  ``minutes`` stops cleanly at a wall-clock budget; data-loader workers (sized to the machine on CUDA) render
  ahead, and ``crops_per_pair`` cuts several crops from each rendered pair when rendering is the bottleneck.
  The loop keeps its metrics on the device and syncs with the host only every ``log_every`` steps
  (and at checkpoints), so the GPU is never idle waiting for a ``.item()``.

Supervised objective: smooth-L1 on disparity + ``nll_weight`` * Laplace NLL for the uncertainty head
(+ ``volume_weight`` * cross-entropy of the cost-volume distribution against the ground-truth level).
Self-supervised objective (no labels): SSIM+L1 photometric reprojection in both views, edge-aware
smoothness and left-right consistency, with the right view's disparity obtained from the same network on
horizontally flipped, swapped images; the uncertainty head learns to predict the left-right disagreement.

Mixed objective (``mode="mixed"``), for real stereo without ground truth next to labelled pairs: per sample,
the supervised loss where the sample has GT (any valid pixel; ``volume_weight`` as in ``supervised``) and the
self-supervised loss where it has none, weighted ``unlabelled_weight``: ``loss = (n_gt / B) * supervised +
unlabelled_weight * (n_none / B) * self_supervised`` over a batch of B, so every sample counts alike and the
``--dataset`` weights set the mix.  One forward per step: the batch plus the flipped, swapped views of the
samples without GT.  Its photometric loss also leaves out the pixels that fail a left-right check
(``occlusion_check_px``, :func:`~scene_perception.losses.stereo.left_right_visibility`): occluded pixels have
no correct match.  :func:`~scene_perception.losses.stereo.photometric_loss` already left out the pixels whose
match falls outside the other image, but not occluded ones; ``self_supervised`` keeps its loss as before
unless ``occlusion_check_px`` is given.  The log has both parts: ``sup`` (``l1``, ``nll``, ``volume``) and
``self_sup`` (``photo``, ``smooth``, ``lrc``, ``self_nll``, ``occluded``: the share of in-view pixels
masked), each averaged over the steps that had such samples (null when none), and ``unlabelled`` (the share
of samples without GT).  A batch with GT only is exactly ``supervised``'s step; one without any, with
``occlusion_check_px 0``, exactly ``self_supervised``'s.  ``mixed`` without ``--dataset`` is refused (every
synthetic pair has GT: that is ``supervised``); with datasets but no ``folder`` one it warns.  Meant for
fine-tuning trained weights (``--init-weights``): from a random init most pixels fail the check.

Real unlabelled pairs, e.g. the opencv-doc chessboard pairs rectified by
``python -m scene_perception.data.datasets.chessboard ... --scale 0.5`` (320x240)::

    scene-perception train stereo --mode mixed --init-weights models/lite.safetensors \\
        --dataset folder:.cache/real_unlabelled/chessboard_rectified:0.25 --crop-height 192 --crop-width 320

(crops no larger than the pairs: smaller pairs are padded by edge replication, which the photometric loss
would see).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate

from scene_perception.data.augment import CAMERA_EFFECTS, AugmentConfig, augment_pair
from scene_perception.data.procedural import COVERAGE_REGIONS, ProceduralStereoDataset, SceneConfig
from scene_perception.losses.stereo import (
    cost_volume_cross_entropy,
    disparity_smoothness,
    laplace_nll,
    left_right_consistency,
    left_right_visibility,
    masked_mean,
    photometric_loss,
    smooth_l1_disparity,
    warp_horizontal,
)
from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import save_stereo_model
from scene_perception.training.checkpoints import (
    dataclass_parser,
    find_latest_checkpoint,
    parse_cli,
    save_checkpoint,
    train_device,
    warm_start,
)
from scene_perception.training.loop import (
    begin_run,
    checkpoint_due,
    learning_rate,
    optimizer_step,
    progress_bar,
    resume,
    run_record,
    set_learning_rate,
    validate_common,
)

__all__ = [
    "AMP_DTYPES",
    "MODES",
    "MultiCropStereoDataset",
    "TrainConfig",
    "build_parser",
    "default_num_workers",
    "find_latest_checkpoint",
    "learning_rate",
    "main",
    "self_supervised_loss",
    "train_stereo",
]

_LOG = logging.getLogger(__name__)

DATA_DESCRIPTION = "procedural synthetic (scene_perception.data.procedural)"
_EPE_WINDOW = 50  # steps averaged for the reported "final train EPE"
LOG_NAME = "train_log.jsonl"  # one JSON object per log interval, appended across resumes (rank 0)

#: ``--mode`` values (see the module docstring).
MODES = ("supervised", "self_supervised", "mixed")
#: ``--amp`` choices -> the autocast dtype (None: no autocast, the fp32 path bit-identical to before).
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in checkpoints and in the model card."""

    model: str = field(default="lite", metadata={"help": "GC-Net config name (lite | paper)"})
    mode: str = field(
        default="supervised",
        metadata={"help": "supervised | self_supervised | mixed (supervised loss on samples with GT, "
                          "self-supervised on those without, e.g. --dataset folder:DIR)"},
    )
    steps: int = field(default=2000, metadata={"help": "total optimisation steps (resume counts on)"})
    batch_size: int = field(
        default=2, metadata={"help": "samples (crops) per step, per process under DDP; with crops_per_pair K "
                                     "that is batch_size / K rendered pairs"}
    )
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
    unlabelled_weight: float = field(
        default=1.0,
        metadata={"help": "mixed: weight of the self-supervised loss of the samples without GT, per sample, "
                          "next to the supervised loss (weight 1) of those with GT"},
    )
    occlusion_check_px: float | None = field(
        default=None,
        metadata={"help": "self-supervised photometric loss: leave out pixels whose left and right "
                          "disparities disagree by more than max(this, 5 %% of d) px (occluded); 0 off; "
                          "default 1 in mixed, 0 in self_supervised (as before)"},
    )
    max_disparity: float = field(default=96.0, metadata={"help": "largest disparity rendered (px)"})
    min_disparity: float = field(default=2.0, metadata={"help": "smallest disparity rendered (px)"})
    nuisance: bool = field(default=True, metadata={"help": "per-view gain/bias/noise on the rendered pairs"})
    sky_probability: float = field(
        default=0.0,
        metadata={"help": "share of pairs with sky (at infinity, disparity 0) above a horizon, so the "
                          "network learns that flat sky is far instead of guessing a few px"},
    )
    thin_probability: float = field(
        default=0.0, metadata={"help": "share of pairs with 1-6 thin structures (poles, wires, branches; "
                                       "1.5-5 px wide)"},
    )
    textureless_probability: float = field(
        default=0.0, metadata={"help": "share of surfaces with a flat colour (no matchable texture)"},
    )
    repetitive_probability: float = field(
        default=0.0, metadata={"help": "share of surfaces with fine periodic stripes / checkerboards"},
    )
    dark_probability: float = field(
        default=0.0, metadata={"help": "share of surfaces at 8-30 %% of their light (noise-dominated)"},
    )
    specular_probability: float = field(
        default=0.0, metadata={"help": "share of surfaces with a view-dependent (Phong) highlight"},
    )
    augment: bool = field(
        default=False,
        metadata={"help": "real-camera augmentation (asymmetric gamma/saturation, blur, JPEG, y-jitter, "
                          "eraser on the right view; scene_perception.data.augment)"},
    )
    camera_effects: bool = field(
        default=False,
        metadata={"help": "with --augment, also per-view vignetting and white balance "
                          "(data.augment.CAMERA_EFFECTS)"},
    )
    texture_dir: str | None = field(
        default=None, metadata={"help": "optional photo textures (never images with stereo ground truth)"}
    )
    dataset: str | None = field(
        default=None,
        metadata={"help": "also train on downloaded datasets: NAME:ROOT[:WEIGHT] entries separated by commas "
                          "(NAME: middlebury, eth3d, kitti2012, kitti2015, sceneflow, cityscapes, folder; "
                          "WEIGHT: sampling proportion, default 1), mixed with the synthetic pairs at "
                          "synthetic_weight; shift-free crops, pairs beyond max_disparity shrunk "
                          "(training/dataset_mix.py)"},
    )
    synthetic_weight: float = field(
        default=1.0, metadata={"help": "sampling proportion of the procedural pairs next to --dataset "
                                       "(0: the datasets only)"},
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
    num_workers: int | None = field(
        default=None,
        metadata={"help": "data-loader worker processes rendering pairs ahead (default: 0 on CPU, where "
                          "the training itself needs the cores; on CUDA the usable cores per local rank "
                          "minus 2)"},
    )
    prefetch_factor: int = field(
        default=4, metadata={"help": "batches each worker renders ahead (only with num_workers > 0)"}
    )
    crops_per_pair: int = field(
        default=1,
        metadata={"help": "random crops cut from each rendered pair (needs a rendered size larger than the "
                          "crop and batch_size divisible by it); >1 when rendering, not the GPU, is the "
                          "bottleneck. 1 keeps the data of earlier versions bit-identical"},
    )
    amp: str = field(
        default="none",
        metadata={"help": "mixed precision on the training device: none | bf16 (autocast) | fp16 (autocast + "
                          "gradient scaler); regression and losses stay fp32"},
    )
    cudnn_benchmark: bool = field(
        default=True, metadata={"help": "CUDA: let cuDNN time its conv algorithms for the fixed crop size"}
    )
    minutes: float = field(
        default=0.0,
        metadata={"help": "wall-clock budget of this invocation in minutes (0: none): stops before a step "
                          "would end past it, then writes the checkpoint, weights and card as at the end"},
    )
    stop_at: int = field(
        default=0,
        metadata={"help": "end this invocation at this step as if interrupted (0: at steps); the learning-"
                          "rate schedule still spans steps, so a later run with the same steps continues it"},
    )
    log_every: int = field(
        default=10,
        metadata={"help": "steps between host syncs: metrics to the progress bar and "
                          "out_dir/train_log.jsonl, non-finite loss check"},
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def validate(self) -> None:
        """Fail before any work with a message naming the bad field."""
        if self.model not in CONFIGS:
            raise ValueError(f"unknown model {self.model!r}; known: {sorted(CONFIGS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.unlabelled_weight < 0:
            raise ValueError(f"unlabelled_weight must be >= 0, got {self.unlabelled_weight}")
        if self.occlusion_check_px is not None and self.occlusion_check_px < 0:
            raise ValueError(f"occlusion_check_px must be >= 0, got {self.occlusion_check_px}")
        validate_common(self)
        if self.volume_weight < 0:
            raise ValueError(f"volume_weight must be >= 0, got {self.volume_weight}")
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {self.amp!r}")
        for name in ("crop_height", "crop_width", "prefetch_factor", "crops_per_pair", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("minutes", "stop_at"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.batch_size % self.crops_per_pair:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of crops_per_pair {self.crops_per_pair}"
            )
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
        if self.crops_per_pair > 1 and (h, w) == (self.crop_height, self.crop_width):
            raise ValueError(
                f"crops_per_pair {self.crops_per_pair} needs a rendered size (image_height/image_width) "
                f"larger than the crop {self.crop_height}x{self.crop_width}: otherwise every crop is the "
                "same image"
            )
        if not 0 < self.min_disparity < self.max_disparity:
            raise ValueError(
                f"need 0 < min_disparity < max_disparity, got {self.min_disparity}, {self.max_disparity}"
            )
        for name in COVERAGE_REGIONS:
            value = getattr(self, f"{name}_probability")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}_probability must be in [0, 1], got {value}")
        if self.camera_effects and not self.augment:
            raise ValueError("camera_effects needs augment (they are applied by the augmentation)")
        if self.dataset or self.synthetic_weight != 1.0:
            from scene_perception.training.dataset_mix import parse_dataset_specs

            specs = parse_dataset_specs(self.dataset)
            if self.synthetic_weight < 0 or (not specs and self.synthetic_weight == 0):
                raise ValueError(f"synthetic_weight must be >= 0 (> 0 without --dataset), got "
                                 f"{self.synthetic_weight}")
            if specs and self.crops_per_pair > 1:
                raise ValueError("crops_per_pair > 1 is for rendered pairs; with --dataset keep it 1")
        if self.mode == "mixed":
            from scene_perception.training.dataset_mix import parse_dataset_specs

            specs = parse_dataset_specs(self.dataset)
            if not specs:
                raise ValueError("mode 'mixed' needs --dataset with pairs without ground truth (e.g. "
                                 "folder:DIR): the synthetic pairs alone all have GT, which is 'supervised'")
            if not any(spec.name == "folder" for spec in specs):
                _LOG.warning("mode 'mixed' without a folder dataset: only pairs of %s that lack GT get the "
                             "self-supervised loss", self.dataset)
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
    def scene_config(self) -> SceneConfig:
        """What the rendered scenes contain (sky and the coverage phenomena; all 0 = earlier versions)."""
        return SceneConfig(sky_probability=self.sky_probability, thin_probability=self.thin_probability,
                           textureless_probability=self.textureless_probability,
                           repetitive_probability=self.repetitive_probability,
                           dark_probability=self.dark_probability,
                           specular_probability=self.specular_probability)

    @property
    def augment_config(self) -> AugmentConfig | bool:
        """What ``ProceduralStereoDataset(augment=...)`` takes: off, the default transforms, or those plus
        the camera effects."""
        if not self.augment:
            return False
        return CAMERA_EFFECTS if self.camera_effects else True

    @property
    def final_name(self) -> str:
        return self.output_name or self.model

    @property
    def occlusion_px(self) -> float:
        """The left-right check's threshold in effect (0: no occlusion mask)."""
        if self.occlusion_check_px is not None:
            return self.occlusion_check_px
        return 1.0 if self.mode == "mixed" else 0.0


# ------------------------------------------------------------------------------------------- helpers
def _save_checkpoint(out_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                     config: TrainConfig, recent_epe: list[float], keep: int,
                     scaler: torch.amp.GradScaler) -> Path:
    extra: dict[str, Any] = {"seed": config.seed, "config": asdict(config),
                             "recent_epe": recent_epe[-_EPE_WINDOW:]}
    if scaler.is_enabled():
        # fp16: the loss scale and its growth counter are optimizer state too; without them a resumed run
        # would restart at 65536 and skip steps the uninterrupted run did not skip.
        extra["grad_scaler"] = scaler.state_dict()
    return save_checkpoint(out_dir, step, model, optimizer, {"config": config.model}, extra, keep)


def _setup_distributed(config: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); initialises the process group under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = train_device(config.device)
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


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is True on one: the ranks must stop at the same step, or the ones
    still stepping would wait forever in DDP's gradient all-reduce."""
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def default_num_workers(device: torch.device, cores: int | None = None,
                        local_ranks: int | None = None) -> int:
    """Data-loader workers when ``num_workers`` is not given.

    On CPU 0: the training step itself uses every core, and workers rendering next to it only slow it down
    (and a worker pool makes short runs, e.g. tests, start seconds later).  On CUDA the GPU step is fast and
    rendering on the CPU is the bottleneck, so all usable cores render, less 2 per process for the training
    loop and its pin-memory thread: 14 on a 16-core machine.  ``cores`` defaults to the cores this process
    may run on (``sched_getaffinity``, which respects taskset / cgroup cpusets, unlike ``cpu_count``),
    ``local_ranks`` to torchrun's ``LOCAL_WORLD_SIZE`` (processes sharing the machine's cores).
    """
    if device.type != "cuda":
        return 0
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if local_ranks is None:
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cores // max(1, local_ranks) - 2)


def _init_worker(worker_id: int) -> None:
    """One OpenCV thread per loader worker (torch already sets one intra-op thread there): N workers each
    starting a full OpenCV pool for the renderer's blurs and resizes would oversubscribe the cores."""
    import cv2

    cv2.setNumThreads(1)


def _pair_tensors(left: np.ndarray, right: np.ndarray, disparity: np.ndarray, nonoccluded: np.ndarray,
                  max_disparity: float) -> dict[str, Tensor]:
    """The tensors of one training sample, exactly as :class:`ProceduralStereoDataset` makes them."""
    valid = np.isfinite(disparity) & (disparity >= 0) & (disparity <= max_disparity)
    return {
        "left": torch.from_numpy(np.ascontiguousarray(left.transpose(2, 0, 1))).float().div_(255.0),
        "right": torch.from_numpy(np.ascontiguousarray(right.transpose(2, 0, 1))).float().div_(255.0),
        "disparity": torch.from_numpy(np.ascontiguousarray(disparity))[None],
        "valid": torch.from_numpy(np.ascontiguousarray(valid))[None],
        "nonoccluded": torch.from_numpy(np.ascontiguousarray(nonoccluded))[None],
    }


class MultiCropStereoDataset(Dataset):
    """Item ``i``: ``crops`` random windows of ``base``'s rendered pair ``i``, tensors of (crops, C, h, w).

    Why: rendering a pair costs far more CPU than cutting a window out of it, so when the GPU waits for the
    renderers, several crops per rendered pair give that many more (correlated) samples per second.  The
    windows (stream 3) and each crop's augmentation (stream 2, crop index appended) are seeded from
    ``(seed, index)`` like the base dataset's, so an item is the same in every run and worker and resuming
    stays exact.  ``base`` must have a ``crop``; its own single-crop ``__getitem__`` is not used.
    """

    def __init__(self, base: ProceduralStereoDataset, crops: int) -> None:
        if base.crop is None:
            raise ValueError("MultiCropStereoDataset needs a base dataset with a crop size")
        if crops <= 0:
            raise ValueError(f"crops must be > 0, got {crops}")
        self.base = base
        self.crops = int(crops)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < len(self.base):
            raise IndexError(f"index {index} out of range for dataset of length {len(self.base)}")
        base = self.base
        assert base.crop is not None
        s = base.sample(index)
        ch, cw = base.crop
        h, w = s.disparity.shape
        rng = np.random.default_rng(np.random.SeedSequence([base.seed, int(index), 3]))
        items = []
        for c in range(self.crops):
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            win = (slice(y0, y0 + ch), slice(x0, x0 + cw))
            left, right = s.left[win], s.right[win]
            if base.augment:
                aug_rng = np.random.default_rng(np.random.SeedSequence([base.seed, int(index), 2, c]))
                left, right = augment_pair(aug_rng, left, right, base.augment_config)
            items.append(_pair_tensors(left, right, s.disparity[win], s.nonoccluded[win], base.max_disparity))
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def _collate_crops(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Batch of :class:`MultiCropStereoDataset` items -> (pairs * crops, C, h, w), a crop per sample."""
    return {key: value.flatten(0, 1) for key, value in default_collate(items).items()}


def _make_loader(config: TrainConfig, start: int, end: int, rank: int, world: int, device: torch.device,
                 num_workers: int) -> DataLoader:
    """The loader of steps ``start .. end-1`` on this rank.

    Sample index = (step * world + rank) * pairs_per_step + i: deterministic per step and disjoint across
    ranks, so resuming at ``start`` needs no loader state.  With ``crops_per_pair`` 1 this is the dataset and
    the index order of earlier versions (bit-identical data).  Workers are persistent (a second pass over a
    loader, e.g. a validation loop, would not fork and import again), pinned memory lets the host-to-GPU
    copies run asynchronously (``non_blocking``), and each worker renders ``prefetch_factor`` batches ahead.
    """
    h, w = config.render_size
    k = config.crops_per_pair
    pairs_per_step = config.batch_size // k
    dataset = ProceduralStereoDataset(
        length=max(1, config.steps * world * pairs_per_step), width=w, height=h,
        max_disparity=config.max_disparity, min_disparity=config.min_disparity, seed=config.seed,
        crop=(config.crop_height, config.crop_width), nuisance=config.nuisance,
        texture_dir=config.texture_dir, augment=config.augment_config,
        scene=config.scene_config,
    )
    data: Dataset = dataset if k == 1 else MultiCropStereoDataset(dataset, k)
    if config.dataset:
        from scene_perception.training.dataset_mix import mixed_training_data, parse_dataset_specs

        data = mixed_training_data(parse_dataset_specs(config.dataset), dataset, config.synthetic_weight,
                                   (config.crop_height, config.crop_width), config.max_disparity, config.seed,
                                   config.augment, len(dataset))
    indices = [(s * world + rank) * pairs_per_step + i
               for s in range(start, end) for i in range(pairs_per_step)]
    extra: dict[str, Any] = {}
    if num_workers > 0:
        # forkserver, not fork: workers forked from a process whose OpenMP / OpenCV / CUDA threads are
        # running can deadlock (seen on the H200: train stereo called inside a pytest process that had run
        # CPU inference hung; the same run in a fresh process did not). A clean server forks them instead.
        extra = {"persistent_workers": True, "prefetch_factor": config.prefetch_factor,
                 "worker_init_fn": _init_worker, "multiprocessing_context": "forkserver"}
    return DataLoader(data, batch_size=pairs_per_step, sampler=indices, num_workers=num_workers,
                      pin_memory=device.type == "cuda", drop_last=False,
                      collate_fn=None if k == 1 else _collate_crops, **extra)


@contextlib.contextmanager
def _batches(loader: DataLoader) -> Iterator[Iterator[dict[str, Tensor]]]:
    """Iterate ``loader`` and shut its workers down on leaving, also on an early stop or an error: persistent
    workers would otherwise keep rendering prefetched batches until the loader is garbage-collected."""
    it = iter(loader)
    try:
        yield it
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)  # multi-process iterators only
        if shutdown is not None:
            shutdown()


def _autocast(device: torch.device, amp: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """Context factory for the forward pass: autocast on the training device, or nothing for ``none`` (so
    the fp32 path is not even wrapped)."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _flip(x: Tensor) -> Tensor:
    return torch.flip(x, dims=[3])


def _supervised_loss(config: TrainConfig, disp: Tensor, log_scale: Tensor, gt: Tensor, valid: Tensor
                     ) -> tuple[Tensor, dict[str, Tensor]]:
    """Smooth L1 + weighted Laplace NLL; the parts come back as detached device tensors (no host sync).

    The NLL sees a detached disparity: the smooth-L1 term alone shapes the disparity, so the uncertainty
    head cannot lower the loss by down-weighting hard pixels' disparity gradients (loss attenuation); it
    only learns to predict the error.
    """
    l1 = smooth_l1_disparity(disp, gt, valid)
    nll = laplace_nll(disp.detach(), log_scale, gt, valid)
    return l1 + config.nll_weight * nll, {"l1": l1.detach(), "nll": nll.detach()}


def self_supervised_loss(config: TrainConfig, forward: Callable[..., tuple[Tensor, ...]], left: Tensor,
                          right: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Photometric + smoothness + left-right consistency; returns (loss, left disparity, parts).

    The right view's disparity comes from the same network on ``(flip(right), flip(left))``: mirrored,
    the right image becomes a "left" image whose matches lie at ``x - d``.  Both passes run as one batch
    (one forward per step keeps DDP's gradient bookkeeping simple and is faster).  ``forward`` runs the
    network (under autocast when asked) and returns fp32 outputs; the loss itself is computed in fp32.
    """
    b = left.shape[0]
    disp_all, logs_all = forward(torch.cat([left, _flip(right)]), torch.cat([right, _flip(left)]))
    disp_l = disp_all[:b]
    loss, parts = _self_supervised_terms(config, left, right, disp_l, disp_all[b:], logs_all[:b],
                                         config.occlusion_px)
    return loss, disp_l, parts


def _self_supervised_terms(config: TrainConfig, left: Tensor, right: Tensor, disp_l: Tensor,
                           disp_r_flipped: Tensor, log_scale_l: Tensor, occlusion_px: float = 0.0
                           ) -> tuple[Tensor, dict[str, Tensor]]:
    """The self-supervised loss of :func:`self_supervised_loss` from the network's outputs: the left
    disparity and log-scale of ``(left, right)`` and the disparity of ``(flip(right), flip(left))``.

    With ``occlusion_px > 0`` the photometric terms leave out the pixels failing the left-right check
    (:func:`left_right_visibility`) and the parts get ``occluded``, the share of the in-view pixels (whose
    match lies inside the other image) so masked.
    """
    w = left.shape[3]
    disp_r = _flip(disp_r_flipped)
    alpha = config.photometric_alpha
    masks: tuple[Tensor | None, Tensor | None] = (None, None)
    if occlusion_px > 0:
        visible_l, visible_r = left_right_visibility(disp_l.detach(), disp_r.detach(), occlusion_px)
        masks = (visible_l, _flip(visible_r))
    photo_l, _ = photometric_loss(left, right, disp_l, alpha, masks[0])
    photo_r, _ = photometric_loss(_flip(right), _flip(left), disp_r_flipped, alpha, masks[1])
    smooth = disparity_smoothness(disp_l, left) + disparity_smoothness(disp_r_flipped, _flip(right))
    # On disparity / width (Godard et al.'s units) so the weight does not depend on the image size.
    lr_term = left_right_consistency(disp_l / w, disp_r / w)
    # Uncertainty without labels: learn to predict the left-right disagreement, an error proxy.
    target = warp_horizontal(disp_r, disp_l, -1.0).detach()
    nll = laplace_nll(disp_l.detach(), log_scale_l, target)
    loss = (photo_l + photo_r + config.smoothness_weight * smooth + config.lr_consistency_weight * lr_term
            + config.nll_weight * nll)
    parts = {"photo": (photo_l + photo_r).detach() / 2, "smooth": smooth.detach(), "lrc": lr_term.detach(),
             "nll": nll.detach()}
    if occlusion_px > 0:
        assert masks[0] is not None and masks[1] is not None
        shares = _occluded_share(masks[0], disp_l) + _occluded_share(masks[1], disp_r_flipped)
        parts["occluded"] = shares / 2
    return loss, parts


def _occluded_share(visible: Tensor, disp: Tensor) -> Tensor:
    """Share of the pixels whose match is inside the other view (the ones the photometric loss would use
    anyway) that the left-right check masks."""
    with torch.no_grad():
        w = disp.shape[3]
        x = torch.arange(w, device=disp.device, dtype=disp.dtype).view(1, 1, 1, w) - disp
        return masked_mean((~visible).to(disp.dtype), (x >= 0) & (x <= w - 1))


def _mixed_loss(config: TrainConfig, forward: Callable[..., tuple[Tensor, ...]], left: Tensor, right: Tensor,
                gt: Tensor, valid: Tensor, has_gt: Tensor, cost_stride: int
                ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """``mixed``: supervised on the samples with GT, self-supervised on the others (module docstring);
    returns (loss, left disparity of the whole batch, parts).

    ``has_gt`` is a (B,) bool tensor on the host (read from the batch before its copy to the device, so
    choosing the samples costs no device sync).  One forward: the batch, plus ``(flip(right), flip(left))`` of
    the samples without GT.  The supervised terms run over the outputs of the batch itself: samples without
    GT have no valid pixel, so this is the pooled mean over the labelled pixels, as in ``supervised``.  A part
    whose kind of sample is absent from the batch is NaN (see :class:`_StepMetrics`).
    """
    b = left.shape[0]
    unlabelled = (~has_gt.cpu()).nonzero().flatten()
    n_u = int(unlabelled.numel())
    n_l = b - n_u
    nan = torch.full((), math.nan, device=left.device)
    if n_u:
        idx = unlabelled.to(left.device)
        left_u, right_u = left[idx], right[idx]
        inputs = (torch.cat([left, _flip(right_u)]), torch.cat([right, _flip(left_u)]))
    else:
        inputs = (left, right)
    volume_on = config.volume_weight > 0 and n_l > 0
    out = forward(*inputs, return_cost=True) if volume_on else forward(*inputs)
    disp_all, logs_all = out[0], out[1]
    disp = disp_all[:b]
    terms: list[Tensor] = []
    sup_names = ["l1", "nll"] + (["volume"] if config.volume_weight > 0 else [])
    if n_l:
        sup, sup_parts = _supervised_loss(config, disp, logs_all[:b], gt, valid)
        if volume_on:
            volume = cost_volume_cross_entropy(out[2][:b], gt, valid, cost_stride)
            sup = sup + config.volume_weight * volume
            sup_parts["volume"] = volume.detach()
        terms.append((n_l / b) * sup)
        sup_parts = {"sup": sup.detach(), **sup_parts}
    else:
        sup_parts = {name: nan for name in ["sup", *sup_names]}
    self_names = ["self_sup", "photo", "smooth", "lrc", "self_nll"]
    if config.occlusion_px > 0:
        self_names.append("occluded")
    if n_u:
        own, own_parts = _self_supervised_terms(config, left_u, right_u, disp[idx], disp_all[b:],
                                                logs_all[:b][idx], config.occlusion_px)
        terms.append((config.unlabelled_weight * n_u / b) * own)
        own_parts["self_nll"] = own_parts.pop("nll")
        self_parts = {"self_sup": own.detach(), **own_parts}
    else:
        self_parts = {name: nan for name in self_names}
    loss = terms[0] if len(terms) == 1 else terms[0] + terms[1]
    share = torch.full((), n_u / b, device=left.device)
    return loss, disp, {**sup_parts, **{k: self_parts[k] for k in self_names}, "unlabelled": share}


def _finite_mean(values: Sequence[float]) -> float | None:
    """Mean of the finite values (NaN = absent at that step), None when there is none."""
    kept = [v for v in values if math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class _StepMetrics:
    """Per-step metrics kept on the training device and read back once per log interval.

    Why: a ``.item()`` per metric per step makes the host wait for the GPU 3-5 times a step, so the GPU idles
    while Python prepares the next launch.  Here a step only appends a stacked tensor; :meth:`flush` copies
    the interval's values in one transfer, checks the loss is finite (the error names the first bad step;
    a flush precedes every checkpoint, so none is written with a non-finite loss), extends the EPE window
    stored in checkpoints, and writes one JSON line with the means and the throughput.  A NaN other than the
    loss marks a value absent at that step (``mixed``: no sample with / without GT in the batch): means are
    over the steps that have it, null when none did.
    """

    def __init__(self, recent_epe: list[float], samples_per_step: int, crops_per_pair: int,
                 log_file: TextIO | None) -> None:
        self.recent_epe = recent_epe
        self.samples_per_step = samples_per_step
        self.crops_per_pair = crops_per_pair
        self.log_file = log_file
        self.names: list[str] = []
        self.pending: list[Tensor] = []
        self.data_wait_s = 0.0  # host time spent waiting for the loader in this interval
        self.t_last = time.monotonic()

    def add(self, values: dict[str, Tensor]) -> None:
        if not self.names:
            self.names = list(values)
        self.pending.append(torch.stack([v.detach().float().reshape(()) for v in values.values()]))

    def flush(self, step: int, lr: float, elapsed_s: float) -> dict[str, float] | None:
        """Means over the steps since the last flush (which end at ``step``), or None when there were none."""
        if not self.pending:
            return None
        rows = torch.stack(self.pending).tolist()  # the interval's one host sync
        self.pending = []
        n, first = len(rows), step - len(rows)
        for i, row in enumerate(rows):
            if not math.isfinite(row[0]):
                raise FloatingPointError(
                    f"loss became {row[0]} at step {first + i}; lower lr or check the data"
                )
        epes = [row[1] for row in rows if math.isfinite(row[1])]  # mixed: NaN at steps without GT
        self.recent_epe[:] = (self.recent_epe + epes)[-_EPE_WINDOW:]
        now = time.monotonic()
        dt = max(now - self.t_last, 1e-9)
        sps = n * self.samples_per_step / dt
        out: dict[str, float] = {"step": step, "lr": lr}
        columns = zip(*rows, strict=True)
        out.update({name: _finite_mean(col) for name, col in zip(self.names, columns, strict=True)})
        out.update({"samples_per_s": sps, "pairs_per_s": sps / self.crops_per_pair,
                    "data_wait_frac": min(1.0, self.data_wait_s / dt), "elapsed_s": elapsed_s})
        self.t_last, self.data_wait_s = now, 0.0
        if self.log_file is not None:
            self.log_file.write(json.dumps(out) + "\n")
            self.log_file.flush()
        return out


# ------------------------------------------------------------------------------------------- training
def train_stereo(config: TrainConfig, command: str | None = None) -> Path:
    """Train (or resume) and return the path of the final ``.safetensors`` weights (with model card).

    Resumes from the newest complete checkpoint in ``config.out_dir/checkpoints`` when there is one; a
    run whose checkpoint already reached ``config.steps`` (or ``stop_at``) only (re)writes the final weights.
    The programmatic entry point: a GPU run script builds a :class:`TrainConfig` and calls this, no CLI.
    ``minutes`` counts from this call's start (setup, resume and worker start-up included).  ``command``
    (the CLI line) goes into the model card.
    """
    t_begin = time.monotonic()
    benchmark = torch.backends.cudnn.benchmark
    try:
        return _train_stereo(config, t_begin, command)
    finally:  # a process-wide flag: leave it as found for whatever runs next in this process (tests)
        torch.backends.cudnn.benchmark = benchmark


def _train_stereo(config: TrainConfig, t_begin: float, command: str | None) -> Path:
    """:func:`train_stereo`'s body; ``t_begin`` is when the call started (``time.monotonic``)."""
    out_dir = begin_run(config, make_out_dir=False, opencv_threads=True)
    rank, world, device = _setup_distributed(config)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
    if rank == 0:  # the only rank that writes
        out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    model = GCNet(CONFIGS[config.model]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    start, state = resume(out_dir, config, model, optimizer, ("model", "mode", "dataset", "synthetic_weight"),
                          {"dataset": None, "synthetic_weight": 1.0}, log=rank == 0)
    recent_epe = [float(v) for v in (state or {}).get("recent_epe", [])]
    if state is not None and scaler.is_enabled() and "grad_scaler" in state:
        scaler.load_state_dict(state["grad_scaler"])
    elif state is None and config.init_weights:
        warm_start(model, Path(config.init_weights), log=rank == 0)
    end = max(start, min(config.steps, config.stop_at) if config.stop_at else config.steps)

    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = _autocast(device, config.amp)

    def forward(*args: Tensor, **kwargs: Any) -> tuple[Tensor, ...]:
        """The network under autocast; outputs back to fp32 so every loss is computed in fp32."""
        with autocast():
            out = net(*args, **kwargs)
        return tuple(t.float() for t in out)

    num_workers = default_num_workers(device) if config.num_workers is None else config.num_workers
    per_step = config.batch_size * world
    budget_s = config.minutes * 60.0

    bar = progress_bar(config, start, f"train {config.model} ({config.mode})", enabled=rank == 0)
    log_file = (out_dir / LOG_NAME).open("a", encoding="utf-8") if rank == 0 and end > start else None
    metrics = _StepMetrics(recent_epe, per_step, config.crops_per_pair, log_file)
    net.train()
    step = start
    stopped_early = False
    step_s: float | None = None  # running mean of one step's wall time, for the budget
    t_first: float | None = None  # end of this run's first step: throughput excludes the start-up
    try:
        loader = _make_loader(config, start, end, rank, world, device, num_workers) if end > start else None
        with contextlib.ExitStack() as stack:
            batches = stack.enter_context(_batches(loader)) if loader is not None else iter(())
            metrics.t_last = t_prev = time.monotonic()
            while step < end:
                t_wait = time.monotonic()
                batch = next(batches, None)
                if batch is None:
                    break
                metrics.data_wait_s += time.monotonic() - t_wait
                if config.mode == "mixed":  # on the host copy: no device sync
                    has_gt = (batch["valid"] & (batch["disparity"] < model.max_disparity)).flatten(1).any(1)
                left = batch["left"].to(device, non_blocking=True)
                right = batch["right"].to(device, non_blocking=True)
                gt = batch["disparity"].to(device, non_blocking=True)
                valid = batch["valid"].to(device, non_blocking=True) & (gt < model.max_disparity)
                lr = learning_rate(config, step)
                set_learning_rate(optimizer, lr)

                parts: dict[str, Tensor]
                if config.mode == "supervised" and config.volume_weight > 0:
                    disp, log_scale, cost = forward(left, right, return_cost=True)
                    loss, parts = _supervised_loss(config, disp, log_scale, gt, valid)
                    volume = cost_volume_cross_entropy(cost, gt, valid, model.cost_stride)
                    loss = loss + config.volume_weight * volume
                    parts["volume"] = volume.detach()
                elif config.mode == "supervised":
                    disp, log_scale = forward(left, right)
                    loss, parts = _supervised_loss(config, disp, log_scale, gt, valid)
                elif config.mode == "mixed":
                    loss, disp, parts = _mixed_loss(config, forward, left, right, gt, valid, has_gt,
                                                    model.cost_stride)
                else:
                    loss, disp, parts = self_supervised_loss(config, forward, left, right)
                # A disabled scaler (amp none / bf16) passes its calls straight through.
                optimizer_step(loss, optimizer, model.parameters(), config.grad_clip, scaler)

                with torch.no_grad():  # monitoring only: labels never enter the self-supervised loss
                    d = disp.detach()
                    epe = masked_mean((d - torch.where(valid, gt, d)).abs(), valid)
                    if config.mode == "mixed":  # a batch without GT has no EPE (not 0)
                        epe = torch.where(valid.any(), epe, torch.full_like(epe, math.nan))
                metrics.add({"loss": loss.detach(), "epe": epe, **parts})
                step += 1
                bar.update(1)

                now = time.monotonic()
                # The first step (worker start-up, cuDNN autotuning) would dominate a running mean for
                # long, so the second step's time replaces it.
                dt = now - t_prev
                step_s = dt if step_s is None or step - start == 2 else 0.9 * step_s + 0.1 * dt
                t_prev = now
                t_first = now if t_first is None else t_first
                at_log = step % config.log_every == 0 or step == end
                if budget_s > 0 and (world == 1 or at_log):
                    # Stop before a step that would end past the budget; under DDP the ranks agree only at
                    # log steps (a collective), so there the horizon is a whole log interval.
                    horizon = 1 if world == 1 else config.log_every
                    out_of_time = now - t_begin + horizon * step_s >= budget_s
                    if world > 1:
                        out_of_time = _any_rank(out_of_time, device)
                    stopped_early = out_of_time and step < end
                at_checkpoint = checkpoint_due(step, config.checkpoint_every, end) or stopped_early
                if at_log or at_checkpoint:  # the same steps on every rank
                    row = metrics.flush(step, lr, now - t_begin)
                    if row is not None:
                        bar.set_postfix(
                            loss=f"{row['loss']:.3f}", epe=_fmt(row["epe"], ".2f"), lr=f"{lr:.1e}",
                            **{k: _fmt(row[k], ".3f") for k in parts},
                            **{"samples/s": f"{row['samples_per_s']:.1f}"},
                        )
                if rank == 0 and at_checkpoint:
                    _save_checkpoint(out_dir, step, model, optimizer, config, metrics.recent_epe,
                                     config.keep_checkpoints, scaler)
                if stopped_early:
                    break
        metrics.flush(step, learning_rate(config, max(step - 1, 0)), time.monotonic() - t_begin)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    t_end = time.monotonic()
    recent_epe = metrics.recent_epe
    if stopped_early and rank == 0:
        _LOG.warning("time budget of %g min reached at step %d of %d: checkpoint and weights written; "
                     "the learning-rate schedule spans all %d steps (lr now %.2e): run again with the same "
                     "out_dir to continue it", config.minutes, step, config.steps, config.steps,
                     learning_rate(config, step))

    final_epe = float(sum(recent_epe) / len(recent_epe)) if recent_epe else float("nan")
    samples_per_s = ((step - start - 1) * per_step / (t_end - t_first)
                     if t_first is not None and step - start > 1 and t_end > t_first else None)
    final_path = out_dir / f"{config.final_name}.safetensors"
    if rank == 0:
        if state is None or step > start:
            _LOG.info("trained %d steps; mean train EPE over the last %d steps: %.3f px; %s samples/s",
                      step - start, len(recent_epe), final_epe,
                      "-" if samples_per_s is None else f"{samples_per_s:.1f}")
        training = run_record(
            config, device, step, command,
            data=DATA_DESCRIPTION + (f" mixed with {config.dataset} (synthetic weight "
                                     f"{config.synthetic_weight:g})" if config.dataset else ""),
            mode=config.mode, steps_planned=config.steps, steps_this_run=step - start,
            minutes_budget=config.minutes or None, stopped_by_budget=stopped_early,
            wall_s_this_run=round(t_end - t_begin, 2), amp=config.amp, num_workers=num_workers,
            crops_per_pair=config.crops_per_pair, world_size=world,
        )
        card_metrics = {"train_epe_px": final_epe, "train_epe_window_steps": len(recent_epe),
                        "samples_per_s": samples_per_s}
        card = {"name": config.final_name, "trained": True, "training": training, "metrics": card_metrics}
        save_stereo_model(model, final_path, card)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return final_path


# ------------------------------------------------------------------------------------------- CLI
def build_parser(prog: str = "scene-perception train stereo") -> argparse.ArgumentParser:
    """Argument parser generated from :class:`TrainConfig`, so the CLI cannot drift from the config
    (``--amp`` takes one of :data:`AMP_DTYPES`)."""
    return dataclass_parser(TrainConfig, prog, __doc__.split("\n\n")[0], choices={"amp": list(AMP_DTYPES)})


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``scene-perception train stereo ...`` delegates here); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    ns = parse_cli(build_parser(), args)
    config = TrainConfig(**ns)
    try:
        path = train_stereo(config, command="scene-perception train stereo " + " ".join(args))
    except (ValueError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
