#!/usr/bin/env python3
"""Fit a per-pixel two-pass std factor from GT-free matching features (issue 25), on validation pairs.

Why: one factor per frame (``two_pass_adaptive.py``) cannot tell a pixel the second refinement matched well
from one it did not; real pairs refined twice stay over-confident while their frame measure reads clean.
This applies ``benchmarks/results/2026-12-06_cpu/two_pass_adaptive/rule_pixel.md`` (written before it ran):
per pixel, ``log f = log base + b log(m / m_ref) + w . (features - medians)`` over the features of
``pipelines/view_agreement.py: pixel_features`` (1 - ZNCC at the refined disparity, texture, the second pass's
correction), the shape fitted by Laplace NLL, the level by the coverage goals, clipped to [0.5, 8].

    python benchmarks/two_pass_pixel.py --json out/two_pass_pixel.json
    python benchmarks/two_pass_pixel.py --quick      # smoke run: tiny pairs
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from two_pass_adaptive import CONDITIONS, KS, gap, meets_goals, render  # noqa: E402

from scene_perception.evaluation.benchmarking import parse_size  # noqa: E402
from scene_perception.evaluation.uncertainty import ause  # noqa: E402

#: The rule's constants (rule_pixel.md).
LEVEL_GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(51))
STRIDE = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--split", default="validation", choices=("validation", "test"))
    p.add_argument("--pairs", type=int, default=30, help="pairs per range")
    p.add_argument("--ranges", default="192,256")
    p.add_argument("--size", type=parse_size, default=(256, 512), help="HxW of the rendered pairs")
    p.add_argument("--conditions", default="exact,nuisance,camera")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 pairs at 96x192, range 160")
    args = p.parse_args(argv)
    args.ranges = [float(v) for v in str(args.ranges).split(",") if v.strip()]
    args.conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if set(args.conditions) - set(CONDITIONS):
        p.error(f"--conditions must name some of {CONDITIONS}")
    if args.quick:
        args.pairs, args.size, args.ranges = 2, (96, 192), [160.0]
    return args


def collect(args: argparse.Namespace, pipe: Any, base: Any) -> list[dict[str, Any]]:
    """Per frame (non-occluded pixels): |error|, the std at factor 1, the three features, the frame
    measure; the features are those the pipeline computes (its own call, captured)."""
    from scene_perception.data.splits import held_out_seeds
    from scene_perception.pipelines import view_agreement

    h, w = args.size
    seeds = held_out_seeds(args.pairs * len(args.ranges), args.split)
    # Per-pixel path with all weights 0, base 1 and exponent 0: log f = 0, the std is left at factor 1.
    pipe.local_refinement = dataclasses.replace(base, two_pass_std_factor=1.0, two_pass_std_measure="zncc",
                                                two_pass_std_exponent=0.0, two_pass_std_pixel=(0.0,) * 6)
    original = view_agreement.two_pass_log_factor
    seen: dict[str, Any] = {}

    def spy(cfg: Any, left: Any, right: Any, disparity: Any, before: Any) -> Any:
        score, _, var_l = view_agreement.zncc_map(left, right, disparity, cfg)
        seen["features"] = view_agreement.pixel_features(score, var_l, disparity, before).cpu().numpy()
        return original(cfg, left, right, disparity, before)

    view_agreement.two_pass_log_factor = spy
    frames = []
    try:
        for condition in args.conditions:
            for j, rng in enumerate(args.ranges):
                pipe.max_disparity = rng
                for seed in seeds[j * args.pairs:(j + 1) * args.pairs]:
                    s = render(seed, w, h, rng, condition)
                    seen.clear()
                    r = pipe(s.left, s.right)
                    if "features" not in seen or r.scale >= 1.0 or r.two_pass_factor != 1.0:
                        raise RuntimeError("the pipeline did not refine twice with factor 1")
                    mask = s.nonoccluded & np.isfinite(s.disparity)
                    frames.append({
                        "seed": seed, "range": rng, "condition": condition, "measure": r.two_pass_measure,
                        "error": np.abs(r.disparity - s.disparity)[mask].astype(np.float32),
                        "std": r.disparity_std[mask].astype(np.float32),
                        "features": seen["features"][:, mask].astype(np.float32)})
    finally:
        view_agreement.two_pass_log_factor = original
        pipe.max_disparity = None
    return frames


def frame_log_factor(frames: list[dict[str, Any]], cfg: Any) -> np.ndarray:
    """Per frame, today's per-frame part ``log base + b log(m / m_ref)`` (no clip)."""
    out = []
    for fr in frames:
        m = fr["measure"]
        v = math.log(cfg.two_pass_std_factor)
        if cfg.two_pass_std_exponent and math.isfinite(m) and m > 0:
            v += cfg.two_pass_std_exponent * math.log(m / cfg.two_pass_std_reference)
        out.append(v)
    return np.array(out)


