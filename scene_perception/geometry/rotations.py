"""Quaternions, rotation vectors and camera poses in numpy and torch (no ROS imports).

Conventions, chosen to match geometry_msgs so nothing is reordered at the ROS boundary:

* quaternions are ``(x, y, z, w)`` (geometry_msgs/Quaternion order), unit length, and *canonical* with
  ``w >= 0``: q and -q are the same rotation, and a regression target must pick one of them;
* a pose is ``world_T_camera`` (4x4): a camera-frame point ``p_c`` maps to the world as ``R p_c + t``;
* rotation vectors (axis * angle, radians) are what geometry_msgs/PoseWithCovariance's rotation block
  (rotX, rotY, rotZ) means: small rotations about the fixed x, y, z axes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "canonical_quaternion",
    "matrix_to_quaternion",
    "mean_quaternion",
    "quaternion_angle_deg",
    "quaternion_multiply",
    "quaternion_to_matrix",
    "quaternion_to_matrix_torch",
    "quaternion_to_rotvec",
    "rotation_vector_between",
    "rotvec_to_quaternion",
]


def canonical_quaternion(q: np.ndarray) -> np.ndarray:
    """Normalise ``(..., 4)`` xyzw quaternions and flip them to ``w >= 0``."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def matrix_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """(x, y, z, w), ``w >= 0``, of a 3x3 rotation matrix (Shepperd's method, stable for any angle)."""
    m = np.asarray(rot, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = (0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s)
    return canonical_quaternion(np.array(q))


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """``(..., 4)`` xyzw quaternions (any length, any sign) -> ``(..., 3, 3)`` rotation matrices."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quaternion_to_matrix_torch(q: Tensor) -> Tensor:
    """Differentiable ``(..., 4)`` xyzw -> ``(..., 3, 3)``; normalises first, so the sign does not matter."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    x, y, z, w = q.unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of xyzw quaternions (rotation b first, then a), broadcasting."""
    ax, ay, az, aw = np.moveaxis(np.asarray(a, np.float64), -1, 0)
    bx, by, bz, bw = np.moveaxis(np.asarray(b, np.float64), -1, 0)
    return np.stack([
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ], -1)


def _conjugate(q: np.ndarray) -> np.ndarray:
    return np.asarray(q, np.float64) * np.array([-1.0, -1.0, -1.0, 1.0])


def quaternion_to_rotvec(q: np.ndarray) -> np.ndarray:
    """``(..., 4)`` xyzw -> ``(..., 3)`` rotation vectors (angle in [0, pi], the short way round)."""
    q = canonical_quaternion(q)
    v, w = q[..., :3], q[..., 3]
    s = np.linalg.norm(v, axis=-1)
    angle = 2.0 * np.arctan2(s, w)
    # angle / sin(angle / 2) -> 2 as s -> 0 (first-order: the vector part is half the rotation vector).
    scale = np.where(s > 1e-12, angle / np.maximum(s, 1e-12), 2.0)
    return v * scale[..., None]


def rotvec_to_quaternion(r: np.ndarray) -> np.ndarray:
    """``(..., 3)`` rotation vectors -> canonical ``(..., 4)`` xyzw quaternions."""
    r = np.asarray(r, np.float64)
    angle = np.linalg.norm(r, axis=-1, keepdims=True)
    half = angle / 2.0
    scale = np.where(angle > 1e-12, np.sin(half) / np.maximum(angle, 1e-12), 0.5)
    return canonical_quaternion(np.concatenate([r * scale, np.cos(half)], -1))


def rotation_vector_between(q_ref: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Rotation vector of ``q * q_ref^-1`` (the rotation taking ``q_ref`` to ``q``, in the fixed frame).

    That is the perturbation geometry_msgs/PoseWithCovariance's rotation covariance describes: "rotation
    about X, Y, Z axis" of the parent (map) frame applied on top of the mean orientation.
    """
    return quaternion_to_rotvec(quaternion_multiply(q, _conjugate(q_ref)))


def quaternion_angle_deg(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Angle (degrees) of the rotation between two xyzw quaternions; invariant to either's sign.

    Computed as ``4 atan2(|a - b|, |a + b|)`` (b sign-aligned to a), not ``2 acos(|a.b|)``: acos is flat
    at 1, so for the tiny errors a good pose estimate has the acos form resolves nothing below ~2e-6
    degrees in float64 (and is noisy just above); the atan2 form keeps full relative precision."""
    a = canonical_quaternion(q1)
    b = canonical_quaternion(q2)
    a, b = np.broadcast_arrays(a, b)
    sign = np.where(np.sum(a * b, axis=-1, keepdims=True) < 0, -1.0, 1.0)
    b = b * sign
    return np.degrees(4.0 * np.arctan2(np.linalg.norm(a - b, axis=-1), np.linalg.norm(a + b, axis=-1)))


def mean_quaternion(q: np.ndarray) -> np.ndarray:
    """Average rotation of ``(N, 4)`` quaternions: the principal eigenvector of ``sum q q^T`` (Markley
    et al. 2007), which is sign-invariant (unlike averaging the components) and exact for one sample."""
    q = canonical_quaternion(q)
    m = q.T @ q
    _, vecs = np.linalg.eigh(m)
    return canonical_quaternion(vecs[:, -1])
