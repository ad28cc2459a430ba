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
        self.latency_ms.append(ms)

    def latency_percentiles(self) -> tuple[float, float, float]:
        """p50, p95, max of the recent latency window (NaN when empty)."""
        if not self.latency_ms:
            return (float("nan"),) * 3
        arr = np.fromiter(self.latency_ms, dtype=np.float64)
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
        values = {
            **{f"{k} count": str(v) for k, v in sorted(self.counters.items())},
            **{f"{k} rate (Hz)": f"{m.rate():.2f}" for k, m in sorted(self.rates.items())},
            "latency p50 (ms)": f"{p50:.1f}",
            "latency p95 (ms)": f"{p95:.1f}",
            "latency max (ms)": f"{pmax:.1f}",
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
