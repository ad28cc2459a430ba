"""Our own implementation of the ROS 2 ``message_filters`` Python API.

Why this exists: the stereo node needs left/right image pairs synchronised by stamp, and the usual tool
for that, ``message_filters``, is not installable from the PyPI ROS wheels this project uses. This module
re-implements its Python API (``SimpleFilter``, ``Subscriber``, ``Cache``, ``TimeSynchronizer``,
``ApproximateTimeSynchronizer``) with the same names, signatures and callback conventions, so that code
written against upstream runs unchanged. ``scene_perception.ros.sync`` picks upstream when it can be
imported and this module otherwise; the tests import this module directly so it is always exercised.

Deliberate differences from upstream, each a bug fix or a safety net rather than a change of contract:

* ``Cache`` keeps its buffer sorted by stamp (upstream appends in arrival order although its comments say
  "insert sorted"), so out-of-order messages still give correct ``getElemAfterTime`` / ``getElemBeforeTime``
  answers, and overflow evicts the oldest *stamp*, as the C++ cache does.
* ``ApproximateTimeSynchronizer`` picks, among all candidate sets containing the newly arrived message,
  the one with the smallest stamp spread (upstream takes the first combination of per-queue candidates
  sorted by distance, which is the same thing for two inputs); a set matches when its spread is
  ``<= slop`` (upstream uses ``<`` for the set but ``<=`` to pre-filter candidates).
* Stamps are compared as integer nanoseconds, so mixing ``rclpy.time.Time`` objects of different clock
  types, or ``builtin_interfaces/Time`` messages, in queries never raises.
* Connection ids stay unique after callbacks are removed; callbacks run under a re-entrant lock, so output
  callbacks of one synchroniser are serialised across executor threads (as upstream) but may feed
  messages back into the same synchroniser without deadlocking.

Extensions (not in upstream): ``TimeSynchronizer.dropped`` / ``dropped_by_input`` / ``matched`` counters,
``Subscriber.close()``, and an optional ``Cache`` input filter.
"""

from __future__ import annotations

import itertools
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from typing import Any

from rclpy.clock import ClockType, ROSClock
from rclpy.duration import Duration
from rclpy.logging import get_logger
from rclpy.time import Time

__all__ = [
    "ApproximateTimeSynchronizer",
    "Cache",
    "SimpleFilter",
    "Subscriber",
    "TimeSynchronizer",
]

_LOGGER = get_logger("scene_perception.sync")

_HEADERLESS_WARNING = (
    "{who}: dropping a message without header.stamp; pass allow_headerless=True to stamp such messages "
    "with the current ROS time instead (arrival delays then become synchronisation errors)"
)


def _stamp_to_ns(stamp: Any) -> int:
    """Convert ``rclpy.time.Time``, a ``builtin_interfaces/Time``-like message or an int to nanoseconds.

    Duck typed (``nanoseconds`` or ``sec``/``nanosec``) so mock messages in tests and both stamp flavours
    users pass to queries work alike; comparing integers also sidesteps rclpy's refusal to compare
    ``Time`` objects of different clock types.
    """
    if isinstance(stamp, bool):
        raise TypeError("a bool is not a time stamp")
    if isinstance(stamp, int):
        return stamp
    nanoseconds = getattr(stamp, "nanoseconds", None)
    if nanoseconds is not None:
        return int(nanoseconds)
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    raise TypeError(f"cannot interpret {type(stamp).__name__!r} as a time stamp")


def _stamp_to_time(stamp: Any) -> Time:
    """Return ``stamp`` as an ``rclpy.time.Time`` (kept as is when it already is one).

    Header stamps become ROS-time ``Time`` objects, matching upstream's ``Time.from_msg`` default.
    """
    if isinstance(stamp, Time):
        return stamp
    return Time(nanoseconds=_stamp_to_ns(stamp), clock_type=ClockType.ROS_TIME)


def _header_stamp(msg: Any) -> Any | None:
    """Return ``msg.header.stamp`` or ``None`` for headerless messages (checked like upstream)."""
    header = getattr(msg, "header", None)
    if header is None:
        return None
    return getattr(header, "stamp", None)


