#!/usr/bin/env python3
"""What the two-pass factor costs: the time of ``view_agreement.two_pass_log_factor`` (the view-agreement
measure, and with the per-pixel default its feature map) inside the default pipeline (two refinements) on the
real pairs, next to the whole frame's, CPU, 2 threads.  Also prints the measure and the factor each pair got
(its median when per pixel; reported after the rule decided; the real pairs are never fitted on).

    python benchmarks/two_pass_cost.py
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scene_perception.data.datasets.real_pairs import load_aloe, load_motorcycle, range_from_width
from scene_perception.pipelines import view_agreement
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

repo = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(repo / "benchmarks"))
from two_pass_adaptive import rule_camera_setting  # noqa: E402

torch.set_num_threads(2)
pipe = build_stereo_pipeline("lite", None, backend="torch", device="cpu", compute_points=False).pipeline
original = view_agreement.two_pass_log_factor
spent: list[float] = []


def timed(*args, **kwargs):
    t = time.perf_counter()
    value = original(*args, **kwargs)
    spent.append(time.perf_counter() - t)
    return value


view_agreement.two_pass_log_factor = timed
#: The default, and rule_camera.md's per-frame setting it replaced (the same run, so the ratio is fair).
SETTINGS = {"default": pipe.local_refinement,
            "per frame (rule_camera)": rule_camera_setting(pipe.local_refinement)}
print("| pair | setting | measure (zncc) | factor (median) | per pixel | factor ms (median of 4) | frame ms "
      "| share |")
print("|---|---|---|---|---|---|---|---|")
for name, pair in (("Aloe 1282x1110", load_aloe(repo / ".cache/eval/middlebury_aloe")),
                   ("Motorcycle 741x500", load_motorcycle(repo / ".cache/eval/middlebury_motorcycle"))):
    pipe.max_disparity = float(range_from_width(pair.gt.shape[1]))
    for setting, cfg in SETTINGS.items():
        pipe.local_refinement = cfg
        spent.clear()
        frame = []
        for _ in range(4):
            t = time.perf_counter()
            r = pipe(pair.left, pair.right)
            frame.append(time.perf_counter() - t)
        m, f = np.median(spent) * 1e3, np.median(frame) * 1e3
        print(f"| {name}, range {pipe.max_disparity:.0f} px | {setting} | {r.two_pass_measure:.4f} | "
              f"{r.two_pass_factor:.2f} | {r.two_pass_per_pixel} | {m:.0f} | {f:.0f} | {100 * m / f:.1f} % |")
