"""``scene-perception`` command: offline depth, running the ROS nodes, the demo, training.

Sub-commands import what they need lazily, so ``scene-perception --help`` stays fast and ``depth`` works
without touching ROS.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _read_rgb(path: str) -> np.ndarray:  # noqa: F821 (numpy imported lazily)
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"error: cannot read image {path!r} (missing, or not an image OpenCV can decode)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def cmd_depth(args: argparse.Namespace) -> int:
    """Disparity for one stereo pair, written as float32 .npy at the input resolution."""
    import numpy as np
    import torch

    from scene_perception.models.weights import ModelLoadError, load_stereo_model
    from scene_perception.pipelines.disparity_range import predict_disparity
    from scene_perception.pipelines.stereo_depth import StereoDepthPipeline

    if args.backend != "torch":
        raise SystemExit(f"error: backend {args.backend!r} is not available yet; use --backend torch")
    if args.threads:
        torch.set_num_threads(args.threads)
    left, right = _read_rgb(args.left), _read_rgb(args.right)
    if left.shape != right.shape:
        raise SystemExit(
            f"error: left image is {left.shape[1]}x{left.shape[0]} but right is "
            f"{right.shape[1]}x{right.shape[0]}; a rectified pair has one size"
        )
    try:
        model, info = load_stereo_model(args.model, args.weights)
    except ModelLoadError as exc:
        raise SystemExit(f"error: {exc}") from exc
    pipeline = StereoDepthPipeline(model.to(args.device).eval(), device=args.device, compute_points=False)
    disparity, std = predict_disparity(pipeline, left, right, args.max_disparity, float(model.max_disparity))
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
    return 0


def cmd_run(args: argparse.Namespace, ros_argv: list[str]) -> int:
    """Start the nodes named in a ROS 2 parameters file, in this process."""
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
    )


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    if args.task == "stereo":
        from scene_perception.training.stereo import main as train_main

        result = train_main(rest)
        return int(result) if isinstance(result, int) else 0
    raise SystemExit(f"error: unknown training task {args.task!r}")


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
    p.add_argument("--backend", default="torch", choices=["torch"], help="inference backend")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--uncertainty", default=None, help="also write the disparity std-dev (px) to this .npy")

    p = sub.add_parser(
        "run", help="start the ROS 2 nodes of a config file in one process (no ros2 launch needed)"
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

    p = sub.add_parser(
        "synth", help="render a synthetic stereo sequence with GT into a rosbag2", add_help=False
    )

    p = sub.add_parser("train", help="train a model (train stereo --help)", add_help=False)
    p.add_argument("task", choices=["stereo"])
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
    if args.command == "synth":
        from scene_perception.data.synth import synth_main

        result = synth_main(rest)
        return int(result) if isinstance(result, int) else 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "depth":
        return cmd_depth(args)
    if args.command == "run":
        return cmd_run(args, ros_argv)
    if args.command == "demo":
        return cmd_demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
