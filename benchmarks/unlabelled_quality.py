"""GT-free score of stereo weights on real pairs without ground truth (issue 22 item 3's real check).

For each ``--weights`` file, the network alone (no local refinement, so the weights are what is compared)
runs on every pair of ``--folder`` (any layout :class:`~scene_perception.data.datasets.folder.StereoFolder`
reads, e.g. the held-out chessboard pairs of ``python -m scene_perception.data.datasets.chessboard ...
--holdout 12,13,14``), and the live-quality measures of ``pipelines/quality.py: assess`` are taken:

* ``photometric_p50``: median SSIM+L1 residual of the right view warped by the disparity, on valid pixels
  not occluded by the disparity's own geometry (lower is better);
* ``lr_consistent``: share of valid pixels the right view's disparity (a second pass on the mirrored pair)
  confirms (higher is better).

They need no GT, so they may judge a self-supervised run on real pairs it never trained on; they do not
replace GT (see ``docs/adaptation.md``: on periodic textures a one-period-off match scores well too).

    python benchmarks/unlabelled_quality.py --folder .cache/real_unlabelled/chessboard_split/heldout \\
        --weights models/lite.safetensors runs/item3_control/control.safetensors \\
        runs/item3_mixed/mixed.safetensors --threads 1 --json /tmp/r.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scene_perception.data.datasets.folder import StereoFolder
from scene_perception.evaluation.benchmarking import write_json
from scene_perception.evaluation.dataset_eval import json_safe
from scene_perception.pipelines.quality import assess_arrays, flipped_pair
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, required=True, help="real pairs without GT (StereoFolder layout)")
    p.add_argument("--weights", type=Path, nargs="+", required=True, help=".safetensors files to compare")
    p.add_argument("--model", default="lite")
    p.add_argument("--max-disparity", type=float, default=None,
                   help="disparity range (px) of the pairs; default the model's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def score(weights: Path, pairs: StereoFolder, args: argparse.Namespace) -> dict[str, Any]:
    """The network alone's GT-free measures on every pair, and their means."""
    setup = build_stereo_pipeline(args.model, weights, compute_points=False, local_refinement=None)
    pipe = setup.pipeline
    if args.max_disparity is not None:
        pipe.max_disparity = args.max_disparity
    frames = []
    for i in range(len(pairs)):
        s = pairs[i]
        r = pipe(s.left, s.right)
        mirrored = pipe(*flipped_pair(s.left, s.right))
        right_d = np.where(mirrored.valid, mirrored.disparity, np.float32(np.nan))[:, ::-1]
        q = assess_arrays(s.left, s.right, r.disparity, r.valid, pipe.device, right_d, want_vertical=False)
        frames.append({"pair": pairs.item_name(i), "photometric_p50": q.photometric_p50,
                       "lr_consistent": q.lr_consistent, "scored_pixels": q.scored_pixels})

    def mean(key: str) -> float:
        vals = [f[key] for f in frames if math.isfinite(f[key])]
        return statistics.fmean(vals) if vals else math.nan

    return {"weights": str(weights), "sha256": setup.info.sha256, "frames": frames,
            "photometric_p50": mean("photometric_p50"), "lr_consistent": mean("lr_consistent")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = StereoFolder(args.folder)
    rows = [score(w, pairs, args) for w in args.weights]
    print(f"# Network alone on {len(pairs)} real pairs without GT in {args.folder} (GT-free measures)\n")
    print("| weights | photometric p50 (lower better) | left-right consistent % | per pair p50 |")
    print("|---|---|---|---|")
    for r in rows:
        per = ", ".join(f"{f['photometric_p50']:.4f}" for f in r["frames"])
        print(f"| {r['weights']} | {r['photometric_p50']:.4f} | {100 * r['lr_consistent']:.1f} | {per} |")
    results = {"folder": str(args.folder), "pairs": len(pairs), "threads": args.threads,
               "command": "python benchmarks/unlabelled_quality.py " + " ".join(argv or sys.argv[1:]),
               "rows": rows}
    if args.json is not None:
        write_json(args.json, json_safe(results), indent=2)
    return results


if __name__ == "__main__":
    main()
