#!/usr/bin/env python3
"""Real camera pairs without GT as a calibration check of the two-pass std: the chessboard plane (issue 25).

Why: settings of the two-refinement std fitted on renders went the wrong way on the real pairs three times
(``rule_pixel{4,7}.md``), and the real pairs with GT (Aloe, Motorcycle) are evaluation data that may choose
nothing.  The opencv-doc chessboard pairs have no GT, so they may be validated on, and a board is a plane:
its disparity is affine in the rectified image position, ``d = a x + b y + c``, fixed by the 54 inner corners
found to sub-pixel precision in both rectified views.  Inside the board that plane is a reference disparity
that comes from the pair's own geometry; the pipeline's error against it carries what a real camera adds
(sensor noise, optics, the rig's rectification residual) and no render has.

Per pair (``rule_pixel8.md``): rectify at full size with the package's calibration
(``data/datasets/chessboard.py``), find the corners again in both views, fit the plane (a pair whose fit
leaves an RMS residual above ``--max-plane-rms`` is dropped), score the pixels inside the left corners'
convex hull eroded by 2 px, with the default pipeline at ``max_disparity`` 256 (the board sits at
100-204 px: every pair is refined twice).  The candidates' stds differ only in the two-pass factor, so the
disparities are the same for all.

    python benchmarks/chessboard_planes.py                 # coverage of each candidate on the board pixels
    python benchmarks/chessboard_planes.py --rule --json out/pixel8.json   # rule_pixel8.md's decision
    python benchmarks/chessboard_planes.py --accuracy      # also EPE / bad-x against the plane: ours, SGBM
    python benchmarks/chessboard_planes.py --ablation      # bad-x of the refinement with one part changed
    python benchmarks/chessboard_planes.py --quick         # smoke run: 2 pairs, no rule
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from two_pass_adaptive import KS, goal_violation, rule_camera_setting  # noqa: E402

from scene_perception.evaluation.benchmarking import write_json  # noqa: E402
from scene_perception.evaluation.board_plane import (  # noqa: E402
    BOARD_MAX_DISPARITY,
    MAX_PLANE_RMS,
    plane_reference,
    rectified_chessboard,
)
from scene_perception.evaluation.metrics import disparity_metrics, pool_metrics  # noqa: E402

#: rule_pixel4.md's and rule_pixel6.md's 12-number settings and rule_pixel7.md's 14 numbers, as each rule's
#: validation JSON recorded them (rule_pixel8.md chose rule_pixel6.md's as the default).
PIXEL4 = (2.68, 0.107441, 0.129981, -0.058904, -0.10319, 0.495106, 0.323321,
          -2.461694, -4.066388, -1.376649, 0.0, -0.938532)
PIXEL6 = (2.8475, 0.190792, 0.065798, 0.263812, -0.026041, 1.196897, 0.291425,
          -2.242783, -4.078694, -1.284322, 0.0, -0.857391)
PIXEL7 = (2.8475, 0.105409, -0.008406, -0.117192, -0.027523, 2.364725, 0.19827, 0.558337,
          -2.242736, -4.078694, -1.283845, 0.0, -0.857607, -0.6952)
#: rule_pixel8.md's constants (the plane's own: evaluation.board_plane).
TIE = 0.005


def candidates(default: Any) -> dict[str, Any]:
    """rule_pixel8.md's four fitted settings, as ``LocalRefinementConfig``s that differ from ``default``
    only in the two-pass std (the per-frame fields are rule_camera.md's in all four)."""
    frame = rule_camera_setting(default)
    return {"per frame": frame, **{name: dataclasses.replace(frame, two_pass_std_pixel=setting)
                                   for name, setting in (("pixel4", PIXEL4), ("pixel6", PIXEL6),
                                                         ("pixel7", PIXEL7))}}


def coverage_row(error: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    from scene_perception.evaluation.calibration import coverage
    from scene_perception.evaluation.uncertainty import ause

    cov = coverage(error, std, KS)["observed"]
    return {"coverage": cov, "violation": goal_violation(cov),
            "ause": float(ause(error.astype(np.float64), std.astype(np.float64))["ause"]),
            "median_std": float(np.median(std)), "pixels": int(error.size)}


def refinement_variants(default: Any) -> dict[str, Any]:
    """``--ablation``: the local refinement with one part changed at a time, and all at once ("minimal"),
    ``None`` = the network alone.  Why: on the board the refinement makes the network's disparity worse
    (2026-12-06), and this says which part does it."""
    nos = dataclasses.replace(default, sgbm_candidate=False)
    minimal = dataclasses.replace(nos, iterations=1, radius=1, propagation=0, window_shift=0)
    return {"network alone": None, "default": default, "no SGBM candidate": nos,
            "no SGBM, iterations 1": dataclasses.replace(nos, iterations=1),
            "no SGBM, radius 1": dataclasses.replace(nos, radius=1),
            "no SGBM, propagation 0": dataclasses.replace(nos, propagation=0),
            "no SGBM, window_shift 0": dataclasses.replace(nos, window_shift=0),
            "no SGBM, min_texture 0.04": dataclasses.replace(nos, min_texture=0.04),
            "minimal: no SGBM, iterations 1, radius 1, propagation 0, window_shift 0": minimal,
            "minimal with the SGBM candidate": dataclasses.replace(minimal, sgbm_candidate=True)}


def board_scores(args: argparse.Namespace) -> dict[str, Any]:
    """The chessboard condition: per pair its plane, pooled coverage per candidate."""
    import torch

    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT
    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pipe = build_stereo_pipeline(args.model, args.weights, backend="torch", device="cpu",
                                 compute_points=False).pipeline
    pipe.max_disparity = BOARD_MAX_DISPARITY
    settings = candidates(pipe.local_refinement)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = rectified_chessboard(args.chessboard_dir, tmp)
    if args.pairs:
        pairs = pairs[:args.pairs]
    per_pair, errors, stds = [], [], {k: [] for k in settings}
    accuracy: dict[str, list[dict[str, float]]] = {}
    ablation: dict[str, list[dict[str, float]]] = {}
    variants = refinement_variants(DEFAULT_LOCAL_REFINEMENT) if args.ablation else {}
    signed: dict[str, list[np.ndarray]] = {}
    for name, left, right in pairs:
        ref, why = plane_reference(left, right, args.max_plane_rms)
        row: dict[str, Any] = {"pair": name}
        if ref is not None:
            row.update({k: ref[k] for k in ("plane", "rms", "row_error", "corner_disparity")})
        if why:
            per_pair.append({**row, "used": False, "why": why})
            continue
        results = {}
        for key, cfg in settings.items():
            pipe.local_refinement = cfg
            results[key] = pipe(left, right)
        d = results["pixel7"].disparity
        ok = np.isfinite(ref["reference"]) & np.isfinite(d)
        for r in results.values():
            ok &= np.isfinite(r.disparity_std)
            if r.scale >= 1.0:
                raise RuntimeError(f"{name}: the pipeline did not refine twice")
        for key, r in results.items():
            if not np.array_equal(np.nan_to_num(r.disparity), np.nan_to_num(d)):
                raise RuntimeError(f"{name}: candidate {key} changed the disparity")
            stds[key].append(r.disparity_std[ok])
        e = np.abs(d - ref["reference"])[ok]
        errors.append(e)
        methods = method_disparities(pipe, left, right, d) if args.accuracy else {}
        for method, disp in methods.items():
            accuracy.setdefault(method, []).append(disparity_metrics(disp, ref["reference"]))
            s = (disp - ref["reference"])[np.isfinite(ref["reference"]) & np.isfinite(disp)]
            signed.setdefault(method, []).append(s)
        # The variants already run above are not run again.
        ran = {"default": d, "network alone": methods.get("ours, network alone"),
               "no SGBM candidate": methods.get("ours, no SGBM candidate")}
        for key, cfg in variants.items():
            disp = ran.get(key)
            if disp is None:
                pipe.local_refinement = cfg
                disp = pipe(left, right).disparity
            ablation.setdefault(key, []).append(disparity_metrics(disp, ref["reference"]))
        per_pair.append({**row, "used": True, "pixels": int(ok.sum()),
                         "reference_pixels": int(np.isfinite(ref["reference"]).sum()),
                         "median_error": float(np.median(e)), "mean_error": float(np.mean(e))})
    if not errors:
        raise SystemExit("no chessboard pair gave a reference plane")
    used = sorted(p["pair"] for p in per_pair if p["used"])
    if args.require_pairs is not None and used != sorted(args.require_pairs.split(",")):
        raise SystemExit(f"scored pairs {used}, --require-pairs {args.require_pairs}")
    e = np.concatenate(errors)
    acc = {k: {**pool_metrics(v), "median_signed": float(np.median(np.concatenate(signed[k])))}
           for k, v in accuracy.items()}
    return {"accuracy": acc, "ablation": {k: pool_metrics(v) for k, v in ablation.items()},
            "pairs": per_pair,
            "max_plane_rms": args.max_plane_rms, "max_disparity": BOARD_MAX_DISPARITY,
            "settings": {k: list(cfg.two_pass_std_pixel) for k, cfg in settings.items()},
            "error": {"median": float(np.median(e)), "mean": float(np.mean(e)),
                      "over_2px": float(np.mean(e > 2.0))},
            "candidates": {k: coverage_row(e, np.concatenate(v)) for k, v in stds.items()}}


def method_disparities(pipe: Any, left: np.ndarray, right: np.ndarray, default: np.ndarray
                       ) -> dict[str, np.ndarray]:
    """``--accuracy``: the disparities scored against the board's plane. They are the default pipeline's
    (``default``, already run), the same without the SGBM candidate, the network alone (no local
    refinement), and OpenCV SGBM_3WAY at the same
    range, sparse and hole-filled as ``stereo_accuracy.py`` scores it.  The plane is no GT data set, so,
    unlike Aloe, this real-camera accuracy may be tuned on (issue 22)."""
    from scene_perception.evaluation.metrics import fill_holes_background
    from scene_perception.pipelines.sgbm import SGBMMatcher

    kept = pipe.local_refinement
    try:
        pipe.local_refinement = dataclasses.replace(kept, sgbm_candidate=False)
        no_candidate = pipe(left, right).disparity
        pipe.local_refinement = None
        alone = pipe(left, right).disparity
    finally:
        pipe.local_refinement = kept
    sparse = SGBMMatcher(BOARD_MAX_DISPARITY)(left, right)
    return {"ours (default pipeline)": default, "ours, no SGBM candidate": no_candidate,
            "ours, network alone": alone, "SGBM_3WAY sparse": sparse,
            "SGBM_3WAY filled": fill_holes_background(sparse)}


def synthetic_scores(args: argparse.Namespace) -> dict[str, Any]:
    """rule_pixel8.md: each candidate on rule_pixel7.md's 240 validation frames (four synthetic conditions),
    in numpy from its cache (collected again when absent)."""
    import two_pass_pixel as tp
    from two_pass_adaptive import cpu_pipeline, pooled_ause

    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

    fargs = tp.parse_args(["--frame-disagreement", "--today-shipped", "--conditions",
                           "exact,nuisance,camera,rig", "--cache", str(args.cache), "--threads",
                           str(args.threads)])
    setup = cpu_pipeline(fargs)
    frames = tp.cached_collect(fargs, setup.pipeline, rule_camera_setting(DEFAULT_LOCAL_REFINEMENT),
                               setup.info.sha256)
    out = {}
    for key, cfg in candidates(DEFAULT_LOCAL_REFINEMENT).items():
        fac = (tp.factors(frames, cfg, None, 1.0) if not cfg.two_pass_std_pixel
               else tp.factors(frames, *tp.shipped_shape(cfg), 1.0))
        rows = tp.coverage_rows(frames, fac)
        conds = {c: {"coverage": rows[c]["coverage"], "violation": goal_violation(rows[c]["coverage"])}
                 for c in rows if c != "pooled"}
        out[key] = {"conditions": conds, "ause": pooled_ause(frames, fac)}
    return {"frames": len(frames), "candidates": out}


def decide(board: dict[str, Any], synthetic: dict[str, Any]) -> dict[str, Any]:
    """rule_pixel8.md: the lowest summed violation over the five conditions; within ``TIE`` of it, the lowest
    synthetic AUSE."""
    total = {k: sum(c["violation"] for c in synthetic["candidates"][k]["conditions"].values())
             + board["candidates"][k]["violation"] for k in board["candidates"]}
    lowest = min(total.values())
    tied = [k for k, v in total.items() if v <= lowest + TIE]
    chosen = min(tied, key=lambda k: synthetic["candidates"][k]["ause"])
    return {"violation": total, "tied": tied, "chosen": chosen, "changes_default": chosen != "pixel7"}


def pct(cov: list[float]) -> str:
    return " / ".join(f"{100 * c:.1f}" for c in cov)


def markdown(res: dict[str, Any]) -> str:
    b = res["board"]
    used = [p for p in b["pairs"] if p["used"]]
    lines = [f"chessboard pairs used: {len(used)} of {len(b['pairs'])} (max disparity "
             f"{b['max_disparity']:.0f}, plane RMS <= {b['max_plane_rms']} px), {res['seconds']:.0f} s", "",
             "| pair | corner disparity px | plane RMS px | corner row error px | pixels | "
             "median / mean error px |",
             "|---|---|---|---|---|---|"]
    for p in b["pairs"]:
        if not p["used"]:
            lines.append(f"| {p['pair']} | not used: {p['why']} | | | | |")
            continue
        lines.append(f"| {p['pair']} | {p['corner_disparity'][0]:.1f}-{p['corner_disparity'][1]:.1f} | "
                     f"{p['rms']:.3f} | {p['row_error']:.3f} | {p['pixels']} | "
                     f"{p['median_error']:.3f} / {p['mean_error']:.3f} |")
    e = b["error"]
    lines += ["", f"pooled error against the plane: median {e['median']:.3f} px, mean {e['mean']:.3f} px, "
              f"over 2 px {100 * e['over_2px']:.1f} %", ""]
    synthetic = res.get("synthetic")
    head = "| candidate | chessboard, within 1 / 2 / 3 std % | median std px | AUSE |"
    sep = "|---|---|---|---|"
    if synthetic:
        conds = list(next(iter(synthetic["candidates"].values()))["conditions"])
        head += " " + " | ".join(f"{c} (validation)" for c in conds) + " | synthetic AUSE | V |"
        sep += "---|" * (len(conds) + 2)
    lines += [head, sep]
    for key, row in b["candidates"].items():
        line = (f"| {key} | {pct(row['coverage'])} | {row['median_std']:.3f} | {row['ause']:.3f} |")
        if synthetic:
            s = synthetic["candidates"][key]
            line += " " + " | ".join(pct(c["coverage"]) for c in s["conditions"].values())
            line += f" | {s['ause']:.4f} | {res['decision']['violation'][key]:.4f} |"
        lines.append(line)
    if b.get("accuracy"):
        n = next(iter(b["accuracy"].values()))["n_pixels"]
        lines += ["", f"disparity against the board's plane ({n} reference pixels, range "
                  f"{b['max_disparity']:.0f}):", "",
                  "| method | EPE px | bad-1 % | bad-2 % | bad-3 % | density % | median signed error px |",
                  "|---|---|---|---|---|---|---|"]
        for method, m in b["accuracy"].items():
            lines.append(f"| {method} | {m['epe']:.2f} | {m['bad1']:.1f} | {m['bad2']:.1f} | "
                         f"{m['bad3']:.1f} | {m['density']:.1f} | {m['median_signed']:+.2f} |")
    if b.get("ablation"):
        lines += ["", "the local refinement with one part changed (board pixels; network alone: none):",
                  "", "| refinement | EPE px | bad-1 % | bad-2 % | bad-3 % |", "|---|---|---|---|---|"]
        for key, m in b["ablation"].items():
            lines.append(f"| {key} | {m['epe']:.2f} | {m['bad1']:.1f} | {m['bad2']:.1f} | {m['bad3']:.1f} |")
    if "decision" in res:
        d = res["decision"]
        lines += ["", f"tied within {TIE}: {d['tied']}; chosen: **{d['chosen']}** (changes the default: "
                  f"{d['changes_default']})"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chessboard-dir", default=str(REPO / ".cache/eval/chessboard"))
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=0, help="only the first N pairs (0 = all)")
    p.add_argument("--max-plane-rms", type=float, default=MAX_PLANE_RMS, help="px; rule_pixel8.md: 0.25")
    p.add_argument("--rule", action="store_true",
                   help="rule_pixel8.md: also score the candidates on the synthetic validation frames and "
                        "decide")
    p.add_argument("--cache", type=Path, default=REPO / "runs/two_pass_pixel7_val.npz",
                   help="rule_pixel7.md's validation frames (collected when absent: ~7 min)")
    p.add_argument("--accuracy", action="store_true",
                   help="also score the disparity against the plane: the default pipeline, the network "
                        "alone and SGBM (EPE, bad-1/2/3, density)")
    p.add_argument("--ablation", action="store_true",
                   help="also score the local refinement with one part changed at a time")
    p.add_argument("--require-pairs", default=None, metavar="01,02,...",
                   help="fail unless exactly these pairs are scored (held-out pairs of a training split)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 pairs, no rule")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.rule = 2, False
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"board": board_scores(args)}
    if args.rule:
        res["synthetic"] = synthetic_scores(args)
        res["decision"] = decide(res["board"], res["synthetic"])
    res["seconds"] = time.perf_counter() - t0
    print(markdown(res))
    if args.json is not None:
        write_json(args.json, res)
        print(f"wrote {args.json}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
