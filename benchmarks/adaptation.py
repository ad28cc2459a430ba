#!/usr/bin/env python3
"""Does online self-supervised adaptation help on a domain the network never saw, and is it safe?

The shifted domain (``--shift``, see :data:`SHIFTS`): procedural pairs with surfaces the shipped weights were
not trained on (by default periodic ones; or textureless, dark, glossy and periodic ones), and/or seen through
another camera (the real-camera augmentation with vignetting and white balance: asymmetric colour, blur,
JPEG, ...).

* The stream the adapter trains on (no labels used): seeds from 30,000,000 (neither the validation nor the
  test range).  The adapter (``scene_perception.training.adapt.OnlineAdapter``) holds out every 4th frame
  and accepts a round only when that held-out photometric error drops.
* The evaluation: other pairs of the same shifted domain from the **test** split (seeds 10,000,000+), never
  offered to the adapter; EPE / bad-2 of the network alone (the part adaptation changes) and the median
  photometric p50 (the GT-free number the node publishes), before and after ``--minutes`` of adaptation.
* ``--shift chessboard``: a real rig instead (issue 26, ``results/2026-12-06_cpu/adaptation_chessboard``).
  The stream is the opencv-doc chessboard pairs whose board does not fit a plane, rectified with the
  package's calibration at half size and replayed in a loop; the evaluation is the pairs whose board does
  (:data:`PLANE_PAIRS`), network alone at full size (range 256, so the network sees them at half size),
  against the board's plane (``evaluation.board_plane``), as ``chessboard_planes.py --accuracy`` scores it.
* The bad stream: black frames and pairs with one camera covered (the right view at 5 % brightness) fed to
  a fresh adapter for the same number of rounds: it must refuse every frame and leave the weights as they
  were.

    python benchmarks/adaptation.py --shift repetitive --minutes 10 --json out/adaptation.json
    python benchmarks/adaptation.py --shift chessboard --holdout-every 3 --minutes 20 --audit
    python benchmarks/adaptation.py --quick      # a smoke run (< 1 min)

Prints markdown tables; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from scene_perception.data.augment import CAMERA_EFFECTS, augment_pair
from scene_perception.data.datasets import DatasetError
from scene_perception.data.procedural import SceneConfig, make_stereo_sample
from scene_perception.data.splits import held_out_seeds
from scene_perception.evaluation.benchmarking import parse_size, write_json
from scene_perception.evaluation.board_plane import plane_reference, rectified_chessboard
from scene_perception.evaluation.metrics import disparity_metrics, pool_metrics
from scene_perception.models.weights import ModelLoadError, load_far_head, load_stereo_model
from scene_perception.pipelines.image_tensor import image_to_tensor
from scene_perception.pipelines.quality import assess
from scene_perception.training.adapt import LOSSES, AdaptConfig, OnlineAdapter, acceptance, adapt_stream

#: What the shipped weights never trained on (their cards: sky and small disparities only): surfaces ...
SHIFTED_SURFACES = SceneConfig(textureless_probability=0.3, dark_probability=0.3, specular_probability=0.3,
                               repetitive_probability=0.2)
#: Periodic surfaces alone (stripes, checkerboards on 60 % of the surfaces): the shift where the shipped
#: weights lose most (EPE 2.3 -> 8.2 px) *and* their photometric error is far above that of the GT disparity
#: (p50 0.127 vs 0.071 on 8 test pairs), i.e. where the self-supervised signal can see the errors.  On
#: textureless or dark surfaces the network is worse too, but the GT disparity warps hardly better.
REPETITIVE = SceneConfig(repetitive_probability=0.6)
#: ``--shift``: ``repetitive``; ``surfaces`` (textureless, dark, glossy and repetitive ones); ``camera`` (the
#: real-camera augmentation with vignetting and white balance); ``both`` (surfaces and camera);
#: ``chessboard`` (real pairs of one rig, :func:`chessboard_data`).
SHIFTS = ("repetitive", "surfaces", "camera", "both", "chessboard")
STREAM_SEED_START = 30_000_000
DEFAULT_CHESSBOARD = Path(__file__).resolve().parents[1] / ".cache" / "eval" / "chessboard"
#: The opencv-doc pairs whose board fits a plane (evaluation.board_plane.plane_reference, rule_pixel8.md): the
#: evaluation of ``--shift chessboard``, never streamed.
PLANE_PAIRS = ("01", "02", "04", "06", "07", "12", "13")
#: The board sits at 100-204 px at full size: the network alone runs on the pair at half size.
CHESSBOARD_RANGE = 256.0


def shifted_pair(seed: int, size: tuple[int, int], max_disparity: float, shift: str = "both"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left, right, GT disparity) of the shifted domain; the camera effects are seeded by the pair."""
    h, w = size
    scene = {"surfaces": SHIFTED_SURFACES, "both": SHIFTED_SURFACES, "repetitive": REPETITIVE}.get(shift)
    s = make_stereo_sample(seed, width=w, height=h, max_disparity=max_disparity, nuisance=True, scene=scene)
    left, right = s.left, s.right
    if shift in ("camera", "both"):
        left, right = augment_pair(np.random.default_rng([seed, 7]), left, right, CAMERA_EFFECTS)
    return left, right, s.disparity