class SimpleFilter:
    """Base of every filter: a list of output callbacks that ``signalMessage`` invokes in order.

    Filters are chained by registering one filter's input method as another's output callback; that is
    the whole message_filters composition model, so the semantics here must match upstream exactly:
    callbacks receive the filter's output messages followed by the extra ``args`` given at registration.
    """

    def __init__(self) -> None:
        self.callbacks: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._connection_ids = itertools.count()

    def registerCallback(self, cb: Callable[..., Any], *args: Any) -> int:
        """Call ``cb(*messages, *args)`` whenever this filter outputs; return the connection id.

        The id is the key in ``self.callbacks`` (delete it there to disconnect, as upstream's Chain does).
        Ids come from a counter rather than ``len(callbacks)`` so removing one never makes ids collide.
        """
        counter = self.__dict__.get("_connection_ids")
        if counter is None:  # a subclass that skipped SimpleFilter.__init__ but set callbacks itself
            counter = self._connection_ids = itertools.count(len(self.callbacks))
        conn = next(counter)
        while conn in self.callbacks:
            conn = next(counter)
        self.callbacks[conn] = (cb, args)
        return conn

    def signalMessage(self, *msg: Any) -> None:
        """Deliver ``msg`` to every registered callback, in registration order.

        Iterates over a snapshot so a callback may register or remove callbacks without breaking delivery.
        """
        for cb, args in list(self.callbacks.values()):
            cb(*msg, *args)


class Subscriber(SimpleFilter):
    """Source filter: an rclpy subscription whose messages are passed to the connected filters.

    ``Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)``: ``kwargs`` (``callback_group``,
    ``event_callbacks``, ...) go straight to ``node.create_subscription``. As upstream, the rclpy
    subscription is ``self.sub`` and unknown attributes are looked up on it.
    """

    def __init__(self, node: Any, msg_type: Any, topic: str, qos_profile: Any = 10, **kwargs: Any) -> None:
        SimpleFilter.__init__(self)
        self.node = node
        self.msg_type = msg_type
        self.topic = topic
        self.sub: Any = node.create_subscription(msg_type, topic, self.callback, qos_profile, **kwargs)

    def callback(self, msg: Any) -> None:
        """rclpy subscription callback: forward the message to the connected filters."""
        self.signalMessage(msg)

    def getTopic(self) -> str:
        """Return the topic name as given (not remapped/expanded), as upstream does."""
        return self.topic

    def close(self) -> None:
        """Destroy the subscription (idempotent), e.g. when a lifecycle node deactivates.

        Extension: upstream leaves this to ``node.destroy_subscription(f.sub)``, which also works here.
        """
        sub, self.sub = self.sub, None
        if sub is not None:
            self.node.destroy_subscription(sub)

    def __getattr__(self, key: str) -> Any:
        """Serve the rclpy ``Subscription`` API (``qos_profile``, ``topic_name``...) like upstream.

        Only called for attributes not found normally; dunder and private names are refused so that
        copying/pickling, or access before ``sub`` exists, cannot recurse.
        """
        if key.startswith("_") or key == "sub":
            raise AttributeError(key)
        sub = self.__dict__.get("sub")
        if sub is None:
            raise AttributeError(f"{type(self).__name__!r} has no attribute {key!r} (subscription closed?)")
        return getattr(sub, key)


