#!/usr/bin/env python3
"""Choose the local refinement on synthetic validation and the real chessboard together (issue 22).

The rules, each written before its candidates were scored: ``benchmarks/results/2026-12-06_cpu/
refinement_rule/rule.md`` (``--rule 1``), ``rule2.md`` and ``rule3.md`` (``--rule 2`` / ``3``), and
``benchmarks/results/2026-12-07_cpu/refinement_rule/rule4.md`` (``--rule 4``).  Why: the
default refinement was chosen on exact synthetic renders, and on the real opencv-doc chessboard (scored
against the board's plane, ``evaluation/board_plane.py``) it makes the network's disparity worse.  The
candidates add a gate against the aperture problem (rule 1: ``min_x_texture``, horizontal texture; rule 2:
``min_x_share``, the horizontal share of the gradient energy; rule 3: ``min_x_snr``, horizontal texture
against the frame's noise) or raise the grey-std gate (rule 4: ``min_peak_curvature``, the search's
sub-pixel peak must be sharp), with the SGBM candidate on and off; each is scored on

- 200 validation pairs, exact and as a camera sees them (``local_refinement_sweep.py``'s pairs, one
  refinement): non-occluded EPE, bad-2, AUSE;
- the chessboard pairs whose plane fits, the whole pipeline at 640x480 and range 256 (two refinements):
  bad-2 against the plane, and the published std's coverage (reported, deciding nothing).

    python benchmarks/refinement_rule.py --json out/refinement_rule.json    # rule 1, ~35 min on 2 cores
    python benchmarks/refinement_rule.py --rule 2 --json out/refinement_rule2.json   # ~25 min
    python benchmarks/refinement_rule.py --rule 3 --json out/refinement_rule3.json   # ~25 min
    python benchmarks/refinement_rule.py --rule 4 --json out/refinement_rule4.json   # ~25 min
    python benchmarks/refinement_rule.py --quick                           # smoke: 4 pairs, 2 boards
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import local_refinement_sweep as sweep  # noqa: E402

from scene_perception.evaluation.benchmarking import write_json  # noqa: E402
from scene_perception.evaluation.board_plane import (  # noqa: E402
    BOARD_MAX_DISPARITY,
    MAX_PLANE_RMS,
    plane_pairs,
)
from scene_perception.evaluation.calibration import coverage  # noqa: E402
from scene_perception.evaluation.metrics import disparity_metrics, pool_metrics  # noqa: E402
from scene_perception.pipelines.local_refinement_config import (  # noqa: E402
    DEFAULT_LOCAL_REFINEMENT,
    LocalRefinementConfig,
)

#: rule.md's constants.
EPE_SLACK_PX = 0.03
BAD2_SLACK = 0.3
AUSE_SLACK = 0.02
MIN_BOARD_GAIN = 3.0
TIE = 0.5
DEFAULT = "D"
#: Each rule's text, written before its candidates were scored.
RULE_FILES = {1: "benchmarks/results/2026-12-06_cpu/refinement_rule/rule.md",
              2: "benchmarks/results/2026-12-06_cpu/refinement_rule/rule2.md",
              3: "benchmarks/results/2026-12-06_cpu/refinement_rule/rule3.md",
              4: "benchmarks/results/2026-12-07_cpu/refinement_rule/rule4.md"}
#: The rules' validation conditions (``data/conditions.py``).
RULE_CONDITIONS = ("exact", "camera")


def candidates(rule: int = 1, default: LocalRefinementConfig = DEFAULT_LOCAL_REFINEMENT
               ) -> dict[str, LocalRefinementConfig]:
    """The rule's settings.  Rule 2: ``D`` and ``S<s>`` / ``S<s> no SGBM`` (min_x_share s); rule 3 the same
    with ``N<k>`` (min_x_snr k), rule 4 with ``K<k>`` (min_peak_curvature k).  Rule 1: 15
    settings, ``X<t>`` / ``X<t> no SGBM`` (min_x_texture t, SGBM candidate on / off; X0 with SGBM is today's
    default ``D``) and the control ``T<t>`` (min_texture t, SGBM on)."""
    if rule in (2, 3, 4):
        field, prefix, values = {2: ("min_x_share", "S", (0.05, 0.1, 0.2, 0.3)),
                                 3: ("min_x_snr", "N", (1.0, 2.0, 4.0, 8.0)),
                                 4: ("min_peak_curvature", "K", (0.02, 0.05, 0.1, 0.2))}[rule]
        out = {DEFAULT: default}
        for v in values:
            on = dataclasses.replace(default, **{field: v}, sgbm_candidate=True)
            out[f"{prefix}{v:g}"] = on
            out[f"{prefix}{v:g} no SGBM"] = dataclasses.replace(on, sgbm_candidate=False)
        return out
    out = {}
    for t in (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04):
        on = dataclasses.replace(default, min_x_texture=t, sgbm_candidate=True)
        out[DEFAULT if t == 0.0 else f"X{t:g}"] = on
        out[f"X{t:g} no SGBM"] = dataclasses.replace(on, sgbm_candidate=False)
    for t in (0.01, 0.02, 0.04):
        out[f"T{t:g}"] = dataclasses.replace(default, min_texture=t, sgbm_candidate=True)
    return out


def references(default: LocalRefinementConfig = DEFAULT_LOCAL_REFINEMENT
               ) -> dict[str, LocalRefinementConfig | None]:
    """Rows shown beside the candidates, never eligible: the network alone and the ablation's minimal
    refinement (``chessboard_planes.py --ablation``)."""
    minimal = dataclasses.replace(default, sgbm_candidate=False, iterations=1, radius=1, propagation=0,
                                  window_shift=0)
    return {"network alone": None, "minimal (reference)": minimal}


def board_scores(args: argparse.Namespace, settings: dict[str, LocalRefinementConfig | None]
                 ) -> dict[str, Any]:
    """Each setting through the whole pipeline on the chessboard pairs whose plane fits: pooled disparity
    metrics against the plane and the std's coverage (Laplace 1 / 2 / 3 std)."""
    import torch

    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    torch.set_num_threads(args.threads)
    pipe = build_stereo_pipeline(args.model, args.weights, backend="torch", device="cpu",
                                 compute_points=False).pipeline
    pipe.max_disparity = BOARD_MAX_DISPARITY
    per: dict[str, list[dict[str, float]]] = {k: [] for k in settings}
    errors: dict[str, list[np.ndarray]] = {k: [] for k in settings}
    stds: dict[str, list[np.ndarray]] = {k: [] for k in settings}
    used = []
    for name, left, right, ref in plane_pairs(args.chessboard_dir):
        if args.boards and len(used) >= args.boards:
            break
        used.append(name)
        for key, cfg in settings.items():
            pipe.local_refinement = cfg
            r = pipe(left, right)
            per[key].append(disparity_metrics(r.disparity, ref["reference"]))
            ok = np.isfinite(ref["reference"]) & np.isfinite(r.disparity) & np.isfinite(r.disparity_std)
            errors[key].append(np.abs(r.disparity - ref["reference"])[ok])
            stds[key].append(r.disparity_std[ok])
    if not used:
        raise SystemExit(f"no chessboard pair in {args.chessboard_dir} gave a reference plane")
    out = {}
    for key in settings:
        cov = coverage(np.concatenate(errors[key]), np.concatenate(stds[key]))["observed"]
        out[key] = {**pool_metrics(per[key]), "coverage": [100.0 * c for c in cov]}
    return {"pairs": used, "settings": out}