Pair = tuple[np.ndarray, np.ndarray]
Scored = tuple[np.ndarray, np.ndarray, np.ndarray]  # left, right, reference disparity (NaN: unknown)


def chessboard_data(src: str | Path, plane_pairs: tuple[str, ...] = PLANE_PAIRS, scale: float = 0.5
                    ) -> tuple[list[Pair], list[Scored]]:
    """(stream, evaluation) of ``--shift chessboard``: the pairs not in ``plane_pairs`` rectified and shrunk
    by ``scale`` (no labels: what the adapter sees), and each of ``plane_pairs`` at full size with its
    board's plane as the reference (NaN off the board).  Every pair calibrates the rig (from the corners, not
    the network).  Exits when a plane pair gives no plane reference (``plane_reference``)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            full = rectified_chessboard(src, tmp)
    except DatasetError as exc:  # no pairs there (not fetched), or too few with the board found
        raise SystemExit(f"error: {exc} (tools/fetch_eval_data.sh)") from exc
    # Shrunk as chessboard_to_folder(scale=...) writes them (INTER_AREA of the rectified pair): one
    # calibration, not two.
    h, w = full[0][1].shape[:2]
    small = (max(1, round(w * scale)), max(1, round(h * scale)))
    stream = [tuple(cv2.resize(img, small, interpolation=cv2.INTER_AREA) for img in (left, right))
              for name, left, right in full if name not in plane_pairs]
    evaluation = []
    for name, left, right in full:
        if name not in plane_pairs:
            continue
        ref, why = plane_reference(left, right)
        if why:
            raise SystemExit(f"error: chessboard pair {name} gives no plane reference: {why}")
        evaluation.append((left, right, ref["reference"]))
    if len(evaluation) != len(plane_pairs) or not stream:
        raise SystemExit(f"error: {src}: {len(evaluation)} of the plane pairs {plane_pairs}, {len(stream)} "
                         "other pairs")
    return stream, evaluation


@torch.no_grad()
def score_planes(model: torch.nn.Module, pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 far_head: torch.nn.Module | None, device: str = "cpu") -> dict[str, float]:
    """Network-alone EPE / bad-2 against the board's plane, pooled over the board pixels, and the median
    photometric p50, through the pipeline as ``chessboard_planes.py --accuracy`` runs it (a copy of
    ``model``; ``far_head`` of the starting weights for every model, so the valid pixels are decided
    alike)."""
    from scene_perception.pipelines.stereo_depth import StereoDepthPipeline

    pipe = StereoDepthPipeline(copy.deepcopy(model), device=device, max_disparity=CHESSBOARD_RANGE,
                               far_head=far_head, compute_points=False, local_refinement=None)
    metrics, photo = [], []
    for left, right, ref in pairs:
        disp = pipe(left, right).disparity
        metrics.append(disparity_metrics(disp, ref))
        d = torch.from_numpy(np.nan_to_num(disp, nan=0.0))[None, None].to(device)
        q = assess(image_to_tensor(left, device), image_to_tensor(right, device), d,
                   torch.from_numpy(np.isfinite(disp))[None, None].to(device), want_vertical=False)[0]
        if q.known:
            photo.append(q.photometric_p50)
    pooled = pool_metrics(metrics)
    return {"epe": pooled["epe"], "bad2": pooled["bad2"], "density": pooled["density"],
            "photometric_p50": float(np.median(photo)) if photo else float("nan")}


@torch.no_grad()
def score(model: torch.nn.Module, pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
          device: str = "cpu") -> dict[str, float]:
    """Network-alone EPE / bad-2 (valid GT) and median photometric p50 over ``pairs``."""
    model = model.to(device).eval()
    epe, bad2, photo = [], [], []
    for left, right, gt in pairs:
        lt, rt = image_to_tensor(left, device), image_to_tensor(right, device)
        disp, _ = model(lt, rt)
        m = disparity_metrics(disp[0, 0].cpu().numpy(), gt)
        epe.append(m["epe"])
        bad2.append(m["bad2"])
        q = assess(lt, rt, disp, torch.isfinite(disp), want_vertical=False)[0]
        if q.known:
            photo.append(q.photometric_p50)
    return {"epe": float(np.mean(epe)), "bad2": float(np.mean(bad2)),
            "photometric_p50": float(np.median(photo)) if photo else float("nan")}


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def run_adapter(adapter: OnlineAdapter, frames: list[tuple[np.ndarray, np.ndarray]], minutes: float,
                max_rounds: int, progress: bool) -> list[dict[str, Any]]:
    """Offer the stream (cycling), run rounds until the time or round budget is spent, or give up after
    ``4 * len(frames) + 8`` frames if the adapter never gets ready (e.g. every frame refused)."""
    bar = tqdm(total=max_rounds, disable=not progress, desc="adapt", dynamic_ncols=True)
    rounds, _ = adapt_stream(adapter, itertools.cycle(frames), minutes, max_rounds, 4 * len(frames) + 8,
                             on_round=lambda _: bar.update(1))
    bar.close()
    return [{"accepted": r.accepted, "before": r.holdout_before, "after": r.holdout_after,
             "anchor_before": r.anchor_before, "anchor_after": r.anchor_after,
             "sgbm_before": r.sgbm_before, "sgbm_after": r.sgbm_after, "reason": r.reason,
             "candidate_test": r.inspected or None, "seconds": round(r.seconds, 2)} for r in rounds]


def audit_table(rounds: list[dict[str, Any]], before: dict[str, float], min_improvement: float) -> None:
    """Per round: what the held-out frames and the anchor said, what each gate decided, and what the
    candidate really did on the test pairs (which the adapter never sees)."""
    print("| round | held-out photometric change % | anchor EPE change % | held-out SGBM agreement, points | "
          "photometric gate alone | the whole gate | candidate test EPE px (shipped "
          f"{before['epe']:.3f}) | test EPE change % | candidate test bad-2 % (shipped "
          f"{before['bad2']:.2f}) |")
    print("|---|---|---|---|---|---|---|---|---|")
    photometric_only = AdaptConfig(min_improvement=min_improvement, anchor_pairs=0)  # the gate without veto
    for i, r in enumerate(rounds, 1):
        held = 100 * (r["after"] / r["before"] - 1)
        anchor = 100 * (r["anchor_after"] / r["anchor_before"] - 1)
        alone = acceptance(r["before"], r["after"], math.nan, math.nan, photometric_only)[0]
        test = (r["candidate_test"] or {}).get("epe", float("nan"))
        bad2 = (r["candidate_test"] or {}).get("bad2", float("nan"))
        sgbm = 100 * (r.get("sgbm_after", math.nan) - r.get("sgbm_before", math.nan))
        print(f"| {i} | {held:+.1f} | {anchor:+.1f} | {sgbm:+.1f} | {'accept' if alone else 'refuse'} | "
              f"{'accept' if r['accepted'] else 'refuse'} | {test:.3f} | "
              f"{100 * (test / before['epe'] - 1):+.1f} | {bad2:.2f} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="stereo weights (default: the shipped lite)")
    parser.add_argument("--shift", choices=SHIFTS, default="repetitive", help="the unseen domain (SHIFTS)")
    parser.add_argument("--size", default="192x384", help="HxW of the rendered pairs")
    parser.add_argument("--max-disparity", type=float, default=64.0)
    parser.add_argument("--stream-frames", type=int, default=48)
    parser.add_argument("--eval-pairs", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=10.0, help="adaptation budget (wall clock)")
    parser.add_argument("--max-rounds", type=int, default=1000)
    parser.add_argument("--steps-per-round", type=int, default=AdaptConfig.steps_per_round)
    parser.add_argument("--lr", type=float, default=AdaptConfig.lr)
    parser.add_argument("--loss", choices=sorted(LOSSES), default=AdaptConfig.loss,
                        help="self-supervised loss variant (training.adapt.LOSSES)")
    parser.add_argument("--anchor-pairs", type=int, default=AdaptConfig.anchor_pairs,
                        help="anchor veto pairs (0: the photometric gate alone)")
    parser.add_argument("--max-anchor-rise", type=float, default=AdaptConfig.max_anchor_rise)
    parser.add_argument("--max-sgbm-drop", type=float, default=AdaptConfig.max_sgbm_drop,
                        help="the SGBM veto (share points, 0..1); -1 = off")
    parser.add_argument("--min-holdout-frames", type=int, default=AdaptConfig.min_holdout_frames)
    parser.add_argument("--holdout-every", type=int, default=AdaptConfig.holdout_every,
                        help="every Nth usable frame is held out (with a looped stream of k pairs, pick N "
                             "so that the held-out pairs are never trained on: 3 for the 6 chessboard pairs)")
    parser.add_argument("--chessboard-dir", default=str(DEFAULT_CHESSBOARD),
                        help="--shift chessboard: the opencv-doc pairs (tools/fetch_eval_data.sh)")
    parser.add_argument("--audit", action="store_true",
                        help="also score every round's candidate on the test pairs: how often each gate "
                             "accepts a network that got worse")
    parser.add_argument("--seed", type=int, default=AdaptConfig.seed,
                        help="the adapter's seed (which buffered frames and crops each step draws)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the adapter trains and the scoring runs")
    parser.add_argument("--out-dir", default="runs/adaptation_benchmark", help="accepted versions go here")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 2 rounds")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.stream_frames, args.eval_pairs, args.max_rounds = "96x192", 8, 2, 2
        args.steps_per_round, args.max_disparity, args.min_holdout_frames = 2, 32.0, 1
    torch.set_num_threads(args.threads)
    model, info = load_stereo_model("lite", args.weights)
    if args.shift == "chessboard":
        stream, evaluation = chessboard_data(args.chessboard_dir)
        if args.quick:
            stream, evaluation = stream[:4], evaluation[:1]
        args.stream_frames, args.eval_pairs = len(stream), len(evaluation)
        size = (int(stream[0][0].shape[0]), int(stream[0][0].shape[1]))
        args.size = f"{size[0]}x{size[1]}"
        try:
            far_head = load_far_head(info)[0]
        except ModelLoadError:
            far_head = None

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            return score_planes(m, evaluation, far_head, args.device)
    else:
        size = parse_size(args.size)
        stream = [shifted_pair(STREAM_SEED_START + i, size, args.max_disparity, args.shift)[:2]
                  for i in range(args.stream_frames)]
        evaluation = [shifted_pair(seed, size, args.max_disparity, args.shift)
                      for seed in held_out_seeds(args.eval_pairs)]

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            return score(m, evaluation, args.device)
    crop = (min(128, size[0]), min(256, size[1]))
    config = AdaptConfig(crop_height=crop[0], crop_width=crop[1], steps_per_round=args.steps_per_round,
                         lr=args.lr, loss=args.loss, anchor_pairs=args.anchor_pairs,
                         max_anchor_rise=args.max_anchor_rise, max_sgbm_drop=args.max_sgbm_drop,
                         min_holdout_frames=args.min_holdout_frames,
                         holdout_every=args.holdout_every, seed=args.seed, out_dir=args.out_dir)

    before = evaluate(model)
    adapter = OnlineAdapter(model, config, args.device, base={"name": info.name, "sha256": info.sha256})
    if args.audit:
        adapter.inspect = evaluate
    t0 = time.monotonic()
    rounds = run_adapter(adapter, stream, args.minutes, args.max_rounds, progress=True)
    spent = time.monotonic() - t0
    after = evaluate(adapter.published_model())

    # The bad stream: black frames and one covered camera.
    h, w = size
    black = (np.zeros((h, w, 3), np.uint8), np.zeros((h, w, 3), np.uint8))
    covered = [(left, (right * 0.05).astype(np.uint8)) for left, right in stream[:8]]
    bad_config = AdaptConfig(crop_height=crop[0], crop_width=crop[1], steps_per_round=args.steps_per_round,
                             min_holdout_frames=args.min_holdout_frames, holdout_every=args.holdout_every,
                             out_dir=str(Path(args.out_dir) / "bad_stream"))
    bad_adapter = OnlineAdapter(model, bad_config, args.device)
    bad_rounds = run_adapter(bad_adapter, [black, *covered], args.minutes, args.max_rounds, progress=False)
    bad_unchanged = _weights_equal(bad_adapter.published_model(), model.cpu())

    accepted = sum(r["accepted"] for r in rounds)
    what_is_scored = ("plane pairs of the same rig (board pixels)" if args.shift == "chessboard"
                      else "test-split pairs of the same domain")
    sha = info.sha256[:12] if info.sha256 else "-"
    print(f"# Online adaptation on a shifted domain: {args.shift} ({info.name}, {sha}; {args.device}, "
          f"{args.threads} threads)\n")
    print(f"{len(rounds)} rounds of {args.steps_per_round} steps ({args.loss} loss, anchor "
          f"{args.anchor_pairs} pairs) in {spent / 60:.1f} min, {accepted} accepted; stream "
          f"{args.stream_frames} frames {size[0]}x{size[1]} (held out: every {args.holdout_every}th), "
          f"evaluation {args.eval_pairs} {what_is_scored}\n")
    for i, r in enumerate(rounds, 1):
        print(f"- round {i}: {('accepted: ' if r['accepted'] else '') + r['reason']}")
    print()
    if args.audit and rounds:
        audit_table(rounds, before, config.min_improvement)
        print()
    print("| weights | EPE px | bad-2 % | photometric p50 |")
    print("|---|---|---|---|")
    for name, m in (("before (shipped)", before), ("after adaptation", after)):
        print(f"| {name} | {m['epe']:.3f} | {m['bad2']:.2f} | {m['photometric_p50']:.4f} |")
    reasons = ", ".join(f"{k}: {v}" for k, v in bad_adapter.counters.reasons.items())
    print(f"\nBad stream (black frames, right camera covered): {bad_adapter.counters.rejected} of "
          f"{bad_adapter.counters.offered} frames refused ({reasons}); {len(bad_rounds)} rounds; weights "
          f"{'unchanged' if bad_unchanged else 'CHANGED'}")
    results = {"model": {"name": info.name, "sha256": info.sha256}, "size": list(size),
               "config": vars(args), "adapt_config": {k: getattr(config, k) for k in vars(config)},
               "before": before, "after": after, "rounds": rounds, "minutes_spent": spent / 60,
               "bad_stream": {"offered": bad_adapter.counters.offered,
                              "rejected": bad_adapter.counters.rejected,
                              "reasons": bad_adapter.counters.reasons, "rounds": len(bad_rounds),
                              "weights_unchanged": bad_unchanged}}
    if args.json:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
