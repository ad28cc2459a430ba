#!/usr/bin/env python3
"""Widen the published std where the pipeline's own disparity is hidden from the right camera (issue 25).

Why: every std rule before this one was fitted and scored on non-occluded pixels, but the pipeline publishes
occluded ones too, and on validation renders those held 57-80 % of their errors within 2 std.  This applies
``benchmarks/results/2026-12-07_cpu/occluded_pixels/rule.md`` (written before it ran):

1. renders ``--pairs`` validation pairs at range 96 (one refinement) and per range at 192 and 256 (two
   refinements), in each condition; per frame runs today's default pipeline once and records, on every
   published pixel with GT, |error|, the std, the pipeline's occlusion mask of its own disparity
   (``pipelines/occlusion.py``) and the renderer's non-occluded mask;
2. grids ``occlusion_std_scale`` in numpy over eight sets (condition x refined once / twice), all pixels,
   and decides as the rule says (AUSE, non-occluded and board checks);
3. checks the choice through the pipeline on the render frames.

``--setting F`` skips the choice and reports that scale against today; with ``--split test`` (no board) and
``--real`` (Aloe 1282x1110 and Motorcycle 741x500 at their native inputs, refined twice, every published
pixel with GT) it decides nothing.

    python benchmarks/occluded_std.py --json benchmarks/results/2026-12-07_cpu/occluded_pixels/fit.json
    python benchmarks/occluded_std.py --split test --setting 4 --real
    python benchmarks/occluded_std.py --quick       # smoke run: tiny pairs, no board
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from two_pass_adaptive import (  # noqa: E402  (a sibling script)
    KS,
    cpu_pipeline,
    frame_args,
    frame_parser,
    goal_violation,
    pct,
    report,
)

from scene_perception.data.conditions import condition_renders, render_condition  # noqa: E402
from scene_perception.evaluation.uncertainty import ause  # noqa: E402
from scene_perception.pipelines.occlusion import occluded_by_ordering  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: The rule's grid (rule.md, written before the run); today = 1.
GRID = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0)
ONCE_RANGE = 96.0
TWICE_RANGES = (192.0, 256.0)


def parse_args(argv: list[str] | None = None) -> Any:
    p = frame_parser(__doc__.split("\n\n")[0], "exact,nuisance,camera,rig")
    p.set_defaults(pairs=15)
    p.add_argument("--chessboard-dir", type=Path, default=REPO / ".cache/eval/chessboard")
    p.add_argument("--setting", type=float, default=None, metavar="F",
                   help="report this occlusion_std_scale against today instead of choosing one")
    p.add_argument("--real", action="store_true", help="also Aloe and Motorcycle (test data: report only)")
    p.add_argument("--eval-dir", type=Path, default=REPO / ".cache/eval")
    args = frame_args(p, argv)
    if args.real and args.setting is None:
        p.error("--real reports a --setting; real pairs with GT never take part in a choice")
    args.once, args.twice = (ONCE_RANGE,), TWICE_RANGES
    if args.quick:
        args.once, args.twice = (40.0,), (160.0,)
    return args


def with_scale(base: Any, f: float) -> Any:
    return dataclasses.replace(base, occlusion_std_scale=f)


def frame_record(pipe: Any, left: np.ndarray, right: np.ndarray, gt: np.ndarray, max_disparity: float,
                 nonoccluded: np.ndarray | None = None, **info: Any) -> dict[str, Any]:
    """One frame through today's pipeline: |error| and std on its published pixels with GT, where its own
    disparity is hidden (the pixels the scale multiplies) and, for a render, where the truth is visible."""
    import torch

    pipe.max_disparity = max_disparity
    r = pipe(left, right)
    pipe.max_disparity = None
    ok = r.valid & np.isfinite(gt)
    hidden = occluded_by_ordering(torch.from_numpy(r.disparity)).numpy()
    record = {**info, "range": max_disparity, "refined": "once" if r.scale >= 1.0 else "twice",
              "error": np.abs(r.disparity - gt)[ok].astype(np.float64),
              "std": r.disparity_std[ok].astype(np.float64), "hidden": hidden[ok]}
    if nonoccluded is not None:
        record["visible"] = nonoccluded[ok]
    return record


def collect(args: Any, pipe: Any) -> list[dict[str, Any]]:
    h, w = args.size
    frames = []
    for ranges in (args.once, args.twice):
        renders = condition_renders(args.split, args.conditions, ranges, args.pairs, w, h)
        for condition, rng, seed, s in renders:
            frames.append(frame_record(pipe, s.left, s.right, s.disparity, rng, s.nonoccluded, seed=seed,
                                       condition=condition))
    return frames


def board_frames(args: Any, pipe: Any) -> list[dict[str, Any]]:
    """The 7 chessboard plane pairs at 640x480 (range 256: two refinements) and 320x240 (128: one)."""
    from scene_perception.evaluation.board_plane import (
        BOARD_MAX_DISPARITY,
        BOARD_SCALE,
        plane_pairs,
        shrink_board,
    )

    pairs = list(plane_pairs(args.chessboard_dir))
    frames = [frame_record(pipe, left, right, ref["reference"], BOARD_MAX_DISPARITY, seed=name,
                           condition="board 640x480") for name, left, right, ref in pairs]
    frames += [frame_record(pipe, left, right, plane, BOARD_MAX_DISPARITY * BOARD_SCALE, seed=name,
                            condition="board 320x240") for name, left, right, plane in shrink_board(pairs)]
    return frames


def real_frames(args: Any, pipe: Any) -> list[dict[str, Any]]:
    """Aloe and Motorcycle at their native inputs with the benchmarks' range from the width (both refined
    twice); every published pixel with GT (test data: reported, never chosen on)."""
    from scene_perception.data.datasets.real_pairs import load_aloe, load_motorcycle, range_from_width

    frames = []
    for pair in (load_aloe(args.eval_dir / "middlebury_aloe"),
                 load_motorcycle(args.eval_dir / "middlebury_motorcycle")):
        if pair is not None:
            frames.append(frame_record(pipe, pair.left, pair.right, pair.gt,
                                       float(range_from_width(pair.gt.shape[1])), seed=pair.name,
                                       condition=pair.name))
    return frames


def coverage(frames: list[dict[str, Any]], f: float, visible_only: bool = False) -> list[float]:
    """Share of the frames' pixels within 1 / 2 / 3 std with the hidden pixels' std x ``f``."""
    e, s = [], []
    for fr in frames:
        keep = fr["visible"] if visible_only else np.ones(fr["error"].shape, bool)
        e.append(fr["error"][keep])
        s.append((fr["std"] * np.where(fr["hidden"], f, 1.0))[keep])
    err, std = np.concatenate(e), np.concatenate(s)
    return [float(np.mean(err <= k * std)) for k in KS]


def pooled_ause(frames: list[dict[str, Any]], f: float) -> float:
    e = np.concatenate([fr["error"] for fr in frames])
    s = np.concatenate([fr["std"] * np.where(fr["hidden"], f, 1.0) for fr in frames])
    return float(ause(e, s)["ause"])


def sets_of(frames: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for fr in frames:
        out.setdefault(f"{fr['condition']}, {fr['refined']}", []).append(fr)
    return out


def fit(frames: list[dict[str, Any]], board: list[dict[str, Any]], setting: float | None = None
        ) -> dict[str, Any]:
    """The rule's steps 1-3 over :data:`GRID`; with ``setting``, that scale against today (no choice)."""
    sets = sets_of(frames)
    boards = sets_of(board)
    grid = GRID if setting is None else (1.0, setting)

    def row(f: float) -> dict[str, Any]:
        out: dict[str, Any] = {"f": f, "sets": {}}
        for name, fs in sets.items():
            cov, vis = coverage(fs, f), coverage(fs, f, visible_only=True)
            out["sets"][name] = {"coverage": cov, "violation": goal_violation(cov),
                                 "visible_coverage": vis, "visible_violation": goal_violation(vis),
                                 "hidden_share": float(np.mean(np.concatenate([fr["hidden"] for fr in fs])))}
        out["board"] = {name: coverage(fs, f) for name, fs in boards.items()}
        out["score"] = sum(v["violation"] for v in out["sets"].values())
        return out

    rows = [row(f) for f in grid]
    today = rows[0]
    today["ause"] = pooled_ause(frames, 1.0)
    evaluated, chosen = [], None
    order = rows[1:] if setting is not None else sorted(rows, key=lambda r: (round(r["score"], 3), r["f"]))
    for r in order:
        r["ause"] = today["ause"] if r is today else pooled_ause(frames, r["f"])
        evaluated.append({"f": r["f"], "score": r["score"], "ause": r["ause"]})
        if r["ause"] <= 1.01 * today["ause"] or setting is not None:
            chosen = r
            break
    out: dict[str, Any] = {"frames": len(frames), "sets": list(sets), "today": today,
                           "ause_evaluated": evaluated,
                           "grid": [{"f": r["f"], "score": r["score"]} for r in rows]}
    if chosen is None:
        out.update(stop="no setting kept AUSE within 1 %")
        return out
    out["chosen"] = chosen
    out["checks"] = {
        "score_lower_by_0.005": chosen["score"] <= today["score"] - 0.005,
        "no_set_worse_by_0.005": all(chosen["sets"][s]["violation"] <= today["sets"][s]["violation"] + 0.005
                                     for s in sets),
        "no_visible_set_worse_by_0.005": all(
            chosen["sets"][s]["visible_violation"] <= today["sets"][s]["visible_violation"] + 0.005
            for s in sets),
        "board_2std_holds": all(chosen["board"][b][1] >= min(0.90, today["board"][b][1]) for b in boards),
    }
    return out


