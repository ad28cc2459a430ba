"""``tools/gpu_run.sh`` in its CPU smoke mode: the prepared GPU run must not be first tried on the GPU.

The GPU machine is lent rarely and for 15 minutes; a typo in the script, a renamed flag or a phase that
writes nowhere would waste a whole loan.  This runs every phase end to end on the CPU with tiny sizes and
checks what comes back: at most 8 files (the device tool's limit), every phase ok, results readable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scene_perception.models.weights import load_stereo_model

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_run_smoke_mode_runs_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "GPU_RUN_SMOKE": "1", "OUT": str(out), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "tools" / "gpu_run.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8, files
    summary = json.loads((out / "summary.json").read_text())
    phases = summary["phases"]
    assert set(phases) == {"env", "tests", "timings", "mc", "train"}
    failed = {k: v for k, v in phases.items() if v["status"] != "ok"}
    assert not failed, (failed, (out / "run.log").read_text()[-3000:])
    assert summary["env"]["smoke"] is True and summary["env"]["import_failures"] == {}
    assert "skipped" in (out / "tests.log").read_text()  # no CUDA here: test_cuda.py skips, with reasons

    timings = json.loads((out / "timings.json").read_text())
    measured = [r for r in timings if "p50_ms" in r]
    assert {r["what"] for r in measured} >= {"network", "pipeline"}
    assert all(0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] for r in measured)
    mc = json.loads((out / "mc_dropout.json").read_text())
    assert [r["mc_samples"] for r in mc] == [0, 2] and all(r["p50_ms"] > 0 for r in mc)

    model, info = load_stereo_model("lite", out / "lite_smoke.safetensors")
    card = json.loads((out / "lite_smoke.json").read_text())
    assert info.trained and card["training"]["steps"] == 4 and card["training"]["crops_per_pair"] == 2
    log = [json.loads(line) for line in (out / "train.json").read_text().splitlines()]
    assert log and all("samples_per_s" in row for row in log)


def test_gpu_run_adapt_phase_in_smoke_mode(tmp_path: Path) -> None:
    """The optional phase ``adapt`` (GPU_RUN_PHASES="env adapt") brings back the adaptation benchmark."""
    out = tmp_path / "out"
    env = {**os.environ, "GPU_RUN_SMOKE": "1", "GPU_RUN_PHASES": "env adapt", "OUT": str(out),
           "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "tools" / "gpu_run.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    phases = json.loads((out / "summary.json").read_text())["phases"]
    assert set(phases) == {"env", "adapt"} and phases["adapt"]["status"] == "ok", phases
    result = json.loads((out / "adaptation.json").read_text())
    assert result["bad_stream"]["weights_unchanged"] and result["bad_stream"]["rejected"] == 48
    assert result["rounds"] and all(r["before"] > 0 for r in result["rounds"])
