"""The node processes' malloc tuning: applied on glibc, and large freed buffers really leave the RSS."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# A child process (the setting is process-wide): allocate and free a 16 MiB buffer twice, then report how
# much of the second one is still resident. With glibc's dynamic threshold the second buffer comes from the
# heap (the first free raised the threshold) and a small allocation above it pins it in RSS.
_CHILD = r"""
import ctypes, sys
from scene_perception.ros.allocator import tune_malloc
note = tune_malloc() if sys.argv[1] == "tuned" else "untuned"
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
size = 16 << 20
for _ in range(2):
    buf = libc.malloc(size)
    ctypes.memset(buf, 1, size)
    pin = libc.malloc(4096)  # a small live block allocated after the big one
    before_free = rss_kib()
    libc.free(buf)
    after_free = rss_kib()
print(note)
print(before_free - after_free)
"""


def _run(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "SCENE_PERCEPTION_MALLOC"))}
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, env=env,
                         check=True, timeout=60).stdout.splitlines()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning only exists for glibc")
def test_tuned_process_returns_large_buffers_to_the_os() -> None:
    note, released_kib = _run("tuned")
    assert "mmapped" in note
    assert released_kib > 15 * 1024  # the whole 16 MiB left the RSS on free
    # The contrast that makes the tuning necessary: glibc's default keeps the second buffer resident.
    _, untuned_kib = _run("untuned")
    assert untuned_kib < 1024


def test_tuning_can_be_switched_off() -> None:
    env = dict(os.environ, SCENE_PERCEPTION_MALLOC_TUNING="0")
    code = "from scene_perception.ros.allocator import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         timeout=60).stdout
    assert "off" in out
