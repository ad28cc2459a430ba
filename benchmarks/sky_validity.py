#!/usr/bin/env python3
"""What ``max_uncertainty`` costs against the phantom sky: sky pixels kept vs scene pixels kept.

The lite network puts a finite disparity on the textureless sky (it never learned "infinitely far"), so the
node publishes a surface there unless a rule rejects it; EPE cannot see this (no finite GT).  This runs the
default pipeline (network + local refinement, as the node does) over a synthetic street bag and prints, for
each std threshold, the share of GT sky pixels still valid and the share of non-occluded scene pixels still
valid, plus the scene's EPE on what is kept.  Example (the demo's bag)::

    python benchmarks/sky_validity.py --frames 8 --seed 7 --thresholds 0.5 1 1.5 2 inf
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scene_perception.data.bag_io import read_stereo_bag  # noqa: E402
from scene_perception.data.synth import write_synthetic_bag  # noqa: E402
from scene_perception.models.weights import load_stereo_model  # noqa: E402
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=None, help="stereo weights (default: the shipped lite)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7, help="world seed (7 = the demo's street)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.5, 1.0, 1.5, 2.0, float("inf")])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, info = load_stereo_model("lite", args.weights)
    pipeline = StereoDepthPipeline(model, compute_points=False)
    sky_std, scene_std, scene_err, sky_disp = [], [], [], []
    focal_baseline = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        bag = write_synthetic_bag(Path(tmp) / "bag", args.frames, width=args.width, height=args.height,
                                  seed=args.seed, storage="sqlite3")
        for frame in read_stereo_bag(bag):
            result = pipeline(frame.left, frame.right, frame.camera)
            gt = frame.gt["disparity"]
            doffs = np.float32(frame.camera.doffs)
            sky = np.isfinite(gt) & (gt + doffs <= 0)
            scene = frame.gt["nonoccluded"] & np.isfinite(gt) & (gt > 0)
            ok = result.valid  # the node's rules at max_uncertainty = inf; NaN std = rejected anyway
            sky_std.append(np.where(ok[sky], result.disparity_std[sky], np.nan))
            scene_std.append(np.where(ok[scene], result.disparity_std[scene], np.nan))
            scene_err.append(np.abs(result.disparity[scene] - gt[scene]))
            sky_disp.append(result.disparity[sky & ok] + doffs)  # as published (Z = f B / d)
            focal_baseline = frame.camera.focal_baseline
    sky_s, scene_s, err = np.concatenate(sky_std), np.concatenate(scene_std), np.concatenate(scene_err)
    print(f"weights {info.weights_path} (sha256 {(info.sha256 or '?')[:12]}), "
          f"{args.frames} frames {args.width}x{args.height} world seed {args.seed}: "
          f"{sky_s.size} sky px, {scene_s.size} non-occluded scene px\n")
    published = np.concatenate(sky_disp)
    if published.size:
        p50, p10, p90 = np.percentile(published, [50, 10, 90])
        print(f"published sky disparity: median {p50:.1f} px (a surface at {focal_baseline / p50:.1f} m), "
              f"10-90 % {p10:.1f}-{p90:.1f} px ({focal_baseline / p90:.1f}-{focal_baseline / p10:.1f} m)\n")
    print("| max_uncertainty px | sky still valid % | scene still valid % | scene EPE on kept px |")
    print("|---|---|---|---|")
    for t in args.thresholds:
        keep_scene = scene_s <= t
        epe = float(err[keep_scene].mean()) if keep_scene.any() else float("nan")
        print(f"| {t:g} | {100 * (sky_s <= t).mean():.1f} | {100 * keep_scene.mean():.1f} | {epe:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
