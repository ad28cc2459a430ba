#!/usr/bin/env python3
"""Does the GT-free live quality (pipelines/quality.py, issue 26) track the true error, and what does it cost?

On held-out synthetic pairs (test split seeds, ``data/splits.py``), Middlebury 2006 Aloe and Middlebury 2014
Motorcycle (741x500, native size; both evaluation only, ``tools/fetch_eval_data.sh`` and
``data/datasets/real_pairs.py``; no threshold is chosen on them), each frame goes through the default pipeline
(network + local refinement) clean and under simulated failures, and the run reports:

* per-frame Spearman rank correlation between the GT-free numbers (photometric error p50, left-right
  inconsistent %, SGBM-disagreeing %: the valid pixels the pipeline's own SGBM candidate answered and
  contradicts by more than 2 px) and the true error (EPE, bad-2 on non-occluded pixels), over the clean
  frames and over all frames (clean + failures);
* AUSE (``evaluation/uncertainty.py``) of the per-pixel confidence map (``1 - confidence`` as the
  uncertainty), next to the network's own predicted std, over the valid non-occluded pixels;
* a table of the quality numbers per condition with the true EPE beside them;
* the vertical offset estimate for right images shifted down by 0, 0.5, 1, 2 px;
* the cost: the quality computation against the pipeline's frame time, in the same run.

Both left-right checks are measured: ``uniqueness`` (z-buffer of the published disparity, ~1 ms) and
``network`` (the pipeline again on the mirrored, swapped pair: the exact check, a second frame's time).

Example::

    python benchmarks/live_quality.py --json benchmarks/results/2026-12-05_cpu/live_quality.json
    python benchmarks/live_quality.py --quick   # smoke test, < 60 s on 2 cores
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from scene_perception.data.datasets.real_pairs import RealPair, load_aloe, load_motorcycle
from scene_perception.data.procedural import make_stereo_sample
from scene_perception.data.splits import check_held_out, held_out_seeds
from scene_perception.evaluation.benchmarking import parse_size, write_json
from scene_perception.evaluation.dataset_eval import json_safe
from scene_perception.evaluation.metrics import disparity_metrics
from scene_perception.evaluation.uncertainty import ause
from scene_perception.pipelines.quality import FrameQuality, assess_arrays, flipped_pair
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

_REPO = Path(__file__).resolve().parents[1]
DEFAULT_ALOE_DIR = _REPO / ".cache" / "eval" / "middlebury_aloe"
DEFAULT_MOTORCYCLE_DIR = _REPO / ".cache" / "eval" / "middlebury_motorcycle"
#: Motorcycle under --quick: 370x250, about the pixels of Aloe at its quick 0.25 scale (native otherwise).
QUICK_MOTORCYCLE_SCALE = 0.5

Image = np.ndarray
#: One evaluation frame: (label, left, right, GT disparity with NaN = unknown, mask of the scored pixels).
Frame = tuple[str, Image, Image, np.ndarray, np.ndarray]
#: A simulated failure: (left, right) -> (left, right), deterministic (noise from a fixed seed).
Corruption = Callable[[Image, Image], tuple[Image, Image]]


def shift_down(image: Image, dy: float) -> Image:
    """Content moved ``dy`` px down (bilinear for fractions): a right camera tilted off its rectification."""
    m = np.float32([[1, 0, 0], [0, 1, dy]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _gain(image: Image, gain: float) -> Image:
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _night(image: Image, seed: int) -> Image:
    rng = np.random.default_rng(seed)
    dark = image.astype(np.float32) * 0.2 + rng.normal(0.0, 4.0, image.shape)
    return np.clip(dark, 0, 255).astype(np.uint8)


#: The failures of the issue: exposure change in one camera, blur, a 1 px vertical rectification error and
#: domains the network never saw (inverted colours; a dark, noisy "night").
CONDITIONS: dict[str, Corruption] = {
    "clean": lambda left, right: (left, right),
    "exposure x1.8 (right camera)": lambda left, right: (left, _gain(right, 1.8)),
    "blur sigma 2 px (right camera)": lambda left, right: (left, cv2.GaussianBlur(right, (0, 0), 2.0)),
    "blur sigma 2 px (both)": lambda left, right: (cv2.GaussianBlur(left, (0, 0), 2.0),
                                                   cv2.GaussianBlur(right, (0, 0), 2.0)),
    "vertical shift 1 px (right down)": lambda left, right: (left, shift_down(right, 1.0)),
    "unseen: colours inverted": lambda left, right: (255 - left, 255 - right),
    "unseen: night (x0.2 + noise)": lambda left, right: (_night(left, 1), _night(right, 2)),
}
QUICK_CONDITIONS = ("clean", "exposure x1.8 (right camera)", "vertical shift 1 px (right down)",
                    "unseen: colours inverted")
VERTICAL_SHIFTS = (0.0, 0.5, 1.0, 2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None, help=".safetensors (default: the shipped weights)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="synthetic seeds; validation (no Aloe, no Motorcycle) is for choosing the WARN "
                        "thresholds")
    p.add_argument("--pairs", type=int, default=20, help="synthetic pairs (<= 30: the 2 cores are shared)")
    p.add_argument("--size", type=parse_size, default=(256, 512), help="HxW of the synthetic pairs")
    p.add_argument("--max-disparity", type=float, default=96.0, help="synthetic scenes' largest disparity")
    p.add_argument("--nuisance", action="store_true",
                   help="per-view gain/bias and noise on the synthetic pairs (procedural pairs are otherwise "
                        "photometrically exact: a clean residual of ~0.001, far below any real camera's)")
    p.add_argument("--aloe-dir", type=Path, default=DEFAULT_ALOE_DIR, help="'' or missing: skip Aloe")
    p.add_argument("--aloe-scale", type=float, default=0.5,
                   help="Aloe is run at this scale (0.5: 641x555, range 128 px = the lite network's)")
    p.add_argument("--motorcycle-dir", type=Path, default=DEFAULT_MOTORCYCLE_DIR,
                   help="'' or missing: skip Motorcycle (run at its native 741x500)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: 2 pairs at 128x256, conditions {', '.join(QUICK_CONDITIONS)}, Aloe at "
                        f"0.25 scale, Motorcycle at {QUICK_MOTORCYCLE_SCALE}")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.motorcycle_scale = QUICK_MOTORCYCLE_SCALE if args.quick else 1.0
    if args.quick:
        args.pairs, args.size, args.aloe_scale = 2, (128, 256), 0.25
        args.max_disparity = min(args.max_disparity, 48.0)
    if not 0 <= args.pairs <= 30:
        p.error("--pairs must be 0..30")
    return args


# ----------------------------------------------------------------------------------------- per frame
def true_error(disparity: np.ndarray, valid: np.ndarray, gt: np.ndarray, mask: np.ndarray
               ) -> dict[str, float]:
    """EPE and bad-2 of the published (valid) disparity on the GT mask; density = valid share of it."""
    m = disparity_metrics(np.where(valid, disparity, np.nan), gt, mask)
    return {"epe": m["epe"], "bad2": m["bad2"], "density": m["density"]}


def frame(pipeline: StereoDepthPipeline, left: Image, right: Image, gt: np.ndarray, mask: np.ndarray
          ) -> dict[str, Any]:
    """One frame: pipeline, both left-right checks, true error, per-pixel AUSE and timings."""
    t0 = time.perf_counter()
    result = pipeline(left, right)
    frame_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    unique = assess_arrays(left, right, result.disparity, result.valid, pipeline.device, want_confidence=True,
                           second_opinion=result.sgbm_disparity)
    quality_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    mirrored = pipeline(*flipped_pair(left, right))
    right_disparity = np.where(mirrored.valid, mirrored.disparity, np.float32(np.nan))[:, ::-1]
    second_pass_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    network = assess_arrays(left, right, result.disparity, result.valid, pipeline.device, right_disparity,
                            want_confidence=True, want_vertical=False)
    network_ms = (time.perf_counter() - t0) * 1e3 + second_pass_ms
    scored = mask & result.valid & np.isfinite(gt)
    error = np.abs(result.disparity - gt)[scored]

    def conf_ause(q: FrameQuality) -> float:
        assert q.confidence is not None
        return ause(error, 1.0 - q.confidence.cpu().numpy()[scored])["ause"] if error.size else math.nan

    return {
        **true_error(result.disparity, result.valid, gt, mask),
        "photometric_p50": unique.photometric_p50,
        "lr_inconsistent_uniqueness": 100.0 * (1.0 - unique.lr_consistent),
        "lr_inconsistent_network": 100.0 * (1.0 - network.lr_consistent),
        "vertical_offset": unique.vertical_offset_px,
        "sgbm_disagreeing": 100.0 * (1.0 - unique.sgbm_agreement),
        "ause_conf_uniqueness": conf_ause(unique),
        "ause_conf_network": conf_ause(network),
        "ause_network_std": ause(error, result.disparity_std[scored])["ause"] if error.size else math.nan,
        "frame_ms": frame_ms,
        "quality_ms": quality_ms,
        "quality_network_ms": network_ms,
    }


# ----------------------------------------------------------------------------------------- statistics
def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties) over the pairs where both are finite."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 3:
        return math.nan

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(v.size, dtype=np.float64)
        for value in np.unique(v[np.diff(np.sort(v), prepend=np.nan) == 0]):
            r[v == value] = r[v == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


SIGNALS = (("photometric_p50", "photometric error p50"),
           ("lr_inconsistent_uniqueness", "LR-inconsistent % (uniqueness)"),
           ("lr_inconsistent_network", "LR-inconsistent % (network)"),
           ("sgbm_disagreeing", "SGBM-disagreeing %"))


def correlations(frames: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Spearman of each GT-free signal against EPE and bad-2: clean frames, then every frame."""
    every = [f for rows in frames.values() for f in rows]
    clean = frames.get("clean", [])
    out = []
    for key, name in SIGNALS:
        row: dict[str, Any] = {"signal": name}
        for scope, rows in (("clean", clean), ("all", every)):
            for truth in ("epe", "bad2"):
                row[f"{scope}_{truth}"] = spearman([f[key] for f in rows], [f[truth] for f in rows])
            row[f"{scope}_n"] = len(rows)
        out.append(row)
    return out


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of every numeric field over a condition's frames (NaN-aware; unknown frames counted)."""
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    out: dict[str, float] = {}
    for k in keys:
        values = np.array([r[k] for r in rows], np.float64)
        out[k] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    out["unknown_frames"] = float(sum(1 for r in rows if not math.isfinite(r["photometric_p50"])))
    # The vertical offset has its own "unknown" (fewer than 20 matched corners): its mean is over the rest.
    out["vertical_unknown"] = float(sum(1 for r in rows if not math.isfinite(r["vertical_offset"])))
    return out


