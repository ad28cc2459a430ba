#!/usr/bin/env python3
"""Fit a per-frame two-pass std factor to a GT-free view-agreement measure (issue 25), on validation pairs.

Why: when the scene needs more range than the network's, the pipeline refines twice and one constant
(``two_pass_std_factor``) sets the size of the published std.  Fitted on photometrically exact renders it
is too small for a camera's views; fitted on noisy renders it is too large for exact ones.  This script
applies the rule ``benchmarks/results/2026-12-06_cpu/two_pass_adaptive/rule.md`` (written before it ran):

1. renders the validation pairs above the network's range in each of ``--conditions``: ``exact``,
   ``nuisance`` (per-view gain, bias, sensor noise), ``camera`` (nuisance, then the camera effects of
   ``data/augment.py: VIEW_EFFECTS``; ``rule_camera.md``), runs the pipeline with factor 1 and computes every
   measure of ``pipelines/view_agreement.py`` per frame;
2. picks the measure whose value ranks best with each frame's own nominal factor (Spearman);
3. grids ``f = clip(f0 * (m / m_ref) ** b, 1, 6)`` and chooses by the rule;
4. checks the chosen setting through the pipeline itself on the same frames.

    python benchmarks/two_pass_adaptive.py --json out/two_pass_adaptive.json
    python benchmarks/two_pass_adaptive.py --conditions exact,nuisance,camera --today zncc,0.041566,2.15,0.1
    python benchmarks/two_pass_adaptive.py --quick       # smoke run: 2 + 2 tiny pairs
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

from scene_perception.data.conditions import CONDITIONS, condition_renders, render_condition
from scene_perception.evaluation.benchmarking import parse_size
from scene_perception.evaluation.calibration import expected_coverage, spearman
from scene_perception.evaluation.uncertainty import ause

#: The rule's grids and constants (rule.md, written before the run).
F0_GRID = tuple(round(1.0 + 0.05 * i, 2) for i in range(61))
B_GRID = tuple(round(0.05 * i, 2) for i in range(41))
KS = (1.0, 2.0, 3.0)
NOMINAL_2STD = expected_coverage(2.0, "laplace")
MIN_RHO = 0.5


def frame_parser(description: str, conditions: str | None) -> argparse.ArgumentParser:
    """The arguments every two-pass rule script shares (which frames, which weights, where the JSON goes);
    ``--conditions`` with default ``conditions`` unless None (a script with fixed conditions)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--split", default="validation", choices=("validation", "test"))
    p.add_argument("--pairs", type=int, default=30, help="pairs per range")
    p.add_argument("--ranges", default="192,256", help="max disparities above the network's range")
    p.add_argument("--size", type=parse_size, default=(256, 512), help="HxW of the rendered pairs")
    p.add_argument("--threads", type=int, default=2)
    if conditions is not None:
        p.add_argument("--conditions", default=conditions, help=f"renders per seed, of {CONDITIONS}")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 pairs per range at 96x192, range 160")
    return p


def frame_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``frame_parser``'s arguments: ranges as floats, conditions checked, ``--quick`` applied."""
    args = p.parse_args(argv)
    args.ranges = [float(v) for v in str(args.ranges).split(",") if v.strip()]
    if hasattr(args, "conditions"):
        args.conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
        if not args.conditions or set(args.conditions) - set(CONDITIONS):
            p.error(f"--conditions must name some of {CONDITIONS}, got {args.conditions}")
    if args.quick:
        args.pairs, args.size, args.ranges = 2, (96, 192), [160.0]
    return args


def cpu_pipeline(args: argparse.Namespace) -> Any:
    """The default stereo pipeline's setup on the CPU at ``--threads``, torch seeded: what each rule ran."""
    import torch

    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return build_stereo_pipeline(args.model, args.weights, backend="torch", device="cpu",
                                 compute_points=False)


