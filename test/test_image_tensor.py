"""The shared image -> tensor conversion of the pipelines."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from scene_perception.pipelines.image_tensor import image_to_tensor


def test_layout_range_and_read_only_frames() -> None:
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14
    expected = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    torch.testing.assert_close(image_to_tensor(img), expected)
    frozen = img.copy()
    frozen.flags.writeable = False  # as frames decoded from a bag are
    strided = np.repeat(img, 2, axis=1)[:, ::2]  # not C-contiguous
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy warns on read-only buffers
        torch.testing.assert_close(image_to_tensor(frozen), expected)
        torch.testing.assert_close(image_to_tensor(strided), expected)
