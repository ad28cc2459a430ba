#!/usr/bin/env python3
"""Soak test of the stereo depth node: long runs of 30 Hz stereo, watching memory, latency and counters.

What issue 8 asks of a long run is *boundedness*: resident memory that stops growing once the node has
warmed up, queues that do not grow (which would show up as latency creeping up window after window), and no
problem counters ticking over on valid input.  Throughput is not the point: on a small CPU the node cannot
keep up with 30 Hz, so most frames are dropped by design (best-effort keep-last inputs), and that is fine as
long as what is dropped is dropped at the edge, not accumulated.

How it runs
-----------
* The node under test is a separate process, ``scene-perception run --config <params>`` (lite GC-Net,
  torch backend, one intra-op thread, weights found as the node finds them: ``models/`` if present,
  otherwise untrained, which is as good for a soak).  Its RSS is read from ``/proc/<pid>/status`` (VmRSS).
* This process runs a *player* that publishes a small rotating set of pre-rendered procedural stereo pairs
  (``data.procedural.make_stereo_sample``) with CameraInfo at ``--rate`` Hz, stamped with the wall-clock
  send time, and a *monitor* that subscribes to ``depth`` and ``/diagnostics``.  Latency is
  receive time - header stamp (same clock, same machine): queueing + synchronisation + inference + publish.
* Both processes set ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (images between processes: docs/transport.md)
  and share a private ``ROS_DOMAIN_ID`` and a namespace unique to the run (``/soak_<pid>_<hex>``): a random
  domain alone can collide with another test or benchmark on the machine, and a stray ``depth`` publisher
  would corrupt the counts and latencies.  ``/diagnostics`` is absolute, so the monitor keeps only the
  status whose ``hardware_id`` is our node's fully qualified name.

Everything is recorded per ``--window`` (one minute by default): frames sent, input sets the node received
and processed (from its own diagnostics), outputs received here, latency p50/p95/p99/max, RSS median and
max.  The summary compares RSS at the end of the warm-up with RSS at the end (target: growth < 5 %) and the
latency of the first window after the warm-up with the last one.

RSS is compared as the *median* over ``--rss-span`` seconds (one minute) ending at each point, not as one
sample: the node's RSS swings by up to ~10 % within every frame (torch allocates the cost volume and returns
it to the OS after the forward pass), so a single sample says more about the phase of the frame than about
a leak.  A leak raises the median (and the floor, also reported); the per-frame peak is reported as well.

Outputs that arrive after the last frame was sent are counted but their latencies are not: with no new
input, the frames left in the node's keep-last input history stop being replaced and age in place.

Exit status: 0 when RSS growth < 5 %, the node stayed alive, kept producing output to the last window and
shut down cleanly on SIGINT (it is killed after ``--stop-timeout`` otherwise); 1 when any of these fails;
2 when the node never became active (``--start-attempts`` starts, each in a fresh domain: Fast DDS here
occasionally matches nothing between two fresh participants).  Problem counters and latency stability are
reported, not enforced.
Example::

    .venv/bin/python benchmarks/soak.py --duration 1800 --json /tmp/soak.json | tee /tmp/soak.txt
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]

#: Pass/fail bound on RSS growth from the end of warm-up to the end of the run (issue 8).
RSS_GROWTH_LIMIT = 0.05
#: Latency is called stable when the last window's p95 is within this fraction (or LATENCY_SLACK_MS,
#: whichever is larger) of the first post-warm-up window's p95.  Generous on purpose: a shared machine
#: drifts; an unbounded queue does not drift, it climbs.
LATENCY_TOLERANCE = 0.25
LATENCY_SLACK_MS = 20.0
#: The node under test (its section name in the parameters file).
NODE_NAME = "stereo_depth"
#: DiagnosticStatus values reported next to the node's counters (missing ones show as None).
DIAG_CONTEXT_KEYS = (
    "inference latency p50 (ms)",
    "inference latency p95 (ms)",
    "latency p50 (ms)",
    "latency p95 (ms)",
    "backend",
    "trained",
    "weights",
    "level",
    "message",
)


# ---------------------------------------------------------------------------------------------- records
@dataclass
class Window:
    """Everything measured in one time window (seconds are relative to the first frame sent)."""

    index: int
    start_s: float
    end_s: float
    sent: int = 0
    received: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    node_in: int | None = None  # left images the node received (its own counter)
    node_sets: int | None = None  # synchronized stereo sets
    node_outputs: int | None = None  # sets processed and published

    def row(self) -> dict[str, Any]:
        """JSON/table view: counts and percentiles, not the raw samples."""
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        pct = {f"p{q}": float(np.percentile(lat, q)) if lat.size else math.nan for q in (50, 95, 99)}
        span = max(self.end_s - self.start_s, 1e-9)
        return {
            "window": self.index,
            "start_s": round(self.start_s, 1),
            "end_s": round(self.end_s, 1),
            "sent": self.sent,
            "node_in": self.node_in,
            "node_sets": self.node_sets,
            "processed": self.node_outputs,
            "received": self.received,
            "outputs_per_s": self.received / span,
            "dropped": None if self.node_outputs is None else self.sent - self.node_outputs,
            "latency_ms": {**pct, "max": float(lat.max()) if lat.size else math.nan},
            "rss_mib_median": median_of(self.rss_kb) / 1024,
            "rss_mib_max": max(self.rss_kb) / 1024 if self.rss_kb else math.nan,
        }


def read_rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in kB, None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` (all threads), from /proc/<pid>/stat; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")" closing comm, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_of(samples: Sequence[int]) -> float:
    return float(statistics.median(samples)) if samples else math.nan


# ---------------------------------------------------------------------------------------------- node
def write_params(path: Path, args: argparse.Namespace, cache_dir: Path, namespace: str) -> None:
    """The node's ROS 2 parameters file: what a CPU deployment of lite would run."""
    params = {
        "model": args.model,
        "weights": args.weights or "",
        "backend": "torch",
        "device": "cpu",
        "num_threads": args.threads,
        "engine_cache_dir": str(cache_dir),
        "input_qos": "sensor_data",
        "output_qos": "reliable",
        "queue_size": 5,
        "publish_points": True,  # only computed while someone subscribes to points; nobody does here
        "diagnostics_period": 1.0,
    }
    # Keyed by the fully qualified name: a bare ``stereo_depth`` key would not match a namespaced node.
    node_key = f"{namespace}/{NODE_NAME}"
    path.write_text(yaml.safe_dump({node_key: {"ros__parameters": params}}, sort_keys=False))


