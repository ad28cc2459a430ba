#!/usr/bin/env python3
"""CPU latency of GC-Net (torch eval and ONNX Runtime) next to OpenCV StereoSGBM_3WAY, in one run.

Why one run: timings on shared machines drift up to 2x between runs, so the useful number is the ratio
model / SGBM measured back to back on the same random-texture pair. Weights are untrained (latency does
not depend on them). Example::

    python benchmarks/gcnet_cpu.py --configs lite --sizes 240x320 --threads 2 --repeats 20
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from scene_perception.evaluation.benchmarking import parse_size, random_texture_pair
from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.pipelines.image_tensor import image_to_tensor


def time_it(fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float]:
    """(median, p90) wall time in ms after ``warmup`` untimed calls (allocator / oneDNN primitive caches)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    samples.sort()
    p90 = samples[min(len(samples) - 1, int(round(0.9 * (len(samples) - 1))))]
    return statistics.median(samples), p90


def padded(h: int, w: int, div: int) -> tuple[int, int]:
    """Size after the pipeline's right/bottom padding to a multiple of the model's size_divisor."""
    return h + (-h) % div, w + (-w) % div


def bench_sgbm(
    left: np.ndarray, right: np.ndarray, num_disp: int, repeats: int, warmup: int
) -> tuple[float, float]:
    """SGBM_3WAY with the parameters used for the baseline table in the project notes."""
    import cv2

    block = 5
    # SGBM wants a multiple of 16 that is smaller than the image width.
    num_disp = max(16, min(int(np.ceil(num_disp / 16) * 16), (left.shape[1] - 1) // 16 * 16))
    sgbm = cv2.StereoSGBM_create(
        minDisparity=0,
        numDisparities=num_disp,
        blockSize=block,
        P1=8 * 3 * block**2,
        P2=32 * 3 * block**2,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=2,
        mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )
    gl = cv2.cvtColor(left, cv2.COLOR_RGB2BGR)
    gr = cv2.cvtColor(right, cv2.COLOR_RGB2BGR)
    return time_it(lambda: sgbm.compute(gl, gr), repeats, warmup)


def bench_ort(
    model: GCNet, lt: torch.Tensor, rt: torch.Tensor, threads: int, repeats: int, warmup: int
) -> tuple[float, float] | None:
    """Export with static shapes (the deployment path) and time ONNX Runtime; None if unavailable."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        # The exporter narrates its progress on stdout; keep the markdown table clean.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (lt, rt),
                str(path),
                input_names=["left", "right"],
                output_names=["disparity", "log_scale"],
                dynamo=True,
                verbose=False,
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Large 3-D volumes: the arena keeps peak buffers alive and can exhaust memory (paper config).
        opts.enable_cpu_mem_arena = False
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feeds = {"left": lt.numpy(), "right": rt.numpy()}
        return time_it(lambda: session.run(None, feeds), repeats, warmup)


def bench_row(name: str, size: tuple[int, int], args: argparse.Namespace) -> str:
    """One markdown row: torch, ORT and SGBM for one config at one size, measured back to back."""
    model = GCNet(name).eval()
    n_params = sum(p.numel() for p in model.parameters())
    h, w = size
    ph, pw = padded(h, w, model.size_divisor)
    left, right = random_texture_pair(h, w)
    sgbm = bench_sgbm(left, right, model.max_disparity, args.repeats, args.warmup)

    def to_tensor(img: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.pad(image_to_tensor(img), (0, pw - w, 0, ph - h), mode="replicate")

    lt, rt = to_tensor(left), to_tensor(right)

    def run_torch() -> None:
        with torch.inference_mode():
            model(lt, rt)

    tt = time_it(run_torch, args.repeats, args.warmup)
    ort_t = None if args.no_onnx else bench_ort(model, lt, rt, args.threads, args.repeats, args.warmup)
    ort_cell = f"{ort_t[0]:.1f} / {ort_t[1]:.1f}" if ort_t else "n/a"
    ort_ratio = f"{ort_t[0] / sgbm[0]:.2f}" if ort_t else "n/a"
    return (
        f"| {name} | {n_params / 1e6:.3f} M | {h}x{w} ({ph}x{pw}) | {tt[0]:.1f} / {tt[1]:.1f} | {ort_cell} "
        f"| {sgbm[0]:.1f} / {sgbm[1]:.1f} | {tt[0] / sgbm[0]:.2f} | {ort_ratio} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(240, 320)], help="HxW, e.g. 240x320")
    parser.add_argument("--configs", nargs="+", default=["lite"], choices=sorted(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export + ONNX Runtime column")
    args = parser.parse_args(argv)

    import cv2

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(0)

    print(
        f"torch {torch.__version__}, opencv {cv2.__version__}, threads {args.threads}, "
        f"repeats {args.repeats}, untrained weights\n"
    )
    print(
        "| config | params | size (padded) | torch ms median / p90 | ORT ms median / p90 "
        "| SGBM_3WAY ms median / p90 | torch / SGBM | ORT / SGBM |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        for size in args.sizes:
            print(bench_row(name, size, args), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
