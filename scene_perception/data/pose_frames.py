"""Images + ground-truth camera poses (+ visible scene points) from a rosbag2 bag, for PoseNet.

Why everything is loaded into memory: a relocalisation set is one drive through one scene (hundreds to a
few thousand small frames, tens of MB at the network's input size), and random access to any frame at any
step is what makes training resumable without data-loader state.

Scene points for the geometric reprojection loss come from the frame's own ground-truth depth: up to
``points_per_frame`` valid pixels (finite depth, not farther than ``max_point_depth``) drawn with a seed
derived from the frame index, back-projected with the intrinsics and mapped to the world with the GT pose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scene_perception.data.bag_io import read_stereo_bag
from scene_perception.geometry.rotations import matrix_to_quaternion

__all__ = ["PoseFrames", "bag_synth_settings", "load_pose_frames"]


@dataclass
class PoseFrames:
    """One drive: images at the network's input size and their GT poses (world_T_left_optical).

    ``intrinsics`` (fx, fy, cx, cy) are those of ``images`` (scaled with the resize); ``points`` (N, P, 3)
    float32 world points with ``points_valid`` (N, P) bool (frames with fewer usable pixels are padded).
    """

    images: np.ndarray  # (N, H, W, 3) uint8 RGB
    positions: np.ndarray  # (N, 3) float64 m
    quaternions: np.ndarray  # (N, 4) float64 xyzw, w >= 0
    points: np.ndarray  # (N, P, 3) float32
    points_valid: np.ndarray  # (N, P) bool
    intrinsics: np.ndarray  # (4,) float64 at the images' size
    stamps_ns: np.ndarray  # (N,) int64
    source: str
    settings: dict[str, Any]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def bag_synth_settings(bag: str | Path) -> dict[str, Any]:
    """The ``scene-perception synth`` settings a bag records (empty for bags from elsewhere)."""
    meta = Path(bag) / "metadata.yaml"
    try:
        import yaml

        data = yaml.safe_load(meta.read_text(encoding="utf-8")) or {}
        custom = data.get("rosbag2_bagfile_information", {}).get("custom_data") or {}
        return dict(json.loads(custom.get("scene_perception.synth", "{}")))
    except (OSError, ValueError, AttributeError):
        return {}


def _scene_points(depth: np.ndarray, pose: np.ndarray, k: tuple[float, float, float, float], count: int,
                  max_depth: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    fx, fy, cx, cy = k
    vs, us = np.nonzero(np.isfinite(depth) & (depth > 0) & (depth <= max_depth))
    pts = np.zeros((count, 3), np.float32)
    valid = np.zeros(count, bool)
    if len(us) == 0:
        return pts, valid
    pick = rng.choice(len(us), size=min(count, len(us)), replace=False)
    u, v = us[pick].astype(np.float64), vs[pick].astype(np.float64)
    z = depth[vs[pick], us[pick]].astype(np.float64)
    cam = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], 1)
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    pts[: len(pick)] = world
    valid[: len(pick)] = True
    return pts, valid


def load_pose_frames(bag: str | Path, input_size: tuple[int, int], points_per_frame: int = 256,
                     max_point_depth: float = 60.0, seed: int = 0, max_frames: int | None = None
                     ) -> PoseFrames:
    """Read ``bag`` (layout of :mod:`scene_perception.data.bag_io`, needs ``/gt/pose`` and camera_info;
    ``/gt/depth`` only for scene points) and resize its left images to ``input_size`` = (H, W).

    Raises ValueError when the bag has no frame with a pose and camera_info.
    """
    h, w = int(input_size[0]), int(input_size[1])
    images, positions, quats, points, valids, stamps = [], [], [], [], [], []
    intrinsics: np.ndarray | None = None
    for frame in read_stereo_bag(bag):
        if frame.pose is None or frame.camera is None:
            continue
        cam = frame.camera
        sx, sy = w / cam.width, h / cam.height
        img = frame.left
        if (img.shape[0], img.shape[1]) != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        images.append(img)
        positions.append(frame.pose[:3, 3].copy())
        quats.append(matrix_to_quaternion(frame.pose[:3, :3]))
        stamps.append(frame.stamp_ns)
        k_native = (cam.fx, cam.fy, cam.cx, cam.cy)
        # Pixel centres scale as (x + 0.5) * s - 0.5.
        k_input = np.array([cam.fx * sx, cam.fy * sy, (cam.cx + 0.5) * sx - 0.5, (cam.cy + 0.5) * sy - 0.5])
        if intrinsics is None:
            intrinsics = k_input
        elif not np.allclose(intrinsics, k_input, rtol=1e-6):
            raise ValueError(f"bag {bag}: camera intrinsics change within the drive; one camera expected")
        depth = frame.gt.get("depth")
        if depth is not None and points_per_frame > 0:
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(frame.index), 0x9057]))
            p, v = _scene_points(depth, frame.pose, k_native, points_per_frame, max_point_depth, rng)
        else:
            p = np.zeros((max(points_per_frame, 0), 3), np.float32)
            v = np.zeros(max(points_per_frame, 0), bool)
        points.append(p)
        valids.append(v)
        if max_frames is not None and len(images) >= max_frames:
            break
    if not images or intrinsics is None:
        raise ValueError(f"bag {bag} has no frame with both a /gt/pose and camera_info")
    return PoseFrames(
        images=np.stack(images), positions=np.stack(positions), quaternions=np.stack(quats),
        points=np.stack(points), points_valid=np.stack(valids), intrinsics=intrinsics,
        stamps_ns=np.asarray(stamps, np.int64), source=str(bag), settings=bag_synth_settings(bag),
    )