class Cache(SimpleFilter):
    """Keeps the ``cache_size`` most recent messages (by stamp) and passes every message through.

    Lets a callback on one topic look up the message of another topic nearest in time. With
    ``allow_headerless`` a message without ``header.stamp`` is stamped with the current ROS time (avoid:
    arrival delays are unpredictable); otherwise it is ignored with a warning.
    """

    def __init__(
        self, f: SimpleFilter | None = None, cache_size: int = 1, allow_headerless: bool = False
    ) -> None:
        SimpleFilter.__init__(self)
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.cache_size = int(cache_size)
        self.allow_headerless = allow_headerless
        # Parallel lists sorted by stamp: messages, their stamps as Time (what the getters return) and as
        # int nanoseconds (what is compared and bisected).
        self.cache_msgs: list[Any] = []
        self.cache_times: list[Time] = []
        self._cache_ns: list[int] = []
        self._lock = threading.RLock()
        self._clock: ROSClock | None = None
        self.incoming_connection: int | None = None
        if f is not None:
            self.connectInput(f)

    def connectInput(self, f: SimpleFilter) -> None:
        """Feed this cache from filter ``f``."""
        self.incoming_connection = f.registerCallback(self.add)

    def add(self, msg: Any) -> None:
        """Insert ``msg`` by stamp, evict the oldest stamps beyond ``cache_size``, then pass ``msg`` on."""
        stamp = _header_stamp(msg)
        if stamp is None:
            if not self.allow_headerless:
                _LOGGER.warning(_HEADERLESS_WARNING.format(who="Cache"), once=True)
                return
            if self._clock is None:
                self._clock = ROSClock()
            stamp = self._clock.now()
        time = _stamp_to_time(stamp)
        ns = _stamp_to_ns(time)
        with self._lock:
            # bisect_right: equal stamps keep arrival order, so getLast() is the latest arrival.
            index = bisect_right(self._cache_ns, ns)
            self._cache_ns.insert(index, ns)
            self.cache_times.insert(index, time)
            self.cache_msgs.insert(index, msg)
            excess = len(self.cache_msgs) - self.cache_size
            if excess > 0:
                del self._cache_ns[:excess], self.cache_times[:excess], self.cache_msgs[:excess]
        self.signalMessage(msg)

    def getInterval(self, from_stamp: Any, to_stamp: Any) -> list[Any]:
        """Return the cached messages with ``from_stamp <= stamp <= to_stamp``, oldest first."""
        lo, hi = _stamp_to_ns(from_stamp), _stamp_to_ns(to_stamp)
        if lo > hi:
            raise ValueError("getInterval: from_stamp is later than to_stamp")
        with self._lock:
            return self.cache_msgs[bisect_left(self._cache_ns, lo) : bisect_right(self._cache_ns, hi)]

    def getElemAfterTime(self, stamp: Any) -> Any | None:
        """Return the oldest message stamped at or after ``stamp``, or ``None``."""
        with self._lock:
            index = bisect_left(self._cache_ns, _stamp_to_ns(stamp))
            return self.cache_msgs[index] if index < len(self.cache_msgs) else None

    def getElemBeforeTime(self, stamp: Any) -> Any | None:
        """Return the newest message stamped at or before ``stamp``, or ``None``."""
        with self._lock:
            index = bisect_right(self._cache_ns, _stamp_to_ns(stamp))
            return self.cache_msgs[index - 1] if index > 0 else None

    def getLatestTime(self) -> Time | None:
        """Return the newest cached stamp, or ``None`` when empty."""
        with self._lock:
            return self.cache_times[-1] if self.cache_times else None

    def getLastestTime(self) -> Time | None:
        """Upstream's (misspelt) name for :meth:`getLatestTime`, kept for drop-in compatibility."""
        return self.getLatestTime()

    def getOldestTime(self) -> Time | None:
        """Return the oldest cached stamp, or ``None`` when empty."""
        with self._lock:
            return self.cache_times[0] if self.cache_times else None

    def getLast(self) -> Any | None:
        """Return the message with the newest stamp, or ``None`` when empty."""
        with self._lock:
            return self.cache_msgs[-1] if self.cache_msgs else None