def pipeline_check(args: Any, pipe: Any, base: Any, frames: list[dict[str, Any]], f: float,
                   want: list[float]) -> dict[str, Any]:
    """The chosen scale through the pipeline on the render frames: pooled all-pixel shares vs numpy's."""
    h, w = args.size
    pipe.local_refinement = with_scale(base, f)
    ratios = []
    for fr in frames:
        s = render_condition(fr["seed"], w, h, fr["range"], fr["condition"])
        pipe.max_disparity = fr["range"]
        r = pipe(s.left, s.right)
        ok = r.valid & np.isfinite(s.disparity)
        ratios.append(np.abs(r.disparity - s.disparity)[ok] / np.maximum(r.disparity_std[ok], 1e-12))
    pipe.max_disparity = None
    pipe.local_refinement = base
    ratio = np.concatenate(ratios)
    cov = [float(np.mean(ratio <= k)) for k in KS]
    diff = max(abs(a - b) for a, b in zip(cov, want, strict=True))
    return {"coverage": cov, "numpy_coverage": want, "max_diff": diff, "holds": diff <= 0.005}


def markdown(res: dict[str, Any]) -> str:
    f = res["fit"]
    lines = [f"frames: {f['frames']} ({res['split']}), {res['seconds']:.0f} s; AUSE computed for "
             f"{len(f['ause_evaluated'])} settings", "",
             "| set | hidden share % | today: all pixels 1/2/3 std % | non-occluded | "
             + ("chosen: all pixels | non-occluded |" if "chosen" in f else ""),
             "|---|---|---|---|" + ("---|---|" if "chosen" in f else "")]
    for name in f["sets"]:
        t = f["today"]["sets"][name]
        cells = (f"| {name} | {100 * t['hidden_share']:.1f} | {pct(t['coverage'])} "
                 f"| {pct(t['visible_coverage'])} |")
        if "chosen" in f:
            c = f["chosen"]["sets"][name]
            cells += f" {pct(c['coverage'])} | {pct(c['visible_coverage'])} |"
        lines.append(cells)
    for name, cov in f["today"]["board"].items():
        chosen = f" -> {pct(f['chosen']['board'][name])}" if "chosen" in f else ""
        pixels = "plane pixels" if name.startswith("board") else "published pixels with GT, test data"
        lines.append(f"\n{name} ({pixels}): today {pct(cov)}{chosen}")
    lines.append(f"\nscore today {f['today']['score']:.4f}, AUSE {f['today']['ause']:.4f}")
    if "stop" in f:
        lines.append(f["stop"])
    else:
        ch = f["chosen"]
        lines += [f"chosen f {ch['f']}: score {ch['score']:.4f}, AUSE {ch['ause']:.4f}",
                  f"checks: {f['checks']}"]
    if "pipeline_check" in res:
        pc = res["pipeline_check"]
        lines.append(f"through the pipeline: {pct(pc['coverage'])} vs numpy {pct(pc['numpy_coverage'])} "
                     f"(max diff {100 * pc['max_diff']:.2f} points, holds: {pc['holds']})")
    lines.append(f"**ship: {res['ship']}**")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup = cpu_pipeline(args)
    pipe = setup.pipeline
    base = pipe.local_refinement
    if base is None or base.occlusion_std_scale != 1.0:
        raise SystemExit("error: the rule starts from today's default (occlusion_std_scale 1)")
    t0 = time.perf_counter()
    frames = collect(args, pipe)
    board = [] if args.quick or args.split == "test" else board_frames(args, pipe)
    if args.real:
        board += real_frames(args, pipe)
    res: dict[str, Any] = {"split": args.split, "size": list(args.size), "once": args.once,
                           "twice": args.twice, "pairs": args.pairs, "weights": setup.info.sha256,
                           "rule": "benchmarks/results/2026-12-07_cpu/occluded_pixels/rule.md",
                           "setting": args.setting, "fit": fit(frames, board, args.setting), "ship": False}
    chosen = res["fit"].get("chosen")
    if chosen is not None and chosen["f"] != 1.0 and args.setting is None:
        pooled = coverage(frames, chosen["f"])
        res["pipeline_check"] = pipeline_check(args, pipe, base, frames, chosen["f"], pooled)
        res["ship"] = bool(all(res["fit"]["checks"].values()) and res["pipeline_check"]["holds"]
                           and args.split == "validation")
    return report(res, args, markdown, t0)


if __name__ == "__main__":
    main()
