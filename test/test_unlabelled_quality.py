"""benchmarks/unlabelled_quality.py on real files: a folder of rendered pairs written to disk, the shipped
weights through the real pipeline, and a swapped pair that must score worse."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
from evalutil import load_benchmark

from scene_perception.data.procedural import make_stereo_sample

REPO = Path(__file__).resolve().parents[1]


def _write_pairs(root: Path, swap: bool) -> None:
    for view in ("left", "right"):
        (root / view).mkdir(parents=True)
    for seed in (20_000_000, 20_000_001):
        s = make_stereo_sample(seed, width=192, height=128, max_disparity=32)
        left, right = (s.right, s.left) if swap else (s.left, s.right)
        cv2.imwrite(str(root / "left" / f"{seed}.png"), cv2.cvtColor(left, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "right" / f"{seed}.png"), cv2.cvtColor(right, cv2.COLOR_RGB2BGR))


def test_scores_a_folder_and_a_swapped_pair_scores_worse(tmp_path: Path) -> None:
    bench = load_benchmark("unlabelled_quality")
    _write_pairs(tmp_path / "good", swap=False)
    _write_pairs(tmp_path / "swapped", swap=True)
    weights = REPO / "models" / "lite.safetensors"
    out = tmp_path / "r.json"
    good = bench.main(["--folder", str(tmp_path / "good"), "--weights", str(weights), "--threads", "1",
                       "--max-disparity", "64", "--json", str(out)])
    swapped = bench.main(["--folder", str(tmp_path / "swapped"), "--weights", str(weights), "--threads", "1",
                          "--max-disparity", "64"])
    g, s = good["rows"][0], swapped["rows"][0]
    assert len(g["frames"]) == 2 and all(f["scored_pixels"] > 1000 for f in g["frames"])
    assert math.isfinite(g["photometric_p50"]) and 0.0 < g["lr_consistent"] <= 1.0
    # Left and right exchanged: no valid disparity in the searched direction, so the measures must fall.
    assert g["photometric_p50"] < s["photometric_p50"]
    assert g["lr_consistent"] > s["lr_consistent"]
    assert json.loads(out.read_text())["rows"][0]["sha256"] == g["sha256"]