class TimeSynchronizer(SimpleFilter):
    """Outputs ``(msg_1, ..., msg_N)`` when all N inputs have a message with exactly the same stamp.

    Each input keeps up to ``queue_size`` unmatched messages in ``self.queues[i]`` (a dict from stamp in
    nanoseconds to message, as upstream); on overflow the oldest stamp is evicted. A second message with
    the stamp of one already queued on the same input replaces it. Sets are emitted at most once: their
    messages are removed before the callbacks run.

    Extension: ``dropped`` counts messages that were discarded without ever being emitted (evicted on
    overflow, replaced by a same-stamp message, or rejected for lacking a header); ``dropped_by_input``
    splits it per input and ``matched`` counts emitted sets. Messages still waiting in a queue are not
    counted yet. A stereo node reports these to tell "one camera is lagging" from "nothing arrives".
    """

    def __init__(self, fs: Sequence[SimpleFilter], queue_size: int) -> None:
        SimpleFilter.__init__(self)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.queue_size = int(queue_size)
        self.lock = threading.RLock()
        self.queues: list[dict[int, Any]] = []
        self.input_connections: list[int] = []
        self._inputs: list[SimpleFilter] = []
        self._dropped_by_input: list[int] = []
        self._matched = 0
        self.connectInput(fs)

    # ------------------------------------------------------------------------------------------ wiring
    def connectInput(self, fs: Sequence[SimpleFilter]) -> None:
        """(Re)connect to the input filters ``fs``; pending messages and counters are reset.

        Unlike upstream, the callbacks registered on previously connected inputs are removed, so a
        reconnect cannot leave stale inputs writing into orphaned queues.
        """
        with self.lock:
            for f, conn in zip(self._inputs, self.input_connections, strict=True):
                f.callbacks.pop(conn, None)
            fs = list(fs)
            self._inputs = fs
            self.queues = [{} for _ in fs]
            self._dropped_by_input = [0] * len(fs)
            self._matched = 0
            self.input_connections = [
                f.registerCallback(self.add, q, i)
                for i, (f, q) in enumerate(zip(fs, self.queues, strict=True))
            ]

    # ----------------------------------------------------------------------------------------- counters
    @property
    def dropped(self) -> int:
        """Messages discarded without being part of an emitted set (extension, see class docstring)."""
        with self.lock:
            return sum(self._dropped_by_input)

    @property
    def dropped_by_input(self) -> tuple[int, ...]:
        """``dropped`` split per input, in the order of ``fs`` (extension)."""
        with self.lock:
            return tuple(self._dropped_by_input)

    @property
    def matched(self) -> int:
        """Number of sets emitted so far (extension)."""
        with self.lock:
            return self._matched

    # ------------------------------------------------------------------------------------------- input
    def add(self, msg: Any, my_queue: dict[int, Any], my_queue_index: int | None = None) -> None:
        """Input callback registered on input ``my_queue_index``; queues ``msg`` and emits completed sets.

        The signature matches upstream so code calling ``add`` directly keeps working.
        """
        with self.lock:
            index = self._resolve_index(my_queue, my_queue_index)
            if index is None:  # a queue from before a reconnect: the message has nowhere to go
                return
            ns = self._stamp_ns(msg)
            if ns is None:
                self._dropped_by_input[index] += 1
                return
            self._insert(index, ns, msg)
            sets = self._collect_sets(index, ns) if ns in self.queues[index] else []
            self._matched += len(sets)
            # Emitting under the (re-entrant) lock serialises output callbacks across threads like upstream;
            # the queues are already updated, so a callback feeding messages back in sees consistent state.
            for msgs in sets:
                self.signalMessage(*msgs)

    def _resolve_index(self, my_queue: dict[int, Any], my_queue_index: int | None) -> int | None:
        """Find which current input ``my_queue`` belongs to (by identity, so stale queues are detected)."""
        if my_queue_index is not None:
            if 0 <= my_queue_index < len(self.queues) and self.queues[my_queue_index] is my_queue:
                return my_queue_index
            return None
        for i, queue in enumerate(self.queues):
            if queue is my_queue:
                return i
        return None

    def _stamp_ns(self, msg: Any) -> int | None:
        """Stamp used for matching; exact matching needs a header, so headerless messages are refused."""
        stamp = _header_stamp(msg)
        if stamp is None:
            _LOGGER.warning(_HEADERLESS_WARNING.format(who=type(self).__name__), once=True)
            return None
        return _stamp_to_ns(stamp)

    def _insert(self, index: int, ns: int, msg: Any) -> None:
        """Queue ``msg`` on input ``index`` and evict the oldest stamps beyond ``queue_size``."""
        queue = self.queues[index]
        if ns in queue:
            self._dropped_by_input[index] += 1  # the earlier same-stamp message can never be emitted now
        queue[ns] = msg
        while len(queue) > self.queue_size:
            del queue[min(queue)]
            self._dropped_by_input[index] += 1

    def _collect_sets(self, index: int, ns: int) -> list[tuple[Any, ...]]:
        """Pop and return every complete set; only the new stamp can have completed one."""
        if all(ns in queue for queue in self.queues):
            return [tuple(queue.pop(ns) for queue in self.queues)]
        return []