def synthetic_scores(args: argparse.Namespace, condition: str,
                     settings: dict[str, LocalRefinementConfig | None]) -> dict[str, Any]:
    """Each setting on the validation pairs in ``condition`` (one refinement, cached network output)."""
    sargs = sweep.parse_args(["--pairs", str(args.pairs), "--condition", condition,
                              "--threads", str(args.threads)] + (["--weights", args.weights] if args.weights
                                                                 else []))
    cached, _ = sweep.collect(sargs, sgbm_candidate=True)
    print(f"\n## validation, {condition}: {len(cached)} pairs\n")
    rows = sweep.score(cached, list(settings.values()))
    return {key: {k: row[k] for k in ("epe", "bad1", "bad2", "bad3", "ause", "changed", "ms_per_pair")}
            for key, row in zip(settings, rows, strict=True)}


def decide(board: dict[str, Any], synthetic: dict[str, dict[str, Any]], rule: int = 1) -> dict[str, Any]:
    """rule.md (rule2.md the same): eligible within the slacks of D on both validation conditions; the lowest
    board bad-2; ties within ``TIE`` points by V-exact EPE; replaces D only with a board gain of
    ``MIN_BOARD_GAIN`` points."""
    names = list(candidates(rule))
    why: dict[str, str] = {}
    for key in names:
        for cond, rows in synthetic.items():
            r, d = rows[key], rows[DEFAULT]
            if r["epe"] > d["epe"] + EPE_SLACK_PX:
                why[key] = f"{cond} EPE {r['epe']:.3f} > {d['epe'] + EPE_SLACK_PX:.3f}"
            elif r["bad2"] > d["bad2"] + BAD2_SLACK:
                why[key] = f"{cond} bad-2 {r['bad2']:.2f} > {d['bad2'] + BAD2_SLACK:.2f}"
            elif r["ause"] > d["ause"] + AUSE_SLACK:
                why[key] = f"{cond} AUSE {r['ause']:.4f} > {d['ause'] + AUSE_SLACK:.4f}"
            if key in why:
                break
    eligible = [k for k in names if k not in why]
    bad2 = {k: board["settings"][k]["bad2"] for k in names}
    lowest = min(bad2[k] for k in eligible)
    tied = [k for k in eligible if bad2[k] <= lowest + TIE]
    best = min(tied, key=lambda k: synthetic["exact"][k]["epe"])
    changes = best != DEFAULT and bad2[best] <= bad2[DEFAULT] - MIN_BOARD_GAIN
    return {"ineligible": why, "eligible": eligible, "tied": tied, "best": best,
            "chosen": best if changes else DEFAULT, "changes_default": changes}


