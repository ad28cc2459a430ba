#!/usr/bin/env python3
"""What the validity rules cost against the phantom sky: sky pixels kept vs scene pixels kept.

The lite network puts a finite disparity on the textureless sky (v1-v10 never saw one; v11, trained with
sky, still puts 11 % of it 1-3 px away), so the node publishes a surface there unless a rule rejects it; EPE
cannot see this (no finite GT).  This runs the default pipeline (network + local refinement, as the node
does; ``--no-local-refinement``: the network alone) over synthetic street bags and, optionally, procedural
validation pairs (no sky: the cost side only), and prints for each ``min_texture`` x ``max_uncertainty`` x
``far_sigma`` the share of GT sky pixels still valid and published nearer than ``--near-m``, the share of
non-occluded scene pixels still valid and the scene EPE on what is kept.  Examples::

    python benchmarks/sky_validity.py --seeds 7                       # the demo's street (8 frames)
    python benchmarks/sky_validity.py --seeds 101 102 103 104 --validation-pairs 100 \\
        --min-texture 0 0.001 0.002 0.003 0.004 0.005 --max-uncertainty inf
    python benchmarks/sky_validity.py --seeds 101 102 103 104 --validation-pairs 100 \\
        --max-uncertainty inf --far-sigma 0 0.25 0.5 0.75 1 1.5 2
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from scene_perception.data.bag_io import read_stereo_bag
from scene_perception.data.procedural import make_stereo_sample
from scene_perception.data.splits import held_out_seeds
from scene_perception.data.synth import write_synthetic_bag
from scene_perception.evaluation.stereo_bag_eval import at_infinity
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.local_refinement import window_std
from scene_perception.pipelines.stereo_depth import (
    TEXTURE_WINDOW,
    StereoDepthPipeline,
    StereoDepthResult,
)
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline


@dataclass
class Pixels:
    """Per-pixel values of one data set, concatenated over its frames; a rule keeps a subset."""

    std: list[np.ndarray] = field(default_factory=list)  # disparity std, NaN where already invalid
    texture: list[np.ndarray] = field(default_factory=list)
    error: list[np.ndarray] = field(default_factory=list)  # |d - gt| (scene pixels only)
    published: list[np.ndarray] = field(default_factory=list)  # disparity + doffs as published (sky only)
    disparity: list[np.ndarray] = field(default_factory=list)  # as the pipeline returned it
    floor: list[np.ndarray] = field(default_factory=list)  # the disparity floor in effect (px)
    # far_probability -> still valid with the far head at that threshold (the pipeline's own verdict)
    far_valid: dict[float, list[np.ndarray]] = field(default_factory=dict)

    def add(
        self, mask: np.ndarray, result: StereoDepthResult, texture: np.ndarray, gt: np.ndarray | None
    ) -> None:
        self.std.append(np.where(result.valid[mask], result.disparity_std[mask], np.nan))
        self.texture.append(texture[mask])
        self.disparity.append(result.disparity[mask])
        self.floor.append(np.full(int(mask.sum()), result.min_disparity, np.float32))
        if gt is not None:
            self.error.append(np.abs(result.disparity[mask] - gt[mask]))

    def kept(self, min_texture: float, max_uncertainty: float, far_sigma: float = 0.0,
             far_probability: float = 1.0) -> np.ndarray:
        """The pixels still valid under the four rules, applied as the pipeline applies them."""
        std, tex = np.concatenate(self.std), np.concatenate(self.texture)
        keep = (std <= max_uncertainty) & (tex >= min_texture)  # NaN std compares False: stays invalid
        if far_sigma > 0:  # StereoDepthPipeline(far_sigma=...): d - K std > floor
            keep &= np.concatenate(self.disparity) - far_sigma * std > np.concatenate(self.floor)
        if far_probability < 1.0:
            keep &= np.concatenate(self.far_valid[far_probability])
        return keep

    def nearer_than(self, disparity: float) -> np.ndarray:
        """Pixels published with a disparity above ``disparity`` (a surface nearer than its depth)."""
        return np.concatenate(self.published) > disparity


def texture_of(image: np.ndarray) -> np.ndarray:
    return window_std(image_to_tensor(image), TEXTURE_WINDOW)[0, 0].numpy()


def add_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` plus independent Gaussian sensor noise of ``std`` grey levels (0: the image itself)."""
    if std <= 0:
        return image
    return np.clip(image + rng.normal(0.0, std, image.shape), 0, 255).round().astype(np.uint8)


