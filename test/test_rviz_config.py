"""rviz/perception.rviz and the launch file's ``rviz`` argument, checked without RViz or ``launch``.

Neither rviz2 nor launch_ros exist in the pip environment, so this checks what can go stale silently: the
.rviz file parses as YAML, every topic it shows is one the nodes publish (or the camera input they read),
the point cloud is coloured from the ``rgb`` field, the scene node's semantic overlay and uncertainty are
shown (the latter on a fixed range), the fixed frame is the camera's optical frame, and the launch file
declares ``rviz`` (default false), starts rviz2 with this file, and is installed by CMake.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from scene_perception.ros.runner import node_types
from scene_perception.ros.scene_node import OUTPUTS as SCENE_OUTPUTS
from scene_perception.ros.stereo_depth_node import StereoDepthNode
from scene_perception.ros.stereo_node_base import INPUT_TOPICS

ROOT = Path(__file__).resolve().parents[1]
RVIZ = ROOT / "rviz" / "perception.rviz"
LAUNCH = ROOT / "launch" / "perception.launch.py"


def displays() -> list[dict]:
    config = yaml.safe_load(RVIZ.read_text())
    return config["Visualization Manager"]["Displays"]


def test_rviz_config_shows_published_topics() -> None:
    config = yaml.safe_load(RVIZ.read_text())
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "left_optical"
    published = {topic: msg_type.__name__ for msg_type, topic in StereoDepthNode.OUTPUTS.values()}
    published |= {topic: "Image" for topic in SCENE_OUTPUTS.values()}  # the scene node's outputs are Images
    camera_in = {t for t in INPUT_TOPICS if t.endswith("image_rect")}
    shown: dict[str, str] = {}
    for display in displays():
        assert display["Class"].startswith("rviz_default_plugins/"), display["Class"]
        topic = display.get("Topic", {}).get("Value")
        if topic is None:
            continue
        assert not topic.startswith("/"), f"{topic}: relative, so namespaces / remaps apply"
        assert topic in published or topic in camera_in, f"{display['Name']} shows unpublished {topic}"
        shown[topic] = display["Class"].split("/")[-1]
    assert shown == {
        "points": "PointCloud2",
        "depth": "Image",
        "depth/uncertainty": "Image",
        "left/image_rect": "Image",
        "semantic/color": "Image",
        "semantic/uncertainty": "Image",
    }
    for topic, kind in shown.items():
        if topic in published:
            assert published[topic] == kind, f"{topic} is {published[topic]}, shown as {kind}"


def test_rviz_qos_matches_the_publishers() -> None:
    """RViz must subscribe compatibly: reliable outputs (output_qos default), best-effort camera input."""
    for display in displays():
        topic = display.get("Topic")
        if not topic:
            continue
        want = "Best Effort" if topic["Value"].endswith("image_rect") else "Reliable"
        assert topic["Reliability Policy"] == want, display["Name"]
        if topic["Value"] == "semantic/uncertainty":
            # Mutual information lies in [0, ln K] nats: a fixed range, so frames compare.
            assert display["Normalize Range"] is False and display["Min Value"] == 0
            assert display["Max Value"] >= 2.0  # ln 9 = 2.197 for the 9 classes
        if display["Class"].endswith("PointCloud2"):
            assert display["Color Transformer"] == "RGB8" and display["Channel Name"] == "rgb"
            assert display["Position Transformer"] == "XYZ"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]


def _kw(call: ast.Call, key: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def test_launch_has_rviz_argument_and_installs_config() -> None:
    tree = ast.parse(LAUNCH.read_text())
    args = {ast.literal_eval(c.args[0]): c for c in _calls(tree, "DeclareLaunchArgument")}
    assert "rviz" in args and ast.literal_eval(_kw(args["rviz"], "default_value")) == "false"
    assert "perception.rviz" in ast.unparse(_kw(args["rviz_config"], "default_value"))
    rviz_nodes = [c for c in _calls(tree, "Node") if ast.literal_eval(_kw(c, "package")) == "rviz2"]
    assert len(rviz_nodes) == 1
    assert ast.literal_eval(_kw(rviz_nodes[0], "executable")) == "rviz2"
    assert "-d" in ast.unparse(_kw(rviz_nodes[0], "arguments"))
    # The launch file starts the same node types as `scene-perception run`, each with an executable.
    executables = next(
        ast.literal_eval(n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "EXECUTABLES"
    )
    assert set(executables) == set(node_types())
    for exe in executables.values():
        assert (ROOT / "scripts" / exe).is_file(), exe
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "foreach(_dir launch config models rviz)" in cmake
