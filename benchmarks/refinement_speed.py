#!/usr/bin/env python3
"""The local refinement's CPU time against an earlier revision's, in one process, and whether they agree.

Why: a speed-up of the refinement must not change its output (it is chaotic under rounding: a fused
multiply-add in the ZNCC moved 10 % of a 320x240 frame's pixels by more than 0.01 px), and these shared
machines are too noisy to compare two runs of ``benchmarks/engines.py`` (the same call varied by 30 %).
So this loads ``scene_perception/pipelines/local_refinement.py`` as it was at ``--baseline`` (``git show``)
beside today's, and per size runs both on the same inputs, interleaved call by call: the shipped network's
disparity of a rendered validation pair (through a camera), refined with the default setting and the SGBM
candidate, as the pipeline runs it.  Prints ms median / min of each, the ratio of the medians, and the largest
difference of the refined disparity and the changed mask (0 and "equal" for a bit-identical speed-up).

``--pipeline`` also times the whole default pipeline (``StereoDepthPipeline`` from uint8 pair to outputs)
with each module swapped in (its ``refine_disparity_locally`` and ``zncc_at``, the two the pipeline calls),
and the network alone (refinement off), interleaved: the pipeline / network ratio is what issue 19's CPU
goal compares (144 ms of pipeline for a network of 65-72 ms when it was written).

    python benchmarks/refinement_speed.py --baseline 4c09a18 --sizes 240x320 480x640 --repeats 15
    python benchmarks/refinement_speed.py --baseline 4c09a18 --sizes 240x320 --pipeline
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

import scene_perception.pipelines.stereo_depth as stereo_depth
import scene_perception.pipelines.view_agreement as view_agreement
from scene_perception.data.conditions import render_condition
from scene_perception.data.splits import held_out_seeds
from scene_perception.evaluation.benchmarking import parse_size, write_json
from scene_perception.pipelines import local_refinement
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT
from scene_perception.pipelines.sgbm import SGBMMatcher
from scene_perception.pipelines.stereo_depth import FALLBACK_MAX_DISPARITY
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

REPO = Path(__file__).resolve().parents[1]
MODULE = "scene_perception/pipelines/local_refinement.py"


def baseline_module(rev: str, workdir: Path) -> ModuleType:
    """``local_refinement.py`` at ``rev``, imported under another name (it imports only the config module
    and torch, so today's package serves its imports)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{MODULE}"], check=True,
                            capture_output=True, text=True).stdout
    path = workdir / "local_refinement_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("local_refinement_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(height: int, width: int) -> Any:
    """The one validation render (through a camera) both measurements use at this size."""
    seed = held_out_seeds(1, "validation")[0]
    return render_condition(seed, width, height, min(0.25 * width, 96.0), "camera")


def inputs(sample: Any, network: Any) -> tuple[torch.Tensor, ...]:
    """Left, right, the shipped network's disparity (``network``: the pipeline without refinement) and the
    SGBM candidate for ``sample``."""
    start = network(sample.left, sample.right).disparity
    candidate = SGBMMatcher(FALLBACK_MAX_DISPARITY).match_full_width(sample.left, sample.right)
    start_t = torch.from_numpy(np.ascontiguousarray(start))[None, None]
    candidate_t = torch.from_numpy(candidate)[None, None]
    return image_to_tensor(sample.left), image_to_tensor(sample.right), start_t, candidate_t


