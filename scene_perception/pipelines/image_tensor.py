"""The one conversion of a camera image (numpy, uint8) into the network input layout (torch, float)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["image_to_tensor"]


def image_to_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, C) uint8 -> (1, C, H, W) float32 in [0, 1] on ``device``.

    The uint8 array goes to the device before the float conversion (a quarter of the bytes to move).
    ``torch.from_numpy`` warns on read-only buffers (frames decoded from a bag, views of messages), and needs
    C order: such arrays are copied first.
    """
    arr = image if image.flags.writeable and image.flags.c_contiguous else np.array(image, order="C")
    return torch.from_numpy(arr).to(device).permute(2, 0, 1)[None].float().div_(255.0)
