"""Choose the local photometric refinement's settings on the *validation* synthetic split.

Renders the validation pairs of ``benchmarks/stereo_accuracy.py --split validation`` (seeds 20_000_000+,
never training or test data, never Aloe), runs the network once per pair with the refinement off, then
scores every setting of a small grid on the cached network output, so the grid costs little more than one
benchmark run; settings that differ only in the std handling (``--uncertainty-scale``, ``--correction-std``)
share one refinement run.  With ``--sgbm-candidate 1`` the refinement is offered OpenCV SGBM's disparity over
the network's range, as the pipeline does (SGBM runs once per pair and is cached too; its time is in
ms/pair).  Prints one markdown row per setting (pooled EPE / bad-x over non-occluded pixels,
the same over all pixels with ground truth, AUSE of the disparity std over non-occluded pixels), the share of
pixels each setting changed and the refinement's ms per pair.

    python benchmarks/local_refinement_sweep.py --pairs 200 --json out/bench/local_refinement_sweep.json

``--condition camera`` renders the same pairs as a camera sees them (per-view gain, bias and noise, then
``data/augment.py: VIEW_EFFECTS``; ``data/conditions.py``), so a setting that only works on exact
renders shows it.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from scene_perception.data.conditions import render_condition
from scene_perception.data.splits import held_out_seeds
from scene_perception.evaluation.metrics import disparity_metrics, pool_metrics
from scene_perception.evaluation.uncertainty import ause
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.local_refinement import (
    LocalRefinementConfig,
    refine_disparity_locally,
)
from scene_perception.pipelines.sgbm import SGBMMatcher
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--size", default="256x512", help="HxW, as stereo_accuracy's --synthetic-size")
    p.add_argument("--max-disparity", type=float, default=96.0, help="as stereo_accuracy's default")
    p.add_argument("--radius", type=_ints, default=[1, 2, 3, 4])
    p.add_argument("--window", type=_ints, default=[5, 7, 9])
    p.add_argument("--min-zncc", type=_floats, default=[0.5, 0.7, 0.9])
    p.add_argument("--min-texture", type=_floats, default=[0.005, 0.01, 0.02])
    p.add_argument("--min-x-texture", type=_floats, default=[0.0])
    p.add_argument("--min-x-share", type=_floats, default=[0.0])
    p.add_argument("--min-x-snr", type=_floats, default=[0.0])
    p.add_argument("--min-peak-curvature", type=_floats, default=[0.0])
    p.add_argument("--iterations", type=_ints, default=[1, 2])
    p.add_argument("--propagation", type=_ints, default=[0])
    p.add_argument("--window-shift", type=_ints, default=[0])
    p.add_argument("--fill-border", type=_ints, default=[0], help="0 / 1 (off / on), comma-separated")
    p.add_argument("--uncertainty-scale", type=_floats, default=[1.0])
    p.add_argument("--correction-std", type=_floats, default=[0.0])
    p.add_argument("--sgbm-candidate", type=_ints, default=[0], help="0 / 1 (off / on), comma-separated")
    p.add_argument("--split", choices=("validation", "test"), default="validation",
                   help="test pairs only to report a setting already chosen, never to choose one")
    p.add_argument("--condition", choices=("exact", "camera"), default="exact",
                   help="exact renders, or as a camera sees them (nuisance + VIEW_EFFECTS)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def collect(args: argparse.Namespace, sgbm_candidate: bool) -> tuple[list[tuple], object]:
    """Render the validation pairs in ``args.condition`` and run the network once per pair (refinement off),
    with SGBM's full-width disparity when ``sgbm_candidate``.  Returns (cached pairs, model info)."""
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    setup = build_stereo_pipeline(args.model, args.weights, backend="torch", device="cpu",
                                  compute_points=False, local_refinement=None)
    pipeline, info = setup.pipeline, setup.info
    sgbm = SGBMMatcher(float(pipeline.model.max_disparity)) if sgbm_candidate else None
    cached = []
    for seed in tqdm(held_out_seeds(args.pairs, args.split), desc=f"network ({args.condition})",
                     unit="pair"):
        s = render_condition(seed, w, h, args.max_disparity, args.condition)
        result = pipeline(s.left, s.right)
        mask = s.nonoccluded & np.isfinite(s.disparity)
        candidate, sgbm_seconds = None, 0.0
        if sgbm is not None:
            start = time.perf_counter()
            candidate = torch.from_numpy(sgbm.match_full_width(s.left, s.right))[None, None]
            sgbm_seconds = time.perf_counter() - start
        cached.append((image_to_tensor(s.left), image_to_tensor(s.right), result.disparity,
                       result.disparity_std, s.disparity, mask, np.isfinite(s.disparity), candidate,
                       sgbm_seconds))
    return cached, info


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    cached, info = collect(args, any(args.sgbm_candidate))
    settings: list[LocalRefinementConfig | None] = [None]
    grid = itertools.product(
        args.radius, args.window, args.min_zncc, args.min_texture, args.min_x_texture, args.min_x_share,
        args.min_x_snr, args.min_peak_curvature, args.iterations, args.propagation, args.window_shift,
        args.fill_border, args.uncertainty_scale, args.correction_std, args.sgbm_candidate)
    for r, win, z, t, xt, xs, snr, pk, it, prop, shift, fill, us, cs, sg in grid:
        settings.append(LocalRefinementConfig(
            radius=r, window=win, min_zncc=z, min_texture=t, min_x_texture=xt, min_x_share=xs, min_x_snr=snr,
            min_peak_curvature=pk, iterations=it,
            propagation=prop, window_shift=shift, fill_border=bool(fill), uncertainty_scale=us,
            correction_std=cs, sgbm_candidate=bool(sg)))
    h, w = (int(v) for v in args.size.split("x"))
    print(f"# Local refinement sweep: {info.name} ({info.sha256 and info.sha256[:12]}), {len(cached)} "
          f"{args.split} pairs {w}x{h} ({args.condition}), pooled; non-occluded pixels (as the goals), and "
          "all pixels with GT (occluded too, as Aloe is scored)\n")
    rows = score(cached, settings)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"weights_sha256": info.sha256, "pairs": len(cached),
                                         "condition": args.condition, "rows": rows}, indent=1))
    return rows