def interleaved(calls: dict[str, Callable[[], Any]], repeats: int
                ) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """ms of each call per repeat, one call of each in turn (after one warm-up round), so drift on a shared
    machine hits all alike; returns the times and each call's last result."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    outputs: dict[str, Any] = {}
    for i in range(repeats + 1):
        for name, call in calls.items():
            start = time.perf_counter()
            outputs[name] = call()
            if i:
                times[name].append((time.perf_counter() - start) * 1000.0)
    return times, outputs


def compare(modules: dict[str, ModuleType], args_: tuple[torch.Tensor, ...], repeats: int) -> dict[str, Any]:
    """Interleaved timing of each module's refinement on the same inputs, and the outputs' difference."""
    left, right, start_disparity, candidate = args_
    calls = {name: (lambda m=module: m.refine_disparity_locally(left, right, start_disparity,
                                                                DEFAULT_LOCAL_REFINEMENT, candidate))
             for name, module in modules.items()}
    with torch.inference_mode():
        times, outputs = interleaved(calls, repeats)
    (d0, c0), (d1, c1) = outputs.values()
    row: dict[str, Any] = {name: {"median_ms": round(statistics.median(t), 2), "min_ms": round(min(t), 2)}
                           for name, t in times.items()}
    names = list(modules)
    row["ratio"] = round(row[names[1]]["median_ms"] / row[names[0]]["median_ms"], 3)
    row["max_abs_difference_px"] = float(torch.nan_to_num(d0 - d1, nan=0.0).abs().max())
    row["bit_identical"] = bool(torch.equal(d0.nan_to_num(-1e9), d1.nan_to_num(-1e9)) and torch.equal(c0, c1))
    return row


def time_pipelines(modules: dict[str, ModuleType], sample: Any, full: Any, alone: Any, repeats: int
                   ) -> dict[str, Any]:
    """Median ms of the default pipeline ``full`` with each module's refinement, and of ``alone`` (the
    network alone), on ``sample``."""
    saved = stereo_depth.refine_disparity_locally, view_agreement.zncc_at
    calls: dict[str, Callable[[], Any]] = {"network alone": lambda: alone(sample.left, sample.right)}
    for name, module in modules.items():
        def run(module: ModuleType = module) -> None:
            stereo_depth.refine_disparity_locally, view_agreement.zncc_at = (module.refine_disparity_locally,
                                                                            module.zncc_at)
            full(sample.left, sample.right)
        calls[f"pipeline, {name}"] = run
    try:
        times, _ = interleaved(calls, repeats)
    finally:
        stereo_depth.refine_disparity_locally, view_agreement.zncc_at = saved
    medians = {name: round(statistics.median(t), 1) for name, t in times.items()}
    network = medians["network alone"]
    return {"ms_median": medians,
            "pipeline_over_network": {name: round(ms / network, 3) for name, ms in medians.items()
                                      if name != "network alone"}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="git revision whose refinement is the baseline")
    p.add_argument("--sizes", nargs="+", default=["240x320", "480x640"], help="HxW")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pipeline", action="store_true", help="also time the whole pipeline with each module")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    full = build_stereo_pipeline("lite", compute_points=False).pipeline
    alone = build_stereo_pipeline("lite", local_refinement=None, compute_points=False).pipeline
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        modules = {args.baseline: baseline_module(args.baseline, Path(tmp)), "today": local_refinement}
        print(f"| size | {args.baseline} ms median / min | today ms median / min | ratio | max diff px "
              f"| bit-identical |\n|---|---|---|---|---|---|")
        for size in args.sizes:
            h, w = parse_size(size)
            sample = render(h, w)
            row = {"size": f"{w}x{h}", **compare(modules, inputs(sample, alone), args.repeats)}
            rows.append(row)
            base, today = row[args.baseline], row["today"]
            print(f"| {w}x{h} | {base['median_ms']} / {base['min_ms']} | {today['median_ms']} / "
                  f"{today['min_ms']} | {row['ratio']} | {row['max_abs_difference_px']:.3g} "
                  f"| {row['bit_identical']} |", flush=True)
            if args.pipeline:
                row["pipeline"] = time_pipelines(modules, sample, full, alone, args.repeats)
                print(f"  {w}x{h} whole pipeline, ms median: {row['pipeline']['ms_median']}; pipeline / "
                      f"network: {row['pipeline']['pipeline_over_network']}", flush=True)
    if args.json:
        record = {"command": " ".join(sys.argv), "threads": args.threads, "torch": torch.__version__,
                  "rows": rows}
        write_json(args.json, record, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
