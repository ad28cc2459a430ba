"""rosbag2 I/O of stereo sequences: round trips in both storages, rclpy cross-check, corrupt bags, synth.

The bag layer writes with ``rosbags`` (no ROS); the cross-check decodes the very same CDR bytes with the
real rclpy Kilted type support, which is what ``ros2 bag play`` hands to subscribers.  If the two disagreed
on a field layout, the nodes would receive garbage from bags that round-trip fine in pure Python.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from ruamel.yaml import YAML
from sensor_msgs.msg import CameraInfo, Image

from scene_perception.data.bag_io import (
    DEFAULT_TOPICS,
    BagReadError,
    StereoBagTopics,
    _frame_messages,
    decode_image,
    iter_messages,
    read_stereo_bag,
    typestore,
    write_stereo_bag,
)
from scene_perception.data.procedural import make_stereo_sample
from scene_perception.data.synth import synth_main
from scene_perception.geometry.rotations import matrix_to_quaternion, quaternion_to_matrix
from scene_perception.geometry.stereo_camera import StereoCamera

W, H = 128, 64
_TYPESTORE = typestore()
T0 = 1_700_000_000_123_456_789  # odd nanoseconds: a sec/nanosec split error would show


@dataclass
class StandInFrame:
    """The WorldFrame fields (data/world.py contract), filled from a procedural pair for these tests."""

    index: int
    stamp_ns: int
    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    depth: np.ndarray
    nonoccluded: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    camera: StereoCamera
    pose: np.ndarray


def _rot(axis: int, angle: float) -> np.ndarray:
    """Rotation by ``angle`` about coordinate axis ``axis`` (0 = x, 1 = y, 2 = z)."""
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(3)
    m[i, i] = m[j, j] = np.cos(angle)
    m[i, j], m[j, i] = -np.sin(angle), np.sin(angle)
    return m


def standin_frames(n: int, width: int = W, height: int = H, fps: float = 10.0, seed: int = 0
                   ) -> Iterator[StandInFrame]:
    """Procedural pairs with random (not zero) semantic/instance ids and a moving, rotating pose.

    Random ids with high bytes set catch byte-order and dtype mistakes that all-zero images would hide;
    a patch of infinite depth exercises the NaN convention of /gt/depth.
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        s = make_stereo_sample(seed * 100 + i, width=width, height=height)
        depth = s.depth.copy()
        depth[:4, :8] = np.inf
        pose = np.eye(4)
        pose[:3, :3] = _rot(1, 0.3 + 0.5 * i) @ _rot(0, 0.1)
        pose[:3, 3] = (0.5 * i, -1.2, 2.0 + i)
        yield StandInFrame(
            index=i, stamp_ns=T0 + round(i * 1e9 / fps), left=s.left, right=s.right, disparity=s.disparity,
            depth=depth, nonoccluded=s.nonoccluded,
            semantic=rng.integers(0, 256, (height, width), dtype=np.uint8),
            instance=rng.integers(0, 65536, (height, width), dtype=np.uint16),
            camera=s.camera, pose=pose,
        )


@pytest.fixture(scope="module")
def frames() -> list[StandInFrame]:
    return list(standin_frames(3))


