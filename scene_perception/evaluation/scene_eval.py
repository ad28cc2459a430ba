"""Score the multi-task scene network on held-out synthetic frames: task accuracy (Table 1 of Kendall, Gal &
Cipolla 2018) and uncertainty quality (AUSE, ECE, epistemic in- vs out-of-distribution).

Held-out means world seeds below :data:`scene_perception.data.splits.HELDOUT_SEED_LIMIT` (training
refuses them).  Out-of-distribution inputs are things the street world never shows:

* ``noise`` -- uniform RGB noise;
* ``inverted`` -- the held-out frames with inverted colours (same geometry, unseen appearance);
* ``procedural`` -- left views of :mod:`scene_perception.data.procedural` (textured slanted planes, no
  street layout).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from scene_perception.data.scene_frames import SceneFrames
from scene_perception.evaluation.scene_metrics import (
    ConfusionMatrix,
    auroc,
    expected_calibration_error,
    instance_matches,
    inverse_depth_error,
    offset_error,
)
from scene_perception.evaluation.uncertainty import ause
from scene_perception.models.labels import THING_CLASSES
from scene_perception.pipelines.instances import centroid_offsets, cluster_instances

__all__ = ["OOD_KINDS", "evaluate_tasks", "evaluate_uncertainty", "ood_images"]

OOD_KINDS = ("noise", "inverted", "procedural")


def evaluate_tasks(model: nn.Module, frames: SceneFrames, batch_size: int = 16) -> dict[str, Any]:
    """Deterministic (eval-mode) forward on every frame; mIoU (%), instance offset mean error (px, over
    ground-truth instance pixels, Euclidean), inverse-depth mean absolute error (1/m, every pixel; the sky
    has inverse depth 0), and recall / precision of the clustered instances (>= 20 px, IoU > 0.5)."""
    model.eval()
    device = next(model.parameters()).device
    cm = ConfusionMatrix(int(model.config.num_classes))
    off_sum, off_n, inv_sum, inv_n = 0.0, 0, 0.0, 0
    matched, n_gt, n_pred = 0, 0, 0
    with torch.inference_mode():
        for lo in range(0, len(frames), batch_size):
            sl = slice(lo, min(lo + batch_size, len(frames)))
            x = torch.from_numpy(frames.images[sl]).permute(0, 3, 1, 2).float().div(255.0).to(device)
            out = model(x)
            labels = out.semantic_logits.argmax(1).cpu().numpy()
            offsets = out.offsets.cpu().numpy()
            inv = out.inv_depth[:, 0].cpu().numpy()
            for k, i in enumerate(range(sl.start, sl.stop)):
                cm.update(labels[k], frames.semantic[i])
                gt_off, mask = centroid_offsets(frames.instance[i])
                s, n = offset_error(offsets[k], gt_off, mask)
                off_sum, off_n = off_sum + s, off_n + n
                s, n = inverse_depth_error(inv[k], frames.inv_depth[i])
                inv_sum, inv_n = inv_sum + s, inv_n + n
                ids = cluster_instances(offsets[k], labels[k], THING_CLASSES)
                m, g, p = instance_matches(ids, frames.instance[i])
                matched, n_gt, n_pred = matched + m, n_gt + g, n_pred + p
    return {
        "miou_pct": 100.0 * cm.miou(),
        "pixel_accuracy_pct": 100.0 * cm.pixel_accuracy(),
        "instance_error_px": off_sum / max(off_n, 1),
        "inv_depth_error_per_m": inv_sum / max(inv_n, 1),
        # Clustered instances (pipeline post-processing) vs ground truth, instances >= 20 px, IoU > 0.5.
        "instance_recall_pct": 100.0 * matched / max(n_gt, 1),
        "instance_precision_pct": 100.0 * matched / max(n_pred, 1),
        "per_class_iou_pct": [None if np.isnan(v) else round(100.0 * float(v), 2) for v in cm.iou()],
        "frames": len(frames),
    }


def ood_images(kind: str, frames: SceneFrames, count: int, seed: int = 0) -> np.ndarray:
    """(count, H, W, 3) uint8 out-of-distribution images at the frames' size (see the module docstring)."""
    h, w = frames.size
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x00D]))
    if kind == "noise":
        return rng.integers(0, 256, size=(count, h, w, 3), dtype=np.uint8)
    if kind == "inverted":
        idx = np.arange(count) % len(frames)
        return (255 - frames.images[idx]).astype(np.uint8)
    if kind == "procedural":
        from scene_perception.data.procedural import make_stereo_sample

        return np.stack([make_stereo_sample(int(seed) * 1000 + i, width=w, height=h,
                                            max_disparity=36.0 * w / 192.0).left for i in range(count)])
    raise ValueError(f"unknown OOD kind {kind!r}; known: {OOD_KINDS}")


