"""Train the multi-task scene network on frames of the synthetic street world, resumably.

``scene-perception train scene --weighting learned --steps 1200`` (see :class:`SceneTrainConfig`).

* Data: frames rendered by :mod:`scene_perception.data.world` from the *training* world seeds (1000 and
  up by default; the benchmarks hold out seeds 1..99 and the config refuses training seeds below 100),
  cached once as safetensors (:mod:`scene_perception.data.scene_frames`).
* Real labelled frames (``--dataset cityscapes:ROOT[:WEIGHT]``): the dataset's ``dataset_split`` is read once
  at the training size (:func:`~scene_perception.data.scene_frames.dataset_scene_frames`, cached) and mixed
  with the synthetic frames, each sample drawn from a set with probability proportional to its weight
  (``synthetic_weight`` for the synthetic world; 0 trains on the dataset alone).  Its unknowns are masked
  out of the loss: ignored labels (255) from the cross-entropy, pixels without depth (the holes of
  Cityscapes' SGM disparity) from the inverse-depth terms; objects of a thing class without an instance
  annotation (Cityscapes poles) give no offset target.  Without ``--dataset`` the batches (and so the
  trained weights) are exactly those of earlier versions.
* Batches: step ``k`` draws its frames and flips from an RNG seeded by ``(seed, k)``, and re-seeds torch
  (dropout, logit noise) the same way, so a run resumed from a checkpoint follows the same trajectory
  without any data-loader state.
* Loss (Kendall, Gal & Cipolla 2018): task losses -- sampled-logit cross-entropy (semantics), L1 on the
  centroid offsets of instance pixels (px), L1 on inverse depth (1/m) -- combined by
  :class:`~scene_perception.losses.multitask.UncertaintyWeighting` (``single`` / ``sum`` / ``learned``),
  plus ``nll_weight`` times the heteroscedastic Laplace NLLs that train the offset and inverse-depth
  aleatoric heads on detached predictions (see losses/multitask.py for why they are kept apart).
* Checkpoints: :mod:`scene_perception.training.checkpoints` (safetensors, state JSON last).  The model and
  the learned task log-variances are checkpointed together; the final weights (model only) and their
  card (full config, training record, learned task sigmas) go through models/weights.py.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from scene_perception.data.datasets.sample import IGNORE_LABEL
from scene_perception.data.scene_frames import (
    SceneFrames,
    concat_scene_frames,
    dataset_scene_frames,
    load_scene_frames,
    seed_range,
)
from scene_perception.data.splits import HELDOUT_SEED_LIMIT
from scene_perception.losses.multitask import (
    INV_DEPTH_LOG_SCALE_RANGE,
    OFFSET_LOG_SCALE_RANGE,
    TASK_KINDS,
    WEIGHTINGS,
    UncertaintyWeighting,
    heteroscedastic_nll,
    masked_l1,
    median_frequency_weights,
    sampled_logit_cross_entropy,
)
from scene_perception.models.multitask import CONFIGS, TASKS, MultiTaskNet
from scene_perception.models.weights import save_scene_model
from scene_perception.pipelines.instances import centroid_offsets
from scene_perception.training.checkpoints import dataclass_parser, parse_cli, save_checkpoint, train_device
from scene_perception.training.dataset_mix import DatasetSpec, parse_dataset_specs
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

__all__ = ["HELDOUT_SEED_LIMIT", "SceneTrainConfig", "make_batch", "main", "scene_losses", "train_scene"]

_LOG = logging.getLogger(__name__)

DATA_DESCRIPTION = "synthetic street world (scene_perception.data.world), left views"
#: The datasets ``train scene --dataset`` takes: those with semantic labels.
SCENE_DATASETS = ("cityscapes",)
_WINDOW = 50


@dataclass
class SceneTrainConfig:
    """Everything that defines a run; stored in checkpoints and in the model card."""

    model: str = field(default="scene", metadata={"help": "architecture config (scene | tiny)"})
    weighting: str = field(default="learned", metadata={"help": "single | sum | learned (homoscedastic)"})
    task: str | None = field(default=None, metadata={"help": "the task of --weighting single"})
    steps: int = field(default=1200, metadata={"help": "total optimisation steps (resume counts on)"})
    batch_size: int = field(default=8, metadata={"help": "frames per step"})
    height: int = field(default=96, metadata={"help": "render / training height (multiple of 8)"})
    width: int = field(default=192, metadata={"help": "render / training width (multiple of 8)"})
    train_seeds: str = field(default="1000:1100",
                             metadata={"help": "world seeds, 'lo:hi' or 'a,b,c' (all >= 100)"})
    frames_per_seed: int = field(default=20, metadata={"help": "frames rendered per world"})
    spacing_m: float = field(default=6.0, metadata={"help": "metres driven between rendered frames"})
    nuisance: bool = field(default=True, metadata={"help": "gain/bias/noise on the rendered images"})
    texture_dir: str | None = field(default=None, metadata={"help": "photo textures for the world"})
    cache_dir: str = field(default="runs/scene_data", metadata={"help": "rendered-frame cache (safetensors)"})
    dataset: str | None = field(default=None, metadata={
        "help": "also train on labelled real frames: cityscapes:ROOT[:WEIGHT] (ROOT holds leftImg8bit/; "
                "WEIGHT: sampling proportion, default 1), mixed with the synthetic frames at "
                "synthetic_weight"})
    dataset_split: str = field(default="train", metadata={"help": "the --dataset split trained on"})
    synthetic_weight: float = field(default=1.0, metadata={
        "help": "sampling proportion of the synthetic frames next to --dataset (0: the dataset only)"})
    lr: float = field(default=2e-3, metadata={"help": "peak Adam learning rate"})
    lr_schedule: str = field(default="cosine", metadata={"help": "cosine | step | constant"})
    warmup_steps: int = field(default=50, metadata={"help": "linear learning-rate warm-up steps"})
    log_var_lr_scale: float = field(default=25.0, metadata={
        "help": "learning-rate multiplier of the learned task log-variances (they must travel ~4 units)"})
    weight_decay: float = field(default=1e-5, metadata={"help": "Adam L2 weight decay (not on task sigmas)"})
    grad_clip: float = field(default=5.0, metadata={"help": "gradient norm clip (0 disables)"})
    logit_samples: int = field(default=10, metadata={"help": "T of the sampled-logit cross-entropy"})
    class_balance: str = field(default="none", metadata={
        "help": "none | median_freq (median-frequency balanced semantic loss, from the training set)"})
    nll_weight: float = field(default=0.1, metadata={"help": "weight of the offset / inverse-depth NLLs"})
    flip: bool = field(default=True, metadata={"help": "random horizontal flips"})
    seed: int = field(default=0, metadata={"help": "seed of the init, the batches and the noise"})
    out_dir: str = field(default="runs/scene", metadata={"help": "checkpoints and final weights go here"})
    output_name: str | None = field(default=None, metadata={"help": "final weights stem (default scene)"})
    checkpoint_every: int = field(default=100, metadata={"help": "steps between checkpoints"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept on disk"})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads (0: library default)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def validate(self) -> None:
        """Fail before any work with a message naming the bad field."""
        validate_common(self)
        if self.model not in CONFIGS:
            raise ValueError(f"unknown model {self.model!r}; known: {sorted(CONFIGS)}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.weighting == "single" and self.task not in TASKS:
            raise ValueError(f"--weighting single needs --task one of {TASKS}, got {self.task!r}")
        if self.weighting != "single" and self.task is not None:
            raise ValueError("--task only applies to --weighting single")
        if self.log_var_lr_scale <= 0:
            raise ValueError(f"log_var_lr_scale must be > 0, got {self.log_var_lr_scale}")
        if self.class_balance not in ("none", "median_freq"):
            raise ValueError(f"class_balance must be none or median_freq, got {self.class_balance!r}")
        for name in ("height", "width", "frames_per_seed"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        div = CONFIGS[self.model].size_divisor
        if self.height % div or self.width % div:
            raise ValueError(f"height/width {self.height}x{self.width} must be multiples of {div}")
        seeds = seed_range(self.train_seeds)
        if not seeds:
            raise ValueError("train_seeds is empty")
        if min(seeds) < HELDOUT_SEED_LIMIT:
            raise ValueError(
                f"train_seeds must be >= {HELDOUT_SEED_LIMIT}: seeds below are held out for evaluation"
            )
        specs = self.dataset_specs
        if self.synthetic_weight < 0 or (not specs and self.synthetic_weight == 0):
            raise ValueError(f"synthetic_weight must be >= 0 (> 0 without --dataset), got "
                             f"{self.synthetic_weight}")
        for spec in specs:
            if spec.name not in SCENE_DATASETS:
                raise ValueError(f"dataset {spec.name!r} has no semantic labels to train the scene network "
                                 f"on; train scene takes {', '.join(SCENE_DATASETS)}")

    @property
    def dataset_specs(self) -> list[DatasetSpec]:
        """The parsed ``--dataset`` entries (empty without)."""
        return parse_dataset_specs(self.dataset)

    @property
    def tasks(self) -> tuple[str, ...]:
        return (self.task,) if self.weighting == "single" and self.task else TASKS

    @property
    def final_name(self) -> str:
        return self.output_name or "scene"


def make_batch(frames: SceneFrames, indices: Sequence[int], flips: Sequence[bool], device: torch.device
               ) -> dict[str, Tensor]:
    """Images and targets for ``indices`` (flipped where asked); offsets recomputed after the flip."""
    imgs, sems, offs, masks, invs = [], [], [], [], []
    for i, flip in zip(indices, flips, strict=True):
        img, sem, ins, inv = frames.images[i], frames.semantic[i], frames.instance[i], frames.inv_depth[i]
        if flip:
            img, sem, ins, inv = img[:, ::-1], sem[:, ::-1], ins[:, ::-1], inv[:, ::-1]
        off, mask = centroid_offsets(ins)
        imgs.append(np.ascontiguousarray(img))
        sems.append(np.ascontiguousarray(sem))
        offs.append(off)
        masks.append(mask)
        invs.append(np.ascontiguousarray(inv))
    sem, inv = np.stack(sems), np.stack(invs)
    batch = {
        "image": torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(255.0).to(device),
        "semantic": torch.from_numpy(sem).long().to(device),
        "offsets": torch.from_numpy(np.stack(offs)).to(device),
        "instance_mask": torch.from_numpy(np.stack(masks))[:, None].to(device),
        "inv_depth": torch.from_numpy(inv)[:, None].to(device),
    }
    # Masks only where a frame has unknowns (dataset frames): a batch of synthetic frames keeps the unmasked
    # losses, so runs without --dataset train exactly as before.
    if (sem == IGNORE_LABEL).any():
        batch["semantic_mask"] = torch.from_numpy(sem != IGNORE_LABEL).to(device)
    if np.isnan(inv).any():
        batch["depth_mask"] = torch.from_numpy(np.isfinite(inv))[:, None].to(device)
    return batch


def class_weights(frames: SceneFrames, num_classes: int) -> list[float]:
    """Median-frequency class weights of the training frames' semantic labels."""
    pixels = np.zeros(num_classes)
    image_pixels = np.zeros(num_classes)
    per_image = frames.semantic[0].size
    for sem in frames.semantic:
        counts = np.bincount(sem.ravel(), minlength=num_classes)[:num_classes]
        pixels += counts
        image_pixels += (counts > 0) * per_image
    return median_frequency_weights(pixels.tolist(), image_pixels.tolist())