@pytest.fixture(scope="module")
def bags(frames: list[StandInFrame], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    return {
        "mcap": write_stereo_bag(root / "b_mcap", frames, storage="mcap"),
        "sqlite3": write_stereo_bag(root / "b_sqlite3", frames, storage="sqlite3"),
        "mcap-zstd": write_stereo_bag(root / "b_zstd", frames, storage="mcap", compress=True),
    }


def _metadata(bag: Path) -> dict:
    return YAML(typ="safe").load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


@pytest.mark.parametrize("kind", ["mcap", "sqlite3", "mcap-zstd"])
def test_round_trip_is_bit_exact(kind: str, bags: dict[str, Path], frames: list[StandInFrame]) -> None:
    out = list(read_stereo_bag(bags[kind]))
    assert len(out) == len(frames)
    for got, ref in zip(out, frames, strict=True):
        assert (got.index, got.stamp_ns) == (ref.index, ref.stamp_ns)
        for name in ("left", "right"):
            arr = getattr(got, name)
            assert arr.dtype == np.uint8 and arr.shape == (H, W, 3)
            np.testing.assert_array_equal(arr, getattr(ref, name))
        assert set(got.gt) == {"disparity", "depth", "nonoccluded", "semantic", "instance"}
        for name in ("disparity", "nonoccluded", "semantic", "instance"):
            ref_arr = getattr(ref, name)
            assert got.gt[name].dtype == ref_arr.dtype, name
            np.testing.assert_array_equal(got.gt[name], ref_arr)
        # /gt/depth stores infinite depth as NaN (contract); everything else bit-exact.
        assert got.gt["depth"].dtype == np.float32
        np.testing.assert_array_equal(got.gt["depth"], np.where(np.isinf(ref.depth), np.nan, ref.depth))
        assert np.isnan(got.gt["depth"][:4, :8]).all()
        assert got.camera is not None
        assert got.camera.frame_id == "left_optical"
        ref_cam = dataclasses.replace(ref.camera, frame_id="left_optical")
        assert dataclasses.replace(got.camera, baseline=ref_cam.baseline) == ref_cam
        assert got.camera.baseline == pytest.approx(ref.camera.baseline, rel=1e-12)
        np.testing.assert_allclose(got.pose, ref.pose, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["mcap", "sqlite3", "mcap-zstd"])
def test_metadata_yaml(kind: str, bags: dict[str, Path]) -> None:
    meta = _metadata(bags[kind])
    assert meta["version"] == 9
    assert meta["storage_identifier"] == kind.split("-")[0]
    topics = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert set(topics) == set(DEFAULT_TOPICS.all_topics())
    assert all(t["message_count"] == 3 for t in topics.values())
    assert meta["message_count"] == 3 * len(topics)
    assert meta["duration"]["nanoseconds"] == 200_000_000
    assert meta["starting_time"]["nanoseconds_since_epoch"] == T0
    assert topics["/gt/pose"]["topic_metadata"]["type"] == "geometry_msgs/msg/PoseStamped"
    for f in meta["relative_file_paths"]:
        assert (bags[kind] / f).is_file()


def test_type_hashes_match_installed_definitions(bags: dict[str, Path]) -> None:
    """RIHS01 hashes in the bag equal those of the installed Kilted interfaces (ros2 bag checks them)."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    meta = _metadata(bags["mcap"])
    checked = 0
    for entry in meta["topics_with_message_count"]:
        tm = entry["topic_metadata"]
        pkg, _, name = tm["type"].split("/")
        for prefix in prefixes:
            desc = Path(prefix) / "share" / pkg / "msg" / f"{name}.json"
            if desc.is_file():
                listed = json.loads(desc.read_text())["type_hashes"]
                hashes = {h["type_name"]: h["hash_string"] for h in listed}
                assert tm["type_description_hash"] == hashes[tm["type"]], tm["name"]
                checked += 1
                break
    if not checked:
        pytest.skip("no installed interface descriptions (share/<pkg>/msg/*.json) found")


@pytest.mark.parametrize("kind", ["mcap", "sqlite3"])
def test_rclpy_decodes_the_raw_cdr(kind: str, bags: dict[str, Path], frames: list[StandInFrame]) -> None:
    ref = frames[1]
    want = {"/left/image_rect", "/left/camera_info", "/right/camera_info", "/gt/disparity", "/gt/instance",
            "/gt/pose"}
    raw: dict[str, bytes] = {}
    with Reader(bags[kind]) as reader:
        conns = [c for c in reader.connections if c.topic in want]
        for conn, log_ns, data in reader.messages(connections=conns):
            if log_ns == ref.stamp_ns:
                raw[conn.topic] = bytes(data)
    assert set(raw) == want

    img = deserialize_message(raw["/left/image_rect"], Image)
    assert (img.width, img.height, img.encoding, img.step, img.is_bigendian) == (W, H, "rgb8", 3 * W, 0)
    assert (img.header.stamp.sec, img.header.stamp.nanosec) == divmod(ref.stamp_ns, 10**9)
    assert img.header.frame_id == "left_optical"
    np.testing.assert_array_equal(np.frombuffer(bytes(img.data), np.uint8).reshape(H, W, 3), ref.left)
    # The reverse direction: what rclpy serializes, the bag layer decodes to the same image.  (Bytes are
    # not compared: CDR alignment padding is unspecified and Fast-CDR leaves it uninitialised.)
    back = _TYPESTORE.deserialize_cdr(serialize_message(img), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(decode_image(back), ref.left)
    assert (back.header.frame_id, back.step) == ("left_optical", 3 * W)

    disp = deserialize_message(raw["/gt/disparity"], Image)
    assert (disp.encoding, disp.step) == ("32FC1", 4 * W)
    np.testing.assert_array_equal(np.frombuffer(bytes(disp.data), "<f4").reshape(H, W), ref.disparity)
    inst = deserialize_message(raw["/gt/instance"], Image)
    assert (inst.encoding, inst.step) == ("16UC1", 2 * W)
    np.testing.assert_array_equal(np.frombuffer(bytes(inst.data), "<u2").reshape(H, W), ref.instance)

    left_info = deserialize_message(raw["/left/camera_info"], CameraInfo)
    right_info = deserialize_message(raw["/right/camera_info"], CameraInfo)
    p_left, p_right = ref.camera.projection_matrices()
    np.testing.assert_array_equal(np.asarray(left_info.p), p_left.ravel())
    np.testing.assert_array_equal(np.asarray(right_info.p), p_right.ravel())
    assert right_info.p[3] == -ref.camera.fx * ref.camera.baseline
    np.testing.assert_array_equal(np.asarray(right_info.k), p_right[:, :3].ravel())
    np.testing.assert_array_equal(np.asarray(left_info.r), np.eye(3).ravel())
    assert left_info.distortion_model == "plumb_bob" and list(left_info.d) == [0.0] * 5
    assert (left_info.width, left_info.height) == (W, H)
    assert right_info.header.frame_id == "right_optical"
    back = _TYPESTORE.deserialize_cdr(serialize_message(right_info), "sensor_msgs/msg/CameraInfo")
    np.testing.assert_array_equal(back.p, p_right.ravel())
    # The geometry layer's own constructor accepts the rclpy messages and recovers the rig.
    cam = StereoCamera.from_camera_info(left_info, right_info)
    assert cam.baseline == pytest.approx(ref.camera.baseline, rel=1e-12)

    pose = deserialize_message(raw["/gt/pose"], PoseStamped)
    assert pose.header.frame_id == "map"
    np.testing.assert_allclose([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z],
                               ref.pose[:3, 3], atol=0)


def test_iter_messages(bags: dict[str, Path], frames: list[StandInFrame]) -> None:
    got = list(iter_messages(bags["mcap"], ["/right/camera_info", "/gt/semantic"]))
    assert len(got) == 6
    assert {m.topic for m in got} == {"/right/camera_info", "/gt/semantic"}
    assert sorted({m.stamp_ns for m in got}) == [f.stamp_ns for f in frames]
    topic, stamp, msgtype, msg = got[0]  # plain 4-tuple unpacking is part of the contract
    assert msgtype in ("sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/Image") and msg.header.stamp.sec > 0
    assert sum(1 for _ in iter_messages(bags["sqlite3"])) == 30
    with pytest.raises(BagReadError, match="/no/such/topic"):
        list(iter_messages(bags["mcap"], ["/no/such/topic"]))


@pytest.mark.parametrize("kind", ["mcap", "sqlite3"])
def test_truncated_bag_raises_bag_read_error(kind: str, bags: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    bag = shutil.copytree(bags[kind], tmp_path / "broken")
    (storage_file,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    with open(storage_file, "r+b") as fh:
        fh.truncate(storage_file.stat().st_size // 2)
    with pytest.raises(BagReadError, match=storage_file.name):
        list(read_stereo_bag(bag))
    with pytest.raises(BagReadError, match=storage_file.name):
        list(iter_messages(bag))


def test_missing_bag_and_missing_image_topics(tmp_path: Path, frames: list[StandInFrame]) -> None:
    with pytest.raises(BagReadError, match="does not exist"):
        list(read_stereo_bag(tmp_path / "nope"))
    # A bag in another namespace has no /left/image_rect: say so instead of yielding nothing.
    ns = DEFAULT_TOPICS.namespaced("/sim")
    assert ns.left_image == "/sim/left/image_rect" and ns.left_frame == "left_optical"
    bag = write_stereo_bag(tmp_path / "ns", frames[:1], topics=ns)
    with pytest.raises(BagReadError, match="/left/image_rect"):
        list(read_stereo_bag(bag))
    assert len(list(read_stereo_bag(bag, topics=ns))) == 1


def test_writer_refuses_existing_and_cleans_up_on_error(tmp_path: Path, frames: list[StandInFrame]) -> None:
    bag = write_stereo_bag(tmp_path / "b", frames[:1])
    with pytest.raises(FileExistsError):
        write_stereo_bag(bag, frames[:1])
    write_stereo_bag(bag, frames[:2], overwrite=True)
    assert _metadata(bag)["message_count"] == 20
    (tmp_path / "notabag").mkdir()
    with pytest.raises(FileExistsError, match="not a rosbag2"):
        write_stereo_bag(tmp_path / "notabag", frames[:1], overwrite=True)

    def failing() -> Iterator[StandInFrame]:
        yield frames[0]
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_stereo_bag(tmp_path / "partial", failing())
    assert not (tmp_path / "partial").exists()
    # Ground truth that does not fit its encoding is refused, not wrapped (and leaves no bag behind).
    bad = dataclasses.replace(frames[0], semantic=np.full((H, W), 300, np.int64))
    with pytest.raises(ValueError, match="mono8"):
        write_stereo_bag(tmp_path / "bad", [bad])
    assert not (tmp_path / "bad").exists()


def test_plain_recording_without_ground_truth(tmp_path: Path, frames: list[StandInFrame]) -> None:
    plain = [types.SimpleNamespace(stamp_ns=f.stamp_ns, left=f.left, right=f.right, camera=f.camera)
             for f in frames[:2]]
    bag = write_stereo_bag(tmp_path / "plain", plain, storage="sqlite3")
    out = list(read_stereo_bag(bag))
    assert [f.gt for f in out] == [{}, {}] and out[0].pose is None and out[0].camera is not None


@pytest.fixture
def world_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the real data.world when present; until then a stand-in module with its generate_sequence."""
    try:
        import scene_perception.data.world  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "scene_perception.data.world":
            raise
        fake = types.ModuleType("scene_perception.data.world")

        def generate_sequence(seed: int, frames: int, width: int, height: int, fps: float,
                              texture_dir: str | None = None) -> Iterator[StandInFrame]:
            return standin_frames(frames, width, height, fps, seed)

        fake.generate_sequence = generate_sequence  # type: ignore[attr-defined]
        fake.CLASSES = ((0, "sky", (70, 130, 180)), (1, "road", (128, 64, 128)))  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "scene_perception.data.world", fake)


