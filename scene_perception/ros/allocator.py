"""glibc malloc settings for long-running node processes: large buffers go back to the OS when freed.

Why: every frame, GC-Net allocates and frees a few cost-volume tensors of 5-20 MB.  glibc serves blocks
above ``M_MMAP_THRESHOLD`` with ``mmap`` and returns them on ``free``, but its threshold is *dynamic*: each
time an mmapped block is freed the threshold rises to that block's size (up to 32 MB), so from the second
frame on the volumes come from the heap arenas instead.  Arenas only give memory back from their top, so
with several executor threads (several arenas) the process RSS creeps up in ~32 MB steps over tens of
minutes and stays there.  The 30-minute soak (``benchmarks/soak.py``) measured +5.8 % RSS that way, over
the < 5 % target, with flat floors and peaks (allocator retention, not a leak).

Fixing the threshold (``mallopt(M_MMAP_THRESHOLD, 4 MiB)``, which also turns the dynamic adjustment off)
keeps every large tensor on ``mmap``: RSS then tracks what is live.  The cost is page faults on each new
large buffer (a few ms per frame at most for the lite model; measured by the soak's latency columns).
This is what the ``MALLOC_MMAP_THRESHOLD_`` environment variable does, applied from inside the process so
``ros2 run``/``ros2 launch`` users get it without wrapper scripts.  Setting the environment variable (any
value) or ``SCENE_PERCEPTION_MALLOC_TUNING=0`` leaves glibc alone.  Non-glibc platforms are skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["DEFAULT_MMAP_THRESHOLD", "tune_malloc"]

#: Blocks at or above this size are mmapped and unmapped on free (glibc's dynamic maximum is 32 MiB).
DEFAULT_MMAP_THRESHOLD = 4 * 1024 * 1024
_M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>


def tune_malloc(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD) -> str:
    """Apply the fixed mmap threshold once per process; returns a one-line description for the log."""
    if os.environ.get("SCENE_PERCEPTION_MALLOC_TUNING", "1") == "0":
        return "malloc tuning off (SCENE_PERCEPTION_MALLOC_TUNING=0)"
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return "malloc tuning left to MALLOC_MMAP_THRESHOLD_ from the environment"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "malloc tuning skipped (not glibc)"
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return "malloc tuning skipped (libc not found)"
    libc = ctypes.CDLL(libc_name)
    if libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(int(mmap_threshold))) != 1:
        return f"malloc tuning failed (mallopt refused M_MMAP_THRESHOLD={mmap_threshold})"
    return f"malloc: blocks >= {mmap_threshold // 1024} KiB mmapped and returned to the OS when freed"
