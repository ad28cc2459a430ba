"""Issue 21, item 5: a multi-node ``run_nodes`` process shuts down cleanly while callbacks are running.

Before: ``run_nodes`` destroyed each node while the MultiThreadedExecutor's threads could still be inside
one of its callbacks, and rclpy 9's ``Executor.shutdown`` destroyed its guard condition without waiting for
them; the callback then raised InvalidHandle, which nobody retrieved, so the interpreter printed "The
following exception was never retrieved: cannot use Destroyable because destruction was requested" at exit
(status still 0). Here every callback sleeps and then publishes, and the executor's threads are kept busy,
so the stop always lands while callbacks run: the old order failed this every time.
"""

from __future__ import annotations

import gc
import threading
import time

import pytest
from rclpy.node import Node
from std_msgs.msg import String

from scene_perception.ros.runner import run_nodes

pytestmark = [pytest.mark.ros, pytest.mark.slow]


class _Busy(Node):
    """A timer and a subscription whose callbacks take 50 ms and publish at their END, i.e. use the node's
    handles after the point where the old shutdown could already have destroyed them."""

    def __init__(self, name: str, context=None) -> None:  # noqa: ANN001
        super().__init__(name, context=context)
        self.pub = self.create_publisher(String, "shutdown_test", 10)
        self.create_subscription(String, "shutdown_test", self._on_message, 10)
        self.create_timer(0.01, self._tick)
        self.calls = 0

    def _tick(self) -> None:
        time.sleep(0.05)
        self.calls += 1
        self.pub.publish(String(data=self.get_name()))

    def _on_message(self, _msg: String) -> None:
        time.sleep(0.05)
        self.pub.publish(String(data="echo"))


def test_multi_node_stop_while_callbacks_run_is_clean(capfd) -> None:
    stop = threading.Event()
    created: list[_Busy] = []

    class Recorded(_Busy):
        def __init__(self, name: str, context=None) -> None:  # noqa: ANN001
            super().__init__(name, context=context)
            created.append(self)

    timer = threading.Timer(1.5, stop.set)
    timer.start()
    try:
        code = run_nodes([("a", Recorded, {}), ("b", Recorded, {}), ("c", Recorded, {})], stop=stop)
    finally:
        timer.cancel()
    gc.collect()  # rclpy prints an unretrieved callback exception when its future is collected
    out, err = capfd.readouterr()
    assert code == 0
    assert len(created) == 3 and all(node.calls > 0 for node in created), "callbacks did not run"
    assert "never retrieved" not in out + err, err
    assert "Destroyable" not in out + err, err
    assert "Traceback" not in out + err, err
    assert "callback failed during shutdown" not in out + err, err