def node_command() -> list[str]:
    """``scene-perception`` from this interpreter's environment (its process is the one measured)."""
    script = Path(sys.executable).parent / "scene-perception"
    if script.is_file():
        return [str(script)]
    found = shutil.which("scene-perception")
    if found:
        return [found]
    return [sys.executable, "-m", "scene_perception.cli"]


def stop_process(proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    """SIGINT (the node shuts down its lifecycle cleanly), SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return {"returncode": proc.returncode, "clean": False, "killed": False, "already_exited": True}
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
        return {"returncode": proc.returncode, "clean": proc.returncode == 0, "killed": False}
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return {"returncode": proc.returncode, "clean": False, "killed": True}


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------- this side
def render_frames(count: int, width: int, height: int) -> list[tuple[Any, Any, Any, Any]]:
    """``count`` stereo sets as ready-made messages; only the stamps change when they are sent."""
    from scene_perception.data.procedural import make_stereo_sample
    from scene_perception.ros.codec import numpy_to_image
    from scene_perception.ros.messages import camera_info_pair_from_camera

    frames = []
    for seed in range(count):
        sample = make_stereo_sample(seed, width=width, height=height, max_disparity=min(64.0, width / 4))
        left_info, right_info = camera_info_pair_from_camera(sample.camera)
        left = numpy_to_image(sample.left, "rgb8")
        right = numpy_to_image(sample.right, "rgb8")
        left.header.frame_id = left_info.header.frame_id
        right.header.frame_id = right_info.header.frame_id
        frames.append((left, left_info, right, right_info))
    return frames


class SoakClient:
    """Player + monitor in one rclpy node, driven by :meth:`step` from a single-threaded loop.

    One thread on purpose: sending is scheduled between ``spin_once`` calls, so no lock is needed and the
    send times are as regular as the callbacks are short (they only append numbers).
    """

    def __init__(self, domain_id: int, frames: list[tuple[Any, ...]], namespace: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image

        from scene_perception.ros.qos import qos_from_name

        self._rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        # Relative topic names resolve under ``namespace``, where the node under test was started.
        self.node = Node("soak_player", namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        in_qos = qos_from_name("sensor_data")
        self.pubs = [
            self.node.create_publisher(Image, "left/image_rect", in_qos),
            self.node.create_publisher(CameraInfo, "left/camera_info", in_qos),
            self.node.create_publisher(Image, "right/image_rect", in_qos),
            self.node.create_publisher(CameraInfo, "right/camera_info", in_qos),
        ]
        self.frames = frames
        self.sent = 0
        self.received: list[tuple[float, float]] = []  # (monotonic receive time, latency ms)
        self.diag: dict[str, str] = {}
        self.diag_count = 0
        self._hardware_id = f"{namespace}/{NODE_NAME}"
        self.node.create_subscription(Image, "depth", self._on_depth, qos_from_name("reliable", depth=10))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_depth(self, msg: Any) -> None:
        now_ns = time.time_ns()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.received.append((time.monotonic(), (now_ns - stamp_ns) / 1e6))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            if status.hardware_id == self._hardware_id:
                self.diag = {kv.key: kv.value for kv in status.values}
                level = status.level
                self.diag["level"] = str(level if isinstance(level, int) else int.from_bytes(level, "little"))
                self.diag["message"] = status.message
                self.diag_count += 1

    def node_active(self) -> bool:
        """Configured and subscribed to its inputs, as the node's own diagnostics say."""
        state = self.diag.get("state", "")
        return state.startswith("configured") and "subscribed" in state

    def send(self) -> None:
        """Publish the next stereo set, all four messages stamped with the send time."""
        left, left_info, right, right_info = self.frames[self.sent % len(self.frames)]
        now_ns = time.time_ns()
        sec, nanosec = divmod(now_ns, 1_000_000_000)
        for msg in (left, left_info, right, right_info):
            msg.header.stamp.sec = sec
            msg.header.stamp.nanosec = nanosec
        for pub, msg in zip(self.pubs, (left, left_info, right, right_info), strict=True):
            pub.publish(msg)
        self.sent += 1

    def spin(self, timeout: float) -> None:
        self.executor.spin_once(timeout_sec=max(0.0, timeout))

    def counter(self, key: str) -> int | None:
        """An integer diagnostics value; None when absent or not a number (e.g. ``n/a ...``)."""
        try:
            return int(self.diag[key])
        except (KeyError, ValueError):
            return None

    def problems(self) -> dict[str, int]:
        return {k.removeprefix("problem "): int(v) for k, v in self.diag.items() if k.startswith("problem ")}

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown()
        if self.context.ok():
            self._rclpy.shutdown(context=self.context)


# ---------------------------------------------------------------------------------------------- summary
def summarize(
    windows: list[Window],
    rss: list[tuple[float, int]],
    args: argparse.Namespace,
    client: SoakClient,
    t0: float,
    elapsed: float,
    node_alive: bool,
    stop: dict[str, Any],
) -> dict[str, Any]:
    """RSS growth, latency stability, throughput, drops and the node's counters, with a verdict."""
    span = min(args.rss_span, args.warmup) if args.warmup > 0 else args.rss_span
    warm_samples = [kb for t, kb in rss if args.warmup - span < t <= args.warmup] or [kb for _, kb in rss[:1]]
    end_samples = [kb for t, kb in rss if t > elapsed - span]
    after_warmup = [kb for t, kb in rss if t > args.warmup]
    rss_warm, rss_end = median_of(warm_samples), median_of(end_samples)
    growth = (rss_end - rss_warm) / rss_warm if rss_warm > 0 else math.nan
    floor_warm, floor_end = min(warm_samples, default=0), min(end_samples, default=0)

    measured = [w for w in windows if w.start_s >= args.warmup - 1e-6 and w.latencies_ms] or [
        w for w in windows if w.latencies_ms
    ]
    first, last = (measured[0].row(), measured[-1].row()) if measured else (None, None)
    stable = None
    if first is not None and last is not None and first["window"] != last["window"]:
        p95_first, p95_last = first["latency_ms"]["p95"], last["latency_ms"]["p95"]
        stable = abs(p95_last - p95_first) <= max(LATENCY_TOLERANCE * p95_first, LATENCY_SLACK_MS)

    post = [t for t, _ in client.received if t - t0 > args.warmup]
    post_span = max(elapsed - args.warmup, 1e-9)
    outputs = client.counter("outputs count") or 0
    problems = {k: v for k, v in client.problems().items() if v}
    last_window_outputs = windows[-1].received if windows else 0

    # Required checks decide the exit status; the others are reported for the reader to judge (latency on a
    # shared machine drifts, and problem counters have their own tests).
    def check(name: str, ok: bool | None, required: bool) -> dict[str, Any]:
        return {"name": name, "ok": ok, "required": required}

    checks = [
        check(f"RSS growth < {RSS_GROWTH_LIMIT:.0%}", bool(growth < RSS_GROWTH_LIMIT), True),
        check("node alive to the end", node_alive, True),
        check("node still producing output (last window)", last_window_outputs > 0, True),
        check("clean shutdown (SIGINT, exit 0)", bool(stop.get("clean")), True),
        check("no problem counters", not problems, False),
        check("latency stable (last vs first window p95)", stable, False),
    ]
    fatal = any(c["required"] and not c["ok"] for c in checks)
    return {
        "elapsed_s": elapsed,
        "frames_sent": client.sent,
        "send_rate_hz": client.sent / max(elapsed, 1e-9),
        "outputs_received": len(client.received),
        "outputs_per_s_after_warmup": len(post) / post_span,
        "node_processed": outputs,
        "dropped": client.sent - outputs,
        "dropped_fraction": (client.sent - outputs) / client.sent if client.sent else math.nan,
        "rss_mib_warmup_end": rss_warm / 1024,
        "rss_mib_end": rss_end / 1024,
        "rss_mib_peak_after_warmup": max(after_warmup) / 1024 if after_warmup else math.nan,
        "rss_growth": growth,
        "rss_mib_floor_warmup_end": floor_warm / 1024,
        "rss_mib_floor_end": floor_end / 1024,
        "rss_span_s": span,
        "latency_first_window": first,
        "latency_last_window": last,
        "latency_stable": stable,
        "node_diagnostics": {
            # Every counter the node reports (names as in its DiagnosticStatus), then the context.
            **{k: v for k, v in client.diag.items() if k.endswith(" count")},
            **{k: client.diag.get(k) for k in DIAG_CONTEXT_KEYS},
        },
        "problems": problems,
        "node_stop": stop,
        "checks": checks,
        "passed": not fatal,
    }


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def markdown_report(rows: list[dict[str, Any]], summary: dict[str, Any], args: argparse.Namespace) -> str:
    """Per-window table and the summary, as markdown."""
    out = [
        f"## Soak: stereo_depth ({args.model}, torch, {args.threads} thread), {args.width}x{args.height} "
        f"at {args.rate:g} Hz, {summary['elapsed_s']:.0f} s (warm-up {args.warmup:g} s)",
        "",
        "| window | t (s) | sent | node in | processed | received | out/s | dropped "
        "| lat p50 | p95 | p99 | max (ms) | RSS median (MiB) | RSS max |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lat = r["latency_ms"]
        warm = " (warm-up)" if r["end_s"] <= args.warmup + 1e-6 else ""
        out.append(
            f"| {r['window']}{warm} | {r['start_s']:.0f}-{r['end_s']:.0f} | {r['sent']} "
            f"| {fmt(r['node_in'])} "
            f"| {fmt(r['processed'])} | {r['received']} | {r['outputs_per_s']:.2f} | {fmt(r['dropped'])} "
            f"| {fmt(lat['p50'], '.0f')} | {fmt(lat['p95'], '.0f')} | {fmt(lat['p99'], '.0f')} "
            f"| {fmt(lat['max'], '.0f')} | {fmt(r['rss_mib_median'])} | {fmt(r['rss_mib_max'])} |"
        )
    s = summary
    first, last = s["latency_first_window"], s["latency_last_window"]

    def lat_text(w: dict[str, Any] | None) -> str:
        if w is None:
            return "-"
        lat = w["latency_ms"]
        return (
            f"window {w['window']}: p50 {fmt(lat['p50'], '.0f')} / p95 {fmt(lat['p95'], '.0f')} / "
            f"p99 {fmt(lat['p99'], '.0f')} ms"
        )

    diag = s["node_diagnostics"]
    stable = {True: "stable", False: "NOT stable", None: "n/a (one window)"}[s["latency_stable"]]
    out += [
        "",
        "| summary | value |",
        "|---|---|",
        f"| frames sent | {s['frames_sent']} ({s['send_rate_hz']:.2f} Hz) |",
        f"| outputs received | {s['outputs_received']} "
        f"({s['outputs_per_s_after_warmup']:.2f}/s after warm-up) |",
        f"| processed by the node | {s['node_processed']} |",
        f"| dropped (sent - processed) | {s['dropped']} ({fmt(100 * s['dropped_fraction'], '.1f')} %) |",
        f"| RSS end of warm-up -> end (median of {s['rss_span_s']:g} s) | {s['rss_mib_warmup_end']:.1f} -> "
        f"{s['rss_mib_end']:.1f} MiB (growth {fmt(100 * s['rss_growth'], '+.2f')} %); floor "
        f"{s['rss_mib_floor_warmup_end']:.1f} -> {s['rss_mib_floor_end']:.1f} MiB; peak after warm-up "
        f"{fmt(s['rss_mib_peak_after_warmup'])} MiB |",
        f"| latency first window | {lat_text(first)} |",
        f"| latency last window | {lat_text(last)} ({stable}) |",
        "| node counters | "
        + ", ".join(f"{k.removesuffix(' count')} {v}" for k, v in diag.items() if k.endswith(" count"))
        + " |",
        f"| CPU (% of one core) | node {fmt(s.get('node_cpu_percent'), '.0f')}, "
        f"player + monitor {fmt(s.get('player_cpu_percent'), '.0f')} ({os.cpu_count()} cores) |",
        f"| node latency p50/p95 | callback {diag['latency p50 (ms)']}/{diag['latency p95 (ms)']} ms, "
        f"inference {diag['inference latency p50 (ms)']}/{diag['inference latency p95 (ms)']} ms |",
        f"| node shutdown | exit code {s['node_stop'].get('returncode')}"
        + (", clean" if s["node_stop"].get("clean") else ", NOT clean")
        + (", killed after timeout" if s["node_stop"].get("killed") else "")
        + " |",
        f"| node problems | {', '.join(f'{k}={v}' for k, v in s['problems'].items()) or 'none'} |",
        f"| model | {diag['backend']}; trained={diag['trained']}; weights {diag['weights']} |",
        "",
    ]
    for c in s["checks"]:
        mark = "PASS" if c["ok"] else ("n/a" if c["ok"] is None else "FAIL")
        out.append(f"- {mark}: {c['name']}{'' if c['required'] else ' (informational)'}")
    out.append("")
    out.append(f"**Verdict: {'PASS' if s['passed'] else 'FAIL'}** (required checks)")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of input (default 1800)")
    p.add_argument("--rate", type=float, default=30.0, help="stereo sets per second sent (default 30)")
    p.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the frames (default 320x240)")
    p.add_argument("--warmup", type=float, default=120.0, help="seconds before the RSS baseline (120)")
    p.add_argument("--window", type=float, default=60.0, help="report window in seconds (default 60)")
    p.add_argument("--frames", type=int, default=8, help="distinct pre-rendered stereo sets to rotate")
    p.add_argument("--model", default="lite")
    p.add_argument("--weights", default="", help="safetensors file; default: what the node finds (models/)")
    p.add_argument("--threads", type=int, default=1, help="node num_threads (default 1)")
    p.add_argument("--rss-interval", type=float, default=1.0, help="seconds between RSS samples (1)")
    p.add_argument("--rss-span", type=float, default=60.0, help="seconds of RSS samples per median (60)")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: random 150..230)")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds for the node to activate")
    p.add_argument("--start-attempts", type=int, default=3,
                   help="node starts (each in a fresh domain) before giving up when it never reports active")
    p.add_argument("--stop-timeout", type=float, default=20.0, help="seconds after SIGINT before SIGKILL")
    p.add_argument("--node-log", default=None, help="keep the node's output here (default: temporary)")
    p.add_argument("--json", default=None, help="write windows and summary here")
    args = p.parse_args(argv)
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be WIDTHxHEIGHT, got {args.size!r}")
    if min(args.duration, args.rate, args.window, args.rss_interval, args.rss_span) <= 0 or args.frames < 1:
        p.error("--duration, --rate, --window, --rss-interval, --rss-span must be positive, --frames >= 1")
    if args.start_attempts < 1:
        p.error("--start-attempts must be >= 1")
    if not 0 <= args.warmup < args.duration:
        p.error("--warmup must be in [0, duration)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    domain_id = args.domain_id if args.domain_id is not None else random.randint(150, 230)
    tmp = Path(tempfile.mkdtemp(prefix="soak_"))
    params = tmp / "params.yaml"
    namespace = f"/soak_{os.getpid()}_{random.getrandbits(32):08x}"
    write_params(params, args, tmp / "engines", namespace)
    node_log = Path(args.node_log) if args.node_log else tmp / "node.log"
    env = dict(
        os.environ,
        FASTDDS_BUILTIN_TRANSPORTS="LARGE_DATA",
        ROS_DOMAIN_ID=str(domain_id),
        OMP_NUM_THREADS=str(args.threads),
        PYTHONUNBUFFERED="1",
    )
    # Fast DDS reads the variable when a participant is created: set it for this process's participant and
    # put the old value back afterwards (main() also runs inside pytest, next to other participants).
    saved_transport = os.environ.get("FASTDDS_BUILTIN_TRANSPORTS")
    os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    node_log.write_bytes(b"")
    proc: subprocess.Popen | None = None
    client: SoakClient | None = None
    code = 2
    try:
        frames = render_frames(args.frames, args.width, args.height)
        for attempt in range(1, args.start_attempts + 1):
            print(f"[soak] domain {domain_id}, namespace {namespace}, node log {node_log}", flush=True)
            env["ROS_DOMAIN_ID"] = str(domain_id)
            with node_log.open("ab") as log:
                command = [*node_command(), "run", "--config", str(params), "--ros-args", "-r",
                           f"__ns:={namespace}"]
                proc = subprocess.Popen(
                    command,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal reaches us; we stop the node ourselves
                )
            client = SoakClient(domain_id, frames, namespace)
            why = wait_active(args, proc, client)
            if why is None:
                code = run_soak(args, proc, client, node_log)
                break
            print(f"[soak] node {why}; last log lines:\n{log_tail(node_log)}", flush=True)
            # Fast DDS on these machines occasionally matches nothing between two fresh participants (the node
            # is up and active, its diagnostics never arrive; see ros_graph.start_graph): fresh processes in
            # another domain have always worked.  A node that exited is not retried.
            client.close()
            client = None
            stop_process(proc, args.stop_timeout)
            if why.startswith("exited") or attempt == args.start_attempts:
                break
            domain_id = 150 + (domain_id - 150 + random.randint(1, 80)) % 81
            print(f"[soak] retrying in a new domain ({attempt + 1} of {args.start_attempts})", flush=True)
    finally:
        if proc is not None and proc.poll() is None:  # an exception: run_soak did not stop it
            stop_process(proc, args.stop_timeout)
        if client is not None:
            client.close()
        if saved_transport is None:
            os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
        else:
            os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = saved_transport
    if not args.node_log:
        shutil.rmtree(tmp, ignore_errors=True)
    return code


def wait_active(args: argparse.Namespace, proc: subprocess.Popen, client: SoakClient) -> str | None:
    """Spin until the node's diagnostics say it is active: None, or why not (it exited, or the
    ``--startup-timeout`` passed)."""
    deadline = time.monotonic() + args.startup_timeout
    while not client.node_active():
        if proc.poll() is not None:
            return f"exited with {proc.returncode}"
        if time.monotonic() > deadline:
            return f"did not activate in {args.startup_timeout:g} s (no diagnostics from it here)"
        client.spin(0.1)
    return None


def run_soak(args: argparse.Namespace, proc: subprocess.Popen, client: SoakClient, node_log: Path) -> int:
    """Send for ``--duration`` seconds to an active node, report; returns the exit status."""
    print(
        f"[soak] node active ({client.diag.get('backend')}, trained={client.diag.get('trained')}); "
        f"sending {args.width}x{args.height} at {args.rate:g} Hz for {args.duration:g} s",
        flush=True,
    )

    period = 1.0 / args.rate
    t0 = time.monotonic()
    cpu0 = (cpu_seconds(proc.pid), time.process_time())
    windows: list[Window] = []
    rss: list[tuple[float, int]] = []
    next_send = next_rss = t0
    node_alive = True
    received_seen = 0

    def window_at(t_rel: float) -> Window:
        index = int(t_rel // args.window)
        while len(windows) <= index:
            i = len(windows)
            windows.append(Window(i, i * args.window, min((i + 1) * args.window, args.duration)))
        return windows[index]

    totals = {"in": 0, "sets": 0, "outputs": 0}  # the node's cumulative counters at the last window end

    def close_window(w: Window) -> None:
        # The node's counters are cumulative (and lag up to one diagnostics period): store per-window deltas.
        now = {
            "in": client.counter("input left/image_rect count") or 0,
            "sets": client.counter("stereo sets count") or 0,
            "outputs": client.counter("outputs count") or 0,
        }
        w.node_in, w.node_sets, w.node_outputs = (now[k] - totals[k] for k in ("in", "sets", "outputs"))
        totals.update(now)
        r = w.row()
        print(
            f"[soak] window {w.index} ({w.start_s:.0f}-{w.end_s:.0f} s): sent {w.sent}, received "
            f"{w.received}, latency p50/p95/p99 {r['latency_ms']['p50']:.0f}/{r['latency_ms']['p95']:.0f}/"
            f"{r['latency_ms']['p99']:.0f} ms, RSS median {r['rss_mib_median']:.1f} "
            f"max {r['rss_mib_max']:.1f} MiB",
            flush=True,
        )

    current = window_at(0.0)
    while True:
        now = time.monotonic()
        t_rel = now - t0
        if t_rel >= args.duration:
            break
        w = window_at(t_rel)
        if w is not current:
            close_window(current)
            current = w
        if now >= next_send:
            client.send()
            current.sent += 1
            next_send += period
            if next_send < now:  # fell behind (e.g. the machine stalled): skip, never burst to catch up
                next_send = now + period
        if now >= next_rss:
            kb = read_rss_kb(proc.pid)
            if kb is not None:
                rss.append((t_rel, kb))
                current.rss_kb.append(kb)
            next_rss += args.rss_interval
            if proc.poll() is not None:
                node_alive = False
                print(f"[soak] node DIED (exit {proc.returncode}) at {t_rel:.0f} s:\n{log_tail(node_log)}")
                break
        client.spin(min(next_send, next_rss) - time.monotonic())
        for t_recv, latency in client.received[received_seen:]:
            wr = window_at(t_recv - t0) if t_recv - t0 < args.duration else current
            wr.received += 1
            wr.latencies_ms.append(latency)
        received_seen = len(client.received)
    elapsed = time.monotonic() - t0
    node_cpu = cpu_seconds(proc.pid)
    cpu = {
        # Percent of one core over the run: the node should sit near 100 (busy, never idle while frames wait).
        "node_cpu_percent": 100 * (node_cpu - cpu0[0]) / elapsed if node_cpu and cpu0[0] else None,
        "player_cpu_percent": 100 * (time.process_time() - cpu0[1]) / elapsed,
    }
    # Let in-flight outputs and one more diagnostics message arrive before the final counters are read.
    # They count as received, but their latencies are left out: with no new input the frames still held in
    # the node's keep-last input history are no longer replaced by fresh ones, so they age in place (one
    # inference time per frame) -- a shutdown artifact, not queueing under load.
    drain_end = time.monotonic() + 2.0
    while node_alive and time.monotonic() < drain_end:
        client.spin(0.05)
    current.received += len(client.received) - received_seen
    # Stop the node now (counters are read), so the report can say whether it shut down cleanly.
    stop = stop_process(proc, args.stop_timeout)
    current.end_s = elapsed
    close_window(current)
    windows = windows[: current.index + 1]

    summary = summarize(windows, rss, args, client, t0, elapsed, node_alive, stop)
    summary.update(cpu)
    rows = [w.row() for w in windows]
    print()
    print(markdown_report(rows, summary, args), flush=True)
    if args.json:
        payload = {
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "windows": rows,
            "rss_samples": [{"t_s": round(t, 2), "rss_kb": kb} for t, kb in rss],
            "latency_samples": [[round(t - t0, 3), round(ms, 1)] for t, ms in client.received],
            "summary": summary,
            "node_diagnostics_raw": client.diag,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
