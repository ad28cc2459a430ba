"""Is the scene network's uncertainty any good?  Measured on held-out synthetic street frames.

* semantics: expected calibration error (ECE, 15 bins) of the MC-averaged softmax;
* depth: AUSE of the absolute depth error (m) ranked by the aleatoric, the epistemic and the total variance
  (0 = the ranking of the oracle; compare with a random ranking);
* epistemic: mean mutual information per image on held-out frames vs out-of-distribution images (uniform
  noise, colour-inverted frames, procedural textured planes), and the AUROC of per-image MI for telling
  them apart (Bayesian SegNet's claim: higher epistemic uncertainty on unfamiliar input).

Also the Table-1 task metrics of the same weights.  ``--update-card`` writes everything, with this exact
command, into the weights' model card (the sha256 of the weights is unchanged).

    python benchmarks/scene_uncertainty.py --mc-samples 16 --update-card
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="scene .safetensors (default: shipped models/scene)")
    parser.add_argument("--mc-samples", type=int, default=16)
    parser.add_argument("--heldout-seeds", default="1:21", help="world seeds of the held-out set (< 100)")
    parser.add_argument("--frames-per-seed", type=int, default=10)
    parser.add_argument("--max-frames", type=int, default=100, help="evenly spaced subset for the MC runs")
    parser.add_argument("--ood-count", type=int, default=40, help="images per out-of-distribution set")
    parser.add_argument("--cache-dir", default="runs/scene_data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="torch seed (dropout masks)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    parser.add_argument("--update-card", action="store_true", help="record the metrics in the model card")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from scene_perception.data.scene_frames import SceneFrames, load_scene_frames, seed_range
    from scene_perception.data.splits import HELDOUT_SEED_LIMIT
    from scene_perception.evaluation.scene_eval import evaluate_tasks, evaluate_uncertainty
    from scene_perception.pipelines.scene import ScenePipeline

    seeds = seed_range(args.heldout_seeds)
    if max(seeds) >= HELDOUT_SEED_LIMIT:
        parser.error(f"held-out seeds must be < {HELDOUT_SEED_LIMIT} (training uses the others)")
    pipe = ScenePipeline.from_weights(args.weights, mc_samples=args.mc_samples)
    if pipe.input_size is None:
        parser.error("the model card records no input_size; cannot choose the evaluation resolution")
    h, w = pipe.input_size
    frames = load_scene_frames(seeds, args.frames_per_seed, h, w, cache_dir=args.cache_dir)
    t0 = time.time()
    tasks = evaluate_tasks(pipe.model, frames)
    idx = np.unique(np.linspace(0, len(frames) - 1, min(args.max_frames, len(frames))).round().astype(int))
    subset = SceneFrames(frames.images[idx], frames.semantic[idx], frames.instance[idx],
                         frames.inv_depth[idx], frames.seeds[idx])
    unc = evaluate_uncertainty(pipe, subset, ood_count=args.ood_count)
    elapsed = time.time() - t0

    print(f"Weights {pipe.model_name} ({'trained' if pipe.trained else 'UNTRAINED'}), held-out seeds "
          f"{args.heldout_seeds}: {len(frames)} frames for task metrics, {len(subset)} with "
          f"{args.mc_samples} MC-dropout samples; {args.ood_count} images per OOD set; {elapsed:.0f} s\n")
    print("| task metric | value |\n|---|---|")
    print(f"| semantic mIoU [%] | {tasks['miou_pct']:.1f} |")
    print(f"| pixel accuracy [%] | {tasks['pixel_accuracy_pct']:.1f} |")
    print(f"| instance mean error [px] | {tasks['instance_error_px']:.2f} |")
    print(f"| inverse depth mean error [1/m] | {tasks['inv_depth_error_per_m']:.4f} |")
    print(f"| instances >= 20 px found (IoU > 0.5): recall / precision [%] | "
          f"{tasks['instance_recall_pct']:.1f} / {tasks['instance_precision_pct']:.1f} |\n")
    print("| uncertainty metric | value |\n|---|---|")
    print(f"| semantic ECE (15 bins) | {unc['semantic_ece']:.4f} |")
    print(f"| semantic accuracy / mean confidence | {unc['semantic_accuracy']:.3f} / "
          f"{unc['semantic_mean_confidence']:.3f} |")
    print(f"| depth MAE [m] (finite GT) | {unc['depth_mae_m']:.2f} |")
    print(f"| depth AUSE, aleatoric variance | {unc['depth_ause_aleatoric']:.4f} |")
    print(f"| depth AUSE, epistemic variance | {unc['depth_ause_epistemic']:.4f} |")
    print(f"| depth AUSE, total variance | {unc['depth_ause_total']:.4f} |")
    print(f"| depth AUSE, random ranking | {unc['depth_ause_random_baseline']:.4f} |")
    print(f"| mean MI, held-out [nats] | {unc['mi_in_mean']:.5f} |")
    for kind, o in unc["ood"].items():
        print(f"| mean MI, OOD {kind} [nats] (x in-dist; AUROC) | {o['mi_mean']:.5f} "
              f"(x{o['mi_ratio_out_in']:.2f}; {o['auroc_image_mi']:.3f}) |")

    command = "python benchmarks/scene_uncertainty.py " + " ".join(sys.argv[1:] if argv is None else argv)
    record = {"tasks": tasks, "uncertainty": unc, "command": command.strip(),
              "heldout_seeds": args.heldout_seeds, "frames_per_seed": args.frames_per_seed}
    if args.json:
        from scene_perception.evaluation.benchmarking import write_json

        write_json(args.json, record)
    if args.update_card:
        from scene_perception.models.weights import load_scene_model

        _, info = load_scene_model(weights=args.weights) if args.weights else load_scene_model()
        if info.weights_path is None:
            parser.error("no weights file to update the card of")
        card_path = info.weights_path.with_suffix(".json")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        card["metrics"] = {
            **{k: v for k, v in card.get("metrics", {}).items() if k.startswith("train_")},
            "heldout": {
                "data": f"synthetic street world seeds {args.heldout_seeds} x {args.frames_per_seed} frames "
                        f"at {h}x{w} (never trained on)",
                "miou_pct": round(tasks["miou_pct"], 2),
                "pixel_accuracy_pct": round(tasks["pixel_accuracy_pct"], 2),
                "instance_error_px": round(tasks["instance_error_px"], 3),
                "inv_depth_error_per_m": round(tasks["inv_depth_error_per_m"], 5),
                "instance_recall_pct": round(tasks["instance_recall_pct"], 2),
                "instance_precision_pct": round(tasks["instance_precision_pct"], 2),
                "per_class_iou_pct": tasks["per_class_iou_pct"],
                "mc_samples": args.mc_samples,
                "semantic_ece": round(unc["semantic_ece"], 5),
                "depth_ause_aleatoric": round(unc["depth_ause_aleatoric"], 5),
                "depth_ause_epistemic": round(unc["depth_ause_epistemic"], 5),
                "depth_ause_total": round(unc["depth_ause_total"], 5),
                "depth_ause_random": round(unc["depth_ause_random_baseline"], 5),
                "mi_in_mean": unc["mi_in_mean"],
                "mi_ood": {k: {"mi_mean": o["mi_mean"], "auroc": round(o["auroc_image_mi"], 4)}
                           for k, o in unc["ood"].items()},
            },
            "command": command.strip(),
        }
        tmp = card_path.with_name(card_path.name + ".tmp")
        tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        tmp.replace(card_path)
        print(f"\nrecorded the metrics in {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