def test_synth_main_end_to_end(world_module: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                               ) -> None:
    out = tmp_path / "synth_bag"
    argv = ["--out", str(out), "--frames", "2", "--width", "128", "--height", "64", "--fps", "20",
            "--seed", "3"]
    assert synth_main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    meta = _metadata(out)
    assert meta["storage_identifier"] == "mcap"
    settings = json.loads(meta["custom_data"]["scene_perception.synth"])
    assert (settings["seed"], settings["frames"], settings["width"], settings["height"]) == (3, 2, 128, 64)
    got = list(read_stereo_bag(out))
    assert len(got) == 2
    assert got[1].stamp_ns - got[0].stamp_ns == 50_000_000
    for f in got:
        assert f.left.shape == (64, 128, 3) and f.camera is not None and f.pose is not None
        assert {"disparity", "depth", "semantic", "instance"} <= set(f.gt)
    with pytest.raises(SystemExit, match="exists"):
        synth_main(argv)


def test_topics_layout_is_consistent() -> None:
    t = StereoBagTopics()
    assert len(set(t.all_topics())) == len(t.all_topics()) == 10
    assert t.namespaced("") == t == t.namespaced("/")


def test_grouping_by_header_stamp_with_interleaved_topics(tmp_path: Path, frames: list[StandInFrame],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A live recording logs messages at arrival time, so one stamp's topics interleave with the next's.

    Frames are 100 ms apart, arrival latency is up to 250 ms; frame 1 lost its right image (a dropped
    message), so it is skipped with a warning while frames 0 and 2 come out complete and in order.
    """
    rng = np.random.default_rng(5)
    store = typestore()
    records = []
    for f in frames:
        for topic, msgtype, msg in _frame_messages(store, f, DEFAULT_TOPICS):
            if f.index == 1 and topic == DEFAULT_TOPICS.right_image:
                continue
            records.append((f.stamp_ns + int(rng.integers(0, 250_000_000)), topic, msgtype, msg))
    records.sort(key=lambda r: r[0])
    bag = tmp_path / "live"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conns: dict[str, object] = {}
        for log_ns, topic, msgtype, msg in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], log_ns, store.serialize_cdr(msg, msgtype))
    with caplog.at_level("WARNING"):
        out = list(read_stereo_bag(bag))
    assert [(f.index, f.stamp_ns) for f in out] == [(0, frames[0].stamp_ns), (1, frames[2].stamp_ns)]
    np.testing.assert_array_equal(out[1].right, frames[2].right)
    np.testing.assert_array_equal(out[1].gt["instance"], frames[2].instance)
    assert "dropping stamp" in caplog.text


def test_quaternion_round_trip_all_branches() -> None:
    """Random rotations plus half-turns about each axis (trace -1: the branches Shepperd's method needs)."""
    rng = np.random.default_rng(0)
    mats = [_rot(a, np.pi) for a in range(3)] + [_rot(a, np.pi - 1e-3) for a in range(3)]
    for _ in range(50):
        q, _r = np.linalg.qr(rng.normal(size=(3, 3)))
        mats.append(q * np.sign(np.linalg.det(q)))
    for m in mats:
        q = matrix_to_quaternion(m)  # what write_stereo_bag stores; read_stereo_bag inverts it
        assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(quaternion_to_matrix(q), m, atol=1e-12)
