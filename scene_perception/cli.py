"""``scene-perception`` command: offline depth, running the ROS nodes, the demo, training.

Sub-commands import what they need lazily, so ``scene-perception --help`` stays fast and ``depth`` works
without touching ROS.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any


def _read_rgb(path: str) -> np.ndarray:  # noqa: F821 (numpy imported lazily)
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"error: cannot read image {path!r} (missing, or not an image OpenCV can decode)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def cmd_depth(args: argparse.Namespace) -> int:
    """Disparity for one stereo pair, written as float32 .npy at the input resolution."""
    import numpy as np

    from scene_perception.engines.base import EngineError
    from scene_perception.models.weights import ModelLoadError
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT
    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    left, right = _read_rgb(args.left), _read_rgb(args.right)
    if left.shape != right.shape:
        raise SystemExit(
            f"error: left image is {left.shape[1]}x{left.shape[0]} but right is "
            f"{right.shape[1]}x{right.shape[0]}; a rectified pair has one size"
        )
    try:
        setup = build_stereo_pipeline(
            args.model, args.weights, backend=args.backend, device=args.device,
            engine_cache_dir=args.engine_cache_dir, num_threads=args.threads, compute_points=False,
            max_disparity=args.max_disparity, extend_range=args.extend_range,
            local_refinement=None if args.no_local_refinement else DEFAULT_LOCAL_REFINEMENT,
        )
        result = setup.pipeline(left, right)
    except (ModelLoadError, EngineError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    engine, info = setup.pipeline.engine, setup.info
    disparity, std = result.disparity, result.disparity_std
    logging.getLogger(__name__).info("inference: %s", engine.describe())
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, disparity.astype(np.float32))
    if args.uncertainty:
        np.save(args.uncertainty, std.astype(np.float32))
    trained = "" if info.trained else " (UNTRAINED weights: meaningless output)"
    print(
        f"wrote {out} {disparity.shape[1]}x{disparity.shape[0]} float32, disparity "
        f"{np.nanmin(disparity):.1f}..{np.nanmax(disparity):.1f} px{trained}"
    )
    if args.quality:
        print(_quality_report(left, right, result, setup.pipeline.device))
    return 0


def _quality_report(left: np.ndarray, right: np.ndarray, result: Any, device: Any) -> str:  # noqa: F821
    """The GT-free live quality of one result, judged by the nodes' WARN defaults (docs/live_quality.md)."""
    from scene_perception.pipelines.quality import assess_arrays
    from scene_perception.pipelines.quality_thresholds import DEFAULT_THRESHOLDS, degraded_reasons, shown

    q = assess_arrays(left, right, result.disparity, result.valid, device,
                      second_opinion=result.sgbm_disparity)
    if not q.known:
        return (f"quality: unknown (only {q.scored_pixels} pixels to score: valid, in view of the right "
                "image and not occluded)")

    consistent, agreeing = 100.0 * q.lr_consistent, 100.0 * q.sgbm_agreement
    # One frame, so only the thresholds that hold for one frame: the node's left-right WARN is set for its
    # network check, which this does not run (the uniqueness share here is about 100 % minus the occlusions).
    thresholds = dataclasses.replace(DEFAULT_THRESHOLDS, lr_consistent_pct=0.0)
    reasons = degraded_reasons(thresholds, q.photometric_p50, consistent, q.vertical_offset_px, agreeing)
    verdict = ("looks degraded: " + "; ".join(reasons)) if reasons else "no WARN threshold crossed"
    return (f"quality (GT-free, docs/live_quality.md): photometric error p50 {q.photometric_p50:.4f}, "
            f"left-right consistent {consistent:.1f} % (uniqueness check), vertical offset "
            f"{shown(q.vertical_offset_px, '+.2f', ' px')} "
            f"(spread {shown(q.vertical_spread_px, '.2f', ' px')}), "
            f"SGBM-agreeing {shown(agreeing, '.1f', ' %')}: "
            f"{verdict}")


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """Export GC-Net at one static size to ONNX, checked for static shapes and TensorRT-supported ops."""
    from scene_perception.engines.cache import model_digest
    from scene_perception.engines.onnx_export import OnnxExportError, export_onnx, padded_size
    from scene_perception.models.weights import ModelLoadError, load_stereo_model

    try:
        model, info = load_stereo_model(args.model, args.weights)
    except ModelLoadError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.height <= 0 or args.width <= 0:
        raise SystemExit(f"error: --height/--width must be positive, got {args.height}x{args.width}")
    h, w = padded_size(args.height, args.width, model.size_divisor)
    if (h, w) != (args.height, args.width):
        # The pipeline pads frames the same way (replicate, bottom/right), so this graph fits them.
        print(
            f"note: {args.width}x{args.height} padded to {w}x{h} (multiples of size_divisor="
            f"{model.size_divisor}), as the pipeline pads camera frames"
        )
    try:
        report = export_onnx(model, args.output, h, w, model_sha256=model_digest(model, info.sha256))
    except OnnxExportError as exc:
        raise SystemExit(f"error: {exc}") from exc
    trained = "" if info.trained else " (UNTRAINED weights: meaningless output)"
    print(f"wrote {report.summary()}{trained}")
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    """Serialized TensorRT engine from an exported ONNX graph (needs tensorrt and a CUDA GPU)."""
    from scene_perception.engines.base import EngineError
    from scene_perception.engines.cache import EngineCache, EngineKey, file_sha256
    from scene_perception.engines.onnx_export import OnnxExportError, check_onnx
    from scene_perception.engines.tensorrt_engine import (
        build_serialized_engine,
        engine_key_extra,
        gpu_name,
        tensorrt_unavailable_reason,
        tensorrt_version,
    )

    try:
        report = check_onnx(args.onnx)
    except OnnxExportError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if not report.ok:
        raise SystemExit(f"error: {args.onnx} is not deployable to TensorRT: " + "; ".join(report.problems))
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise SystemExit(
            f"error: build-engine needs the tensorrt Python package and a CUDA GPU: {reason}. "
            "Export works anywhere (export-onnx); build the engine on the target machine."
        )
    shape = report.inputs.get("left", ())
    precision = "int8" if args.int8 else ("fp16" if args.fp16 else "fp32")
    output = Path(args.output)
    try:
        meta = build_serialized_engine(
            args.onnx,
            output,
            fp16=args.fp16 or args.int8,
            int8=args.int8,
            workspace_mb=args.workspace_mb,
        )
    except (EngineError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    # The same metadata JSON the cache writes, so the file can be verified (and dropped into a cache).
    key = EngineKey(
        report.metadata.get("scene_perception.model_sha256", "") or file_sha256(args.onnx),
        tuple(int(d) for d in shape),
        precision,
        gpu_name=gpu_name(),
        tensorrt_version=tensorrt_version(),
        artifact="tensorrt",
        opset=report.opset,
        extra=engine_key_extra(precision),  # as the cache keys its own builds, so the file can join one
    )
    EngineCache(output.parent).write_metadata(key, output, build=meta)
    size_mb = output.stat().st_size / 1e6
    print(f"wrote {output} ({size_mb:.1f} MB, {precision}, TensorRT {meta['tensorrt_version']})")
    return 0


def cmd_run(args: argparse.Namespace, ros_argv: list[str]) -> int:
    """Start the nodes named in a ROS 2 parameters file, in this process.

    Exit status 1, after one line naming the node and the reason, when the file cannot be read or any node
    fails to configure or activate (see :func:`scene_perception.ros.runner.run_nodes`): a robot must not
    come up with a perception node silently down.
    """
    from scene_perception.ros.runner import nodes_from_config, run_nodes

    config = Path(args.config)
    if not config.is_file():
        raise SystemExit(f"error: config file {config} does not exist")
    try:
        specs = nodes_from_config(config)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    argv = ["scene-perception", *(["--no-autostart"] if args.no_autostart else []), *ros_argv]
    return run_nodes(specs, argv=argv, params_file=config)


def cmd_demo(args: argparse.Namespace) -> int:
    from scene_perception.ros.demo import run_demo

    return run_demo(
        out_dir=Path(args.out),
        frames=args.frames,
        model=args.model,
        weights=args.weights,
        width=args.width,
        height=args.height,
        seed=args.seed,
        backend=args.backend,
    )


def _dataset_options(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` reader options (``resolution=Q``, ``split=train``, ``require_gt=false``) as a dict."""
    options: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --dataset-option must look like KEY=VALUE, got {item!r}")
        value: object = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        elif text.lstrip("-").isdigit():
            value = int(text)
        options[key.replace("-", "_")] = value
    return options


def cmd_eval_dataset(args: argparse.Namespace) -> int:
    """Score the stereo pipeline (and SGBM with --baseline sgbm) on a public dataset: report + JSON."""
    import json
    import shlex

    import cv2

    from scene_perception.data.datasets import DatasetError, open_dataset
    from scene_perception.engines.base import EngineError
    from scene_perception.evaluation.dataset_eval import (
        evaluate_dataset,
        markdown_overall,
        markdown_semantics,
        scenes_summary,
        write_report,
    )
    from scene_perception.models.weights import ModelLoadError
    from scene_perception.pipelines.local_refinement_config import DEFAULT_LOCAL_REFINEMENT
    from scene_perception.pipelines.stereo_factory import build_stereo_pipeline

    if not args.root:
        raise SystemExit("error: --dataset needs --root DIR (the dataset's folder)")
    try:
        dataset = open_dataset(args.dataset, args.root, **_dataset_options(args.dataset_option))
    except (DatasetError, TypeError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    dataset.subset(args.limit)
    if args.threads > 0:
        cv2.setNumThreads(args.threads)
    refinement = None if args.no_local_refinement else DEFAULT_LOCAL_REFINEMENT
    try:
        setup = build_stereo_pipeline(
            args.model, args.weights, backend=args.backend, device=args.device,
            engine_cache_dir=args.engine_cache_dir, num_threads=args.threads, compute_points=False,
            max_network_pixels=args.max_network_pixels, extend_range=args.extend_range,
            local_refinement=refinement,
        )
    except (ModelLoadError, EngineError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    info = setup.info
    logging.getLogger(__name__).info("%s; inference: %s", dataset.describe(),
                                     setup.pipeline.engine.describe())
    settings = {
        "reader": dataset.describe(), "model": info.name, "weights": str(info.weights_path or ""),
        "trained": info.trained, "sha256": info.sha256, "backend": setup.choice.backend,
        "device": str(setup.pipeline.device), "local_refinement": refinement is not None,
        "baseline": None if args.baseline == "none" else args.baseline, "limit": args.limit,
        "max_network_pixels": args.max_network_pixels, "extend_range": args.extend_range,
        "threads": args.threads,
    }
    scene = None
    if args.dataset == "cityscapes" and not args.no_scene:
        # Its gtFine labels score the scene network too (the one dataset here with semantic labels).
        from scene_perception.pipelines.scene import ScenePipeline

        try:
            scene = ScenePipeline.from_weights(args.scene_weights, mc_samples=0)
        except (ModelLoadError, ValueError) as exc:
            raise SystemExit(f"error: scene weights: {exc}") from exc
        settings["scene_weights"] = args.scene_weights or "models/scene.safetensors"
    try:
        ev = evaluate_dataset(dataset, setup.pipeline, baseline=settings["baseline"], worst=args.figures,
                              settings=settings, scene_pipeline=scene)
    except (DatasetError, EngineError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if not ev.scenes and ev.semantics is None:
        raise SystemExit(f"error: no pair with GT in {dataset.describe()}: nothing to score")
    command = "scene-perception " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = write_report(ev, args.out, command)
    doc = ev.to_json()
    json_path = Path(args.json) if args.json else Path(args.out) / "results.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    untrained = "" if info.trained else "  (UNTRAINED weights: meaningless numbers)"
    print(f"# {ev.dataset}: {scenes_summary(ev.scenes)}{untrained}\n")
    if ev.scenes:
        print(markdown_overall(ev))
    if ev.semantics is not None:
        print("\nsemantics (scene network):\n" + markdown_semantics(ev.semantics))
    print(f"\nreport: {report}\nresults: {json_path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Replay a rosbag2 with ground truth through the live node; score, report.  With ``--dataset``:
    score the pipeline on a public dataset instead (:func:`cmd_eval_dataset`)."""
    if args.dataset:
        if args.bag:
            raise SystemExit("error: --bag and --dataset are two modes; give one")
        return cmd_eval_dataset(args)
    if not args.bag:
        raise SystemExit("error: eval needs --bag DIR (a rosbag2 with GT) or --dataset NAME --root DIR")
    from scene_perception.ros.bag_eval import evaluate_bag

    bag = Path(args.bag)
    if not (bag / "metadata.yaml").is_file():
        raise SystemExit(f"error: {bag} is not a rosbag2 directory (no metadata.yaml)")
    scene = False if args.no_scene else None  # None: run the scene node when the bag has semantic GT
    # None: run the pose node when the bag has GT poses, a model loads and the bag is from its world.
    pose = False if args.no_pose else (True if args.pose else None)
    return evaluate_bag(
        bag,
        Path(args.out),
        args.model,
        args.weights,
        backend=args.backend,
        scene=scene,
        scene_weights=args.scene_weights,
        pose=pose,
        pose_weights=args.pose_weights,
    )


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    if args.task == "stereo":
        from scene_perception.training.stereo import main as train_main

        result = train_main(rest)
        return int(result) if isinstance(result, int) else 0
    if args.task == "pose":
        from scene_perception.training.pose import main as train_pose_main

        return int(train_pose_main(rest))
    if args.task == "scene":
        from scene_perception.training.multitask import main as train_scene_main

        return int(train_scene_main(rest))
    if args.task == "far-head":
        from scene_perception.training.far_head import main as train_far_main

        return int(train_far_main(rest))
    raise SystemExit(f"error: unknown training task {args.task!r}")


def _add_extend_range(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    from scene_perception.pipelines.validity_defaults import DEFAULT_EXTEND_RANGE

    p.add_argument("--extend-range", action=argparse.BooleanOptionalAction, default=DEFAULT_EXTEND_RANGE,
                   help="above the network's range: widen its cost volume and run at full size, instead "
                   "of shrinking the pair (docs/refinement.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scene-perception", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("depth", help="disparity for one stereo pair -> float32 .npy")
    p.add_argument("--left", required=True, help="left rectified image")
    p.add_argument("--right", required=True, help="right rectified image")
    p.add_argument("--output", required=True, help="output .npy (float32 HxW, left(x) matches right(x-d))")
    p.add_argument(
        "--max-disparity",
        type=float,
        default=None,
        help="largest disparity in the scene (px); images are downscaled if the model's range is smaller",
    )
    p.add_argument("--model", default="lite", help="model configuration (lite, paper)")
    p.add_argument(
        "--weights", default=None, help="safetensors weights (default: shipped weights for --model)"
    )
    p.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "onnxruntime", "tensorrt", "auto"],
        help="inference backend (auto: tensorrt > onnxruntime-cuda > torch-cuda > onnxruntime-cpu)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--engine-cache-dir",
        default="~/.cache/scene_perception/engines",
        help="where onnxruntime/tensorrt backends cache exported graphs and engines",
    )
    p.add_argument("--threads", type=int, default=0, help="torch / onnxruntime threads (0 = default)")
    p.add_argument("--uncertainty", default=None, help="also write the disparity std-dev (px) to this .npy")
    p.add_argument(
        "--quality",
        action="store_true",
        help="also print the GT-free quality of the result (photometric error, left-right consistency, "
             "vertical misalignment of the pair, SGBM agreement) and whether it crosses the nodes' WARN "
             "thresholds (docs/live_quality.md): a check that the pair is rectified and the depth plausible",
    )
    p.add_argument(
        "--no-local-refinement",
        action="store_true",
        help="write the network's own disparity, without the default local refinement (docs/refinement.md)",
    )
    _add_extend_range(p)

    p = sub.add_parser("export-onnx", help="export GC-Net at one static size to ONNX (checked for TensorRT)")
    p.add_argument("--model", default="lite", help="model configuration (lite, paper)")
    p.add_argument("--weights", default=None, help="safetensors weights (default: shipped weights)")
    p.add_argument("--height", type=int, required=True, help="input height (padded up to size_divisor)")
    p.add_argument("--width", type=int, required=True, help="input width (padded up to size_divisor)")
    p.add_argument("--output", required=True, help="output .onnx")

    p = sub.add_parser("build-engine", help="build a TensorRT engine from an exported ONNX graph (GPU)")
    p.add_argument("--onnx", required=True, help="graph written by export-onnx")
    p.add_argument("--output", required=True, help="output .engine (a .json with its sha256 goes beside)")
    p.add_argument("--fp16", action="store_true", help="allow FP16 kernels (recommended)")
    p.add_argument("--int8", action="store_true",
                   help="INT8 from a graph that already carries Q/DQ nodes (explicit quantization, e.g. "
                        "NVIDIA ModelOpt); TensorRT 11 removed implicit calibration (docs/backends.md)")
    p.add_argument("--workspace-mb", type=int, default=4096, help="TensorRT builder workspace limit")

    p = sub.add_parser(
        "run",
        help="start the ROS 2 nodes of a config file in one process (no ros2 launch needed); exits 1 when a "
        "node cannot start (invalid parameter, missing weights ...)",
    )
    p.add_argument("--config", default="config/perception.yaml", help="ROS 2 parameters file")
    p.add_argument("--no-autostart", action="store_true", help="leave lifecycle nodes unconfigured")

    p = sub.add_parser("demo", help="synthetic stereo through the running node; metrics and a figure")
    p.add_argument("--out", default="out/demo", help="output folder")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=256)
    p.add_argument(
        "--seed", type=int, default=7, help="synthetic world seed (the training never uses worlds)"
    )
    p.add_argument("--backend", default="torch", choices=["auto", "torch", "onnxruntime", "tensorrt"])

    p = sub.add_parser(
        "eval", help="replay a rosbag2 with GT through the live node, or score a public dataset "
        "(--dataset); metrics, report, figures"
    )
    p.add_argument(
        "--bag", default=None, help="rosbag2 directory with stereo + /gt/* topics (e.g. from synth)"
    )
    p.add_argument("--out", default="out/eval", help="output folder (report.md, figures, recorded outputs)")
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default=None)
    p.add_argument("--backend", default="torch", choices=["auto", "torch", "onnxruntime", "tensorrt"])
    g = p.add_argument_group("dataset mode (instead of --bag; docs/benchmarks.md)")
    g.add_argument("--dataset", default=None,
                   choices=["middlebury", "eth3d", "kitti2012", "kitti2015", "sceneflow", "cityscapes"],
                   help="score the stereo pipeline on this dataset's pairs with GT (needs --root)")
    g.add_argument("--root", default=None, help="the dataset's folder (layouts: docs/benchmarks.md)")
    g.add_argument("--baseline", default="none", choices=["none", "sgbm"],
                   help="sgbm: also run OpenCV SGBM_3WAY (the notes' settings) on the same pairs and range")
    g.add_argument("--limit", type=int, default=None, help="only the first N pairs (a quick look)")
    g.add_argument("--json", default=None,
                   help="write the results here (default: <out>/results.json): dataset, overall, methods, "
                   "scenes; rates in %% of valid-GT pixels")
    g.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, repeatable: resolution=F|H|Q (middlebury), split=train|val|test, "
                   "render_pass=clean|final (sceneflow)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--threads", type=int, default=0,
                   help="torch / onnxruntime / OpenCV threads (0 = default)")
    g.add_argument("--no-local-refinement", action="store_true",
                   help="score the network's own disparity, without the default local refinement")
    g.add_argument("--max-network-pixels", type=int, default=0,
                   help="run the network on at most this many pixels (the pair shrunk, the result scaled "
                   "back and refined at full size); 0 = only the range decides")
    _add_extend_range(g)
    g.add_argument("--figures", type=int, default=3, help="figures of the N worst scenes in report.md")
    g.add_argument("--engine-cache-dir", default="~/.cache/scene_perception/engines",
                   help="where onnxruntime/tensorrt backends cache exported graphs and engines")
    p.add_argument(
        "--scene-weights",
        default=None,
        help="multi-task weights for the scene node (default: shipped models/scene.safetensors); the scene "
        "node runs, and mIoU is reported, when the bag has /gt/semantic; with --dataset cityscapes its "
        "semantics are scored on gtFine",
    )
    p.add_argument("--no-scene", action="store_true",
                   help="do not run the scene node / network (stereo metrics only)")
    p.add_argument(
        "--pose-weights",
        default=None,
        help="PoseNet weights for the pose node (default: shipped models/posenet.safetensors); the pose node "
        "runs, and pose errors are reported, when the bag has /gt/pose, the weights load and the bag "
        "is from the world the model was trained in (see --pose)",
    )
    p.add_argument("--no-pose", action="store_true", help="do not run the pose node")
    p.add_argument(
        "--pose",
        action="store_true",
        help="run the pose node even when the bag is not from the world the pose model was trained in "
        "(default: skip it then; the errors would be meaningless)",
    )

    p = sub.add_parser(
        "synth", help="render a synthetic stereo sequence with GT into a rosbag2", add_help=False
    )

    p = sub.add_parser(
        "adapt", help="adapt the stereo network to a recording, self-supervised (adapt --help)",
        add_help=False,
    )

    p = sub.add_parser("train", help="train a model (train stereo|pose|scene|far-head --help)",
                       add_help=False)
    p.add_argument("task", choices=["stereo", "pose", "scene", "far-head"])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_argv: list[str] = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_argv = argv[:i], argv[i:]
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    if args.command == "train":
        return cmd_train(args, rest)
    if args.command == "adapt":
        from scene_perception.training.adapt import main as adapt_main

        return int(adapt_main(rest))
    if args.command == "synth":
        from scene_perception.data.synth import synth_main

        result = synth_main(rest)
        return int(result) if isinstance(result, int) else 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "depth":
        return cmd_depth(args)
    if args.command == "export-onnx":
        return cmd_export_onnx(args)
    if args.command == "build-engine":
        return cmd_build_engine(args)
    if args.command == "run":
        return cmd_run(args, ros_argv)
    if args.command == "eval":
        return cmd_eval(args)
    if args.command == "demo":
        return cmd_demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