def warn_defaults(clean: list[dict[str, Any]]) -> dict[str, float]:
    """The WARN defaults' rules applied to these clean frames (they decide on ``--split validation
    --nuisance``; elsewhere they only report): the share thresholds are the 5th percentile minus 10 points,
    rounded down to a multiple of 5; the photometric one is twice the 95th percentile."""
    def finite(key: str, flip: bool) -> np.ndarray:
        v = np.array([100.0 - f[key] if flip else f[key] for f in clean], np.float64)
        return v[np.isfinite(v)]

    out: dict[str, float] = {}
    for name, key in (("lr_consistent_warn", "lr_inconsistent_network"),
                      ("sgbm_agreement_warn", "sgbm_disagreeing")):
        v = finite(key, True)
        p5 = float(np.percentile(v, 5)) if v.size else math.nan
        out[f"{name}_p5"] = p5
        out[name] = 5.0 * math.floor((p5 - 10.0) / 5.0) if math.isfinite(p5) else math.nan
    v = finite("photometric_p50", False)
    out["photometric_p95_x2"] = 2.0 * float(np.percentile(v, 95)) if v.size else math.nan
    return out


# ----------------------------------------------------------------------------------------- data
def synthetic_frames(args: argparse.Namespace) -> list[Frame]:
    seeds = held_out_seeds(args.pairs, args.split)
    check_held_out(seeds, 0, 200_000)
    h, w = args.size
    out = []
    for seed in seeds:
        s = make_stereo_sample(seed, width=w, height=h, max_disparity=args.max_disparity,
                               nuisance=args.nuisance)
        out.append((str(seed), s.left, s.right, s.disparity, s.nonoccluded & np.isfinite(s.disparity)))
    return out


