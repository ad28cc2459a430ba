"""The stereo node's online adaptation (``adapt.*`` parameters; issue 26 item 3; docs/adaptation.md).

Why a separate helper: the node stays a thin adapter.  This class owns the background adapter process
(:class:`~scene_perception.training.adapt.AdaptationProcess`: spawned, ``nice`` 19, one thread), hands it
every ``every``-th frame without blocking, builds a pipeline for each accepted version in a worker thread
(through the node's own factory call, so the weights' sha256 and card are checked as at configure), and
gives the finished pipeline to the frame callback, which swaps it in between two frames.  A version that
fails to load is reported and the node keeps serving what it served.  Nothing here blocks the frame path:
``offer`` is a non-blocking queue put, ``poll`` reads what arrived.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scene_perception.training.adapt import AdaptationProcess, AdaptConfig

__all__ = ["NodeAdaptation"]


class NodeAdaptation:
    """Frames in, accepted pipelines out, and the numbers for /diagnostics."""

    def __init__(self, weights: str | Path, config: AdaptConfig, every: int,
                 build: Callable[[str], Any], serve: bool = True) -> None:
        self.every = max(1, int(every))
        self.serve = serve
        self._build = build
        self._process = AdaptationProcess(weights, config)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="adapt-load")
        self._loading: tuple[str, concurrent.futures.Future] | None = None
        self._waiting: list[str] = []  # accepted versions not yet loaded (newest last)
        self.frames = 0
        self.offered = 0
        self.rounds = 0
        self.accepted = 0
        self.refused = 0
        self.serving: str | None = None  # path of the adapted version being served (None: the base weights)
        self.last_round: dict[str, Any] | None = None
        self.last_error = ""

    def offer(self, left: np.ndarray, right: np.ndarray) -> None:
        """Every ``every``-th frame goes to the adapter (dropped when its queue is full)."""
        self.frames += 1
        if (self.frames - 1) % self.every == 0 and self._process.offer(left, right):
            self.offered += 1

    def poll(self) -> tuple[Any, str] | None:
        """Read the adapter's reports; returns ``(pipeline, path)`` of a newly loaded accepted version to
        swap in (at most one per call), or None."""
        for report in self._process.poll():
            self.last_round = report["round"]
            counters = report["counters"]
            self.rounds, self.accepted = int(counters["rounds"]), int(counters["accepted"])
            self.refused = int(counters["rejected"])
            if report["round"]["accepted"] and report["round"]["path"]:
                self._waiting.append(str(report["round"]["path"]))
        if self._loading is None and self._waiting and self.serve:
            path = self._waiting[-1]  # the newest: older accepted versions are superseded
            self._waiting.clear()
            self._loading = (path, self._pool.submit(self._build, path))
        if self._loading is not None and self._loading[1].done():
            path, future = self._loading
            self._loading = None
            try:
                pipeline = future.result()
            except Exception as exc:  # noqa: BLE001 - any load failure: keep serving what we serve
                self.last_error = f"adapted version {path} failed to load: {exc}"
                return None
            self.serving = path
            return pipeline, path
        return None

    def status(self) -> dict[str, str]:
        """The diagnostics keys (values as strings)."""
        last = self.last_round
        if last is None:
            held_out = "no round yet"
        else:
            before, after = float(last["holdout_before"]), float(last["holdout_after"])
            anchor = (float(last.get("anchor_before", math.nan)), float(last.get("anchor_after", math.nan)))
            verdict = "accepted" if last["accepted"] else "rolled back"
            held_out = (f"held-out photometric {before:.4f} -> {after:.4f}" if math.isfinite(before)
                        and math.isfinite(after) else "held-out photometric -")
            if all(math.isfinite(a) for a in anchor):
                held_out += f", anchor EPE {anchor[0]:.3f} -> {anchor[1]:.3f} px"
            held_out += f" ({verdict})"
        serving = "serving accepted versions" if self.serve else "saving only"
        return {
            "adaptation": (f"on (every {self.every} frame(s); {serving})" if self._process.alive
                           else "stopped (the adapter process exited)"),
            "adaptation rounds": f"{self.rounds} ({self.accepted} accepted)",
            "adaptation frames": (f"{self.offered} offered, {self.refused} refused, "
                                  f"{self._process.dropped} dropped"),
            "adaptation last round": held_out,
            "adaptation serving": self.serving or "base weights",
        }

    @property
    def alive(self) -> bool:
        """Whether the adapter process still runs."""
        return self._process.alive

    def close(self) -> None:
        """Stop the adapter process and the loader thread."""
        self._process.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