def fit_shape(frames: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """Step 1: ``w`` and a free offset by the mean Laplace NLL over every ``STRIDE``-th pixel (L-BFGS)."""
    import torch

    frame_part = frame_log_factor(frames, cfg)
    e = np.concatenate([fr["error"][::STRIDE] for fr in frames]).astype(np.float64)
    s = np.concatenate([fr["std"][::STRIDE] for fr in frames]).astype(np.float64)
    feats = np.concatenate([fr["features"][:, ::STRIDE] for fr in frames], axis=1).astype(np.float64)
    fp = np.concatenate([np.full(fr["error"][::STRIDE].size, v) for fr, v in zip(frames, frame_part,
                                                                                 strict=True)])
    centre = np.median(feats, axis=1)
    x = torch.from_numpy(feats - centre[:, None])
    log_s0 = torch.from_numpy(np.log(np.maximum(s, 1e-9)) + fp)
    err = torch.from_numpy(e)
    theta = torch.zeros(4, dtype=torch.float64, requires_grad=True)  # offset, w1, w2, w3
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
    return {"offset": float(theta[0]), "w": [float(v) for v in theta[1:]], "centre": centre.tolist(),
            "nll_today": zero, "nll_fitted": final, "pixels": int(e.size)}


def factors(frames: list[dict[str, Any]], cfg: Any, shape: dict[str, Any] | None, level: float) -> list:
    """Per frame, the factor of every pixel: today's per-frame form (``shape`` None) or the per-pixel one."""
    from scene_perception.pipelines.view_agreement import TWO_PASS_PIXEL_RANGE, two_pass_factor

    out = []
    fparts = frame_log_factor(frames, cfg)
    lo, hi = (math.log(v) for v in TWO_PASS_PIXEL_RANGE)
    for fr, fpart in zip(frames, fparts, strict=True):
        if shape is None:
            f = two_pass_factor(fr["measure"], cfg.two_pass_std_factor, cfg.two_pass_std_reference,
                                cfg.two_pass_std_exponent)
            out.append(np.full(fr["error"].size, f, np.float32))
            continue
        w, c = np.array(shape["w"]), np.array(shape["centre"])
        log_f = fpart + math.log(level) + w @ (fr["features"] - c[:, None])
        out.append(np.exp(np.clip(log_f, lo, hi)).astype(np.float32))
    return out


def coverage_rows(frames: list[dict[str, Any]], fac: list[np.ndarray]) -> dict[str, Any]:
    ratio = [fr["error"] / np.maximum(fr["std"] * f, 1e-12) for fr, f in zip(frames, fac, strict=True)]
    cond = [fr["condition"] for fr in frames]
    rows: dict[str, Any] = {}
    for key in ("pooled", *dict.fromkeys(cond)):
        r = np.concatenate([x for x, c in zip(ratio, cond, strict=True) if key in ("pooled", c)])
        cov = [float(np.mean(r <= k)) for k in KS]
        rows[key] = {"coverage": cov, "gap": gap(cov), "meets_goals": meets_goals(cov)}
    return rows


def pooled_ause(frames: list[dict[str, Any]], fac: list[np.ndarray]) -> float:
    e = np.concatenate([fr["error"] for fr in frames]).astype(np.float64)
    s = np.concatenate([fr["std"] * f for fr, f in zip(frames, fac, strict=True)]).astype(np.float64)
    return float(ause(e, s)["ause"])


def fit(frames: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """Steps 1-3 of the rule against ``cfg`` (today's per-frame setting)."""
    shape = fit_shape(frames, cfg)
    conds = list(dict.fromkeys(fr["condition"] for fr in frames))
    today = {"level": None, **coverage_rows(frames, factors(frames, cfg, None, 1.0))}
    rows = [{"level": lv, **coverage_rows(frames, factors(frames, cfg, shape, lv))} for lv in LEVEL_GRID]
    pool = [r for r in rows if all(r[c]["meets_goals"] for c in conds)]
    candidates = pool or rows
    lowest = min(r["pooled"]["gap"] for r in candidates)
    best = min((r for r in candidates if r["pooled"]["gap"] <= lowest + 0.005),
               key=lambda r: (abs(r["level"] - 1.0), r["pooled"]["gap"]))
    today["ause"] = pooled_ause(frames, factors(frames, cfg, None, 1.0))
    best["ause"] = pooled_ause(frames, factors(frames, cfg, shape, best["level"]))
    checks = {"a_goals_every_condition": bool(pool) and best in pool,
              "b_gap_below_today": best["pooled"]["gap"] <= today["pooled"]["gap"] - 0.01,
              "c_ause_not_worse": best["ause"] <= today["ause"]}
    w, c = shape["w"], shape["centre"]
    setting = {"two_pass_std_factor": round(cfg.two_pass_std_factor * best["level"], 6),
               "two_pass_std_pixel": [round(v, 6) for v in (*w, *c)]}
    return {"conditions": conds, "frames": len(frames), "shape": shape, "today": today, "chosen": best,
            "pool_size": len(pool), "checks": checks, "ship": all(checks.values()), "setting": setting,
            "grid": [{"level": r["level"], "gap": r["pooled"]["gap"],
                      **{k: r[k]["coverage"] for k in conds}} for r in rows]}


def check_through_pipeline(args: argparse.Namespace, pipe: Any, cfg: Any, frames: list[dict[str, Any]],
                           result: dict[str, Any]) -> dict[str, Any]:
    """Rule: the chosen setting run by the pipeline itself on the same frames; coverage within 0.5 point."""
    chosen = dataclasses.replace(cfg, two_pass_std_factor=result["setting"]["two_pass_std_factor"],
                                 two_pass_std_pixel=tuple(result["setting"]["two_pass_std_pixel"]))
    pipe.local_refinement = chosen
    h, w = args.size
    ratios = []
    for fr in frames:
        pipe.max_disparity = fr["range"]
        s = render(fr["seed"], w, h, fr["range"], fr["condition"])
        r = pipe(s.left, s.right)
        mask = s.nonoccluded & np.isfinite(s.disparity)
        ratios.append(np.abs(r.disparity - s.disparity)[mask] / np.maximum(r.disparity_std[mask], 1e-12))
    pipe.max_disparity = None
    ratio = np.concatenate(ratios)
    cov = [float(np.mean(ratio <= k)) for k in KS]
    want = result["chosen"]["pooled"]["coverage"]
    diff = max(abs(a - b) for a, b in zip(cov, want, strict=True))
    return {"coverage": cov, "numpy_coverage": want, "max_diff": diff, "holds": diff <= 0.005}


def markdown(res: dict[str, Any]) -> str:
    def pct(c: list[float]) -> str:
        return " / ".join(f"{100 * v:.1f}" for v in c)

    f = res["fit"]
    conds = f["conditions"]
    sh = f["shape"]
    lines = [f"frames: {f['frames']} ({res['split']}: {', '.join(conds)}), {res['seconds']:.0f} s", "",
             f"shape (Laplace NLL over {sh['pixels']} pixels): w = {[round(v, 4) for v in sh['w']]} "
             f"(1 - ZNCC, texture, correction), centres {[round(v, 4) for v in sh['centre']]}, offset "
             f"{sh['offset']:.4f}; NLL {sh['nll_today']:.4f} -> {sh['nll_fitted']:.4f}", "",
             "| setting | " + " | ".join(f"{c}, 1/2/3 std %" for c in conds) + " | pooled | gap | AUSE |",
             "|---|" + "---|" * (len(conds) + 3)]
    for key in ("today", "chosen"):
        r = f[key]
        name = "today (per frame)" if key == "today" else f"per pixel, level {r['level']}"
        lines.append(f"| {name} | " + " | ".join(pct(r[c]["coverage"]) for c in conds)
                     + f" | {pct(r['pooled']['coverage'])} | {r['pooled']['gap']:.3f} | {r['ause']:.4f} |")
    lines += ["", f"pool meeting the goals in every condition: {f['pool_size']} levels",
              f"checks: {f['checks']}", f"ship: {f['ship']}", f"setting: {f['setting']}"]
    if "pipeline_check" in res:
        c = res["pipeline_check"]
        lines.append(f"through the pipeline: {pct(c['coverage'])} vs numpy {pct(c['numpy_coverage'])} "
                     f"(max diff {100 * c['max_diff']:.2f} points, holds: {c['holds']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT
    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    setup = build_stereo_pipeline(args.model, args.weights, backend="torch", device="cpu",
                                  compute_points=False)
    pipe = setup.pipeline
    cfg = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, two_pass_std_pixel=())  # today: per frame
    t0 = time.perf_counter()
    frames = collect(args, pipe, cfg)
    res: dict[str, Any] = {"split": args.split, "size": list(args.size), "ranges": args.ranges,
                           "pairs_per_range": args.pairs, "weights": setup.info.sha256,
                           "today": {"two_pass_std_factor": cfg.two_pass_std_factor,
                                     "two_pass_std_reference": cfg.two_pass_std_reference,
                                     "two_pass_std_exponent": cfg.two_pass_std_exponent},
                           "fit": fit(frames, cfg)}
    res["pipeline_check"] = check_through_pipeline(args, pipe, cfg, frames, res["fit"])
    res["seconds"] = time.perf_counter() - t0
    print(markdown(res))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
