#!/usr/bin/env python3
"""Fit a per-pixel two-pass std factor from GT-free matching features (issue 25), on validation pairs.

Why: one factor per frame (``two_pass_adaptive.py``) cannot tell a pixel the second refinement matched well
from one it did not; real pairs refined twice stay over-confident while their frame measure reads clean.
This applies ``benchmarks/results/2026-12-06_cpu/two_pass_adaptive/rule_pixel.md`` (written before it ran):
per pixel, ``log f = log base + b log(m / m_ref) + w . (features - medians)`` over the features of
``pipelines/view_agreement.py: pixel_features`` (1 - ZNCC at the refined disparity, texture, the second pass's
correction), the shape fitted by Laplace NLL, the level by the coverage goals, clipped to [0.5, 8].
``--free-frame-exponent`` (rule_pixel2.md) also refits the frame term, ``--coverage-search`` (rule_pixel3.md)
then searches the weights for the goals, ``--sgbm-features`` (rule_pixel4.md, implies both) adds SGBM's
verdict as two more features (no answer; disagreement with the refined disparity).

    python benchmarks/two_pass_pixel.py --json out/two_pass_pixel.json
    python benchmarks/two_pass_pixel.py --quick      # smoke run: tiny pairs
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from two_pass_adaptive import (  # noqa: E402
    KS,
    coverage_line,
    cpu_pipeline,
    decision_lines,
    frame_args,
    frame_parser,
    gap,
    goal_violation,
    meets_goals,
    pipeline_coverage,
    pooled_ause,
    report,
    rule_camera_setting,
)

from scene_perception.data.conditions import condition_renders  # noqa: E402

#: The rule's constants (rule_pixel.md).
LEVEL_GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(51))
STRIDE = 4
#: The features' names, in ``view_agreement.pixel_features``'s order.
FEATURE_NAMES = ("1 - ZNCC", "texture", "correction", "SGBM silent", "SGBM disagreement",
                 "frame SGBM disagreement")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = frame_parser(__doc__.split("\n\n")[0], "exact,nuisance,camera")
    p.add_argument("--free-frame-exponent", action="store_true",
                   help="rule_pixel2.md: fit the frame term's exponent with the per-pixel weights")
    p.add_argument("--coverage-search", action="store_true",
                   help="rule_pixel3.md: then search the weights for the coverage goals (implies "
                        "--free-frame-exponent)")
    p.add_argument("--today-shipped", action="store_true",
                   help="rule_pixel6.md: the checks compare with the shipped per-pixel default, not the "
                        "per-frame baseline")
    p.add_argument("--sgbm-features", action="store_true",
                   help="rule_pixel4.md: add SGBM's verdict (no answer; |d - SGBM|) as features (implies "
                        "--coverage-search)")
    p.add_argument("--frame-disagreement", action="store_true",
                   help="rule_pixel7.md: also the frame's median log |d - SGBM| as a sixth feature (implies "
                        "--sgbm-features)")
    p.add_argument("--cache", type=Path, default=None,
                   help="keep the collected frames in this .npz (read back when it exists and was collected "
                        "with the same arguments): a refit then skips the pipeline runs")
    args = frame_args(p, argv)
    args.sgbm_features = args.sgbm_features or args.frame_disagreement
    args.coverage_search = args.coverage_search or args.sgbm_features
    args.free_frame_exponent = args.free_frame_exponent or args.coverage_search
    return args


def collect(args: argparse.Namespace, pipe: Any, base: Any) -> list[dict[str, Any]]:
    """Per frame (non-occluded pixels): |error|, the std at factor 1, the three (five with
    ``--sgbm-features``) features, the frame measure; the features are those the pipeline computes from its
    own call (captured), the SGBM ones from the candidate its second refinement was offered."""
    from scene_perception.pipelines import view_agreement

    h, w = args.size
    # Per-pixel path with all weights 0, base 1 and exponent 0: log f = 0, the std is left at factor 1.
    # With SGBM all six rows are collected ("all_features": a shipped 14-number setting can be scored on the
    # frames of a five-feature fit), the fit reads the first n ("features").
    n = feature_count(args)
    rows = 6 if n >= 5 else 3
    # Base 1, exponent 0 (14-number form: its own), every weight 0: the std is left at factor 1.
    zeros = (1.0, 0.0, *(0.0,) * 12) if n >= 5 else (0.0,) * 6
    pipe.local_refinement = dataclasses.replace(base, two_pass_std_factor=1.0, two_pass_std_measure="zncc",
                                                two_pass_std_exponent=0.0, two_pass_std_pixel=zeros)
    original = view_agreement.two_pass_log_factor
    seen: dict[str, Any] = {}

    def spy(cfg: Any, left: Any, right: Any, disparity: Any, before: Any, candidate: Any = None) -> Any:
        if n >= 5 and candidate is None:
            raise RuntimeError("--sgbm-features needs the SGBM candidate in the second refinement")
        score, _, var_l = view_agreement.zncc_map(left, right, disparity, cfg)
        seen["features"] = view_agreement.pixel_features(score, var_l, disparity, before,
                                                         candidate if n >= 5 else None,
                                                         frame_disagreement=rows == 6).cpu().numpy()
        return original(cfg, left, right, disparity, before, candidate)

    view_agreement.two_pass_log_factor = spy
    frames = []
    try:
        renders = condition_renders(args.split, args.conditions, args.ranges, args.pairs, w, h)
        for condition, rng, seed, s in renders:
            pipe.max_disparity = rng
            seen.clear()
            r = pipe(s.left, s.right)
            if "features" not in seen or r.scale >= 1.0 or r.two_pass_factor != 1.0:
                raise RuntimeError("the pipeline did not refine twice with factor 1")
            mask = s.nonoccluded & np.isfinite(s.disparity)
            frames.append({
                "seed": seed, "range": rng, "condition": condition, "measure": r.two_pass_measure,
                "error": np.abs(r.disparity - s.disparity)[mask].astype(np.float32),
                "std": r.disparity_std[mask].astype(np.float32),
                "all_features": seen["features"][:, mask].astype(np.float32)})
            frames[-1]["features"] = frames[-1]["all_features"][:n]
    finally:
        view_agreement.two_pass_log_factor = original
        pipe.max_disparity = None
    return frames


def feature_count(args: argparse.Namespace) -> int:
    """How many features the fit uses: 3, 5 with ``--sgbm-features``, 6 with ``--frame-disagreement``."""
    return 6 if getattr(args, "frame_disagreement", False) else 5 if args.sgbm_features else 3


def cached_collect(args: argparse.Namespace, pipe: Any, base: Any, weights_sha: str) -> list[dict[str, Any]]:
    """:func:`collect`, or the frames ``--cache`` holds when they were collected with the same split, size,
    ranges, pairs, conditions, features and weights (``np.load`` without pickle; written after a collect)."""
    import json

    key = json.dumps({"split": args.split, "size": list(args.size), "ranges": list(args.ranges),
                      "pairs": args.pairs, "conditions": list(args.conditions), "weights": weights_sha,
                      "sgbm": bool(args.sgbm_features)}, sort_keys=True)
    n = feature_count(args)
    path = getattr(args, "cache", None)
    if path is not None and Path(path).is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) == key:
                meta = json.loads(str(z["meta"]))
                return [{**m, "error": z[f"{i}_error"], "std": z[f"{i}_std"],
                         "all_features": z[f"{i}_all_features"], "features": z[f"{i}_all_features"][:n]}
                        for i, m in enumerate(meta)]
        print(f"# {path} was collected with other arguments: collecting again")
    frames = collect(args, pipe, base)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps([{"seed": int(fr["seed"]), "range": float(fr["range"]),
                            "condition": fr["condition"], "measure": float(fr["measure"])} for fr in frames])
        arrays = {f"{i}_{k}": fr[k] for i, fr in enumerate(frames) for k in ("error", "std", "all_features")}
        np.savez(path, key=np.array(key), meta=np.array(meta), **arrays)
    return frames


def centred(features: np.ndarray, centre: Any) -> np.ndarray:
    """``features - centre`` per row, a NaN (the SGBM disagreement where SGBM gave no answer) as 0: the
    pipeline's reading (``view_agreement.two_pass_log_factor``)."""
    return np.nan_to_num(features - np.asarray(centre, dtype=np.float64)[:, None], nan=0.0)


