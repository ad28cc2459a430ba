"""Test-session setup shared by every test module."""

from __future__ import annotations

import os
import random

# Isolate this test run's DDS traffic from anything else on the machine (a demo, another checkout's tests):
# a random domain per pytest session, inherited by the subprocesses tests start.  An explicit
# ROS_DOMAIN_ID (e.g. set by CI) wins.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
