"""PoseNet losses (Kendall & Cipolla, "Geometric loss functions for camera pose regression", CVPR 2017).

Two selectable objectives:

* :class:`HomoscedasticPoseLoss` - ``L = Lx exp(-sx) + sx + Lq exp(-sq) + sq`` with learned ``sx, sq``
  (log variances of the homoscedastic position / rotation noise).  It replaces the hand-tuned beta of the
  original PoseNet: the balance between metres and quaternion units is learned.
* :func:`reprojection_loss` - project scene points with the ground-truth and the predicted pose and take the
  mean pixel distance.  It has *no* weighting to tune, because position and rotation errors meet in one
  unit (pixels) weighted by the scene's own geometry: far points constrain rotation, near points position.

Scene points are 3-D world points the training frame sees (back-projected from its ground-truth depth);
the loss needs only the GT pose, the intrinsics and those points.  Pixel distances are made robust
(:func:`robust_pixel_distance`): linear up to ``clip_px``, logarithmic beyond, because a wrong early
prediction can put points behind the camera, where pixel coordinates explode; the paper notes the loss is
hard to optimise from a random start and initialises from the homoscedastic model, which
``training/pose.py`` does with ``reprojection_warmup_steps``.

Quaternions are xyzw (geometry_msgs order); all distances are sign-invariant (q and -q are one rotation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scene_perception.geometry.rotations import quaternion_to_matrix_torch

__all__ = [
    "HomoscedasticPoseLoss",
    "position_error",
    "project_points",
    "quaternion_error",
    "reprojection_loss",
    "robust_pixel_distance",
]


def position_error(pred: Tensor, gt: Tensor, p: float = 1.0) -> Tensor:
    """(B,) ``||x - x_hat||_p`` in metres (the paper's L1 by default: robust to outlier frames)."""
    return torch.linalg.vector_norm(pred - gt, ord=p, dim=-1)


def quaternion_error(pred: Tensor, gt: Tensor, p: float = 1.0) -> Tensor:
    """(B,) ``min(||q - q_hat||, ||q + q_hat||)`` with ``q_hat`` normalised: invariant to either sign."""
    pred = pred / pred.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    gt = gt / gt.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.minimum(torch.linalg.vector_norm(pred - gt, ord=p, dim=-1),
                         torch.linalg.vector_norm(pred + gt, ord=p, dim=-1))


class HomoscedasticPoseLoss(nn.Module):
    """``Lx exp(-sx) + sx + Lq exp(-sq) + sq``; ``sx``, ``sq`` are learned (trained with the network).

    The paper's initial values ``sx = 0``, ``sq = -3`` start with rotation weighted ~20x, which matches the
    scale of quaternion errors (~0.01-0.1) to metre errors.
    """

    def __init__(self, sx: float = 0.0, sq: float = -3.0, p: float = 1.0) -> None:
        super().__init__()
        self.sx = nn.Parameter(torch.tensor(float(sx)))
        self.sq = nn.Parameter(torch.tensor(float(sq)))
        self.p = p

    def forward(self, position: Tensor, quaternion: Tensor, gt_position: Tensor, gt_quaternion: Tensor
                ) -> tuple[Tensor, dict[str, float]]:
        lx = position_error(position, gt_position, self.p).mean()
        lq = quaternion_error(quaternion, gt_quaternion, self.p).mean()
        loss = lx * torch.exp(-self.sx) + self.sx + lq * torch.exp(-self.sq) + self.sq
        return loss, {"lx": lx.item(), "lq": lq.item(), "sx": self.sx.item(), "sq": self.sq.item()}


def project_points(position: Tensor, quaternion: Tensor, points: Tensor, intrinsics: Tensor,
                   min_depth: float = 0.1) -> Tensor:
    """Pixels ``(B, P, 2)`` of world ``points (B, P, 3)`` seen from poses ``world_T_camera``.

    ``intrinsics`` is ``(B, 4)`` or ``(4,)`` ``fx, fy, cx, cy``.  Camera-frame depth is clamped to
    ``min_depth`` so points behind a (wrong) predicted camera give large but finite pixels.
    """
    rot = quaternion_to_matrix_torch(quaternion)  # (B, 3, 3) world_R_camera
    cam = torch.einsum("bji,bpj->bpi", rot, points - position[:, None, :])  # R^T (X - t)
    z = cam[..., 2].clamp_min(min_depth)
    k = intrinsics if intrinsics.dim() == 2 else intrinsics[None].expand(points.shape[0], 4)
    fx, fy, cx, cy = (k[:, i, None] for i in range(4))
    return torch.stack([fx * cam[..., 0] / z + cx, fy * cam[..., 1] / z + cy], -1)


def robust_pixel_distance(d: Tensor, clip_px: float) -> Tensor:
    """``d`` below ``clip_px``; ``clip_px * (1 + log(d / clip_px))`` above: continuous, with a shrinking
    but never zero gradient (a hard clip would stop learning on exactly the frames that are worst)."""
    if clip_px <= 0:
        return d
    return torch.where(d <= clip_px, d, clip_px * (1.0 + torch.log(d.clamp_min(clip_px) / clip_px)))


def reprojection_loss(position: Tensor, quaternion: Tensor, gt_position: Tensor, gt_quaternion: Tensor,
                      points: Tensor, intrinsics: Tensor, valid: Tensor | None = None,
                      clip_px: float = 50.0) -> tuple[Tensor, dict[str, float]]:
    """Mean robust pixel distance between the points projected with the GT and the predicted pose.

    Args:
        points: ``(B, P, 3)`` world points visible in each training frame.
        intrinsics: ``fx, fy, cx, cy`` of the frame the points were seen in, ``(B, 4)`` or ``(4,)``.
        valid: ``(B, P)`` bool; frames may have fewer usable points than ``P`` (padding is masked).
        clip_px: where the distance turns logarithmic (:func:`robust_pixel_distance`); 0 disables.

    Returns:
        ``(loss, {"reproj_px": mean un-clipped distance, "lx": ..., "lq": ...})``; the position and
        rotation errors are reported for monitoring only.
    """
    target = project_points(gt_position, gt_quaternion, points, intrinsics)
    pred = project_points(position, quaternion, points, intrinsics)
    dist = torch.linalg.vector_norm(pred - target, dim=-1)
    mask = torch.ones_like(dist, dtype=torch.bool) if valid is None else valid
    weights = mask.to(dist.dtype)
    denom = weights.sum().clamp_min(1.0)
    loss = (robust_pixel_distance(dist, clip_px) * weights).sum() / denom
    with torch.no_grad():
        raw = float((dist * weights).sum() / denom)
        lx = float(position_error(position, gt_position).mean())
        lq = float(quaternion_error(quaternion, gt_quaternion).mean())
    return loss, {"reproj_px": raw, "lx": lx, "lq": lq}
