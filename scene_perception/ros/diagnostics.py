"""Counting, throttled warnings and DiagnosticArray reports for the perception nodes.

A node that drops a malformed frame must say so once in a while (not once per frame: at 30 Hz that buries
the log) and must count it where a monitoring tool can see it.  ``Health`` does both: every problem has a
*kind* (``bad_encoding``, ``size_mismatch`` ...), a counter, and a per-kind throttle so that two different
problems never hide each other's messages.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR

#: Keys every stereo node (``stereo_depth``, ``sgbm_depth``) puts in its DiagnosticStatus from the first
#: report on, so a monitor can rely on them without knowing which node it watches:
#:
#: * ``input rate (Hz)``: left images received per second (the camera rate as the node sees it);
#: * ``output rate (Hz)``: stereo results published per second;
#: * ``inference latency p50/p95 (ms)``: the matcher alone (network forward pass, or SGBM's compute);
#:   ``latency p50/p95/max (ms)`` is the whole callback (decode + inference + messages + publish);
#: * ``dropped (sync) count``: input messages the synchronizer discarded without ever completing a stereo set
#:   (queue overflow, a lagging camera); ``n/a`` with ROS's message_filters, which does not count them;
#: * ``invalid input count``: stereo sets rejected by validation (every kind is also counted on its own as
#:   ``problem <kind>``);
#: * ``backend``: what computes the disparity (runtime, device, precision / matcher settings).
SUMMARY_KEYS: tuple[str, ...] = (
    "input rate (Hz)",
    "output rate (Hz)",
    "inference latency p50 (ms)",
    "inference latency p95 (ms)",
    "dropped (sync) count",
    "invalid input count",
    "backend",
)


class RateMeter:
    """Events per second over a sliding window of recent timestamps (bounded memory)."""

    def __init__(self, window: int = 64) -> None:
        self._stamps: collections.deque[float] = collections.deque(maxlen=window)

    def tick(self, now: float | None = None) -> None:
        self._stamps.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None, max_age: float = 5.0) -> float:
        now = time.monotonic() if now is None else now
        recent = [t for t in self._stamps if now - t <= max_age]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def last(self) -> float | None:
        return self._stamps[-1] if self._stamps else None


class Health:
    """Per-node counters, latency window and throttled problem reporting.

    ``log`` is called as ``log(message)`` for problems; the node passes its rclpy logger's ``warning``.
    """

    def __init__(self, log: Callable[[str], None], throttle_seconds: float = 5.0, latency_window: int = 200):
        self._log = log
        self.throttle_seconds = throttle_seconds
        self.problems: collections.Counter[str] = collections.Counter()
        self._last_logged: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self.inference_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self.counters: collections.Counter[str] = collections.Counter()
        self.rates: dict[str, RateMeter] = collections.defaultdict(RateMeter)
        self.last_error: str = ""

    def problem(self, kind: str, message: str) -> None:
        """Count a problem of ``kind`` and log ``message`` unless one of that kind was logged recently."""
        self.problems[kind] += 1
        self.last_error = f"{kind}: {message}"
        now = time.monotonic()
        last = self._last_logged.get(kind)
        if last is not None and now - last < self.throttle_seconds:
            self._suppressed[kind] += 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        tail = (
            f" ({suppressed} more '{kind}' since last report; {self.problems[kind]} in total)"
            if suppressed
            else ""
        )
        self._last_logged[kind] = now
        self._log(f"[{kind}] {message}{tail}")

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n
        self.rates[name].tick()

    def latency(self, ms: float) -> None:
        """Record one frame's whole processing time (callback start to last publish)."""
        self.latency_ms.append(ms)

    def inference(self, ms: float) -> None:
        """Record one frame's matcher time alone (network forward pass / SGBM compute)."""
        self.inference_ms.append(ms)

    def latency_percentiles(
        self, window: collections.deque[float] | None = None
    ) -> tuple[float, float, float]:
        """p50, p95, max of a latency window (default: processing latency); NaN when empty."""
        window = self.latency_ms if window is None else window
        if not window:
            return (float("nan"),) * 3
        arr = np.fromiter(window, dtype=np.float64)
        return float(np.percentile(arr, 50)), float(np.percentile(arr, 95)), float(arr.max())

    def status(
        self,
        name: str,
        hardware_id: str,
        extra: dict[str, str],
        level: bytes | None = None,
        message: str = "",
    ) -> DiagnosticStatus:
        """One DiagnosticStatus: WARN when problems were counted, else OK, unless ``level`` is given."""
        p50, p95, pmax = self.latency_percentiles()
        i50, i95, imax = self.latency_percentiles(self.inference_ms)
        values = {
            **{f"{k} count": str(v) for k, v in sorted(self.counters.items())},
            **{f"{k} rate (Hz)": f"{m.rate():.2f}" for k, m in sorted(self.rates.items())},
            "latency p50 (ms)": f"{p50:.1f}",
            "latency p95 (ms)": f"{p95:.1f}",
            "latency max (ms)": f"{pmax:.1f}",
            "inference latency p50 (ms)": f"{i50:.1f}",
            "inference latency p95 (ms)": f"{i95:.1f}",
            "inference latency max (ms)": f"{imax:.1f}",
            **{f"problem {k}": str(v) for k, v in sorted(self.problems.items())},
            "last problem": self.last_error,
            **extra,
        }
        if level is None:
            level = WARN if self.problems else OK
        if not message:
            message = "ok" if level == OK else (self.last_error or "degraded")
        return DiagnosticStatus(
            level=level,
            name=name,
            message=message,
            hardware_id=hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )


def diagnostic_array(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:  # noqa: ANN001 (builtin Time)
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg
