"""PoseNet: regress a camera's 6-DoF pose (position + unit quaternion) in one known scene from one image.

Kendall, Grimes & Cipolla (ICCV 2015) and Kendall & Cipolla (CVPR 2017), shrunk to train on a CPU: a
five-stage strided conv encoder (no ImageNet weights exist offline here), a coarse spatial pool that keeps
*where* things are in the image (a global average would throw away exactly the layout that tells two
places on a street apart), a fully connected layer, **dropout**, and two linear regressors.

Why dropout right before the regressors: it is what Bayesian PoseNet (Kendall & Cipolla, ICRA 2016)
samples at test time.  ``mc = True`` keeps it active in eval mode (BatchNorm stays in eval), so N
stochastic passes of one image - batched as one forward of N copies - give a sample of poses whose spread
is the epistemic uncertainty the pose node publishes as covariance.

Outputs: ``position`` in metres (the network regresses the position normalised by the training set's
mean and scale, stored in :class:`PoseNetConfig` so the weights file alone says what its outputs mean) and
``quaternion`` ``(x, y, z, w)`` normalised to unit length with ``w >= 0`` (q and -q are the same rotation;
the losses are sign-invariant, the canonical sign makes outputs comparable).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scene_perception.models.config_dict import config_from_dict

__all__ = ["CONFIGS", "PoseNet", "PoseNetConfig"]


@dataclass(frozen=True)
class PoseNetConfig:
    """Architecture plus the output normalisation (part of what the weights mean, so it lives here).

    Attributes:
        input_height, input_width: images are resized to this before the encoder (the pipeline does it);
            the camera's field of view must match the training data's, a resize does not change it.
        channels: widths of the five stride-2 stages (input / 32 at the end).
        pool: (rows, cols) of the adaptive average pool before the fully connected layer.
        hidden: width of the fully connected layer.
        dropout: probability of the dropout before the regressors (training and MC sampling).
        position_mean, position_scale: position = mean + scale * network output (metres).
        covariance_scale: per-axis std multipliers (x, y, z, rotX, rotY, rotZ) applied to the MC-dropout
            covariance (``cov * outer(s, s)``); 1 = raw MC dropout. Fitted on a validation drive by
            ``benchmarks/pose_accuracy.py --calibration-bag`` (MC dropout alone is over-confident).
        covariance_cross_scale: factor in [0, 1] on the translation-rotation cross blocks after the scale
            (:func:`~scene_perception.evaluation.pose.shrink_cross_covariance`); 1 = as sampled, 0 = the
            two blocks published as independent.  Fitted on a validation drive by
            ``benchmarks/calibration.py --fit-pose-cross``: the sampled cross-covariance made the joint
            6-DoF ellipsoid over-confident where each block alone was calibrated.
    """

    name: str = "posenet"
    input_height: int = 96
    input_width: int = 192
    channels: tuple[int, ...] = (16, 32, 64, 96, 128)
    pool: tuple[int, int] = (2, 4)
    hidden: int = 256
    dropout: float = 0.3
    position_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    position_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    covariance_scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    covariance_cross_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.input_height < 16 or self.input_width < 16:
            raise ValueError(f"input size must be >= 16x16, got {self.input_height}x{self.input_width}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive widths, got {self.channels}")
        if len(self.pool) != 2 or min(self.pool) < 1 or self.hidden < 1:
            raise ValueError(f"pool must be two positive ints, hidden >= 1; got {self.pool}, {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(self.position_mean) != 3 or len(self.position_scale) != 3 or min(self.position_scale) <= 0:
            raise ValueError("position_mean needs 3 values and position_scale 3 positive values")
        if len(self.covariance_scale) != 6 or not min(self.covariance_scale) > 0:
            raise ValueError(f"covariance_scale needs 6 positive values, got {self.covariance_scale}")
        if not 0.0 <= self.covariance_cross_scale <= 1.0:
            raise ValueError(f"covariance_cross_scale must be in [0, 1], got {self.covariance_cross_scale}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists) for model cards."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoseNetConfig:
        """Inverse of :meth:`to_dict` (``config_dict.config_from_dict``: a typo in a card is an error, not a
        default)."""
        return config_from_dict(cls, data)


CONFIGS: dict[str, PoseNetConfig] = {
    "posenet": PoseNetConfig(),
    "tiny": PoseNetConfig(name="tiny", input_height=32, input_width=64, channels=(8, 8, 16), pool=(1, 2),
                          hidden=32),
}


def _stage(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class PoseNet(nn.Module):
    """``forward(image) -> (position (B, 3) m, quaternion (B, 4) xyzw unit, w >= 0)``.

    ``image`` is RGB in [0, 1], (B, 3, input_height, input_width).  Set ``mc = True`` (or use
    :meth:`sample`) to keep dropout on in eval mode.
    """

    def __init__(self, config: PoseNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or PoseNetConfig()
        c = self.config
        stages, prev = [], 3
        for width in c.channels:
            stages.append(_stage(prev, width))
            prev = width
        self.encoder = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(c.pool)
        self.fc = nn.Linear(prev * c.pool[0] * c.pool[1], c.hidden)
        self.position_head = nn.Linear(c.hidden, 3)
        self.quaternion_head = nn.Linear(c.hidden, 4)
        self.register_buffer("position_mean", torch.tensor(c.position_mean, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("position_scale", torch.tensor(c.position_scale, dtype=torch.float32),
                             persistent=False)
        self.mc = False
        with torch.no_grad():  # start at the mean position and the identity rotation, not at random
            self.position_head.weight.mul_(0.1)
            self.position_head.bias.zero_()
            self.quaternion_head.weight.mul_(0.1)
            self.quaternion_head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))

    def features(self, image: Tensor) -> Tensor:
        """(B, hidden) features before dropout (deterministic in eval mode)."""
        x = self.pool(self.encoder((image - 0.5) / 0.25))
        return F.relu(self.fc(torch.flatten(x, 1)))

    def regress(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Dropout (active when training or ``mc``) and the two regressors."""
        h = F.dropout(features, self.config.dropout, training=self.training or self.mc)
        position = self.position_mean + self.position_scale * self.position_head(h)
        q = self.quaternion_head(h)
        q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-8)
        q = torch.where(q[:, 3:4] < 0, -q, q)
        return position, q

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        return self.regress(self.features(image))

    @torch.no_grad()
    def sample(self, image: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """``n`` MC-dropout samples of one image's pose: ``(n, 3)`` positions, ``(n, 4)`` quaternions.

        The encoder has no dropout, so it runs once; the ``n`` dropout masks are drawn in one batched
        pass over ``n`` copies of the features (the same result as ``n`` copies of the image, ``n``
        times cheaper).
        """
        if image.shape[0] != 1:
            raise ValueError(f"sample() takes one image, got a batch of {image.shape[0]}")
        feats = self.features(image).expand(int(n), -1)
        previous = self.mc
        self.mc = True
        try:
            return self.regress(feats)
        finally:
            self.mc = previous
