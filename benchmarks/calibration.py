#!/usr/bin/env python3
"""Calibration of every uncertainty the package publishes (issue 25 item 1), on held-out data.

Why: a std-dev or covariance is only worth publishing if a planner can take it at face value, i.e. the truth
falls inside k std as often as the distribution the head assumes says.  For each output this measures
coverage at 1 / 2 / 3 std against that distribution, a reliability diagram, AUSE and the Spearman
correlation of std and error (``scene_perception/evaluation/calibration.py``, ``.../uncertainty.py``):

* **disparity std** (``stereo_depth``; Laplace: ``std = sqrt(2) b``, so 75.7 / 94.1 / 98.6 % expected) of
  the network alone and of the default pipeline (after the local refinement's std update), on held-out
  synthetic pairs (non-occluded pixels; seeds of ``data/splits.py``) and Middlebury Aloe (evaluation
  only, every pixel with known GT, range = 0.2 x width as ``stereo_accuracy.py``); also the **depth
  std** (first-order propagation of the disparity std) on the synthetic pairs, with a nominal camera
  (``doffs = 0``: the ratio depth error / depth std does not depend on f or B then);
* **semantic probabilities** (``scene``): ECE (15 bins) and reliability diagram of the single pass and of
  the MC-dropout mean, on held-out street frames (world seeds < 100);
* **scene depth variance** (aleatoric: Laplace on inverse depth, delta method to m^2; total = aleatoric +
  MC-dropout variance): coverage, AUSE, Spearman on the same frames (pixels with finite GT depth);
* **pose covariance** (``pose``; Gaussian, 6x6 of MC-dropout samples x the card's ``covariance_scale``):
  coverage of the 1/2/3-sigma ellipsoids (translation, rotation, 6-DoF) and NEES with its chi-square
  interval, raw and as published, on the held-out drive of ``models/posenet.md``.

``--split validation`` scores the validation seeds / drive instead (no Aloe): the split to *fit* on.
``--fit-refinement-std`` (validation only) grids the refinement's ``uncertainty_scale`` x
``correction_std`` and applies the rule of ``benchmarks/results/2026-12-05_cpu/calibration_fit_rule.md``.
``--refinement-std SCALE,FLOOR`` scores the disparity with another std update than the default (the pipeline
then runs with it), to report a fitted setting on the test split and Aloe next to the default.

    python benchmarks/calibration.py --threads 1 --json out/calibration.json --figures out/calibration_figures
    python benchmarks/calibration.py --quick   # a smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from scene_perception.evaluation.benchmarking import parse_size
from scene_perception.evaluation.calibration import (
    coverage,
    ellipsoid_coverage,
    expected_coverage,
    interval_reliability,
    nees_consistency,
    spearman,
    std_binned_reliability,
)
from scene_perception.evaluation.scene_metrics import expected_calibration_error
from scene_perception.evaluation.uncertainty import ause

_REPO = Path(__file__).resolve().parents[1]
DEFAULT_ALOE_DIR = _REPO / ".cache" / "eval" / "middlebury_aloe"
DEFAULT_POSE_BAGS = {"test": _REPO / "runs" / "calib" / "bags" / "pose_heldout",
                     "validation": _REPO / "runs" / "calib" / "bags" / "pose_val"}
SECTIONS = ("disparity", "semantic", "scene_depth", "pose")
#: The grid of --fit-refinement-std (written in the rule file before anything was scored).
FIT_SCALES = (0.25, 0.35, 0.5, 0.7, 1.0)
FIT_FLOORS = (0.0, 0.3, 0.5, 0.7, 1.0)
#: Probe std update: scale 0.5 and no floor, so "changed" = std halved and any setting can be re-applied.
_PROBE_SCALE = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--model", default="lite", help="stereo model name")
    p.add_argument("--weights", default=None, help="stereo .safetensors (default: shipped)")
    p.add_argument("--pairs", type=int, default=30, help="synthetic stereo pairs")
    p.add_argument("--size", type=parse_size, default=(256, 512), help="HxW of the synthetic pairs")
    p.add_argument("--max-disparity", type=float, default=96.0, help="of the synthetic pairs")
    p.add_argument("--aloe-dir", type=Path, default=DEFAULT_ALOE_DIR, help="'' or missing: skip Aloe")
    p.add_argument("--range-fraction", type=float, default=0.2, help="Aloe range = this x width (not GT)")
    p.add_argument("--refinement-std", default=None, metavar="SCALE,FLOOR",
                   help="score the pipeline with uncertainty_scale,correction_std instead of the default")
    p.add_argument("--fit-refinement-std", action="store_true",
                   help="validation split: grid the refinement's std update and apply the written rule")
    p.add_argument("--scene-seeds", default=None, help="street world seeds (default: 1:21 test, 21:31 val)")
    p.add_argument("--scene-frames-per-seed", type=int, default=4)
    p.add_argument("--scene-mc-samples", type=int, default=16)
    p.add_argument("--scene-cache-dir", default="runs/scene_data")
    p.add_argument("--pose-bag", type=Path, default=None,
                   help="drive to score (default runs/calib/bags/pose_heldout, or pose_val for validation; "
                        "made with the commands of models/posenet.md)")
    p.add_argument("--pose-mc-samples", type=int, default=32)
    p.add_argument("--pose-max-frames", type=int, default=None)
    p.add_argument("--bins", type=int, default=10, help="std bins of the RMSE-vs-RMV diagram")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="torch seed (dropout masks)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 pairs at 64x128, 1 scene seed x 1 frame, 4 MC samples, 6 pose frames")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--figures", type=Path, default=None, help="directory for the reliability diagrams")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; known: {SECTIONS}")
    if args.fit_refinement_std and args.split != "validation":
        p.error("--fit-refinement-std fits on the validation split only (add --split validation)")
    if args.refinement_std is not None:
        try:
            scale, floor = (float(v) for v in args.refinement_std.split(","))
        except ValueError:
            p.error("--refinement-std wants SCALE,FLOOR, e.g. 0.5,0.7")
        args.refinement_std = (scale, floor)
    if args.quick:
        args.pairs, args.size, args.max_disparity = min(args.pairs, 2), (64, 128), 24.0
        args.scene_seeds = args.scene_seeds or "1:2"
        args.scene_frames_per_seed, args.scene_mc_samples = 1, 4
        args.pose_mc_samples, args.pose_max_frames = 4, args.pose_max_frames or 6
        args.aloe_dir = Path("")
    if args.scene_seeds is None:
        args.scene_seeds = "1:21" if args.split == "test" else "21:31"
    if args.pose_bag is None:
        args.pose_bag = DEFAULT_POSE_BAGS[args.split]
    if args.split == "validation":
        args.aloe_dir = Path("")  # Aloe is evaluation data: never in a fitting run
    return args


# ----------------------------------------------------------------------------------------- summaries
def summarise(error: np.ndarray, std: np.ndarray, distribution: str, bins: int) -> dict[str, Any]:
    """Every number of one (error, std) set: coverage, reliability, binned std, AUSE, Spearman."""
    e = np.abs(np.asarray(error, np.float64)).ravel()
    s = np.asarray(std, np.float64).ravel()
    keep = np.isfinite(e) & np.isfinite(s)
    e, s = e[keep], s[keep]
    return {
        "pixels": int(e.size),
        "mean_abs_error": float(e.mean()) if e.size else float("nan"),
        "median_std": float(np.median(s)) if s.size else float("nan"),
        "coverage": coverage(e, s, distribution=distribution),
        "reliability": interval_reliability(e, s, distribution),
        "binned": std_binned_reliability(e, s, bins),
        "ause": ause(e, s)["ause"] if e.size else float("nan"),
        "spearman": spearman(e, s),
    }


def refined_std(std: np.ndarray, changed: np.ndarray, delta: np.ndarray, scale: float, floor: float
                ) -> np.ndarray:
    """The pipeline's std update (``StereoDepthPipeline._refine``) re-applied in numpy: ``scale`` x the
    network's std where the refinement changed the disparity, at least ``floor`` x |correction|.  The
    benchmark checks it against the pipeline itself on the first pair (``std_update_check``)."""
    out = np.where(changed, std * scale, std)
    return np.maximum(out, floor * np.nan_to_num(np.abs(delta), nan=0.0))


# ----------------------------------------------------------------------------------------- disparity
def run_disparity(args: argparse.Namespace) -> dict[str, Any]:
    """Network-alone and pipeline disparity std on synthetic pairs (and Aloe), plus the depth std."""
    import torch

    from scene_perception.data.procedural import make_stereo_sample
    from scene_perception.data.splits import held_out_seeds
    from scene_perception.geometry.stereo_camera import StereoCamera
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT
    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    torch.manual_seed(0)
    setup = build_stereo_pipeline(args.model, args.weights, backend="torch", device="cpu",
                                  compute_points=False, local_refinement=None)
    pipe, info = setup.pipeline, setup.info
    default = DEFAULT_LOCAL_REFINEMENT
    scored = (default.uncertainty_scale, default.correction_std)
    if args.refinement_std is not None:
        scored = args.refinement_std
    probe = dataclasses.replace(default, uncertainty_scale=_PROBE_SCALE, correction_std=0.0)

    h, w = args.size
    seeds = held_out_seeds(args.pairs, args.split)
    # Above the network's range the pipeline shrinks the pair and refines twice (network scale, then full
    # size): no probe re-application then, each setting is a real pipeline call (and no fit).
    shrink = args.max_disparity > pipe.network_max_disparity
    if shrink and args.fit_refinement_std:
        raise SystemExit("error: --fit-refinement-std needs --max-disparity within the network's range")
    scored_cfg = dataclasses.replace(default, uncertainty_scale=scored[0], correction_std=scored[1])
    keys = ("gt", "d_net", "std_net", "d_ref", "std_pub", "changed")
    store: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    check: dict[str, float] = {}
    t0 = time.perf_counter()
    for i, seed in enumerate(seeds):
        s = make_stereo_sample(seed, width=w, height=h, max_disparity=args.max_disparity)
        mask = s.nonoccluded & np.isfinite(s.disparity)
        pipe.max_disparity = args.max_disparity if shrink else None
        pipe.local_refinement = None
        r = pipe(s.left, s.right)
        if shrink:
            pipe.local_refinement = scored_cfg
            rp = pipe(s.left, s.right)
            d_ref, std_pub = rp.disparity, rp.disparity_std
            changed = np.zeros(d_ref.shape, bool)  # unknown here (two refinements); not used
        else:
            pipe.local_refinement = probe
            d_ref, std_probe = pipe.refine(s.left, s.right, r.disparity, r.disparity_std)
            changed = std_probe < 0.75 * r.disparity_std
            std_pub = refined_std(r.disparity_std, changed, d_ref - r.disparity, *scored)
            if i == 0:  # the numpy re-application must be the pipeline's own update
                pipe.local_refinement = scored_cfg
                d_def, std_def = pipe.refine(s.left, s.right, r.disparity, r.disparity_std)
                rel = np.abs(std_pub - std_def) / np.maximum(std_def, 1e-6)
                check = {"max_rel_std_diff": float(np.nanmax(rel)),
                         "max_disparity_diff": float(np.nanmax(np.abs(d_def - d_ref)))}
        for key, arr in (("gt", s.disparity), ("d_net", r.disparity), ("std_net", r.disparity_std),
                         ("d_ref", d_ref), ("std_pub", std_pub), ("changed", changed)):
            store[key].append(np.asarray(arr)[mask])
    pipe.max_disparity = None
    elapsed = time.perf_counter() - t0
    a = {k: np.concatenate(v) for k, v in store.items()}
    err_net, err_ref = a["d_net"] - a["gt"], a["d_ref"] - a["gt"]
    std_pipe = a["std_pub"]

    # Depth: nominal camera (doffs = 0), so |Z err| / Z std = |d err| / d std x d / d_gt, camera-free.
    cam = StereoCamera(width=w, height=h, fx=float(w), fy=float(w), cx=w / 2, cy=h / 2, cx_right=w / 2,
                       baseline=0.1)
    z_gt = cam.disparity_to_depth(a["gt"], 0.0)

    def depth_summary(d: np.ndarray, std: np.ndarray) -> dict[str, Any]:
        z = cam.disparity_to_depth(d, 0.0)
        return summarise(z - z_gt, cam.depth_std(d, std, 0.0), "laplace", args.bins)

    synthetic = {
        "split": args.split, "pairs": len(seeds), "seeds": [seeds[0], seeds[-1]] if seeds else [],
        "size": [h, w], "max_disparity": args.max_disparity, "mask": "nonoccluded", "seconds": elapsed,
        "refinements": 2 if shrink else 1,
        "changed_fraction": None if shrink else float(a["changed"].mean()),
        "std_update_check": check,
        "network": summarise(err_net, a["std_net"], "laplace", args.bins),
        "pipeline": summarise(err_ref, std_pipe, "laplace", args.bins),
        "depth_network": depth_summary(a["d_net"], a["std_net"]),
        "depth_pipeline": depth_summary(a["d_ref"], std_pipe),
    }
    out: dict[str, Any] = {
        "model": {"name": info.name, "sha256": info.sha256, "trained": info.trained},
        "distribution": "laplace (std = sqrt(2) b)",
        "refinement_std": {"uncertainty_scale": scored[0], "correction_std": scored[1],
                           "is_default": scored == (default.uncertainty_scale, default.correction_std)},
        "synthetic": synthetic,
    }
    if args.fit_refinement_std:
        out["fit"] = fit_refinement_std(a, err_ref, (default.uncertainty_scale, default.correction_std))
    aloe = run_aloe(args, pipe, dataclasses.replace(default, uncertainty_scale=scored[0],
                                                    correction_std=scored[1]))
    if aloe is not None:
        out["aloe"] = aloe
    return out


def fit_refinement_std(a: dict[str, np.ndarray], err_ref: np.ndarray, default: tuple[float, float]
                       ) -> dict[str, Any]:
    """The grid of the written rule (calibration_fit_rule.md) on these (validation) pixels, and its choice."""
    rows = []
    for scale in FIT_SCALES:
        for floor in FIT_FLOORS:
            std = refined_std(a["std_net"], a["changed"], a["d_ref"] - a["d_net"], scale, floor)
            e, s = np.abs(err_ref), std
            cov = coverage(e, s)
            gap = sum(abs(o - x) for o, x in zip(cov["observed"], cov["expected"], strict=True))
            rows.append({"uncertainty_scale": scale, "correction_std": floor, "coverage": cov["observed"],
                         "ause": ause(e, s)["ause"], "coverage_gap": float(gap)})
    base = next(r for r in rows if (r["uncertainty_scale"], r["correction_std"]) == default)
    allowed = [r for r in rows if r["ause"] <= base["ause"] * 1.01]
    # Lowest gap; ties (to 1e-3) go to the setting nearest the default (fewest changes).
    best = min(allowed, key=lambda r: (round(r["coverage_gap"], 3),
                                       abs(r["uncertainty_scale"] - default[0]) + abs(r["correction_std"]
                                                                                      - default[1])))
    cov1, cov2 = best["coverage"][0], best["coverage"][1]
    meets = 0.90 <= cov2 <= 0.97 and abs(cov1 - expected_coverage(1.0, "laplace")) <= 0.10
    change = ((best["uncertainty_scale"], best["correction_std"]) != default
              and best["coverage_gap"] <= base["coverage_gap"] - 0.01)
    return {"rows": rows, "default": base, "chosen": best, "chosen_meets_goals": bool(meets),
            "change_default": bool(change)}


def run_aloe(args: argparse.Namespace, pipe: Any, refinement: Any) -> dict[str, Any] | None:
    """Aloe, network alone and with ``refinement``, every pixel with known GT (PNG value 0 = unknown), at the
    two inputs of ``stereo_accuracy.py`` (range from the width alone, never from the GT):

    * ``full``: 1282x1110, range 256 px: the pipeline shrinks the pair to the network's 128 px, scales the
      result back and refines it a second time at full size (so the std update applies twice);
    * ``half``: 641x555 (INTER_AREA), range 128 px: network and one refinement at that size; disparity and
      std scaled x2 (bilinear, as the pipeline's own upsampling) and scored at full resolution.
    """
    import cv2

    from scene_perception.data.datasets.sample import read_png_unchanged, read_rgb

    d = args.aloe_dir
    if not str(d) or not all((d / n).is_file() for n in ("aloeL.jpg", "aloeR.jpg", "aloeGT.png")):
        return None
    left, right = read_rgb(d / "aloeL.jpg"), read_rgb(d / "aloeR.jpg")
    gt = read_png_unchanged(d / "aloeGT.png").astype(np.float32)
    gt[gt == 0] = np.nan
    h, w = gt.shape
    hw, hh = round(w / 2), round(h / 2)

    def width_range(width: int) -> int:  # stereo_accuracy.py's rule, rounded to SGBM's 16 px
        return max(16, 16 * round(args.range_fraction * width / 16))

    inputs = {
        "full": (left, right, width_range(w)),
        "half": (cv2.resize(left, (hw, hh), interpolation=cv2.INTER_AREA),
                 cv2.resize(right, (hw, hh), interpolation=cv2.INTER_AREA), width_range(hw)),
    }
    out: dict[str, Any] = {"size": [h, w], "pixels": "known GT, scored at full resolution"}
    for name, (lt, rt, rng) in inputs.items():
        pipe.max_disparity = float(rng)
        block: dict[str, Any] = {"input": [lt.shape[0], lt.shape[1]], "range": rng,
                                 "refinements": 2 if rng > pipe.network_max_disparity else 1}
        for key, cfg in (("network", None), ("pipeline", refinement)):
            pipe.local_refinement = cfg
            r = pipe(lt, rt)
            disp, std = r.disparity, r.disparity_std
            if disp.shape != gt.shape:
                f = np.float32(w / disp.shape[1])
                disp = cv2.resize(disp, (w, h), interpolation=cv2.INTER_LINEAR) * f
                std = cv2.resize(std, (w, h), interpolation=cv2.INTER_LINEAR) * f
            block[key] = summarise(disp - gt, std, "laplace", args.bins)
        out[name] = block
    pipe.max_disparity = None
    return out


# ----------------------------------------------------------------------------------------- scene
def run_scene(args: argparse.Namespace) -> dict[str, Any]:
    """Semantic ECE (single pass vs MC mean) and scene depth variance coverage on held-out street frames."""
    import torch

    from scene_perception.data.scene_frames import load_scene_frames, seed_range
    from scene_perception.data.splits import HELDOUT_SEED_LIMIT
    from scene_perception.pipelines.scene import ScenePipeline

    seeds = seed_range(args.scene_seeds)
    if max(seeds) >= HELDOUT_SEED_LIMIT:
        raise SystemExit(f"error: scene seeds must be < {HELDOUT_SEED_LIMIT} (training uses the others)")
    torch.manual_seed(args.seed)
    pipe = ScenePipeline.from_weights(None, mc_samples=0)
    if pipe.input_size is None:
        raise SystemExit("error: the scene card records no input_size")
    h, w = pipe.input_size
    frames = load_scene_frames(seeds, args.scene_frames_per_seed, h, w, cache_dir=args.scene_cache_dir)
    sem: dict[str, dict[str, list[np.ndarray]]] = {k: {"conf": [], "ok": []} for k in ("single", "mc")}
    dep: dict[str, list[np.ndarray]] = {k: [] for k in ("err", "var_a", "var_e", "inv_err", "inv_std")}
    t0 = time.perf_counter()
    for i in range(len(frames)):
        img, gt_sem, inv_gt = frames.images[i], frames.semantic[i], frames.inv_depth[i]
        gt_depth = np.where(inv_gt > 0, 1.0 / np.maximum(inv_gt, 1e-12), np.inf)
        for key, n_mc in (("single", 0), ("mc", args.scene_mc_samples)):
            pipe.mc_samples = n_mc
            r = pipe(img)
            sem[key]["conf"].append(r.probabilities.max(0).ravel())
            sem[key]["ok"].append((r.labels == gt_sem).ravel())
            keep = np.isfinite(gt_depth) & np.isfinite(r.depth)
            if key == "single":
                continue
            dep["err"].append(r.depth[keep] - gt_depth[keep])
            dep["var_a"].append(r.depth_variance[keep])
            dep["var_e"].append(r.depth_epistemic[keep])
            # The head's own quantity: inverse depth with std sqrt(var_Z) / Z^2 (the delta method undone).
            dep["inv_err"].append(r.inv_depth[keep] - inv_gt[keep])
            dep["inv_std"].append(np.sqrt(r.depth_variance[keep]) / r.depth[keep] ** 2)
    elapsed = time.perf_counter() - t0
    semantic = {}
    for key, v in sem.items():
        ece = expected_calibration_error(np.concatenate(v["conf"]), np.concatenate(v["ok"]), 15)
        # ECE's "accuracy" / "confidence" are the per-bin lists of the reliability diagram.
        semantic[key] = {**ece, "pixel_accuracy": float(np.concatenate(v["ok"]).mean()),
                         "mean_confidence": float(np.concatenate(v["conf"]).mean())}
    d = {k: np.concatenate(v) for k, v in dep.items()}
    # Depth is scored on the MC run (what the node publishes with mc_samples > 0): its mean depth against
    # the aleatoric variance alone and against aleatoric + MC variance.
    scene_depth = {
        "distribution": "laplace on inverse depth (std = sqrt(2) b), delta method to depth",
        "aleatoric": summarise(d["err"], np.sqrt(d["var_a"]), "laplace", args.bins),
        "total": summarise(d["err"], np.sqrt(d["var_a"] + d["var_e"]), "laplace", args.bins),
        "inverse_depth_head": summarise(d["inv_err"], d["inv_std"], "laplace", args.bins),
    }
    info = {"seeds": args.scene_seeds, "frames": len(frames), "size": [h, w],
            "mc_samples": args.scene_mc_samples, "seconds": elapsed}
    return {"semantic": {**info, **semantic}, "scene_depth": {**info, **scene_depth}}


# ----------------------------------------------------------------------------------------- pose
def run_pose(args: argparse.Namespace) -> dict[str, Any] | None:
    """Pose covariance: raw MC dropout and as published (the card's per-axis scale), Gaussian."""
    import torch

    from scene_perception.data.pose_frames import bag_synth_settings, load_pose_frames
    from scene_perception.evaluation.pose import pose_errors
    from scene_perception.pipelines.pose import PosePipeline

    if not (args.pose_bag / "metadata.yaml").is_file():
        return None
    pipe = PosePipeline.from_weights(None, mc_samples=args.pose_mc_samples)
    card_scale = np.asarray(pipe.covariance_scale, np.float64)
    pipe.covariance_scale = np.ones(6)
    frames = load_pose_frames(args.pose_bag, pipe.input_size, points_per_frame=0,
                              max_frames=args.pose_max_frames)
    torch.manual_seed(args.seed)
    pos, quat, covs = [], [], []
    for img in frames.images:
        r = pipe(img)
        pos.append(r.position)
        quat.append(r.quaternion)
        covs.append(r.covariance)
    raw = np.asarray(covs)
    _, _, e = pose_errors(np.asarray(pos), np.asarray(quat), frames.positions, frames.quaternions)
    bag = args.pose_bag.resolve()
    shown = bag.relative_to(_REPO) if bag.is_relative_to(_REPO) else bag
    out: dict[str, Any] = {"bag": str(shown), "synth": bag_synth_settings(args.pose_bag),
                           "frames": len(frames), "mc_samples": args.pose_mc_samples,
                           "distribution": "gaussian (6x6 covariance, ROS PoseWithCovariance layout)",
                           "card_covariance_scale": card_scale.tolist()}
    for name, cov in (("raw", raw), ("published", raw * np.outer(card_scale, card_scale))):
        block = {}
        for part, sl in (("translation", slice(0, 3)), ("rotation", slice(3, 6)), ("pose", slice(0, 6))):
            block[part] = {"coverage": ellipsoid_coverage(e[:, sl], cov[:, sl, sl]),
                           "nees": nees_consistency(e[:, sl], cov[:, sl, sl])}
        out[name] = block
    return out


# ----------------------------------------------------------------------------------------- output
def pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def coverage_row(name: str, s: dict[str, Any]) -> str:
    c = s["coverage"]
    return (f"| {name} | {' / '.join(pct(v) for v in c['observed'])} | "
            f"{' / '.join(pct(v) for v in c['expected'])} | {s['reliability']['miscalibration_area']:.3f} | "
            f"{s['binned']['ence']:.2f} | {s['ause']:.3f} | {s['spearman']:.2f} | {s['pixels']} |")


COVERAGE_HEADER = ("| uncertainty | within 1 / 2 / 3 std % | expected % | miscal. area | ENCE | AUSE "
                   "| Spearman | pixels |\n|---|---|---|---|---|---|---|---|")


def markdown(results: dict[str, Any]) -> str:
    """The tables the docs and the results file show."""
    lines = [f"# Calibration ({results['split']} split), `{results['command']}`", ""]
    disp = results.get("disparity")
    if disp:
        syn = disp["synthetic"]
        rs = disp["refinement_std"]
        lines += [f"## Disparity / depth std (Laplace), synthetic {syn['split']}: {syn['pairs']} pairs "
                  f"{syn['size'][1]}x{syn['size'][0]}, non-occluded; pipeline std update: scale "
                  f"{rs['uncertainty_scale']}, floor {rs['correction_std']}"
                  f"{' (default)' if rs['is_default'] else ''}", "", COVERAGE_HEADER,
                  coverage_row("disparity, network alone", syn["network"]),
                  coverage_row("disparity, pipeline (published)", syn["pipeline"]),
                  coverage_row("depth, network alone", syn["depth_network"]),
                  coverage_row("depth, pipeline (published)", syn["depth_pipeline"]), ""]
        if "aloe" in disp:
            al = disp["aloe"]
            lines += [f"## Disparity std (Laplace), Middlebury Aloe {al['size'][1]}x{al['size'][0]}, "
                      "known-GT pixels scored at full resolution", "", COVERAGE_HEADER]
            for name in ("full", "half"):
                blk = al[name]
                desc = f"{blk['input'][1]}x{blk['input'][0]} input, range {blk['range']}"
                n_ref = blk["refinements"]
                refinements = "1 refinement" if n_ref == 1 else f"{n_ref} refinements"
                lines += [coverage_row(f"network alone, {desc}", blk["network"]),
                          coverage_row(f"pipeline (published), {desc}, {refinements}", blk["pipeline"])]
            lines.append("")
        if "fit" in disp:
            fit = disp["fit"]
            lines += ["## Fit of the refinement's std update (validation)", "",
                      "| scale | floor | within 1 / 2 / 3 std % | gap | AUSE |", "|---|---|---|---|---|"]
            for r in fit["rows"]:
                lines.append(f"| {r['uncertainty_scale']} | {r['correction_std']} | "
                             f"{' / '.join(pct(v) for v in r['coverage'])} | {r['coverage_gap']:.3f} | "
                             f"{r['ause']:.4f} |")
            c = fit["chosen"]
            lines += ["", f"chosen: scale {c['uncertainty_scale']}, floor {c['correction_std']}; meets the "
                      f"goals on validation: {fit['chosen_meets_goals']}; change the default: "
                      f"{fit['change_default']}", ""]
    sem = results.get("semantic")
    if sem:
        lines += [f"## Semantic probabilities, held-out street frames (seeds {sem['seeds']}, {sem['frames']} "
                  f"frames {sem['size'][1]}x{sem['size'][0]})", "",
                  "| pass | ECE (15 bins) | MCE | accuracy % | mean confidence % |", "|---|---|---|---|---|"]
        for key, name in (("single", "single pass"), ("mc", f"MC dropout, {sem['mc_samples']} samples")):
            s = sem[key]
            lines.append(f"| {name} | {s['ece']:.4f} | {s['mce']:.3f} | {pct(s['pixel_accuracy'])} | "
                         f"{pct(s['mean_confidence'])} |")
        lines.append("")
    sd = results.get("scene_depth")
    if sd:
        lines += [f"## Scene depth std (Laplace on inverse depth), same frames, MC {sd['mc_samples']}", "",
                  COVERAGE_HEADER,
                  coverage_row("depth, aleatoric (published variance)", sd["aleatoric"]),
                  coverage_row("depth, aleatoric + MC (epistemic)", sd["total"]),
                  coverage_row("inverse depth, head's own std", sd["inverse_depth_head"]), ""]
    pose = results.get("pose")
    if pose:
        lines += [f"## Pose covariance (Gaussian), {pose['frames']} frames of {pose['bag']}, "
                  f"{pose['mc_samples']} MC samples", "",
                  "| covariance | block | inside 1 / 2 / 3-sigma ellipsoid % | expected % | mean NEES (d) | "
                  "95 % interval | consistent |", "|---|---|---|---|---|---|---|"]
        for name in ("raw", "published"):
            for part, block in pose[name].items():
                c, n = block["coverage"], block["nees"]
                lines.append(f"| {name} | {part} | {' / '.join(pct(v) for v in c['observed'])} | "
                             f"{' / '.join(pct(v) for v in c['expected'])} | {n['mean_nees']:.3g} "
                             f"({n['dof']}) | {n['interval'][0]:.2f}-{n['interval'][1]:.2f} | "
                             f"{'yes' if n['consistent'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def save_figures(directory: Path, results: dict[str, Any]) -> list[str]:
    """A few small reliability diagrams (PNG, dpi 72): one per published uncertainty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def finish(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = directory / name
        fig.savefig(path, dpi=72)
        plt.close(fig)
        written.append(str(path))

    def interval_panel(ax: Any, series: list[tuple[str, dict[str, Any]]], title: str) -> None:
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
        for label, s in series:
            r = s["reliability"]
            ax.plot(r["nominal"], r["observed"], "o-", ms=3, label=label)
        ax.set(xlabel="nominal mass of the central interval", ylabel="observed share inside", title=title,
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)

    def binned_panel(ax: Any, series: list[tuple[str, dict[str, Any]]], title: str, unit: str) -> None:
        top = 0.0
        for label, s in series:
            b = s["binned"]
            ax.plot(b["rmv"], b["rmse"], "o-", ms=3, label=label)
            top = max(top, *b["rmv"], *b["rmse"]) if b["rmv"] else top
        ax.plot([0, top], [0, top], "k:", lw=1, label="RMSE = RMV")
        ax.set(xlabel=f"root mean predicted variance ({unit}), std bins", ylabel=f"RMS error ({unit})",
               title=title, xscale="log", yscale="log")
        ax.legend(fontsize=7)

    disp = results.get("disparity")
    if disp:
        syn = disp["synthetic"]
        series = [("synthetic, network", syn["network"]), ("synthetic, pipeline", syn["pipeline"])]
        if "aloe" in disp:
            for name in ("full", "half"):
                blk = disp["aloe"][name]
                series += [(f"Aloe {name}, network", blk["network"]),
                           (f"Aloe {name}, pipeline", blk["pipeline"])]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        interval_panel(axes[0], series, "disparity std (Laplace)")
        binned_panel(axes[1], series, "disparity: RMS error vs predicted std", "px")
        finish(fig, "disparity.png")
    sem = results.get("semantic")
    if sem:
        fig, ax = plt.subplots(figsize=(5, 4.2))
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
        for key, label in (("single", "single pass"), ("mc", "MC dropout mean")):
            s = sem[key]
            ax.plot(s["confidence"], s["accuracy"], "o-", ms=3, label=f"{label} (ECE {s['ece']:.3f})")
        ax.set(xlabel="confidence (bin mean)", ylabel="accuracy", title="semantic reliability (15 bins)",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
        finish(fig, "semantic.png")
    sd = results.get("scene_depth")
    if sd:
        series = [("aleatoric (published)", sd["aleatoric"]), ("aleatoric + MC", sd["total"])]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        interval_panel(axes[0], series, "scene depth std (Laplace)")
        binned_panel(axes[1], series, "scene depth: RMS error vs predicted std", "m")
        finish(fig, "scene_depth.png")
    pose = results.get("pose")
    if pose:
        fig, ax = plt.subplots(figsize=(5, 4.2))
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
        for name, style in (("raw", "--"), ("published", "-")):
            for part in ("translation", "rotation"):
                c = pose[name][part]["coverage"]
                ax.plot(c["expected"], c["observed"], "o" + style, ms=4, label=f"{part}, {name}")
        ax.set(xlabel="expected share in the 1/2/3-sigma ellipsoid", ylabel="observed share",
               title="pose covariance (Gaussian, 3 DoF blocks)", xlim=(0, 1.02), ylim=(0, 1.02))
        ax.legend(fontsize=7)
        finish(fig, "pose.png")
    return written


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections, print markdown, optionally write JSON and figures; returns the results."""
    args = parse_args(argv)
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    command = "python benchmarks/calibration.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {"command": command.strip(), "split": args.split, "threads": args.threads,
                               "measured_at": time.strftime("%Y-%m-%d")}
    t0 = time.perf_counter()
    if "disparity" in args.sections:
        results["disparity"] = run_disparity(args)
    if "semantic" in args.sections or "scene_depth" in args.sections:
        scene = run_scene(args)
        for key in ("semantic", "scene_depth"):
            if key in args.sections:
                results[key] = scene[key]
    if "pose" in args.sections:
        pose = run_pose(args)
        if pose is None:
            print(f"pose: skipped, no bag at {args.pose_bag} (make it: commands in models/posenet.md)")
        else:
            results["pose"] = pose
    results["seconds"] = time.perf_counter() - t0
    print(markdown(results))
    if args.figures is not None:
        # Write the numbers first: a figure that fails must not lose a run of minutes.
        write_json(args.json, results)
        results["figures"] = save_figures(args.figures, results)
    write_json(args.json, results)
    return results


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    """``results`` as JSON (NaN / inf as null) at ``path``; nothing when None."""
    if path is not None:
        from scene_perception.evaluation.dataset_eval import json_safe

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(results), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