def real_frame(pair: RealPair | None, scale: float) -> tuple[Image, Image, np.ndarray, np.ndarray] | None:
    """A real GT pair at ``scale`` (INTER_AREA images, GT nearest and scaled; NaN = unknown), or None."""
    if pair is None:
        return None
    left, right, gt = pair.left, pair.right, pair.gt
    if scale != 1.0:
        h, w = gt.shape
        size = (round(w * scale), round(h * scale))
        left = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
        right = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
        gt = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST) * np.float32(size[0] / w)
    return left, right, gt, np.isfinite(gt)


def aloe_frame(args: argparse.Namespace) -> tuple[Image, Image, np.ndarray, np.ndarray] | None:
    """Aloe at ``--aloe-scale``, or None when absent."""
    return real_frame(load_aloe(args.aloe_dir), args.aloe_scale)


def motorcycle_frame(args: argparse.Namespace) -> tuple[Image, Image, np.ndarray, np.ndarray] | None:
    """Motorcycle at its native 741x500 (``QUICK_MOTORCYCLE_SCALE`` under --quick), or None when absent."""
    return real_frame(load_motorcycle(args.motorcycle_dir), args.motorcycle_scale)


# ----------------------------------------------------------------------------------------- tables
def fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def condition_table(summary: dict[str, dict[str, float]]) -> str:
    rows = [[name, fmt(s["epe"]), fmt(s["bad2"], 1), fmt(s["density"], 1), fmt(s["photometric_p50"], 4),
             fmt(100.0 - s["lr_inconsistent_uniqueness"], 1), fmt(100.0 - s["lr_inconsistent_network"], 1),
             fmt(100.0 - s["sgbm_disagreeing"], 1),
             f"{fmt(s['vertical_offset'], 2)} ({int(s['vertical_unknown'])} unknown)",
             fmt(s["ause_conf_uniqueness"], 3), fmt(s["ause_conf_network"], 3),
             fmt(s["ause_network_std"], 3), str(int(s["unknown_frames"]))] for name, s in summary.items()]
    return table(["condition", "true EPE px", "true bad-2 %", "density %", "photometric p50",
                  "LR-consistent % (uniqueness)", "LR-consistent % (network)", "SGBM-agreeing %",
                  "vertical offset px (frames unknown)", "AUSE conf (uniq.)", "AUSE conf (network)",
                  "AUSE network std", "photometric unknown"], rows)


