#!/usr/bin/env python3
"""What each rendered phenomenon buys (issue 22 item 2): one short fine-tune per addition, then scores.

A control probe and one probe per addition continue the shipped ``lite`` with the same recipe, seed and
wall-clock budget; the only difference is the one phenomenon turned on.  ``benchmarks/coverage.py`` then
scores the shipped weights and every probe on validation pairs of each phenomenon (never the test split),
so "what thin structures buy" reads as the thin row of the thin probe against the control's, and the
other rows show what it costs elsewhere.  Results go to ``--json`` after every probe (a killed run keeps
what it finished).  On the GPU machine (``GPU_RUN_PHASES="env ablation" bash tools/gpu_run.sh``)::

    python benchmarks/coverage_ablation.py --device cuda --minutes 0.4 --json ablation.json

and on a CPU session, in the background (about 9 x MINUTES plus ~15 min of scoring)::

    python benchmarks/coverage_ablation.py --device cpu --cpu-recipe --threads 1 --minutes 6 \
        --json ablation.json

Probe-sized budgets say which additions help at all and what they cost; shipping still goes through a
selection rule written before scoring, on a longer run with the additions that paid.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Probe name -> the training flags that turn its phenomenon on (on top of the shared recipe).
PROBES: dict[str, list[str]] = {
    "control": [],
    "sky": ["--sky-probability", "0.6"],  # the base has 0.3
    "far": ["--min-disparity", "0.1"],  # the base has 0.25
    "thin": ["--thin-probability", "0.6"],
    "textureless": ["--textureless-probability", "0.3"],
    "repetitive": ["--repetitive-probability", "0.3"],
    "dark": ["--dark-probability", "0.3"],
    "specular": ["--specular-probability", "0.3"],
    "camera_effects": ["--camera-effects"],
}

# The shipped v11 recipe (models/lite.json: sky and far surfaces, lr 5e-5), continued from the shipped
# weights; --minutes bounds each probe.  The sky and far surfaces are in the base since the CPU ablation of
# 2026-12-05 (benchmarks/results/2026-12-05_cpu/coverage_ablation_cpu.md): a base without them forgot the
# sky (bad-2 7 -> 76 %) and every other probe was read against that collapse.
RECIPE = ["--model", "lite", "--init-weights", str(ROOT / "models" / "lite.safetensors"), "--lr", "5e-5",
          "--warmup-steps", "20", "--volume-weight", "0.3", "--max-disparity", "112", "--augment",
          "--sky-probability", "0.3", "--min-disparity", "0.25",
          "--seed", "23", "--checkpoint-every", "1000000", "--no-progress", "--log-every", "25"]
GPU_DATA = ["--amp", "bf16", "--num-workers", "14", "--crops-per-pair", "4", "--batch-size", "16",
            "--crop-height", "256", "--crop-width", "512", "--image-height", "384", "--image-width", "768",
            "--steps", "3000"]
# CPU sessions (2 cores, no GPU): the v11 CPU recipe's batch and crop on one thread, so the probes can run in
# the background beside other work; --minutes still bounds each probe.
CPU_DATA = ["--batch-size", "2", "--crop-height", "256", "--crop-width", "512", "--num-threads", "1",
            "--num-workers", "0", "--steps", "100000"]
SMOKE_DATA = ["--steps", "3", "--batch-size", "2", "--crop-height", "64", "--crop-width", "128",
              "--num-workers", "0", "--log-every", "1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", nargs="+", default=list(PROBES), choices=list(PROBES))
    parser.add_argument("--minutes", type=float, default=0.4, help="training budget of each probe")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (CI): 3 steps, 64x128 crops")
    parser.add_argument("--cpu-recipe", action="store_true",
                        help="CPU batch/crop (batch 2, 256x512, one thread) instead of the GPU one")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the scoring run")
    parser.add_argument("--pairs", type=int, default=24, help="validation pairs per phenomenon to score")
    parser.add_argument("--json", required=True, help="results file, rewritten after every probe")
    args = parser.parse_args(argv)
    out = Path(args.json)
    data = RECIPE + (SMOKE_DATA if args.smoke else CPU_DATA if args.cpu_recipe else GPU_DATA)
    report: dict = {"recipe": data, "minutes": args.minutes, "device": args.device, "probes": {}}
    weights: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for probe in args.probes:
            run_dir = Path(tmp) / probe
            cmd = [sys.executable, "-m", "scene_perception.cli", "train", "stereo", *data, *PROBES[probe],
                   "--device", args.device, "--minutes", str(args.minutes), "--out-dir", str(run_dir),
                   "--output-name", f"probe_{probe}"]
            t0 = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            card_path = run_dir / f"probe_{probe}.json"
            entry: dict = {"flags": PROBES[probe], "rc": proc.returncode,
                           "seconds": round(time.monotonic() - t0, 1)}
            if proc.returncode != 0 or not card_path.exists():
                entry["error"] = proc.stderr[-2000:]
            else:
                card = json.loads(card_path.read_text())
                entry["steps"] = card.get("training", {}).get("steps")
                weights.append(str(run_dir / f"probe_{probe}.safetensors"))
                entry["weights_index"] = len(weights)  # column in the scores (0 = shipped)
            report["probes"][probe] = entry
            out.write_text(json.dumps(report, indent=1) + "\n")
            print(f"probe {probe}: rc {proc.returncode}, {entry['seconds']} s, steps {entry.get('steps')}",
                  flush=True)
        scores = Path(tmp) / "scores.json"
        size = ["--width", "128", "--height", "64", "--max-disparity", "24"] if args.smoke else []
        cmd = [sys.executable, str(ROOT / "benchmarks" / "coverage.py"), "--weights",
               str(ROOT / "models" / "lite.safetensors"), *weights, "--pairs", str(args.pairs), *size,
               "--device", args.device, "--threads", str(args.threads), "--json", str(scores)]
        proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
        print(proc.stdout[-4000:], proc.stderr[-2000:] if proc.returncode else "", flush=True)
        failed = {"error": proc.stderr[-2000:]}
        report["scores"] = json.loads(scores.read_text()) if scores.exists() else failed
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if "rows" in report["scores"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
