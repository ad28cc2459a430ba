"""Process-level Fast DDS setup: transport profiles for camera-sized frames between processes.

Fast DDS (``rmw_fastrtps_cpp``, the default RMW) reads its transports once, when a process creates its
first DDS participant (``rclpy.init``), from ``FASTDDS_BUILTIN_TRANSPORTS`` or an XML profile named by
``FASTDDS_DEFAULT_PROFILES_FILE``. Nothing here touches a process that already has a participant, and
nothing is set when the user chose the transports themselves. docs/transport.md has the measurements
that decide what (if anything) this module sets by default.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

#: Environment variables through which a user (or a launch file) has already chosen Fast DDS's transports.
USER_TRANSPORT_VARIABLES = (
    "FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"
)
#: Profile files Fast DDS loads from the working directory by itself.
USER_PROFILE_FILES = ("DEFAULT_FASTDDS_PROFILES.xml", "DEFAULT_FASTRTPS_PROFILES.xml")

#: Shared-memory segment of the large-segment profile: room for a few 1280x720 rgb8 frames (2.7 MB each)
#: in flight; Fast DDS's default segment is 512 KiB, less than one 640x480 rgb8 frame (900 KiB).
DEFAULT_SHM_SEGMENT_BYTES = 32 * 1024 * 1024


def _profile_xml(transports: Sequence[tuple[str, str, dict[str, int]]]) -> str:
    """A Fast DDS XML file whose default participant profile uses exactly ``transports``: (id, type, extra
    descriptor elements) each, in order, instead of the built-in ones."""
    descriptors = "".join(
        "      <transport_descriptor>\n"
        f"        <transport_id>{tid}</transport_id>\n"
        f"        <type>{kind}</type>\n"
        + "".join(f"        <{tag}>{int(value)}</{tag}>\n" for tag, value in extra.items())
        + "      </transport_descriptor>\n"
        for tid, kind, extra in transports
    )
    ids = "".join(f"          <transport_id>{tid}</transport_id>\n" for tid, _, _ in transports)
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        '<dds xmlns="http://www.eprosima.com">\n'
        "  <profiles>\n"
        "    <transport_descriptors>\n"
        f"{descriptors}"
        "    </transport_descriptors>\n"
        '    <participant profile_name="scene_perception_participant" is_default_profile="true">\n'
        "      <rtps>\n"
        "        <useBuiltinTransports>false</useBuiltinTransports>\n"
        "        <userTransports>\n"
        f"{ids}"
        "        </userTransports>\n"
        "      </rtps>\n"
        "    </participant>\n"
        "  </profiles>\n"
        "</dds>\n"
    )


def shm_profile_xml(segment_bytes: int = DEFAULT_SHM_SEGMENT_BYTES) -> str:
    """A Fast DDS XML profile: the default transports (shared memory + UDPv4), with a larger SHM segment.

    It is the default participant profile, so every participant of a process that reads it
    (``FASTDDS_DEFAULT_PROFILES_FILE``) uses it. A *sender's* segment is what limits shared-memory
    delivery, so this helps when the driver's process has it (docs/transport.md: ``shm32/shm32``).
    """
    if segment_bytes <= 0:
        raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
    return _profile_xml([("scene_perception_shm", "SHM", {"segment_size": segment_bytes}),
                         ("scene_perception_udp", "UDPv4", {})])


def udp_profile_xml(receive_buffer_bytes: int = 32 * 1024 * 1024) -> str:
    """A Fast DDS XML profile with UDPv4 only (no shared memory) and a large socket receive buffer.

    Linux caps the buffer at ``net.core.rmem_max`` (and doubles what it grants); Fast DDS accepts the cap.
    """
    return _profile_xml([("scene_perception_udp", "UDPv4", {"receiveBufferSize": receive_buffer_bytes})])


def write_profile(xml: str, directory: str | Path | None = None) -> Path:
    """Write ``xml`` to a new file (in ``directory`` or the temp dir) and return its path."""
    fd, name = tempfile.mkstemp(prefix="scene_perception_fastdds_", suffix=".xml", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(xml)
    return Path(name)


def write_stable_profile(xml: str, directory: str | Path | None = None) -> Path:
    """Write ``xml`` to a file named by its content and the user (so every start reuses one file and
    nothing accumulates or needs removing while a process may still read it); return its path."""
    digest = hashlib.sha256(xml.encode()).hexdigest()[:12]
    path = Path(directory or tempfile.gettempdir()) / f"scene_perception_fastdds_{os.getuid()}_{digest}.xml"
    try:
        if path.read_text() == xml:
            return path
    except OSError:
        pass
    tmp = write_profile(xml, path.parent)
    os.replace(tmp, path)  # atomic: a process starting concurrently reads the old or the new file whole
    return path


def user_chose_transports(env: MutableMapping[str, str] | None = None, cwd: str | Path | None = None) -> str:
    """How the user already configured Fast DDS's transports (``NAME=value``, or a profile file in the
    working directory), or ""."""
    env = os.environ if env is None else env
    for name in USER_TRANSPORT_VARIABLES:
        if env.get(name):
            return f"{name}={env[name]}"
    for name in USER_PROFILE_FILES:
        if (Path(cwd or os.getcwd()) / name).is_file():
            return f"./{name}"
    return ""


#: Environment switch: ``off`` leaves Fast DDS's transports to Fast DDS (and to the user's own settings).
SWITCH_VARIABLE = "SCENE_PERCEPTION_FASTDDS_PROFILE"
#: UDP socket receive buffer the process profile asks for; Linux grants min(this, net.core.rmem_max) x 2.
UDP_RECEIVE_BUFFER_BYTES = 32 * 1024 * 1024
#: ``net.core.rmem_max`` below which the granted buffer is too small for camera-sized best-effort frames
#: (docs/transport.md: Linux's default, 212992, loses most 640x480 rgb8 stereo sets).
RECOMMENDED_RMEM_MAX = 4 * 1024 * 1024


def rmem_max() -> int | None:
    """The kernel's cap on a socket's receive buffer (``net.core.rmem_max``), or None where unknown."""
    try:
        return int(Path("/proc/sys/net/core/rmem_max").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def configure(
    env: MutableMapping[str, str] | None = None,
    logger: Any = None,
    directory: str | Path | None = None,
) -> str:
    """Set this process's Fast DDS transports up for camera-sized input; call before ``rclpy.init``.

    Writes :func:`udp_profile_xml` (UDPv4 only, a 32 MiB socket receive buffer requested) to a file and
    points ``FASTDDS_DEFAULT_PROFILES_FILE`` at it, so that frames from a driver in another process
    arrive over UDP into a buffer that holds them, instead of through the *driver's* 512 KiB
    shared-memory segment, which loses camera-sized frames (docs/transport.md has the measurements). A
    driver with Fast DDS's defaults needs no change. Nothing is set when the user already chose
    (``FASTDDS_BUILTIN_TRANSPORTS``, ``FASTDDS_DEFAULT_PROFILES_FILE``, a ``DEFAULT_FASTDDS_PROFILES.xml``
    in the working directory), when another RMW is selected, when ``SCENE_PERCEPTION_FASTDDS_PROFILE=off``,
    or under ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` / ``ROS_LOCALHOST_ONLY=1``, where rmw_fastrtps
    adds shared memory to every participant itself (so the profile cannot help; a warning says what does).

    Returns one line saying what was done; with ``logger`` (an rclpy logger) also logs it, as a warning
    where frames are likely to be lost.
    """
    env = os.environ if env is None else env
    note, warn = _configure(env, directory)
    if logger is not None and warn:  # two call sites: rclpy refuses two severities from one
        logger.warning(note)
    elif logger is not None:
        logger.info(note)
    return note


def _configure(env: MutableMapping[str, str], directory: str | Path | None) -> tuple[str, bool]:
    if env.get(SWITCH_VARIABLE, "").strip().lower() in ("off", "0", "false", "no"):
        return f"Fast DDS transports: Fast DDS's own ({SWITCH_VARIABLE}=off)", False
    rmw = env.get("RMW_IMPLEMENTATION", "").strip()
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return f"Fast DDS transports: not configured (RMW_IMPLEMENTATION={rmw})", False
    chosen = user_chose_transports(env)
    if chosen:
        return f"Fast DDS transports: as set by {chosen}", False
    if (env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").strip().upper() == "LOCALHOST"
            or env.get("ROS_LOCALHOST_ONLY", "").strip() == "1"):
        return (
            "Fast DDS transports: not configured: with discovery limited to localhost rmw_fastrtps adds "
            "shared memory to every participant, and camera-sized frames from a driver with Fast DDS's "
            "512 KiB default segment are lost (LARGE_DATA does not help either); give the driver's process "
            "and this one the same FASTDDS_DEFAULT_PROFILES_FILE with a 32 MiB segment (docs/transport.md)",
            True,
        )
    path = write_stable_profile(udp_profile_xml(UDP_RECEIVE_BUFFER_BYTES), directory)
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(path)
    note = (
        f"Fast DDS transports: UDPv4 only, {UDP_RECEIVE_BUFFER_BYTES >> 20} MiB receive buffer requested "
        f"(profile {path}; {SWITCH_VARIABLE}=off keeps Fast DDS's defaults)"
    )
    cap = rmem_max()
    if cap is not None and cap < RECOMMENDED_RMEM_MAX:
        return (
            note + f"; net.core.rmem_max is {cap} bytes: best-effort input (input_qos sensor_data) will lose "
            f"camera-sized frames; raise it to {RECOMMENDED_RMEM_MAX} or more (docs/transport.md)",
            True,
        )
    return note, False
