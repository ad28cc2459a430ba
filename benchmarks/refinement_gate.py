#!/usr/bin/env python3
"""Choose ``max_view_residual``, the gate that refines only frames whose views agree (issue 22).

Why: on clean views the local refinement halves the network's error; through a camera's effects, and on the
real chessboard, it adds error (``refinement_choice.py``'s probe).  The frame's median 1 - ZNCC at the
network's own disparity (``zncc net``) tells the two regimes apart without GT, so the pipeline can skip the
refinement where the views disagree (``LocalRefinementConfig.max_view_residual``).  This applies
``benchmarks/results/2026-12-07_cpu/refinement_gate/rule.md`` (written before the gate was scored):

1. runs every frame through the pipeline twice: with the gate off (today) and with the gate closed on every
   frame (T tiny: what a gated frame publishes, the network's own disparity and std), and records the
   frame's ``view_residual`` (the gate's measure, at the network's resolution);
2. for each candidate T, frame i takes the first output where its residual is <= T, else the second: the
   same choice the pipeline makes (checked through the pipeline at the chosen T on a few frames);
3. scores pooled EPE / bad-2 and published 1/2/3-std coverage per condition, and decides by the rule.

Frames: ``--pairs`` validation renders (512x256, range 96) per condition, and the chessboard's 7 plane pairs
at 640x480 (range 256, refined twice) and at 320x240 (range 128, refined once).  ``--split test`` reports
the held-out renders (deciding nothing); the real pairs with GT are reported by ``stereo_accuracy.py
--refinement-set max_view_residual=T`` with SGBM in the same run.

    python benchmarks/refinement_gate.py --json out/refinement_gate/validation.json
    python benchmarks/refinement_gate.py --split test --no-board
    python benchmarks/refinement_gate.py --quick
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from two_pass_adaptive import KS, cpu_pipeline, frame_args, frame_parser, pct, report  # noqa: E402

from scene_perception.data.conditions import render_condition  # noqa: E402
from scene_perception.data.splits import held_out_seeds  # noqa: E402
from scene_perception.evaluation.board_plane import BOARD_MAX_DISPARITY  # noqa: E402
from scene_perception.evaluation.metrics import disparity_metrics, pool_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: The rule's candidates, in the order its tie-break walks them (larger T refines more frames).
CANDIDATES = (0.03, 0.04, 0.05, 0.06, 0.08)
#: A gate threshold no frame's residual is at or below: every frame keeps the network's output.
CLOSED = 1e-9
OUTPUTS = ("refined", "network")
#: Board sets and the max_disparity each is run at (None = the network's): the 640x480 pairs as
#: ``refinement_rule.py`` scores them, and shrunk to 320x240 (``evaluation/board_plane.shrink_board``).
BOARD_RANGES = {"board 640x480": BOARD_MAX_DISPARITY, "board 320x240": None}
#: The rule's limits.
EXACT_EPE_SLACK, EXACT_BAD2_SLACK = 0.03, 0.3
MIN_GAIN, TIE = 3.0, 0.1
BAND = (0.90, 0.97)
CAMERA_SETS = ("camera", "rig")


def parse_args(argv: list[str] | None = None) -> Any:
    p = frame_parser(__doc__.split("\n\n")[0], "exact,nuisance,camera,rig")
    p.set_defaults(pairs=200, ranges="96")
    p.add_argument("--chessboard-dir", type=Path, default=REPO / ".cache/eval/chessboard")
    p.add_argument("--no-board", action="store_true", help="renders only (the test split's report)")
    p.add_argument("--check-frames", type=int, default=3,
                   help="frames per set re-run through the pipeline at the chosen T (the combination check)")
    args = frame_args(p, argv)
    if args.quick:
        args.ranges, args.check_frames = [48.0], 1
    return args


def output_row(r: Any, gt: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """One output's metrics over ``mask`` and its std coverage counts (pixels with a finite std)."""
    ok = mask & np.isfinite(gt) & np.isfinite(r.disparity) & np.isfinite(r.disparity_std)
    ratio = np.abs(r.disparity - gt)[ok] / np.maximum(r.disparity_std[ok], 1e-12)
    return {"metrics": disparity_metrics(r.disparity, gt, mask),
            "within": [int(np.count_nonzero(ratio <= k)) for k in KS], "n_std": int(ratio.size)}


def frame_row(pipe: Any, base: Any, left: np.ndarray, right: np.ndarray, gt: np.ndarray, mask: np.ndarray,
              name: str) -> dict[str, Any]:
    """Both outputs of a frame, and its gate measure (as the pipeline computes it)."""
    row: dict[str, Any] = {"name": name}
    for output, t in zip(OUTPUTS, (0.0, CLOSED), strict=True):
        pipe.local_refinement = dataclasses.replace(base, max_view_residual=t)
        r = pipe(left, right)
        if output == "network":
            if not r.refinement_gated:
                raise RuntimeError(f"{name}: the closed gate did not keep the network's output")
            row["view_residual"] = float(r.view_residual)
        row[output] = output_row(r, gt, mask)
    pipe.local_refinement = base
    return row


