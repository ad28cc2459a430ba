"""Held-out / OOD evaluation drivers run end to end on tiny frames and return sane, finite numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scene_perception.data.scene_frames import render_scene_frames
from scene_perception.evaluation.scene_eval import evaluate_tasks, evaluate_uncertainty, ood_images
from scene_perception.models.multitask import MultiTaskNet
from scene_perception.pipelines.scene import ScenePipeline


@pytest.fixture(scope="module")
def frames():
    return render_scene_frames([3], 2, 32, 64, nuisance=False)


def test_ood_images(frames) -> None:
    for kind in ("noise", "inverted", "procedural"):
        imgs = ood_images(kind, frames, 3)
        assert imgs.shape == (3, 32, 64, 3) and imgs.dtype == np.uint8
    assert np.array_equal(ood_images("inverted", frames, 1)[0], 255 - frames.images[0])
    with pytest.raises(ValueError):
        ood_images("fog", frames, 1)


def test_task_and_uncertainty_evaluation(frames) -> None:
    torch.manual_seed(0)
    model = MultiTaskNet("tiny")
    tasks = evaluate_tasks(model, frames)
    assert 0.0 <= tasks["miou_pct"] <= 100.0 and tasks["frames"] == 2
    assert tasks["instance_error_px"] > 0 and tasks["inv_depth_error_per_m"] > 0
    pipe = ScenePipeline(model, mc_samples=3, input_size=(32, 64))
    unc = evaluate_uncertainty(pipe, frames, ood_count=2)
    for key in ("semantic_ece", "depth_ause_aleatoric", "depth_ause_epistemic", "mi_in_mean"):
        assert math.isfinite(unc[key]), key
    assert 0.0 <= unc["semantic_ece"] <= 1.0
    assert set(unc["ood"]) == {"noise", "inverted", "procedural"}
    assert all(0.0 <= o["auroc_image_mi"] <= 1.0 for o in unc["ood"].values())
    pipe.mc_samples = 0
    with pytest.raises(ValueError, match="mc_samples"):
        evaluate_uncertainty(pipe, frames)
