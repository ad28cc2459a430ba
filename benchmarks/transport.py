#!/usr/bin/env python3
"""Camera-sized images between two processes: which QoS x Fast DDS transport setup delivers them?

Each cell starts two fresh processes in a fresh ROS domain, as a stereo camera driver and a perception
node are on a robot: a *publisher* (``left|right/image_rect`` ``sensor_msgs/Image`` + ``left|right/
camera_info``, a given size and encoding, ``--frames`` stereo sets at ``--rate`` Hz, each stamped with its
send time) and a *subscriber* (both images, keep-last ``--sub-depth``, as the nodes' ``input_depth``).
The publisher waits for the match (up to ``--match-timeout``), lets the connection settle (``--settle``),
sends, stays up for ``--drain`` s (a reliable writer must live to repair), then the subscriber reports.

Dimensions:

* publisher QoS: ``reliable`` (keep-last 10: rclcpp's and image_transport's default, what most camera
  drivers publish with) or ``best_effort`` (``sensor_data``, keep-last 5);
* subscriber QoS: ``sensor_data`` (best effort) or ``reliable``. A reliable reader does not match a
  best-effort writer (DDS request/offer rule): those cells read ``no match (QoS)``;
* transport setup (``--setups PUB/SUB``): each process's Fast DDS transports, set through its environment
  before ``rclpy.init`` (see :func:`transport_env`): ``default`` (builtin SHM with a 512 KiB segment +
  UDPv4), ``large_data`` (``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``), ``shm32`` (XML profile: SHM with
  a 32 MiB segment + UDPv4), ``udp`` (XML profile: UDPv4 only, 32 MiB receive buffer requested: what
  ``scene_perception.ros.dds.configure`` gives the node's process) and ``udp_small`` (the same with what
  a host with Linux's default ``net.core.rmem_max`` grants).

Results: delivered/sent (stereo sets whose left *and* right image arrived complete) and latency (arrival
of the set's later image - send stamp, same host clock) p50/max over the delivered sets; ``no match
(QoS)``: the publisher saw the subscriber in the graph but never matched it; ``no discovery``: it never
saw it at all. Environment variables of the benchmark itself (``ROS_AUTOMATIC_DISCOVERY_RANGE``...) reach
both processes. Examples::

    python benchmarks/transport.py                                  # the whole matrix (~10 min, 2 cores)
    python benchmarks/transport.py --sizes 640x480:rgb8 --setups default/default default/udp --frames 10
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Fast DDS transport configurations a process can have (see :func:`transport_env`).
TRANSPORTS = ("default", "large_data", "shm32", "udp", "udp_small")
#: Default ``--setups``: publisher transport / subscriber transport.
SETUPS = (
    "default/default",
    "large_data/large_data",
    "default/large_data",
    "shm32/shm32",
    "default/shm32",
    "default/udp",
    "default/udp_small",
    "large_data/udp",
    "shm32/udp",
)
DEFAULT_SIZES = ("640x480:rgb8", "1280x720:mono8", "320x240:bgra8")
CHANNELS = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono16": 2}
PUB_QOS = ("reliable", "best_effort")
SUB_QOS = ("sensor_data", "reliable")


# ---------------------------------------------------------------------------------------------- helpers
def parse_size(text: str) -> tuple[int, int, str]:
    """``WxH:encoding`` (e.g. 640x480:rgb8) -> (width, height, encoding)."""
    try:
        dims, encoding = text.split(":") if ":" in text else (text, "rgb8")
        w, h = (int(v) for v in dims.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be WxH:encoding (640x480:rgb8); got {text!r}") from exc
    if encoding not in CHANNELS:
        raise argparse.ArgumentTypeError(f"encoding {encoding!r} not one of {', '.join(CHANNELS)}")
    return w, h, encoding


def qos(name: str, depth: int):  # noqa: ANN201 - rclpy imported lazily
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from scene_perception.ros.qos import qos_from_name

    if name == "reliable":
        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
    return qos_from_name(name, depth=depth)


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, between fork and exec: SIGTERM when the benchmark dies, so no process outlives it."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# ---------------------------------------------------------------------------------------------- roles
def run_publisher(args: argparse.Namespace) -> int:
    """Publish ``--frames`` stereo sets at ``--rate`` once matched; print a JSON report."""
    import numpy as np
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image

    w, h, encoding = parse_size(args.size)
    ch = CHANNELS[encoding]
    depth = 10 if args.qos == "reliable" else 5
    rclpy.init()
    node = Node("transport_pub")
    profile = qos(args.qos, depth)
    image_pubs = [node.create_publisher(Image, f"{side}/image_rect", profile) for side in ("left", "right")]
    info_pubs = [
        node.create_publisher(CameraInfo, f"{side}/camera_info", profile) for side in ("left", "right")
    ]
    rng = np.random.default_rng(0)
    msgs = []
    for side in ("left", "right"):
        img = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w * ch)
        img.header.frame_id = side
        img.data = rng.integers(0, 255, size=h * w * ch, dtype=np.uint8).tobytes()
        info = CameraInfo(height=h, width=w, distortion_model="plumb_bob")
        info.header.frame_id = side
        msgs.append((img, info))
    report: dict = {"sent": [], "errors": 0, "matched": False, "seen": 0, "match_s": None}
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.match_timeout:
        if all(p.get_subscription_count() > 0 for p in image_pubs):
            report["matched"] = True
            break
        time.sleep(0.02)
    report["match_s"] = round(time.monotonic() - t0, 3)
    report["seen"] = node.count_subscribers(image_pubs[0].topic_name)
    if report["matched"]:
        time.sleep(args.settle)
        period = 1.0 / args.rate
        next_t = time.monotonic()
        for _ in range(args.frames):
            now = time.monotonic()
            if now < next_t:
                time.sleep(next_t - now)
            next_t += period
            stamp = time.time_ns()
            sec, nsec = divmod(stamp, 1_000_000_000)
            try:
                for (img, info), ipub, cpub in zip(msgs, image_pubs, info_pubs, strict=True):
                    img.header.stamp.sec = info.header.stamp.sec = sec
                    img.header.stamp.nanosec = info.header.stamp.nanosec = nsec
                    ipub.publish(img)
                    cpub.publish(info)
                report["sent"].append(stamp)
            except Exception:  # noqa: BLE001 - RCLError "cannot publish data" under reliable load
                report["errors"] += 1
        time.sleep(args.drain)
    print("REPORT " + json.dumps(report), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def run_subscriber(args: argparse.Namespace) -> int:
    """Record when both images of each stereo set arrived, until SIGINT/SIGTERM; print a JSON report."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # our handler reports, then shuts down
    node = Node("transport_sub")
    arrivals: dict[str, dict[int, int]] = {"left": {}, "right": {}}
    bad = [0]

    def on_image(msg: Image, side: str) -> None:
        now = time.time_ns()
        if len(msg.data) != msg.step * msg.height:
            bad[0] += 1
            return
        arrivals[side].setdefault(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, now)

    for side in ("left", "right"):
        node.create_subscription(
            Image, f"{side}/image_rect", lambda m, s=side: on_image(m, s), qos(args.qos, args.sub_depth)
        )
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    print("READY", flush=True)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
    both = {t: max(a, arrivals["right"][t]) for t, a in arrivals["left"].items() if t in arrivals["right"]}
    report = {"arrivals": both, "left": len(arrivals["left"]), "right": len(arrivals["right"]), "bad": bad[0]}
    print("REPORT " + json.dumps(report), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0


# ---------------------------------------------------------------------------------------------- orchestration
@dataclass
class Cell:
    size: str
    pub_qos: str
    sub_qos: str
    setup: str
    sent: int
    delivered: int
    status: str  # "ok", "no match (QoS)", "no discovery", "error: ..."
    latency_p50_ms: float
    latency_max_ms: float
    publish_errors: int
    match_s: float | None
    lost: list[int] = field(default_factory=list)  # indices (0-based, send order) of sets not delivered

    def result(self) -> str:
        if self.status != "ok":
            return self.status
        if not self.sent:
            return "0 sent"
        lat = f", {self.latency_p50_ms:.0f}/{self.latency_max_ms:.0f} ms" if self.delivered else ""
        err = f", {self.publish_errors} publish errors" if self.publish_errors else ""
        return f"{self.delivered}/{self.sent}{lat}{err}"


def parse_setup(text: str) -> tuple[str, str]:
    """``PUB/SUB`` transport names (e.g. default/udp) -> (publisher's, subscriber's)."""
    parts = text.split("/")
    if len(parts) != 2 or any(p not in TRANSPORTS for p in parts):
        raise argparse.ArgumentTypeError(f"setup must be PUB/SUB with each one of {', '.join(TRANSPORTS)}")
    return parts[0], parts[1]


def transport_env(transport: str, profiles: dict[str, Path]) -> dict[str, str]:
    """Environment a process needs for ``transport``.

    ``default``: Fast DDS's builtin SHM (512 KiB segment) + UDPv4; ``large_data``:
    ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (UDP discovery, TCP + SHM data); ``shm32``: XML profile with
    SHM (32 MiB segment) + UDPv4; ``udp``: XML profile with UDPv4 only and a 32 MiB socket receive buffer
    (the kernel caps it at 2 x ``net.core.rmem_max``); ``udp_small``: the same with 208 KiB, i.e. what
    ``udp`` gets on a host with Linux's default ``rmem_max`` (212992).
    """
    if transport == "default":
        return {}
    if transport == "large_data":
        return {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}
    return {"FASTDDS_DEFAULT_PROFILES_FILE": str(profiles[transport])}


def _report(text: str) -> dict:
    for line in text.splitlines():
        if line.startswith("REPORT "):
            return json.loads(line[len("REPORT "):])
    raise RuntimeError(f"no report in output:\n{text[-2000:]}")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10.0) -> str:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate(timeout=5)
    return out or ""


