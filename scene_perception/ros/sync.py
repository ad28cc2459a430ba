"""message_filters' Python API: the real package when installed, our implementation otherwise.

Why: nodes should synchronise stereo pairs with the standard ``message_filters`` classes (familiar API,
maintained upstream, identical behaviour to other ROS 2 code), but the PyPI ROS wheels this project is
developed against do not ship it. Importing from here gives upstream inside a full ROS install and
``scene_perception.ros._sync_impl`` elsewhere; ``USING_UPSTREAM`` says which. Both provide
``SimpleFilter``, ``Subscriber``, ``Cache``, ``TimeSynchronizer`` and ``ApproximateTimeSynchronizer``.

The drop counters (``.dropped``, ``.dropped_by_input``, ``.matched``) are an extension that only our
implementation has; read them through :func:`dropped_count`, which works with either.
"""

from __future__ import annotations

from typing import Any

try:
    from message_filters import (  # type: ignore[import-not-found]
        ApproximateTimeSynchronizer,
        Cache,
        SimpleFilter,
        Subscriber,
        TimeSynchronizer,
    )

    USING_UPSTREAM: bool = True
except ImportError:
    from scene_perception.ros._sync_impl import (
        ApproximateTimeSynchronizer,
        Cache,
        SimpleFilter,
        Subscriber,
        TimeSynchronizer,
    )

    USING_UPSTREAM = False

__all__ = [
    "USING_UPSTREAM",
    "ApproximateTimeSynchronizer",
    "Cache",
    "SimpleFilter",
    "Subscriber",
    "TimeSynchronizer",
    "dropped_count",
]


def dropped_count(synchronizer: Any) -> int | None:
    """Return how many messages ``synchronizer`` discarded unmatched, or ``None`` if it cannot tell.

    Upstream synchronisers keep no such count; returning ``None`` rather than raising lets a node publish
    the diagnostic when available without caring which implementation was imported.
    """
    dropped = getattr(synchronizer, "dropped", None)
    return dropped if isinstance(dropped, int) else None
