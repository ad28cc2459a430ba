"""PFM (portable float map) reader and writer, the format of Middlebury, ETH3D and SceneFlow disparities.

The whole format: a text header of three whitespace-separated tokens after the magic ``PF`` (3 channels)
or ``Pf`` (1 channel): width, height and a scale whose *sign* gives the byte order (negative: little
endian, positive: big endian; its magnitude is not a disparity scale and is ignored), then exactly one
whitespace byte, then float32 rows stored **bottom to top**.  Written here rather than imported because it
is that small and the row order and sign rule are exactly what readers get wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["PFMError", "read_pfm", "write_pfm"]

_WHITESPACE = b" \t\r\n"


class PFMError(ValueError):
    """The file is not a well-formed PFM image."""


def _header(data: bytes, path: str) -> tuple[int, int, int, float, int]:
    """(channels, width, height, scale, offset of the first data byte) from the raw bytes."""
    tokens: list[bytes] = []
    i, n = 0, len(data)
    while len(tokens) < 4:
        while i < n and data[i] in _WHITESPACE:
            i += 1
        start = i
        while i < n and data[i] not in _WHITESPACE:
            i += 1
        if start == i:
            raise PFMError(f"{path}: truncated PFM header")
        tokens.append(data[start:i])
    if i >= n:
        raise PFMError(f"{path}: PFM header without data")
    i += 1  # the single whitespace byte that ends the header
    magic = tokens[0]
    if magic not in (b"PF", b"Pf"):
        raise PFMError(f"{path}: not a PFM file (magic {magic[:8]!r}, expected b'PF' or b'Pf')")
    try:
        width, height, scale = int(tokens[1]), int(tokens[2]), float(tokens[3])
    except ValueError as exc:
        raise PFMError(f"{path}: bad PFM header {b' '.join(tokens)[:60]!r}") from exc
    if width <= 0 or height <= 0:
        raise PFMError(f"{path}: PFM size {width}x{height}")
    if scale == 0.0:
        raise PFMError(f"{path}: PFM scale 0 (its sign must give the byte order)")
    return (3 if magic == b"PF" else 1), width, height, scale, i


def read_pfm(path: str | Path) -> np.ndarray:
    """Float32 image, (H, W) for ``Pf`` or (H, W, 3) for ``PF``, rows top to bottom as any image.

    Values are returned as stored (``inf`` stays ``inf``: the caller decides what unknown means).
    """
    path = str(path)
    data = Path(path).read_bytes()
    channels, width, height, scale, offset = _header(data, path)
    count = width * height * channels
    if len(data) - offset < 4 * count:
        raise PFMError(f"{path}: PFM data has {len(data) - offset} bytes, {width}x{height}x{channels} "
                       f"float32 need {4 * count}")
    dtype = np.dtype("<f4" if scale < 0 else ">f4")
    values = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    shape = (height, width) if channels == 1 else (height, width, 3)
    return np.flipud(values.reshape(shape)).astype(np.float32)  # native order, top row first


def write_pfm(path: str | Path, image: np.ndarray, little_endian: bool = True) -> Path:
    """Write a (H, W) or (H, W, 3) array as PFM (float32, bottom row first, scale -1 or 1)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise PFMError(f"PFM holds (H, W) or (H, W, 3) images, got shape {image.shape}")
    height, width = image.shape[:2]
    magic = b"Pf" if image.ndim == 2 else b"PF"
    dtype = "<f4" if little_endian else ">f4"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = magic + b"\n" + f"{width} {height}\n{-1.0 if little_endian else 1.0}\n".encode("ascii")
    path.write_bytes(header + np.ascontiguousarray(np.flipud(image)).astype(dtype).tobytes())
    return path