def evaluate_uncertainty(pipeline: Any, frames: SceneFrames, *, ood: Iterable[str] = OOD_KINDS,
                         ood_count: int | None = None, ece_bins: int = 15, ause_steps: int = 20
                         ) -> dict[str, Any]:
    """Run ``pipeline`` (a ScenePipeline with ``mc_samples > 0``) on the held-out frames and OOD images.

    Returns ECE of the mean softmax (all pixels), depth AUSE (absolute depth error in metres over pixels
    with finite ground-truth and predicted depth, ranked by aleatoric, epistemic and total variance; and
    inverse-depth error ranked by the same), mean mutual information per image set, and the AUROC of the
    per-image mean MI for held-out vs each OOD set.
    """
    if int(pipeline.mc_samples) <= 0:
        raise ValueError("uncertainty evaluation needs mc_samples > 0 (epistemic outputs)")
    conf, correct = [], []
    err_d, var_a, var_e, err_inv = [], [], [], []
    mi_pixels_in, mi_img_in, ale_img_in = [], [], []
    for i in range(len(frames)):
        r = pipeline(frames.images[i])
        p = r.probabilities
        if p is not None and p.shape[1:] == frames.semantic[i].shape:
            conf.append(p.max(0).ravel())
        else:  # network ran at another size: use the label map's confidence via argmax at input size
            raise ValueError("evaluate_uncertainty expects frames at the pipeline's input_size")
        correct.append((r.labels == frames.semantic[i]).ravel())
        gt_depth = np.where(frames.inv_depth[i] > 0, 1.0 / np.maximum(frames.inv_depth[i], 1e-12), np.inf)
        keep = np.isfinite(gt_depth) & np.isfinite(r.depth)
        err_d.append(np.abs(r.depth[keep] - gt_depth[keep]))
        var_a.append(r.depth_variance[keep])
        var_e.append(r.depth_epistemic[keep])
        err_inv.append(np.abs(r.inv_depth - frames.inv_depth[i])[keep])
        mi_pixels_in.append(r.semantic_epistemic.ravel())
        mi_img_in.append(float(r.semantic_epistemic.mean()))
        ale_img_in.append(float(r.semantic_aleatoric.mean()))
    conf_a, corr_a = np.concatenate(conf), np.concatenate(correct)
    ece = expected_calibration_error(conf_a, corr_a, ece_bins)
    e, va, ve, ei = (np.concatenate(v) for v in (err_d, var_a, var_e, err_inv))
    result: dict[str, Any] = {
        "frames": len(frames),
        "mc_samples": int(pipeline.mc_samples),
        "semantic_ece": ece["ece"],
        "semantic_mce": ece["mce"],
        "semantic_accuracy": float(corr_a.mean()),
        "semantic_mean_confidence": float(conf_a.mean()),
        "depth_mae_m": float(e.mean()),
        "depth_ause_aleatoric": ause(e, va, ause_steps)["ause"],
        "depth_ause_epistemic": ause(e, ve, ause_steps)["ause"],
        "depth_ause_total": ause(e, va + ve, ause_steps)["ause"],
        "depth_ause_random_baseline": ause(e, np.random.default_rng(0).random(e.size), ause_steps)["ause"],
        "inv_depth_ause_aleatoric": ause(ei, va, ause_steps)["ause"],
        "mi_in_mean": float(np.mean(mi_img_in)),
        "aleatoric_in_mean": float(np.mean(ale_img_in)),
        "ood": {},
    }
    n_ood = ood_count or len(frames)
    for kind in ood:
        imgs = ood_images(kind, frames, n_ood)
        mi_img, ale_img = [], []
        for img in imgs:
            r = pipeline(img)
            mi_img.append(float(r.semantic_epistemic.mean()))
            ale_img.append(float(r.semantic_aleatoric.mean()))
        result["ood"][kind] = {
            "images": len(imgs),
            "mi_mean": float(np.mean(mi_img)),
            "aleatoric_mean": float(np.mean(ale_img)),
            "mi_ratio_out_in": float(np.mean(mi_img) / max(result["mi_in_mean"], 1e-12)),
            "auroc_image_mi": auroc(np.asarray(mi_img_in), np.asarray(mi_img)),
        }
    return result
