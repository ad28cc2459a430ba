"""Tests for scene_perception.ros.sync / _sync_impl (our message_filters implementation).

The pure tests drive filters through ``signalMessage`` so every policy edge (slop boundary, overflow,
duplicate and out-of-order stamps, headerless input) is checked deterministically; the ROS tests send real
``sensor_msgs/Image`` pairs through Fast DDS to prove the ``Subscriber`` wiring works with rclpy. They import
``_sync_impl`` directly so our implementation is tested even where upstream message_filters is installed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import ClockType, ROSClock
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from scene_perception.ros import _sync_impl as mf
from scene_perception.ros import sync

NS_PER_S = 1_000_000_000


# ----------------------------------------------------------------------------------------------- helpers
def stamp(seconds: float) -> TimeMsg:
    """A builtin_interfaces/Time for ``seconds`` (rounded to whole nanoseconds)."""
    ns = round(seconds * NS_PER_S)
    return TimeMsg(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


class Stamped:
    """Minimal stamped message (what message_filters needs: ``header.stamp``) carrying a label."""

    def __init__(self, seconds: float, label: str = "") -> None:
        self.header = Header(stamp=stamp(seconds))
        self.label = label

    def __repr__(self) -> str:
        return f"Stamped({self.header.stamp.sec}.{self.header.stamp.nanosec:09d}, {self.label!r})"


class Headerless:
    """A message without a header, e.g. a std_msgs/Float32-like reading."""

    def __init__(self, label: str = "") -> None:
        self.label = label


class Collector:
    """Output callback that records every emitted set."""

    def __init__(self) -> None:
        self.sets: list[tuple[Any, ...]] = []

    def __call__(self, *msgs: Any) -> None:
        self.sets.append(msgs)


def make_sync(kind: str, n_inputs: int = 2, queue_size: int = 5, slop: float = 0.01, **kwargs: Any):
    """Build ``n_inputs`` bare SimpleFilters feeding a synchroniser with a Collector attached."""
    inputs = [mf.SimpleFilter() for _ in range(n_inputs)]
    if kind == "exact":
        synchronizer: mf.TimeSynchronizer = mf.TimeSynchronizer(inputs, queue_size)
    else:
        synchronizer = mf.ApproximateTimeSynchronizer(inputs, queue_size, slop, **kwargs)
    collector = Collector()
    synchronizer.registerCallback(collector)
    return inputs, synchronizer, collector


# ------------------------------------------------------------------------------------------ SimpleFilter
def test_simple_filter_passes_registration_args_and_keeps_ids_unique() -> None:
    source = mf.SimpleFilter()
    got: list[tuple[Any, ...]] = []
    first = source.registerCallback(lambda *a: got.append(("first", *a)), "extra")
    second = source.registerCallback(lambda *a: got.append(("second", *a)))
    assert first != second
    source.signalMessage(1, 2)
    assert got == [("first", 1, 2, "extra"), ("second", 1, 2)]
    # Disconnecting the way upstream Chain does must not make the next id collide with a live one.
    del source.callbacks[first]
    third = source.registerCallback(lambda *a: None)
    assert third not in (first, second) and len(source.callbacks) == 2


# ------------------------------------------------------------------------------------- TimeSynchronizer
def test_exact_matches_identical_stamps_only() -> None:
    (left, right), ts, out = make_sync("exact")
    l0, r0 = Stamped(1.0, "l0"), Stamped(1.0, "r0")
    left.signalMessage(l0)
    assert out.sets == []
    right.signalMessage(r0)
    assert out.sets == [(l0, r0)]
    left.signalMessage(Stamped(2.0))
    right.signalMessage(Stamped(2.000000001))  # one nanosecond off: not the same stamp
    assert len(out.sets) == 1 and ts.matched == 1 and ts.dropped == 0


def test_exact_recombines_shuffled_sequences() -> None:
    rng = random.Random(0)
    for n in range(1, 8):
        (left, right), ts, out = make_sync("exact", queue_size=n)
        seq_l = [Stamped(t, f"l{t}") for t in range(n)]
        seq_r = [Stamped(t, f"r{t}") for t in range(n)]
        for msg in rng.sample(seq_l, n):
            left.signalMessage(msg)
        for msg in rng.sample(seq_r, n):
            right.signalMessage(msg)
        assert set(out.sets) == set(zip(seq_l, seq_r, strict=True))
        assert ts.dropped == 0 and ts.queues == [{}, {}]


def test_exact_overflow_evicts_oldest_and_counts_drops() -> None:
    (left, right), ts, out = make_sync("exact", queue_size=3)
    for t in range(5):  # right camera silent: two oldest left frames must go
        left.signalMessage(Stamped(t))
    assert ts.dropped == 2 and ts.dropped_by_input == (2, 0)
    assert sorted(ts.queues[0]) == [2 * NS_PER_S, 3 * NS_PER_S, 4 * NS_PER_S]
    right.signalMessage(Stamped(0))  # its partner was evicted: waits instead of matching
    right.signalMessage(Stamped(3))
    assert [s[0].header.stamp.sec for s in out.sets] == [3]
    for t in (10, 11, 5):  # out of order: the stale 0 is the oldest stamp, so it goes
        right.signalMessage(Stamped(t))
    assert sorted(ts.queues[1]) == [5 * NS_PER_S, 10 * NS_PER_S, 11 * NS_PER_S]
    # A message older than everything in a full queue is evicted at once rather than displacing newer ones.
    right.signalMessage(Stamped(1))
    assert sorted(ts.queues[1]) == [5 * NS_PER_S, 10 * NS_PER_S, 11 * NS_PER_S]
    assert ts.dropped_by_input == (2, 2) and ts.matched == 1


def test_exact_duplicate_stamp_replaces_and_is_emitted_once() -> None:
    (left, right), ts, out = make_sync("exact")
    first, second = Stamped(1.0, "first"), Stamped(1.0, "second")
    left.signalMessage(first)
    left.signalMessage(second)
    r = Stamped(1.0, "r")
    right.signalMessage(r)
    assert out.sets == [(second, r)] and ts.dropped_by_input == (1, 0)
    right.signalMessage(Stamped(1.0, "r-again"))  # the consumed left message must not be emitted again
    assert len(out.sets) == 1


def test_exact_three_inputs_and_headerless_rejected() -> None:
    (a, b, c), ts, out = make_sync("exact", n_inputs=3)
    msgs = [Stamped(5.0, x) for x in "abc"]
    a.signalMessage(msgs[0])
    c.signalMessage(msgs[2])
    assert out.sets == []
    b.signalMessage(Headerless())  # exact sync cannot place it: dropped, counted, no exception
    b.signalMessage(msgs[1])
    assert out.sets == [tuple(msgs)] and ts.dropped_by_input == (0, 1, 0)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        mf.TimeSynchronizer([mf.SimpleFilter()], 0)
    with pytest.raises(ValueError):
        mf.ApproximateTimeSynchronizer([mf.SimpleFilter()], 1, -0.1)
    with pytest.raises(ValueError):
        mf.ApproximateTimeSynchronizer([mf.SimpleFilter()], 1, float("nan"))


def test_reconnect_disconnects_old_inputs() -> None:
    old = [mf.SimpleFilter(), mf.SimpleFilter()]
    ts = mf.TimeSynchronizer(old, 2)
    new = [mf.SimpleFilter(), mf.SimpleFilter()]
    ts.connectInput(new)
    assert old[0].callbacks == {} and old[1].callbacks == {}
    out = Collector()
    ts.registerCallback(out)
    new[0].signalMessage(Stamped(1.0))
    new[1].signalMessage(Stamped(1.0))
    assert len(out.sets) == 1


# ------------------------------------------------------------------------- ApproximateTimeSynchronizer
def test_approx_accepts_within_slop_and_rejects_beyond() -> None:
    (left, right), ts, out = make_sync("approx", slop=0.01)
    assert ts.slop.nanoseconds == 10_000_000
    l0, r0 = Stamped(1.000, "l0"), Stamped(1.009, "r0")
    left.signalMessage(l0)
    right.signalMessage(r0)
    assert out.sets == [(l0, r0)]
    left.signalMessage(Stamped(2.000))
    right.signalMessage(Stamped(2.011))  # 11 ms apart, slop 10 ms
    assert len(out.sets) == 1
    l2, r2 = Stamped(3.000, "l2"), Stamped(3.010, "r2")  # exactly slop apart: "within" is inclusive
    right.signalMessage(r2)
    left.signalMessage(l2)
    assert out.sets[-1] == (l2, r2) and ts.matched == 2


def test_approx_pairs_with_closest_candidate() -> None:
    (left, right), ts, out = make_sync("approx", slop=0.05)
    far, near = Stamped(0.96, "far"), Stamped(1.01, "near")
    left.signalMessage(far)
    left.signalMessage(near)
    r = Stamped(1.0, "r")
    right.signalMessage(r)
    assert out.sets == [(near, r)]
    assert list(ts.queues[0].values()) == [far]  # still waiting, not emitted twice, not yet dropped


def test_approx_equidistant_tie_prefers_older() -> None:
    (left, right), _, out = make_sync("approx", slop=0.05)
    older, newer = Stamped(0.98, "older"), Stamped(1.02, "newer")
    left.signalMessage(newer)
    left.signalMessage(older)
    r = Stamped(1.0)
    right.signalMessage(r)
    assert out.sets == [(older, r)]


def test_approx_never_emits_a_message_twice() -> None:
    (left, right), _, out = make_sync("approx", slop=0.1)
    l0 = Stamped(1.0, "l0")
    left.signalMessage(l0)
    for i in range(3):  # several right frames within slop of the single left frame
        right.signalMessage(Stamped(1.0 + 0.01 * i, f"r{i}"))
    assert len(out.sets) == 1 and out.sets[0][0] is l0
    emitted = [id(m) for s in out.sets for m in s]
    assert len(emitted) == len(set(emitted))


def test_approx_overflow_eviction_and_dropped_counting() -> None:
    (left, right), ts, out = make_sync("approx", queue_size=3, slop=0.01)
    for t in range(6):
        left.signalMessage(Stamped(t))
    assert ts.dropped == 3 and ts.dropped_by_input == (3, 0)
    right.signalMessage(Stamped(1.0))  # partner evicted: no match, waits
    assert out.sets == []
    right.signalMessage(Stamped(4.005))
    assert [s[0].header.stamp.sec for s in out.sets] == [4]
    for t in (7, 8, 9):  # right queue overflows too; its stale 1.0 frame goes first
        right.signalMessage(Stamped(t + 0.5))
    assert ts.dropped_by_input == (3, 1)


def test_approx_out_of_order_shuffled_sequences_recombine() -> None:
    rng = random.Random(1)
    for n in range(1, 9):
        (left, right), ts, out = make_sync("approx", queue_size=n, slop=0.02)
        seq_l = [Stamped(t + rng.uniform(-0.005, 0.005), f"l{t}") for t in range(n)]
        seq_r = [Stamped(t + rng.uniform(-0.005, 0.005), f"r{t}") for t in range(n)]
        order = [(left, m) for m in seq_l] + [(right, m) for m in seq_r]
        rng.shuffle(order)  # interleaved arrivals with stamps going backwards
        for source, msg in order:
            source.signalMessage(msg)
        assert set(out.sets) == set(zip(seq_l, seq_r, strict=True))
        assert ts.dropped == 0


def test_approx_duplicate_stamps() -> None:
    (left, right), ts, out = make_sync("approx", slop=0.01)
    a, b = Stamped(1.0, "a"), Stamped(1.0, "b")
    left.signalMessage(a)
    left.signalMessage(b)  # same input, same stamp: replaces a
    r1, r2 = Stamped(1.0, "r1"), Stamped(1.0, "r2")
    right.signalMessage(r1)
    right.signalMessage(r2)  # nothing left to pair with: waits
    assert out.sets == [(b, r1)] and ts.dropped_by_input == (1, 0)
    assert list(ts.queues[1].values()) == [r2]


def test_approx_three_inputs_picks_tightest_set() -> None:
    (a, b, c), _, out = make_sync("approx", n_inputs=3, slop=0.05)
    a_early, a_late = Stamped(0.96, "a_early"), Stamped(1.03, "a_late")
    b_msg = Stamped(1.02, "b")
    for msg in (a_early, a_late):
        a.signalMessage(msg)
    b.signalMessage(b_msg)
    c_msg = Stamped(1.0, "c")
    c.signalMessage(c_msg)
    # {a_late, b, c} spans 30 ms; {a_early, b, c} spans 60 ms > slop.
    assert out.sets == [(a_late, b_msg, c_msg)]


def test_approx_single_input_passes_through() -> None:
    (only,), ts, out = make_sync("approx", n_inputs=1)
    msg = Stamped(1.0)
    only.signalMessage(msg)
    assert out.sets == [(msg,)] and ts.queues == [{}]


def test_approx_headerless() -> None:
    (left, right), ts, out = make_sync("approx", slop=0.01)
    right.signalMessage(Headerless())
    assert ts.dropped_by_input == (0, 1) and out.sets == []

    (left, right), ts, out = make_sync("approx", slop=1.0, allow_headerless=True)
    now = ROSClock().now()
    stamped = Stamped(now.nanoseconds / NS_PER_S, "stamped")
    bare = Headerless("bare")
    left.signalMessage(stamped)
    right.signalMessage(bare)  # stamped with the current ROS time on arrival
    assert out.sets == [(stamped, bare)] and ts.dropped == 0


def test_approx_sync_arrival_time_ignores_header() -> None:
    (left, right), _, out = make_sync("approx", slop=1.0, sync_arrival_time=True)
    l0, r0 = Stamped(0.0, "ancient"), Stamped(1000.0, "future")
    left.signalMessage(l0)
    right.signalMessage(r0)
    assert out.sets == [(l0, r0)]


def test_callback_may_feed_back_into_synchronizer() -> None:
    """The lock is re-entrant: an output callback signalling an input must not deadlock."""
    (left, right), ts, out = make_sync("approx", slop=0.01)
    fed = []

    def feed_back(*msgs: Any) -> None:
        if not fed:
            fed.append(True)
            left.signalMessage(Stamped(2.0, "fed"))

    ts.registerCallback(feed_back)
    left.signalMessage(Stamped(1.0))
    right.signalMessage(Stamped(1.0))
    right.signalMessage(Stamped(2.0))
    assert len(out.sets) == 2 and out.sets[1][0].label == "fed"


# ------------------------------------------------------------------------------------------------ Cache
def test_cache_queries() -> None:
    source = mf.SimpleFilter()
    cache = mf.Cache(source, 5)
    passed = Collector()
    cache.registerCallback(passed)
    assert cache.getLast() is None and cache.getLatestTime() is None and cache.getOldestTime() is None
    msgs = [Stamped(t, str(t)) for t in range(5)]
    for i in (3, 0, 4, 1, 2):  # out of order on purpose
        source.signalMessage(msgs[i])
    assert len(passed.sets) == 5  # every message passes through

    assert cache.getOldestTime() == Time(seconds=0, clock_type=ClockType.ROS_TIME)
    assert cache.getLatestTime().nanoseconds == 4 * NS_PER_S
    assert cache.getLastestTime() == cache.getLatestTime()  # upstream's misspelt name
    assert cache.getLast() is msgs[4]
    assert cache.getInterval(Time(seconds=1), Time(seconds=3)) == msgs[1:4]
    assert cache.getInterval(stamp(0.5), stamp(0.6)) == []
    assert cache.getElemAfterTime(Time(seconds=2.5)) is msgs[3]
    assert cache.getElemAfterTime(stamp(2.0)) is msgs[2]  # inclusive; builtin stamps work as queries too
    assert cache.getElemAfterTime(Time(seconds=4.5)) is None
    assert cache.getElemBeforeTime(Time(seconds=2.5)) is msgs[2]
    assert cache.getElemBeforeTime(Time(seconds=2)) is msgs[2]
    assert cache.getElemBeforeTime(Time(nanoseconds=0)) is msgs[0]
    with pytest.raises(ValueError):
        cache.getInterval(Time(seconds=3), Time(seconds=1))


def test_cache_evicts_oldest_stamp_and_handles_headerless() -> None:
    source = mf.SimpleFilter()
    cache = mf.Cache(source, cache_size=2)
    for t in (5, 1, 7):
        source.signalMessage(Stamped(t, str(t)))
    assert [m.label for m in cache.cache_msgs] == ["5", "7"]
    source.signalMessage(Headerless())  # ignored (with a warning) by default
    assert len(cache.cache_msgs) == 2

    tolerant = mf.Cache(mf.SimpleFilter(), cache_size=3, allow_headerless=True)
    bare = Headerless("bare")
    tolerant.add(bare)
    assert tolerant.getLast() is bare and tolerant.getLatestTime() is not None


# ------------------------------------------------------------------------------------------- sync module
def test_sync_module_selection_and_dropped_count() -> None:
    assert isinstance(sync.USING_UPSTREAM, bool)
    try:
        import message_filters  # noqa: F401
    except ImportError:
        assert (
            sync.USING_UPSTREAM is False
            and sync.ApproximateTimeSynchronizer is mf.ApproximateTimeSynchronizer
        )
    else:
        assert sync.USING_UPSTREAM is True
    (left, _), ts, _ = make_sync("exact", queue_size=1)
    left.signalMessage(Stamped(1.0))
    left.signalMessage(Stamped(2.0))
    assert sync.dropped_count(ts) == 1
    assert sync.dropped_count(object()) is None


# ------------------------------------------------------------------------------------------------- ROS
@pytest.fixture(scope="module")
def ros() -> Iterator[tuple[Context, Node, Node, SingleThreadedExecutor]]:
    """A private rclpy context with a publisher node and a subscriber node sharing one executor."""
    context = Context()
    rclpy.init(context=context)
    pub_node = rclpy.create_node("sync_test_publisher", context=context)
    sub_node = rclpy.create_node("sync_test_subscriber", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(pub_node)
    executor.add_node(sub_node)
    try:
        yield context, pub_node, sub_node, executor
    finally:
        executor.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()
        rclpy.shutdown(context=context)


RELIABLE = QoSProfile(depth=20, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


def spin_until(executor: SingleThreadedExecutor, done: Any, timeout: float = 5.0) -> None:
    """Spin in short slices until ``done()`` or the deadline, so a failure cannot hang the suite."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)


