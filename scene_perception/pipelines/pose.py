"""PosePipeline: one RGB image -> camera pose with a 6x6 covariance from Monte-Carlo dropout.

numpy in, dataclass out, no ROS: the pose node, the evaluation and the benchmark run this same object.

Covariance (Bayesian PoseNet, Kendall & Cipolla ICRA 2016): ``mc_samples`` stochastic passes with dropout
on - one batched forward, not a Python loop - give positions ``x_i`` and quaternions ``q_i``.  The reported
pose is their mean (positions averaged; rotations by the sign-invariant eigenvector mean), and the
covariance is the sample covariance of ``[x_i - x_mean, r_i]`` where ``r_i`` is the rotation vector
taking the mean orientation to ``q_i`` in the fixed (map) frame: the (x, y, z, rotX, rotY, rotZ) layout
of geometry_msgs/PoseWithCovariance.  It measures the model's (epistemic) uncertainty only: with few
training views near a place it grows, but an image the model is confidently wrong about gets a small one
(``benchmarks/pose_accuracy.py`` measures how often the truth lies inside the predicted 2-sigma ellipse).
A model card may carry per-axis ``covariance_scale`` factors fitted on a validation drive; they multiply
the standard deviations (``cov * outer(s, s)``, still symmetric PSD).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from scene_perception.geometry.rotations import mean_quaternion, rotation_vector_between
from scene_perception.models.posenet import PoseNet
from scene_perception.pipelines.image_tensor import image_to_tensor

__all__ = ["PosePipeline", "PoseResult", "pose_covariance", "shrink_cross_covariance"]


def shrink_cross_covariance(covariances: np.ndarray, factor: float) -> np.ndarray:
    """Multiply the translation-rotation cross blocks of (..., 6, 6) covariances by ``factor`` in [0, 1].

    ``factor * C + (1 - factor) * blockdiag(C)`` is a convex combination of two covariances, so the result is
    one too, and the 3x3 blocks are unchanged.  Why: the MC-dropout samples' cross-covariance is not
    calibrated by the per-block scales, and can make the joint 6-DoF ellipsoid over-confident.  Fitted by
    ``benchmarks/calibration.py --fit-pose-cross``."""
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"factor must be in [0, 1], got {factor}")
    out = np.array(covariances, dtype=np.float64, copy=True)
    out[..., :3, 3:] *= factor
    out[..., 3:, :3] *= factor
    return out


@dataclass
class PoseResult:
    """``position`` (3,) m and ``quaternion`` (4,) xyzw (w >= 0) of world_T_camera (the camera's optical
    frame in the map the model was trained in); ``covariance`` (6, 6) row-major over (x, y, z, rotX, rotY,
    rotZ), m^2 / rad^2; ``latency_ms`` of the whole call (resize + forward + statistics)."""

    position: np.ndarray
    quaternion: np.ndarray
    covariance: np.ndarray
    mc_samples: int
    latency_ms: float


def pose_covariance(positions: np.ndarray, quaternions: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean position, mean quaternion, 6x6 covariance) of pose samples ``(N, 3)``, ``(N, 4)``, N >= 2.

    The result is symmetrised (it is up to rounding anyway) so consumers that check symmetry exactly, e.g.
    a Cholesky in a filter, accept it.
    """
    positions = np.asarray(positions, np.float64)
    quaternions = np.asarray(quaternions, np.float64)
    if positions.shape[0] < 2:
        raise ValueError("a covariance needs at least 2 samples")
    mean_p = positions.mean(0)
    mean_q = mean_quaternion(quaternions)
    deviations = np.concatenate([positions - mean_p, rotation_vector_between(mean_q, quaternions)], 1)
    cov = deviations.T @ deviations / (positions.shape[0] - 1)
    return mean_p, mean_q, (cov + cov.T) / 2.0


class PosePipeline:
    """Resize to the model's input, run ``mc_samples`` dropout samples in one batch, summarise.

    Args:
        model: a trained :class:`PoseNet` (see ``models.weights.load_pose_model``).
        mc_samples: number of MC-dropout samples (>= 2; the covariance is what this pipeline is for).
        device: torch device string.
    """

    def __init__(self, model: PoseNet, mc_samples: int = 32, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.mc_samples = int(mc_samples)
        self.model_info: object | None = None  # ModelInfo when built by from_weights
        #: Per-axis std multipliers from the model card (calibration); ones = raw MC-dropout spread.
        self.covariance_scale = np.asarray(model.config.covariance_scale, np.float64)
        self.covariance_cross_scale = float(model.config.covariance_cross_scale)
        if self.mc_samples < 2:
            raise ValueError(f"mc_samples must be >= 2 (the covariance needs samples), got {mc_samples}")

    @classmethod
    def from_weights(cls, weights: str | Path | None, mc_samples: int = 32, device: str = "cpu",
                     name: str = "posenet") -> PosePipeline:
        """Load verified weights (safetensors + card; see ``load_pose_model``) and wrap them."""
        from scene_perception.models.weights import load_pose_model

        model, info = load_pose_model(name, weights)
        pipeline = cls(model, mc_samples, device)
        pipeline.model_info = info
        return pipeline

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the network sees; other images are resized (keep the training camera's field of view)."""
        return self.model.config.input_height, self.model.config.input_width

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, h, w) float in [0, 1] at the model's input size."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        h, w = self.input_size
        if image.shape[:2] != (h, w):
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        return image_to_tensor(image, self.device)

    def __call__(self, image: np.ndarray) -> PoseResult:
        t0 = time.perf_counter()
        x = self.preprocess(image)
        positions, quaternions = self.model.sample(x, self.mc_samples)
        mean_p, mean_q, cov = pose_covariance(positions.cpu().numpy(), quaternions.cpu().numpy())
        cov = cov * np.outer(self.covariance_scale, self.covariance_scale)
        if self.covariance_cross_scale != 1.0:
            cov = shrink_cross_covariance(cov, self.covariance_cross_scale)
        return PoseResult(position=mean_p, quaternion=mean_q, covariance=cov, mc_samples=self.mc_samples,
                          latency_ms=(time.perf_counter() - t0) * 1e3)
