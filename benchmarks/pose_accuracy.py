#!/usr/bin/env python3
"""PoseNet relocalisation accuracy and covariance calibration on a held-out drive through the training world.

PoseNet learns one scene, so the held-out set is *another trajectory through the same world*: the script
reads both bags' ``scene-perception synth`` settings and refuses to score unless the world (seed, length,
image size) is the same and the trajectory differs (trajectory seed, lateral offset, speed, start or
sway).  Only the held-out bag is scored; the training bag is read for the baseline and for the distance
from each held-out pose to the nearest training pose (how far the held-out path is from anything seen).

Rows:
* each ``--weights NAME=PATH`` (e.g. the homoscedastic and the reprojection model, trained with the same
  budget): pose = mean of ``--mc-samples`` MC-dropout samples, covariance = their spread
  (``PosePipeline``, the node's own code), plus the deterministic (dropout off) median errors;
* ``constant mean pose``: the training drive's mean position and mean orientation for every frame, with the
  training poses' covariance as its "prediction" (the baseline a learned model must beat).

Calibration: fraction of held-out errors inside the predicted 2-sigma-equivalent ellipsoid, i.e. squared
Mahalanobis distance <= chi-square quantile at 0.9545 (3 DoF: 8.02 for position or rotation alone; 6 DoF:
12.85 for the full pose); 0.954 is calibrated, lower over-confident (``evaluation/pose.py``).

``--calibration-bag`` (a third drive, checked to be neither the training nor the held-out path): one std
multiplier per 3-DoF block (translation, rotation) is fitted on it (``fit_block_scale``, the method that
made the shipped card's scales: ``models/posenet.md``) and the held-out rows are scored again with
them ("<NAME> calibrated"); ``--update-card`` then stores them in the card's ``config.covariance_scale``,
which the pipeline (and so the node) applies.  Nothing is fitted on the held-out drive.

Example::

    python benchmarks/pose_accuracy.py --train-bag runs/bags/train --heldout-bag runs/bags/heldout \\
        --weights homoscedastic=runs/pose_h/posenet.safetensors \\
        --weights reprojection=runs/pose_r/posenet.safetensors --update-card reprojection=models/posenet.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scene_perception.data.pose_frames import bag_synth_settings, load_pose_frames
from scene_perception.evaluation.benchmarking import write_json
from scene_perception.evaluation.pose import (
    fit_block_scale,
    format_metrics_table,
    pose_errors,
    pose_metrics,
)
from scene_perception.models.weights import load_pose_model
from scene_perception.pipelines.pose import PosePipeline, pose_covariance, shrink_cross_covariance
from scene_perception.training.pose import predict

_SAME_WORLD = ("seed", "world_length", "width", "height")
_TRAJECTORY = ("trajectory_seed", "lateral_offset", "speed", "start_x", "sway", "fps")


def check_split(train: dict[str, Any], heldout: dict[str, Any]) -> None:
    """Same world, different trajectory, or SystemExit naming what is wrong."""
    if not train or not heldout:
        raise SystemExit("error: both bags must come from `scene-perception synth` (settings in metadata)")
    differ = [k for k in _SAME_WORLD if train.get(k) != heldout.get(k)]
    if differ:
        raise SystemExit(f"error: held-out bag is not the training world: {differ} differ "
                         f"({[(train.get(k), heldout.get(k)) for k in differ]})")
    if train.get("world_length") is None:
        raise SystemExit("error: bags need --world-length (the layout depends on it; without it two drives "
                         "of different lengths are different worlds)")

    def traj(s: dict[str, Any]) -> tuple:
        return tuple(s.get(k, s.get("seed") if k == "trajectory_seed" else None) for k in _TRAJECTORY)

    if traj(train) == traj(heldout):
        raise SystemExit("error: the held-out bag drives the training trajectory itself")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-bag", required=True, type=Path)
    p.add_argument("--heldout-bag", required=True, type=Path)
    p.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                   help="a PoseNet to score (repeatable)")
    p.add_argument("--mc-samples", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="torch seed of the dropout masks")
    p.add_argument("--calibration-bag", type=Path, default=None,
                   help="a third drive through the same world (neither training nor held-out): per-axis "
                        "covariance scales are fitted on it and applied to held-out rows '<NAME> calibrated'")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--update-card", action="append", default=[], metavar="NAME=CARD",
                   help="record row NAME's held-out metrics in this model card (weights untouched)")
    return p.parse_args(argv)


def nearest_training_distance(train_pos: np.ndarray, heldout_pos: np.ndarray) -> np.ndarray:
    """Per held-out frame, the distance (m) to the closest training position."""
    d = np.linalg.norm(heldout_pos[:, None, :] - train_pos[None, :, :], axis=2)
    return d.min(1)


def run_pipeline(pipeline: PosePipeline, images: np.ndarray, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """Poses, quaternions, covariances and latencies of ``pipeline`` on every image (seeded dropout)."""
    torch.manual_seed(seed)
    pos, quat, covs, lat = [], [], [], []
    for img in images:
        r = pipeline(img)
        pos.append(r.position)
        quat.append(r.quaternion)
        covs.append(r.covariance)
        lat.append(r.latency_ms)
    return np.array(pos), np.array(quat), np.array(covs), lat


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train_s, held_s = bag_synth_settings(args.train_bag), bag_synth_settings(args.heldout_bag)
    check_split(train_s, held_s)
    results: dict[str, Any] = {"train_bag": str(args.train_bag), "heldout_bag": str(args.heldout_bag),
                               "train_synth": train_s, "heldout_synth": held_s, "mc_samples": args.mc_samples,
                               "rows": {}}

    # Sizes only matter for images; positions/orientations are the same at any size.
    train = load_pose_frames(args.train_bag, (32, 64), points_per_frame=0)
    held_native = load_pose_frames(args.heldout_bag, (32, 64), points_per_frame=0)
    near = nearest_training_distance(train.positions, held_native.positions)
    results["heldout_frames"] = len(held_native)
    results["train_frames"] = len(train)
    results["nearest_training_pose_m"] = {"median": float(np.median(near)), "max": float(near.max())}

    mean_p, mean_q, cov = pose_covariance(train.positions, train.quaternions)
    n = len(held_native)
    results["rows"]["constant mean pose"] = pose_metrics(
        np.broadcast_to(mean_p, (n, 3)), np.broadcast_to(mean_q, (n, 4)), np.broadcast_to(cov, (n, 6, 6)),
        held_native.positions, held_native.quaternions)

    for spec in args.weights:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"error: --weights wants NAME=PATH, got {spec!r}")
        model, info = load_pose_model(weights=path)
        cfg = model.config
        held = load_pose_frames(args.heldout_bag, (cfg.input_height, cfg.input_width), points_per_frame=0)
        pipeline = PosePipeline(model, args.mc_samples, "cpu")
        # raw MC dropout; the card's calibration (block scales, cross factor) is applied below
        pipeline.covariance_scale, pipeline.covariance_cross_scale = np.ones(6), 1.0
        pos, quat, covs, lat = run_pipeline(pipeline, held.images, args.seed)
        row = pose_metrics(pos, quat, covs, held.positions, held.quaternions)
        det_p, det_q = predict(model, held.images)
        det = pose_metrics(det_p, det_q, None, held.positions, held.quaternions)
        row["deterministic_median_translation_m"] = det["median_translation_m"]
        row["deterministic_median_rotation_deg"] = det["median_rotation_deg"]
        row["median_latency_ms"] = float(np.median(lat))
        row["weights"] = str(path)
        row["sha256"] = str(info.sha256)
        results["rows"][name] = row
        card_scale = np.asarray(cfg.covariance_scale, np.float64)
        scale = None
        if args.calibration_bag is not None:
            check_split(train_s, bag_synth_settings(args.calibration_bag))
            check_split(held_s, bag_synth_settings(args.calibration_bag))
            val = load_pose_frames(args.calibration_bag, (cfg.input_height, cfg.input_width),
                                   points_per_frame=0)
            vp, vq, vc, _ = run_pipeline(pipeline, val.images, args.seed + 1)
            scale = fit_block_scale(pose_errors(vp, vq, val.positions, val.quaternions)[2], vc)
            source = f"fitted on {args.calibration_bag} ({len(val)} frames)"
        elif not np.allclose(card_scale, 1.0):
            scale, source = card_scale, "from the model card"
        if scale is not None:
            published = shrink_cross_covariance(covs * np.outer(scale, scale), cfg.covariance_cross_scale)
            cal = pose_metrics(pos, quat, published, held.positions, held.quaternions)
            cal["covariance_scale"] = [float(v) for v in scale]
            cal["covariance_scale_source"] = source
            cal["covariance_cross_scale"] = cfg.covariance_cross_scale
            results["rows"][f"{name} calibrated"] = cal

    near_m = results["nearest_training_pose_m"]
    print(f"held-out: {results['heldout_frames']} frames of {args.heldout_bag} (world seed "
          f"{held_s.get('seed')}, trajectory seed {held_s.get('trajectory_seed')}, lateral offset "
          f"{held_s.get('lateral_offset')} m, speed {held_s.get('speed')} m/s); training drive "
          f"{args.train_bag}: {results['train_frames']} frames; held-out pose to nearest training pose: "
          f"median {near_m['median']:.2f} m, max {near_m['max']:.2f} m")
    print(f"MC-dropout samples per frame: {args.mc_samples}; 2-sigma = chi-square 0.9545 quantile "
          "(3 DoF 8.02, 6 DoF 12.85), calibrated = 0.95")
    print(format_metrics_table(results["rows"]))
    for name, row in results["rows"].items():
        if "deterministic_median_translation_m" in row:
            print(f"{name}: dropout off: median {row['deterministic_median_translation_m']:.2f} m, "
                  f"{row['deterministic_median_rotation_deg']:.2f} deg; MC latency median "
                  f"{row['median_latency_ms']:.1f} ms ({args.threads} thread)")
    command = "python benchmarks/pose_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results["command"] = command
    if args.json is not None:
        write_json(args.json, results, indent=2)
    for spec in args.update_card:
        name, _, card_path = spec.partition("=")
        if name not in results["rows"]:
            raise SystemExit(f"error: --update-card names {name!r}, not a scored row")
        card_file = Path(card_path)
        card = json.loads(card_file.read_text(encoding="utf-8"))
        card.setdefault("metrics", {})["heldout"] = {
            "measured_by": command, "measured_at": time.strftime("%Y-%m-%d"),
            "heldout_bag_synth": held_s, "heldout_frames": results["heldout_frames"],
            "nearest_training_pose_m": results["nearest_training_pose_m"], "mc_samples": args.mc_samples,
            "two_sigma_rule": "squared Mahalanobis <= chi2 quantile at 0.9545 (3 DoF 8.0249, 6 DoF 12.8488)",
            "raw_mc_dropout": {k: v for k, v in results["rows"][name].items()
                               if k not in ("weights", "sha256")},
            "baseline_constant_mean_pose": results["rows"]["constant mean pose"],
            "other_rows": {k: {m: v for m, v in r.items() if m not in ("weights", "sha256")}
                           for k, r in results["rows"].items() if k not in (name, "constant mean pose")},
        }
        calibrated = results["rows"].get(f"{name} calibrated")
        if calibrated is not None and args.calibration_bag is not None:
            # The weights file is untouched (sha256 stays valid): the scale is config, read by the pipeline.
            card["config"]["covariance_scale"] = calibrated["covariance_scale"]
            card["metrics"]["heldout"]["calibrated"] = calibrated
            card["metrics"]["heldout"]["calibration_bag_synth"] = bag_synth_settings(args.calibration_bag)
        card_file.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        print(f"model card updated: {card_file}")
    return results


if __name__ == "__main__":
    main()