def run_cell(
    size: str, pub_qos: str, sub_qos: str, setup: str, args: argparse.Namespace, profiles: dict[str, Path]
) -> Cell:
    domain = str(random.randint(1, 200))
    base = {k: v for k, v in os.environ.items() if k not in ("FASTDDS_BUILTIN_TRANSPORTS",
                                                             "FASTDDS_DEFAULT_PROFILES_FILE")}
    base["ROS_DOMAIN_ID"] = domain
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH", "")]))
    me = [sys.executable, str(Path(__file__).resolve())]
    common = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent)
    pub_transport, sub_transport = parse_setup(setup)
    sub = subprocess.Popen(
        [*me, "--role", "sub", "--qos", sub_qos, "--sub-depth", str(args.sub_depth)],
        env={**base, **transport_env(sub_transport, profiles)}, **common,
    )
    pub = None
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "READY":
            raise RuntimeError(f"subscriber did not start:\n{_stop(sub)}")
        pub = subprocess.Popen(
            [*me, "--role", "pub", "--qos", pub_qos, "--size", size, "--frames", str(args.frames),
             "--rate", str(args.rate), "--match-timeout", str(args.match_timeout),
             "--settle", str(args.settle), "--drain", str(args.drain)],
            env={**base, **transport_env(pub_transport, profiles)}, **common,
        )
        limit = args.match_timeout + args.settle + args.frames / args.rate + args.drain + 30
        pub_out, _ = pub.communicate(timeout=limit)
        p = _report(pub_out)
        s = _report(_stop(sub))
    except Exception as exc:  # noqa: BLE001 - one broken cell must not end the matrix
        for proc in (pub, sub):
            if proc is not None and proc.poll() is None:
                _stop(proc, signal.SIGKILL)
        return Cell(size, pub_qos, sub_qos, setup, 0, 0, f"error: {' '.join(str(exc).split())[-120:]}",
                    float("nan"), float("nan"), 0, None)
    sent = p["sent"]
    arrivals = {int(k): v for k, v in s["arrivals"].items()}
    lat = sorted((arrivals[t] - t) / 1e6 for t in sent if t in arrivals)  # the later image of each set
    if not p["matched"]:
        status = "no match (QoS)" if p["seen"] else "no discovery"
    else:
        status = "ok"
    return Cell(
        size, pub_qos, sub_qos, setup, len(sent), len(lat), status,
        lat[len(lat) // 2] if lat else float("nan"), lat[-1] if lat else float("nan"),
        p["errors"], p["match_s"], [i for i, t in enumerate(sent) if t not in arrivals],
    )


def markdown_table(cells: list[Cell], setups: list[str]) -> str:
    """One row per (size, publisher QoS, subscriber QoS), one column per setup."""
    rows: dict[tuple[str, str, str], dict[str, Cell]] = {}
    for c in cells:
        rows.setdefault((c.size, c.pub_qos, c.sub_qos), {})[c.setup] = c
    head = "| size | publisher | subscriber | " + " | ".join(setups) + " |"
    lines = [head, "|" + "---|" * (3 + len(setups))]
    for (size, pq, sq), by_setup in rows.items():
        vals = [by_setup[s].result() if s in by_setup else "" for s in setups]
        lines.append(f"| {size} | {pq} | {sq} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", choices=["bench", "pub", "sub"], default="bench", help=argparse.SUPPRESS)
    ap.add_argument("--qos", default="reliable", help=argparse.SUPPRESS)
    ap.add_argument("--size", default="640x480:rgb8", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="WxH:encoding ...")
    ap.add_argument("--setups", nargs="+", default=list(SETUPS), help="PUB/SUB transports, e.g. default/udp")
    ap.add_argument("--pub-qos", nargs="+", default=list(PUB_QOS), choices=PUB_QOS)
    ap.add_argument("--sub-qos", nargs="+", default=list(SUB_QOS), choices=SUB_QOS)
    ap.add_argument("--frames", type=int, default=30, help="frames per cell")
    ap.add_argument("--rate", type=float, default=10.0, help="Hz")
    ap.add_argument("--sub-depth", type=int, default=1, help="subscriber keep-last depth (input_depth)")
    ap.add_argument("--match-timeout", type=float, default=6.0, help="s the publisher waits for a match")
    ap.add_argument("--settle", type=float, default=0.5, help="s between the match and the first frame")
    ap.add_argument("--drain", type=float, default=1.0, help="s the publisher stays up after the last frame")
    ap.add_argument("--json", type=Path, default=None, help="also write the cells here")
    args = ap.parse_args(argv)
    if args.role == "pub":
        return run_publisher(args)
    if args.role == "sub":
        return run_subscriber(args)
    for s in args.sizes:
        parse_size(s)
    for s in args.setups:
        parse_setup(s)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from scene_perception.ros.dds import shm_profile_xml, udp_profile_xml, write_profile

    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="transport_bench_") as tmp:
        profiles = {
            "shm32": write_profile(shm_profile_xml(32 * 1024 * 1024), tmp),
            "udp": write_profile(udp_profile_xml(32 * 1024 * 1024), tmp),
            "udp_small": write_profile(udp_profile_xml(212992), tmp),
        }
        for size in args.sizes:
            for pq in args.pub_qos:
                for sq in args.sub_qos:
                    for setup in args.setups:
                        cell = run_cell(size, pq, sq, setup, args, profiles)
                        cells.append(cell)
                        lost = f" (lost #{','.join(map(str, cell.lost))})" if 0 < len(cell.lost) <= 10 else ""
                        print(f"{size} pub={pq} sub={sq} {setup}: {cell.result()}{lost}", flush=True)
    print()
    print(
        f"Two processes per cell, fresh ROS domain; {args.frames} frames at {args.rate:g} Hz, subscriber "
        f"keep-last {args.sub_depth}; cell = delivered/sent, latency p50/max; {os.cpu_count()} CPUs"
    )
    print()
    print(markdown_table(cells, args.setups))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(c) for c in cells], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