def run_pair(pipeline: StereoDepthPipeline, left: np.ndarray, right: np.ndarray, camera: object,
             far_probabilities: list[float], masks: list[tuple[Pixels, np.ndarray]]
             ) -> StereoDepthResult:
    """The pipeline's result with the far head off, and for each ``far_probabilities`` threshold below 1
    the pixels it still publishes (the run repeated at that threshold), added to each (data, mask)."""
    pipeline.far_probability = 1.0
    result = pipeline(left, right, camera)
    for q in far_probabilities:
        if q >= 1.0:
            continue
        pipeline.far_probability = q
        valid = pipeline(left, right, camera).valid
        for data, mask in masks:
            data.far_valid.setdefault(q, []).append(valid[mask])
    pipeline.far_probability = 1.0
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=None, help="stereo weights (default: the shipped lite)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[7], help="street world seeds (7 = the demo)")
    parser.add_argument("--frames", type=int, default=8, help="frames per street bag")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--validation-pairs", type=int, default=0,
                        help="also score this many procedural validation pairs (seeds 20,000,000+)")
    parser.add_argument("--min-texture", nargs="+", type=float, default=[0.0])
    parser.add_argument("--max-uncertainty", nargs="+", type=float,
                        default=[0.5, 1.0, 1.5, 2.0, float("inf")])
    parser.add_argument("--far-sigma", nargs="+", type=float, default=[0.0],
                        help="the pipeline's far_sigma rule: invalid where d - K std <= the disparity floor")
    parser.add_argument("--far-probability", nargs="+", type=float, default=[1.0],
                        help="the pipeline's far_probability rule (needs a far head; 1 = off)")
    parser.add_argument("--far-head", default=None,
                        help="far head weights (default: <weights name>_far on the model search path)")
    parser.add_argument("--noise-std", type=float, default=0.0,
                        help="add independent Gaussian noise of this std (grey levels) to every view")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--near-m", type=float, default=100.0,
                        help="count sky published nearer than this (m) as a phantom surface")
    parser.add_argument("--no-local-refinement", action="store_true",
                        help="the network alone (no local refinement, no SGBM candidate): which part "
                        "puts the phantom sky there")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    # The rules below are applied here, on the raw values.
    options = {"local_refinement": None} if args.no_local_refinement else {}
    setup = build_stereo_pipeline("lite", args.weights, backend="torch", device="cpu", compute_points=False,
                                  far_head_weights=args.far_head, **options)
    pipeline, info = setup.pipeline, setup.info
    if any(q < 1.0 for q in args.far_probability) and setup.far_head is None:
        parser.error(setup.far_note)
    rng = np.random.default_rng(0)
    sky, street, validation = Pixels(), Pixels(), Pixels()
    focal_baseline = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            bag = write_synthetic_bag(Path(tmp) / f"bag{seed}", args.frames, width=args.width,
                                      height=args.height, seed=seed, storage="sqlite3")
            for frame in tqdm(list(read_stereo_bag(bag)), desc=f"street seed {seed}", unit="frame"):
                left = add_noise(frame.left, args.noise_std, rng)
                right = add_noise(frame.right, args.noise_std, rng)
                gt = frame.gt["disparity"]
                doffs = np.float32(frame.camera.doffs)
                far = at_infinity(gt, doffs)
                scene = frame.gt["nonoccluded"] & np.isfinite(gt) & (gt > 0)
                result = run_pair(pipeline, left, right, frame.camera, args.far_probability,
                                  [(sky, far), (street, scene)])
                texture = texture_of(left)
                sky.add(far, result, texture, None)
                sky.published.append(result.disparity[far] + doffs)
                street.add(scene, result, texture, gt)
                focal_baseline = frame.camera.focal_baseline
    for seed in tqdm(held_out_seeds(args.validation_pairs, "validation"), desc="validation", unit="pair"):
        s = make_stereo_sample(seed, width=args.width, height=args.height)
        left, right = add_noise(s.left, args.noise_std, rng), add_noise(s.right, args.noise_std, rng)
        scene = s.nonoccluded & np.isfinite(s.disparity) & (s.disparity > 0)
        result = run_pair(pipeline, left, right, None, args.far_probability, [(validation, scene)])
        validation.add(scene, result, texture_of(left), s.disparity)

    print(f"\nweights {info.weights_path} (sha256 {(info.sha256 or '?')[:12]}); street seeds {args.seeds} "
          f"({args.frames} frames {args.width}x{args.height} each), {args.validation_pairs} validation "
          f"pairs; min_texture over a {TEXTURE_WINDOW}x{TEXTURE_WINDOW} window; noise std "
          f"{args.noise_std:g}; far head {setup.far_head.weights_path if setup.far_head else 'none'}")
    # The disparity the node publishes on the sky: the pipeline's valid pixels (no extra rule).
    published = np.concatenate(sky.published)[sky.kept(0.0, float("inf"))] if sky.published else np.zeros(0)
    if published.size:
        p50, p10, p90 = np.percentile(published, [50, 10, 90])
        fb = focal_baseline
        print(f"published sky disparity (no rule): median {p50:.1f} px (a surface at {fb / p50:.1f} m), "
              f"10-90 % {p10:.1f}-{p90:.1f} px ({fb / p90:.1f}-{fb / p10:.1f} m)")
    # A sky pixel published with d > f*B / near_m is a phantom surface nearer than near_m (issue 22 item 4:
    # "< 5 % of sky pixels published nearer than 100 m"); "still valid" alone cannot fall while d > 0.
    near_d = focal_baseline / args.near_m
    print(f"\nsky nearer than {args.near_m:g} m: published disparity > {near_d:.3f} px")
    print(f"\n| min_texture | max_uncertainty px | far_sigma | far_probability | sky still valid % "
          f"| sky nearer than {args.near_m:g} m % | street scene still valid % | street EPE kept "
          "| validation scene still valid % | validation EPE kept |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t, u, k, q in itertools.product(args.min_texture, args.max_uncertainty, args.far_sigma,
                                        args.far_probability):
        cells = []
        if sky.std:
            kept = sky.kept(t, u, k, q)
            cells.append(f"{100 * kept.mean():.1f}")
            cells.append(f"{100 * (kept & sky.nearer_than(near_d)).mean():.1f}")
        else:
            cells += ["-", "-"]
        for data in (street, validation):
            if not data.std:
                cells += ["-", "-"]
                continue
            keep = data.kept(t, u, k, q)
            err = np.concatenate(data.error)
            cells += [f"{100 * keep.mean():.1f}", f"{err[keep].mean():.3f}" if keep.any() else "nan"]
        print(f"| {t:g} | {u:g} | {k:g} | {q:g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
