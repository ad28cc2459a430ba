"""Resumable-training plumbing shared by the training loops (stereo, multi-task, pose): safetensors
checkpoints, optimizer state without pickles, the resume-config check, a step-only learning-rate schedule,
warm starts, device choice, and a CLI parser (with logging setup) generated from a config dataclass.

Checkpoint layout (``<out_dir>/checkpoints/``): ``step_XXXXXXXX.safetensors`` (module state),
``step_XXXXXXXX.optim.safetensors`` (optimizer tensors) and ``step_XXXXXXXX.state.json`` (step, run config,
optimizer param groups, whatever the loop adds).  The JSON is written last, so its presence marks a complete
checkpoint and a crash mid-save is ignored at resume time.  It is *not* named ``<stem>.json``: that name is
a model card to the weights loader, and resume state must never be mistaken for one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CKPT_DIR",
    "atomic_save_tensors",
    "check_resume_config",
    "checkpoint_paths",
    "dataclass_parser",
    "find_latest_checkpoint",
    "load_checkpoint",
    "optimizer_tensors",
    "parse_cli",
    "read_state",
    "restore_optimizer",
    "save_checkpoint",
    "schedule_lr",
    "step_of",
    "train_device",
    "warm_start",
]

_LOG = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
STATE_FORMAT = 1


def schedule_lr(lr: float, step: int, steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine down to 2 % (or x0.5 at 50 % and 75 %).

    A pure function of the step (instead of a scheduler object) so resuming needs no scheduler state.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, steps - warmup_steps)))
    if schedule == "cosine":
        return lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))
    return lr * (0.5 ** (int(progress >= 0.5) + int(progress >= 0.75)))


def checkpoint_paths(out_dir: Path, step: int) -> dict[str, Path]:
    stem = Path(out_dir) / CKPT_DIR / f"step_{step:08d}"
    return {
        "model": stem.with_suffix(".safetensors"),
        "optim": stem.with_name(stem.name + ".optim.safetensors"),
        "state": stem.with_name(stem.name + ".state.json"),
    }


def step_of(state_path: Path) -> int:
    """``step_00000250.state.json`` -> 250."""
    return int(state_path.name.split("_")[1].split(".")[0])


def find_latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint's JSON (its weights and optimizer files present), or None."""
    ckpt_dir = Path(out_dir) / CKPT_DIR
    if not ckpt_dir.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for state in ckpt_dir.glob("step_*.state.json"):
        try:
            step = step_of(state)
        except (IndexError, ValueError):
            continue
        paths = checkpoint_paths(Path(out_dir), step)
        if paths["model"].is_file() and paths["optim"].is_file() and (best is None or step > best[0]):
            best = (step, state)
    return None if best is None else best[1]


