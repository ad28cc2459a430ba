#!/usr/bin/env python3
"""Can a GT-free measure tell, frame by frame, whether the local refinement helped? (issue 22, a probe)

Why: the refinement rules of 2026-12-06 (``benchmarks/refinement_rule.py``) found that no single gate picks
the refinement for every camera.  On clean views it halves the network's error, on validation renders
through a camera and on the real chessboard it adds error.  If the node could see, without GT, which of
its two outputs (refined, or the network alone) is better on the frames it gets, it could choose per
camera.  This probe scores both outputs of each frame with the live quality's GT-free measures
(``pipelines/quality.py``: median photometric residual, left-right consistent share by the uniqueness
check) and asks how often each measure picks the output with the lower true bad-2, and what pooled bad-2
its choice would give.  It chooses nothing.

Added 2026-12-07, also probing only: a *frame regime* rather than a comparison.  The frame's median
``1 - ZNCC`` at the network's own disparity (``view_agreement.zncc_residual``, the one-pass std factor's
measure; ``zncc net``) is orders of magnitude larger through a camera than on exact views.  For each
threshold T of ``ZNCC_THRESHOLDS`` the table ``gate`` gives the pooled bad-2 of "refined where zncc net <=
T, the network alone above".

Frames: validation pairs exact and through a camera (``data/conditions.py``), and the chessboard's plane
pairs (640x480, range 256, two refinements; the plane as the reference).

    python benchmarks/refinement_choice.py --pairs 100 --json out/refinement_choice.json
    python benchmarks/refinement_choice.py --quick
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from scene_perception.data.conditions import render_condition
from scene_perception.data.splits import held_out_seeds
from scene_perception.evaluation.benchmarking import write_json
from scene_perception.evaluation.board_plane import plane_pairs
from scene_perception.evaluation.metrics import disparity_metrics, pool_metrics
from scene_perception.pipelines import view_agreement
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT
from scene_perception.pipelines.quality import assess_arrays
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("refined", "network alone")
#: Measures and whether lower is better: the median photometric residual (lower), the left-right consistent
#: share (higher).
MEASURES = {"photometric p50": True, "left-right consistent": False}
#: Thresholds of the frame-regime probe (``zncc net``), log-spaced over what exact and camera renders show.
ZNCC_THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2)


def frame_row(pipe: Any, left: np.ndarray, right: np.ndarray, gt: np.ndarray, mask: np.ndarray | None
              ) -> dict[str, Any]:
    """Both outputs of one frame: their metrics against ``gt`` (over ``mask``) and their GT-free measures."""
    kept = pipe.local_refinement
    row: dict[str, Any] = {}
    try:
        for name, cfg in zip(OUTPUTS, (kept, None), strict=True):
            pipe.local_refinement = cfg
            r = pipe(left, right)
            q = assess_arrays(left, right, r.disparity, r.valid, want_vertical=False)
            row[name] = {"metrics": disparity_metrics(r.disparity, gt, mask),
                         "photometric p50": q.photometric_p50, "left-right consistent": q.lr_consistent}
            if cfg is None:
                lt, rt = image_to_tensor(left), image_to_tensor(right)
                d = torch.from_numpy(np.ascontiguousarray(r.disparity))[None, None]
                row["zncc net"] = view_agreement.zncc_residual(lt, rt, d, DEFAULT_LOCAL_REFINEMENT)
    finally:
        pipe.local_refinement = kept
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per measure: the share of frames where it picks the output with the lower true bad-2 (frames where
    the two tie within 0.1 point are left out), and the pooled metrics of always-refined, always-network,
    the measure's pick, and the oracle's (the better of the two by GT)."""
    out: dict[str, Any] = {o: pool_metrics([r[o]["metrics"] for r in rows]) for o in OUTPUTS}
    better = ["refined" if r["refined"]["metrics"]["bad2"] < r["network alone"]["metrics"]["bad2"]
              else "network alone" for r in rows]
    out["oracle"] = pool_metrics([r[b]["metrics"] for r, b in zip(rows, better, strict=True)])
    out["refined better in % of frames"] = 100.0 * float(np.mean([b == "refined" for b in better]))
    gaps = [abs(r["refined"]["metrics"]["bad2"] - r["network alone"]["metrics"]["bad2"]) for r in rows]
    decided = [g >= 0.1 for g in gaps]
    for measure, lower in MEASURES.items():
        picks = []
        for r in rows:
            a, b = r["refined"][measure], r["network alone"][measure]
            picks.append("refined" if (a <= b if lower else a >= b) else "network alone")
        agree = [p == b for p, b, d in zip(picks, better, decided, strict=True) if d]
        out[measure] = {
            "agrees with GT in % of frames": 100.0 * float(np.mean(agree)) if agree else float("nan"),
            "picks refined in % of frames": 100.0 * float(np.mean([p == "refined" for p in picks])),
            "pooled": pool_metrics([r[p]["metrics"] for r, p in zip(rows, picks, strict=True)])}
    zn = np.array([r["zncc net"] for r in rows])
    out["zncc net"] = {"median": float(np.nanmedian(zn)), "p10": float(np.nanpercentile(zn, 10)),
                       "p90": float(np.nanpercentile(zn, 90))}
    out["gate"] = {f"{t:g}": {"refined in % of frames": 100.0 * float(np.mean(zn <= t)),
                              "bad2": pool_metrics([r["refined" if z <= t else "network alone"]["metrics"]
                                                    for r, z in zip(rows, zn, strict=True)])["bad2"]}
                   for t in ZNCC_THRESHOLDS}
    return out


