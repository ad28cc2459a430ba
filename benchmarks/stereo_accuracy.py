#!/usr/bin/env python3
"""Stereo accuracy of our GC-Net next to OpenCV SGBM_3WAY, on held-out synthetic and real Middlebury pairs.

Why both in one run: SGBM is the baseline to beat (project notes), and timings on these shared machines
drift up to 2x between runs, so every number compared here is measured back to back.

Data, and what is *not* done with it:
* Synthetic: ``make_stereo_sample(seed)`` with seeds ``10_000_000 + i``.  Training draws its pairs through
  ``ProceduralStereoDataset``, whose item seeds are ``SeedSequence([data_seed, index])`` hashes; the script
  checks that none of the evaluation seeds equals one of those for the first ``--train-samples`` indices
  (so the held-out pairs are provably not training pairs).  Scored on non-occluded pixels.
* ``--split validation`` scores seeds ``20_000_000 + i`` instead and skips Aloe: the set for *choosing*
  between checkpoints or inference settings, so the held-out test pairs are only ever used to report.
* Middlebury 2006 Aloe (``tools/fetch_eval_data.sh``): evaluation only.  GT value 0 (unknown) is excluded.
  The disparity range is chosen from the image width alone (``--range-fraction`` x width, rounded to a
  multiple of 16), never from the GT.  Nothing here feeds back into training or tuning.
* Middlebury 2014 Motorcycle (741x500, scikit-image's bundled copy, same script): evaluation only, scored
  the same way as Aloe (``data/datasets/real_pairs.py``).

"Ours" is the default pipeline: the network plus its local refinement (``pipelines/local_refinement.py``,
setting chosen on the validation split); ``--no-local-refinement`` scores the network's own output.

Example::

    python benchmarks/stereo_accuracy.py --weights runs/lite_v1/lite.safetensors --json out/acc.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from scene_perception.data.datasets.real_pairs import RealPair, load_aloe, load_motorcycle, range_from_width
from scene_perception.data.procedural import make_stereo_sample
from scene_perception.data.splits import check_held_out, held_out_seeds
from scene_perception.evaluation.benchmarking import parse_size, write_json
from scene_perception.evaluation.dataset_eval import json_safe
from scene_perception.evaluation.metrics import (
    disparity_metrics,
    fill_holes_background,
    pool_metrics,
)
from scene_perception.pipelines.local_refinement_config import LocalRefinementConfig
from scene_perception.pipelines.sgbm import SGBMConfig, SGBMMatcher
from scene_perception.pipelines.stereo_depth import DEFAULT_LOCAL_REFINEMENT, StereoDepthPipeline
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline
from scene_perception.pipelines.validity_defaults import DEFAULT_EXTEND_RANGE, DEFAULT_FAR_PROBABILITY

_REPO = Path(__file__).resolve().parents[1]
DEFAULT_ALOE_DIR = _REPO / ".cache" / "eval" / "middlebury_aloe"
DEFAULT_MOTORCYCLE_DIR = _REPO / ".cache" / "eval" / "middlebury_motorcycle"

# Goals and baseline from the project notes (shared/notes/data-and-baselines.md).
GOAL_SYNTHETIC_EPE = 1.0
NOTES_SGBM = {
    "full": {"epe": 1.25, "bad2": 3.1, "density": 72.0, "bad2_filled": 15.5, "ms": "250-580"},
    "half": {"epe": 1.88, "bad2": 5.2, "density": 73.0, "bad2_filled": 17.2, "ms": "31-66"},
}
NOTES_SGBM_NUM_DISPARITIES = 224  # the notes' full-resolution range (half resolution: 112)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lite", help="model name (model card / config name)")
    p.add_argument("--weights", default=None, help=".safetensors file (default: search the model dirs)")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="test: held-out synthetic + Aloe, to report; validation: other synthetic seeds and "
                        "no Aloe, to choose checkpoints or settings with")
    p.add_argument("--regression-window", type=int, default=None,
                   help="override the model card's regression_window (0: plain soft arg-min), to compare")
    p.add_argument("--no-local-refinement", action="store_true",
                   help="score the network's own disparity, without the pipeline's default local refinement "
                        "(pipelines/local_refinement.py), to see what the refinement does")
    p.add_argument("--extend-range", action=argparse.BooleanOptionalAction, default=DEFAULT_EXTEND_RANGE,
                   help="above the network's range (Aloe at full size): widen its cost volume instead of "
                   "shrinking the pair (pipelines/stereo_depth.py)")
    p.add_argument("--far-probability", type=float, default=None,
                   help="the pipeline's far_probability rule (1 = off; default: the node's default, "
                   f"{DEFAULT_FAR_PROBABILITY:g}, where a far head fits the weights)")
    p.add_argument("--far-head", default=None,
                   help="far head weights (default: <weights name>_far on the model search path)")
    p.add_argument("--synthetic-pairs", type=int, default=None,
                   help="synthetic pairs (0: skip); default 50 for test (the cards' history), 200 for "
                        "validation: on 50 pairs a few hard ones decide (v6 vs v7: 2.10 vs 2.00 px there, "
                        "1.86 vs 1.86 on 200)")
    p.add_argument("--synthetic-size", type=parse_size, default=(256, 512), help="HxW of synthetic pairs")
    p.add_argument("--synthetic-max-disparity", type=float, default=96.0)
    p.add_argument("--nuisance", action="store_true", help="photometric nuisance on the synthetic pairs")
    p.add_argument("--train-seed", type=int, default=0, help="training data seed, for the held-out check")
    p.add_argument("--train-samples", type=int, default=200_000,
                   help="training sample indices checked against the held-out seeds")
    p.add_argument("--aloe-dir", type=Path, default=DEFAULT_ALOE_DIR)
    p.add_argument("--motorcycle-dir", type=Path, default=DEFAULT_MOTORCYCLE_DIR)
    p.add_argument("--range-fraction", type=float, default=0.2,
                   help="Aloe max disparity as a fraction of the image width (never from GT)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per method on Aloe (median)")
    p.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads")
    p.add_argument("--device", default="cpu", help="torch device of the network and refinement (cpu | cuda)")
    p.add_argument("--json", type=Path, default=None, help="write all results to this JSON file")
    p.add_argument("--figure", type=Path, default=None, help="save an Aloe comparison figure (PNG)")
    p.add_argument("--update-card", type=Path, default=None,
                   help="record the results in this model card's metrics (weights sha256 untouched)")
    p.add_argument("--refinement-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="score the local refinement with this LocalRefinementConfig field changed from the "
                        "default (repeatable), e.g. min_x_snr=8")
    args = p.parse_args(argv)
    try:
        args.refinement = refinement_setting(args.refinement_set)
    except ValueError as exc:
        p.error(str(exc))
    if args.synthetic_pairs is None:
        args.synthetic_pairs = 200 if args.split == "validation" else 50
    if args.synthetic_pairs < 0 or args.repeats < 1 or args.threads < 1:
        p.error("--synthetic-pairs must be >= 0, --repeats and --threads >= 1")
    if args.split == "validation" and args.update_card is not None:
        p.error("--update-card records test-split metrics; validation numbers are for choosing only")
    if (args.no_local_refinement or args.refinement_set) and args.update_card is not None:
        p.error("--update-card records what the pipeline does by default: drop --no-local-refinement and "
                "--refinement-set")
    if args.regression_window is not None and args.update_card is not None:
        p.error("--update-card records the card's own setting: put regression_window in its config instead")
    return args


# ----------------------------------------------------------------------------------------- helpers
def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, wall ms) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1000.0


def timed_median(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """Last result and median wall ms over ``repeats`` calls after one untimed warm-up call."""
    out = fn()
    samples = []
    for _ in range(repeats):
        out, ms = timed(fn)
        samples.append(ms)
    return out, statistics.median(samples)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def published_line(rows: list[dict[str, Any]]) -> str:
    """Ours' published (valid) share per input, from the rows that carry it."""
    parts = [f"{r['input']} {r['published']:.1f} %" for r in rows if "published" in r]
    runs = [f"{r['input']}: {run_text(r['run'])}" for r in rows if "run" in r]
    return ("\nOurs published (the pipeline's valid mask) on the pixels with GT: " + ", ".join(parts)
            + "\nOurs' network run: " + "; ".join(runs))


