#!/usr/bin/env python3
"""ROS graph benchmark: stereo frames in over DDS, outputs back, per node type and input rate.

Two processes per node type, as on a robot: this process runs a *player* node (publishes
``left|right/image_rect`` + ``camera_info``) and a *monitor* node (subscribes to the node's outputs), and
the node under test runs in a second process started with ``scene-perception run`` and a temporary
parameters file. Both processes get ``FASTDDS_BUILTIN_TRANSPORTS=<--transport>`` (default ``LARGE_DATA``:
Fast DDS's default UDP transport drops most large best-effort images between processes; a participant with
the setting and one without do not discover each other) and a private ``ROS_DOMAIN_ID``.

Idle CPUs (``--keep-awake N``, default: one per CPU). On the virtual machines this project is developed on,
a vCPU with nothing to run halts and waking it again (an image arriving for a process that sleeps in
``epoll``/futex) takes the host milliseconds to hundreds of milliseconds: with the machine otherwise idle,
SGBM at 320x240 that computes in 12 ms went through the graph at 2-4 Hz with p95 latency of 1-3 s, and
at 30 Hz with p50 20 ms as soon as anything kept the CPUs busy. A robot's computer wakes in microseconds,
so the benchmark starts N ``nice 19`` busy loops that only take otherwise idle time (the kernel gives a
nice-19 task ~1.5 % of a CPU that a nice-0 task wants). ``--keep-awake 0`` measures the machine as it is.

Node types (``--nodes``): ``stereo_torch`` (stereo_depth, lite GC-Net, torch), ``stereo_ort`` (stereo_depth,
lite, ONNX Runtime; the engine is exported during warm-up, into a temporary cache) and ``sgbm``
(sgbm_depth, OpenCV StereoSGBM with the project's baseline settings, 128 disparities). Every node gets
``num_threads = --threads`` (default 1: on a 2-core machine the player/monitor process needs the other core).

Frames: ``--frames`` pre-rendered pairs per size from the synthetic street world (``data/world.py``),
messages built before timing and cycled; only the header stamps change. Each frame is stamped with its
send time (``time.time_ns()``; the node copies the left image header to its outputs), so

* latency = arrival of the frame's *last* output at the monitor - header stamp (send time): transport in,
  sync, decode, matching, message building, transport out, deserialization. A frame counts as received
  when every output the node publishes arrived (``disparity``, ``depth``, ``points`` and, for stereo_depth,
  ``depth/uncertainty``: the monitor subscribes to all of them, as RViz would);
* throughput (Hz out) = (received - 1) / (last arrival - first arrival);
* jitter = standard deviation of the inter-arrival times of received frames (ms);
* dropped = sent - received (after a drain period), whatever the cause: DDS best-effort queues (the
  node's ``sensor_data`` input keeps 5 frames), synchronizer eviction, a node that is too slow.

Rates (``--rates``): fixed rates in Hz (frames are sent on an absolute schedule, whatever comes back) and
``peak``: lock-step, the next frame is sent as soon as the previous one's outputs are all back (or after
``--peak-timeout``), i.e. the highest rate the graph sustains without queueing. Each (node, size) starts
with a warm-up that is not counted (discovery, the large-data path, engine builds, caches): a frame every
2 s until ``--warmup`` frames came back. Sizes are ``WxH``.

Output: a markdown table (and ``--json FILE``). Latency percentiles are over the received frames of one
cell; ``node infer p50`` is the node's own ``inference latency p50 (ms)`` from /diagnostics at the end of
the cell (matcher only; the node's window is its last 200 frames, so it may include the previous cell),
for comparison with the end-to-end numbers. Examples::

    python benchmarks/ros_graph.py                                   # 320x240 and 640x480, 10/30 Hz + peak
    python benchmarks/ros_graph.py --sizes 320x240 --duration 20 --json out/ros_graph.json
    python benchmarks/ros_graph.py --nodes sgbm --rates 10 peak --duration 5
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: --nodes name -> (node section in the parameters file, its parameters, output topics it publishes).
NODE_TYPES: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "stereo_torch": (
        "stereo_depth",
        {"model": "lite", "backend": "torch", "device": "cpu"},
        ("disparity", "depth", "depth/uncertainty", "points"),
    ),
    "stereo_ort": (
        "stereo_depth",
        {"model": "lite", "backend": "onnxruntime", "device": "cpu"},
        ("disparity", "depth", "depth/uncertainty", "points"),
    ),
    "sgbm": ("sgbm_depth", {"max_disparity": 128}, ("disparity", "depth", "points")),
}
DEFAULT_NODES = ["stereo_torch", "stereo_ort", "sgbm"]


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. 320x240) -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 320x240; got {text!r}") from exc
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size {text} is too small (min 16x16)")
    return w, h


def parse_rate(text: str) -> float | str:
    if text == "peak":
        return "peak"
    try:
        rate = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"rate must be a number (Hz) or 'peak', got {text!r}") from exc
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"rate must be > 0 Hz, got {text}")
    return rate


@dataclass
class Cell:
    """Results of one (node type, size, rate) run."""

    node: str
    size: str
    rate: str
    duration_s: float
    sent: int
    received: int
    dropped: int
    throughput_hz: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    jitter_ms: float
    node_inference_p50_ms: float
    node_diagnostics: dict[str, str] = field(default_factory=dict)


def summarize(
    node: str, size: str, rate: str, duration: float, sent: list[int], arrivals: dict[int, int], diag: dict
) -> Cell:
    """Turn send stamps and complete-arrival times (both ns) into a :class:`Cell`."""
    got = sorted((arrivals[s], s) for s in sent if s in arrivals)
    lat = np.array([(t - s) / 1e6 for t, s in got], dtype=np.float64)
    times = np.array([t for t, _ in got], dtype=np.float64) / 1e9
    nan = float("nan")
    if len(times) >= 2:
        gaps = np.diff(times)
        throughput = (len(times) - 1) / float(times[-1] - times[0]) if times[-1] > times[0] else nan
        jitter = float(np.std(gaps) * 1e3)
    else:
        throughput, jitter = nan, nan

    def pct(q: float) -> float:
        return float(np.percentile(lat, q)) if lat.size else nan

    try:
        infer = float(diag.get("inference latency p50 (ms)", "nan"))
    except ValueError:
        infer = nan
    return Cell(
        node=node,
        size=size,
        rate=rate,
        duration_s=duration,
        sent=len(sent),
        received=len(got),
        dropped=len(sent) - len(got),
        throughput_hz=throughput,
        latency_p50_ms=pct(50),
        latency_p95_ms=pct(95),
        latency_p99_ms=pct(99),
        latency_max_ms=float(lat.max()) if lat.size else nan,
        jitter_ms=jitter,
        node_inference_p50_ms=infer,
        node_diagnostics=dict(diag),
    )


def markdown_table(cells: list[Cell]) -> str:
    head = (
        "| node | size | rate | sent | received | dropped | out Hz | latency p50 ms | p95 ms | p99 ms "
        "| jitter ms | node infer p50 ms |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cells:
        rate = c.rate if c.rate == "peak" else f"{float(c.rate):g} Hz"
        lines.append(
            f"| {c.node} | {c.size} | {rate} | {c.sent} | {c.received} | {c.dropped} | "
            f"{c.throughput_hz:.1f} | {c.latency_p50_ms:.0f} | {c.latency_p95_ms:.0f} | "
            f"{c.latency_p99_ms:.0f} | {c.jitter_ms:.1f} | {c.node_inference_p50_ms:.0f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- ROS side
class Graph:
    """Player + monitor nodes in one rclpy context, spun by a background thread."""

    def __init__(self, domain_id: int, outputs: tuple[str, ...]) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from stereo_msgs.msg import DisparityImage

        from scene_perception.ros.qos import qos_from_name

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.player = Node("graph_player", context=self.context)
        self.monitor = Node("graph_monitor", context=self.context)
        q_in = qos_profile_sensor_data  # the nodes' default input_qos
        self.pubs = [
            self.player.create_publisher(Image, "left/image_rect", q_in),
            self.player.create_publisher(CameraInfo, "left/camera_info", q_in),
            self.player.create_publisher(Image, "right/image_rect", q_in),
            self.player.create_publisher(CameraInfo, "right/camera_info", q_in),
        ]
        types = {
            "disparity": DisparityImage,
            "depth": Image,
            "depth/uncertainty": Image,
            "points": PointCloud2,
        }
        self.outputs = outputs
        self._lock = threading.Lock()
        self._partial: dict[int, set[str]] = {}
        self.arrivals: dict[int, int] = {}  # stamp ns -> time ns when the last output arrived
        self._waiting: int | None = None
        self._done = threading.Event()
        q_out = qos_from_name("reliable", depth=10)
        for topic in outputs:
            self.monitor.create_subscription(
                types[topic], topic, lambda msg, t=topic: self._on_output(t, msg), q_out
            )
        self.diag: dict[str, dict[str, str]] = {}
        self.monitor.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.player)
        self.executor.add_node(self.monitor)
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._spin.start()

    def _spin_loop(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutdown races end the loop
                if not self.context.ok():
                    return
                raise

    def _on_output(self, topic: str, msg: Any) -> None:
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            seen = self._partial.setdefault(stamp, set())
            seen.add(topic)
            if len(seen) == len(self.outputs):
                del self._partial[stamp]
                self.arrivals[stamp] = now
                if self._waiting == stamp:
                    self._done.set()

    def _on_diag(self, msg: Any) -> None:
        for status in msg.status:
            self.diag[status.hardware_id] = {kv.key: kv.value for kv in status.values}

    def ready(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in self.pubs) and all(
            self.monitor.count_publishers(t) > 0 for t in self.outputs
        )

    def discovery(self) -> str:
        """What discovery has matched so far, for error messages."""
        subs = ", ".join(f"{p.topic_name}: {p.get_subscription_count()} sub" for p in self.pubs)
        pubs = ", ".join(f"{t}: {self.monitor.count_publishers(t)} pub" for t in self.outputs)
        return f"{subs}; {pubs}"

    def reset(self) -> None:
        with self._lock:
            self._partial.clear()
            self.arrivals.clear()

    def send(self, frame: tuple, stamp_ns: int, wait: float | None = None) -> bool:
        """Publish one stereo set stamped ``stamp_ns``; with ``wait``, block until its outputs are back."""
        sec, nsec = divmod(stamp_ns, 1_000_000_000)
        for msg in frame:
            msg.header.stamp.sec = sec
            msg.header.stamp.nanosec = nsec
        if wait is not None:
            self._done.clear()
            with self._lock:
                self._waiting = stamp_ns
        for pub, msg in zip(self.pubs, frame, strict=True):
            pub.publish(msg)
        if wait is None:
            return True
        ok = self._done.wait(wait) or stamp_ns in self.arrivals
        self._waiting = None
        return ok

    def close(self) -> None:
        import rclpy

        try:
            rclpy.shutdown(context=self.context)
        except Exception:  # noqa: BLE001 - already shut down
            pass
        self._spin.join(timeout=2)
        self.executor.shutdown()
        self.player.destroy_node()
        self.monitor.destroy_node()


def render_frames(width: int, height: int, count: int) -> list[tuple]:
    """``count`` stereo sets (left Image, left CameraInfo, right Image, right CameraInfo) of the street."""
    from std_msgs.msg import Header

    from scene_perception.data.world import generate_sequence
    from scene_perception.ros.codec import numpy_to_image
    from scene_perception.ros.messages import camera_info_pair_from_camera

    frames = []
    for wf in generate_sequence(0, count, width, height):
        left_id, right_id = wf.camera.frame_id, "world_right_optical"
        li, ri = camera_info_pair_from_camera(wf.camera, right_frame_id=right_id)
        frames.append(
            (
                numpy_to_image(wf.left, "rgb8", Header(frame_id=left_id)),
                li,
                numpy_to_image(wf.right, "rgb8", Header(frame_id=right_id)),
                ri,
            )
        )
    # Each message gets a Header object of its own: :meth:`Graph.send` writes the stamps in place.
    for frame in frames:
        for msg in frame:
            msg.header = Header(frame_id=msg.header.frame_id)
    return frames


def start_node(
    kind: str, threads: int, workdir: Path, env: dict[str, str], input_depth: int | None = None
) -> tuple[subprocess.Popen, Path]:
    """Start the node under test in its own process via ``scene-perception run`` and a parameters file."""
    import yaml

    section, params, _ = NODE_TYPES[kind]
    params = {
        **params,
        "num_threads": int(threads),
        "input_qos": "sensor_data",
        "output_qos": "reliable",
        "publish_points": True,
        "diagnostics_period": 1.0,
        "log_throttle_seconds": 5.0,
    }
    if input_depth is not None:
        params["input_depth"] = int(input_depth)
    if params.get("backend") == "onnxruntime":
        params["engine_cache_dir"] = str(workdir / "engines")
    config = workdir / f"{kind}.yaml"
    config.write_text(yaml.safe_dump({section: {"ros__parameters": params}}))
    log = workdir / f"{kind}.log"
    cmd = [sys.executable, "-m", "scene_perception.cli", "run", "--config", str(config)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    return proc, log


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the benchmark dies (even by SIGKILL), so no node outlives it.

    Runs between fork and exec, so it only makes one C call through a libc handle opened in the parent.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def run_cell(
    graph: Graph, frames: list[tuple], rate: float | str, duration: float, peak_timeout: float, drain: float
) -> tuple[list[int], float]:
    """Send frames for ``duration`` s at ``rate`` (Hz or 'peak'); return send stamps and the send window."""
    sent: list[int] = []
    t_start = time.monotonic()
    k = 0
    if rate == "peak":
        while time.monotonic() - t_start < duration:
            stamp = time.time_ns()
            sent.append(stamp)
            graph.send(frames[k % len(frames)], stamp, wait=peak_timeout)
            k += 1
    else:
        period = 1.0 / float(rate)
        next_t = t_start
        while True:
            now = time.monotonic()
            if now - t_start >= duration:
                break
            if now < next_t:
                time.sleep(next_t - now)
            stamp = time.time_ns()
            sent.append(stamp)
            graph.send(frames[k % len(frames)], stamp)
            k += 1
            # Absolute schedule; if publishing fell more than a period behind, restart it (no bursts).
            next_t = max(next_t + period, time.monotonic() - period)
    window = time.monotonic() - t_start
    # Drain: outputs still in flight belong to this cell.
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and not all(s in graph.arrivals for s in sent[-3:]):
        time.sleep(0.05)
    time.sleep(min(0.2, drain))
    return sent, window


def start_graph(
    kind: str, args: argparse.Namespace, workdir: Path, domain_id: int
) -> tuple[subprocess.Popen, Path, Graph]:
    """Start the node process and this process's player/monitor, and wait until DDS has matched them all.

    On this machine Fast DDS occasionally matches nothing at all between two fresh participants (no
    subscription or publisher seen in either direction for a minute; the node itself is up and active). A
    retry with fresh processes in another domain has always worked, so up to ``--start-attempts`` are made,
    each announced on stderr.
    """
    section, _, outputs = NODE_TYPES[kind]
    for attempt in range(1, args.start_attempts + 1):
        env = {**os.environ, "FASTDDS_BUILTIN_TRANSPORTS": args.transport, "ROS_DOMAIN_ID": str(domain_id)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
        proc, log = start_node(kind, args.threads, workdir, env, args.input_depth)
        graph = Graph(domain_id, outputs)
        deadline = time.monotonic() + args.start_timeout
        while not graph.ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if graph.ready():
            return proc, log, graph
        problem = (
            f"{kind}: node did not come up in domain {domain_id} (exit {proc.poll()}; {graph.discovery()})"
        )
        graph.close()
        stop_node(proc)
        if proc.returncode not in (0, -signal.SIGTERM) or attempt == args.start_attempts:
            raise RuntimeError(f"{problem}; node log tail:\n{log.read_text()[-3000:]}")
        print(f"warning: {problem}; retrying in a new domain", file=sys.stderr, flush=True)
        domain_id = 101 + (domain_id - 101 + random.randint(1, 98)) % 100
    raise AssertionError("unreachable")


def start_awake_loops(count: int) -> list[subprocess.Popen]:
    """Start ``count`` nice-19 busy loops that keep idle vCPUs from halting (see the module docstring)."""
    code = "import os\nos.nice(19)\nwhile True:\n    pass\n"
    return [
        subprocess.Popen([sys.executable, "-c", code], preexec_fn=_die_with_parent)
        for _ in range(count)
    ]


def stop_awake_loops(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait(timeout=5)


def benchmark_node(
    kind: str, args: argparse.Namespace, frames_by_size: dict[str, list[tuple]], domain_id: int, workdir: Path
) -> list[Cell]:
    section = NODE_TYPES[kind][0]
    proc, log, graph = start_graph(kind, args, workdir, domain_id)
    cells: list[Cell] = []
    try:
        for size, frames in frames_by_size.items():
            # Warm-up (not counted): engine export/build for this size, caches, DDS paths.
            # The first frames can be lost while Fast DDS sets the large-data path up even though discovery
            # has matched, and an ONNX export blocks the node for seconds: resend every 2 s until enough
            # outputs (of any warm-up frame) came back.
            graph.reset()
            i = 0
            warm_end = time.monotonic() + args.warmup_timeout
            while (
                len(graph.arrivals) < max(args.warmup, 1)
                and time.monotonic() < warm_end
                and proc.poll() is None
            ):
                graph.send(frames[i % len(frames)], time.time_ns(), wait=2.0)
                i += 1
            if not graph.arrivals:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"{kind} {size}: no output during warm-up; node log tail:\n{tail}")
            for rate in args.rates:
                graph.reset()
                sent, window = run_cell(graph, frames, rate, args.duration, args.peak_timeout, args.drain)
                with graph._lock:
                    arrivals = dict(graph.arrivals)
                diag = next((v for k, v in graph.diag.items() if k.endswith("/" + section)), {})
                cell = summarize(kind, size, str(rate), window, sent, arrivals, diag)
                cells.append(cell)
                if not args.quiet:
                    print(markdown_table([cell]).splitlines()[-1], flush=True)
    finally:
        graph.close()
        stop_node(proc)
    return cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", nargs="+", default=DEFAULT_NODES, choices=sorted(NODE_TYPES))
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=[(320, 240), (640, 480)], help="WxH")
    ap.add_argument(
        "--rates", nargs="+", type=parse_rate, default=[10.0, 30.0, "peak"], help="Hz, or 'peak' (lock-step)"
    )
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of sending per cell")
    ap.add_argument("--threads", type=int, default=1, help="num_threads of every node (torch/ORT/OpenCV)")
    ap.add_argument("--frames", type=int, default=8, help="distinct pre-rendered frames per size")
    ap.add_argument("--warmup", type=int, default=5, help="lock-step frames before each size (not counted)")
    ap.add_argument(
        "--warmup-timeout", type=float, default=120.0, help="s for all warm-up frames of a size (ONNX export)"
    )
    ap.add_argument("--peak-timeout", type=float, default=5.0, help="s to wait for one frame in peak mode")
    ap.add_argument("--drain", type=float, default=3.0, help="s to wait for in-flight outputs after a cell")
    ap.add_argument("--start-timeout", type=float, default=30.0, help="s for the node process to come up")
    ap.add_argument("--start-attempts", type=int, default=3, help="node starts before giving up")
    ap.add_argument("--domain-id", type=int, default=None, help="ROS domain (default: random 101..200)")
    ap.add_argument(
        "--transport", default="LARGE_DATA", help="FASTDDS_BUILTIN_TRANSPORTS value for every process"
    )
    ap.add_argument(
        "--keep-awake", type=int, default=os.cpu_count() or 1, metavar="N",
        help="nice-19 busy loops that keep idle vCPUs awake (0: none; see the module docstring)",
    )
    ap.add_argument(
        "--input-depth", type=int, default=None, metavar="N",
        help="the nodes' input_depth parameter (default: the node's own default)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--quiet", action="store_true", help="only the final table")
    args = ap.parse_args(argv)
    if "sgbm" in args.nodes:
        max_d = NODE_TYPES["sgbm"][1]["max_disparity"]
        narrow = [f"{w}x{h}" for w, h in args.sizes if w <= max_d]
        if narrow:
            ap.error(f"sgbm searches {max_d} disparities: sizes {narrow} must be wider than that")
    # SIGTERM (e.g. a test timeout) must run the cleanup below, which stops the node processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # Must be set before this process creates its DDS participant, and in the node's process too.
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = args.transport
    domain_id = args.domain_id if args.domain_id is not None else random.randint(101, 200)
    frames_by_size = {f"{w}x{h}": render_frames(w, h, args.frames) for w, h in args.sizes}
    if not args.quiet:
        print(f"ROS domain {domain_id}; rendered {args.frames} frames per size", flush=True)
    cells: list[Cell] = []
    awake = start_awake_loops(max(args.keep_awake, 0))
    try:
        with tempfile.TemporaryDirectory(prefix="ros_graph_") as tmp:
            for kind in args.nodes:
                cells += benchmark_node(kind, args, frames_by_size, domain_id, Path(tmp))
    finally:
        stop_awake_loops(awake)
    print()
    print(
        f"ROS graph benchmark: player+monitor in one process, each node in its own (scene-perception run), "
        f"FASTDDS_BUILTIN_TRANSPORTS={args.transport}, domain {domain_id}; {os.cpu_count()} CPUs, "
        f"{args.keep_awake} nice-19 keep-awake loops, node num_threads={args.threads}, "
        f"{args.duration:g} s per cell; latency = send stamp -> last output received"
    )
    print()
    print(markdown_table(cells))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "processes": "player+monitor in one process, node under test in another (scene-perception run)",
            "transport": f"FASTDDS_BUILTIN_TRANSPORTS={args.transport}",
            "keep_awake_loops": args.keep_awake,
            "input_depth": args.input_depth,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "threads": args.threads,
            "duration_s": args.duration,
            "frames": args.frames,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        args.json.write_text(json.dumps({"meta": meta, "cells": [asdict(c) for c in cells]}, indent=2))
    failed = [c for c in cells if c.received == 0]
    if failed:
        print(f"\nno output at all in {len(failed)} cell(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
