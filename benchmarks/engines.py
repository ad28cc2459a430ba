#!/usr/bin/env python3
"""Latency and peak memory of every available inference backend, per model and resolution, next to SGBM.

For each (model config, resolution) this times, in one process and back to back:

* OpenCV StereoSGBM_3WAY with the project's baseline settings (``pipelines/sgbm.py``), the reference:
  timings on shared machines drift up to 2x between runs, so the meaningful number is the ratio
  backend / SGBM measured in the same run;
* each backend through the engine interface (``engines/``): torch and ONNX Runtime on CPU; on a GPU
  machine also torch CUDA fp16, ONNX Runtime CUDA (when the build has it) and TensorRT fp16.

Latency is the engine's ``infer`` on (1,3,H,W) float32 inputs at the padded size (pre/post-processing
excluded), median and p90 after warm-up. Memory: peak RSS growth over the run (engine creation, warm-up
and timed runs; Linux ``/proc/self/clear_refs`` resets the high-water mark, elsewhere a sampling thread),
and on CUDA torch's ``max_memory_allocated`` (TensorRT's own allocations are not visible to torch, so that
column also reports the device-wide used-memory growth from ``cudaMemGetInfo``). ONNX export / engine builds
happen before the measurement (into a temporary cache), so they are not counted.

``--end-to-end`` also times the whole ``StereoDepthPipeline`` call on each backend's engine (uint8 pair in,
disparity / std / mask out: padding, network, default local refinement with its SGBM candidate), twice:
SGBM after the forward pass, and SGBM in a worker thread during it (``overlap_sgbm``, the default on an
accelerator). The ratio of the two says what the overlap buys on this machine.

Weights are untrained (latency does not depend on them). Examples::

    python benchmarks/engines.py --configs lite --sizes 240x320 480x640 --threads 2
    python benchmarks/engines.py --include-paper --paper-sizes 240x320 --json out/engines.json
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scene_perception.engines.base import BackendUnavailable, EngineError, InferenceEngine
from scene_perception.engines.cache import model_digest
from scene_perception.engines.onnx_export import padded_size
from scene_perception.engines.select import BackendChoice, create_engine, probe
from scene_perception.engines.torch_engine import TorchEngine
from scene_perception.evaluation.benchmarking import PeakRSS, parse_size, write_json
from scene_perception.evaluation.benchmarking import random_texture_pair as texture_pair
from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import stereo_config
from scene_perception.pipelines.image_tensor import image_to_tensor

DEFAULT_SIZES = ["240x320", "480x640", "576x960"]
#: Goal of issue 4 on 2 CPU cores: lite at 320x240 at or below this median latency.
CPU_GOAL_MS = 100.0
#: Marks the plan entry that times the torch model without the CPU rewrite (engines/torch_cpu.py).
EAGER = "eager reference"


def time_it(fn: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Wall times (ms) of ``repeats`` calls after ``warmup`` untimed ones; ``sync`` waits for the device."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def p90(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def backend_plan(args: argparse.Namespace) -> list[BackendChoice]:
    """Every backend/device/precision this machine can run, CPU first; unavailable ones are reported."""
    pr = probe()
    plan = [BackendChoice("torch", "cpu", "fp32", "bench", "cpu")]
    if args.eager_reference:
        plan.append(BackendChoice("torch", "cpu", "fp32", "bench", EAGER))
    if pr.ort_reason is None:
        plan.append(BackendChoice("onnxruntime", "cpu", "fp32", "bench", "cpu"))
    else:
        print(f"skipping onnxruntime-cpu: {pr.ort_reason}")
    if not args.cpu_only:
        for name, reason, prec in (
            ("torch", pr.cuda_reason, "fp16"),
            ("onnxruntime", pr.ort_cuda_reason, "fp32"),
            ("tensorrt", pr.tensorrt_reason, "fp16"),
        ):
            if reason is None:
                plan.append(BackendChoice(name, "cuda:0", prec, "bench", "gpu"))
            else:
                print(f"skipping {name}-cuda: {reason}")
    return [c for c in plan if c.backend in args.backends]


def measure_backend(
    choice: BackendChoice,
    model: torch.nn.Module,
    digest: str,
    cache: Path,
    hw: tuple[int, int],
    feeds: dict[str, np.ndarray],
    args: argparse.Namespace,
    row: dict[str, Any],
    images: tuple[np.ndarray, np.ndarray],
) -> list[float]:
    """Latency samples (ms) of one backend; memory columns (and, with ``--end-to-end``, the pipeline's
    serial / overlapped medians) are written into ``row``."""
    cuda = choice.device.startswith("cuda")
    sync: Callable[[], None] = torch.cuda.synchronize if cuda else (lambda: None)

    def make() -> InferenceEngine:
        if choice.reason == EAGER:
            return TorchEngine(model, device="cpu", precision="fp32", input_hw=hw, cpu_rewrite=False)
        return create_engine(
            choice, model, model_sha256=digest, cache_dir=cache, input_hw=hw, num_threads=args.threads
        )

    if choice.backend != "torch":
        make().close()  # export / build into the cache first: not part of the measurement
        gc.collect()
    dev_feeds: dict[str, Any] = (
        {k: torch.from_numpy(v).to(choice.device) for k, v in feeds.items()} if cuda else dict(feeds)
    )
    free_before = 0
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        free_before = torch.cuda.mem_get_info()[0]
    with PeakRSS() as mem:
        engine = make()
        try:
            samples = time_it(lambda: engine.infer(dev_feeds), args.repeats, args.warmup, sync)
            if args.end_to_end:
                row.update(time_end_to_end(engine, images, args))
        finally:
            engine.close()
    row["rss_delta_mb"] = round(mem.delta_mb, 1)
    if cuda:
        row["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        row["cuda_used_delta_mb"] = round((free_before - torch.cuda.mem_get_info()[0]) / 2**20, 1)
        model.to("cpu")  # a CUDA TorchEngine moved the shared model
    return samples


def time_end_to_end(
    engine: InferenceEngine, images: tuple[np.ndarray, np.ndarray], args: argparse.Namespace
) -> dict[str, float]:
    """Median ms of the whole pipeline call on ``engine``, SGBM candidate serial and overlapped; the
    two are interleaved so drift on a shared machine hits both alike.  The call's numpy outputs mean
    a CUDA pipeline has finished when it returns: no extra sync is needed."""
    from scene_perception.pipelines.stereo_depth import StereoDepthPipeline

    left, right = images
    serial = StereoDepthPipeline(engine, compute_points=False, overlap_sgbm=False)
    overlapped = StereoDepthPipeline(engine, compute_points=False, overlap_sgbm=True)
    times: dict[str, list[float]] = {"serial": [], "overlapped": []}
    for i in range(args.warmup + args.repeats):
        for name, pipe in (("serial", serial), ("overlapped", overlapped)):
            start = time.perf_counter()
            pipe(left, right)
            if i >= args.warmup:
                times[name].append((time.perf_counter() - start) * 1000.0)
    s, o = statistics.median(times["serial"]), statistics.median(times["overlapped"])
    return {"pipeline_serial_ms_median": round(s, 2), "pipeline_overlapped_ms_median": round(o, 2),
            "overlap_ratio": round(o / s, 3)}


def time_refinement(left: np.ndarray, right: np.ndarray, args: argparse.Namespace) -> list[float]:
    """CPU time of the pipeline's default local refinement at this size (it runs after every backend),
    its SGBM candidate included (over the lite range, as the pipeline runs it)."""
    from scene_perception.pipelines.local_refinement import refine_disparity_locally
    from scene_perception.pipelines.sgbm import SGBMMatcher
    from scene_perception.pipelines.stereo_depth import DEFAULT_LOCAL_REFINEMENT, FALLBACK_MAX_DISPARITY

    cfg = DEFAULT_LOCAL_REFINEMENT
    lt, rt = image_to_tensor(left), image_to_tensor(right)
    start = torch.full((1, 1, *left.shape[:2]), 0.05 * left.shape[1])
    sgbm = SGBMMatcher(FALLBACK_MAX_DISPARITY) if cfg.sgbm_candidate else None

    def once() -> None:
        candidate = None if sgbm is None else torch.from_numpy(sgbm.match_full_width(left, right))[None, None]
        refine_disparity_locally(lt, rt, start, cfg, candidate)

    with torch.inference_mode():
        return time_it(once, args.repeats, args.warmup, lambda: None)


def bench_cell(
    config: str, size: tuple[int, int], args: argparse.Namespace, plan: list[BackendChoice], cache: Path
) -> list[dict[str, Any]]:
    """SGBM, then every backend, for one model config at one size; one result dict per backend."""
    from scene_perception.pipelines.sgbm import SGBMMatcher

    torch.manual_seed(0)
    # Time the network as users run it: the regression window its shipped model card sets, unless overridden.
    window = args.regression_window
    if window is None:
        window = stereo_config(config).regression_window
    model = GCNet(replace(CONFIGS[config], regression_window=window)).eval()
    digest = model_digest(model)
    h, w = size
    ph, pw = padded_size(h, w, model.size_divisor)
    left, right = texture_pair(h, w)
    # OpenCV needs numDisparities < width: tiny smoke-test sizes get a capped range (recorded in the JSON).
    sgbm = SGBMMatcher(min(model.max_disparity, max(16, (w - 1) // 16 * 16)))
    sgbm_ms = time_it(lambda: sgbm.match(left, right), args.repeats, args.warmup, lambda: None)
    sgbm_med = statistics.median(sgbm_ms)
    refine_ms = time_refinement(left, right, args)

    def to_input(img: np.ndarray) -> np.ndarray:
        t = torch.nn.functional.pad(image_to_tensor(img), (0, pw - w, 0, ph - h), mode="replicate")
        return t.numpy()

    feeds = {"left": to_input(left), "right": to_input(right)}
    rows = []
    for choice in plan:
        row: dict[str, Any] = {
            "config": config,
            "regression_window": window,
            "size": f"{w}x{h}",
            "padded": f"{pw}x{ph}",
            "backend": "torch (eager)" if choice.reason == EAGER else choice.backend,
            "device": choice.device,
            "precision": choice.precision,
            "sgbm_ms_median": round(sgbm_med, 2),
            "sgbm_ms_p90": round(p90(sgbm_ms), 2),
            "sgbm_num_disparities": sgbm.num_disparities,
            "local_refinement_ms_median": round(statistics.median(refine_ms), 2),
        }
        try:
            samples = measure_backend(choice, model, digest, cache, (ph, pw), feeds, args, row, (left, right))
        except (BackendUnavailable, EngineError, RuntimeError, ValueError) as exc:
            row["error"] = str(exc)
            rows.append(row)
            continue
        med = statistics.median(samples)
        row.update(
            ms_median=round(med, 2),
            ms_p90=round(p90(samples), 2),
            fps=round(1000.0 / med, 1),
            ratio_to_sgbm=round(med / sgbm_med, 2),
        )
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| config | size (padded) | backend | device / precision | ms median / p90 | fps | peak RSS +MB "
        "| CUDA MB (torch max / device +) | SGBM_3WAY ms median / p90 | backend / SGBM "
        "| + local refinement ms (CPU) | pipeline ms: SGBM serial / overlapped (ratio) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cell = (
            f"| {r['config']} | {r['size']} ({r['padded']}) | {r['backend']} "
            f"| {r['device']} / {r['precision']} "
        )
        sgbm = f"{r['sgbm_ms_median']:.1f} / {r['sgbm_ms_p90']:.1f}"
        if "error" in r:
            lines.append(cell + f"| failed: {r['error'][:80]} | | | | {sgbm} | | | |")
            continue
        cuda = (
            f"{r['cuda_max_allocated_mb']:.0f} / {r['cuda_used_delta_mb']:.0f}"
            if "cuda_max_allocated_mb" in r
            else "-"
        )
        end_to_end = (
            f"{r['pipeline_serial_ms_median']:.1f} / {r['pipeline_overlapped_ms_median']:.1f} "
            f"({r['overlap_ratio']:.2f})"
            if "overlap_ratio" in r
            else "-"
        )
        lines.append(
            cell + f"| {r['ms_median']:.1f} / {r['ms_p90']:.1f} | {r['fps']:.1f} | {r['rss_delta_mb']:.0f} "
            f"| {cuda} | {sgbm} | {r['ratio_to_sgbm']:.2f} | {r['local_refinement_ms_median']:.1f} "
            f"| {end_to_end} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=["lite"], choices=sorted(CONFIGS))
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES])
    parser.add_argument(
        "--include-paper",
        action="store_true",
        help="also run the paper model (several seconds per frame on CPU: see --paper-sizes)",
    )
    parser.add_argument(
        "--paper-sizes",
        nargs="+",
        type=parse_size,
        default=None,
        help="sizes for the paper model (default: 240x320 on CPU-only machines, --sizes with a GPU)",
    )
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "onnxruntime", "tensorrt"], help="subset of backends"
    )
    parser.add_argument("--cpu-only", action="store_true", help="skip GPU backends even if present")
    parser.add_argument(
        "--eager-reference",
        action="store_true",
        help="also time the torch CPU model without the BN-fold/oneDNN rewrite (shows what it buys)",
    )
    parser.add_argument(
        "--regression-window", type=int, default=None,
        help="soft arg-min window of the timed model (default: what the shipped model card sets)",
    )
    parser.add_argument(
        "--end-to-end", action="store_true",
        help="also time the whole pipeline per backend, SGBM candidate serial vs overlapped",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch / ORT / OpenCV threads")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)

    import cv2
    import onnxruntime

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    configs = [c for c in args.configs if c != "paper"]
    if args.include_paper or "paper" in args.configs:
        configs.append("paper")
    plan = backend_plan(args)
    gpu = any(c.device.startswith("cuda") for c in plan)
    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__}, "
        f"threads {args.threads}, repeats {args.repeats} (+{args.warmup} warm-up), untrained weights, "
        f"GPU: {torch.cuda.get_device_name(0) if gpu else 'none'}\n"
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="engines-bench-") as tmp:
        for config in configs:
            sizes = args.sizes
            if config == "paper":
                sizes = args.paper_sizes or (args.sizes if gpu else [(240, 320)])
            for size in sizes:
                cell = bench_cell(config, size, args, plan, Path(tmp))
                rows.extend(cell)
                for r in cell:
                    status = r.get("error") or f"{r['ms_median']:.1f} ms"
                    print(f"  {config} {r['size']} {r['backend']}-{r['device']}: {status}", file=sys.stderr)
    print(markdown(rows))
    cpu_lite = [
        r
        for r in rows
        if r["config"] == "lite" and r["size"] == "320x240" and r["device"] == "cpu" and "ms_median" in r
    ]
    if cpu_lite:
        best = min(cpu_lite, key=lambda r: r["ms_median"])
        verdict = "met" if best["ms_median"] <= CPU_GOAL_MS else "NOT met"
        print(
            f"\ngoal (issue 4) lite 320x240 <= {CPU_GOAL_MS:.0f} ms median on CPU: {verdict} "
            f"(best: {best['backend']} {best['ms_median']:.1f} ms with {args.threads} threads)"
        )
    if args.json:
        write_json(args.json, rows, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