def run_info(result: Any) -> dict[str, Any]:
    """How the pipeline ran a frame: the network's scale, whether the view gate kept the network's output
    (``max_view_residual``) and the std factors that applied."""
    return {"scale": result.scale, "view_residual": result.view_residual,
            "refinement_gated": result.refinement_gated, "one_pass_factor": result.one_pass_factor,
            "two_pass_factor": result.two_pass_factor}


def run_text(run: dict[str, Any]) -> str:
    verdict = "gated" if run["refinement_gated"] else "refined"
    residual = run["view_residual"]
    gate = "" if not math.isfinite(residual) else f", view residual {residual:.4f} ({verdict})"
    return (f"scale {run['scale']:.3f}{gate}, std factor one-pass {run['one_pass_factor']:.2f} / "
            f"two-pass {run['two_pass_factor']:.2f}")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of metric dicts as a markdown table (the format the notes and PR descriptions use)."""
    header = ["method", "input", "range px", "EPE px", "bad-1 %", "bad-2 %", "bad-3 %", "D1 %",
              "density %", "ms (median)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["method"], r["input"], str(r["range"]), fmt(r["epe"]), fmt(r["bad1"], 1), fmt(r["bad2"], 1),
            fmt(r["bad3"], 1), fmt(r["d1"], 1), fmt(r["density"], 1), fmt(r.get("ms"), 0),
        ]) + " |")
    return "\n".join(lines)


def row(
    method: str, input_desc: str, rng: int, metrics: dict[str, float], ms: float | None
) -> dict[str, Any]:
    """One result row: method, input size, search range (px), metrics and median time."""
    return {"method": method, "input": input_desc, "range": rng, **metrics, "ms": ms}


# ----------------------------------------------------------------------------------------- synthetic
def run_synthetic(args: argparse.Namespace, pipeline: StereoDepthPipeline, model_max: int) -> dict[str, Any]:
    """Our model (dense) and SGBM (sparse, filled) on held-out procedural pairs, non-occluded pixels."""
    seeds = held_out_seeds(args.synthetic_pairs, args.split)
    check_held_out(seeds, args.train_seed, args.train_samples)
    h, w = args.synthetic_size
    max_d = float(args.synthetic_max_disparity)
    sgbm = SGBMMatcher(max_d)
    per: dict[str, list[dict[str, float]]] = {"ours": [], "sgbm": [], "sgbm_filled": []}
    ms: dict[str, list[float]] = {"ours": [], "sgbm": []}
    for seed in seeds:
        s = make_stereo_sample(seed, width=w, height=h, max_disparity=max_d, nuisance=args.nuisance)
        mask = s.nonoccluded & np.isfinite(s.disparity)
        result, t_ours = timed(lambda s=s: pipeline(s.left, s.right))
        disp_sgbm, t_sgbm = timed(lambda s=s: sgbm(s.left, s.right))
        per["ours"].append(disparity_metrics(result.disparity, s.disparity, mask))
        per["sgbm"].append(disparity_metrics(disp_sgbm, s.disparity, mask))
        per["sgbm_filled"].append(disparity_metrics(fill_holes_background(disp_sgbm), s.disparity, mask))
        ms["ours"].append(t_ours)
        ms["sgbm"].append(t_sgbm)
    size = f"{w}x{h}"
    num_d = sgbm.num_disparities
    rows = [
        row("ours (dense)", size, model_max, pool_metrics(per["ours"]), statistics.median(ms["ours"])),
        row("SGBM_3WAY sparse", size, num_d, pool_metrics(per["sgbm"]), statistics.median(ms["sgbm"])),
        row("SGBM_3WAY filled", size, num_d, pool_metrics(per["sgbm_filled"]), None),
    ]
    return {
        "split": args.split,
        "seeds": [seeds[0], seeds[-1]] if seeds else [],
        "pairs": len(seeds),
        "size": [h, w],
        "max_disparity": max_d,
        "nuisance": bool(args.nuisance),
        "mask": "nonoccluded",
        "held_out_check": {"train_seed": args.train_seed, "train_samples": args.train_samples},
        "rows": rows,
    }


# ----------------------------------------------------------------------------------------- real pairs
def run_real(
    args: argparse.Namespace, pipeline: StereoDepthPipeline, pair: RealPair | None,
    figure: Path | None = None, notes_range: bool = False,
) -> dict[str, Any] | None:
    """Ours (dense) and SGBM (sparse / filled) at full and half input resolution, scored at full res, on one
    real GT pair (Aloe, Motorcycle; None when it is not fetched).  ``notes_range``: also SGBM at the project
    notes' 224 px, the range their Aloe baseline was measured with."""
    if pair is None:
        return None
    left, right, gt = pair.left, pair.right, pair.gt
    h, w = gt.shape
    hw, hh = round(w / 2), round(h / 2)
    left_h = cv2.resize(left, (hw, hh), interpolation=cv2.INTER_AREA)
    right_h = cv2.resize(right, (hw, hh), interpolation=cv2.INTER_AREA)
    range_full = range_from_width(w, args.range_fraction)
    range_half = range_from_width(hw, args.range_fraction)

    valid: dict[str, np.ndarray] = {}  # the pipeline's own valid mask of the last run, at full resolution
    runs: dict[str, dict[str, Any]] = {}  # how the pipeline ran the last frame (run_info)

    def ours(lt: np.ndarray, rt: np.ndarray, max_disparity: float) -> np.ndarray:
        pipeline.max_disparity = max_disparity  # the pipeline shrinks the pair when the range needs it
        result = pipeline(lt, rt)
        valid["last"] = result.valid
        runs["last"] = run_info(result)
        return result.disparity

    def ours_full() -> np.ndarray:
        return ours(left, right, range_full)

    def ours_half() -> np.ndarray:
        d = ours(left_h, right_h, range_half)
        mask = valid["last"].astype(np.uint8)
        valid["last"] = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) > 0
        # Bilinear for a dense smooth prediction, the same upsampling the pipeline uses internally.
        return cv2.resize(d, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(w / hw)

    rows: list[dict[str, Any]] = []
    maps: dict[str, np.ndarray] = {}
    full_desc, half_desc = f"{w}x{h}", f"{hw}x{hh} (x2 up)"
    for key, fn, desc, rng in (("full", ours_full, full_desc, range_full),
                               ("half", ours_half, half_desc, range_half)):
        disp, ms = timed_median(fn, args.repeats)
        rows.append(row("ours (dense)", desc, rng, disparity_metrics(disp, gt), ms))
        # What the node would publish: the pipeline's valid share of the pixels with GT (the dense row
        # scores every pixel; this says how many of them its validity rules keep).
        rows[-1]["published"] = 100.0 * float(valid["last"][np.isfinite(gt)].mean())
        rows[-1]["run"] = runs["last"]
        maps[f"ours_{key}"] = disp

    # SGBM at the same width-derived range as ours, then at the notes' 224/112 to check the baseline.
    ranges = [("", range_full)] + ([(" (notes' range)", NOTES_SGBM_NUM_DISPARITIES)] if notes_range else [])
    for label, rng_full in ranges:
        for scale, desc in ((1.0, full_desc), (0.5, half_desc)):
            sgbm = SGBMMatcher(rng_full, scale=scale)
            disp, ms = timed_median(lambda sgbm=sgbm: sgbm(left, right), args.repeats)
            filled = fill_holes_background(disp)
            rows.append(row(f"SGBM_3WAY sparse{label}", desc, sgbm.num_disparities,
                            disparity_metrics(disp, gt), ms))
            rows.append(row(f"SGBM_3WAY filled{label}", desc, sgbm.num_disparities,
                            disparity_metrics(filled, gt), None))
            if not label:
                key = "full" if scale == 1.0 else "half"
                maps[f"sgbm_{key}"], maps[f"sgbm_filled_{key}"] = disp, filled
    if figure is not None:
        save_figure(figure, left, gt, maps)
    return {
        "name": pair.name,
        "size": [h, w],
        "range_fraction": args.range_fraction,
        "range_full": range_full,
        "range_half": range_half,
        "repeats": args.repeats,
        "rows": rows,
    }


def save_figure(path: Path, left: np.ndarray, gt: np.ndarray, maps: dict[str, np.ndarray]) -> None:
    """Aloe left, GT, ours, SGBM and their error maps, on one colour scale so they compare by eye."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmin, vmax = float(np.nanmin(gt)), float(np.nanmax(gt))
    ours, sgbm, sgbm_f = maps["ours_half"], maps["sgbm_half"], maps["sgbm_filled_half"]
    panels = [
        ("Aloe left", left, None),
        ("GT disparity (white: unknown)", gt, "disp"),
        ("ours, 641 px input", ours, "disp"),
        ("SGBM_3WAY, 641 px input (white: none)", sgbm, "disp"),
        ("|ours - GT| (0..10 px)", np.abs(ours - gt), "err"),
        ("|SGBM filled - GT| (0..10 px)", np.abs(sgbm_f - gt), "err"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    for ax, (title, img, kind) in zip(axes.ravel(), panels, strict=True):
        if kind is None:
            ax.imshow(img)
        elif kind == "disp":
            im = ax.imshow(np.ma.masked_invalid(img), cmap="turbo", vmin=vmin, vmax=vmax)
            fig.colorbar(im, ax=ax, fraction=0.04)
        else:
            im = ax.imshow(np.ma.masked_invalid(img), cmap="magma", vmin=0.0, vmax=10.0)
            fig.colorbar(im, ax=ax, fraction=0.04)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- goals
def find(rows: list[dict[str, Any]], method: str, input_prefix: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"] == method and r["input"].startswith(input_prefix)), None)


def evaluate_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The notes' goals with the measured value, the target and whether it is met."""
    goals: list[dict[str, Any]] = []
    syn = results.get("synthetic")
    if syn:
        ours = find(syn["rows"], "ours (dense)", "")
        goals.append({"goal": "synthetic EPE (ours, non-occluded)", "value": ours["epe"],
                      "target": f"<= {GOAL_SYNTHETIC_EPE} px",
                      "met": bool(ours["epe"] <= GOAL_SYNTHETIC_EPE)})
    aloe = results.get("aloe")
    if aloe:
        hw, hh = round(aloe["size"][1] / 2), round(aloe["size"][0] / 2)
        half = f"{hw}x{hh}"
        ours = find(aloe["rows"], "ours (dense)", half)
        sgbm_f = find(aloe["rows"], "SGBM_3WAY filled", half)
        goals.append({"goal": "Aloe dense bad-2, half res: ours < SGBM filled (this run)",
                      "value": ours["bad2"], "target": f"< {sgbm_f['bad2']:.1f} %",
                      "met": bool(ours["bad2"] < sgbm_f["bad2"])})
        goals.append({"goal": "Aloe dense bad-2, half res: ours < SGBM filled (notes)",
                      "value": ours["bad2"], "target": f"< {NOTES_SGBM['half']['bad2_filled']} %",
                      "met": bool(ours["bad2"] < NOTES_SGBM["half"]["bad2_filled"])})
        goals.append({"goal": "stretch: Aloe dense bad-2, half res: ours < SGBM sparse (notes)",
                      "value": ours["bad2"], "target": f"< {NOTES_SGBM['half']['bad2']} %",
                      "met": bool(ours["bad2"] < NOTES_SGBM["half"]["bad2"])})
    return goals


def goals_table(goals: list[dict[str, Any]]) -> str:
    lines = ["| goal | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {g['goal']} | {fmt(g['value'])} | {g['target']} | {'yes' if g['met'] else 'NO'} |"
              for g in goals]
    return "\n".join(lines)


def notes_table() -> str:
    lines = ["| notes' SGBM_3WAY (224 disp) | EPE px | bad-2 % | density % | bad-2 % filled | ms |",
             "|---|---|---|---|---|---|"]
    for key, desc in (("full", "1282x1110"), ("half", "641x555 (scored at full res)")):
        n = NOTES_SGBM[key]
        lines.append(f"| {desc} | {n['epe']} | {n['bad2']} | {n['density']:.0f} | {n['bad2_filled']} | "
                     f"{n['ms']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- main
def refinement_setting(changes: list[str]) -> LocalRefinementConfig:
    """The default refinement with ``FIELD=VALUE`` changes, each value cast to the field's default's type."""
    defaults = dataclasses.asdict(DEFAULT_LOCAL_REFINEMENT)
    fields = {}
    for change in changes:
        name, sep, value = change.partition("=")
        if not sep or name not in defaults or isinstance(defaults[name], tuple):
            raise ValueError(f"--refinement-set {change!r}: expected FIELD=VALUE with FIELD one of "
                             f"{sorted(k for k, v in defaults.items() if not isinstance(v, tuple))}")
        kind = type(defaults[name])
        fields[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, **fields)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print markdown, optionally write JSON; returns the results dict (for tests)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    torch.manual_seed(0)  # untrained weights (pipeline checks) are then the same in every run
    refinement = None if args.no_local_refinement else args.refinement
    setup = build_stereo_pipeline(args.model, args.weights, backend="torch", device=args.device,
                                  regression_window=args.regression_window, compute_points=False,
                                  local_refinement=refinement, far_head_weights=args.far_head,
                                  extend_range=args.extend_range,
                                  far_probability=DEFAULT_FAR_PROBABILITY if args.far_probability is None
                                  else args.far_probability)
    pipeline, info = setup.pipeline, setup.info
    if args.far_probability is not None and args.far_probability < 1.0 and setup.far_head is None:
        raise SystemExit(f"error: --far-probability {args.far_probability:g}: {setup.far_note}")
    if setup.far_head is None:
        print(f"note: {setup.far_note} (as the node would run these weights)")
    model = pipeline.model
    assert model is not None  # the torch backend keeps the network
    c = SGBMConfig()
    results: dict[str, Any] = {
        "model": {"name": info.name, "config": info.config_name, "trained": info.trained,
                  "weights": str(info.weights_path) if info.weights_path else None, "sha256": info.sha256,
                  "max_disparity": model.max_disparity,
                  "regression_window": model.config.regression_window,
                  "far_probability": pipeline.far_probability if setup.far_head else 1.0,
                  "far_head": str(setup.far_head.weights_path) if setup.far_head else None},
        "local_refinement": dataclasses.asdict(refinement) if refinement else None,
        "extend_range": args.extend_range,
        "threads": args.threads,
        "sgbm": {"mode": "SGBM_3WAY", "block_size": c.block_size, "P1": c.p1, "P2": c.p2,
                 "uniqueness_ratio": c.uniqueness_ratio, "speckle_window_size": c.speckle_window_size,
                 "speckle_range": c.speckle_range, "pre_filter_cap": c.pre_filter_cap},
    }
    print(f"# Stereo accuracy: model {info.name} (config {info.config_name}), "
          f"weights {info.weights_path or 'none'}, {args.threads} threads, local refinement "
          f"{results['local_refinement'] or 'off'}, extend_range {args.extend_range}")
    if not info.trained:
        print("\n**UNTRAINED weights: the model's numbers are meaningless (pipeline check only).**")

    if args.synthetic_pairs:
        syn = run_synthetic(args, pipeline, model.max_disparity)
        results["synthetic"] = syn
        h, w = syn["size"]
        title = "Validation synthetic (for choosing, not reporting)" if args.split == "validation" \
            else "Held-out synthetic"
        first, last = (syn["seeds"] or [0, -1])
        print(f"\n## {title}: {syn['pairs']} pairs {w}x{h}, seeds {first}.."
              f"{last} (never training seeds: checked against the first "
              f"{args.train_samples} item seeds of data seed {args.train_seed}), max disparity "
              f"{syn['max_disparity']:g}, non-occluded pixels, pooled; ms = median per pair\n")
        print(markdown_table(syn["rows"]))

    # Choosing (the validation split) never looks at the evaluation images.
    aloe = None if args.split == "validation" else run_real(args, pipeline, load_aloe(args.aloe_dir),
                                                            args.figure, notes_range=True)
    results["aloe"] = aloe
    if aloe is None and args.split == "test":
        print(f"\n## Middlebury Aloe: skipped, no data in {args.aloe_dir}. "
              "Fetch it with `bash tools/fetch_eval_data.sh` (Debian opencv-doc).")
    elif aloe is not None:
        print(f"\n## Middlebury 2006 Aloe {aloe['size'][1]}x{aloe['size'][0]} (evaluation only), all pixels "
              f"with known GT, scored at full resolution; range = {args.range_fraction} x width "
              f"({aloe['range_full']} / {aloe['range_half']} px); ms = median of {args.repeats}\n")
        print(markdown_table(aloe["rows"]))
        print(published_line(aloe["rows"]))
        if aloe["range_full"] > model.max_disparity:
            print(f"\nOurs at full input: the {aloe['range_full']} px range exceeds the model's "
                  f"{model.max_disparity} px, so the pipeline runs it on images shrunk by "
                  f"{model.max_disparity / aloe['range_full']:.2f}, scales the result back and, with the "
                  "local refinement on, refines it again at full resolution.")
        print("\nBaseline recorded in the notes (for comparison with the SGBM (notes' range) rows):\n")
        print(notes_table())
    moto = None if args.split == "validation" else run_real(args, pipeline,
                                                            load_motorcycle(args.motorcycle_dir))
    results["motorcycle"] = moto
    if moto is not None:
        print(f"\n## Middlebury 2014 Motorcycle {moto['size'][1]}x{moto['size'][0]} (scikit-image's copy, "
              f"evaluation only), all pixels with known GT, scored at full resolution; range "
              f"{moto['range_full']} / {moto['range_half']} px\n")
        print(markdown_table(moto["rows"]))
        print(published_line(moto["rows"]))

    # The goals are about the held-out test split; a validation run only compares candidates.
    results["goals"] = evaluate_goals(results) if args.split == "test" else []
    if results["goals"]:
        print("\n## Goals (project notes)\n")
        print(goals_table(results["goals"]))
    if args.figure is not None and aloe is not None:
        print(f"\nfigure: {args.figure}")
    if args.json is not None:
        write_json(args.json, json_safe(results), indent=2)
        print(f"results: {args.json}")
    if args.update_card is not None:
        update_card(args.update_card, results, argv if argv is not None else sys.argv[1:])
        print(f"model card updated: {args.update_card}")
    return results


def update_card(card_path: Path, results: dict[str, Any], argv: list[str]) -> None:
    """Record this run's numbers in a model card, with the command that measured them."""
    card = json.loads(card_path.read_text(encoding="utf-8"))
    keep = ("method", "input", "range", "epe", "bad1", "bad2", "bad3", "d1", "density", "ms")
    metrics: dict[str, Any] = {
        "measured_by": "python benchmarks/stereo_accuracy.py " + " ".join(argv),
        "measured_at": time.strftime("%Y-%m-%d"),
        "threads": results["threads"],
        "local_refinement": results["local_refinement"],
    }
    for section in ("synthetic", "aloe", "motorcycle"):
        data = results.get(section)
        if data:
            metrics[section] = [{k: r[k] for k in keep if k in r} for r in data["rows"]]
    metrics["goals"] = results.get("goals")
    card["metrics"] = json_safe(metrics)
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
