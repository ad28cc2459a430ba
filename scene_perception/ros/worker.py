"""One worker thread that processes the newest input, so a node's executor never waits for inference.

Why: rclpy runs subscription callbacks, services (lifecycle ``get_state``, parameters) and timers
(/diagnostics) on the executor's thread. With inference in the subscription callback, an 11 s frame froze
all of them for 11 s: a lifecycle manager would think the node dead, and a monitor would see no diagnostics.
Here the callback only hands the input over; the worker takes the oldest waiting one when it is free. At
most ``capacity`` inputs wait (the node's ``input_depth``: 1 by default): one more pushes the oldest out,
reported as skipped, as a camera faster than the node must be, so latency stays one frame, never a backlog;
a larger capacity lets a bag replayed at full speed be processed frame by frame.

torch, OpenCV and onnxruntime release the GIL in their kernels, so the executor thread keeps running while
the worker computes.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["NewestWorker"]


class NewestWorker:
    """Runs ``process(item)`` on its own thread for the newest :meth:`submit`-ted items, in order.

    Args:
        process: called on the worker thread, one item at a time.
        on_skip: called (on the submitting thread) for each item pushed out before it was processed.
        on_error: called on the worker thread with any exception ``process`` raised (the thread lives on).
        name: the thread's name (shows in debuggers and ``py-spy``).
    """

    def __init__(
        self,
        process: Callable[[Any], None],
        on_skip: Callable[[], None],
        on_error: Callable[[BaseException], None],
        name: str = "inference",
    ) -> None:
        self._process, self._on_skip, self._on_error = process, on_skip, on_error
        self._name = name
        self._cv = threading.Condition()
        self._pending: collections.deque[Any] = collections.deque()
        #: How many items may wait (the oldest is dropped beyond it); read on every submit.
        self.capacity = 1
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def processing(self) -> bool:
        """True while ``process`` runs (an item taken from the queue, not yet finished)."""
        with self._cv:
            return self._busy

    @property
    def busy(self) -> bool:
        """True while an item is being processed or waiting."""
        with self._cv:
            return self._busy or bool(self._pending)

    def start(self) -> None:
        """Start the thread (no-op when running)."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        """Queue ``item``; beyond :attr:`capacity` waiting items the oldest is dropped (``on_skip``)."""
        with self._cv:
            if self._stopping or self._thread is None:
                return
            self._pending.append(item)
            skipped = 0
            while len(self._pending) > max(1, int(self.capacity)):
                self._pending.popleft()
                skipped += 1
            self._cv.notify()
        for _ in range(skipped):
            self._on_skip()

    def stop(self, timeout: float | None = None) -> bool:
        """Drop a waiting item, let the one in progress finish, end the thread. Returns False when the
        thread was still busy after ``timeout`` seconds (it then ends after its current item)."""
        thread = self._thread
        if thread is None:
            return True
        with self._cv:
            self._stopping = True
            self._pending.clear()
            self._cv.notify()
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._thread = None
        return True

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                item = self._pending.popleft()
                self._busy = True
            try:
                self._process(item)
            except Exception as exc:  # noqa: BLE001 - reported; one bad frame must not end the node's work
                self._on_error(exc)
            finally:
                with self._cv:
                    self._busy = False
