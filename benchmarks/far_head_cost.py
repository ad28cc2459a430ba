#!/usr/bin/env python3
"""What the far head (``far_probability``) adds to a frame: the default pipeline with the rule off and on.

The two settings run alternately on the same pair (one call each per repeat), so machine drift hits both
alike; the ratio is the number to quote.  Example::

    python benchmarks/far_head_cost.py --sizes 256x512 480x640 --threads 2 --repeats 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from scene_perception.evaluation.benchmarking import parse_size, random_texture_pair
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline
from scene_perception.pipelines.validity_defaults import DEFAULT_FAR_PROBABILITY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(256, 512), (480, 640)])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--far-probability", type=float, default=DEFAULT_FAR_PROBABILITY,
                        help="the setting timed against off (default: the node's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not args.far_probability < 1.0:
        parser.error("--far-probability must be below 1 (1 is the 'off' it is compared with)")
    torch.set_num_threads(args.threads)
    setup = build_stereo_pipeline("lite", device=args.device, compute_points=False)
    if setup.far_head is None:
        parser.error(setup.far_note)
    pipeline = setup.pipeline
    print(f"far head {setup.far_head.weights_path}; device {args.device}, {args.threads} threads, "
          f"{args.repeats} alternating repeats, default pipeline (local refinement on)\n")
    print("| size | off: ms (median) | far_probability "
          f"{args.far_probability:g}: ms (median) | ratio on / off |")
    print("|---|---|---|---|")
    for h, w in args.sizes:
        left, right = random_texture_pair(h, w)
        times: dict[float, list[float]] = {1.0: [], args.far_probability: []}
        for _ in range(2):  # warm-up: oneDNN primitive caches for this size
            pipeline(left, right)
        for _ in range(args.repeats):
            for q in times:
                pipeline.far_probability = q
                t0 = time.perf_counter()
                pipeline(left, right)
                times[q].append((time.perf_counter() - t0) * 1e3)
        off, on = (statistics.median(times[q]) for q in (1.0, args.far_probability))
        print(f"| {h}x{w} | {off:.0f} | {on:.0f} | {on / off:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
