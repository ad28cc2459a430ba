#!/usr/bin/env python3
"""Peak memory and time of one stereo pipeline call per input resolution (what a board must hold).

Each resolution runs in a fresh process (so one size's allocator growth does not hide the next's): the
shipped ``lite`` model through the one factory (``pipelines/stereo_factory.py``) with the node's settings
(default local refinement with its SGBM candidate, a camera, points), on a rendered procedural pair. Peak
resident-memory growth is measured over the call after model load and a small warm-up
(``/proc/self/clear_refs`` + ``VmHWM``, see ``benchmarks/engines.py``), next to the process's total peak.
``--max-network-pixels`` shows what capping the network's input (the node parameter of the same name) buys.

    python benchmarks/memory.py --sizes 240x320 480x640 720x1280 1080x1920 3000x4000
    python benchmarks/memory.py --sizes 1080x1920 3000x4000 --max-network-pixels 921600
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np, torch, cv2
torch.set_num_threads({threads}); cv2.setNumThreads({threads})
from scene_perception.evaluation.benchmarking import PeakRSS, status_kb
from scene_perception.data.procedural import make_stereo_sample
from scene_perception.pipelines.stereo_factory import build_stereo_pipeline
h, w = {h}, {w}
render = make_stereo_sample(5, width=min(w, 1024), height=min(h, 768))
left = cv2.resize(render.left, (w, h), interpolation=cv2.INTER_LINEAR)
right = cv2.resize(render.right, (w, h), interpolation=cv2.INTER_LINEAR)
camera = render.camera.scaled(w / render.left.shape[1], h / render.left.shape[0])
setup = build_stereo_pipeline("lite", backend="torch", device="cpu", max_network_pixels={cap})
pipe = setup.pipeline
small = make_stereo_sample(6, width=128, height=64)
pipe(small.left, small.right, small.camera)  # warm-up: allocator pools, oneDNN primitives
with PeakRSS() as mem:
    t0 = time.perf_counter()
    res = pipe(left, right, camera)
    seconds = time.perf_counter() - t0
print(json.dumps({{"size": f"{{w}}x{{h}}", "megapixels": round(w * h / 1e6, 2), "scale": round(res.scale, 3),
                  "seconds": round(seconds, 2), "peak_growth_mb": round(mem.delta_mb),
                  "process_peak_mb": round((status_kb("VmHWM") or 0) / 1024),
                  "valid": round(float(res.valid.mean()), 3)}}))
"""


def measure(h: int, w: int, cap: int, threads: int, timeout: float) -> dict:
    code = CHILD.format(h=h, w=w, cap=cap, threads=threads)
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"size": f"{w}x{h}", "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"size": f"{w}x{h}", "error": proc.stderr.strip().splitlines()[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["240x320", "480x640", "720x1280", "1080x1920"],
                        help="HxW")
    parser.add_argument("--max-network-pixels", type=int, default=0, help="0 = no cap")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per size")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    print(f"| size | MP | network scale | s | peak growth MB | process peak MB | valid | (max_network_pixels "
          f"{args.max_network_pixels or 'off'}, {args.threads} threads)")
    print("|---|---|---|---|---|---|---|")
    for text in args.sizes:
        h, w = (int(v) for v in text.split("x"))
        r = measure(h, w, args.max_network_pixels, args.threads, args.timeout)
        rows.append(r)
        if "error" in r:
            print(f"| {r['size']} | | | | | | failed: {r['error']} |", flush=True)
        else:
            print(f"| {r['size']} | {r['megapixels']} | {r['scale']} | {r['seconds']} "
                  f"| {r['peak_growth_mb']} | {r['process_peak_mb']} | {r['valid']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