def render_sets(args: Any) -> dict[str, list[tuple[str, Any, Any, Any, Any]]]:
    """Per condition, the frames to run: (name, left, right, GT, mask)."""
    h, w = args.size
    seeds = held_out_seeds(args.pairs, args.split)
    out = {}
    for condition in args.conditions:
        frames = []
        for seed in seeds:
            s = render_condition(seed, w, h, args.ranges[0], condition)
            frames.append((str(seed), s.left, s.right, s.disparity, s.nonoccluded & np.isfinite(s.disparity)))
        out[condition] = frames
    return out


def board_sets(args: Any) -> dict[str, list[tuple[str, Any, Any, Any, Any]]]:
    """The plane pairs at both sizes (the plane as GT; NaN off the board)."""
    from scene_perception.evaluation.board_plane import plane_pairs, shrink_board

    pairs = plane_pairs(args.chessboard_dir)
    full = [(n, lt, rt, ref["reference"].astype(np.float32)) for n, lt, rt, ref in pairs]
    big, small = BOARD_RANGES  # 640x480, 320x240
    sizes = {big: full, small: shrink_board(pairs)}
    return {name: [(n, lt, rt, gt, np.isfinite(gt)) for n, lt, rt, gt in frames]
            for name, frames in sizes.items()}


def run_sets(args: Any, pipe: Any, base: Any, sets: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
    rows = {}
    for key, frames in sets.items():
        pipe.max_disparity = BOARD_RANGES.get(key)
        rows[key] = [frame_row(pipe, base, *f[1:], name=f[0]) for f in tqdm(frames, desc=key, unit="pair")]
    pipe.max_disparity = None
    return rows


def pooled(rows: list[dict[str, Any]], t: float | None) -> dict[str, Any]:
    """The set's pooled EPE, bad-2 and coverage when frames with residual <= ``t`` are refined (None: the
    gate off, every frame refined)."""
    picks = ["refined" if t is None or r["view_residual"] <= t else "network" for r in rows]
    chosen = [r[p] for r, p in zip(rows, picks, strict=True)]
    m = pool_metrics([c["metrics"] for c in chosen])
    n = sum(c["n_std"] for c in chosen)
    cov = [sum(c["within"][i] for c in chosen) / n if n else math.nan for i in range(len(KS))]
    return {"epe": m["epe"], "bad2": m["bad2"], "coverage": cov,
            "refined %": 100.0 * float(np.mean([p == "refined" for p in picks]))}


def summarise(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, rs in rows.items():
        v = np.array([r["view_residual"] for r in rs])
        out[key] = {"frames": len(rs),
                    "view_residual p10/p50/p90": [float(np.nanpercentile(v, q)) for q in (10, 50, 90)],
                    "today": pooled(rs, None), "network": pooled(rs, CLOSED),
                    **{f"{t:g}": pooled(rs, t) for t in CANDIDATES}}
    return out


def decide(summary: dict[str, Any]) -> dict[str, Any]:
    """The rule's steps 2-4 on the validation summary."""
    boards = list(BOARD_RANGES)
    scored = [*CAMERA_SETS, *boards]
    missing = [k for k in ("exact", "nuisance", *scored) if k not in summary]
    if missing:
        return {"ship": False, "why": f"sets missing: {missing}"}
    today = sum(summary[k]["today"]["bad2"] for k in scored)
    rows = {}
    for t in CANDIDATES:
        key = f"{t:g}"
        ex, ex0 = summary["exact"][key], summary["exact"]["today"]
        checks = {
            "exact EPE": ex["epe"] <= ex0["epe"] + EXACT_EPE_SLACK,
            "exact bad-2": ex["bad2"] <= ex0["bad2"] + EXACT_BAD2_SLACK,
            **{f"{k} bad-2": summary[k][key]["bad2"] <= summary[k]["today"]["bad2"]
               for k in ("nuisance", *CAMERA_SETS, *boards)},
        }
        rows[key] = {"checks": checks, "eligible": all(checks.values()),
                     "sum bad-2": sum(summary[k][key]["bad2"] for k in scored)}
    out: dict[str, Any] = {"today sum bad-2": today, "candidates": rows, "chosen": None, "ship": False}
    eligible = [k for k, r in rows.items() if r["eligible"]]
    if not eligible:
        out["why"] = "no candidate is eligible"
        return out
    best = min(rows[k]["sum bad-2"] for k in eligible)
    chosen = max((k for k in eligible if rows[k]["sum bad-2"] <= best + TIE), key=float)  # ties: larger T
    out["chosen"] = chosen
    gain = today - rows[chosen]["sum bad-2"]
    coverage = {k: summary[k][chosen]["coverage"][1] for k in CAMERA_SETS}
    out["gain"] = gain
    out["ship checks"] = {"gain >= 3 points": gain >= MIN_GAIN,
                          **{f"{k} 2-std in [90, 97] %": BAND[0] <= c <= BAND[1]
                             for k, c in coverage.items()}}
    out["ship"] = all(out["ship checks"].values())
    return out


def check_through_pipeline(args: Any, pipe: Any, base: Any, sets: dict[str, list[Any]],
                           rows: dict[str, list[dict[str, Any]]], t: float) -> dict[str, Any]:
    """Re-run the first ``--check-frames`` frames of each set with the gate at ``t``: each must equal the
    output the combination took for it (disparity bit-for-bit where finite, same gate decision)."""
    mismatches, checked = [], 0
    pipe.local_refinement = dataclasses.replace(base, max_view_residual=t)
    for key, frames in sets.items():
        pipe.max_disparity = BOARD_RANGES.get(key)
        for (name, left, right, gt, mask), row in zip(frames[:args.check_frames], rows[key], strict=False):
            r = pipe(left, right)
            want = "network" if row["view_residual"] > t else "refined"
            got, kept = disparity_metrics(r.disparity, gt, mask), row[want]["metrics"]
            same = r.refinement_gated == (want == "network") and all(
                np.array_equal(got[m], kept[m], equal_nan=True) for m in kept)
            checked += 1
            if not same:
                mismatches.append(f"{key}/{name}")
    pipe.local_refinement, pipe.max_disparity = base, None
    return {"t": t, "frames": checked, "mismatches": mismatches, "holds": not mismatches}


def markdown(res: dict[str, Any]) -> str:
    s = res["summary"]
    cols = ["today", "network", *(f"{t:g}" for t in CANDIDATES)]
    h, w = res["size"]
    lines = [f"split {res['split']}, {res['pairs']} renders per condition ({w}x{h}, "
             f"range {res['ranges'][0]:g}), weights {res['weights'][:12]}, {res['seconds']:.0f} s", "",
             "view residual (the gate's measure) per set, p10 / median / p90:", ""]
    lines += [f"- {k}: " + " / ".join(f"{v:.4f}" for v in row["view_residual p10/p50/p90"])
              for k, row in s.items()]
    for title, field, fmt in (("bad-2 % (refined share of frames %)", "bad2", "{:.2f}"),
                              ("EPE px", "epe", "{:.3f}")):
        lines += ["", f"**{title}**; today = gate off, network = every frame gated", "",
                  "| set | " + " | ".join(c if c in ("today", "network") else f"T {c}" for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for k, row in s.items():
            cells = []
            for c in cols:
                cell = fmt.format(row[c][field])
                if field == "bad2" and c not in ("today", "network"):
                    cell += f" ({row[c]['refined %']:.0f})"
                cells.append(cell)
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "**published std, within 1 / 2 / 3 std %**", "", "| set | " + " | ".join(
        c if c in ("today", "network") else f"T {c}" for c in cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {k} | " + " | ".join(pct(row[c]["coverage"]) for c in cols) + " |" for k, row in s.items()]
    d = res.get("decision")
    if d is not None:
        today = d.get("today sum bad-2", math.nan)
        lines += ["", f"today's summed bad-2 (camera + rig + both boards): {today:.2f}"]
        for k, row in d.get("candidates", {}).items():
            failed = [c for c, ok in row["checks"].items() if not ok]
            lines.append(f"- T {k}: sum {row['sum bad-2']:.2f}, eligible {row['eligible']}"
                         + (f" (fails: {', '.join(failed)})" if failed else ""))
        lines.append(f"chosen: {d.get('chosen')}" + (f", gain {d['gain']:.2f} points" if "gain" in d else ""))
        if "ship checks" in d:
            lines.append(f"ship checks: {d['ship checks']}")
        if "why" in d:
            lines.append(d["why"])
        lines.append(f"**ship: {d['ship']}**")
    if "pipeline_check" in res:
        c = res["pipeline_check"]
        lines.append(f"through the pipeline at T {c['t']:g}: {c['frames']} frames, "
                     f"mismatches {c['mismatches']}, holds: {c['holds']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

    args = parse_args(argv)
    setup = cpu_pipeline(args)
    pipe = setup.pipeline
    base = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, max_view_residual=0.0)
    t0 = time.perf_counter()
    sets = render_sets(args)
    if not (args.quick or args.no_board):
        if not args.chessboard_dir.is_dir():
            raise SystemExit(f"no chessboard pairs at {args.chessboard_dir}: run tools/fetch_eval_data.sh")
        sets.update(board_sets(args))
    rows = run_sets(args, pipe, base, sets)
    res: dict[str, Any] = {"split": args.split, "size": list(args.size), "ranges": args.ranges,
                           "pairs": args.pairs, "weights": setup.info.sha256, "summary": summarise(rows),
                           "frames": {k: [{"name": r["name"], "view_residual": r["view_residual"]}
                                          for r in rs] for k, rs in rows.items()}}
    if args.split == "validation":
        res["decision"] = decide(res["summary"])
    t = float(res.get("decision", {}).get("chosen") or 0.05)
    res["pipeline_check"] = check_through_pipeline(args, pipe, base, sets, rows, t)
    return report(res, args, markdown, t0)


if __name__ == "__main__":
    main()
