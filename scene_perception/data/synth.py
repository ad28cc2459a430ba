"""``scene-perception synth``: render a synthetic street sequence with ground truth into a rosbag2 bag.

Why a bag rather than a folder of images: the same file then feeds ``ros2 bag play`` into the real nodes
(an end-to-end test of the ROS graph on data with known depth) and the offline evaluation/training code
(via :func:`scene_perception.data.bag_io.read_stereo_bag`), so both are judged on identical frames.

The generator is :func:`scene_perception.data.world.generate_sequence`; the generation parameters (and the
class table, when the world module exposes one) are stored in the bag's ``metadata.yaml`` ``custom_data``
so a bag documents how to reproduce it.  Pure Python: no ROS import, runs without a ROS installation.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from scene_perception.data.bag_io import write_stereo_bag

__all__ = ["build_parser", "synth_main", "write_synthetic_bag"]

_LOG = logging.getLogger(__name__)
_WORLD_MODULE = "scene_perception.data.world"


def _world() -> Any:
    """Import the world generator lazily, turning only *its* absence into a clear error.

    Import errors raised inside the world module (a broken dependency) are re-raised untouched, since
    hiding them behind "not available" would send the user looking in the wrong place.
    """
    try:
        return importlib.import_module(_WORLD_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != _WORLD_MODULE:
            raise
        raise RuntimeError(f"{_WORLD_MODULE} is not available in this installation; "
                           "the synth command needs its generate_sequence()") from exc


def _counted(frames: Iterator[Any], total: int, counter: list[int]) -> Iterator[Any]:
    """Pass frames through, counting them and logging progress (rendering long sequences takes minutes)."""
    step = max(1, total // 10)
    for frame in frames:
        counter[0] += 1
        if counter[0] % step == 0 or counter[0] == total:
            _LOG.info("rendered %d/%d frames", counter[0], total)
        yield frame


def write_synthetic_bag(
    out: str | Path,
    frames: int,
    storage: str = "mcap",
    width: int = 512,
    height: int = 256,
    fps: float = 10.0,
    seed: int = 0,
    texture_dir: str | Path | None = None,
    *,
    compress: bool = False,
    overwrite: bool = False,
    trajectory: dict[str, float] | None = None,
) -> Path:
    """Render ``frames`` frames of the synthetic world (seeded: same arguments, same bag) into ``out``.

    ``trajectory`` passes drive options to ``generate_sequence`` (``trajectory_seed``, ``speed``,
    ``lateral_offset``, ``start_x``, ``sway``, ``world_length``): several drives through one world, e.g. a
    camera-relocalisation train bag and a held-out bag on another path through the same street.

    Returns the bag directory.  Raises ValueError for nonsensical arguments before anything is written,
    RuntimeError when the world generator is missing, FileExistsError when ``out`` exists (see
    :func:`write_stereo_bag` for ``overwrite``).
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if texture_dir is not None and not Path(texture_dir).is_dir():
        raise FileNotFoundError(f"texture directory {texture_dir} does not exist")
    world = _world()
    kwargs: dict[str, Any] = {"seed": int(seed), "frames": int(frames), "width": int(width),
                              "height": int(height), "fps": float(fps)}
    if texture_dir is not None:
        if "texture_dir" not in inspect.signature(world.generate_sequence).parameters:
            raise ValueError(f"{_WORLD_MODULE}.generate_sequence does not support texture_dir")
        kwargs["texture_dir"] = str(texture_dir)
    if trajectory:
        accepted = inspect.signature(world.generate_sequence).parameters
        unknown = sorted(k for k in trajectory if k not in accepted)
        if unknown:
            raise ValueError(f"{_WORLD_MODULE}.generate_sequence does not support {', '.join(unknown)}")
        kwargs.update({k: v for k, v in trajectory.items() if v is not None})
    settings = {**kwargs, "generator": f"{_WORLD_MODULE}.generate_sequence"}
    custom = {"scene_perception.synth": json.dumps(settings, sort_keys=True)}
    classes = getattr(world, "CLASSES", None)
    if classes is not None:
        # Stored so a bag alone says what its /gt/semantic ids mean, even after the class table evolves.
        custom["scene_perception.classes"] = json.dumps(list(classes), default=str)
    counter = [0]
    path = write_stereo_bag(out, _counted(iter(world.generate_sequence(**kwargs)), frames, counter),
                            storage=storage, compress=compress, overwrite=overwrite, custom_data=custom)
    if counter[0] != frames:
        _LOG.warning("generate_sequence produced %d frames, %d were requested", counter[0], frames)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The ``scene-perception synth`` argument parser (self-contained so cli.py only forwards argv)."""
    p = argparse.ArgumentParser(
        prog="scene-perception synth",
        description="Render a synthetic stereo street sequence with exact ground truth (disparity, depth, "
                    "occlusion, semantic, instance, pose) into a rosbag2 bag playable with 'ros2 bag play'.",
    )
    p.add_argument("--out", required=True, help="new bag directory to create")
    p.add_argument("--frames", type=int, required=True, help="number of frames to render")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage plugin")
    p.add_argument("--width", type=int, default=512, help="image width in px (default 512)")
    p.add_argument("--height", type=int, default=256, help="image height in px (default 256)")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate setting the stamps (default 10)")
    p.add_argument("--seed", type=int, default=0, help="world and trajectory seed (default 0)")
    p.add_argument("--texture-dir", default=None,
                   help="optional directory of photos used as surface textures (never evaluation images)")
    drive = p.add_argument_group(
        "drive", "several drives through ONE world (relocalisation train vs held-out): keep --seed and "
        "--world-length equal, change the trajectory")
    drive.add_argument("--trajectory-seed", type=int, default=None,
                       help="seed of the sway/yaw phases (default: --seed)")
    drive.add_argument("--speed", type=float, default=None, help="m/s (default 8)")
    drive.add_argument("--lateral-offset", type=float, default=None,
                       help="metres added to the lane centre, +y = left (default 0)")
    drive.add_argument("--start-x", type=float, default=None, help="metres along the street (default 0)")
    drive.add_argument("--sway", type=float, default=None, help="lateral sway amplitude, m (default 0.25)")
    drive.add_argument("--world-length", type=float, default=None,
                       help="metres of street ahead of x = 0; the layout depends on it, so drives meant "
                            "to share a world must use the same value (default: drive + 150 m)")
    p.add_argument("--compress", action="store_true", help="zstd compression (about 2x smaller, slower)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag directory at --out")
    return p


def synth_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scene-perception synth``; returns the exit status (errors exit with a message)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    try:
        path = write_synthetic_bag(args.out, args.frames, storage=args.storage, width=args.width,
                                   height=args.height, fps=args.fps, seed=args.seed,
                                   texture_dir=args.texture_dir, compress=args.compress,
                                   overwrite=args.overwrite, trajectory={
                                       "trajectory_seed": args.trajectory_seed, "speed": args.speed,
                                       "lateral_offset": args.lateral_offset, "start_x": args.start_x,
                                       "sway": args.sway, "world_length": args.world_length})
    except (ValueError, RuntimeError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f"wrote {path} ({args.storage}): {args.frames} frames {args.width}x{args.height} at "
          f"{args.fps:g} fps, {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(synth_main())
