#!/usr/bin/env python3
"""What ``candidate_far_margin`` does, everywhere we can score it (issue 22; reporting, it chooses nothing).

The SGBM candidate (``LocalRefinementConfig.sgbm_candidate``) is taken wherever its ZNCC beats the current
disparity's.  On a repetitive pattern (the real opencv-doc chessboard) SGBM's wrong period scores about as
well as the right one, and those adoptions, 30-120 px off, were most of the refinement's added error on the
board.  ``candidate_far_margin`` m asks a candidate further than ``candidate_far_px`` J from the current
value to win by at least m.  This script runs the whole default pipeline with each ``m,J`` setting (``0,8``
= today) on

- validation and test renders, exact and through a camera (``data/conditions.py``), 512x256, range 96;
- the chessboard's plane pairs (real, no GT: scored against each board's fitted plane) at 640x480 with range
  256 (two refinements) and shrunk to 320x240 (one);
- Middlebury Aloe at 641x555 and 1282x1110 input and Motorcycle at 741x500 (evaluation only), ranges from
  the input width as ``stereo_accuracy.py`` sets them, scored at full resolution.

It prints one table of EPE px / bad-2 % (non-occluded, or known-GT, pixels).  No setting becomes a default
here: a default changes only by a rule written before its run (``refinement_rule.py``).

    python benchmarks/candidate_margin.py --json out/candidate_margin.json     # ~15 min on 2 cores
    python benchmarks/candidate_margin.py --quick                               # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scene_perception.data.conditions import condition_renders
from scene_perception.data.datasets.real_pairs import RealPair, load_real_pairs, range_from_width
from scene_perception.evaluation.benchmarking import write_json
from scene_perception.evaluation.board_plane import BOARD_MAX_DISPARITY, plane_pairs, shrink_board
from scene_perception.evaluation.metrics import disparity_metrics, pool_metrics

REPO = Path(__file__).resolve().parents[1]

RENDER_RANGE = 96.0
RENDER_SIZE = (256, 512)


def parse_setting(text: str) -> tuple[float, float]:
    """``m,J``: candidate_far_margin, candidate_far_px."""
    m, j = (float(v) for v in text.split(","))
    return m, j


def frame_sets(args: argparse.Namespace) -> dict[str, list[tuple[Any, ...]]]:
    """name -> [(left, right, gt with NaN unscored, max_disparity or None, scale back to full size)]."""
    h, w = RENDER_SIZE
    sets: dict[str, list[tuple[Any, ...]]] = {}
    for split in ("validation", "test"):
        for cond, _rng, _seed, s in condition_renders(split, ("exact", "camera"), (RENDER_RANGE,), args.pairs,
                                                       w, h):
            gt = np.where(s.nonoccluded, s.disparity, np.nan).astype(np.float32)
            sets.setdefault(f"{split} {cond}", []).append((s.left, s.right, gt, RENDER_RANGE, None))
    if Path(args.chessboard_dir).is_dir():
        pairs = plane_pairs(args.chessboard_dir)[: args.boards or None]
        sets["board 640x480"] = [(lt, rt, ref["reference"].astype(np.float32), BOARD_MAX_DISPARITY, None)
                                 for _, lt, rt, ref in pairs]
        sets["board 320x240"] = [(lt, rt, gt.astype(np.float32), None, None)
                                 for _, lt, rt, gt in shrink_board(pairs)]
    if not args.quick:
        for pair in load_real_pairs(args.eval_dir):
            sets.update(real_sets(pair))
    return sets


def real_sets(pair: RealPair) -> dict[str, list[tuple[Any, ...]]]:
    """Aloe at half and full input, Motorcycle at full input (what calibration.py and the README score)."""
    h, w = pair.gt.shape
    out = {f"{pair.name} {w}x{h}": [(pair.left, pair.right, pair.gt, float(range_from_width(w)), None)]}
    if pair.name == "Aloe":
        hw, hh = round(w / 2), round(h / 2)
        left, right = (cv2.resize(im, (hw, hh), interpolation=cv2.INTER_AREA)
                       for im in (pair.left, pair.right))
        out[f"Aloe {hw}x{hh}"] = [(left, right, pair.gt, float(range_from_width(hw)), (w, h))]
    return out


def score(pipe: Any, frames: list[tuple[Any, ...]]) -> dict[str, float]:
    per = []
    for left, right, gt, max_disparity, full in frames:
        pipe.max_disparity = max_disparity
        disp = pipe(left, right).disparity
        if full is not None:  # half input, scored at full resolution (bilinear up, x width ratio)
            up = cv2.resize(disp, full, interpolation=cv2.INTER_LINEAR)
            disp = up * np.float32(full[0] / disp.shape[1])
        per.append(disparity_metrics(disp, gt))
    pipe.max_disparity = None
    return pool_metrics(per)


def markdown(res: dict[str, Any]) -> str:
    names = list(res["sets"])
    head = " | ".join(f"{n} ({res['sets'][n]})" for n in names)
    lines = [f"| setting (margin m, far J px) | {head} |",
             "|---|" + "---|" * len(names)]
    for key, row in res["rows"].items():
        cells = " | ".join(f"{row[n]['epe']:.3f} / {row[n]['bad2']:.2f}" for n in names)
        lines.append(f"| {key} | {cells} |")
    lines.append(f"\nEPE px / bad-2 % per set (frames in brackets); {res['seconds']:.0f} s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", type=parse_setting, nargs="+",
                   default=[(0.0, 8.0), (0.1, 8.0), (0.2, 8.0), (0.3, 8.0)], help="m,J each (0,8 = today)")
    p.add_argument("--pairs", type=int, default=40, help="renders per split and condition")
    p.add_argument("--boards", type=int, default=0, help="only the first N board plane pairs (0 = all)")
    p.add_argument("--chessboard-dir", default=str(REPO / ".cache/eval/chessboard"))
    p.add_argument("--eval-dir", default=str(REPO / ".cache/eval"))
    p.add_argument("--weights", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke: 2 renders per set, 1 board, no Middlebury")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.boards = 2, 1
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = build_stereo_pipeline("lite", args.weights, compute_points=False).pipeline
    base = pipe.local_refinement
    t0 = time.perf_counter()
    sets = frame_sets(args)
    res: dict[str, Any] = {"sets": {k: len(v) for k, v in sets.items()}, "pairs": args.pairs, "rows": {}}
    for m, j in args.settings:
        pipe.local_refinement = dataclasses.replace(base, candidate_far_margin=m, candidate_far_px=j)
        key = "today (off)" if m == 0 else f"m {m:g}, J {j:g}"
        res["rows"][key] = {name: score(pipe, frames) for name, frames in sets.items()}
        print(f"{key}: " + ", ".join(f"{n} {r['bad2']:.2f}" for n, r in res["rows"][key].items()), flush=True)
    pipe.local_refinement = base
    res["seconds"] = time.perf_counter() - t0
    print("\n" + markdown(res))
    if args.json is not None:
        write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
