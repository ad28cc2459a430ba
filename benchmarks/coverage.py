#!/usr/bin/env python3
"""Stereo accuracy per phenomenon real scenes have: where does the network fail, and what did training buy?

Renders validation-split pairs (seeds 20,000,000+, never trained on) with one phenomenon at a time
(``SceneConfig.<name>_probability``, the camera effects of ``data.augment.CAMERA_EFFECTS``, surfaces below
2 px) and scores each weights file on that phenomenon's own pixels (the pair's region mask, non-occluded,
finite GT): EPE and bad-2 (px), dense (every pixel the network outputs counts).  The sky row's GT is 0
(infinitely far), so its EPE is the disparity the network puts on the sky.  Run it on a model trained with
an addition and on its control (same steps without it) to see what the addition buys, on the validation
split only (selection data, never the test split)::

    python benchmarks/coverage.py                                   # the shipped lite
    python benchmarks/coverage.py --weights models/lite.safetensors runs/thin/lite.safetensors --pairs 40

Each row renders the same seeds; "plain" is those seeds without any phenomenon (all pixels).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from scene_perception.data.augment import AugmentConfig, augment_pair
from scene_perception.data.procedural import SceneConfig, StereoSample, make_stereo_sample
from scene_perception.data.splits import held_out_seeds
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

# Only the camera effects (no gamma/blur/JPEG/...): the row measures vignetting and white balance alone.
_EFFECTS_ONLY = AugmentConfig(asymmetric_colour=0.0, gamma=(1.0, 1.0), saturation=(1.0, 1.0), blur=0.0,
                              jpeg=0.0, y_jitter=0.0, eraser=0.0, vignetting=1.0,
                              white_balance=1.0)


@dataclass(frozen=True)
class Phenomenon:
    """One row: how its pairs are rendered and which pixels it is scored on."""

    name: str
    scene: SceneConfig
    min_disparity: float = 2.0
    camera_effects: bool = False


PHENOMENA = (
    Phenomenon("plain", SceneConfig()),
    Phenomenon("sky", SceneConfig(sky_probability=1.0)),
    Phenomenon("far", SceneConfig(), min_disparity=0.25),  # scored on GT < 2 px
    Phenomenon("thin", SceneConfig(thin_probability=1.0)),
    Phenomenon("textureless", SceneConfig(textureless_probability=0.5)),
    Phenomenon("repetitive", SceneConfig(repetitive_probability=0.5)),
    Phenomenon("dark", SceneConfig(dark_probability=0.5)),
    Phenomenon("specular", SceneConfig(specular_probability=0.5)),
    Phenomenon("camera_effects", SceneConfig(), camera_effects=True),
)


def render(ph: Phenomenon, seed: int, width: int, height: int, max_disparity: float
           ) -> tuple[StereoSample, np.ndarray, np.ndarray, np.ndarray]:
    """(sample, left, right, mask of the scored pixels) for one validation seed."""
    s = make_stereo_sample(seed, width=width, height=height, max_disparity=max_disparity,
                           min_disparity=ph.min_disparity, nuisance=True, scene=ph.scene)
    left, right = s.left, s.right
    if ph.camera_effects:
        left, right = augment_pair(np.random.default_rng(seed), left, right, _EFFECTS_ONLY)
    scored = s.nonoccluded & np.isfinite(s.disparity)
    if ph.name == "far":
        scored &= s.disparity < 2.0
    elif ph.name in s.regions:
        scored &= s.regions[ph.name]
    elif ph.name not in ("plain", "camera_effects"):
        scored &= False  # the phenomenon did not show up in this pair
    return s, left, right, scored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=[None],
                        help="stereo weights files (default: the shipped lite)")
    parser.add_argument("--model", default="lite", help="GC-Net config of the weights")
    parser.add_argument("--pairs", type=int, default=24, help="validation pairs per phenomenon")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--max-disparity", type=float, default=96.0)
    parser.add_argument("--only", nargs="*", default=None, help="phenomena to run (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (torch backend)")
    parser.add_argument("--json", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    phenomena = [p for p in PHENOMENA if not args.only or p.name in args.only]
    seeds = held_out_seeds(args.pairs, "validation")

    pipelines = []
    for weights in args.weights:
        # The network alone: the phenomena are about what the network learned, not the refinement's fixes.
        setup = build_stereo_pipeline(args.model, weights, backend="torch", device=args.device,
                                      local_refinement=None, compute_points=False)
        pipelines.append((str(setup.info.weights_path), setup.pipeline))
    rows = []
    for ph in phenomena:
        errors: list[list[np.ndarray]] = [[] for _ in pipelines]
        for seed in tqdm(seeds, desc=ph.name, unit="pair"):
            s, left, right, scored = render(ph, seed, args.width, args.height, args.max_disparity)
            if not scored.any():
                continue
            for k, (_, pipeline) in enumerate(pipelines):
                result = pipeline(left, right, s.camera)
                errors[k].append(np.abs(result.disparity[scored] - s.disparity[scored]))
        row = {"phenomenon": ph.name, "pixels": int(sum(e.size for e in errors[0])) if errors else 0,
               "models": []}
        for err_list in errors:
            err = np.concatenate(err_list) if err_list else np.zeros(0)
            row["models"].append({"epe": float(err.mean()) if err.size else float("nan"),
                                  "bad2": float(100 * (err > 2).mean()) if err.size else float("nan")})
        rows.append(row)

    names = [Path(w).name if w else "?" for w, _ in pipelines]
    print(f"\nvalidation pairs {seeds[0]}.. x {args.pairs} per row, {args.width}x{args.height}, network "
          f"alone, dense, non-occluded pixels of each phenomenon")
    print("| phenomenon | pixels | " + " | ".join(f"{n} EPE px | {n} bad-2 %" for n in names) + " |")
    print("|---|---|" + "---|---|" * len(names))
    for row in rows:
        cells = " | ".join(f"{m['epe']:.3f} | {m['bad2']:.1f}" for m in row["models"])
        print(f"| {row['phenomenon']} | {row['pixels']} | {cells} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"weights": [w for w, _ in pipelines], "pairs": args.pairs,
                                               "size": [args.height, args.width], "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