def two_pass_setup(args: argparse.Namespace) -> Any:
    """:func:`cpu_pipeline`, refusing ``--ranges`` the network covers itself (those frames are refined once,
    and every two-pass rule is about frames refined twice)."""
    setup = cpu_pipeline(args)
    limit = setup.pipeline.network_max_disparity
    if any(r <= limit for r in args.ranges):
        raise SystemExit(f"error: --ranges must exceed the network's range, {limit} px")
    return setup


def report(res: dict[str, Any], args: argparse.Namespace, markdown_of: Any, t0: float) -> dict[str, Any]:
    """Stamp the run's seconds, print ``markdown_of(res)`` and write ``--json``; returns ``res``."""
    res["seconds"] = time.perf_counter() - t0
    print(markdown_of(res))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    return res


def coverage_line(name: str, row: dict[str, Any], conds: list[str]) -> str:
    """A markdown table row: per condition and pooled 1 / 2 / 3-std coverage, pooled gap and AUSE."""
    return (f"| {name} | " + " | ".join(pct(row[c]["coverage"]) for c in conds)
            + f" | {pct(row['pooled']['coverage'])} | {row['pooled']['gap']:.3f} | {row['ause']:.4f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = frame_parser(__doc__.split("\n\n")[0], "exact,nuisance")
    p.add_argument("--today", default="none,1,1.5,0", metavar="MEASURE,REF,F0,B",
                   help="the setting to beat (default: the constant 1.5 of 2026-12-05)")
    args = frame_args(p, argv)
    name, *numbers = args.today.split(",")
    args.today = (name, *(float(v) for v in numbers))
    if len(args.today) != 4:
        p.error("--today wants MEASURE,REF,F0,B")
    return args


def rule_camera_setting(cfg: Any) -> Any:
    """``cfg`` with ``rule_camera.md``'s per-frame factor (zncc, 0.09351, 3.35, 0.25): the default until
    ``rule_pixel4.md`` shipped a per-pixel one, and the baseline of every per-pixel rule."""
    return dataclasses.replace(cfg, two_pass_std_measure="zncc", two_pass_std_reference=0.09351,
                               two_pass_std_factor=3.35, two_pass_std_exponent=0.25, two_pass_std_pixel=())


def collect(args: argparse.Namespace, pipe: Any, base: Any) -> list[dict[str, Any]]:
    """Per frame: |error| / std (factor 1) on non-occluded pixels, every measure, condition and range."""
    import torch

    from scene_perception.pipelines import view_agreement
    from scene_perception.pipelines.image_tensor import image_to_tensor

    h, w = args.size
    pipe.local_refinement = dataclasses.replace(base, two_pass_std_factor=1.0, two_pass_std_measure="none",
                                                two_pass_std_exponent=0.0)
    frames = []
    renders = condition_renders(args.split, args.conditions, args.ranges, args.pairs, w, h)
    for condition, rng, seed, s in renders:
        pipe.max_disparity = rng
        r = pipe(s.left, s.right)
        if r.two_pass_factor != 1.0 or r.scale >= 1.0:
            raise RuntimeError("the pipeline did not refine twice with factor 1")
        mask = s.nonoccluded & np.isfinite(s.disparity)
        left, right = image_to_tensor(s.left, pipe.device), image_to_tensor(s.right, pipe.device)
        disp = torch.from_numpy(r.disparity).to(pipe.device)[None, None]
        measures = {name: view_agreement.measure(name, left, right, disp, pipe.local_refinement)
                    for name in view_agreement.MEASURES if name != "none"}
        err = np.abs(r.disparity - s.disparity)[mask].astype(np.float64)
        std = r.disparity_std[mask].astype(np.float64)
        frames.append({"seed": seed, "range": rng, "condition": condition, "measures": measures,
                       "error": err, "std": std, "ratio": np.sort(err / np.maximum(std, 1e-12))})
    pipe.max_disparity = None
    return frames


def frame_factors(frames: list[dict[str, Any]], name: str, reference: float, f0: float, b: float
                  ) -> np.ndarray:
    from scene_perception.pipelines.view_agreement import two_pass_factor

    return np.array([two_pass_factor(fr["measures"].get(name, math.nan), f0, reference, b) for fr in frames])


def pooled_coverage(frames: list[dict[str, Any]], factors: np.ndarray) -> list[float]:
    """Share of all the frames' pixels within k std when frame i's std is x factors[i] (sorted ratios)."""
    n = sum(fr["ratio"].size for fr in frames)
    return [sum(int(np.searchsorted(fr["ratio"], k * f, side="right")) for fr, f in zip(frames, factors,
                                                                                          strict=True)) / n
            for k in KS]


def gap(cov: list[float]) -> float:
    return float(sum(abs(o - expected_coverage(k, "laplace")) for o, k in zip(cov, KS, strict=True)))


def meets_goals(cov: list[float]) -> bool:
    """Issue 25 item 3: 2-std share in [90, 97] %, 1-std share within 10 points of the Laplace's 75.7 %."""
    return bool(0.90 <= cov[1] <= 0.97 and abs(cov[0] - expected_coverage(1.0, "laplace")) <= 0.10)


def goal_violation(cov: list[float]) -> float:
    """How far the 1- and 2-std shares are from :func:`meets_goals`' intervals (0 = met): the penalty of
    ``two_pass_pixel.coverage_search`` (rule_pixel3.md) and the score of rule_pixel8.md."""
    c1, c2 = cov[0], cov[1]
    return (max(0.0, 0.90 - c2) + max(0.0, c2 - 0.97)
            + max(0.0, abs(c1 - expected_coverage(1.0, "laplace")) - 0.10))


def setting_row(frames: list[dict[str, Any]], name: str, reference: float, f0: float, b: float
                ) -> dict[str, Any]:
    f = frame_factors(frames, name, reference, f0, b)
    cond = np.array([fr["condition"] for fr in frames])
    row: dict[str, Any] = {"f0": f0, "b": b}
    for key in ("pooled", *dict.fromkeys(cond.tolist())):
        sel = np.ones(len(frames), bool) if key == "pooled" else cond == key
        cov = pooled_coverage([fr for fr, s in zip(frames, sel, strict=True) if s], f[sel])
        row[key] = {"coverage": cov, "gap": gap(cov), "meets_goals": meets_goals(cov)}
    return row


def conditions_of(frames: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(fr["condition"] for fr in frames))


def pooled_ause(frames: list[dict[str, Any]], factors: Any) -> float:
    """AUSE over every frame's pixels, frame i's std x ``factors[i]`` (a number, or one per pixel)."""
    e = np.concatenate([fr["error"] for fr in frames]).astype(np.float64)
    s = np.concatenate([fr["std"] * f for fr, f in zip(frames, factors, strict=True)]).astype(np.float64)
    return float(ause(e, s)["ause"])


def fit(frames: list[dict[str, Any]], today_setting: tuple[str, float, float, float]) -> dict[str, Any]:
    """Steps 1-3 of the rule; ``today_setting`` = (measure, reference, base, exponent) to beat."""
    conds = conditions_of(frames)
    cond = np.array([fr["condition"] for fr in frames])
    target = np.array([np.quantile(fr["ratio"], NOMINAL_2STD) / 2.0 for fr in frames])
    names = list(frames[0]["measures"])
    values = {n: np.array([fr["measures"][n] for fr in frames]) for n in names}
    rho = {n: spearman(values[n], target) for n in names}
    chosen_measure = max(names, key=lambda n: -math.inf if not math.isfinite(rho[n]) else rho[n])
    out: dict[str, Any] = {
        "frames": len(frames), "conditions": conds,
        "target_factor": {"median": float(np.median(target)),
                          **{f"{c}_median": float(np.median(target[cond == c])) for c in conds}},
        "measure_summary": {n: {f"{c}_median": float(np.nanmedian(v[cond == c])) for c in conds}
                            for n, v in values.items()},
        "spearman": rho, "measure": chosen_measure,
        "today_setting": {"measure": today_setting[0], "reference": today_setting[1], "f0": today_setting[2],
                          "b": today_setting[3]},
    }
    if rho[chosen_measure] < MIN_RHO:
        out.update(stop=f"best rho {rho[chosen_measure]:.3f} < {MIN_RHO}: nothing ships", ship=False)
        return out
    reference = float(np.nanmedian(values[chosen_measure]))
    out["reference"] = reference
    today = setting_row(frames, *today_setting)
    rows = [setting_row(frames, chosen_measure, reference, f0, b) for f0 in F0_GRID for b in B_GRID]
    pool = [r for r in rows if all(r[c]["meets_goals"] for c in conds)]
    candidates = pool or rows
    lowest = min(r["pooled"]["gap"] for r in candidates)
    ties = [r for r in candidates if r["pooled"]["gap"] <= lowest + 0.005]
    best = min(ties, key=lambda r: (r["b"], abs(r["f0"] - today_setting[2]), r["pooled"]["gap"]))
    today["ause"] = pooled_ause(frames, frame_factors(frames, *today_setting))
    best["ause"] = pooled_ause(frames, frame_factors(frames, chosen_measure, reference, best["f0"],
                                                     best["b"]))
    checks = {
        "a_goals_every_condition": bool(pool) and best in pool,
        "b_gap_below_today": best["pooled"]["gap"] <= today["pooled"]["gap"] - 0.01,
        "c_ause_within_1pct": best["ause"] <= 1.01 * today["ause"],
    }
    out.update(today=today, chosen=best, pool_size=len(pool), checks=checks, ship=all(checks.values()),
               grid=[{"f0": r["f0"], "b": r["b"], "gap": r["pooled"]["gap"],
                      **{c: r[c]["coverage"] for c in conds}} for r in rows])
    return out


def check_through_pipeline(args: argparse.Namespace, pipe: Any, base: Any, frames: list[dict[str, Any]],
                           result: dict[str, Any]) -> dict[str, Any]:
    """Rule: the chosen setting run by the pipeline itself on the same frames; coverage within 0.5 point."""
    cfg = dataclasses.replace(base, two_pass_std_factor=result["chosen"]["f0"],
                              two_pass_std_measure=result["measure"],
                              two_pass_std_reference=result["reference"],
                              two_pass_std_exponent=result["chosen"]["b"])
    return pipeline_coverage(args, pipe, cfg, frames, result["chosen"]["pooled"]["coverage"])


def pipeline_coverage(args: argparse.Namespace, pipe: Any, cfg: Any, frames: list[dict[str, Any]],
                      want: list[float], factor: str = "two_pass_factor") -> dict[str, Any]:
    """The pooled 1 / 2 / 3-std coverage of ``frames`` re-rendered and run through the pipeline with ``cfg``,
    against the numpy figure ``want`` (the rules' check: within 0.5 point); ``factor`` names the result
    field whose range is reported (``one_pass_factor`` for frames refined once)."""
    pipe.local_refinement = cfg
    h, w = args.size
    ratios, factors = [], []
    for fr in frames:
        pipe.max_disparity = fr["range"]
        s = render_condition(fr["seed"], w, h, fr["range"], fr["condition"])
        r = pipe(s.left, s.right)
        mask = s.nonoccluded & np.isfinite(s.disparity)
        ratios.append(np.abs(r.disparity - s.disparity)[mask] / np.maximum(r.disparity_std[mask], 1e-12))
        factors.append(getattr(r, factor))
    pipe.max_disparity = None
    ratio = np.concatenate(ratios)
    cov = [float(np.mean(ratio <= k)) for k in KS]
    diff = max(abs(a - b) for a, b in zip(cov, want, strict=True))
    return {"coverage": cov, "numpy_coverage": want, "max_diff": diff, "holds": diff <= 0.005,
            "factor_range": [float(min(factors)), float(max(factors))]}


def pct(c: list[float]) -> str:
    """Shares as "a / b / c" percent."""
    return " / ".join(f"{100 * v:.1f}" for v in c)


def decision_lines(fit_: dict[str, Any], res: dict[str, Any], unit: str) -> list[str]:
    """The end of a rule's report: how many ``unit`` met the goals, the checks, the decision, the setting
    (when the fit has one) and the pipeline's own check (when it ran)."""
    lines = ["", f"pool meeting the goals in every condition: {fit_['pool_size']} {unit}",
             f"checks: {fit_['checks']}", f"ship: {fit_['ship']}"]
    if "setting" in fit_:
        lines.append(f"setting: {fit_['setting']}")
    if "pipeline_check" in res:
        lines.append(pipeline_check_line(res["pipeline_check"]))
    return lines


def pipeline_check_line(check: dict[str, Any]) -> str:
    return (f"through the pipeline: {pct(check['coverage'])} vs numpy {pct(check['numpy_coverage'])} "
            f"(max diff {100 * check['max_diff']:.2f} points, holds: {check['holds']}); "
            f"factors {check['factor_range'][0]:.2f}..{check['factor_range'][1]:.2f}")


def markdown(res: dict[str, Any]) -> str:
    fit_ = res["fit"]
    conds = fit_["conditions"]
    lines = [f"frames: {fit_['frames']} ({res['split']}: {', '.join(conds)}), {res['seconds']:.0f} s", "",
             "| measure | " + " | ".join(f"{c} median" for c in conds)
             + " | Spearman with the frame's nominal factor |", "|---|" + "---|" * (len(conds) + 1)]
    for n, v in fit_["measure_summary"].items():
        lines.append(f"| {n} | " + " | ".join(f"{v[f'{c}_median']:.4g}" for c in conds)
                     + f" | {fit_['spearman'][n]:.3f} |")
    t = fit_["target_factor"]
    medians = ", ".join(f"{c} {t[f'{c}_median']:.2f}" for c in conds)
    lines += ["", f"nominal factor per frame, median: {medians}", f"chosen measure: {fit_['measure']}"]
    if "stop" in fit_:
        return "\n".join([*lines, "", fit_["stop"]])
    ts = fit_["today_setting"]
    lines += [f"reference m_ref = {fit_['reference']:.5g}; today = {ts['measure']} reference "
              f"{ts['reference']:g} f0 {ts['f0']} b {ts['b']}", "",
              "| setting | " + " | ".join(f"{c}, 1/2/3 std %" for c in conds)
              + " | pooled | pooled gap | AUSE |", "|---|" + "---|" * (len(conds) + 3)]
    for key in ("today", "chosen"):
        r = fit_[key]
        lines.append(coverage_line(f"{key} f0 {r['f0']} b {r['b']}", r, conds))
    return "\n".join(lines + decision_lines(fit_, res, "settings"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

    args = parse_args(argv)
    setup = two_pass_setup(args)
    pipe = setup.pipeline
    base = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, two_pass_std_pixel=())  # this fits a per-frame form
    t0 = time.perf_counter()
    frames = collect(args, pipe, base)
    res: dict[str, Any] = {"split": args.split, "size": list(args.size), "ranges": args.ranges,
                           "pairs_per_range": args.pairs, "weights": setup.info.sha256,
                           "fit": fit(frames, args.today)}
    if "chosen" in res["fit"]:
        res["pipeline_check"] = check_through_pipeline(args, pipe, base, frames, res["fit"])
    return report(res, args, markdown, t0)


if __name__ == "__main__":
    main()