def scene_losses(out: Any, batch: dict[str, Tensor], tasks: Sequence[str], logit_samples: int,
                 weights: Tensor | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(task losses fed to the weighting, aleatoric NLLs of the regression heads) for the active tasks."""
    task_losses: dict[str, Tensor] = {}
    nlls: dict[str, Tensor] = {}
    if "semantic" in tasks:
        task_losses["semantic"] = sampled_logit_cross_entropy(
            out.semantic_logits, out.semantic_log_var, batch["semantic"], samples=logit_samples,
            mask=batch.get("semantic_mask"), class_weights=weights)
    if "instance" in tasks:
        mask = batch["instance_mask"]
        task_losses["instance"] = masked_l1(out.offsets, batch["offsets"], mask)
        nlls["instance"] = heteroscedastic_nll(out.offsets.detach(), out.offset_log_scale, batch["offsets"],
                                               mask, log_scale_range=OFFSET_LOG_SCALE_RANGE)
    if "depth" in tasks:
        depth_mask = batch.get("depth_mask")
        task_losses["depth"] = masked_l1(out.inv_depth, batch["inv_depth"], depth_mask)
        nlls["depth"] = heteroscedastic_nll(out.inv_depth.detach(), out.inv_depth_log_scale,
                                            batch["inv_depth"], depth_mask,
                                            log_scale_range=INV_DEPTH_LOG_SCALE_RANGE)
    return task_losses, nlls


def training_sets(config: SceneTrainConfig, frames: SceneFrames | None = None
                  ) -> list[tuple[str, SceneFrames, float]]:
    """(name, frames, sampling weight) of each training set: the synthetic world (unless
    ``synthetic_weight`` is 0; ``frames`` replaces its rendering) and each ``--dataset``."""
    from scene_perception.data.datasets import open_dataset

    sets: list[tuple[str, SceneFrames, float]] = []
    specs = config.dataset_specs
    if config.synthetic_weight > 0:
        if frames is None:
            frames = load_scene_frames(seed_range(config.train_seeds), config.frames_per_seed, config.height,
                                       config.width, cache_dir=config.cache_dir, spacing_m=config.spacing_m,
                                       nuisance=config.nuisance, texture_dir=config.texture_dir,
                                       progress=config.progress)
        sets.append(("synthetic", frames, config.synthetic_weight))
    for spec in specs:
        reader = open_dataset(spec.name, spec.root, split=config.dataset_split)
        sets.append((f"{spec.name}:{spec.root}",
                     dataset_scene_frames(reader, config.height, config.width, cache_dir=config.cache_dir,
                                          progress=config.progress), spec.weight))
    for name, part, _ in sets:
        if part.size != (config.height, config.width):
            raise ValueError(f"{name} frames are {part.size}, config asks for "
                             f"{(config.height, config.width)}")
    return sets


def draw_mixed(rng: np.random.Generator, sizes: Sequence[int], weights: Sequence[float], batch_size: int
               ) -> np.ndarray:
    """Indices into the concatenated sets: each sample's set drawn with probability proportional to its
    weight, then a frame of that set uniformly (with replacement: a small set may be drawn more than once)."""
    probs = np.asarray(weights, np.float64) / float(np.sum(weights))
    which = rng.choice(len(sizes), size=batch_size, p=probs)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within = np.floor(rng.random(batch_size) * np.asarray(sizes)[which]).astype(np.int64)
    return offsets[which] + within


def train_scene(config: SceneTrainConfig, frames: SceneFrames | None = None, command: str | None = None
                ) -> Path:
    """Train (or resume) and return the final ``.safetensors`` path (with model card).

    ``frames`` overrides the rendered training set (tests pass tiny ones); otherwise they are rendered
    from ``config.train_seeds`` (or read from the cache).  ``command`` (the CLI line) goes into the card.
    """
    out_dir = begin_run(config)
    device = train_device(config.device)
    sets = training_sets(config, frames)
    mixed = bool(config.dataset_specs)
    frames = sets[0][1] if len(sets) == 1 else concat_scene_frames([part for _, part, _ in sets])
    sizes, weights = [len(part) for _, part, _ in sets], [w for _, _, w in sets]

    torch.manual_seed(config.seed)
    model = MultiTaskNet(CONFIGS[config.model]).to(device)
    weighting = UncertaintyWeighting(TASKS, config.weighting, config.task).to(device)
    both = nn.ModuleDict({"model": model, "weighting": weighting})  # checkpointed together
    optimizer = torch.optim.Adam([
        {"params": list(model.parameters()), "weight_decay": config.weight_decay},
        # The task log-variances start at 0 and their optimum is log(task loss), e.g. about -4 for the
        # inverse-depth L1 (~0.02 /m): at the network's learning rate Adam moves them ~lr per step, far
        # too slowly for a short run, so they get their own (larger) rate.
        {"params": [weighting.log_vars], "weight_decay": 0.0, "lr_scale": config.log_var_lr_scale},
    ], lr=config.lr)

    keys = ("model", "weighting", "task", "height", "width", "class_balance", "dataset", "synthetic_weight")
    start, state = resume(out_dir, config, both, optimizer, keys,
                          defaults={"class_balance": "none", "dataset": None, "synthetic_weight": 1.0})
    recent = [dict(r) for r in (state or {}).get("recent", [])]
    sem_weights = None
    if config.class_balance == "median_freq":
        cw = class_weights(frames, model.num_classes)
        sem_weights = torch.tensor(cw, dtype=torch.float32, device=device)
        _LOG.info("median-frequency class weights: %s", ", ".join(f"{w:.2f}" for w in cw))

    kind = config.weighting + (f"/{config.task}" if config.task else "")
    bar = progress_bar(config, start, f"train scene ({kind})")
    both.train()
    step = start
    n = len(frames)
    while step < config.steps:
        # Kept apart from the other loops (training/loop.py says why): this recipe defines the batches.
        rng = np.random.default_rng([config.seed, step])
        idx = (draw_mixed(rng, sizes, weights, config.batch_size) if mixed
               else rng.choice(n, size=min(config.batch_size, n), replace=False))
        flips = (rng.random(len(idx)) < 0.5) & config.flip
        torch.manual_seed(config.seed * 1_000_003 + step)
        batch = make_batch(frames, idx.tolist(), flips.tolist(), device)
        lr = learning_rate(config, step)
        set_learning_rate(optimizer, lr)

        out = model(batch["image"])
        task_losses, nlls = scene_losses(out, batch, config.tasks, config.logit_samples, sem_weights)
        loss = weighting(task_losses)
        if nlls:
            loss = loss + config.nll_weight * sum(nlls.values())
        # Clip the network's gradients only: the task log-variances have their own, larger rate.
        optimizer_step(loss, optimizer, model.parameters(), config.grad_clip)
        value = loss.item()
        check_finite(value, step)
        record = {"loss": value, **{k: v.item() for k, v in task_losses.items()},
                  **{f"nll_{k}": v.item() for k, v in nlls.items()}}
        recent = (recent + [record])[-_WINDOW:]
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.1e}",
                        **{k: f"{v.item():.3f}" for k, v in task_losses.items()})
        if checkpoint_due(step, config.checkpoint_every, config.steps):
            save_checkpoint(out_dir, step, both, optimizer, {"config": config.model},
                            {"seed": config.seed, "config": asdict(config), "recent": recent},
                            config.keep_checkpoints)
    bar.close()

    means = {k: float(np.mean([r[k] for r in recent if k in r])) for k in (recent[-1] if recent else {})}
    final_path = out_dir / f"{config.final_name}.safetensors"
    data = DATA_DESCRIPTION if not mixed else "; ".join(
        f"{name} ({len(part)} frames{', split ' + config.dataset_split if name != 'synthetic' else ''}, "
        f"weight {w:g})" for name, part, w in sets)
    training = run_record(
        config, device, step, command, data=data, train_seeds=config.train_seeds,
        frames=len(frames), task_sigmas=weighting.sigmas(), task_weights=weighting.weights(),
        task_kinds={t: TASK_KINDS[t] for t in config.tasks},
        class_weights=None if sem_weights is None else [round(float(w), 4) for w in sem_weights],
    )
    card = {"name": config.final_name, "trained": True, "input_size": [config.height, config.width],
            "tasks": list(config.tasks), "training": training,
            "metrics": {f"train_{k}_last{len(recent)}": v for k, v in means.items()}}
    save_scene_model(model, final_path, card)
    _LOG.info("trained to step %d; last-%d mean train losses: %s", step, len(recent),
              ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
    return final_path


def build_parser(prog: str = "scene-perception train scene"):  # noqa: ANN201 - argparse.ArgumentParser
    return dataclass_parser(SceneTrainConfig, prog, __doc__.split("\n\n")[0])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``scene-perception train scene ...`` delegates here); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    ns = parse_cli(build_parser(), args)
    try:
        path = train_scene(SceneTrainConfig(**ns), command=" ".join(["scene-perception train scene", *args]))
    except (ValueError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