class ApproximateTimeSynchronizer(TimeSynchronizer):
    """Outputs ``(msg_1, ..., msg_N)`` when all inputs have messages whose stamps lie within ``slop``.

    ``slop`` is in seconds. Matching is greedy on arrival, like upstream's Python implementation: when a
    message arrives, the set containing it (one queued message from every other input) with the smallest
    spread ``max(stamp) - min(stamp)`` is emitted if that spread is ``<= slop``; ties go to the older
    messages so queues drain in order. Because every arrival is checked, no complete set is ever left
    waiting in the queues, emitted messages are removed (never emitted twice) and unmatched ones wait
    until overflow evicts the oldest stamp (counted in ``dropped``). Out-of-order stamps are fine: sets
    are then emitted in arrival order, not stamp order.

    ``allow_headerless`` stamps messages without ``header.stamp`` with the current ROS time;
    ``sync_arrival_time`` (as in newer upstream) does that for every message. Both make network and
    scheduling delays part of the matching, so prefer real stamps.
    """

    def __init__(
        self,
        fs: Sequence[SimpleFilter],
        queue_size: int,
        slop: float,
        allow_headerless: bool = False,
        sync_arrival_time: bool = False,
    ) -> None:
        if not slop >= 0.0:  # also rejects NaN
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        self.slop = Duration(seconds=slop)
        self._slop_ns = self.slop.nanoseconds
        self.allow_headerless = allow_headerless
        self.sync_arrival_time = sync_arrival_time
        self._clock = ROSClock()
        TimeSynchronizer.__init__(self, fs, queue_size)

    def _stamp_ns(self, msg: Any) -> int | None:
        """Header stamp, or the arrival time when asked for (``sync_arrival_time``/``allow_headerless``)."""
        stamp = None if self.sync_arrival_time else _header_stamp(msg)
        if stamp is None:
            if not (self.sync_arrival_time or self.allow_headerless):
                _LOGGER.warning(_HEADERLESS_WARNING.format(who=type(self).__name__), once=True)
                return None
            stamp = self._clock.now()
        return _stamp_to_ns(stamp)

    def _collect_sets(self, index: int, ns: int) -> list[tuple[Any, ...]]:
        """Find the tightest set containing the new message (stamp ``ns`` on input ``index``) and pop it.

        Candidates are the queued stamps of the other inputs within ``slop`` of ``ns``. Sorted, a valid set
        is a window of candidates that contains the new message and covers every input; a two-pointer
        sweep over the window's left end finds the narrowest one in O(n) after the sort (no combinatorial
        product over inputs). Inside that window each input contributes the stamp closest to ``ns``.
        """
        n_inputs = len(self.queues)
        if n_inputs == 1:
            return [(self.queues[index].pop(ns),)]
        slop = self._slop_ns
        entries = sorted(
            (stamp, j)
            for j, queue in enumerate(self.queues)
            if j != index
            for stamp in queue
            if abs(stamp - ns) <= slop
        )
        if not entries:
            return []
        pivot = bisect_left(entries, (ns, index))
        entries.insert(pivot, (ns, index))

        counts = [0] * n_inputs
        covered = 0
        right = -1
        best: tuple[int, int, int] | None = None  # (spread, left, right)
        for left in range(pivot + 1):
            while right < pivot or (covered < n_inputs and right + 1 < len(entries)):
                right += 1
                counts[entries[right][1]] += 1
                covered += counts[entries[right][1]] == 1
            if covered < n_inputs:
                break  # the window already reaches the last candidate; moving left on only loses inputs
            spread = entries[right][0] - entries[left][0]
            if spread <= slop and (best is None or spread < best[0]):
                best = (spread, left, right)
            counts[entries[left][1]] -= 1
            covered -= counts[entries[left][1]] == 0
        if best is None:
            return []

        chosen: dict[int, int] = {index: ns}
        for stamp, j in entries[best[1] : best[2] + 1]:
            if j not in chosen or abs(stamp - ns) < abs(chosen[j] - ns):
                chosen[j] = stamp
        return [tuple(queue.pop(chosen[j]) for j, queue in enumerate(self.queues))]