def correlation_table(rows: list[dict[str, Any]]) -> str:
    return table(["GT-free signal", "vs EPE (clean)", "vs bad-2 (clean)", "vs EPE (all)", "vs bad-2 (all)",
                  "frames clean / all"],
                 [[r["signal"], fmt(r["clean_epe"]), fmt(r["clean_bad2"]), fmt(r["all_epe"]),
                   fmt(r["all_bad2"]), f"{r['clean_n']} / {r['all_n']}"] for r in rows])


# ----------------------------------------------------------------------------------------- main
def run_dataset(pipeline: StereoDepthPipeline, frames: list[Frame], conditions: list[str]
                ) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in conditions}
    for name in conditions:
        for label, left, right, gt, mask in frames:
            l2, r2 = CONDITIONS[name](left, right)
            out[name].append({"frame": label, **frame(pipeline, l2, r2, gt, mask)})
    return out


def vertical_sweep(pipeline: StereoDepthPipeline, frames: list[Frame]) -> dict[str, list[float]]:
    """Vertical offset estimates (px) per shift of the right image (content moved down by dy)."""
    out: dict[str, list[float]] = {}
    for dy in VERTICAL_SHIFTS:
        values = []
        for _, left, right, _, _ in frames:
            shifted = shift_down(right, dy)
            result = pipeline(left, shifted)
            values.append(assess_arrays(left, shifted, result.disparity, result.valid,
                                        pipeline.device).vertical_offset_px)
        out[f"{dy:g}"] = values
    return out


