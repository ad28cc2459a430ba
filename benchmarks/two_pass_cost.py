#!/usr/bin/env python3
"""What the per-frame two-pass factor costs: the view-agreement measure's time inside the default pipeline
(two refinements) on the real pairs, next to the whole frame's, CPU, 2 threads.  Also prints the measure and
the factor each pair got (reported after the rule decided; the real pairs are never fitted on).

    python benchmarks/two_pass_cost.py
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scene_perception.data.datasets.real_pairs import load_aloe, load_motorcycle
from scene_perception.pipelines import view_agreement
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

repo = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(repo / "benchmarks"))
from calibration import width_range  # noqa: E402

torch.set_num_threads(2)
pipe = build_stereo_pipeline("lite", None, backend="torch", device="cpu", compute_points=False).pipeline
original = view_agreement.measure
spent: list[float] = []


def timed(*args, **kwargs):
    t = time.perf_counter()
    value = original(*args, **kwargs)
    spent.append(time.perf_counter() - t)
    return value


view_agreement.measure = timed
print("| pair | range px | measure (zncc) | factor | measure ms (median of 4) | frame ms | share |")
print("|---|---|---|---|---|---|---|")
for name, pair in (("Aloe 1282x1110", load_aloe(repo / ".cache/eval/middlebury_aloe")),
                   ("Motorcycle 741x500", load_motorcycle(repo / ".cache/eval/middlebury_motorcycle"))):
    pipe.max_disparity = float(width_range(pair.gt.shape[1], 0.2))
    spent.clear()
    frame = []
    for _ in range(4):
        t = time.perf_counter()
        r = pipe(pair.left, pair.right)
        frame.append(time.perf_counter() - t)
    m, f = np.median(spent) * 1e3, np.median(frame) * 1e3
    print(f"| {name} | {pipe.max_disparity:.0f} | {r.two_pass_measure:.4f} | {r.two_pass_factor:.2f} | "
          f"{m:.0f} | {f:.0f} | {100 * m / f:.1f} % |")