def frame_log_factor(frames: list[dict[str, Any]], cfg: Any, exponent: float | None = None) -> np.ndarray:
    """Per frame, the per-frame part ``log base + b log(m / m_ref)`` (no clip; ``b`` = ``exponent`` or
    today's)."""
    b = cfg.two_pass_std_exponent if exponent is None else exponent
    return np.array([math.log(cfg.two_pass_std_factor) + b * _log_measure(fr, cfg) for fr in frames])


def _log_measure(frame: dict[str, Any], cfg: Any) -> float:
    """``log(m / m_ref)`` of a frame, 0 when its measure is unknown (the pipeline then uses the base)."""
    m = frame["measure"]
    return math.log(m / cfg.two_pass_std_reference) if math.isfinite(m) and m > 0 else 0.0


def fit_shape(frames: list[dict[str, Any]], cfg: Any, free_exponent: bool = False) -> dict[str, Any]:
    """Step 1: ``w`` and a free offset by the mean Laplace NLL over every ``STRIDE``-th pixel (L-BFGS); with
    ``free_exponent`` also the frame term's exponent (rule_pixel2.md), as a fourth feature."""
    import torch

    frame_part = frame_log_factor(frames, cfg, 0.0 if free_exponent else None)
    e = np.concatenate([fr["error"][::STRIDE] for fr in frames]).astype(np.float64)
    s = np.concatenate([fr["std"][::STRIDE] for fr in frames]).astype(np.float64)
    feats = np.concatenate([fr["features"][:, ::STRIDE] for fr in frames], axis=1).astype(np.float64)
    fp = np.concatenate([np.full(fr["error"][::STRIDE].size, v) for fr, v in zip(frames, frame_part,
                                                                                 strict=True)])
    centre = np.nanmedian(feats, axis=1)
    x = torch.from_numpy(centred(feats, centre))
    if free_exponent:
        lm = np.concatenate([np.full(fr["error"][::STRIDE].size, _log_measure(fr, cfg)) for fr in frames])
        x = torch.cat([torch.from_numpy(lm)[None], x])
    log_s0 = torch.from_numpy(np.log(np.maximum(s, 1e-9)) + fp)
    err = torch.from_numpy(e)
    theta = torch.zeros(1 + x.shape[0], dtype=torch.float64, requires_grad=True)  # offset, [b'], w1..w3
    opt = torch.optim.LBFGS([theta], max_iter=200, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        opt.zero_grad()
        log_b = log_s0 + theta[0] + theta[1:] @ x - 0.5 * math.log(2.0)
        loss = (err * torch.exp(-log_b) + log_b).mean()
        loss.backward()
        return loss

    opt.step(nll)
    with torch.no_grad():
        log_b0 = log_s0 - 0.5 * math.log(2.0)
        zero = float((err * torch.exp(-log_b0) + log_b0).mean())
        log_b = log_b0 + theta[0] + theta[1:] @ x
        final = float((err * torch.exp(-log_b) + log_b).mean())
    theta = theta.detach()
    weights = [float(v) for v in theta[1:]]
    exponent = None
    if free_exponent:
        exponent = max(0.0, weights.pop(0))  # the config's exponent is >= 0 (rule_pixel2.md)
    return {"offset": float(theta[0]), "w": weights, "centre": centre.tolist(), "exponent": exponent,
            "nll_start": zero, "nll_fitted": final, "pixels": int(e.size)}


def factors(frames: list[dict[str, Any]], cfg: Any, shape: dict[str, Any] | None, level: float) -> list:
    """Per frame, the factor of every pixel: today's per-frame form (``shape`` None) or the per-pixel one."""
    from scene_perception.pipelines.view_agreement import TWO_PASS_PIXEL_RANGE, two_pass_factor

    out = []
    fparts = frame_log_factor(frames, cfg, None if shape is None else shape.get("exponent"))
    lo, hi = (math.log(v) for v in TWO_PASS_PIXEL_RANGE)
    for fr, fpart in zip(frames, fparts, strict=True):
        if shape is None:
            f = two_pass_factor(fr["measure"], cfg.two_pass_std_factor, cfg.two_pass_std_reference,
                                cfg.two_pass_std_exponent)
            out.append(np.full(fr["error"].size, f, np.float32))
            continue
        w, c = np.array(shape["w"]), np.array(shape["centre"])
        # A setting reads the first of the collected features, in pixel_features' order (the shipped
        # 14-number one all six, a five-feature fit five).
        feats = fr.get("all_features", fr["features"])[:w.size]
        log_f = fpart + math.log(level) + w @ centred(feats.astype(np.float64), c)
        out.append(np.exp(np.clip(log_f, lo, hi)).astype(np.float32))
    return out


def coverage_rows(frames: list[dict[str, Any]], fac: list[np.ndarray], floor: float = 0.0) -> dict[str, Any]:
    """Coverage at 1 / 2 / 3 std, pooled and per condition, of the std ``sqrt((std f)^2 + floor^2)``."""
    ratio = [fr["error"] / np.maximum(np.hypot(fr["std"] * f, floor), 1e-12)
             for fr, f in zip(frames, fac, strict=True)]
    cond = [fr["condition"] for fr in frames]
    rows: dict[str, Any] = {}
    for key in ("pooled", *dict.fromkeys(cond)):
        r = np.concatenate([x for x, c in zip(ratio, cond, strict=True) if key in ("pooled", c)])
        cov = [float(np.mean(r <= k)) for k in KS]
        rows[key] = {"coverage": cov, "gap": gap(cov), "meets_goals": meets_goals(cov)}
    return rows


def coverage_search(frames: list[dict[str, Any]], cfg: Any, shape: dict[str, Any], level: float
                    ) -> tuple[dict[str, Any], float, dict[str, Any]]:
    """rule_pixel3.md step 2: compass search over (b', w1..wn, log level) for pooled gap + 10 x the goal
    violations per condition, on every ``STRIDE``-th pixel (rule_pixel4.md: five weights, at most 800
    evaluations); returns the new shape, level and a trace."""
    from scene_perception.pipelines.view_agreement import TWO_PASS_PIXEL_RANGE

    conds = list(dict.fromkeys(fr["condition"] for fr in frames))
    e = np.concatenate([fr["error"][::STRIDE] for fr in frames]).astype(np.float64)
    sd = np.concatenate([fr["std"][::STRIDE] for fr in frames]).astype(np.float64)
    feats = np.concatenate([fr["features"][:, ::STRIDE] for fr in frames], axis=1).astype(np.float64)
    feats = centred(feats, shape["centre"])
    lm = np.concatenate([np.full(fr["error"][::STRIDE].size, _log_measure(fr, cfg)) for fr in frames])
    cid = np.concatenate([np.full(fr["error"][::STRIDE].size, conds.index(fr["condition"])) for fr in frames])
    lo, hi = (math.log(v) for v in TWO_PASS_PIXEL_RANGE)

    def objective(x: np.ndarray) -> float:
        b, w, log_level = max(0.0, x[0]), x[1:-1], x[-1]
        log_f = np.clip(math.log(cfg.two_pass_std_factor) + log_level + b * lm + w @ feats, lo, hi)
        r = e / np.maximum(sd * np.exp(log_f), 1e-12)
        pooled = [float(np.mean(r <= k)) for k in KS]
        penalty = 0.0
        for i in range(len(conds)):
            ri = r[cid == i]
            penalty += goal_violation([float(np.mean(ri <= 1.0)), float(np.mean(ri <= 2.0))])
        return gap(pooled) + 10.0 * penalty

    x = np.array([shape["exponent"] or 0.0, *shape["w"], math.log(level)])
    nw = len(shape["w"])
    steps0 = np.array([0.05, *([0.1] * nw), 0.05])
    steps = steps0.copy()
    best = objective(x)
    start, evaluations, limit = best, 1, 600 if nw == 3 else 800
    while evaluations < limit and steps[0] > steps0[0] / 64:
        improved = False
        for i in range(len(x)):
            for sign in (1.0, -1.0):
                trial = x.copy()
                trial[i] += sign * steps[i]
                trial[0] = max(0.0, trial[0])
                value = objective(trial)
                evaluations += 1
                if value < best:
                    x, best, improved = trial, value, True
                    break
            if improved:
                break
        if not improved:
            steps /= 2.0
    new_shape = {**shape, "exponent": float(x[0]), "w": [float(v) for v in x[1:-1]]}
    return new_shape, float(math.exp(x[-1])), {"objective_start": start, "objective_end": best,
                                              "evaluations": evaluations}


def shipped_shape(shipped: Any) -> tuple[Any, dict[str, Any]]:
    """A per-pixel ``LocalRefinementConfig`` as (the config whose per-frame base and exponent are the
    setting's, the shape :func:`factors` reads)."""
    from scene_perception.pipelines.view_agreement import pixel_setting

    base, exponent, w, c = pixel_setting(shipped)
    cfg = dataclasses.replace(shipped, two_pass_std_factor=base, two_pass_std_exponent=exponent)
    return cfg, {"w": list(w), "centre": list(c), "exponent": exponent}


def fit(frames: list[dict[str, Any]], cfg: Any, free_exponent: bool = False, search: bool = False,
        today_setting: Any = None, gap_margin: float = -0.01) -> dict[str, Any]:
    """Steps 1-3 of the rule against ``cfg`` (the per-frame baseline the fit starts from); the checks
    compare with ``today_setting`` (a per-pixel config: rule_pixel6.md) or, when None, with ``cfg``.  Check
    b: the pooled gap at most today's + ``gap_margin`` (-0.01: 0.01 below today's, rule_pixel4-6.md; +0.01:
    at most 0.01 above, rule_pixel7.md)."""
    shape = fit_shape(frames, cfg, free_exponent)
    conds = list(dict.fromkeys(fr["condition"] for fr in frames))
    if today_setting is None:
        today_fac = factors(frames, cfg, None, 1.0)
    else:
        today_fac = factors(frames, *shipped_shape(today_setting), 1.0)
    today = {"level": None, **coverage_rows(frames, today_fac)}
    rows = [{"level": lv, **coverage_rows(frames, factors(frames, cfg, shape, lv))} for lv in LEVEL_GRID]
    pool = [r for r in rows if all(r[c]["meets_goals"] for c in conds)]
    candidates = pool or rows
    lowest = min(r["pooled"]["gap"] for r in candidates)
    best = min((r for r in candidates if r["pooled"]["gap"] <= lowest + 0.005),
               key=lambda r: (abs(r["level"] - 1.0), r["pooled"]["gap"]))
    search_trace = None
    if search:
        shape["nll_solution"] = {"exponent": shape["exponent"], "w": shape["w"], "level": best["level"]}
        shape, level, search_trace = coverage_search(frames, cfg, shape, best["level"])
        best = {"level": round(level, 6), **coverage_rows(frames, factors(frames, cfg, shape, level))}
        pool = [best] if all(best[c]["meets_goals"] for c in conds) else []
    today["ause"] = pooled_ause(frames, today_fac)
    best["ause"] = pooled_ause(frames, factors(frames, cfg, shape, best["level"]))
    checks = {"a_goals_every_condition": bool(pool) and best in pool,
              "b_gap_vs_today": best["pooled"]["gap"] <= today["pooled"]["gap"] + gap_margin,
              "c_ause_not_worse": best["ause"] <= today["ause"]}
    w, c = shape["w"], shape["centre"]
    exponent = cfg.two_pass_std_exponent if shape["exponent"] is None else shape["exponent"]
    base = round(cfg.two_pass_std_factor * best["level"], 6)
    numbers = [round(v, 6) for v in (*w, *c)]
    if len(w) >= 5:  # the 12/14-number forms carry their own base and exponent (rule_pixel4.md)
        numbers = [base, round(exponent, 6), *numbers]
    setting = {"two_pass_std_factor": base, "two_pass_std_exponent": round(exponent, 6),
               "two_pass_std_pixel": numbers}
    return {"conditions": conds, "frames": len(frames), "shape": shape, "today": today, "chosen": best,
            "search": search_trace,
            "pool_size": len(pool), "checks": checks, "ship": all(checks.values()), "setting": setting,
            "grid": [{"level": r["level"], "gap": r["pooled"]["gap"],
                      **{k: r[k]["coverage"] for k in conds}} for r in rows]}


def check_through_pipeline(args: argparse.Namespace, pipe: Any, cfg: Any, frames: list[dict[str, Any]],
                           result: dict[str, Any]) -> dict[str, Any]:
    """Rule: the chosen setting run by the pipeline itself on the same frames; coverage within 0.5 point."""
    chosen = dataclasses.replace(cfg, two_pass_std_factor=result["setting"]["two_pass_std_factor"],
                                 two_pass_std_exponent=result["setting"]["two_pass_std_exponent"],
                                 two_pass_std_pixel=tuple(result["setting"]["two_pass_std_pixel"]))
    return pipeline_coverage(args, pipe, chosen, frames, result["chosen"]["pooled"]["coverage"])


def markdown(res: dict[str, Any]) -> str:
    f = res["fit"]
    conds = f["conditions"]
    sh = f["shape"]
    lines = [f"frames: {f['frames']} ({res['split']}: {', '.join(conds)}), {res['seconds']:.0f} s", "",
             f"shape (Laplace NLL over {sh['pixels']} pixels): w = {[round(v, 4) for v in sh['w']]} "
             f"({', '.join(FEATURE_NAMES[:len(sh['w'])])}), centres {[round(v, 4) for v in sh['centre']]}, "
             f"offset {sh['offset']:.4f}, frame exponent {sh['exponent']}; NLL {sh['nll_start']:.4f} -> "
             f"{sh['nll_fitted']:.4f}", "",
             "| setting | " + " | ".join(f"{c}, 1/2/3 std %" for c in conds) + " | pooled | gap | AUSE |",
             "|---|" + "---|" * (len(conds) + 3)]
    for key in ("today", "chosen"):
        r = f[key]
        lines.append(coverage_line(res["today_name"] if key == "today" else f"per pixel, level {r['level']}",
                                   r, conds))
    if f.get("search"):
        t = f["search"]
        lines += ["", f"coverage search from the NLL solution {f['shape']['nll_solution']}: objective "
                  f"{t['objective_start']:.4f} -> {t['objective_end']:.4f} in {t['evaluations']} evaluations"]
    return "\n".join(lines + decision_lines(f, res, "levels"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT

    args = parse_args(argv)
    setup = cpu_pipeline(args)
    pipe = setup.pipeline
    cfg = rule_camera_setting(DEFAULT_LOCAL_REFINEMENT)  # the baseline of every per-pixel rule
    t0 = time.perf_counter()
    frames = cached_collect(args, pipe, cfg, setup.info.sha256)
    res: dict[str, Any] = {"split": args.split, "size": list(args.size), "ranges": args.ranges,
                           "pairs_per_range": args.pairs, "weights": setup.info.sha256,
                           "today": {"two_pass_std_factor": cfg.two_pass_std_factor,
                                     "two_pass_std_reference": cfg.two_pass_std_reference,
                                     "two_pass_std_exponent": cfg.two_pass_std_exponent},
                           "free_frame_exponent": args.free_frame_exponent,
                           "coverage_search": args.coverage_search, "sgbm_features": args.sgbm_features,
                           "today_name": "today (shipped per pixel)" if args.today_shipped
                           else "today (per frame)",
                           "fit": fit(frames, cfg, args.free_frame_exponent, args.coverage_search,
                                      DEFAULT_LOCAL_REFINEMENT if args.today_shipped else None,
                                      0.01 if args.frame_disagreement else -0.01)}
    res["pipeline_check"] = check_through_pipeline(args, pipe, cfg, frames, res["fit"])
    return report(res, args, markdown, t0)


if __name__ == "__main__":
    main()
