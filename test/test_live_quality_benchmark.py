"""benchmarks/live_quality.py --quick end to end: rendered pairs through the real pipeline and the GT-free
assessment, each real pair scored when its files are there and named as skipped when they are not."""

from __future__ import annotations

from pathlib import Path

import pytest
from evalutil import load_benchmark

from scene_perception.data.datasets.real_pairs import load_motorcycle


@pytest.mark.slow
def test_quick_run_scores_synthetic_and_names_a_missing_real_pair(tmp_path: Path, capsys) -> None:
    bench = load_benchmark("live_quality")
    results = bench.main(["--quick", "--threads", "1", "--aloe-dir", str(tmp_path / "no_aloe"),
                          "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert (tmp_path / "out.json").is_file()
    clean = results["synthetic"]["frames"]["clean"]
    assert len(clean) == 2 and all(0.0 <= f["epe"] < 10.0 and f["photometric_p50"] >= 0.0 for f in clean)
    assert "aloe" not in results and "Middlebury 2006 Aloe skipped: no data in" in out
    has_motorcycle = load_motorcycle(bench.DEFAULT_MOTORCYCLE_DIR) is not None
    assert ("motorcycle" in results) == has_motorcycle
    assert ("Middlebury 2014 Motorcycle skipped" in out) != has_motorcycle