def atomic_save_tensors(tensors: Mapping[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Flatten an optimizer state dict into named tensors + JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"state.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor],
                      groups: list[dict[str, Any]]) -> None:
    """Load flattened optimizer state (see :func:`optimizer_tensors`) into ``optimizer``.

    Pass CPU tensors: ``Optimizer.load_state_dict`` moves each state tensor to its parameter's device and
    dtype, except Adam's ``step`` counter, which it leaves where it is unless the group is ``capturable`` or
    ``fused`` (then it moves it to the parameter's device itself).  A non-capturable Adam wants ``step`` on
    the CPU: loaded onto a GPU it still trains correctly but reads every counter back to the host each step.
    """
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def read_state(state_path: str | Path) -> dict[str, Any]:
    """A checkpoint's state JSON (step, run config, whatever the loop stored)."""
    return json.loads(Path(state_path).read_text(encoding="utf-8"))


def save_checkpoint(out_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    metadata: Mapping[str, str] | None, extra: Mapping[str, Any] | None, keep: int) -> Path:
    """Write the three checkpoint files (state JSON last), prune all but the newest ``keep``; return the
    JSON path.  ``metadata`` goes into the safetensors headers; the state JSON holds ``extra`` plus
    ``format``, ``step``, ``param_groups`` and ``saved_at``."""
    out_dir = Path(out_dir)
    paths = checkpoint_paths(out_dir, step)
    paths["state"].parent.mkdir(parents=True, exist_ok=True)
    meta = {**{k: str(v) for k, v in (metadata or {}).items()}, "step": str(step), "format": "pt"}
    atomic_save_tensors(model.state_dict(), paths["model"], meta)
    opt_tensors, groups = optimizer_tensors(optimizer)
    atomic_save_tensors(opt_tensors, paths["optim"], meta)
    payload = {"format": STATE_FORMAT, "step": step, **dict(extra or {}), "param_groups": groups,
               "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    tmp = paths["state"].with_name(paths["state"].name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, paths["state"])  # last: marks the checkpoint complete
    steps = sorted(step_of(p) for p in paths["state"].parent.glob("step_*.state.json"))
    for old in steps[:-keep]:
        for p in checkpoint_paths(out_dir, old).values():
            p.unlink(missing_ok=True)
    return paths["state"]


def load_checkpoint(state_path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device | str = "cpu") -> dict[str, Any]:
    """Restore ``model`` and ``optimizer`` (both already on their training device) from a checkpoint; return
    its state JSON.

    Everything is read onto the CPU and lands where the parameters live: ``Module.load_state_dict`` copies
    into the parameters, and :func:`restore_optimizer` lets ``Optimizer.load_state_dict`` place the moments
    on each parameter's device while Adam's ``step`` counters stay CPU tensors (what torch itself creates for
    a non-capturable, non-fused Adam).  So a checkpoint written on one device resumes on another (CPU <->
    CUDA) with the same values, exactly.  Loading the optimizer tensors straight onto the GPU, as this did
    before, put the ``step`` counters there too: correct numbers, but a device-to-host read of every counter
    in every step.  ``device`` is kept for callers' compatibility; the parameters' devices decide.
    """
    from safetensors.torch import load_file

    del device  # see the docstring: the parameters' own devices decide
    state = read_state(state_path)
    paths = checkpoint_paths(Path(state_path).parent.parent, int(state["step"]))
    model.load_state_dict(load_file(str(paths["model"]), device="cpu"))
    restore_optimizer(optimizer, load_file(str(paths["optim"]), device="cpu"), state["param_groups"])
    return state


def check_resume_config(state_path: str | Path, config: Any, keys: Sequence[str],
                        defaults: Mapping[str, Any] | None = None) -> None:
    """Refuse to resume a checkpoint whose run config differs from ``config`` in one of ``keys``.

    Resuming with another model, data or loss would silently continue a different run in the same out_dir.
    ``defaults`` stands in for keys that older checkpoints did not record.
    """
    saved = read_state(state_path).get("config", {})
    for key in keys:
        if saved.get(key, (defaults or {}).get(key)) != getattr(config, key):
            raise ValueError(f"checkpoint {state_path} was trained with {key}={saved.get(key)!r} but this "
                             f"run asks for {getattr(config, key)!r}; use another out_dir")


def train_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else as torch names it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def warm_start(model: nn.Module, path: Path, log: bool = True) -> list[str]:
    """Copy every tensor of ``path`` whose name and shape match ``model`` (safetensors: no pickle); return
    the names that kept their init."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"init_weights {path} does not exist")
    tensors = load_file(str(path))
    own = model.state_dict()
    usable = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    fresh = sorted(k for k in own if k not in usable)
    if log:
        _LOG.info("warm start from %s: %d tensors loaded, %d kept their init (%s)", path, len(usable),
                  len(fresh), ", ".join(fresh[:6]) + (" ..." if len(fresh) > 6 else ""))
    return fresh


def dataclass_parser(cls: type, prog: str, description: str,
                     choices: Mapping[str, Sequence[str]] | None = None,
                     required: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Argument parser generated from a config dataclass (``help`` from field metadata), so a CLI cannot
    drift from its config; bools become ``--flag/--no-flag``, fields in ``choices`` get a fixed set of
    values, fields in ``required`` must be given. Ends with ``--log-level`` (see :func:`parse_cli`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        help_text = f.metadata.get("help", "")
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
        elif choices and f.name in choices:
            parser.add_argument(flag, dest=f.name, choices=choices[f.name], default=f.default, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=base, default=f.default, help=help_text,
                                required=f.name in required)
    parser.add_argument("--log-level", default="INFO", help="python logging level")
    return parser


def parse_cli(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``argv``, set up logging from ``--log-level`` and return the remaining config fields."""
    ns = vars(parser.parse_args(list(argv)))
    logging.basicConfig(level=getattr(logging, str(ns.pop("log_level")).upper(), logging.INFO),
                        format="%(levelname)s %(name)s: %(message)s")
    return ns
