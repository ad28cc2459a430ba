#!/usr/bin/env python3
"""Latency and peak memory of the scene (multi-task) pipeline against the number of MC-dropout samples.

The epistemic outputs need ``mc_samples`` stochastic forward passes; the pipeline runs them as one batch
(the image repeated along the batch axis, each element drawing its own dropout masks).  This measures
what that costs per frame from 0 (deterministic) to 64 samples, on one device, at the shipped model's
input size (``models/scene.json``): p50 / p95 ms, the ratio to one deterministic pass, and peak device
memory on CUDA.  Rows go to ``--json`` after each sample count, so a killed run keeps what it measured.

    python benchmarks/mc_dropout.py --device cuda --json out/mc_dropout.json
    python benchmarks/mc_dropout.py --device cpu --samples 0 2 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from scene_perception.data.procedural import make_stereo_sample
from scene_perception.evaluation.benchmarking import write_json
from scene_perception.pipelines.scene import ScenePipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", nargs="+", type=int, default=[0, 1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--size", default="240x320", help="HxW of the camera image (resized to the model's)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    h, w = (int(v) for v in args.size.split("x"))
    image = make_stereo_sample(11, width=w, height=h).left
    device = torch.device(args.device)
    pipe = ScenePipeline.from_weights(device=str(device))
    cuda = device.type == "cuda"
    rows: list[dict[str, Any]] = []
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(device) if cuda else 'CPU'}; "
          f"scene model input {pipe.input_size}, camera {w}x{h}", flush=True)
    for n in args.samples:
        pipe.mc_samples = n
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup):
            pipe(image)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            pipe(image)  # numpy outputs: the device has finished when it returns
            times.append((time.perf_counter() - start) * 1000.0)
        times.sort()
        row: dict[str, Any] = {
            "mc_samples": n, "device": str(device), "input": list(pipe.input_size or (h, w)),
            "p50_ms": round(statistics.median(times), 3),
            "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 3),
        }
        if cuda:
            row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if rows and rows[0]["mc_samples"] == 0:
            row["ratio_to_deterministic"] = round(row["p50_ms"] / rows[0]["p50_ms"], 2)
        rows.append(row)
        print(f"  mc_samples {n}: p50 {row['p50_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms"
              + (f", peak {row['peak_mem_mb']} MB" if cuda else ""), flush=True)
        if args.json is not None:
            write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