def synthetic_rows(pipe: Any, args: argparse.Namespace, condition: str) -> list[dict[str, Any]]:
    h, w = args.size
    rows = []
    for seed in tqdm(held_out_seeds(args.pairs, "validation"), desc=condition, unit="pair"):
        s = render_condition(seed, w, h, 96.0, condition)
        rows.append(frame_row(pipe, s.left, s.right, s.disparity, s.nonoccluded & np.isfinite(s.disparity)))
    return rows


def board_rows(pipe: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The plane pairs at the range every refinement benchmark scores them at (two refinements); run last,
    since it leaves that range on ``pipe``."""
    pipe.max_disparity = 256.0
    return [frame_row(pipe, left, right, ref["reference"], None)
            for _name, left, right, ref in tqdm(plane_pairs(args.chessboard_dir), desc="board", unit="pair")]


def markdown(res: dict[str, Any]) -> str:
    lines = ["| frames | n | refined better in % | always refined bad-2 % | always network bad-2 % | oracle "
             "bad-2 % | photometric: agrees % / picks refined % / bad-2 % | left-right: agrees % / picks "
             "refined % / bad-2 % |", "|---|---|---|---|---|---|---|---|"]
    for key, s in res["sets"].items():
        cells = [" / ".join((f"{s[m]['agrees with GT in % of frames']:.0f}",
                             f"{s[m]['picks refined in % of frames']:.0f}", f"{s[m]['pooled']['bad2']:.2f}"))
                 for m in MEASURES]
        lines.append(f"| {key} | {res['frames'][key]} | {s['refined better in % of frames']:.0f} | "
                     f"{s['refined']['bad2']:.2f} | {s['network alone']['bad2']:.2f} | "
                     f"{s['oracle']['bad2']:.2f} | "
                     f"{cells[0]} | {cells[1]} |")
    lines += ["", "Frame regime: zncc net (median 1 - ZNCC at the network's disparity) per set, and the "
              "pooled bad-2 % of 'refined where zncc net <= T' (refined share of frames in brackets)", "",
              "| frames | zncc net p10 / median / p90 | " + " | ".join(f"T {t:g}" for t in ZNCC_THRESHOLDS)
              + " |", "|---|---|" + "---|" * len(ZNCC_THRESHOLDS)]
    for key, s in res["sets"].items():
        z, gate = s["zncc net"], s["gate"]
        cells = [f"{gate[f'{t:g}']['bad2']:.2f} ({gate[f'{t:g}']['refined in % of frames']:.0f})"
                 for t in ZNCC_THRESHOLDS]
        lines.append(f"| {key} | {z['p10']:.4f} / {z['median']:.4f} / {z['p90']:.4f} | "
                     + " | ".join(cells) + " |")
    lines.append(f"\n{res['seconds']:.0f} s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chessboard-dir", default=str(REPO / ".cache/eval/chessboard"))
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=100, help="validation pairs per condition")
    p.add_argument("--conditions", default="exact,camera", help="validation conditions (data/conditions.py)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 pairs at 128x256, no board")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.size = (128, 256) if args.quick else (256, 512)
    if args.quick:
        args.pairs = 3
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe = build_stereo_pipeline(args.model, args.weights, backend="torch", device="cpu",
                                 compute_points=False).pipeline
    sets = {c: synthetic_rows(pipe, args, c) for c in args.conditions.split(",")}
    if not args.quick:
        if not Path(args.chessboard_dir).is_dir():
            raise SystemExit(f"no chessboard pairs at {args.chessboard_dir}: run tools/fetch_eval_data.sh")
        sets["board"] = board_rows(pipe, args)
    res = {"frames": {k: len(v) for k, v in sets.items()}, "sets": {k: summarise(v) for k, v in sets.items()},
           "seconds": time.perf_counter() - t0}
    print(markdown(res))
    if args.json is not None:
        write_json(args.json, res)
        print(f"wrote {args.json}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