def image(seconds: float, side: str, index: int) -> Image:
    """A 4x6 mono8 image whose pixels carry the pair index, so pairing can be checked end to end."""
    msg = Image(height=4, width=6, encoding="mono8", step=6, data=bytes([index]) * 24)
    msg.header.stamp = stamp(seconds)
    msg.header.frame_id = side
    return msg


@pytest.mark.ros
def test_subscriber_wraps_rclpy_subscription(ros: tuple[Context, Node, Node, SingleThreadedExecutor]) -> None:
    _, _, sub_node, _ = ros
    group = MutuallyExclusiveCallbackGroup()
    sub = mf.Subscriber(sub_node, Image, "sync_test/wrapped", qos_profile=RELIABLE, callback_group=group)
    assert sub.getTopic() == "sync_test/wrapped"
    assert sub.topic_name == "/sync_test/wrapped"  # served by the underlying rclpy Subscription
    assert sub.sub.callback_group is group
    assert sub.sub in sub_node.subscriptions
    sub.close()
    sub.close()
    assert sub.sub is None and all(s.topic_name != "/sync_test/wrapped" for s in sub_node.subscriptions)


@pytest.mark.ros
def test_stereo_pairs_over_dds(ros: tuple[Context, Node, Node, SingleThreadedExecutor]) -> None:
    _, pub_node, sub_node, executor = ros
    n_pairs = 12
    topics = {kind: (f"sync_test/{kind}/left", f"sync_test/{kind}/right") for kind in ("exact", "approx")}
    subscribers = {
        kind: [mf.Subscriber(sub_node, Image, topic, qos_profile=RELIABLE) for topic in pair]
        for kind, pair in topics.items()
    }
    exact = mf.TimeSynchronizer(subscribers["exact"], 5)
    approx = mf.ApproximateTimeSynchronizer(subscribers["approx"], 5, slop=0.02)
    got = {"exact": Collector(), "approx": Collector()}
    exact.registerCallback(got["exact"])
    approx.registerCallback(got["approx"])
    publishers = {
        kind: [pub_node.create_publisher(Image, t, RELIABLE) for t in pair] for kind, pair in topics.items()
    }
    all_pubs = [p for pair in publishers.values() for p in pair]
    spin_until(executor, lambda: all(p.get_subscription_count() >= 1 for p in all_pubs))
    assert all(p.get_subscription_count() >= 1 for p in all_pubs), "DDS discovery timed out"

    rng = random.Random(7)
    base = 1_700_000_000.0
    for i in range(n_pairs):
        t = base + 0.1 * i  # 10 Hz cameras
        jitter = rng.uniform(-0.009, 0.009)  # approximate pair: right stamp off by < slop / 2
        for kind, right_t in (("exact", t), ("approx", t + jitter)):
            left_pub, right_pub = publishers[kind]
            frames = [(left_pub, image(t, "left", i)), (right_pub, image(right_t, "right", i))]
            if i % 3 == 0:
                frames.reverse()  # right camera first sometimes
            for pub, msg in frames:
                pub.publish(msg)
        executor.spin_once(timeout_sec=0.0)  # interleave delivery with publishing, like a live node

    spin_until(executor, lambda: all(len(c.sets) >= n_pairs for c in got.values()))
    for kind, collector in got.items():
        # DDS does not order delivery across topics, so sets may complete out of order; check membership.
        assert len(collector.sets) == n_pairs, kind
        for left_msg, right_msg in collector.sets:
            assert (left_msg.header.frame_id, right_msg.header.frame_id) == ("left", "right"), kind
            assert left_msg.data[0] == right_msg.data[0], kind
        assert sorted(left_msg.data[0] for left_msg, _ in collector.sets) == list(range(n_pairs)), kind
    assert all(a.header.stamp == b.header.stamp for a, b in got["exact"].sets), (
        "exact pairs must share stamps"
    )
    assert exact.dropped == 0 and approx.dropped == 0

    for pair in subscribers.values():
        for sub in pair:
            sub.close()
    for pub in all_pubs:
        pub_node.destroy_publisher(pub)
