#!/usr/bin/env python3
"""Shrink the pair, or widen the network's range? Scenes whose disparities exceed the trained range.

The rule this script applies was written before it was first run:
``benchmarks/results/2026-12-07_cpu/range_extension/rule.md``.  Two ways to run a pair whose
``max_disparity`` is above the network's trained range (lite: 128 px):

* **S** (``extend_range`` off): shrink the pair to fit, scale the disparity back, refine twice;
* **E** (``extend_range`` on): widen the cost volume to cover the range and run at the input resolution.

Each rendered pair (``data/conditions.py``, the pipeline's ``max_disparity`` set to the render's) goes
through both modes, for the network alone and for the default pipeline.  Scored on non-occluded pixels,
pooled per cell (range x condition): EPE, bad-1/2/3, AUSE and the published std's 1/2/3-std shares.

Example::

    python benchmarks/range_extension.py                       # the rule: validation, 60 pairs per range
    python benchmarks/range_extension.py --split test          # reported afterwards, decides nothing
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from scene_perception.data.conditions import CONDITIONS, render_condition
from scene_perception.data.splits import held_out_seeds
from scene_perception.evaluation.calibration import coverage
from scene_perception.evaluation.metrics import disparity_metrics
from scene_perception.evaluation.uncertainty import ause
from scene_perception.pipelines.stereo_depth import DEFAULT_LOCAL_REFINEMENT, StereoDepthPipeline
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

_REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = _REPO / "benchmarks" / "results" / "2026-12-07_cpu" / "range_extension"
MODES = {"S": False, "E": True}  # extend_range
SETTINGS = ("network", "default")
#: rule.md's clauses
MIN_MEAN_EPE_GAIN = 0.05
MAX_BAD2_RISE = 0.3
MAX_AUSE_RISE = 0.02
COVERAGE_WIDE = (0.88, 0.98)
COVERAGE_GOAL = (0.90, 0.97)


def cells(args: argparse.Namespace) -> list[tuple[str, int]]:
    return [(c, r) for c in args.conditions for r in args.ranges]


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run every (condition, range, pair) through both modes and both settings; pooled errors per cell."""
    h, w = args.size
    pipes: dict[str, StereoDepthPipeline] = {}
    for setting in SETTINGS:
        refinement = DEFAULT_LOCAL_REFINEMENT if setting == "default" else None
        pipes[setting] = build_stereo_pipeline(args.model, args.weights, compute_points=False,
                                               local_refinement=refinement).pipeline
    seeds = held_out_seeds(args.pairs * len(args.ranges), args.split)
    raw: dict[tuple, dict[str, list]] = {}
    for condition, rng in cells(args):
        j = args.ranges.index(rng)
        for seed in tqdm(seeds[j * args.pairs:(j + 1) * args.pairs], desc=f"{condition} {rng}", unit="pair"):
            s = render_condition(seed, w, h, rng, condition)
            mask = s.nonoccluded & np.isfinite(s.disparity)
            for setting, pipe in pipes.items():
                pipe.max_disparity = rng
                for mode, extend in MODES.items():
                    pipe.extend_range = extend
                    start = time.perf_counter()
                    r = pipe(s.left, s.right)
                    seconds = time.perf_counter() - start
                    acc = raw.setdefault((condition, rng, setting, mode),
                                         {"pred": [], "gt": [], "std": [], "s": [], "scale": []})
                    acc["pred"].append(r.disparity[mask])
                    acc["gt"].append(s.disparity[mask])
                    acc["std"].append(r.disparity_std[mask])
                    acc["s"].append(seconds)
                    acc["scale"].append(r.scale)
    rows = []
    for (condition, rng, setting, mode), acc in raw.items():
        pred, gt, std = (np.concatenate(acc[k]).astype(np.float64) for k in ("pred", "gt", "std"))
        err = np.abs(pred - gt)
        m = disparity_metrics(pred, gt)
        rows.append({"condition": condition, "range": rng, "setting": setting, "mode": mode,
                     "epe": m["epe"], "bad1": m["bad1"], "bad2": m["bad2"], "bad3": m["bad3"],
                     "ause": ause(err, std)["ause"], "coverage": coverage(err, std)["observed"],
                     "ms": 1000.0 * float(np.median(acc["s"])), "scale": float(np.median(acc["scale"]))})
    return {"split": args.split, "size": [h, w], "pairs_per_range": args.pairs, "ranges": args.ranges,
            "conditions": args.conditions, "seeds": [seeds[0], seeds[-1]], "rows": rows}


def find(rows: list[dict[str, Any]], condition: str, rng: int, setting: str, mode: str) -> dict[str, Any]:
    return next(r for r in rows if (r["condition"], r["range"], r["setting"], r["mode"])
                == (condition, rng, setting, mode))


