"""The skeleton the three training loops share (``training/stereo.py``, ``multitask.py``, ``pose.py``).

Every run goes the same way, and these functions are the one place each shared step lives:

1. :func:`begin_run` -- validate the config (:func:`validate_common` holds the checks of the shared fields),
   set the CPU threads, create the output folder;
2. seed torch with ``config.seed``, build the model and an Adam optimizer (the loop's own code: models
   and parameter groups differ);
3. :func:`resume` from the newest complete checkpoint of ``out_dir`` (refusing one written by a different
   run), else start at step 0 or warm-start;
4. per step: :func:`set_learning_rate` to :func:`learning_rate` (a pure function of the step, so resuming
   needs no scheduler state), forward + loss, :func:`optimizer_step`, and a checkpoint when
   :func:`checkpoint_due`;
5. the final weights with a model card whose ``training`` record starts from :func:`run_record`.

What stays in each loop, and why it is not shared:

* **Per-step randomness.**  Each loop derives its batch from ``(seed, step)`` so a resumed run is the same
  run, but each does it its own way: stereo through an index-seeded rendered dataset and a fixed sampler
  (DataLoader workers render ahead), scene and pose with an RNG per step over frames held in memory.  The
  recipes differ in detail (seed sequences, salts); unifying them would change the batches of every run
  whose command a model card records, so a recorded command would no longer reproduce its weights.
* **Host syncs.**  Stereo (the GPU workload) keeps its metrics on the device and checks the loss for NaN
  once per ``log_every`` steps; scene and pose are small CPU runs that read the loss every step
  (:func:`check_finite`).
* **DDP and mixed precision.**  Only stereo runs under torchrun and autocast (its ``GradScaler`` goes
  through :func:`optimizer_step`); scene and pose train on one device in fp32.
* **What the checkpoint JSON and the card add** (EPE window, learned task sigmas, ``sx``/``sq``): each loop
  passes its own extras.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scene_perception.training.checkpoints import (
    check_resume_config,
    find_latest_checkpoint,
    load_checkpoint,
    schedule_lr,
)

__all__ = [
    "LR_SCHEDULES",
    "begin_run",
    "check_finite",
    "checkpoint_due",
    "learning_rate",
    "optimizer_step",
    "progress_bar",
    "resume",
    "run_record",
    "set_learning_rate",
    "validate_common",
]

_LOG = logging.getLogger(__name__)

#: ``--lr-schedule`` values (see :func:`~scene_perception.training.checkpoints.schedule_lr`).
LR_SCHEDULES = ("cosine", "step", "constant")


def validate_common(config: Any) -> None:
    """The checks of the fields every training config has (steps, lr, schedule, checkpoints, clipping).

    Called by each config's ``validate`` before its own checks, so a typo in a shared flag gets the same
    message whichever model is trained.
    """
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be cosine, step or constant, got {config.lr_schedule!r}")
    for name in ("steps", "batch_size", "checkpoint_every", "keep_checkpoints"):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)}")
    if not config.lr > 0:
        raise ValueError(f"lr must be > 0, got {config.lr}")
    for name in ("warmup_steps", "weight_decay", "grad_clip", "num_threads"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")


def begin_run(config: Any, make_out_dir: bool = True, opencv_threads: bool = False) -> Path:
    """Validate ``config``, apply ``num_threads`` (0: the libraries' defaults) and create ``out_dir``.

    ``opencv_threads`` also caps OpenCV's pool (stereo renders its pairs with OpenCV in the training
    process).  ``make_out_dir`` False for the DDP ranks that write nothing.
    """
    config.validate()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
        if opencv_threads:
            import cv2

            cv2.setNumThreads(config.num_threads)
    out_dir = Path(config.out_dir)
    if make_out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def learning_rate(config: Any, step: int) -> float:
    """``config``'s learning rate at ``step``: linear warm-up, then its schedule over ``config.steps``."""
    return schedule_lr(config.lr, step, config.steps, config.warmup_steps, config.lr_schedule)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group to ``lr`` times its ``lr_scale`` (1 when absent): the scene loop's task
    log-variances train at a multiple of the network's rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def resume(out_dir: Path, config: Any, module: nn.Module, optimizer: torch.optim.Optimizer,
           keys: Sequence[str], defaults: Mapping[str, Any] | None = None, log: bool = True
           ) -> tuple[int, dict[str, Any] | None]:
    """(start step, the checkpoint's state JSON) after restoring the newest complete checkpoint of
    ``out_dir`` into ``module`` and ``optimizer``; ``(0, None)`` when there is none.

    Refuses (ValueError) a checkpoint whose config differs in one of ``keys`` (``defaults`` stand in for
    keys older checkpoints lack): continuing a different run in the same folder would be silent nonsense.
    The start step is capped at ``config.steps``, so a finished run only rewrites its final weights.
    """
    latest = find_latest_checkpoint(out_dir)
    if latest is None:
        return 0, None
    check_resume_config(latest, config, keys, defaults)
    state = load_checkpoint(latest, module, optimizer)
    if log:
        _LOG.info("resuming from %s at step %d", latest, int(state["step"]))
    return min(int(state["step"]), config.steps), state


def optimizer_step(loss: Tensor, optimizer: torch.optim.Optimizer, parameters: Iterable[Tensor],
                   grad_clip: float, scaler: torch.amp.GradScaler | None = None) -> None:
    """Backward, clip the gradient norm of ``parameters`` at ``grad_clip`` (0: no clipping), step.

    With an enabled ``scaler`` (fp16) the loss is scaled, the gradients are unscaled before clipping (clip
    the true gradients, not the scaled ones) and a step with inf/NaN gradients is skipped; a disabled one
    passes every call straight through.
    """
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def check_finite(value: float, step: int) -> None:
    """Stop a run whose loss became inf/NaN, naming the step (no checkpoint is written after it)."""
    if not math.isfinite(value):
        raise FloatingPointError(f"loss became {value} at step {step}; lower lr or check the data")


def checkpoint_due(step: int, every: int, end: int) -> bool:
    """True after the step that completes ``step``: every ``every`` steps and at the run's last."""
    return step % every == 0 or step == end


def progress_bar(config: Any, initial: int, desc: str, enabled: bool = True) -> Any:
    """tqdm over ``config.steps`` from ``initial`` (shown only with ``config.progress`` and ``enabled``)."""
    from tqdm import tqdm

    return tqdm(total=config.steps, initial=initial, disable=not (config.progress and enabled), desc=desc,
                dynamic_ncols=True)


def run_record(config: Any, device: torch.device, steps: int, command: str | None, **extra: Any
               ) -> dict[str, Any]:
    """The model card's ``training`` record: what every loop writes (the command, the whole config, the
    steps reached, device and torch version), then the loop's ``extra`` fields."""
    return {"command": command, "config": dataclasses.asdict(config), **extra, "steps": steps,
            "device": str(device), "torch": torch.__version__}
