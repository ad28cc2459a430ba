"""Helpers the benchmark scripts (``benchmarks/*.py``) share: a size argument, a matchable test pair,
peak-memory measurement and writing a result file.

They live in the package rather than in one script that the others import, so each script runs on its own
(``python benchmarks/engines.py``) without putting ``benchmarks/`` on ``sys.path``.  No ROS, no project
imports: the evaluation layer (see ``scene_perception/__init__.py``) is the right place for measurement code.
"""

from __future__ import annotations

import argparse
import gc
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PeakRSS", "parse_size", "random_texture_pair", "status_kb", "write_json"]


def write_json(path: str | Path, payload: Any, indent: int = 1) -> Path:
    """Write ``payload`` as JSON (UTF-8, a final newline) to ``path``, creating its folder; returns the path.
    Every ``--json`` result file goes through here, so they all read the same way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=indent) + "\n", encoding="utf-8")
    return path


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` -> (H, W) (an ``argparse`` type)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 240x320 (HxW), got {text!r}") from exc
    return h, w


def random_texture_pair(h: int, w: int, disparity: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed random texture (something SGBM can match) and its copy shifted by ``disparity`` px."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h, w + disparity, 3), dtype=np.uint8)
    tex = cv2.GaussianBlur(noise, (3, 3), 0)
    left = np.ascontiguousarray(tex[:, :w])
    right = np.ascontiguousarray(tex[:, disparity:])  # right(x) = tex(x + d), so left(x) = right(x - d)
    return left, right


def status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakRSS:
    """Peak resident-set growth (MB) over a ``with`` block.

    Linux: reset the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``) and read ``VmHWM``
    afterwards: exact, no sampling. Elsewhere (or if that is not permitted): poll RSS every 2 ms.
    """

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self._thread: threading.Thread | None = None
        self._use_hwm = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._use_hwm = status_kb("VmHWM") is not None
        except OSError:
            pass
        self.base_kb = status_kb("VmRSS") or 0
        self.peak_kb = self.base_kb
        if not self._use_hwm:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, status_kb("VmRSS") or 0)
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self._use_hwm:
            self.peak_kb = status_kb("VmHWM") or self.peak_kb
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()

    @property
    def delta_mb(self) -> float:
        return max(0, self.peak_kb - self.base_kb) / 1024.0