def band_distance(share: float, band: tuple[float, float]) -> float:
    return max(band[0] - share, 0.0, share - band[1])


def decide(res: dict[str, Any]) -> dict[str, Any]:
    """rule.md's four clauses on the default pipeline; E becomes the default only if all hold."""
    rows = res["rows"]
    pairs = [(find(rows, c, r, "default", "S"), find(rows, c, r, "default", "E"))
             for c, r in zip(res["conditions"] * len(res["ranges"]),
                             sorted(res["ranges"] * len(res["conditions"])), strict=True)]
    mean_s = float(np.mean([s["epe"] for s, _ in pairs]))
    mean_e = float(np.mean([e["epe"] for _, e in pairs]))
    clauses = {
        "epe": all(e["epe"] <= s["epe"] for s, e in pairs) and mean_e <= (1 - MIN_MEAN_EPE_GAIN) * mean_s,
        "bad2": all(e["bad2"] <= s["bad2"] + MAX_BAD2_RISE for s, e in pairs),
        "ause": all(e["ause"] <= s["ause"] + MAX_AUSE_RISE for s, e in pairs),
        "coverage": all(COVERAGE_WIDE[0] <= e["coverage"][1] <= COVERAGE_WIDE[1]
                        or band_distance(e["coverage"][1], COVERAGE_GOAL)
                        <= band_distance(s["coverage"][1], COVERAGE_GOAL) for s, e in pairs),
    }
    return {"clauses": clauses, "mean_epe": {"S": mean_s, "E": mean_e},
            "extend_range_default": all(clauses.values())}


def markdown(res: dict[str, Any]) -> str:
    lines = ["| condition | range | setting | mode | scale | EPE px | bad-1 % | bad-2 % | bad-3 % | AUSE "
             "| within 1 / 2 / 3 std % | ms/frame |", "|" + "---|" * 12]
    for r in sorted(res["rows"], key=lambda r: (r["condition"], r["range"], SETTINGS.index(r["setting"]),
                                                r["mode"] != "S")):
        cov = " / ".join(f"{100 * c:.1f}" for c in r["coverage"])
        lines.append(f"| {r['condition']} | {r['range']} | {r['setting']} | {r['mode']} | {r['scale']:.2f} "
                     f"| {r['epe']:.3f} | {r['bad1']:.2f} | {r['bad2']:.2f} | {r['bad3']:.2f} "
                     f"| {r['ause']:.4f} | {cov} | {r['ms']:.0f} |")
    if "decision" in res:
        d = res["decision"]
        lines += ["",
                  f"Mean EPE of the default pipeline over the cells: S {d['mean_epe']['S']:.3f}, "
                      f"E {d['mean_epe']['E']:.3f} px.",
                  "Clauses: " + ", ".join(f"{k} {'holds' if ok else 'fails'}"
                                          for k, ok in d["clauses"].items())]
        verdict = ("E (extend_range on) becomes the default" if d["extend_range_default"]
                   else "S stays the default")
        lines.append(f"**Decision: {verdict}.**")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--split", choices=("validation", "test"), default="validation",
                   help="validation decides (rule.md); test only reports")
    p.add_argument("--pairs", type=int, default=60, help="pairs per range")
    p.add_argument("--ranges", default="192,256", help="maximum disparities of the renders, px")
    p.add_argument("--conditions", default="exact,camera", help=f"of {CONDITIONS}")
    p.add_argument("--size", default="256x512", help="HxW of the renders")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None,
                   help=f"write <out>/<split>.{{json,md}} (default {DEFAULT_OUT.relative_to(_REPO)})")
    p.add_argument("--quick", action="store_true", help="2 pairs per range, 128x256, no files: a smoke test")
    args = p.parse_args(argv)
    args.ranges = [int(v) for v in args.ranges.split(",") if v.strip()]
    args.conditions = [c for c in args.conditions.split(",") if c.strip()]
    bad = [c for c in args.conditions if c not in CONDITIONS]
    if bad:
        p.error(f"--conditions: unknown {bad}; known {list(CONDITIONS)}")
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.quick:
        args.pairs, args.size = 2, (128, 256)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    res = collect(args)
    res["decision"] = decide(res) if args.split == "validation" else None
    if res["decision"] is None:
        del res["decision"]
    text = markdown(res)
    print(text)
    if not args.quick:
        out = args.out or DEFAULT_OUT
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.split}.json").write_text(json.dumps(res, indent=1))
        command = f"`python benchmarks/range_extension.py --split {args.split}`"
        (out / f"{args.split}.md").write_text(f"{command}\n\n{text}\n")
    return res


if __name__ == "__main__":
    main()
