"""benchmarks/refinement_speed.py end to end at a tiny size: the baseline loads from git and both agree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from evalutil import load_benchmark

REPO = Path(__file__).resolve().parents[1]


def test_refinement_speed_benchmark_smoke(tmp_path) -> None:
    out = tmp_path / "speed.json"
    assert load_benchmark("refinement_speed").main(
        ["--baseline", "HEAD", "--sizes", "48x96", "--repeats", "1", "--threads", "1", "--pipeline",
         "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["size"] == "96x48"
    assert row["HEAD"]["median_ms"] > 0 and row["today"]["median_ms"] > 0
    assert set(row["pipeline"]["pipeline_over_network"]) == {"pipeline, HEAD", "pipeline, today"}
    assert all(r > 0 for r in row["pipeline"]["pipeline_over_network"].values())
    # Against its own committed version (an unmodified module) the refinement must agree to the bit.
    module = "scene_perception/pipelines/local_refinement.py"
    diff = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", module])
    if diff.returncode == 0:
        assert row["bit_identical"] and row["max_abs_difference_px"] == 0.0