def score(cached: list[tuple], settings: list[LocalRefinementConfig | None]) -> list[dict]:
    """Each setting (None = the network alone) on the cached pairs: prints a markdown row per setting,
    returns the rows (pooled metrics, AUSE, share changed, ms per pair)."""
    rows = []
    print("| radius | window | min ZNCC | min texture | min x texture | min x share | min x SNR "
          "| min peak curvature | iterations "
          "| propagation | window shift | fill border | uncertainty scale | correction std "
          "| SGBM candidate | EPE px | bad-1 % | bad-2 % | bad-3 % | all: EPE px | all: bad-2 % | AUSE"
          " | changed % | ms/pair |")
    print("|" + "---|" * 24)
    # Settings that differ only in how the std is treated give the same disparities: refine once per the rest.
    refined_by: dict[LocalRefinementConfig, list[tuple[np.ndarray, np.ndarray, float]]] = {}
    for cfg in settings:
        per, per_all, errors, stds, changed, total, seconds = [], [], [], [], 0, 0, 0.0
        key = None if cfg is None else dataclasses.replace(cfg, uncertainty_scale=1.0, correction_std=0.0)
        with torch.inference_mode():
            for i, (left, right, disp, std, gt, mask, mask_all, candidate, sgbm_s) in enumerate(cached):
                pred = disp
                if cfg is not None:
                    runs = refined_by.setdefault(key, [])
                    if len(runs) <= i:
                        start = time.perf_counter()
                        refined, accepted_t = refine_disparity_locally(
                            left, right, torch.from_numpy(disp)[None, None], cfg,
                            candidate if cfg.sgbm_candidate else None)
                        runs.append((refined[0, 0].numpy(), accepted_t[0, 0].numpy(),
                                     time.perf_counter() - start + (sgbm_s if cfg.sgbm_candidate else 0.0)))
                    pred, accepted, run_seconds = runs[i]
                    seconds += run_seconds
                    # As StereoDepthPipeline does with the std of the pixels the refinement changed.
                    std = np.where(accepted, std * cfg.uncertainty_scale, std)
                    std = np.maximum(std, cfg.correction_std * np.nan_to_num(np.abs(pred - disp)))
                    changed += int(accepted.sum())
                total += disp.size
                per.append(disparity_metrics(pred, gt, mask))
                per_all.append(disparity_metrics(pred, gt, mask_all))
                errors.append(np.abs(pred - gt)[mask])
                stds.append(std[mask])
        m, m_all = pool_metrics(per), pool_metrics(per_all)
        sparsification = ause(np.concatenate(errors), np.concatenate(stds))["ause"]
        desc = ("off",) + ("-",) * 14 if cfg is None else (
            cfg.radius, cfg.window, cfg.min_zncc, cfg.min_texture, cfg.min_x_texture, cfg.min_x_share,
            cfg.min_x_snr, cfg.min_peak_curvature, cfg.iterations, cfg.propagation, cfg.window_shift,
            int(cfg.fill_border), cfg.uncertainty_scale, cfg.correction_std, int(cfg.sgbm_candidate))
        ms = 1000.0 * seconds / len(cached)
        setting = None if cfg is None else dataclasses.asdict(cfg)
        rows.append({"setting": setting, **m, "all_pixels": m_all, "ause": sparsification,
                     "changed": 100.0 * changed / total, "ms_per_pair": ms})
        print(f"| {' | '.join(str(v) for v in desc)} | {m['epe']:.3f} | {m['bad1']:.2f} | {m['bad2']:.2f} | "
              f"{m['bad3']:.2f} | {m_all['epe']:.3f} | {m_all['bad2']:.2f} | {sparsification:.4f} | "
              f"{100.0 * changed / total:.1f} | {ms:.0f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
