"""Shared set-up of the end-to-end evaluation tests: ``scene-perception eval`` (test_scene_eval,
test_pose_eval) and the benchmarks that score real GT pairs (test_metrics, test_calibration)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import torch

from scene_perception.data.datasets.real_pairs import MOTORCYCLE_FILES
from scene_perception.data.procedural import make_stereo_sample
from scene_perception.data.synth import write_synthetic_bag
from scene_perception.models.gcnet import CONFIGS as STEREO_CONFIGS
from scene_perception.models.gcnet import GCNet
from scene_perception.models.multitask import CONFIGS, MultiTaskNet
from scene_perception.models.weights import save_scene_model, save_stereo_model

W, H = 128, 64
REPO = Path(__file__).resolve().parents[1]


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, a script rather than a package module, loaded from its file and registered
    as ``bench_<name>`` (dataclasses look their module up in ``sys.modules`` while the file executes)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_gt_bag(directory: Path) -> Path:
    """A 2-frame synthetic street bag (W x H, world seed 5) with every ground-truth topic."""
    return write_synthetic_bag(directory / "bag", 2, width=W, height=H, seed=5, storage="sqlite3")


def untrained_weights(directory: Path) -> tuple[Path, Path]:
    """(lite stereo, tiny scene) weights with seed-0 untrained parameters: fast, deterministic nodes."""
    torch.manual_seed(0)
    stereo_w = directory / "lite.safetensors"
    save_stereo_model(GCNet(STEREO_CONFIGS["lite"]), stereo_w, {"trained": False})
    scene_w = directory / "scene_tiny.safetensors"
    save_scene_model(MultiTaskNet(CONFIGS["tiny"]), scene_w, {"trained": False})
    return stereo_w, scene_w


def write_motorcycle_standin(directory: Path, seed: int) -> Any:
    """A rendered 160x96 pair (max disparity 24, procedural ``seed``) written in Motorcycle's fetched layout
    (two PNGs and an npz with inf = unknown), so a test needs no download; returns the rendered sample."""
    directory.mkdir(parents=True)
    s = make_stereo_sample(seed, width=160, height=96, max_disparity=24)
    left_name, right_name, gt_name = MOTORCYCLE_FILES
    cv2.imwrite(str(directory / left_name), cv2.cvtColor(s.left, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(directory / right_name), cv2.cvtColor(s.right, cv2.COLOR_RGB2BGR))
    np.savez(directory / gt_name, np.where(np.isfinite(s.disparity), s.disparity, np.inf))
    return s