def markdown(res: dict[str, Any]) -> str:
    board, synth = res["board"], res["synthetic"]
    lines = [f"chessboard pairs scored: {' '.join(board['pairs'])} (plane RMS <= {MAX_PLANE_RMS} px, range "
             f"{BOARD_MAX_DISPARITY:g}, two refinements); validation: {res['pairs']} pairs per condition\n",
             "| setting | exact: EPE px / bad-2 % / AUSE | camera: EPE px / bad-2 % / AUSE | board: EPE px / "
             "bad-1 / bad-2 / bad-3 % | board std coverage 1 / 2 / 3 % | eligible |",
             "|---|---|---|---|---|---|"]
    decision = res.get("decision", {})
    for key, b in board["settings"].items():
        cells = [" / ".join((f"{synth[c][key]['epe']:.3f}", f"{synth[c][key]['bad2']:.2f}",
                             f"{synth[c][key]['ause']:.4f}")) if key in synth.get(c, {}) else "-"
                 for c in RULE_CONDITIONS]
        elig = ("yes" if key in decision.get("eligible", []) else decision.get("ineligible", {}).get(key, "-")
                if key in candidates(res["rule_number"]) else "reference")
        cov = " / ".join(f"{c:.1f}" for c in b["coverage"])
        lines.append(f"| {key} | {cells[0]} | {cells[1]} | {b['epe']:.2f} / {b['bad1']:.1f} / "
                     f"{b['bad2']:.1f} / {b['bad3']:.1f} | {cov} | {elig} |")
    if decision:
        lines.append(f"\nlowest board bad-2 among the eligible: {decision['best']} (tied: "
                     f"{', '.join(decision['tied'])}); chosen: **{decision['chosen']}** "
                     f"({'replaces' if decision['changes_default'] else 'keeps'} the default)")
    lines.append(f"\n{res['seconds']:.0f} s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chessboard-dir", default=str(REPO / ".cache/eval/chessboard"))
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rule", type=int, choices=tuple(RULE_FILES), default=1,
                   help="rule.md (1), rule2.md, rule3.md (2026-12-06), rule4.md (2026-12-07)")
    p.add_argument("--pairs", type=int, default=200, help="validation pairs per condition (rule.md: 200)")
    p.add_argument("--boards", type=int, default=0, help="only the first N usable boards (0 = all)")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 validation pairs, 2 boards")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.boards = 4, 2
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not Path(args.chessboard_dir).is_dir():
        raise SystemExit(f"no chessboard pairs at {args.chessboard_dir}: run tools/fetch_eval_data.sh")
    t0 = time.perf_counter()
    settings: dict[str, LocalRefinementConfig | None] = {**references(), **candidates(args.rule)}
    res: dict[str, Any] = {"rule": RULE_FILES[args.rule],
                           "rule_number": args.rule,
                           "pairs": args.pairs,
                           "settings": {k: None if c is None else dataclasses.asdict(c)
                                        for k, c in settings.items()}}
    res["synthetic"] = {c: synthetic_scores(args, c, settings) for c in RULE_CONDITIONS}
    res["board"] = board_scores(args, settings)
    res["decision"] = decide(res["board"], res["synthetic"], args.rule)
    res["seconds"] = time.perf_counter() - t0
    print("\n" + markdown(res))
    if args.json is not None:
        write_json(args.json, res)
        print(f"wrote {args.json}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
