"""The shape of Kendall, Gal & Cipolla (CVPR 2018) Table 1 on held-out synthetic street frames.

Rows: single-task semantics / instance / depth, unweighted sum of the three losses, learned homoscedastic
uncertainty weighting.  Columns: semantic mIoU (%), instance mean error (px, Euclidean error of the
centroid offset over ground-truth instance pixels), inverse-depth mean error (1/m, every pixel; the sky has
inverse depth 0); and, beyond the paper, recall / precision of the clustered instances (>= 20 px, IoU >
0.5; needs both the semantic and the instance head).  Every variant gets the same training budget;
single-task rows report only their task.

    # train all five variants (same budget each), then score them:
    python benchmarks/multitask_table.py --train --steps 400 --out-dir runs/table
    # or score checkpoints trained before (e.g. by `scene-perception train scene`):
    python benchmarks/multitask_table.py --weights learned=runs/table/learned/scene.safetensors ...

Held-out data: world seeds 1..20 (training refuses seeds < 100), 10 frames each, at the training size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROWS = (
    ("single_semantic", "Semantics only", ("semantic",)),
    ("single_instance", "Instance only", ("instance",)),
    ("single_depth", "Depth only", ("depth",)),
    ("sum", "Unweighted sum of losses", ("semantic", "instance", "depth")),
    ("learned", "Learned uncertainty weighting", ("semantic", "instance", "depth")),
)


def _train_variant(name: str, args: argparse.Namespace) -> Path:
    weighting, _, task = name.partition("_")
    out = Path(args.out_dir) / name
    cmd = [sys.executable, "-m", "scene_perception.cli", "train", "scene", "--weighting", weighting,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--warmup-steps", "30",
           "--num-threads", str(args.threads), "--no-progress", "--out-dir", str(out)]
    if task:
        cmd += ["--task", task]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    print(f"trained {name} in {time.time() - t0:.0f} s: {' '.join(cmd)}", file=sys.stderr)
    return out / "scene.safetensors"


def _instances(m: dict, tasks: tuple[str, ...]) -> str:
    """Clustered instances need both the semantic (thing pixels) and the instance (offsets) heads."""
    if not {"semantic", "instance"} <= set(tasks):
        return "—"
    return f"{m['instance_recall_pct']:.1f} / {m['instance_precision_pct']:.1f}"


def _fmt(value: float, digits: int, shown: bool) -> str:
    return f"{value:.{digits}f}" if shown else "—"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", action="store_true", help="train the variants missing from --weights")
    parser.add_argument("--weights", nargs="*", default=[], help="NAME=PATH.safetensors (names: "
                        + ", ".join(r[0] for r in ROWS) + ")")
    parser.add_argument("--out-dir", default="runs/multitask_table", help="where --train puts the variants")
    parser.add_argument("--steps", type=int, default=400, help="training steps per variant (--train)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--heldout-seeds", default="1:21", help="world seeds of the held-out set (< 100)")
    parser.add_argument("--frames-per-seed", type=int, default=10)
    parser.add_argument("--cache-dir", default="runs/scene_data")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (training and evaluation)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from scene_perception.data.scene_frames import load_scene_frames, seed_range
    from scene_perception.data.splits import HELDOUT_SEED_LIMIT
    from scene_perception.evaluation.scene_eval import evaluate_tasks
    from scene_perception.models.weights import load_scene_model

    given = dict(item.split("=", 1) for item in args.weights)
    unknown = set(given) - {r[0] for r in ROWS}
    if unknown:
        parser.error(f"unknown variant names {sorted(unknown)}")
    seeds = seed_range(args.heldout_seeds)
    if max(seeds) >= HELDOUT_SEED_LIMIT:
        parser.error(f"held-out seeds must be < {HELDOUT_SEED_LIMIT} (training uses the others)")

    results: dict[str, dict] = {}
    frames = None
    for name, _, _ in ROWS:
        path = given.get(name)
        if path is None and args.train:
            path = str(_train_variant(name, args))
        if path is None:
            continue
        model, info = load_scene_model(weights=path)
        card = json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
        h, w = card.get("input_size", [96, 192])
        if frames is None or frames.size != (h, w):
            frames = load_scene_frames(seeds, args.frames_per_seed, h, w, cache_dir=args.cache_dir)
        metrics = evaluate_tasks(model, frames)
        metrics["steps"] = card.get("training", {}).get("steps")
        metrics["task_sigmas"] = card.get("training", {}).get("task_sigmas")
        metrics["weights"] = path
        metrics["sha256"] = info.sha256
        results[name] = metrics

    if not results:
        parser.error("nothing to score: pass --weights NAME=PATH or --train")
    print(f"Held-out synthetic street frames: seeds {args.heldout_seeds}, {len(frames)} frames at "
          f"{frames.size[0]}x{frames.size[1]}; deterministic forward (no MC dropout).\n")
    print("| Task weighting | Tasks (S/I/D) | mIoU [%] ↑ | Instance mean error [px] ↓ "
          "| Inverse depth mean error [1/m] ↓ | Instances found: recall / precision [%] | steps |")
    print("|---|---|---|---|---|---|---|")
    for name, label, tasks in ROWS:
        if name not in results:
            continue
        m = results[name]
        short = "+".join(t[0].upper() for t in tasks)
        print(f"| {label} | {short} | {_fmt(m['miou_pct'], 1, 'semantic' in tasks)} "
              f"| {_fmt(m['instance_error_px'], 2, 'instance' in tasks)} "
              f"| {_fmt(m['inv_depth_error_per_m'], 4, 'depth' in tasks)} "
              f"| {_instances(m, tasks)} | {m['steps']} |")
    learned = results.get("learned", {}).get("task_sigmas")
    if learned:
        print("\nLearned task sigmas (homoscedastic): "
              + ", ".join(f"{k} {v:.4g}" for k, v in learned.items()))
    if args.json:
        from scene_perception.evaluation.benchmarking import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
