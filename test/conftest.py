"""Test-session setup shared by every test module, and the test tiers.

Tiers (markers registered below; ``bash tools/test.sh`` passes extra arguments to pytest):

* ``bash tools/test.sh`` -- everything, as CI runs it (~10-15 min on 2 cores);
* ``bash tools/test.sh -m "not ros and not slow"`` -- the fast tier (about a minute): no DDS, no node
  processes, no builds, exports or training loops;
* ``-m ros`` / ``-m slow`` / ``-m "ros and not slow"`` -- the others, alone.

``ros``: the test runs real rclpy nodes or DDS participants, in this process (``RosHarness``, ``run_nodes``,
``evaluate_bag``) or in processes it starts (``scene-perception run``/``eval``, node executables).  Tests
that only build or (de)serialize ROS messages are not ``ros``.
``slow``: took 2 s or more in a full run on the 2-core machine (setup included: the tests sharing an
expensive module fixture -- an ONNX export, a colcon build -- are all marked, so the fixture is not built in
the fast tier).  Measure with ``python -m pytest test --durations=40`` when adding a test.
A whole module gets ``pytestmark``; a mixed one marks its tests one by one.
"""

from __future__ import annotations

import os
import random

import pytest

# Isolate this test run's DDS traffic from anything else on the machine (a demo, another checkout's tests):
# a random domain per pytest session, inherited by the subprocesses tests start.  An explicit
# ROS_DOMAIN_ID (e.g. set by CI) wins.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ros: runs real rclpy nodes / DDS participants, in-process or in processes it starts")
    config.addinivalue_line("markers", "slow: takes 2 s or more on the 2-core machine (setup included)")
