"""Bad-input matrix (issue 8, item 1): one running node, 29 kinds of malformed input, 50 of each.

A driver node publishes over real Fast DDS to one active ``StereoDepthNode``; a valid stereo set (in one of
a dozen legal but unusual shapes: padded rows, big-endian mono16, 8UC1, mixed encodings, empty frame_id,
...) is interleaved after every few bad ones.  Asserted:

* no crash: every callback returns (an exception in a callback would propagate out of ``spin_once`` and
  fail the test), the node answers ``get_state`` with ``active`` and keeps publishing /diagnostics;
* every bad kind is counted under its own problem kind, in ``node.health.problems`` *and* in a received
  DiagnosticArray as ``problem <kind>``;
* warnings are throttled per kind: with ``log_throttle_seconds`` high, exactly one log line per problem
  kind, naming the offending field and values; the next line after the window reports the suppressed count;
* every valid set in between is processed: the node's ``outputs`` counter and the DisparityImages the
  driver receives both equal the number of sets that should be processed.

The two kinds that never form a stereo set (camera_info missing, left/right stamps never matching) are
detected by the node's periodic input check, so they run as timed bursts with no valid set in between.

NaN / inf *pixels* are not a case: every camera encoding is integer, and float encodings (32FC1) are
rejected as ``not_camera_encoding`` before any pixel is read.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.srv import GetState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosutil import (
    RosHarness,
    header,
    make_camera,
    private_domain_id,
    publish_all,
    shifted_pair,
    stereo_messages,
)
from sensor_msgs.msg import CameraInfo, Image
from stereo_msgs.msg import DisparityImage

from scene_perception.models.gcnet import CONFIGS, GCNet
from scene_perception.models.weights import save_stereo_model
from scene_perception.ros.codec import numpy_to_image, to_byte_array
from scene_perception.ros.qos import qos_from_name
from scene_perception.ros.stereo_depth_node import StereoDepthNode

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W = 48, 96
PER_KIND = 50
VALID_EVERY = 5  # one valid set after every 5 bad ones
MAX_PIXELS = 6000  # > H*W = 4608, so a 64x96 frame is "huge" without sending a huge frame
CAMERA = make_camera(W, H)
LEFT, RIGHT = shifted_pair(H, W, 5, seed=11)


class Driver(Node):
    """Publishes stereo input (reliable, so no set is lost while 1500 go by) and records the outputs."""

    def __init__(self, context) -> None:  # noqa: ANN001
        super().__init__("matrix_driver", context=context)
        q = qos_from_name("reliable", depth=20)
        self.pubs = [
            self.create_publisher(Image, "left/image_rect", q),
            self.create_publisher(CameraInfo, "left/camera_info", q),
            self.create_publisher(Image, "right/image_rect", q),
            self.create_publisher(CameraInfo, "right/camera_info", q),
        ]
        self.disparity: list[DisparityImage] = []
        self.diag: list[DiagnosticArray] = []
        self.create_subscription(
            DisparityImage, "disparity", self.disparity.append, qos_from_name("reliable", 50)
        )
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diag.append, 10)
        self.get_state = self.create_client(GetState, "stereo_depth/get_state")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "lite_matrix.safetensors"
    save_stereo_model(GCNet(CONFIGS["lite"]), path, {"trained": False})
    return path


@dataclass
class Logged:
    """Wraps Health's log callable: every emitted warning, by problem kind (the ``[kind]`` prefix)."""

    inner: Callable[[str], None]
    lines: list[str]

    def __call__(self, message: str) -> None:
        self.lines.append(message)
        self.inner(message)

    def by_kind(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for line in self.lines:
            match = re.match(r"\[([a-z_]+)\] ", line)
            assert match, f"log line without a [kind] prefix: {line}"
            out.setdefault(match.group(1), []).append(line)
        return out


@pytest.fixture(scope="module")
def ros(weights: Path):
    harness = RosHarness(private_domain_id())
    node = StereoDepthNode(
        "stereo_depth",
        context=harness.context,
        parameter_overrides=[
            Parameter("weights", value=str(weights)),
            Parameter("num_threads", value=1),
            Parameter("input_qos", value="reliable"),
            Parameter("queue_size", value=5),
            Parameter("max_input_pixels", value=MAX_PIXELS),
            Parameter("input_check_period", value=0.5),
            Parameter("diagnostics_period", value=0.2),
            Parameter("log_throttle_seconds", value=600.0),
            # input_depth stays at the product default (1): sets are sent one at a time, each waited for.
        ],
    )
    harness.add(node)
    driver = harness.add(Driver(harness.context))
    logged = Logged(node.health._log, [])
    node.health._log = logged
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert harness.spin_until(lambda: all(p.get_subscription_count() > 0 for p in driver.pubs), 10)
    assert harness.spin_until(lambda: node._pubs["disparity"].get_subscription_count() > 0, 10)
    yield harness, node, driver, logged
    harness.shutdown()


# --------------------------------------------------------------------------------------- message builders
class Stamps:
    """Fresh increasing stamps (1 ms apart) plus the stamp of the last set the node processed."""

    def __init__(self) -> None:
        self.next_ns = 100_000_000_000
        self.last_processed = 0

    def fresh(self) -> int:
        self.next_ns += 1_000_000
        return self.next_ns


def base(stamp_ns: int) -> list:
    return list(stereo_messages(LEFT, RIGHT, CAMERA, stamp_ns))


def image(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "left_optical", **fields) -> Image:
    msg = numpy_to_image(arr, encoding, header(stamp_ns, frame_id))
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def with_p(stamp_ns: int, side: int, **entries: float) -> list:
    """Base set with entries of the left (side=1) or right (side=3) P replaced, keyed like ``i3=0.0``."""
    msgs = base(stamp_ns)
    p = list(msgs[side].p)
    for key, value in entries.items():
        p[int(key[1:])] = value
    msgs[side].p = p
    return msgs


def set_field(msgs: list, index: int, **fields) -> list:
    for key, value in fields.items():
        setattr(msgs[index], key, value)
    return msgs


def big_endian_mono16(stamp_ns: int, frame_id: str) -> Image:
    gray = LEFT[..., 1].astype(np.uint16) * 257
    msg = Image(header=header(stamp_ns, frame_id), height=H, width=W, encoding="mono16", is_bigendian=1)
    msg.step = 2 * W
    msg.data = to_byte_array(gray.astype(">u2"))
    return msg


def stamped(stamp_ns: int, sec: int, nanosec: int = 0) -> list:
    msgs = base(stamp_ns)
    for m in msgs:
        m.header.stamp.sec, m.header.stamp.nanosec = sec, nanosec
    return msgs


def valid_variants() -> list[tuple[str, Callable[[int], list]]]:
    """Legal but unusual stereo sets; every one must be processed."""
    mono = LEFT[..., 1].copy(), RIGHT[..., 1].copy()

    def encoded(encoding: str, left: np.ndarray, right: np.ndarray, step: int | None = None):
        def build(t: int) -> list:
            msgs = base(t)
            msgs[0] = numpy_to_image(left, encoding, msgs[0].header, step=step)
            msgs[2] = numpy_to_image(right, encoding, msgs[2].header, step=step)
            return msgs

        return build

    def mono16_be(t: int) -> list:
        msgs = base(t)
        msgs[0] = big_endian_mono16(t, "left_optical")
        msgs[2] = big_endian_mono16(t, "right_optical")
        return msgs

    def no_frame_ids(t: int) -> list:
        msgs = base(t)
        for m in msgs:
            m.header.frame_id = ""
        return msgs

    def garbage_frame_ids(t: int) -> list:
        msgs = base(t)
        for m in msgs:
            m.header.frame_id = " //weird frame\tid ü ??"
        return msgs

    def rgba_and_bgr(t: int) -> list:  # left/right encodings differ: both are converted, nothing wrong
        msgs = base(t)
        msgs[0] = numpy_to_image(np.dstack([LEFT, np.full((H, W), 255, np.uint8)]), "rgba8", msgs[0].header)
        msgs[2] = numpy_to_image(RIGHT[..., ::-1].copy(), "bgr8", msgs[2].header)
        return msgs

    return [
        ("rgb8", base),
        (
            "bgr8 padded rows",
            encoded("bgr8", LEFT[..., ::-1].copy(), RIGHT[..., ::-1].copy(), step=3 * W + 7),
        ),
        ("mono8", encoded("mono8", *mono)),
        ("8UC1", encoded("8UC1", *mono)),
        ("8UC3", encoded("8UC3", LEFT, RIGHT)),
        (
            "mono16 odd step",
            encoded(
                "mono16", mono[0].astype(np.uint16) * 257, mono[1].astype(np.uint16) * 257, step=2 * W + 3
            ),
        ),
        ("mono16 big-endian", mono16_be),
        ("rgba8 + bgr8", rgba_and_bgr),
        (
            "is_bigendian on rgb8",
            lambda t: set_field(set_field(base(t), 0, is_bigendian=1), 2, is_bigendian=1),
        ),
        ("empty frame_id", no_frame_ids),
        ("garbage frame_id", garbage_frame_ids),
        (
            "camera_info without size",
            lambda t: set_field(set_field(base(t), 1, width=0, height=0), 3, width=0, height=0),
        ),
    ]


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # the problem kind the node must count it under
    build: Callable[[Stamps], list]
    log_contains: str  # the first (only) log line of ``kind`` must name the field / values
    processed: bool = False  # reported but still processed (stamp going backwards)


def bad_cases() -> list[Case]:
    def fresh(builder: Callable[[int], list]) -> Callable[[Stamps], list]:
        return lambda s: builder(s.fresh())

    def huge(t: int) -> list:
        big_l, big_r = shifted_pair(64, W, 5, seed=12)
        return list(stereo_messages(big_l, big_r, make_camera(W, 64), t))

    def size_mismatch(t: int) -> list:
        msgs = base(t)
        msgs[2] = image(np.ascontiguousarray(RIGHT[:, : W - 8]), "rgb8", t, "right_optical")
        return msgs

    def backwards(s: Stamps) -> list:
        return base(s.last_processed - 1)  # 1 ns older than the last processed set

    return [
        Case(
            "unknown encoding",
            "unsupported_encoding",
            fresh(lambda t: set_field(base(t), 0, encoding="yuv_weird")),
            "'yuv_weird' is unknown",
        ),
        Case(
            "32FC1 (depth map) as camera",
            "not_camera_encoding",
            fresh(
                lambda t: set_field(
                    base(t), 0, encoding="32FC1", step=4 * W, data=to_byte_array(np.zeros((H, W), np.float32))
                )
            ),
            "encoding '32FC1' is a valid ROS encoding but not a camera",
        ),
        Case(
            "16UC1 on the right",
            "not_camera_encoding",
            fresh(
                lambda t: set_field(
                    base(t), 2, encoding="16UC1", step=2 * W, data=to_byte_array(np.zeros((H, W), np.uint16))
                )
            ),
            "not a camera",
        ),
        Case(
            "width*bpp > step",
            "image_step_too_small",
            fresh(lambda t: set_field(base(t), 0, step=3 * W - 1)),
            f"step {3 * W - 1} < width {W} * 3",
        ),
        Case(
            "truncated data",
            "image_data_truncated",
            fresh(lambda t: set_field(base(t), 2, data=base(t)[2].data[: 3 * W * H // 2])),
            f"right image data has {3 * W * H // 2} bytes < step {3 * W} * height {H}",
        ),
        Case(
            "step*height overflow-ish (step 2^32-1)",
            "image_data_truncated",
            fresh(lambda t: set_field(base(t), 0, step=2**32 - 1)),
            "truncated",
        ),
        Case(
            "trailing bytes after step*height",
            "image_data_oversized",
            fresh(lambda t: set_field(base(t), 2, data=to_byte_array(np.zeros(3 * W * H + 64, np.uint8)))),
            f"{3 * W * H + 64} bytes > step {3 * W} * height {H}",
        ),
        Case(
            "empty 0x0 image",
            "empty_image",
            fresh(
                lambda t: set_field(
                    base(t), 0, width=0, height=0, step=0, data=to_byte_array(np.zeros(0, np.uint8))
                )
            ),
            "left image is empty (0x0)",
        ),
        Case(
            "zero height, non-zero width",
            "empty_image",
            fresh(lambda t: set_field(base(t), 2, height=0, data=to_byte_array(np.zeros(0, np.uint8)))),
            "empty",
        ),
        Case(
            "over max_input_pixels",
            "image_too_large",
            fresh(huge),
            f"96x64 = 6144 px exceeds max_input_pixels={MAX_PIXELS}",
        ),
        Case(
            "width/height 2^32-1 with tiny data",
            "image_too_large",
            fresh(lambda t: set_field(base(t), 0, width=2**32 - 1, height=2**32 - 1)),
            "exceeds",
        ),
        Case(
            "left/right size mismatch",
            "size_mismatch",
            fresh(size_mismatch),
            f"left image is {W}x{H} but right is {W - 8}x{H}",
        ),
        Case(
            "camera_info for another resolution",
            "camera_info_mismatch",
            fresh(lambda t: set_field(base(t), 3, width=2 * W, height=2 * H)),
            f"right camera_info is for {2 * W}x{2 * H} but images are {W}x{H}",
        ),
        Case("zero fx", "camera_info_bad_focal", fresh(lambda t: with_p(t, 1, i0=0.0)), "fx=0.0"),
        Case(
            "negative fy on the right", "camera_info_bad_focal", fresh(lambda t: with_p(t, 3, i5=-1.0)), "fy"
        ),
        Case(
            "zero baseline",
            "camera_info_no_baseline",
            fresh(lambda t: with_p(t, 3, i3=0.0)),
            "P[0,3] is 0: no baseline",
        ),
        Case(
            "negative baseline (swapped infos)",
            "camera_info_bad_baseline",
            fresh(lambda t: with_p(t, 3, i3=+CAMERA.fx * CAMERA.baseline)),
            "swapped",
        ),
        Case(
            "left/right fx mismatch",
            "camera_info_focal_mismatch",
            fresh(lambda t: with_p(t, 3, i0=CAMERA.fx * 1.2)),
            "focal lengths differ",
        ),
        Case(
            "cy mismatch",
            "camera_info_rows_misaligned",
            fresh(lambda t: with_p(t, 3, i6=CAMERA.cy + 3)),
            "rows are not aligned",
        ),
        Case(
            "vertical disparity (Ty != 0)",
            "camera_info_vertical_offset",
            fresh(lambda t: with_p(t, 3, i7=-5.0)),
            "P[1,3] (Ty) is left=0.0, right=-5.0",
        ),
        Case(
            "NaN in P",
            "camera_info_nonfinite",
            fresh(lambda t: with_p(t, 1, i2=float("nan"))),
            "left camera_info P contains non-finite values: P[0,2]=nan",
        ),
        Case(
            "inf in P",
            "camera_info_nonfinite",
            fresh(lambda t: with_p(t, 3, i3=float("-inf"))),
            "P[0,3]=-inf",
        ),
        Case(
            "all-zero P (uncalibrated)",
            "camera_info_uncalibrated",
            fresh(lambda t: with_p(t, 3, **{f"i{i}": 0.0 for i in range(12)})),
            "not calibrated",
        ),
        Case("duplicate stamp", "duplicate_stamp", lambda s: base(s.last_processed), "same stamp"),
        Case(
            "stamp going backwards",
            "stamp_went_backwards",
            backwards,
            "older than the last frame",
            processed=True,
        ),
        Case("negative stamp", "invalid_stamp", lambda s: stamped(0, -5, 7), "sec=-5 nanosec=7"),
        Case(
            "stamp -1 ns (sec=-1, nanosec=999999999)",
            "invalid_stamp",
            lambda s: stamped(0, -1, 999_999_999),
            "(-1 ns < 0)",
        ),
    ]


# ----------------------------------------------------------------------------------------------- tests
def node_state(harness: RosHarness, driver: Driver) -> str:
    # Generous: on a loaded 2-core host, discovery of the lifecycle service has taken over 5 s.
    assert driver.get_state.wait_for_service(timeout_sec=30)
    future = driver.get_state.call_async(GetState.Request())
    assert harness.spin_until(future.done, 30)
    return future.result().current_state.label


def diag_values(driver: Driver) -> dict[str, str]:
    """Key/values of the node's most recent DiagnosticStatus."""
    for array in reversed(driver.diag):
        for status in array.status:
            if status.hardware_id.endswith("/stereo_depth"):
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_bad_input_matrix(ros) -> None:
    harness, node, driver, logged = ros
    cases = bad_cases()
    valid = valid_variants()
    kinds = {c.kind for c in cases}
    assert len(cases) >= 20 and len(kinds) >= 20
    problems_before = Counter(node.health.problems)
    outputs_before = node.health.counters["outputs"]
    received_before = len(driver.disparity)
    stamps = Stamps()
    expected_outputs = 0
    sent_bad: Counter[str] = Counter()

    def send_valid(i: int) -> None:
        nonlocal expected_outputs
        name, build = valid[i % len(valid)]
        stamp = stamps.fresh()
        target = node.health.counters["outputs"] + 1
        publish_all(driver.pubs, build(stamp))
        assert harness.spin_until(lambda: node.health.counters["outputs"] >= target, 10), (
            f"valid set '{name}' was not processed; problems: {dict(node.health.problems)}"
        )
        stamps.last_processed = stamp
        expected_outputs += 1

    t0 = time.monotonic()
    send_valid(0)
    n_bad = 0
    for rnd in range(PER_KIND):
        for case in cases:
            msgs = case.build(stamps)
            target = node.health.problems[case.kind] + 1
            out_target = node.health.counters["outputs"] + (1 if case.processed else 0)
            publish_all(driver.pubs, msgs)
            assert harness.spin_until(
                lambda k=case.kind, t=target, o=out_target: (
                    node.health.problems[k] >= t and node.health.counters["outputs"] >= o
                ),
                10,
            ), f"round {rnd}: '{case.name}' was not reported as {case.kind}"
            sent_bad[case.kind] += 1
            if case.processed:
                stamps.last_processed = stamp_of(msgs)
                expected_outputs += 1
            n_bad += 1
            if n_bad % VALID_EVERY == 0:
                send_valid(n_bad // VALID_EVERY)
    elapsed = time.monotonic() - t0

    # Every kind counted exactly as often as it was sent, nothing else counted.
    counted = Counter(node.health.problems) - problems_before
    assert counted == sent_bad, f"counted {dict(counted)} vs sent {dict(sent_bad)}"
    assert all(n >= PER_KIND for n in counted.values())
    # Every valid set in between (and each backwards-stamped one) was processed and published.
    assert node.health.counters["outputs"] - outputs_before == expected_outputs
    assert harness.spin_until(lambda: len(driver.disparity) - received_before >= expected_outputs, 10)
    assert len(driver.disparity) - received_before == expected_outputs

    # Throttled: one warning per kind in the 600 s window, naming the field and values.
    by_kind = logged.by_kind()
    for case in cases:
        lines = by_kind.get(case.kind, [])
        assert len(lines) == 1, f"{case.kind}: {len(lines)} log lines for {counted[case.kind]} problems"
    first_of = {k: v[0] for k, v in by_kind.items()}
    for case in cases:
        if any(c.kind == case.kind for c in cases[: cases.index(case)]):
            continue  # the line was written for the first input kind mapping to this problem kind
        assert case.log_contains in first_of[case.kind], f"{case.kind}: {first_of[case.kind]!r}"

    # Diagnostics carry every kind with its count (the node's diag timer kept running throughout).
    def diag_complete() -> bool:
        values = diag_values(driver)
        return all(values.get(f"problem {k}") == str(node.health.problems[k]) for k in kinds)

    assert harness.spin_until(diag_complete, 5), diag_values(driver)
    assert node_state(harness, driver) == "active"

    # After the window, the next warning of a kind reports what was suppressed.
    assert node.set_parameters([Parameter("log_throttle_seconds", value=0.0)])[0].successful
    publish_all(driver.pubs, set_field(base(stamps.fresh()), 0, encoding="yuv_weird"))
    total = node.health.problems["unsupported_encoding"] + 1
    assert harness.spin_until(lambda: node.health.problems["unsupported_encoding"] >= total, 5)
    assert (
        f"({PER_KIND - 1} more 'unsupported_encoding' since last report; {total} in total)"
        in (logged.lines[-1])
    )
    node.set_parameters([Parameter("log_throttle_seconds", value=600.0)])

    # Stamp 0 is a legal time (simulations, synthetic bags start there): processed. A driver that never
    # stamps repeats it, which is reported as a duplicate with a hint.
    target = node.health.counters["outputs"] + 1
    publish_all(driver.pubs, stamped(0, 0))
    assert harness.spin_until(lambda: node.health.counters["outputs"] >= target, 10)
    dups = node.health.problems["duplicate_stamp"] + 1
    publish_all(driver.pubs, stamped(0, 0))
    assert harness.spin_until(lambda: node.health.problems["duplicate_stamp"] >= dups, 5)
    assert "stamp 0: does the driver set header.stamp?" in node.health.last_error
    print(
        f"{sum(sent_bad.values())} bad sets of {len(cases)} kinds + {expected_outputs} processed "
        f"in {elapsed:.1f} s"
    )


def stamp_of(msgs: list) -> int:
    return msgs[0].header.stamp.sec * 1_000_000_000 + msgs[0].header.stamp.nanosec


def test_inputs_that_never_form_a_set(ros) -> None:
    """camera_info missing / left and right stamps never matching: reported by the periodic input check."""
    harness, node, driver, logged = ros
    before = Counter(node.health.problems)
    t = 500_000_000_000

    def burst(build: Callable[[int], list], topics: tuple[int, ...]) -> None:
        deadline = time.monotonic() + 1.6  # > 3 input_check_periods: at least two windows without any set
        for i in range(PER_KIND):
            msgs = build(t + i * 1_000_000)
            for index in topics:
                driver.pubs[index].publish(msgs[index])
            harness.spin_for(max(0.0, deadline - time.monotonic()) / (PER_KIND - i))

    burst(base, (0, 2))  # images only
    assert harness.spin_until(
        lambda: node.health.problems["input_topics_silent"] > before["input_topics_silent"]
    )
    assert "no messages at all on left/camera_info, right/camera_info" in node.health.last_error

    def far_apart(stamp_ns: int) -> list:  # right camera 1 s behind: exact sync never matches
        msgs = base(stamp_ns)
        late = stamp_ns + 1_000_000_000
        for m in msgs[2:]:  # new Header objects: the left image and both infos share one
            m.header = header(late, m.header.frame_id)
        return msgs

    t += 10_000_000_000
    burst(far_apart, (0, 1, 2, 3))
    assert harness.spin_until(
        lambda: node.health.problems["inputs_unsynchronized"] > before["inputs_unsynchronized"]
    ), (dict(node.health.problems), node.health.last_error)
    assert "stamps never match exactly (try approximate_sync:=true)" in node.health.last_error

    # Both kinds counted in diagnostics; a valid set afterwards is processed again.
    assert harness.spin_until(
        lambda: (
            {"problem input_topics_silent", "problem inputs_unsynchronized"} <= diag_values(driver).keys()
        ),
        5,
    )
    target = node.health.counters["outputs"] + 1
    publish_all(driver.pubs, base(t + 20_000_000_000))
    assert harness.spin_until(lambda: node.health.counters["outputs"] >= target, 10)
    assert node_state(harness, driver) == "active"