REAL_TITLES = {"aloe": "Middlebury 2006 Aloe", "motorcycle": "Middlebury 2014 Motorcycle"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    setup = build_stereo_pipeline(args.model, args.weights, device=args.device, compute_points=False)
    pipeline, info = setup.pipeline, setup.info
    conditions = list(QUICK_CONDITIONS if args.quick else CONDITIONS)
    results: dict[str, Any] = {"model": info.name, "trained": info.trained, "sha256": info.sha256,
                               "threads": args.threads, "device": str(pipeline.device), "split": args.split,
                               "nuisance": args.nuisance, "conditions": conditions}
    print(f"# Live quality (GT-free) of model {info.name} (weights {info.weights_path}), {args.threads} "
          f"threads, {pipeline.device}; default pipeline (network + local refinement)")
    datasets: dict[str, list[Frame]] = {}
    if args.pairs:
        datasets["synthetic"] = synthetic_frames(args)
    # Aloe and Motorcycle are evaluation data: never on the validation split (the one to choose on).
    for name, load in (("aloe", aloe_frame), ("motorcycle", motorcycle_frame)):
        frame = None if args.split == "validation" else load(args)
        if frame is not None:
            datasets[name] = [(name, *frame)]
    t_start = time.perf_counter()
    for name, frames in datasets.items():
        # Warm-up at this size (allocator, oneDNN kernels): the first call is not a frame time.
        warm = frames[0]
        pipeline(warm[1], warm[2])
        assess_arrays(warm[1], warm[2], warm[3], np.isfinite(warm[3]), pipeline.device, want_confidence=True)
        per = run_dataset(pipeline, frames, conditions)
        summary = {c: summarise(rows) for c, rows in per.items()}
        corr = correlations(per)
        sweep = vertical_sweep(pipeline, frames)
        clean = per["clean"]
        cost = {
            "frame_ms": statistics.median(f["frame_ms"] for f in clean),
            "quality_ms": statistics.median(f["quality_ms"] for f in clean),
            "quality_network_ms": statistics.median(f["quality_network_ms"] for f in clean),
        }
        # Per-frame ratios, then the median: the machine's load drifts, a frame and its assessment run
        # back to back under the same load.
        cost["ratio_uniqueness"] = statistics.median(f["quality_ms"] / f["frame_ms"] for f in clean)
        cost["ratio_network"] = statistics.median(f["quality_network_ms"] / f["frame_ms"] for f in clean)
        results[name] = {"frames": per, "summary": summary, "correlations": corr, "vertical": sweep,
                         "cost": cost}
        if name == "synthetic":
            results[name]["warn_defaults"] = warn_defaults(clean)
        h, w = frames[0][1].shape[:2]
        desc = (f"{len(frames)} held-out {args.split} pairs {w}x{h} (seeds {frames[0][0]}..{frames[-1][0]}"
                f"{', photometric nuisance' if args.nuisance else ''})"
                if name == "synthetic" else f"{REAL_TITLES[name]} at {w}x{h} (evaluation only)")
        print(f"\n## {name}: {desc}\n")
        print("Per condition (means over frames; true error on non-occluded pixels with GT, of the published "
              "(valid) disparity; AUSE over valid pixels with GT, lower is better):\n")
        print(condition_table(summary))
        print("\nSpearman rank correlation per frame, GT-free signal vs the true error (1 = same order):\n")
        print(correlation_table(corr))
        if name == "synthetic":
            w_ = results[name]["warn_defaults"]
            print(f"\nWARN rules on these clean frames ({args.split}; they decide only on validation with "
                  f"--nuisance): SGBM-agreeing 5th percentile {fmt(w_['sgbm_agreement_warn_p5'], 1)} % -> "
                  f"{fmt(w_['sgbm_agreement_warn'], 0)} %; LR-consistent (network) 5th percentile "
                  f"{fmt(w_['lr_consistent_warn_p5'], 1)} % -> {fmt(w_['lr_consistent_warn'], 0)} %; "
                  f"photometric 2 x 95th percentile {fmt(w_['photometric_p95_x2'], 3)}")
        print("\nVertical offset estimate (px; + = right image content lower) for the right image moved "
              "down by dy:\n")
        print(table(["dy px", "mean", "min", "max"],
                    [[k, fmt(float(np.nanmean(v)), 3), fmt(float(np.nanmin(v)), 3),
                      fmt(float(np.nanmax(v)), 3)] for k, v in sweep.items()]))
        print("\nCost (clean frames, medians; ratios per frame, then the median): pipeline frame "
              f"{cost['frame_ms']:.1f} ms; quality with the "
              f"uniqueness check (photometric, consistency, vertical offset, confidence) "
              f"{cost['quality_ms']:.1f} ms = {100 * cost['ratio_uniqueness']:.1f} % of the frame; with the "
              f"network check (second pass + assessment) {cost['quality_network_ms']:.1f} ms = "
              f"{100 * cost['ratio_network']:.1f} %")
    for name, directory in (("aloe", args.aloe_dir), ("motorcycle", args.motorcycle_dir)):
        if name not in datasets and args.split == "test":
            print(f"\n{REAL_TITLES[name]} skipped: no data in {directory} (bash tools/fetch_eval_data.sh)")
    results["wall_s"] = time.perf_counter() - t_start
    print(f"\nwall time {results['wall_s']:.0f} s")
    if args.json is not None:
        write_json(args.json, json_safe(results))
        print(f"results: {args.json}")
    return results


if __name__ == "__main__":
    main()
