#!/usr/bin/env python3
"""How far the default stereo pipeline's output moves when only rounding changes (CPU, no GPU needed).

Why: a GPU runs the same operations with other summation orders and fused multiply-adds, so "the pipeline on
CUDA equals the CPU's" needs a bound that a pure change of rounding meets and a real loss of precision does
not (``test/device_parity.py``).  Per rendered pair (``make_stereo_sample(seed, 320, 256)``, test_cuda.py's
size), the shipped lite weights through the default pipeline, against three changed runs:

* ``avg_pool2d box``: the refinement's box filter as ``avg_pool2d``, the branch ``_box`` takes off the CPU
  (the same window means, summed in another order);
* ``network +-1e-4 px``: the network's disparity plus uniform noise of 1e-4 px (a CUDA fp32 engine differs
  from the CPU's by up to ~1e-2 px);
* ``TF32 box``: the box filter's inputs rounded to TF32's 10-bit mantissa (what tensor cores would read):
  a real loss of precision for ZNCC from box sums, E[x^2] - E[x]^2.

Columns: share of pixels valid in both within 0.05 px, the median |difference|, share > 0.5 px, validity
agreement, and EPE / bad-2 against the render's GT (non-occluded valid pixels) of the reference and the
changed run; then, for one refinement round from the network's disparity (no propagation, no candidate;
``device_parity.ONE_ROUND``), the share within 0.01 px.

    python benchmarks/rounding_chaos.py --seeds 4242 1 2 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

import scene_perception.pipelines.local_refinement as lr
from scene_perception.data.procedural import StereoSample, make_stereo_sample
from scene_perception.engines.torch_engine import TorchEngine
from scene_perception.evaluation.benchmarking import write_json
from scene_perception.evaluation.metrics import disparity_metrics
from scene_perception.models.weights import load_stereo_model
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT
from scene_perception.pipelines.stereo_depth import StereoDepthPipeline, StereoDepthResult

#: One search round without propagation or candidate: what rounding alone can move (test/device_parity.py).
ONE_ROUND = dataclasses.replace(DEFAULT_LOCAL_REFINEMENT, iterations=1, propagation=0, sgbm_candidate=False)


def pool_box(x: torch.Tensor, window: int) -> torch.Tensor:
    """``_box`` as it runs off the CPU: the same window means, summed in another order."""
    r = window // 2
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), window, stride=1)


def to_tf32(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32's 10-bit mantissa (to nearest), as tensor cores read their inputs."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def tf32_box(x: torch.Tensor, window: int) -> torch.Tensor:
    """``_box`` with its inputs and weights at TF32 precision (accumulation in fp32)."""
    c, r = x.shape[1], window // 2
    kernel = torch.full((c, 1, window, window), 1.0 / (window * window))
    return F.conv2d(to_tf32(F.pad(x, (r, r, r, r), mode="replicate")), to_tf32(kernel), groups=c)


@contextlib.contextmanager
def box_filter(box: Callable[[torch.Tensor, int], torch.Tensor]) -> Iterator[None]:
    """The refinement's box filter replaced by ``box`` for the duration (its callers look it up by name)."""
    saved = lr._box
    lr._box = box
    try:
        yield
    finally:
        lr._box = saved


class NoisyNetwork(TorchEngine):
    """A torch engine whose disparity carries uniform noise of +-``amplitude`` px (seeded)."""

    def __init__(self, model: torch.nn.Module, amplitude: float) -> None:
        super().__init__(model)
        self.amplitude = amplitude

    def infer(self, feeds: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = super().infer(feeds)
        g = torch.Generator().manual_seed(0)
        noise = torch.rand(out["disparity"].shape, generator=g) * 2.0 - 1.0
        return {**out, "disparity": out["disparity"] + self.amplitude * noise}


def accuracy(result: StereoDepthResult, sample: StereoSample) -> tuple[float, float]:
    """EPE px and bad-2 % on the non-occluded pixels ``result`` publishes."""
    m = disparity_metrics(result.disparity, sample.disparity, result.valid & sample.nonoccluded)
    return m["epe"], m["bad2"]


def one_round(left: torch.Tensor, right: torch.Tensor, start: torch.Tensor) -> np.ndarray:
    """:data:`ONE_ROUND` from ``start`` on the tensors' device, as a numpy (H, W) array."""
    return lr.refine_disparity_locally(left, right, start, ONE_ROUND)[0][0, 0].cpu().numpy()


def compare(model: torch.nn.Module, seed: int) -> list[dict[str, Any]]:
    """One row per changed run for the pair ``seed``."""
    sample = make_stereo_sample(seed, width=320, height=256)
    left, right = image_to_tensor(sample.left), image_to_tensor(sample.right)
    reference = StereoDepthPipeline(TorchEngine(model))(sample.left, sample.right)
    raw = StereoDepthPipeline(TorchEngine(model), local_refinement=None)(sample.left, sample.right)
    start = torch.from_numpy(raw.disparity)[None, None]
    round_ref = one_round(left, right, start)
    runs: dict[str, tuple[Callable[[torch.Tensor, int], torch.Tensor], TorchEngine]] = {
        "avg_pool2d box": (pool_box, TorchEngine(model)),
        "network +-1e-4 px": (lr._box, NoisyNetwork(model, 1e-4)),
        "TF32 box": (tf32_box, TorchEngine(model)),
    }
    rows = []
    for name, (box, engine) in runs.items():
        with box_filter(box):
            other = StereoDepthPipeline(engine)(sample.left, sample.right)
            round_other = one_round(left, right, start)
        both = reference.valid & other.valid
        diff = np.abs(reference.disparity - other.disparity)[both]
        finite = np.isfinite(round_ref) & np.isfinite(round_other)
        (epe_r, bad_r), (epe_o, bad_o) = accuracy(reference, sample), accuracy(other, sample)
        rows.append({
            "seed": seed, "change": name,
            "within_0.05_pct": round(100.0 * float((diff <= 0.05).mean()), 2),
            "median_px": float(np.median(diff)),
            "over_0.5_pct": round(100.0 * float((diff > 0.5).mean()), 3),
            "valid_agree_pct": round(100.0 * float((reference.valid == other.valid).mean()), 3),
            "epe_reference": round(epe_r, 4), "epe_changed": round(epe_o, 4),
            "bad2_reference": round(bad_r, 3), "bad2_changed": round(bad_o, 3),
            "one_round_within_0.01_pct": round(
                100.0 * float((np.abs(round_ref - round_other)[finite] <= 0.01).mean()), 2),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[4242, 1, 2, 3])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_stereo_model("lite")
    print("| seed | change | within 0.05 px % | median px | > 0.5 px % | validity agrees % "
          "| EPE ref / changed | bad-2 ref / changed | one round within 0.01 px % |\n"
          "|---|---|---|---|---|---|---|---|---|")
    rows = []
    with torch.inference_mode():
        for seed in args.seeds:
            for r in compare(model, seed):
                rows.append(r)
                print(f"| {r['seed']} | {r['change']} | {r['within_0.05_pct']} | {r['median_px']:.2g} "
                      f"| {r['over_0.5_pct']} | {r['valid_agree_pct']} | {r['epe_reference']} / "
                      f"{r['epe_changed']} | {r['bad2_reference']} / {r['bad2_changed']} "
                      f"| {r['one_round_within_0.01_pct']} |", flush=True)
    if args.json:
        write_json(args.json, {"command": " ".join(sys.argv), "rows": rows}, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
