"""Shared set-up of the end-to-end ``scene-perception eval`` tests (test_scene_eval, test_pose_eval)."""

from __future__ import annotations

from pathlib import Path

import torch

from scene_perception.data.synth import write_synthetic_bag
from scene_perception.models.gcnet import CONFIGS as STEREO_CONFIGS
from scene_perception.models.gcnet import GCNet
from scene_perception.models.multitask import CONFIGS, MultiTaskNet
from scene_perception.models.weights import save_scene_model, save_stereo_model

W, H = 128, 64


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
